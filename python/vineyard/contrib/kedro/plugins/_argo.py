"""``kedro vineyard argo generate``: an Argo Workflow for a Kedro pipeline.

The project's pipeline gives the nodes, their dependencies
(``pipeline.node_dependencies``), namespaces, tags and datasets; the
catalog says which datasets cannot cross pods (``_pod_local``).
``_core.render_argo`` turns them into the workflow: one task per node or per
top-level namespace (``--group-by``), DNS-1123 task names for any name,
``kedro run -n NODE`` or ``kedro run --namespaces NS`` with the run options,
resources, the vineyard scheduler, socket and shared namespace, and the exit
handler ``vineyard-kedro gc --namespace {{workflow.uid}}``. The file is
``<output>/argo-<package>.yml``, as before.

The old option spellings still work: ``--with_vineyard_operator BOOL`` and
``-w BOOL``, ``--output_path``, ``--vineyard``, ``--namespace``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import click

from vineyard.contrib.kedro import _core
from vineyard.contrib.kedro.plugins._catalog import dataset_names, load_catalog, pipeline_or_fail, require_project
from vineyard.contrib.kedro.plugins._pod_local import pod_local_datasets

__all__ = ["argo", "argo_spec", "kedro_run_options", "pipeline_nodes"]

_BOOL = re.compile(r"^(true|false|t|f|yes|no|y|n|1|0|on|off)$", re.IGNORECASE)


def _is_parameter(name: str) -> bool:
    return name == "parameters" or name.startswith("params:")


def pipeline_nodes(pipeline: Any) -> list[dict[str, Any]]:
    """``[{name, deps, namespace, tags, inputs, outputs}]`` for every node, in
    the pipeline's (topological) order; parameters are not datasets."""
    parents = pipeline.node_dependencies
    return [
        {
            "name": node.name,
            "deps": sorted(p.name for p in parents.get(node, ())),
            "namespace": node.namespace or None,
            "tags": sorted(node.tags),
            "inputs": [i for i in node.inputs if not _is_parameter(i)],
            "outputs": list(node.outputs),
        }
        for node in pipeline.nodes
    ]


def kedro_run_options() -> tuple[str, str | None]:
    """``kedro run``'s option for one pipeline and for namespaces in the
    installed Kedro: ``--pipelines``/``--namespaces`` in 1.x (where
    ``--pipeline``/``-p`` is deprecated), ``--pipeline``/``--namespace`` in 0.19."""
    from kedro.framework.cli.project import run

    names = {p.name for p in run.params}
    pipeline_option = "--pipelines" if "pipelines" in names else "--pipeline"
    namespace_option = "--namespaces" if "namespaces" in names else "--namespace" if "namespace" in names else None
    return pipeline_option, namespace_option


def argo_spec(
    package_name: str,
    pipeline: Any,
    *,
    image: str,
    pipeline_name: str = "__default__",
    env: str = "vineyard",
    vineyard_namespace: str = "vineyard-system",
    vineyardd_name: str = "vineyardd-sample",
    with_operator: bool = True,
    **options: Any,
) -> dict[str, Any]:
    """The JSON spec ``_core.render_argo`` takes; `options` are its other
    fields (``group_by``, ``tags``, ``params``, ``resources``, ``pod_local``...)."""
    return {
        "package_name": package_name,
        "image": image,
        "env": env,
        "pipeline": pipeline_name,
        "vineyard_namespace": vineyard_namespace,
        "vineyardd_name": vineyardd_name,
        "with_operator": with_operator,
        "nodes": pipeline_nodes(pipeline),
        **options,
    }


def _runtime_params(params: str) -> dict[str, Any]:
    """``--params`` as ``kedro run`` parses it (so a bad value fails here, not in the pods)."""
    from kedro.framework.cli.project import _split_params

    ctx = click.get_current_context()
    option = next(p for p in ctx.command.params if p.name == "params")
    return _split_params(ctx, option, params)


