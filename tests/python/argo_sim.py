"""Runs a generated Argo workflow locally, the way Argo would run it.

Every DAG task becomes its own process, started in dependency order with the
command, arguments and environment its container template gives it (after
substituting ``{{inputs.parameters.*}}`` from the task's arguments,
``{{workflow.parameters.*}}`` from the workflow's arguments (overridden as
``argo submit -p NAME=VALUE`` would) and ``{{workflow.uid}}`` from a fresh
workflow uid), in the project directory
instead of the image. The pod's vineyard socket (``/var/run/vineyard.sock``,
mounted from the node) is replaced by a real vineyardd's socket: one for all
tasks, or a list that tasks are assigned to round-robin in DAG order (one
vineyardd per "node" of a cluster). ``kedro`` runs as ``python -m kedro`` and
``vineyard-kedro`` as the package's console script (or ``python -m``), so the
Python under test is the one used. When a task fails, its dependents are not
started (Argo's default); the exit handler runs either way, as in Argo.
Independent tasks run concurrently, as Argo runs them.

    run = run_workflow(yaml_text, project, vineyardd.socket)
    assert run.ok, run.failure()
    run["split"].stdout           # a task's output (stdout and stderr merged)
    run.uid, run.sockets, run.order

It also stands in for Argo's other checks: ``workflow_validator`` validates
against Argo's JSON schema (made strict), ``lint_problems`` checks what
``argo lint`` checks about a workflow's structure.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

from vineyard.contrib.kedro import _core

__all__ = [
    "ON_EXIT",
    "POD_SOCKET",
    "WorkflowRun",
    "check_workflow_text",
    "dag_tasks",
    "group_graph",
    "lint_problems",
    "run_exit_handler",
    "run_workflow",
    "schema_candidates",
    "task_graph",
    "topological_order",
    "workflow_validator",
]

POD_SOCKET = "/var/run/vineyard.sock"
ON_EXIT = "onExit"  # key of the exit handler's result (not a DNS-1123 label, so no task has it)
_VAR = re.compile(r"\{\{\s*([A-Za-z0-9_.\-]+)\s*\}\}")


class WorkflowRun(dict):
    """``task name -> CompletedProcess`` (plus ``ON_EXIT``), with what the run used."""

    uid: str
    order: list[str]
    sockets: dict[str, str]
    skipped: list[str]

    @property
    def ok(self) -> bool:
        return not self.skipped and all(r.returncode == 0 for r in self.values())

    def failure(self) -> str:
        """The output of the first failed step (for assertion messages)."""
        for name, result in self.items():
            if result.returncode != 0:
                return f"{name} exited with {result.returncode}: {' '.join(result.args)}\n{result.stdout[-4000:]}"
        return f"not run: {self.skipped}" if self.skipped else "all steps succeeded"


def _templates(wf: Mapping) -> dict[str, dict]:
    return {t["name"]: t for t in wf["spec"]["templates"]}


def dag_tasks(wf: Mapping) -> list[dict]:
    """The entrypoint DAG's tasks."""
    entry = _templates(wf)[wf["spec"]["entrypoint"]]
    return list(entry["dag"]["tasks"])


def topological_order(tasks: Sequence[Mapping]) -> list[str]:
    """Task names in dependency order (document order among ready tasks); raises on a cycle or unknown task."""
    deps = {t["name"]: list(t.get("dependencies") or []) for t in tasks}
    for name, parents in deps.items():
        unknown = [p for p in parents if p not in deps]
        if unknown:
            raise ValueError(f"task {name} depends on unknown tasks {unknown}")
    order: list[str] = []
    done: set[str] = set()
    while len(order) < len(deps):
        ready = [n for n in deps if n not in done and all(p in done for p in deps[n])]
        if not ready:
            raise ValueError(f"dependency cycle among {sorted(set(deps) - done)}")
        order.append(ready[0])
        done.add(ready[0])
    return order


def _substitute(text: str, values: Mapping[str, str]) -> str:
    def one(match: re.Match) -> str:
        key = match.group(1)
        if key not in values:
            raise KeyError(f"no value for {{{{{key}}}}} in {text!r}")
        return values[key]

    return _VAR.sub(one, text)


