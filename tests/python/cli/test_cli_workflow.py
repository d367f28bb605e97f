"""The generated Argo workflow actually runs: each task is its own
`kedro run -n NODE -e vineyard` process with the command, arguments and
environment the YAML gives it (tests/python/argo_sim.py), against a real
vineyardd, after `kedro vineyard catalog create` (as the Dockerfile does at
build time). The result equals the single-process run, and the exit handler
(`vineyard-kedro gc --namespace {{workflow.uid}}`) leaves nothing behind."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from argo_sim import ON_EXIT, run_exit_handler, run_workflow
from kedro_project import accuracy, copy_iris, kedro, kedro_env
from awkward_pipelines import add_test_pipelines
from vineyard.contrib.kedro import _core

EXPECTED = 0.933
IRIS_DATASETS = {"X_train", "X_test", "y_train", "y_test", "y_pred"}


def prepare(project: Path, pipeline: str = "__default__", *catalog_flags: str, generate_flags: tuple[str, ...] = ()) -> str:
    """What happens before the workflow runs: the image's catalog, and `argo generate`."""
    created = kedro(project, "vineyard", "catalog", "create", "-p", pipeline, "-e", "vineyard", *catalog_flags)
    assert created.returncode == 0, created.stdout[-3000:]
    assert "Data Catalog YAML configuration was created" in created.stdout
    out = project / "deploy"
    generated = kedro(project, "vineyard", "argo", "generate", "-i", "iris:1", "-p", pipeline, "-o", str(out), *generate_flags)
    assert generated.returncode == 0, generated.stdout[-3000:]
    return (out / "argo-iris.yml").read_text()


def namespace_names(client, uid: str) -> set[str]:
    return {name.split("/", 1)[1] for name, _ in client.list_names(f"{uid}/*")}


@pytest.fixture
def store(vineyardd):
    client = _core.Client(vineyardd.socket)
    yield vineyardd.socket, client
    client.close()


def test_iris_workflow_equals_the_single_process_run(tmp_path, store):
    socket, client = store
    project = copy_iris(tmp_path)
    single = kedro(project, "run", env=kedro_env(VINEYARD_IPC_SOCKET=None))
    assert single.returncode == 0, single.stdout[-3000:]
    reference = accuracy(single.stdout)
    assert reference == EXPECTED
    text = prepare(project)
    baseline = client.status()["memory_usage"]

    run = run_workflow(text, project, socket, on_exit=False)
    assert run.ok, run.failure()
    assert run.order == ["split", "make-predictions", "report-accuracy"]
    assert accuracy(run["report-accuracy"].stdout) == reference
    for task, result in run.items():
        assert "Started an embedded vineyardd" not in result.stdout, task
        assert result.args[1:4] == ["-m", "kedro", "run"] and result.args[-3:] == ["-e", "vineyard", "--params="]
    # Every task of the workflow wrote under the workflow's uid, and nothing released them.
    assert namespace_names(client, run.uid) == IRIS_DATASETS
    assert client.status()["memory_usage"] > baseline

    handler = run_exit_handler(text, project, socket, run.uid)
    assert handler.returncode == 0, handler.stdout[-3000:]
    assert Path(handler.args[0]).name == "vineyard-kedro" and handler.args[1:] == ["gc", "--namespace", run.uid]
    assert client.list_names(f"{run.uid}/*") == []
    assert client.status()["memory_usage"] == baseline


def test_the_exit_handler_cleans_up_after_a_failed_task(tmp_path, store):
    socket, client = store
    project = copy_iris(tmp_path)
    text = prepare(project)
    baseline = client.status()["memory_usage"]
    # make-predictions asks for a node that does not exist: it fails after split stored its outputs.
    broken = re.sub(r"value: make_predictions\n", "value: no_such_node\n", text, count=1)
    assert broken != text
    run = run_workflow(broken, project, socket)
    assert not run.ok
    assert run["split"].returncode == 0 and run["make-predictions"].returncode != 0
    assert run.skipped == ["report-accuracy"] and "report-accuracy" not in run
    assert run[ON_EXIT].returncode == 0, run[ON_EXIT].stdout[-3000:]
    assert client.list_names(f"{run.uid}/*") == []
    assert client.status()["memory_usage"] == baseline


