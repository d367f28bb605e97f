"""``kedro vineyard catalog list|create``, and the project lookup the other
project commands share.

``create`` writes ``VineyardDataset`` entries for the datasets of a pipeline
that the catalog does not define (parameters excluded) into
``conf/<env>/catalog/<pipeline>.yml``, as the old plugin did, merging with
that file and never touching an entry a user wrote (the merge itself is
done by ``_core.render_catalog``). With ``--catch-all`` it writes one
``"{default}"`` dataset pattern instead (Kedro >= 0.19 dataset factories).
Kedro 1.x removed ``kedro catalog create``; this is what is left of it.
"""

from __future__ import annotations

import inspect
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import click
import yaml

from vineyard.contrib.kedro import _core

__all__ = ["catalog", "dataset_names", "load_catalog", "pipeline_or_fail", "require_project", "verbose_option"]

NOT_MENTIONED = "Datasets not mentioned in pipeline"
MENTIONED = "Datasets mentioned in pipeline"
DEFAULT_GROUP = "DefaultDataSet"


# Kedro's own option helpers live in kedro.framework.cli, whose import
# configures Kedro's logging; these stand-ins keep `import ...plugins.cli`
# (the `vineyard-kedro` script) free of it.
def verbose_option(func: Any) -> Any:
    """`-v/--verbose`, accepted as `kedro` commands accept it (errors are always shown in full)."""
    return click.option("--verbose", "-v", is_flag=True, help="Accepted for compatibility with Kedro's commands.")(func)


def _split_string(ctx: click.Context, param: click.Parameter, value: str) -> list[str]:
    return [item.strip() for item in (value or "").split(",") if item.strip()]


def require_project(metadata: Any, command: str) -> Any:
    """The project's ``ProjectMetadata``, bootstrapped (settings and pipelines
    configured). ``metadata`` is what Kedro passes (``None`` outside a project,
    where the current directory is tried)."""
    from kedro.framework.startup import bootstrap_project

    path = Path(metadata.project_path) if metadata is not None else Path.cwd()
    try:
        return bootstrap_project(path)
    except Exception as exc:  # noqa: BLE001 - Kedro raises several kinds here
        reason = str(exc).split(". ")[0].rstrip(".")
        raise click.ClickException(
            f"`kedro vineyard {command}` needs a Kedro project; run it in the project's directory ({reason})."
        ) from exc


def pipeline_or_fail(name: str) -> Any:
    """The registered pipeline `name`, or a CLI error listing the others."""
    from kedro.framework.project import pipelines

    pipeline = pipelines.get(name)
    if pipeline is None:
        existing = ", ".join(sorted(pipelines.keys()))
        raise click.ClickException(f"'{name}' pipeline not found! Existing pipelines: {existing}")
    return pipeline


def _is_parameter(name: str) -> bool:
    return name == "parameters" or name.startswith("params:")


def dataset_names(pipeline: Any) -> set[str]:
    """The pipeline's datasets, parameters excluded."""
    names = pipeline.datasets()
    return {n for n in names if not _is_parameter(n)}


def load_catalog(metadata: Any, env: str | None, conf_source: str | None = None, runtime_params: dict | None = None) -> Any:
    """The project's catalog for `env` (with ``base``), as ``kedro run -e ENV
    [--conf-source ...] [--params ...]`` sees it."""
    from kedro.framework.session import KedroSession

    options: dict[str, Any] = {"conf_source": conf_source} if conf_source else {}
    if runtime_params:
        # Kedro 1.x calls them runtime_params, 0.19 extra_params.
        accepted = inspect.signature(KedroSession.create).parameters
        options["runtime_params" if "runtime_params" in accepted else "extra_params"] = runtime_params
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with KedroSession.create(project_path=metadata.project_path, env=env, **options) as session:
            return session.load_context().catalog


def _catalog_names(catalog: Any) -> set[str]:
    names = catalog.keys() if hasattr(catalog, "keys") else catalog.list()  # 1.x / 0.19
    return {n for n in names if not _is_parameter(n)}


