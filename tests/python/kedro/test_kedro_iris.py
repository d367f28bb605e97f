"""The iris example through the real ``kedro`` command, with each runner,
with the embedded vineyardd and with one of ours, on Kedro 1.x and 0.19."""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kedro_project import EMBEDDED, accuracy, copy_iris, kedro, kedro_env
from vineyard.contrib.kedro import _core

RUNNERS = ["SequentialRunner", "ThreadRunner", "ParallelRunner"]
EXPECTED = 0.933


@pytest.fixture
def iris(tmp_path: Path) -> Path:
    return copy_iris(tmp_path)


def test_plain_kedro_run_reports_the_reference_accuracy(iris):
    result = kedro(iris, "run")
    assert result.returncode == 0, result.stdout[-3000:]
    assert accuracy(result.stdout) == EXPECTED


@pytest.mark.parametrize("runner", RUNNERS)
def test_runner_with_embedded_vineyardd(iris, runner):
    env = kedro_env(VINEYARD_IPC_SOCKET=None, VINEYARD_KEDRO_NAMESPACE=None)
    result = kedro(iris, "run", "--runner", f"vineyard.contrib.kedro.runner.{runner}", env=env)
    out = result.stdout
    assert result.returncode == 0, out[-4000:]
    assert accuracy(out) == EXPECTED
    started = EMBEDDED.findall(out)
    assert len(started) == 1, out[-4000:]
    socket = Path(started[0].rstrip(".,"))
    # The embedded server is gone with its private directory.
    assert not socket.exists() and not socket.parent.exists()
    assert "objects saved" in out  # the end-of-run summary line
    if runner != "ParallelRunner":  # workers do not run dataset hooks/logging in the parent
        assert "(VineyardDataset)" in out


@pytest.mark.parametrize("runner", RUNNERS)
def test_runner_with_external_vineyardd_leaves_nothing(iris, vineyardd, runner):
    c = _core.Client(vineyardd.socket)
    baseline = c.status()["memory_usage"]
    names_before = set(c.list_names())
    env = kedro_env(VINEYARD_IPC_SOCKET=vineyardd.socket, VINEYARD_KEDRO_NAMESPACE=None)
    result = kedro(iris, "run", "--runner", f"vineyard.contrib.kedro.runner.{runner}", env=env)
    assert result.returncode == 0, result.stdout[-4000:]
    assert accuracy(result.stdout) == EXPECTED
    assert "Started an embedded vineyardd" not in result.stdout
    assert set(c.list_names()) == names_before
    assert c.status()["memory_usage"] == baseline


def test_runner_params_are_accepted(iris, vineyardd):
    env = kedro_env(VINEYARD_IPC_SOCKET=vineyardd.socket)
    result = kedro(
        iris,
        "run",
        "--runner",
        "vineyard.contrib.kedro.runner.ThreadRunner",
        "--runner-params",
        "max_workers=2,is_async=true",
        env=env,
    )
    assert result.returncode == 0, result.stdout[-4000:]
    assert accuracy(result.stdout) == EXPECTED


def test_dead_socket_fails_fast_and_names_it(iris, tmp_path):
    dead = str(tmp_path / "nobody-listens.sock")
    env = kedro_env(VINEYARD_IPC_SOCKET=dead)
    start = time.monotonic()
    result = kedro(iris, "run", "--runner", "vineyard.contrib.kedro.runner.SequentialRunner", env=env)
    elapsed = time.monotonic() - start
    assert result.returncode != 0
    assert dead in result.stdout
    assert "DatasetError" in result.stdout
    assert "Started an embedded vineyardd" not in result.stdout
    assert elapsed < 60, elapsed  # interpreter start included; the connect itself gives up after 2 s