def test_two_workflows_share_a_vineyardd_without_clashing(tmp_path, store):
    """Names carry the workflow's uid: concurrent workflows cannot overwrite each other's data."""
    socket, client = store
    project = copy_iris(tmp_path)
    text = prepare(project)
    first = run_workflow(text, project, socket, on_exit=False)
    second = run_workflow(text, project, socket, on_exit=False)
    assert first.ok and second.ok, first.failure() + second.failure()
    assert first.uid != second.uid
    assert namespace_names(client, first.uid) == namespace_names(client, second.uid) == IRIS_DATASETS
    assert run_exit_handler(text, project, socket, first.uid).returncode == 0
    assert client.list_names(f"{first.uid}/*") == [] and namespace_names(client, second.uid) == IRIS_DATASETS
    assert run_exit_handler(text, project, socket, second.uid).returncode == 0
    assert client.list_names(f"{second.uid}/*") == []


def test_oddly_named_nodes_run_with_a_catch_all_catalog(tmp_path, store):
    """Dots, underscores, long names, collisions, unicode and Kedro's generated
    names all survive `kedro run -p odd -n NODE`, with one "{default}" pattern."""
    socket, client = store
    project = copy_iris(tmp_path)
    add_test_pipelines(project)
    text = prepare(project, "odd", "--catch-all")
    catalog = (project / "conf" / "vineyard" / "catalog" / "odd.yml").read_text()
    assert catalog.startswith("'{default}':") or catalog.startswith('"{default}":'), catalog
    baseline = client.status()["memory_usage"]
    run = run_workflow(text, project, socket, on_exit=False)
    assert run.ok, run.failure()
    assert len(run) == 10
    checked = [r for r in run.values() if "odd pipeline result: 10" in r.stdout]
    assert len(checked) == 1
    assert "o_final" in namespace_names(client, run.uid)
    assert run_exit_handler(text, project, socket, run.uid).returncode == 0
    assert client.list_names(f"{run.uid}/*") == []
    assert client.status()["memory_usage"] == baseline


OTHER_PARAMS = "train_fraction=0.5,random_state=4"


def test_grouped_workflow_equals_the_local_run(tmp_path, store):
    """--group-by namespace: `split` alone, the namespace `model` (two nodes)
    in one task reading what split stored; the same accuracy as `kedro run`,
    also with other parameters given at submit time (`argo submit -p params=...`)."""
    socket, client = store
    project = copy_iris(tmp_path)
    add_test_pipelines(project)
    local = kedro(project, "run", "--pipelines", "chained", env=kedro_env(VINEYARD_IPC_SOCKET=None))
    assert local.returncode == 0, local.stdout[-3000:]
    other = kedro(project, "run", "--pipelines", "chained", "--params", OTHER_PARAMS, env=kedro_env(VINEYARD_IPC_SOCKET=None))
    assert other.returncode == 0, other.stdout[-3000:]
    assert accuracy(other.stdout) != accuracy(local.stdout)  # so that the parameters visibly reach the run
    text = prepare(project, "chained", generate_flags=("--group-by", "namespace"))
    baseline = client.status()["memory_usage"]

    for parameters, reference in ((None, local), ({"params": OTHER_PARAMS}, other)):
        run = run_workflow(text, project, socket, parameters=parameters, on_exit=False)
        assert run.ok, run.failure()
        assert run.order == ["split", "model"]
        model = run["model"]
        assert model.args[3:10] == ["run", "--pipelines", "chained", "--namespaces", "model", "-e", "vineyard"]
        assert "Completed 2 out of 2 tasks" in model.stdout, model.stdout[-3000:]
        assert accuracy(model.stdout) == accuracy(reference.stdout)
        # y_pred lived and died inside the model task (Kedro releases it after its last reader there).
        assert namespace_names(client, run.uid) == IRIS_DATASETS - {"y_pred"}
        handler = run_exit_handler(text, project, socket, run.uid)
        assert handler.returncode == 0, handler.stdout[-3000:]
        assert client.list_names(f"{run.uid}/*") == []
        assert client.status()["memory_usage"] == baseline
