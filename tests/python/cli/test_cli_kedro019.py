"""The `kedro vineyard` commands on Kedro 0.19, through its real `kedro`
(VINEYARD_KEDRO019_PYTHON: a Python with Kedro 0.19 and this package; .ci/run
sets it): help, catalog, docker, argo, the store, and the generated workflow
run task by task."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from argo_sim import check_workflow_text, run_exit_handler, run_workflow, task_graph
from kedro_project import accuracy, copy_iris, kedro, kedro_env
from awkward_pipelines import add_test_pipelines
from vineyard.contrib.kedro import _core

EXPECTED = 0.933
COMMANDS = ["argo", "catalog", "docker", "gc", "inspect", "ls", "rm", "serve", "status"]
GRAPH = """
import json, sys
from pathlib import Path
from kedro.framework.startup import bootstrap_project
bootstrap_project(Path.cwd())
from kedro.framework.project import pipelines
p = pipelines[sys.argv[1]]
print(json.dumps({n.name: sorted(d.name for d in p.node_dependencies[n]) for n in p.nodes}))
"""




@pytest.fixture
def project(tmp_path, python019) -> Path:
    project = copy_iris(tmp_path, kedro_init_version="0.19.0")
    add_test_pipelines(project)
    return project


def k019(project: Path, python: str, *args: str, env: dict | None = None):
    return kedro(project, *args, python=python, env=env or kedro_env(VINEYARD_IPC_SOCKET=None))


def graph019(project: Path, python: str, pipeline: str) -> dict[str, set[str]]:
    out = subprocess.run([python, "-c", GRAPH, pipeline], cwd=project, env=kedro_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return {k: set(v) for k, v in json.loads(out.stdout.strip().splitlines()[-1]).items()}


def test_help_lists_every_command(project, python019):
    version = k019(project, python019, "--version")
    assert "0.19" in version.stdout, version.stdout
    result = k019(project, python019, "vineyard", "--help")
    assert result.returncode == 0, result.stdout[-3000:]
    listed = result.stdout.split("Commands:", 1)[1]
    assert all(f"\n  {name} " in listed for name in COMMANDS), result.stdout
    ls_help = k019(project, python019, "vineyard", "ls", "--help")
    assert ls_help.returncode == 0 and "vineyard ls [OPTIONS]" in ls_help.stdout and "--json" in ls_help.stdout


def test_catalog_create_and_list(project, python019):
    path = project / "conf" / "vineyard" / "catalog" / "__default__.yml"
    created = k019(project, python019, "vineyard", "catalog", "create", "-p", "__default__")
    assert created.returncode == 0, created.stdout[-3000:]
    assert f"Data Catalog YAML configuration was created: {path}" in created.stdout
    again = k019(project, python019, "vineyard", "catalog", "create", "-p", "__default__")
    assert again.stdout.strip().endswith("All datasets are already configured.")
    listed = k019(project, python019, "vineyard", "catalog", "list", "-e", "vineyard", "-p", "__default__")
    assert listed.returncode == 0 and "VineyardDataset:" in listed.stdout and "CSVDataset:" in listed.stdout
    odd = k019(project, python019, "vineyard", "catalog", "create", "-p", "odd", "--catch-all")
    assert odd.returncode == 0 and "{default}" in (path.parent / "odd.yml").read_text()


def test_docker(project, python019):
    init = k019(project, python019, "vineyard", "docker", "init")
    assert init.returncode == 0 and (project / "Dockerfile").exists(), init.stdout[-3000:]
    assert _core.lint_dockerfile((project / "Dockerfile").read_text()) == []
    env = kedro_env(VINEYARD_IPC_SOCKET=None, DOCKER_HOST="unix:///nonexistent/docker.sock")
    build = k019(project, python019, "vineyard", "docker", "build", "--image", "iris:019", env=env)
    assert build.returncode == 1, build.stdout[-3000:]
    assert "no Docker engine answered" in build.stdout and "-t iris:019 ." in build.stdout


def test_argo_generate(project, python019, validator):
    created = k019(project, python019, "vineyard", "catalog", "create", "-p", "odd", "--catch-all")
    assert created.returncode == 0, created.stdout[-3000:]
    for name in ("__default__", "modular", "odd"):
        out = project / "deploy" / name
        result = k019(project, python019, "vineyard", "argo", "generate", "-i", "iris:1", "-p", name, "-o", str(out))
        assert result.returncode == 0, result.stdout[-3000:]
        wf = check_workflow_text((out / "argo-iris.yml").read_text(), validator)
        assert task_graph(wf) == graph019(project, python019, name), name
        # Kedro 0.19's `kedro run` takes one pipeline as `--pipeline` (not deprecated there).
        args = next(t for t in wf["spec"]["templates"] if t["name"] == "kedro")["container"]["args"]
        assert (args[1:3] == ["--pipeline", name]) == (name != "__default__"), args
    legacy = k019(project, python019, "vineyard", "argo", "generate", "-i", "iris:1", "-w", "false", "--output_path", "plain", "--allow-local")
    assert legacy.returncode == 0 and "onExit" not in (project / "plain" / "argo-iris.yml").read_text()


def _prepare(project: Path, python: str, pipeline: str, *flags: str, generate_flags: tuple[str, ...] = ()) -> str:
    created = k019(project, python, "vineyard", "catalog", "create", "-p", pipeline, *flags)
    assert created.returncode == 0, created.stdout[-3000:]
    out = project / "deploy"
    generated = k019(project, python, "vineyard", "argo", "generate", "-i", "iris:1", "-p", pipeline, "-o", str(out), *generate_flags)
    assert generated.returncode == 0, generated.stdout[-3000:]
    return (out / "argo-iris.yml").read_text()


def test_workflow_runs_on_019(project, python019, vineyardd):
    single = k019(project, python019, "run")
    assert single.returncode == 0 and accuracy(single.stdout) == EXPECTED, single.stdout[-3000:]
    text = _prepare(project, python019, "__default__")
    client = _core.Client(vineyardd.socket)
    try:
        baseline = client.status()["memory_usage"]
        run = run_workflow(text, project, vineyardd.socket, python=python019, on_exit=False)
        assert run.ok, run.failure()
        assert accuracy(run["report-accuracy"].stdout) == EXPECTED
        assert len(client.list_names(f"{run.uid}/*")) == 5
        ls = k019(project, python019, "vineyard", "ls", "--namespace", run.uid, env=kedro_env(VINEYARD_IPC_SOCKET=vineyardd.socket))
        assert ls.returncode == 0 and f"{run.uid}/X_train" in ls.stdout
        handler = run_exit_handler(text, project, vineyardd.socket, run.uid, python=python019)
        assert handler.returncode == 0, handler.stdout[-3000:]
        assert Path(handler.args[0]).parent == Path(python019).parent
        assert client.list_names(f"{run.uid}/*") == []
        assert client.status()["memory_usage"] == baseline
    finally:
        client.close()


def test_odd_names_run_on_019(project, python019, vineyardd):
    """0.19 names unnamed nodes `inc([o_sum]) -> [o_final]`: `kedro run -n` must still find them."""
    text = _prepare(project, python019, "odd", "--catch-all")
    assert "inc([o_sum]) -> [o_final]" in text
    run = run_workflow(text, project, vineyardd.socket, python=python019)
    assert run.ok, run.failure()
    assert sum("odd pipeline result: 10" in r.stdout for r in run.values()) == 1
    client = _core.Client(vineyardd.socket)
    try:
        assert client.list_names(f"{run.uid}/*") == []
    finally:
        client.close()


def test_grouped_workflow_runs_on_019(project, python019, vineyardd):
    """Kedro 0.19 selects a namespace with `--namespace` and one pipeline with `--pipeline`."""
    local = k019(project, python019, "run", "--pipeline", "chained")
    assert local.returncode == 0, local.stdout[-3000:]
    text = _prepare(project, python019, "chained", generate_flags=("--group-by", "namespace"))
    run = run_workflow(text, project, vineyardd.socket, python=python019)
    assert run.ok, run.failure()
    assert run.order == ["split", "model"]
    assert run["model"].args[3:8] == ["run", "--pipeline", "chained", "--namespace", "model"]
    assert accuracy(run["model"].stdout) == accuracy(local.stdout) == EXPECTED
    client = _core.Client(vineyardd.socket)
    try:
        assert client.list_names(f"{run.uid}/*") == []
    finally:
        client.close()