def test_concurrent_runs_on_one_vineyardd_do_not_collide(tmp_path, vineyardd):
    """Two runs with different parameters share dataset names; each must see
    only its own data and report its own accuracy."""
    a = copy_iris(tmp_path / "a")
    b = copy_iris(tmp_path / "b")
    expected = {}
    for project, state in ((a, "3"), (b, "11")):
        plain = kedro(project, "run", "--params", f"random_state={state}")
        assert plain.returncode == 0, plain.stdout[-3000:]
        expected[project] = accuracy(plain.stdout)
    env = kedro_env(VINEYARD_IPC_SOCKET=vineyardd.socket)

    def run(project, state):
        return kedro(project, "run", "--runner", "vineyard.contrib.kedro.runner.SequentialRunner", "--params", f"random_state={state}", env=env)

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(run, (a, b), ("3", "11")))
    for project, result in zip((a, b), results):
        assert result.returncode == 0, result.stdout[-3000:]
        assert accuracy(result.stdout) == expected[project]


@pytest.mark.parametrize("runner", ["SequentialRunner", "ParallelRunner"])
def test_kedro_019(tmp_path, runner):
    python = os.environ.get("VINEYARD_KEDRO019_PYTHON")
    if not python:
        pytest.fail("set VINEYARD_KEDRO019_PYTHON to a Python with Kedro 0.19 and this package (.ci/run does)")
    project = copy_iris(tmp_path, kedro_init_version="0.19.0")
    env = kedro_env(VINEYARD_IPC_SOCKET=None)
    version = kedro(project, "--version", python=python, env=env)
    assert "0.19" in version.stdout, version.stdout
    result = kedro(project, "run", "--runner", f"vineyard.contrib.kedro.runner.{runner}", python=python, env=env)
    assert result.returncode == 0, result.stdout[-4000:]
    assert accuracy(result.stdout) == EXPECTED
    assert len(EMBEDDED.findall(result.stdout)) == 1


SESSION_SCRIPT = """
import sys
from pathlib import Path
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from vineyard.contrib.kedro.runner import {runner}

path = Path(sys.argv[1])
bootstrap_project(path)
with KedroSession.create(project_path=path) as session:
    session.run(runner={runner}({args}))
"""


@pytest.mark.parametrize("kedro_python", ["1.x", "0.19"])
def test_kedro_session_with_our_runner(tmp_path, vineyardd, kedro_python):
    """Kedro's own KedroSession, in a fresh interpreter, with our runner instance."""
    python = sys.executable
    init = None
    if kedro_python == "0.19":
        python = os.environ.get("VINEYARD_KEDRO019_PYTHON") or pytest.fail(
            "set VINEYARD_KEDRO019_PYTHON to a Python with Kedro 0.19 and this package (.ci/run does)"
        )
        init = "0.19.0"
    project = copy_iris(tmp_path, kedro_init_version=init)
    c = _core.Client(vineyardd.socket)
    names_before = set(c.list_names())
    script = SESSION_SCRIPT.format(runner="SequentialRunner", args=f"vineyard_ipc_socket={vineyardd.socket!r}")
    result = subprocess.run(
        [python, "-c", script, str(project)], cwd=project, env=kedro_env(), capture_output=True, text=True, timeout=300
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    assert accuracy(out) == EXPECTED
    assert set(c.list_names()) == names_before


def test_hook_entry_point_with_kedros_default_runner(iris, vineyardd):
    """`VINEYARD_KEDRO_HOOK=1` turns on the hook the package registers: Kedro's
    own runner then keeps the intermediates in vineyard, and cleans up."""
    c = _core.Client(vineyardd.socket)
    names_before = set(c.list_names())
    env = kedro_env(VINEYARD_IPC_SOCKET=vineyardd.socket, VINEYARD_KEDRO_HOOK="1")
    result = kedro(iris, "run", env=env)
    assert result.returncode == 0, result.stdout[-4000:]
    assert accuracy(result.stdout) == EXPECTED
    assert "Saving data to X_train (VineyardDataset)" in result.stdout
    assert set(c.list_names()) == names_before
    off = kedro(iris, "run", env=kedro_env(VINEYARD_IPC_SOCKET=vineyardd.socket))
    assert "(VineyardDataset)" not in off.stdout
