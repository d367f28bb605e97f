"""`kedro vineyard argo generate`: the workflow is valid against Argo's own
schema (unknown fields rejected), passes what `argo lint` checks, and its DAG
is the pipeline's node dependencies, for iris and for namespaced, modular and
oddly named pipelines; old option spellings keep working."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from argo_sim import check_workflow_text, lint_problems, task_graph
from kedro_project import copy_iris, kedro
from awkward_pipelines import add_test_pipelines, node_graph
from vineyard.contrib.kedro import _core
from vineyard.contrib.kedro.plugins.cli import commands

PIPELINES = ["__default__", "namespaced", "modular", "odd"]
RUN_ARGS = ["-e", "{{workflow.parameters.env}}", "--params={{workflow.parameters.params}}"]
check = check_workflow_text


@pytest.fixture(scope="module")
def odd_project(tmp_path_factory) -> Path:
    """iris with the test pipelines, and one "{default}" vineyard pattern for all their datasets."""
    project = copy_iris(tmp_path_factory.mktemp("argo"))
    add_test_pipelines(project)
    created = kedro(project, "vineyard", "catalog", "create", "-p", "odd", "--catch-all")
    assert created.returncode == 0, created.stdout[-3000:]
    return project


def iris_with_catalog(in_project, tmp_path: Path, *envs: str):
    """A copy of iris entered in process, with vineyard entries in each env (default `vineyard`)."""
    invoke = in_project(copy_iris(tmp_path))
    for env in envs or ("vineyard",):
        created = invoke("catalog", "create", "-p", "__default__", "-e", env)
        assert created.exit_code == 0, created.output
    return invoke


def templates(wf: dict) -> dict[str, dict]:
    return {t["name"]: t for t in wf["spec"]["templates"]}


# -- iris, in process --------------------------------------------------------------


def test_generate_iris_in_process(in_project, tmp_path, validator):
    invoke = iris_with_catalog(in_project, tmp_path)
    result = invoke("argo", "generate", "-i", "registry.example/iris:1.0", "-o", "deploy")
    assert result.exit_code == 0, result.output
    path = Path("deploy") / "argo-iris.yml"
    assert f"Argo workflow configuration was created: {path}" in result.output
    wf = check(path.read_text(), validator)
    assert task_graph(wf) == node_graph("__default__") == {
        "split": set(),
        "make_predictions": {"split"},
        "report_accuracy": {"split", "make_predictions"},
    }
    assert wf["metadata"]["generateName"] == "iris-"
    kedro_t, cleanup = templates(wf)["kedro"], templates(wf)[wf["spec"]["onExit"]]
    container = kedro_t["container"]
    assert container["image"] == "{{workflow.parameters.image}}"
    arguments = {p["name"]: p["value"] for p in wf["spec"]["arguments"]["parameters"]}
    assert arguments == {"image": "registry.example/iris:1.0", "env": "vineyard", "params": ""}
    assert container["command"] == ["kedro"]
    assert container["args"] == ["run", "-n", "{{inputs.parameters.kedro_node}}", *RUN_ARGS]
    assert "resources" not in container
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env == {"VINEYARD_IPC_SOCKET": "/var/run/vineyard.sock", "VINEYARD_KEDRO_NAMESPACE": "{{workflow.uid}}"}
    assert kedro_t["schedulerName"] == "vineyard-scheduler"
    labels = kedro_t["metadata"]["labels"]
    assert labels["scheduling.k8s.v6d.io/vineyardd-namespace"] == "vineyard-system"
    assert labels["scheduling.k8s.v6d.io/vineyardd"] == "vineyardd-sample"
    assert labels["scheduling.k8s.v6d.io/job"] == "{{inputs.parameters.job}}"
    assert kedro_t["metadata"]["annotations"] == {"scheduling.k8s.v6d.io/required": "{{inputs.parameters.required}}"}
    assert kedro_t["volumes"][0]["hostPath"]["path"] == "/var/run/vineyard-kubernetes/vineyard-system/vineyardd-sample"
    assert container["volumeMounts"] == [{"name": "vineyard-socket", "mountPath": "/var/run"}]
    assert cleanup["container"]["command"] == ["vineyard-kedro"]
    assert cleanup["container"]["args"] == ["gc", "--namespace", "{{workflow.uid}}"]
    tasks = {t["name"]: t for t in templates(wf)["dag"]["dag"]["tasks"]}
    required = {p["name"]: p["value"] for p in tasks["report-accuracy"]["arguments"]["parameters"]}["required"]
    assert sorted(required.split(",")) == sorted(tasks["report-accuracy"]["dependencies"])


def test_without_operator_is_a_plain_workflow(in_project, tmp_path, validator):
    invoke = iris_with_catalog(in_project, tmp_path)
    for flags in (["-w"], ["--without-operator"], ["-w", "false"], ["--with_vineyard_operator", "False"], ["-wfalse"]):
        out = tmp_path / "out" / "-".join(flags).strip("-")
        # Without the operator the pods have no vineyard socket: the vineyard datasets cannot cross them.
        refused = invoke("argo", "generate", "--image", "iris:1", *flags, "--output_path", str(out))
        assert refused.exit_code == 1 and 'dataset "X_train" (VineyardDataset, without the operator' in refused.output, flags
        result = invoke("argo", "generate", "--image", "iris:1", *flags, "--output_path", str(out), "--allow-local")
        assert result.exit_code == 0, (flags, result.output)
        wf = check((out / "argo-iris.yml").read_text(), validator)
        kedro_t = templates(wf)["kedro"]
        assert "onExit" not in wf["spec"] and set(templates(wf)) == {"kedro", "dag"}, flags
        assert "schedulerName" not in kedro_t and "volumes" not in kedro_t and "env" not in kedro_t["container"]
        assert kedro_t["container"]["args"][-3:] == RUN_ARGS
        assert not any(k.startswith("scheduling.k8s.v6d.io") for k in kedro_t["metadata"]["labels"])
        assert task_graph(wf) == node_graph("__default__")


def test_old_and_new_option_spellings(in_project, tmp_path, validator):
    invoke = iris_with_catalog(in_project, tmp_path, "prod")
    spellings = [
        ["-v", "my-vineyardd", "-n", "my-ns", "-o", "a", "-w", "true"],
        ["--vineyard", "my-vineyardd", "--namespace", "my-ns", "--output_path", "b", "--with_vineyard_operator", "true"],
        ["--vineyardd-name", "my-vineyardd", "--vineyard-namespace", "my-ns", "--output", "c", "--with-vineyard-operator", "yes"],
    ]
    for args in spellings:
        result = invoke("argo", "generate", "-i", "iris:1", "-e", "prod", *args)
        assert result.exit_code == 0, (args, result.output)
        out = Path(args[args.index(next(a for a in args if a in ("-o", "--output_path", "--output"))) + 1])
        wf = check((out / "argo-iris.yml").read_text(), validator)
        kedro_t = templates(wf)["kedro"]
        assert kedro_t["volumes"][0]["hostPath"]["path"] == "/var/run/vineyard-kubernetes/my-ns/my-vineyardd"
        assert kedro_t["metadata"]["labels"]["scheduling.k8s.v6d.io/vineyardd"] == "my-vineyardd"
        assert kedro_t["container"]["args"][-3:] == RUN_ARGS
        assert {p["name"]: p["value"] for p in wf["spec"]["arguments"]["parameters"]}["env"] == "prod"
        assert wf["spec"]["onExit"] == "cleanup"


def test_bad_invocations(in_project, tmp_path):
    invoke = in_project(copy_iris(tmp_path))
    no_env = invoke("argo", "generate", "-i", "iris:1")
    assert no_env.exit_code == 1 and "environment 'vineyard' has no configuration here" in no_env.output
    assert "kedro vineyard catalog create -p PIPELINE -e vineyard" in no_env.output
    assert invoke("catalog", "create", "-p", "__default__").exit_code == 0
    missing = CliRunner().invoke(commands, ["vineyard", "argo", "generate"])
    assert missing.exit_code == 2 and "--image" in missing.output
    unknown = invoke("argo", "generate", "-i", "iris:1", "-p", "nope")
    assert unknown.exit_code == 1
    assert "'nope' pipeline not found! Existing pipelines: __default__" in unknown.output
    contradiction = invoke("argo", "generate", "-i", "iris:1", "-w", "--with-vineyard-operator", "true")
    assert contradiction.exit_code == 2 and "contradicts" in contradiction.output
    bad_image = invoke("argo", "generate", "-i", "not an image")
    assert bad_image.exit_code == 1 and "not an image reference" in bad_image.output
    bad_ns = invoke("argo", "generate", "-i", "iris:1", "-n", "Not_A_Name!")
    assert bad_ns.exit_code == 1 and "not a Kubernetes name" in bad_ns.output
    assert not list(Path.cwd().glob("argo-*.yml"))


# -- namespaced, modular and odd pipelines ------------------------------------------


@pytest.mark.parametrize("operator", [True, False], ids=["operator", "plain"])
def test_every_pipeline_shape(in_project, odd_project, tmp_path, validator, operator):
    invoke = in_project(odd_project)
    for name in PIPELINES:
        out = tmp_path / name
        flags = [] if operator else ["--without-operator", "--allow-local"]
        result = invoke("argo", "generate", "-i", "iris:1", "-p", name, "-o", str(out), *flags)
        assert result.exit_code == 0, (name, result.output)
        wf = check((out / "argo-iris.yml").read_text(), validator)
        assert task_graph(wf) == node_graph(name), name
        args = templates(wf)["kedro"]["container"]["args"]
        # Kedro 1.x deprecates `--pipeline` (and `-p`) for `--pipelines`.
        assert (args[1:3] == ["--pipelines", name]) == (name != "__default__"), args


def test_odd_names_give_distinct_readable_task_names(in_project, odd_project, tmp_path, validator):
    invoke = in_project(odd_project)
    assert invoke("argo", "generate", "-i", "iris:1", "-p", "odd", "-o", str(tmp_path)).exit_code == 0
    wf = check((tmp_path / "argo-iris.yml").read_text(), validator)
    tasks = {t["name"]: {p["name"]: p["value"] for p in t["arguments"]["parameters"]} for t in templates(wf)["dag"]["dag"]["tasks"]}
    by_node = {params["kedro_node"]: task for task, params in tasks.items()}
    assert len(by_node) == len(tasks) == 10
    assert by_node["data.prep.v1"] == "data-prep-v1"
    assert by_node["__private__"] == "private"
    collided = [by_node[n] for n in ("a_b", "a.b", "A-B")]
    assert len(set(collided)) == 3 and all(t.startswith("a-b-") for t in collided)
    for long in ("x" * 80, "y" * 70 + "1", "y" * 70 + "2"):
        assert len(by_node[long]) <= 63 and by_node[long].startswith(long[:20])
    assert all(params["job"] == task for task, params in tasks.items())
    modular = tmp_path / "modular"
    assert invoke("argo", "generate", "-i", "iris:1", "-p", "modular", "-o", str(modular)).exit_code == 0
    nodes = {t["arguments"]["parameters"][0]["value"] for t in templates(yaml.safe_load((modular / "argo-iris.yml").read_text()))["dag"]["dag"]["tasks"]}
    assert {"a.split", "b.report_accuracy", "outer.inner.make_predictions"} <= nodes


def test_generate_through_kedro(in_project, odd_project, tmp_path, validator):
    for name in ("__default__", "odd"):
        out = tmp_path / name
        result = kedro(odd_project, "vineyard", "argo", "generate", "-i", "iris:1", "-p", name, "-o", str(out))
        assert result.returncode == 0, result.stdout[-3000:]
        assert "Argo workflow configuration was created" in result.stdout
        in_project(odd_project)
        assert task_graph(check((out / "argo-iris.yml").read_text(), validator)) == node_graph(name)
    missing = kedro(odd_project, "vineyard", "argo", "generate")
    assert missing.returncode == 2 and "Missing option" in missing.stdout


# -- the checks themselves ------------------------------------------------------------


def _iris_workflow() -> dict:
    spec = {"package_name": "iris", "image": "iris:1", "nodes": [{"name": "a"}, {"name": "b", "deps": ["a"]}]}
    text, warnings = _core.render_argo(json.dumps(spec))
    assert warnings == []
    return yaml.safe_load(text)


def test_the_schema_rejects_what_argo_rejects(validator):
    wf = _iris_workflow()
    assert not list(validator.iter_errors(wf))
    cases = {
        "unknown container field": lambda w: w["spec"]["templates"][0]["container"].update(imagePullPolcy="Always"),
        "unknown spec field": lambda w: w["spec"].update(entryPoint="dag"),
        "wrong kind": lambda w: w.update(kind="CronWorkflow"),
        "wrong type": lambda w: w["spec"]["templates"][0].update(inputs={"parameters": "kedro_node"}),
        "missing spec": lambda w: w.pop("spec"),
        "unknown resources field": lambda w: w["spec"]["templates"][0]["container"].update(resources={"request": {"cpu": "1"}}),
        "unknown secret ref field": lambda w: w["spec"]["templates"][0]["container"]["env"].append(
            {"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "keys": "secret"}}}
        ),
        "unknown argument field": lambda w: w["spec"]["arguments"]["parameters"][0].update(help="x"),
    }
    for case, mutate in cases.items():
        broken = copy.deepcopy(wf)
        mutate(broken)
        assert list(validator.iter_errors(broken)), case
    loose = copy.deepcopy(wf)
    loose["spec"]["templates"][0]["retryStrategy"]["limit"] = 1  # Argo accepts an int here
    assert not list(validator.iter_errors(loose))


def test_the_lint_catches_broken_dags():
    wf = _iris_workflow()
    tasks = lambda w: w["spec"]["templates"][1]["dag"]["tasks"]  # noqa: E731
    cases = {
        "unknown task": lambda w: tasks(w)[1].update(dependencies=["zz"]),
        "cycle": lambda w: tasks(w)[0].update(dependencies=["b"]),
        "twice": lambda w: tasks(w)[1].update(name="a"),
        "is not a DNS-1123": lambda w: tasks(w)[1].update(name="B_b"),
        "does not supply": lambda w: tasks(w)[1]["arguments"]["parameters"].pop(),
        "not a template": lambda w: w["spec"].update(entrypoint="main"),
        "unknown template": lambda w: tasks(w)[0].update(template="kedroo"),
        "undeclared workflow parameter": lambda w: w["spec"]["arguments"]["parameters"].pop(0),
    }
    for expected, mutate in cases.items():
        broken = copy.deepcopy(wf)
        mutate(broken)
        problems = lint_problems(broken)
        assert any(expected in p for p in problems), (expected, problems)
        assert _core.check_workflow(yaml.safe_dump(broken)), expected  # the Rust check agrees
