"""`kedro vineyard argo generate` for real projects: --group-by namespace
(the DAG equals Kedro's own grouping), resources from options and node tags,
run options and workflow parameters, --secret, and datasets that cannot
cross pods (refused, warned, allowed). Every workflow passes Argo's schema
(strict) and the `argo lint` checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from argo_sim import check_workflow_text, group_graph, task_graph
from awkward_pipelines import add_test_pipelines, node_graph
from kedro_project import copy_iris, kedro

check = check_workflow_text


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """iris with the test pipelines, and one "{default}" vineyard pattern for all their datasets."""
    project = copy_iris(tmp_path_factory.mktemp("argo-options"))
    add_test_pipelines(project)
    created = kedro(project, "vineyard", "catalog", "create", "-p", "odd", "--catch-all")
    assert created.returncode == 0, created.stdout[-3000:]
    return project


def templates(wf: dict) -> dict[str, dict]:
    return {t["name"]: t for t in wf["spec"]["templates"]}


def tasks(wf: dict) -> dict[str, dict]:
    """``task name -> {parameter: value, "template": ..., "dependencies": [...]}``."""
    out = {}
    for t in templates(wf)["dag"]["dag"]["tasks"]:
        values = {p["name"]: p["value"] for p in t["arguments"]["parameters"]}
        out[t["name"]] = {**values, "template": t["template"], "dependencies": t.get("dependencies", [])}
    return out


def generate(invoke, tmp_path: Path, *args: str, validator=None) -> dict:
    out = tmp_path / "out"
    result = invoke("argo", "generate", "-i", "iris:1", "-o", str(out), *args)
    assert result.exit_code == 0, result.output
    text = (out / "argo-iris.yml").read_text()
    return check(text, validator) if validator is not None else yaml.safe_load(text)


def kedro_groups(name: str) -> dict[str, set[str]]:
    """Kedro 1.x's own grouping of the registered pipeline (`Pipeline.group_nodes_by`)."""
    from kedro.framework.project import pipelines

    return {g.name: set(g.dependencies) for g in pipelines[name].group_nodes_by("namespace")}


# -- grouping ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["namespaced", "modular", "chained", "odd", "__default__"])
def test_group_by_namespace_dag_equals_kedros_grouping(in_project, project, tmp_path, validator, name):
    invoke = in_project(project)
    wf = generate(invoke, tmp_path, "-p", name, "--group-by", "namespace", validator=validator)
    assert group_graph(wf) == kedro_groups(name)
    for task in tasks(wf).values():
        is_namespace = "kedro_namespace" in task
        assert task["template"] == ("kedro-namespace" if is_namespace else "kedro")
        assert task["required"] == ",".join(task["dependencies"])
    if "kedro-namespace" in templates(wf):
        args = templates(wf)["kedro-namespace"]["container"]["args"]
        assert args[:5] == ["run", "--pipelines", name, "--namespaces", "{{inputs.parameters.kedro_namespace}}"]


def test_group_by_none_is_the_default(in_project, project, tmp_path, validator):
    invoke = in_project(project)
    default = generate(invoke, tmp_path / "a", "-p", "modular", validator=validator)
    none = generate(invoke, tmp_path / "b", "-p", "modular", "--group-by", "none", validator=validator)
    assert default == none
    assert task_graph(none) == node_graph("modular")
    assert len(tasks(none)) == 9 and set(templates(none)) == {"kedro", "dag", "cleanup"}
    grouped = generate(invoke, tmp_path / "c", "-p", "modular", "--group-by", "namespace", validator=validator)
    assert {t["kedro_namespace"] for t in tasks(grouped).values()} == {"a", "b", "outer"}
    bad = invoke("argo", "generate", "-i", "iris:1", "--group-by", "tag")
    assert bad.exit_code == 2 and "'tag' is not one of 'none', 'namespace'" in bad.output


# -- resources -----------------------------------------------------------------------


def resources_of(wf: dict) -> dict[str, dict]:
    """``task -> container resources`` (``{}`` when none)."""
    by_template = {name: t["container"].get("resources", {}) for name, t in templates(wf).items() if "container" in t}
    return {name: by_template[t["template"]] for name, t in tasks(wf).items()}