def _catalog_for(metadata: Any, env: str, conf_source: str | None, params: str) -> Any:
    """The catalog the runs will see, as far as this machine can tell: a
    --conf-source that is not a local directory here (a path in the image, a
    URL) is not read, the project's own configuration is."""
    from kedro.framework.project import settings

    local_conf = conf_source if conf_source and Path(conf_source).is_dir() else None
    if conf_source and local_conf is None:
        click.echo(f"Note: --conf-source {conf_source} is not a directory here; the project's own configuration was checked.", err=True)
    env_dir = Path(local_conf or Path(metadata.project_path) / settings.CONF_SOURCE) / env
    if not env_dir.is_dir():
        raise click.ClickException(
            f"environment {env!r} has no configuration here ({env_dir}), so the datasets passed between tasks "
            f"cannot be checked; run `kedro vineyard catalog create -p PIPELINE -e {env}` first (the image runs it too)"
        )
    try:
        return load_catalog(metadata, env, local_conf, _runtime_params(params) if params else None)
    except click.ClickException:
        raise
    except Exception as exc:  # noqa: BLE001 - Kedro raises several kinds for a bad configuration
        raise click.ClickException(f"cannot load the catalog of environment {env!r}: {exc}") from exc


def _legacy_w(args: list[str]) -> list[str]:
    """``-w true|false`` (the old ``--with_vineyard_operator`` short form) ->
    ``--with_vineyard_operator VALUE``; a bare ``-w`` is ``--without-operator``."""
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            out.extend(args[i:])
            break
        attached = arg[2:].lstrip("=") if arg.startswith("-w") and len(arg) > 2 and not arg.startswith("--") else None
        if attached is not None and _BOOL.match(attached):
            out.extend(["--with_vineyard_operator", attached])
        elif arg == "-w" and i + 1 < len(args) and _BOOL.match(args[i + 1]):
            out.extend(["--with_vineyard_operator", args[i + 1]])
            i += 1
        else:
            out.append(arg)
        i += 1
    return out


class _GenerateCommand(click.Command):
    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, _legacy_w(list(args)))


@click.group(name="argo")
def argo() -> None:
    """Commands for working with argo."""