def _type_name(catalog: Any, name: str) -> str:
    """Short class name of a dataset (explicit or matched by a pattern)."""
    if hasattr(catalog, "get_type"):  # 1.x: no materialising
        qualified = catalog.get_type(name)
        if qualified:
            return str(qualified).rsplit(".", 1)[-1]
    try:
        return type(catalog._get_dataset(name)).__name__  # 0.19
    except Exception:  # noqa: BLE001
        return DEFAULT_GROUP


def _by_type(catalog: Any, names: set[str]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = defaultdict(list)
    for name in sorted(names):
        grouped[_type_name(catalog, name)].append(name)
    return dict(grouped)


@click.group(name="catalog")
def catalog() -> None:
    """Commands for working with catalog."""


@catalog.command("list")
@verbose_option
@click.option("--env", "-e", type=str, default=None, help="Kedro configuration environment (default: Kedro's, `local`).")
@click.option(
    "--pipeline",
    "-p",
    type=str,
    default="",
    callback=_split_string,
    help="Comma-separated pipeline names (default: every registered pipeline).",
)
@click.pass_obj
def list_datasets(metadata: Any, pipeline: list[str], env: str | None, verbose: bool) -> None:
    """Show datasets per type, for each pipeline.

    Datasets the catalog defines (explicitly or through a dataset pattern)
    are grouped by type; pipeline datasets it does not define, which Kedro
    creates at run time (MemoryDataset by default), are listed under
    DefaultDataSet. Parameters are left out.
    """
    from kedro.framework.project import pipelines

    metadata = require_project(metadata, "catalog list")
    cat = load_catalog(metadata, env)
    explicit = _catalog_names(cat)
    result = {}
    for name in pipeline or sorted(pipelines.keys()):
        used = dataset_names(pipeline_or_fail(name))
        defined = {n for n in used if n in cat}
        unused = _by_type(cat, explicit - used)
        mentioned = _by_type(cat, defined)
        if used - defined:
            mentioned[DEFAULT_GROUP] = sorted(used - defined)
        data = ((NOT_MENTIONED, unused), (MENTIONED, mentioned))
        result[f"Datasets in '{name}' pipeline"] = {key: value for key, value in data if value}
    click.secho(yaml.safe_dump(result, sort_keys=False))


@catalog.command("create")
@verbose_option
@click.option(
    "--env", "-e", type=str, default="vineyard", help="Environment to create the Data Catalog YAML file in. Defaults to `vineyard`."
)
@click.option("--pipeline", "-p", "pipeline_name", type=str, required=True, help="Name of a registered pipeline.")
@click.option(
    "--catch-all",
    is_flag=True,
    help='Write one "{default}" dataset pattern (Kedro >= 0.19) instead of one entry per dataset.',
)
@click.pass_obj
def create_catalog(metadata: Any, pipeline_name: str, env: str, catch_all: bool, verbose: bool) -> None:
    """Create Data Catalog YAML configuration with missing datasets.

    Adds a VineyardDataset entry for every dataset of the pipeline that the
    catalog of ENV (with base) does not define, parameters excluded, to
    `<conf_source>/<env>/catalog/<pipeline_name>.yml`, which is merged with
    and never overwrites existing entries. Run the pipeline with `-e ENV`
    (`kedro run -e vineyard`) for the entries to apply.
    """
    from kedro.framework.project import settings

    metadata = require_project(metadata, "catalog create")
    env = env or "base"
    pipeline = pipeline_or_fail(pipeline_name)
    env_dir = Path(metadata.project_path) / settings.CONF_SOURCE / env
    env_dir.mkdir(parents=True, exist_ok=True)
    cat = load_catalog(metadata, env)
    missing = sorted(n for n in dataset_names(pipeline) if n not in cat)
    if not missing:
        click.echo("All datasets are already configured.")
        return
    catalog_path = env_dir / "catalog" / f"{pipeline_name}.yml"
    existing = catalog_path.read_text(encoding="utf-8") if catalog_path.is_file() else None
    try:
        text, added = _core.render_catalog(missing, existing, catch_all)
    except ValueError as exc:
        raise click.ClickException(f"cannot merge into {catalog_path}: {exc}") from exc
    if not added:
        click.echo("All datasets are already configured.")
        return
    catalog_path.parent.mkdir(parents=True, exist_ok=True)
    catalog_path.write_text(text, encoding="utf-8")
    click.echo(f"Data Catalog YAML configuration was created: {catalog_path}")
