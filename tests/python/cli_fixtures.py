"""Shared helpers of the test_cli_* modules (no tests here): running the
`kedro vineyard` group in process inside a project, Argo checks, and a copy
of iris with awkward pipelines."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from argo_sim import lint_problems, schema_candidates, workflow_validator
from kedro_project import ROOT
from vineyard.contrib.kedro import _core
from vineyard.contrib.kedro.plugins.cli import commands

__all__ = ["add_test_pipelines", "check_workflow_text", "in_project", "node_graph", "validator"]


def _purge(package: str) -> None:
    for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
        del sys.modules[name]


@pytest.fixture
def in_project(monkeypatch):
    """``enter(project)`` -> ``invoke(*args)``: click's CliRunner on the group,
    in the project's directory with the project bootstrapped, as Kedro runs it.
    Every copy of iris has the package ``iris``: the previous one is forgotten."""
    from kedro.framework.startup import bootstrap_project

    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", "-"))
    monkeypatch.delenv("PYTHONPATH")  # restored (to unset, if it was) after the test
    monkeypatch.setattr(sys, "path", list(sys.path))

    def enter(project: Path):
        _purge("iris")
        monkeypatch.chdir(project)
        metadata = bootstrap_project(project)

        def invoke(*args: str, env: dict | None = None):
            return CliRunner().invoke(commands, ["vineyard", *args], obj=metadata, env=env, catch_exceptions=False)

        invoke.metadata = metadata
        return invoke

    yield enter
    _purge("iris")


def node_graph(name: str) -> dict[str, set[str]]:
    """The registered pipeline's ``{node: {parents}}`` (after bootstrap)."""
    from kedro.framework.project import pipelines

    pipeline = pipelines[name]
    return {n.name: {p.name for p in pipeline.node_dependencies[n]} for n in pipeline.nodes}


@pytest.fixture(scope="session")
def validator():
    """Argo's Workflow schema, strict. Skipped (only) where the schema file is absent."""
    candidates = schema_candidates(ROOT)
    for path in candidates:
        if path.is_file():
            return workflow_validator(path)
    pytest.skip(f"Argo schema not found at {' or '.join(map(str, candidates))}; CI always has it")


def check_workflow_text(text: str, validator) -> dict:
    """Schema, `argo lint` (Python and Rust) checks; returns the workflow."""
    wf = yaml.safe_load(text)
    errors = sorted(validator.iter_errors(wf), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:10])
    assert lint_problems(wf) == []
    assert _core.check_workflow(text) == []
    return wf


# -- a project with awkward pipelines ----------------------------------------------

EXTRA_PIPELINES = '''"""Pipelines that make Argo task names and node selection hard (added by the tests)."""

import logging

from kedro.pipeline import node, pipeline

from .pipeline import create_pipeline as iris

ODD_RESULT = 10


def start():
    return 1


def inc(x):
    return x + 1


def total(*xs):
    return sum(xs)


def check(x):
    logging.getLogger(__name__).info("odd pipeline result: %s", x)
    if x != ODD_RESULT:
        raise ValueError(f"odd pipeline result {x} != {ODD_RESULT}")


def odd():
    return pipeline(
        [
            node(start, None, "o_raw", name="data.prep.v1"),
            node(inc, "o_raw", "o_a", name="a_b"),
            node(inc, "o_raw", "o_b", name="a.b"),
            node(inc, "o_raw", "o_c", name="A-B"),
            node(inc, "o_a", "o_long", name="x" * 80),
            node(inc, "o_b", "o_y1", name="y" * 70 + "1"),
            node(inc, "o_c", "o_y2", name="y" * 70 + "2"),
            node(total, ["o_long", "o_y1", "o_y2"], "o_sum", name="__private__"),
            node(inc, "o_sum", "o_final"),
            node(check, "o_final", None, name="Ünïcode_check"),
        ]
    )


def sized():
    """iris with resource tags: split needs 2 CPUs, the other two 3Gi and 512Mi."""
    tags = {"split": ["argo.cpu-2"], "make_predictions": ["argo.memory-3Gi", "argo.gpu-1"], "report_accuracy": ["argo.memory-512Mi"]}
    return pipeline([n.tag(tags[n.name]) for n in iris().nodes])


def chained():
    """iris with `split` on its own and the model in namespace `model`
    (make_predictions, report_accuracy): grouped by namespace, two tasks and
    every dataset of split crosses from one to the other."""
    nodes = {n.name: n for n in iris().nodes}
    model = pipeline(
        [nodes["make_predictions"], nodes["report_accuracy"]],
        namespace="model",
        inputs={"X_train", "X_test", "y_train", "y_test"},
        outputs={"y_pred"},
    )
    return pipeline([nodes["split"]]) + model


def extra_pipelines():
    inputs = {"example_iris_data"}
    nested = pipeline(pipeline(iris(), namespace="inner", inputs=inputs), namespace="outer", inputs=inputs)
    return {
        "namespaced": pipeline(iris(), namespace="ns", inputs=inputs),
        "modular": pipeline(iris(), namespace="a", inputs=inputs) + pipeline(iris(), namespace="b", inputs=inputs) + nested,
        "odd": odd(),
        "sized": sized(),
        "chained": chained(),
        "sized_namespaced": pipeline(sized(), namespace="ns", inputs=inputs),
    }
'''


REGISTRY = '''"""Project pipelines: iris as __default__, plus the tests' pipelines (listed by hand:
Kedro 1.7's `kedro run -p NAME` asks find_pipelines() for NAME only, which fails
for pipelines that do not live in a `pipelines/NAME` package)."""

from .extra_pipelines import extra_pipelines
from .pipeline import create_pipeline


def register_pipelines():
    return {"__default__": create_pipeline(), **extra_pipelines()}
'''


def add_test_pipelines(project: Path) -> list[str]:
    """Adds the ``namespaced``, ``modular``, ``odd``, ``sized``, ``sized_namespaced`` and ``chained`` pipelines to a copy of iris."""
    package = project / "src" / "iris"
    (package / "extra_pipelines.py").write_text(EXTRA_PIPELINES, encoding="utf-8")
    (package / "pipeline_registry.py").write_text(REGISTRY, encoding="utf-8")
    return ["namespaced", "modular", "odd", "sized", "sized_namespaced", "chained"]
