"""What a user coming from Kedro's own runners keeps: run() return values,
resuming after a failure, --only-missing-outputs, concurrent sessions through
the hook. Each compared with Kedro's default runner on the same project, on
Kedro 1.x (this interpreter) and 0.19 ($VINEYARD_KEDRO019_PYTHON)."""

from __future__ import annotations

import os
import re
import shlex
import sys

import pytest
from contract_project import contract_env, kedro_cmd, make_project, nodes_ran, run, session_result

from vineyard.contrib.kedro import _core

STACKS = ["1.x", "0.19"]
OURS = "vineyard.contrib.kedro.runner.SequentialRunner"


def stack_python(stack: str) -> str:
    if stack == "1.x":
        return sys.executable
    return os.environ.get("VINEYARD_KEDRO019_PYTHON") or pytest.fail(
        "set VINEYARD_KEDRO019_PYTHON to a Python with Kedro 0.19 and this package (.ci/run does)"
    )


def stack_project(tmp_path, stack):
    return make_project(tmp_path, "1.7.0" if stack == "1.x" else "0.19.0")


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("server", ["embedded", "long-lived"])
def test_run_returns_what_kedros_runner_returns(tmp_path, vineyardd, stack, server):
    """session.run() with each of our runners and with the hook returns the
    same names, types and values as Kedro's runner, usable after the run."""
    python = stack_python(stack)
    project = stack_project(tmp_path, stack)
    log = tmp_path / "nodes.log"
    socket = vineyardd.socket if server == "long-lived" else None
    c = _core.Client(vineyardd.socket)
    names_before = set(c.list_names())
    expected = {
        runner: session_result(python, project, f"kedro:{runner}", contract_env(project, log))
        for runner in ("SequentialRunner", "ThreadRunner", "ParallelRunner")
    }
    assert "summary" in expected["SequentialRunner"] and "table" in expected["SequentialRunner"]
    for runner in ("SequentialRunner", "ThreadRunner", "ParallelRunner"):
        env = contract_env(project, log, VINEYARD_IPC_SOCKET=socket)
        assert session_result(python, project, f"ours:{runner}", env) == expected[runner], runner
        hook_env = contract_env(project, log, VINEYARD_IPC_SOCKET=socket, VINEYARD_KEDRO_HOOK="1")
        assert session_result(python, project, f"kedro:{runner}", hook_env) == expected[runner], f"hook + {runner}"
    assert set(c.list_names()) == names_before


def _kedro_hint(output: str) -> str:
    found = re.findall(r'--from-nodes "([^"]*)"', output)
    assert found, output[-4000:]
    return found[-1]


@pytest.mark.parametrize("stack", STACKS)
def test_kedros_resume_hint_is_right_with_the_embedded_server(tmp_path, stack):
    """Our runner's hint names the same nodes as Kedro's runner's, and
    following it completes the run with the same nodes and results."""
    python = stack_python(stack)
    project = stack_project(tmp_path, stack)
    log = tmp_path / "nodes.log"
    hints, resumed = {}, {}
    for label, runner_args in (("kedro", []), ("ours", ["--runner", OURS])):
        failed = run(kedro_cmd(python, "run", *runner_args), project, contract_env(project, log, CONTRACT_FAIL_AT="total"))
        assert failed.returncode != 0
        assert "node total fails on purpose" in failed.stdout
        nodes_ran(log)
        hints[label] = _kedro_hint(failed.stdout)
        follow = run(kedro_cmd(python, "run", *runner_args, "--from-nodes", hints[label]), project, contract_env(project, log))
        assert follow.returncode == 0, follow.stdout[-4000:]
        resumed[label] = nodes_ran(log)
    assert hints["ours"] == hints["kedro"]
    assert resumed["ours"] == resumed["kedro"]
    assert "total" in resumed["ours"]