def test_resource_options_and_node_tags(in_project, project, tmp_path, validator):
    invoke = in_project(project)
    refused = invoke("argo", "generate", "-i", "iris:1", "-p", "sized", "--gpu", "0")
    assert refused.exit_code == 1 and 'gpu "0" is not positive' in refused.output
    wf = generate(invoke, tmp_path, "-p", "sized", "--cpu", "1", "--memory", "1Gi", validator=validator)
    both = lambda q: {"requests": q, "limits": q}  # noqa: E731
    assert resources_of(wf) == {
        "split": both({"cpu": "2", "memory": "1Gi"}),
        "make-predictions": both({"cpu": "1", "memory": "3Gi", "nvidia.com/gpu": "1"}),
        "report-accuracy": both({"cpu": "1", "memory": "512Mi"}),
    }
    assert tasks(wf)["report-accuracy"]["template"] == "kedro-cpu-1-memory-512mi"
    # Grouped: the namespace's task takes the largest of its nodes.
    grouped = generate(invoke, tmp_path / "g", "-p", "sized_namespaced", "--group-by", "namespace", "--memory", "4Gi", validator=validator)
    assert resources_of(grouped) == {"ns": both({"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": "1"})}
    # No options: only what the tags ask for.
    bare = generate(invoke, tmp_path / "b", "-p", "sized", validator=validator)
    assert resources_of(bare)["report-accuracy"] == both({"memory": "512Mi"})
    bad = invoke("argo", "generate", "-i", "iris:1", "--memory", "4GB")
    assert bad.exit_code == 1 and 'memory "4GB" is not a Kubernetes quantity' in bad.output


# -- run options -----------------------------------------------------------------------


def test_run_options_reach_every_run(in_project, project, tmp_path, validator):
    invoke = in_project(project)
    conf = project / "conf"
    wf = generate(
        invoke, tmp_path, "-p", "sized", "--tags", "argo.cpu-2,argo.memory-512Mi", "--params", "train_fraction=0.5,random_state=4",
        "--conf-source", str(conf), "--group-by", "namespace", validator=validator,
    )
    # Only the tagged nodes are tasks; they depend on each other as in the filtered pipeline.
    assert {n: t["dependencies"] for n, t in tasks(wf).items()} == {"split": [], "report-accuracy": ["split"]}
    arguments = {p["name"]: p["value"] for p in wf["spec"]["arguments"]["parameters"]}
    assert arguments == {"image": "iris:1", "env": "vineyard", "params": "train_fraction=0.5,random_state=4", "conf_source": str(conf)}
    for name, template in templates(wf).items():
        if name.startswith("kedro"):
            assert template["container"]["args"][4:] == [
                "{{inputs.parameters.kedro_node}}", "-e", "{{workflow.parameters.env}}", "--tags", "argo.cpu-2,argo.memory-512Mi",
                "--params={{workflow.parameters.params}}", "--conf-source={{workflow.parameters.conf_source}}",
            ], name
            assert template["container"]["image"] == "{{workflow.parameters.image}}"
    in_image = invoke("argo", "generate", "-i", "iris:1", "--conf-source", "/home/kedro/conf-prod", "-o", str(tmp_path / "i"))
    assert in_image.exit_code == 0 and "--conf-source /home/kedro/conf-prod is not a directory here" in in_image.output
    none = invoke("argo", "generate", "-i", "iris:1", "--tags", "no_such_tag")
    assert none.exit_code == 1 and "has no nodes with tags [\"no_such_tag\"]" in none.output
    bad = invoke("argo", "generate", "-i", "iris:1", "--params", "novalue")
    assert bad.exit_code == 2 and "Item `novalue` must contain a key and a value" in bad.output


def test_secret_is_wired_into_every_kedro_container(in_project, project, tmp_path, validator):
    invoke = in_project(project)
    wf = generate(invoke, tmp_path, "-p", "sized", "--secret", "kedro-hmac", validator=validator)
    kedro_templates = [t for name, t in templates(wf).items() if name.startswith("kedro")]
    assert len(kedro_templates) == 3
    for t in kedro_templates:
        env = {e["name"]: e for e in t["container"]["env"]}
        assert env["VINEYARD_KEDRO_SECRET"] == {"name": "VINEYARD_KEDRO_SECRET", "valueFrom": {"secretKeyRef": {"name": "kedro-hmac", "key": "secret"}}}
    assert all(e["name"] != "VINEYARD_KEDRO_SECRET" for e in templates(wf)["cleanup"]["container"]["env"])
    other = generate(invoke, tmp_path / "k", "--secret", "kedro-hmac", "--secret-key", "hmac", validator=validator)
    env = templates(other)["kedro"]["container"]["env"]
    assert env[-1]["valueFrom"]["secretKeyRef"] == {"name": "kedro-hmac", "key": "hmac"}
    bad = invoke("argo", "generate", "-i", "iris:1", "--secret", "Kedro_HMAC")
    assert bad.exit_code == 1 and '--secret "Kedro_HMAC" is not a Kubernetes Secret name' in bad.output