@argo.command("generate", cls=_GenerateCommand)
@click.option("--image", "-i", "image", type=str, required=True, help="The image every task runs (see `kedro vineyard docker build`).")
@click.option("--pipeline", "-p", "pipeline_name", type=str, default="__default__", show_default=True, help="Registered pipeline.")
@click.option("--env", "-e", type=str, default="vineyard", show_default=True, help="Kedro environment of `kedro run -e` (where the vineyard catalog is).")
@click.option(
    "--group-by", type=click.Choice(["none", "namespace"]), default="none", show_default=True,
    help="One task per node, or one task per top-level namespace (un-namespaced nodes alone).",
)
@click.option("--tags", type=str, default="", help="Only nodes with any of these (comma-separated) tags become tasks; the runs get the same --tags.")
@click.option("--params", type=str, default="", help="`kedro run --params` of every task (workflow parameter `params`).")
@click.option("--conf-source", type=str, default=None, help="`kedro run --conf-source` of every task, a path in the image or a URL (workflow parameter `conf_source`).")
@click.option("--cpu", type=str, default=None, help="CPU request and limit of every kedro container (2, 500m); a node tag argo.cpu-Q sets it for that node.")
@click.option("--memory", type=str, default=None, help="Memory request and limit (4Gi); a node tag argo.memory-Q sets it for that node.")
@click.option("--gpu", type=str, default=None, help="GPUs (nvidia.com/gpu) request and limit; a node tag argo.gpu-N sets it for that node.")
@click.option("--secret", type=str, default=None, help="Kubernetes Secret whose key (--secret-key) every kedro container gets as VINEYARD_KEDRO_SECRET.")
@click.option("--secret-key", type=str, default="secret", show_default=True, help="The key of --secret that holds the secret.")
@click.option(
    "--allow-local", is_flag=True,
    help="Generate even if a local-file or memory dataset is written by one task and read by another (the pods must share it).",
)
@click.option(
    "--vineyard-namespace", "--namespace", "-n", "vineyard_namespace", type=str, default="vineyard-system",
    show_default=True, help="Kubernetes namespace of the vineyardd deployment.",
)
@click.option(
    "--vineyardd-name", "--vineyard", "-v", "vineyardd_name", type=str, default="vineyardd-sample",
    show_default=True, help="Name of the vineyardd deployment.",
)
@click.option(
    "--without-operator", "-w", is_flag=True,
    help="A plain Kedro-Argo workflow: no vineyard scheduler, socket, shared namespace or exit handler.",
)
@click.option(
    "--with-vineyard-operator", "--with_vineyard_operator", "with_operator", type=bool, default=None,
    help="The old spelling: `false` is --without-operator.",
)
@click.option(
    "--output", "--output-path", "--output_path", "-o", "output", type=click.Path(file_okay=False), default=".",
    show_default=True, help="Directory to write argo-<package>.yml into.",
)
@click.pass_obj
def generate_argo_config(
    metadata: Any,
    image: str,
    pipeline_name: str,
    env: str,
    group_by: str,
    tags: str,
    params: str,
    conf_source: str | None,
    cpu: str | None,
    memory: str | None,
    gpu: str | None,
    secret: str | None,
    secret_key: str,
    allow_local: bool,
    vineyard_namespace: str,
    vineyardd_name: str,
    without_operator: bool,
    with_operator: bool | None,
    output: str,
) -> None:
    """Generate an Argo workflow from a Kedro pipeline, written to
    OUTPUT/argo-<package>.yml: one task per node (`kedro run -n NODE`), or
    with --group-by namespace one per top-level namespace (`kedro run
    --namespaces NS`), each running in IMAGE with `-e ENV` and the other run
    options. The image, env, params and conf-source are workflow parameters
    (`argo submit -p env=prod`).

    With the vineyard operator (the default), pods are placed by the vineyard
    scheduler next to their parents' data, share the vineyard namespace of
    the workflow's uid, and an exit handler deletes that namespace's objects
    when the workflow ends.

    A dataset that one task writes and another reads must be able to cross
    pods: a MemoryDataset (including a dataset without a catalog entry) or a
    file on the pod's disk cannot, and is refused unless --allow-local.
    """
    if without_operator and with_operator:
        raise click.UsageError("--without-operator contradicts --with-vineyard-operator true")
    operator = not without_operator and with_operator is not False
    metadata = require_project(metadata, "argo generate")
    pipeline = pipeline_or_fail(pipeline_name)
    tag_list = [t.strip() for t in tags.split(",") if t.strip()]
    if tag_list:
        pipeline = pipeline.only_nodes_with_tags(*tag_list)
    pipeline_option, namespace_option = kedro_run_options()
    if group_by == "namespace" and namespace_option is None:
        raise click.UsageError("this Kedro's `kedro run` cannot select a namespace; use --group-by none")
    catalog = _catalog_for(metadata, env, conf_source, params)
    spec = argo_spec(
        metadata.package_name,
        pipeline,
        image=image,
        pipeline_name=pipeline_name,
        env=env,
        vineyard_namespace=vineyard_namespace,
        vineyardd_name=vineyardd_name,
        with_operator=operator,
        group_by=group_by,
        pipeline_option=pipeline_option,
        namespace_option=namespace_option or "--namespaces",
        tags=tag_list,
        params=params,
        conf_source=conf_source,
        resources={"cpu": cpu, "memory": memory, "gpu": gpu},
        secret=secret,
        secret_key=secret_key,
        allow_local=allow_local,
        pod_local=pod_local_datasets(catalog, dataset_names(pipeline), env, Path(metadata.project_path).resolve()),
    )
    try:
        text, warnings = _core.render_argo(json.dumps(spec))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    problems = _core.check_workflow(text)
    if problems:
        raise click.ClickException("the generated workflow is invalid: " + "; ".join(problems))
    for warning in warnings:
        click.secho(f"Warning: {warning}", err=True, fg="yellow")
    path = Path(output) / _core.argo_file_name(metadata.package_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    click.echo(f"Argo workflow configuration was created: {path}")