def _our_command(output: str) -> list[str]:
    lines = [x.strip() for x in output.splitlines() if x.strip().startswith("VINEYARD_")]
    assert len(lines) == 1, output[-4000:]
    return shlex.split(lines[0])


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("runner", ["SequentialRunner", "ThreadRunner", "ParallelRunner"])
def test_resume_from_a_long_lived_vineyardd(tmp_path, vineyardd, stack, runner):
    """A failed run keeps its intermediates and prints one command; that
    command runs only the nodes that did not finish, reads the rest from
    vineyard, gives the results of an unbroken run, and leaves nothing."""
    python = stack_python(stack)
    project = stack_project(tmp_path, stack)
    log = tmp_path / "nodes.log"
    c = _core.Client(vineyardd.socket)
    names_before = set(c.list_names())
    ours = ["--runner", f"vineyard.contrib.kedro.runner.{runner}"]
    env = contract_env(project, log, VINEYARD_IPC_SOCKET=vineyardd.socket)

    whole = run(kedro_cmd(python, "run", *ours), project, env)
    assert whole.returncode == 0, whole.stdout[-4000:]
    whole_text = (project / "data" / "stored.txt").read_text()
    assert nodes_ran(log) == ["double", "frame", "make_raw", "persist", "total"]
    (project / "data" / "stored.txt").unlink()

    failed = run(kedro_cmd(python, "run", *ours), project, contract_env(project, log, VINEYARD_IPC_SOCKET=vineyardd.socket, CONTRACT_FAIL_AT="double"))
    assert failed.returncode != 0
    first = set(nodes_ran(log))
    assert "double" in first and "make_raw" in first
    command = _our_command(failed.stdout)
    assert "gc --namespace" in failed.stdout
    kept = set(c.list_names()) - names_before
    assert kept, "the failed run kept nothing"
    assign = [a for a in command if re.match(r"^[A-Z_]+=", a)]
    rest = command[len(assign) :]
    assert rest[:2] == ["kedro", "run"] and "--from-nodes" in rest
    resume_env = contract_env(project, log, **dict(a.split("=", 1) for a in assign))
    resumed = run(kedro_cmd(python, *rest[1:]), project, resume_env)
    assert resumed.returncode == 0, resumed.stdout[-4000:]
    second = set(nodes_ran(log))
    # make_raw finished in the first run; its output came from vineyard. (A
    # ParallelRunner may have been running `persist` when `double` failed:
    # it is then run again.)
    assert {"double", "frame", "total"} <= second <= {"double", "frame", "total", "persist"}
    assert (project / "data" / "stored.txt").read_text() == whole_text
    assert set(c.list_names()) == names_before, "objects of the failed or the resumed run are left"


@pytest.mark.parametrize("stack", ["1.x"])
def test_only_missing_outputs_skips_what_kedros_runner_skips(tmp_path, stack):
    """--only-missing-outputs (Kedro >= 1.0): with `stored` on disk, the same
    nodes run as with Kedro's runner (ours are _EPHEMERAL like MemoryDataset)."""
    python = stack_python(stack)
    project = stack_project(tmp_path, stack)
    log = tmp_path / "nodes.log"
    env = contract_env(project, log)
    assert run(kedro_cmd(python, "run"), project, env).returncode == 0
    nodes_ran(log)
    ran = {}
    for label, args in (("kedro", []), ("ours", ["--runner", OURS])):
        result = run(kedro_cmd(python, "run", "--only-missing-outputs", *args), project, env)
        assert result.returncode == 0, result.stdout[-4000:]
        ran[label] = nodes_ran(log)
    assert ran["ours"] == ran["kedro"] == []
    ran = {}
    for label, args in (("kedro", []), ("ours", ["--runner", OURS])):
        (project / "data" / "stored.txt").unlink()
        result = run(kedro_cmd(python, "run", "--only-missing-outputs", *args), project, env)
        assert result.returncode == 0, result.stdout[-4000:]
        ran[label] = nodes_ran(log)
    assert ran["ours"] == ran["kedro"] == ["make_raw", "persist"]


RUN_ONLY_MISSING_019 = r"""
import sys
from pathlib import Path
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
import kedro.runner
import vineyard.contrib.kedro.runner as ours

path = Path(sys.argv[1])
bootstrap_project(path)
runner = getattr(ours if sys.argv[2] == "ours" else kedro.runner, "SequentialRunner")()
with KedroSession.create(project_path=path) as session:
    context = session.load_context()
    from kedro.framework.project import pipelines
    runner.run_only_missing(pipelines["__default__"], context.catalog, session._hook_manager)
"""