def _argv(command: Sequence[str], python: str) -> list[str]:
    program, rest = command[0], list(command[1:])
    if program == "kedro":
        return [python, "-m", "kedro", *rest]
    if program == "vineyard-kedro":
        script = Path(python).parent / "vineyard-kedro"
        if script.exists():
            return [str(script), *rest]
        return [python, "-m", "vineyard.contrib.kedro.plugins.cli", *rest]
    return [program, *rest]


def _run_template(
    template: Mapping,
    values: Mapping[str, str],
    socket: str,
    project: Path,
    python: str,
    env: Mapping[str, str] | None,
    timeout: float,
    secrets: Mapping[str, Mapping[str, str]] | None = None,
) -> subprocess.CompletedProcess:
    container = template["container"]
    command = [_substitute(str(a), values) for a in [*container.get("command", []), *container.get("args", [])]]
    proc_env = dict(os.environ if env is None else env)
    proc_env.update({"KEDRO_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1", "PYTHONUNBUFFERED": "1", "COLUMNS": "250"})
    # What the pod does not set, it does not have.
    for key in ("VINEYARD_IPC_SOCKET", "VINEYARD_KEDRO_NAMESPACE", "KEDRO_ENV"):
        proc_env.pop(key, None)
    for var in container.get("env") or []:
        ref = (var.get("valueFrom") or {}).get("secretKeyRef")
        if ref is not None:
            # As the kubelet does: a missing Secret or key stops the pod before it starts.
            value = (secrets or {}).get(ref["name"], {}).get(ref["key"])
            if value is None:
                message = f"CreateContainerConfigError: secret {ref['name']!r} has no key {ref['key']!r}"
                return subprocess.CompletedProcess(command, 1, message, None)
            proc_env[var["name"]] = value
            continue
        value = _substitute(str(var.get("value", "")), values)
        if var["name"] == "VINEYARD_IPC_SOCKET" and value == POD_SOCKET:
            value = socket
        proc_env[var["name"]] = value
    return subprocess.run(
        _argv(command, python),
        cwd=project,
        env=proc_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )


def run_workflow(
    yaml_text: str,
    project_dir: str | Path,
    sockets: list[str] | str,
    uid: str | None = None,
    python: str = sys.executable,
    *,
    env: Mapping[str, str] | None = None,
    parameters: Mapping[str, str] | None = None,
    secrets: Mapping[str, Mapping[str, str]] | None = None,
    on_exit: bool = True,
    timeout: float = 300,
    max_parallel: int = 4,
) -> WorkflowRun:
    """Runs every task of the workflow in DAG order, then its exit handler.

    ``sockets``: one vineyardd socket for every task, or a list that tasks
    are assigned to round-robin in DAG order (the exit handler gets the
    first). ``uid`` is ``{{workflow.uid}}`` (a fresh uuid4 by default).
    ``env`` is the environment the tasks start from (default: this process's,
    minus the vineyard and Kedro variables a pod would not have).
    ``parameters`` override the workflow's arguments (``argo submit -p``);
    ``secrets`` are the cluster's Secrets (``{name: {key: value}}``). Tasks
    whose parents are done run concurrently, at most ``max_parallel`` at once.
    """
    wf = yaml.safe_load(yaml_text)
    templates = _templates(wf)
    socket_list = [sockets] if isinstance(sockets, str) else list(sockets)
    if not socket_list:
        raise ValueError("no vineyardd socket given")
    tasks = {t["name"]: t for t in dag_tasks(wf)}
    run = WorkflowRun()
    run.uid = uid or str(uuid.uuid4())
    run.order = topological_order(list(tasks.values()))
    run.sockets = {name: socket_list[i % len(socket_list)] for i, name in enumerate(run.order)}
    run.skipped = []
    workflow_values = _workflow_values(wf, run.uid, parameters)
    failed: set[str] = set()
    finished: set[str] = set()
    pending = list(run.order)
    with concurrent.futures.ThreadPoolExecutor(max(1, max_parallel)) as pool:
        running: dict[concurrent.futures.Future, str] = {}
        while pending or running:
            # Start every task whose parents are done, as Argo does; skip those whose parents failed.
            for name in list(pending):
                parents = tasks[name].get("dependencies") or []
                if any(p in failed for p in parents):
                    pending.remove(name)
                    run.skipped.append(name)
                    failed.add(name)
                    finished.add(name)
                elif all(p in finished for p in parents):
                    pending.remove(name)
                    task = tasks[name]
                    values = dict(workflow_values)
                    for p in (task.get("arguments") or {}).get("parameters") or []:
                        values[f"inputs.parameters.{p['name']}"] = str(p.get("value", ""))
                    template = templates[task["template"]]
                    args = (template, values, run.sockets[name], Path(project_dir), python, env, timeout, secrets)
                    running[pool.submit(_run_template, *args)] = name
            if not running:
                continue
            done, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                name = running.pop(future)
                run[name] = future.result()
                finished.add(name)
                if run[name].returncode != 0:
                    failed.add(name)
    if on_exit and wf["spec"].get("onExit"):
        run[ON_EXIT] = run_exit_handler(
            yaml_text, project_dir, socket_list[0], run.uid, python, env=env, parameters=parameters, timeout=timeout
        )
    return run


