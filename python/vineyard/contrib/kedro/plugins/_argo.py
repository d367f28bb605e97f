"""``kedro vineyard argo generate``: an Argo Workflow, one pod per Kedro node.

The project's pipeline gives the nodes and their dependencies
(``pipeline.node_dependencies``); ``_core.render_argo`` turns them into the
workflow (DNS-1123 task names for any node name, ``kedro run -n NODE -e ENV``
per task, the vineyard scheduler, socket and shared namespace, and the exit
handler ``vineyard-kedro gc --namespace {{workflow.uid}}``). The file is
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
from vineyard.contrib.kedro.plugins._catalog import pipeline_or_fail, require_project

__all__ = ["argo", "argo_spec", "pipeline_nodes"]

_BOOL = re.compile(r"^(true|false|t|f|yes|no|y|n|1|0|on|off)$", re.IGNORECASE)


def pipeline_nodes(pipeline: Any) -> list[dict[str, Any]]:
    """``[{name, deps}]`` for every node, in the pipeline's (topological) order."""
    parents = pipeline.node_dependencies
    return [{"name": node.name, "deps": sorted(p.name for p in parents.get(node, ()))} for node in pipeline.nodes]


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
) -> dict[str, Any]:
    """The JSON spec ``_core.render_argo`` takes."""
    return {
        "package_name": package_name,
        "image": image,
        "env": env,
        "pipeline": pipeline_name,
        "vineyard_namespace": vineyard_namespace,
        "vineyardd_name": vineyardd_name,
        "with_operator": with_operator,
        "nodes": pipeline_nodes(pipeline),
    }


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
    vineyard_namespace: str,
    vineyardd_name: str,
    without_operator: bool,
    with_operator: bool | None,
    output: str,
) -> None:
    """Generate an Argo workflow from a Kedro pipeline: one task per node, each
    running `kedro run -n NODE -e ENV` in IMAGE, written to
    OUTPUT/argo-<package>.yml.

    With the vineyard operator (the default), pods are placed by the vineyard
    scheduler next to their parents' data, share the vineyard namespace of
    the workflow's uid, and an exit handler deletes that namespace's objects
    when the workflow ends.
    """
    if without_operator and with_operator:
        raise click.UsageError("--without-operator contradicts --with-vineyard-operator true")
    operator = not without_operator and with_operator is not False
    metadata = require_project(metadata, "argo generate")
    pipeline = pipeline_or_fail(pipeline_name)
    spec = argo_spec(
        metadata.package_name,
        pipeline,
        image=image,
        pipeline_name=pipeline_name,
        env=env,
        vineyard_namespace=vineyard_namespace,
        vineyardd_name=vineyardd_name,
        with_operator=operator,
    )
    try:
        text = _core.render_argo(json.dumps(spec))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    problems = _core.check_workflow(text)
    if problems:
        raise click.ClickException("the generated workflow is invalid: " + "; ".join(problems))
    path = Path(output) / _core.argo_file_name(metadata.package_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    click.echo(f"Argo workflow configuration was created: {path}")
