"""The generated Argo workflow on a local cluster: each task bound to a
different vineyardd instance, so every edge of the DAG crosses instances
(objects migrate on load), one task per node and grouped by namespace; the
result equals the single-process run and the exit handler leaves nothing on
any instance."""

from __future__ import annotations

import time

from argo_sim import run_exit_handler, run_workflow
from awkward_pipelines import add_test_pipelines
from local_cluster import LocalCluster
from kedro_project import accuracy, copy_iris, kedro, kedro_env

IRIS_DATASETS = {"X_train", "X_test", "y_train", "y_test", "y_pred"}


def wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def test_every_iris_edge_crosses_instances(tmp_path):
    project = copy_iris(tmp_path)
    single = kedro(project, "run", env=kedro_env(VINEYARD_IPC_SOCKET=None))
    assert single.returncode == 0, single.stdout[-3000:]
    reference = accuracy(single.stdout)

    created = kedro(project, "vineyard", "catalog", "create", "-p", "__default__", "-e", "vineyard")
    assert created.returncode == 0, created.stdout[-3000:]
    generated = kedro(project, "vineyard", "argo", "generate", "-i", "iris:1", "-o", str(project / "deploy"))
    assert generated.returncode == 0, generated.stdout[-3000:]
    text = (project / "deploy" / "argo-iris.yml").read_text()

    with LocalCluster(3, size="1Gi") as cluster:
        clients = [cluster.client(i) for i in range(3)]
        baseline = [c.status()["memory_usage"] for c in clients]
        run = run_workflow(text, project, cluster.sockets, on_exit=False)
        assert run.ok, run.failure()
        # split -> A, make-predictions -> B, report-accuracy -> C: the three
        # edges (A->B, A->C, B->C) all cross instances.
        assert run.order == ["split", "make-predictions", "report-accuracy"]
        assert len(set(run.sockets.values())) == 3
        assert accuracy(run["report-accuracy"].stdout) == reference
        names = {name.split("/", 1)[1] for name, _ in clients[0].list_names(f"{run.uid}/*")}
        assert names == IRIS_DATASETS
        # B and C hold migrated copies of what they loaded.
        assert clients[1].status()["memory_usage"] > baseline[1]
        assert clients[2].status()["memory_usage"] > baseline[2]

        handler = run_exit_handler(text, project, cluster.sockets[0], run.uid)
        assert handler.returncode == 0, handler.stdout[-3000:]
        for i, c in enumerate(clients):
            assert c.list_names(f"{run.uid}/*") == []
            assert wait_for(lambda c=c, i=i: c.status()["memory_usage"] == baseline[i]), (
                f"instance {i} still uses {c.status()['memory_usage'] - baseline[i]} bytes"
            )


def test_grouped_workflow_on_two_instances(tmp_path):
    """--group-by namespace on a two-instance cluster: `split` on one instance,
    the namespace `model` (two nodes, one task) on the other, loading what
    split stored across instances; the local run's accuracy, nothing left."""
    project = copy_iris(tmp_path)
    add_test_pipelines(project)
    local = kedro(project, "run", "--pipelines", "chained", env=kedro_env(VINEYARD_IPC_SOCKET=None))
    assert local.returncode == 0, local.stdout[-3000:]
    created = kedro(project, "vineyard", "catalog", "create", "-p", "chained", "-e", "vineyard")
    assert created.returncode == 0, created.stdout[-3000:]
    out = project / "deploy"
    generated = kedro(project, "vineyard", "argo", "generate", "-i", "iris:1", "-p", "chained", "--group-by", "namespace", "-o", str(out))
    assert generated.returncode == 0, generated.stdout[-3000:]
    text = (out / "argo-iris.yml").read_text()

    with LocalCluster(2, size="1Gi") as cluster:
        clients = [cluster.client(i) for i in range(2)]
        baseline = [c.status()["memory_usage"] for c in clients]
        run = run_workflow(text, project, cluster.sockets, on_exit=False)
        assert run.ok, run.failure()
        assert run.order == ["split", "model"]
        assert run.sockets["split"] != run.sockets["model"]
        assert accuracy(run["model"].stdout) == accuracy(local.stdout)
        names = {name.split("/", 1)[1] for name, _ in clients[0].list_names(f"{run.uid}/*")}
        assert names == IRIS_DATASETS - {"y_pred"}  # y_pred lived inside the model task
        assert clients[1].status()["memory_usage"] > baseline[1]  # migrated copies

        handler = run_exit_handler(text, project, cluster.sockets[0], run.uid)
        assert handler.returncode == 0, handler.stdout[-3000:]
        for i, c in enumerate(clients):
            assert c.list_names(f"{run.uid}/*") == []
            assert wait_for(lambda c=c, i=i: c.status()["memory_usage"] == baseline[i]), (
                f"instance {i} still uses {c.status()['memory_usage'] - baseline[i]} bytes"
            )