def _workflow_values(wf: Mapping, uid: str, parameters: Mapping[str, str] | None = None) -> dict[str, str]:
    values = {
        "workflow.uid": uid,
        "workflow.name": f"{wf['metadata'].get('generateName', 'workflow-')}sim",
        "workflow.namespace": "default",
    }
    declared = {p["name"]: str(p.get("value", "")) for p in _params(wf["spec"].get("arguments"))}
    unknown = set(parameters or {}) - set(declared)
    if unknown:
        # As `argo submit -p` refuses a parameter the workflow does not declare.
        raise ValueError(f"the workflow has no parameters {sorted(unknown)}")
    declared.update(parameters or {})
    values.update({f"workflow.parameters.{k}": v for k, v in declared.items()})
    return values


def run_exit_handler(
    yaml_text: str,
    project_dir: str | Path,
    socket: str,
    uid: str,
    python: str = sys.executable,
    *,
    env: Mapping[str, str] | None = None,
    parameters: Mapping[str, str] | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess:
    """Runs the workflow's ``onExit`` template (as Argo does when the workflow ends)."""
    wf = yaml.safe_load(yaml_text)
    handler = wf["spec"].get("onExit")
    if not handler:
        raise ValueError("the workflow has no exit handler")
    template = _templates(wf)[handler]
    return _run_template(template, _workflow_values(wf, uid, parameters), socket, Path(project_dir), python, env, timeout)


# -- what Argo checks before running -----------------------------------------------

WORKFLOW_DEF = "io.argoproj.workflow.v1alpha1.Workflow"
LOOSE = {  # Argo accepts numbers and strings here, the file says string (see its README)
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": {"type": ["string", "integer"]},
    "io.k8s.apimachinery.pkg.api.resource.Quantity": {"type": ["string", "integer"]},
}
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_GLOBALS = {"workflow.uid", "workflow.name", "workflow.namespace", "workflow.status", "workflow.failures"}


def schema_candidates(repo: Path) -> list[Path]:
    """Where Argo's schema is: beside the clone (CI), or in this machine's shared dir."""
    paths = [repo.parent / "shared" / "argo" / "workflow-schema.json", Path("/work/shared/argo/workflow-schema.json")]
    return list(dict.fromkeys(paths))


def workflow_validator(schema_file: Path):
    """A jsonschema validator for a Workflow that rejects unknown fields."""
    import json

    import jsonschema

    document = json.loads(schema_file.read_text())
    definitions = document["definitions"]
    for name, definition in definitions.items():
        if name in LOOSE:
            definitions[name] = {**LOOSE[name], "description": definition.get("description", "")}
        elif "properties" in definition and "additionalProperties" not in definition:
            definition["additionalProperties"] = False
    schema = {"$schema": document.get("$schema"), "$ref": f"#/definitions/{WORKFLOW_DEF}", "definitions": definitions}
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _params(block: Mapping | None) -> list[Mapping]:
    return list((block or {}).get("parameters") or [])


def lint_problems(wf: Mapping) -> list[str]:
    """What ``argo lint`` reports about the workflow's structure (empty if fine)."""
    problems: list[str] = []
    if wf.get("apiVersion") != "argoproj.io/v1alpha1" or wf.get("kind") != "Workflow":
        problems.append("not an argoproj.io/v1alpha1 Workflow")
    spec = wf.get("spec") or {}
    names = [t.get("name") for t in spec.get("templates") or []]
    templates = {t.get("name"): t for t in spec.get("templates") or []}
    problems += [f"template {n} defined twice" for n in set(names) if names.count(n) > 1]
    for key in ("entrypoint", "onExit"):
        if key in spec and spec[key] not in templates:
            problems.append(f"{key} {spec[key]!r} is not a template")
    if "entrypoint" not in spec:
        problems.append("no entrypoint")
    workflow_params = {p["name"] for p in _params(spec.get("arguments"))}
    for name, template in templates.items():
        declared = {p["name"] for p in _params(template.get("inputs"))}
        used = set(re.findall(r"\{\{\s*inputs\.parameters\.([\w-]+)\s*\}\}", yaml.safe_dump(template)))
        problems += [f"template {name} uses undeclared parameter {u}" for u in sorted(used - declared)]
        for var in re.findall(r"\{\{\s*(workflow\.[\w.]+)\s*\}\}", yaml.safe_dump(template)):
            if var.startswith("workflow.parameters."):
                if var.split(".", 2)[2] not in workflow_params:
                    problems.append(f"template {name} uses undeclared workflow parameter {var}")
            elif var not in _GLOBALS:
                problems.append(f"template {name} uses unknown variable {var}")
        if name == spec.get("onExit"):
            needed = [p["name"] for p in _params(template.get("inputs")) if "value" not in p and "default" not in p]
            problems += [f"exit handler {name} needs parameter {n}, which nothing supplies" for n in needed]
        tasks = (template.get("dag") or {}).get("tasks") or []
        task_names = [t.get("name") for t in tasks]
        problems += [f"task {n} defined twice in {name}" for n in set(task_names) if task_names.count(n) > 1]
        for task in tasks:
            tname = task.get("name") or ""
            if not DNS_LABEL.match(tname) or len(tname) > 63:
                problems.append(f"task name {tname!r} is not a DNS-1123 label")
            target = templates.get(task.get("template"))
            if target is None:
                problems.append(f"task {tname} runs unknown template {task.get('template')!r}")
                continue
            given = {p["name"] for p in _params(task.get("arguments"))}
            for p in _params(target.get("inputs")):
                if p["name"] not in given and "value" not in p and "default" not in p:
                    problems.append(f"task {tname} does not supply parameter {p['name']}")
            problems += [f"task {tname} passes undeclared parameter {g}" for g in sorted(given - {p["name"] for p in _params(target.get("inputs"))})]
            for dep in task.get("dependencies") or []:
                if dep not in task_names:
                    problems.append(f"task {tname} depends on unknown task {dep!r}")
        if tasks and not any("unknown task" in p for p in problems):
            try:
                topological_order(tasks)
            except ValueError as exc:
                problems.append(f"dag {name}: {exc}")
    return problems


def task_graph(wf: Mapping) -> dict[str, set[str]]:
    """``{kedro node: {parent kedro nodes}}`` read back from a one-task-per-node workflow's DAG."""
    tasks = dag_tasks(wf)
    node_of = {}
    for task in tasks:
        values = {p["name"]: p.get("value") for p in _params(task.get("arguments"))}
        node_of[task["name"]] = values["kedro_node"]
    return {node_of[t["name"]]: {node_of[d] for d in t.get("dependencies") or []} for t in tasks}


def group_graph(wf: Mapping) -> dict[str, set[str]]:
    """``{group: {parent groups}}`` read back from the DAG, a group being the
    node (``kedro_node``) or namespace (``kedro_namespace``) a task runs, as
    Kedro's ``Pipeline.group_nodes_by`` names them."""
    tasks = dag_tasks(wf)
    group_of = {}
    for task in tasks:
        values = {p["name"]: p.get("value") for p in _params(task.get("arguments"))}
        group_of[task["name"]] = values.get("kedro_namespace", values.get("kedro_node"))
    return {group_of[t["name"]]: {group_of[d] for d in t.get("dependencies") or []} for t in tasks}


def check_workflow_text(text: str, validator) -> dict:
    """Schema, `argo lint` (Python and Rust) checks; returns the workflow."""
    wf = yaml.safe_load(text)
    errors = sorted(validator.iter_errors(wf), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:10])
    assert lint_problems(wf) == []
    assert _core.check_workflow(text) == []
    return wf