# -- data that cannot cross pods ----------------------------------------------------------


def local_catalog(project: Path, text: str) -> None:
    (project / "conf" / "vineyard" / "catalog").mkdir(parents=True, exist_ok=True)
    (project / "conf" / "vineyard" / "catalog" / "local.yml").write_text(text, encoding="utf-8")


def test_local_datasets_crossing_tasks_are_refused(in_project, tmp_path, validator):
    project = copy_iris(tmp_path)
    add_test_pipelines(project)
    invoke = in_project(project)
    local_catalog(project, "X_train:\n  type: pandas.CSVDataset\n  filepath: data/05_model_input/X_train.csv\n"
                  "y_pred:\n  type: MemoryDataset\n"
                  "ns.X_train:\n  type: pandas.CSVDataset\n  filepath: data/05_model_input/ns_X_train.csv\n"
                  "y_test:\n  type: pandas.CSVDataset\n  filepath: s3://bucket/y_test.csv\n"
                  "y_train:\n  type: pandas.CSVDataset\n  filepath: gs://bucket/y_train.csv\n"
                  "X_test:\n  type: pandas.CSVDataset\n  filepath: abfs://container/X_test.csv\n")
    # The rest get vineyard entries.
    for name in ("__default__", "chained", "namespaced"):
        assert invoke("catalog", "create", "-p", name).exit_code == 0
    out = tmp_path / "out"
    refused = invoke("argo", "generate", "-i", "iris:1", "-o", str(out))
    assert refused.exit_code == 1
    message = " ".join(refused.output.split())
    assert ('datasets cannot cross pods: dataset "X_train" (pandas.CSVDataset at data/05_model_input/X_train.csv) '
            'is written by task "split" and read by task "make-predictions"; '
            'dataset "y_pred" (MemoryDataset) is written by task "make-predictions" and read by task "report-accuracy".') in message
    assert "y_test" not in message and "y_train" not in message and "X_test" not in message  # remote URLs cross pods
    assert "--allow-local" in message and not out.exists()

    allowed = invoke("argo", "generate", "-i", "iris:1", "-o", str(out), "--allow-local")
    assert allowed.exit_code == 0, allowed.output
    assert 'Warning: dataset "X_train" (pandas.CSVDataset at data/05_model_input/X_train.csv) is written by task "split"' in allowed.output
    assert "(allowed by --allow-local)" in allowed.output
    check((out / "argo-iris.yml").read_text(), validator)

    # In one task, the local file and the memory dataset work: a warning, no refusal.
    grouped = invoke("argo", "generate", "-i", "iris:1", "-o", str(out), "-p", "namespaced", "--group-by", "namespace")
    assert grouped.exit_code == 0, grouped.output
    assert 'Warning: dataset "ns.X_train" (pandas.CSVDataset at data/05_model_input/ns_X_train.csv) is written and read inside task "ns"' in grouped.output
    # Grouping does not help when writer and reader are different groups.
    chained = invoke("argo", "generate", "-i", "iris:1", "-o", str(out), "-p", "chained", "--group-by", "namespace")
    assert chained.exit_code == 1
    assert 'dataset "X_train" (pandas.CSVDataset at data/05_model_input/X_train.csv) is written by task "split" and read by task "model"' in " ".join(chained.output.split())


def test_datasets_without_an_entry_are_memory_datasets(in_project, tmp_path):
    invoke = in_project(copy_iris(tmp_path))
    (tmp_path / "iris" / "conf" / "prod").mkdir()
    refused = invoke("argo", "generate", "-i", "iris:1", "-e", "prod")
    assert refused.exit_code == 1
    assert "dataset \"X_test\" (no entry in the 'prod' catalog: a MemoryDataset) is written by task \"split\"" in " ".join(refused.output.split())