def test_run_only_missing_on_kedro_019(tmp_path):
    """Kedro 0.19's counterpart of --only-missing-outputs is
    runner.run_only_missing: the same nodes run as with Kedro's runner."""
    python = stack_python("0.19")
    project = stack_project(tmp_path, "0.19")
    log = tmp_path / "nodes.log"
    env = contract_env(project, log)
    assert run(kedro_cmd(python, "run"), project, env).returncode == 0
    nodes_ran(log)
    ran = {}
    for label in ("kedro", "ours"):
        result = run([python, "-c", RUN_ONLY_MISSING_019, str(project), label], project, env)
        assert result.returncode == 0, result.stdout[-4000:]
        ran[label] = nodes_ran(log)
    assert ran["ours"] == ran["kedro"]


CONCURRENT_SESSIONS = r"""
import json, os, sys, threading, types
from pathlib import Path
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from vineyard.contrib.kedro import _connection

# Session A finishes (and cleans up) while session B is between two nodes.
b_started, a_done = threading.Event(), threading.Event()
role = threading.local()
sync = types.ModuleType("contract_sync")
def at(name):
    if getattr(role, "name", None) == "A" and name == "make_raw":
        assert b_started.wait(120)
    if getattr(role, "name", None) == "B":
        if name == "make_raw":
            b_started.set()
        if name == "total":
            assert a_done.wait(120)
sync.at = at
sys.modules["contract_sync"] = sync

path = Path(sys.argv[1])
bootstrap_project(path)
results, errors = {}, {}
def session(name):
    role.name = name
    try:
        with KedroSession.create(project_path=path) as s:
            out = s.run()
        results[name] = {k: repr(v.load() if hasattr(v, "load") and not isinstance(v, dict) else v) for k, v in sorted(out.items())}
    except BaseException as exc:
        errors[name] = repr(exc)
    finally:
        if name == "A":
            a_done.set()
threads = [threading.Thread(target=session, args=(n,)) for n in ("A", "B")]
for t in threads: t.start()
for t in threads: t.join()
print("RESULT " + json.dumps({"results": results, "errors": errors, "embedded_left": _connection.embedded_socket()}))
"""


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("server", ["embedded", "long-lived"])
def test_concurrent_sessions_through_the_hook(tmp_path, vineyardd, stack, server):
    """Two KedroSessions at once in one process, Kedro's runner and our hook:
    the first to end cleans up its own run only, the embedded vineyardd stays
    up for the other and stops after both."""
    import json

    python = stack_python(stack)
    project = stack_project(tmp_path, stack)
    nodes = project / "src" / "contract" / "nodes.py"
    nodes.write_text(
        nodes.read_text().replace(
            "def _ran(name):\n",
            "def _ran(name):\n    import sys\n    if 'contract_sync' in sys.modules:\n        sys.modules['contract_sync'].at(name)\n",
        )
    )
    log = tmp_path / "nodes.log"
    socket = vineyardd.socket if server == "long-lived" else None
    c = _core.Client(vineyardd.socket)
    names_before = set(c.list_names())
    expected = session_result(python, project, "kedro:SequentialRunner", contract_env(project, log))
    env = contract_env(project, log, VINEYARD_IPC_SOCKET=socket, VINEYARD_KEDRO_HOOK="1")
    result = run([python, "-c", CONCURRENT_SESSIONS, str(project)], project, env)
    assert result.returncode == 0, result.stdout[-4000:]
    line = [x for x in result.stdout.splitlines() if x.startswith("RESULT ")]
    assert line, result.stdout[-4000:]
    got = json.loads(line[-1][len("RESULT ") :])
    assert got["errors"] == {}, result.stdout[-4000:]
    # `stored` is one file both sessions write: A may read it back while B
    # rewrites it. The free outputs are each session's own.
    want = {k: v[1] for k, v in expected.items() if k != "stored"}
    for results in got["results"].values():
        results.pop("stored", None)
    assert got["results"] == {"A": want, "B": want}
    assert "Saving data to doubled (VineyardDataset)" in result.stdout
    assert got["embedded_left"] is None
    assert set(c.list_names()) == names_before
