"""A copy of iris with pipelines that make Argo task names, grouping and node
selection hard (used by the CLI and cluster tests), and the node graph of a
registered pipeline."""

from __future__ import annotations

from pathlib import Path

__all__ = ["add_test_pipelines", "node_graph"]


def node_graph(name: str) -> dict[str, set[str]]:
    """The registered pipeline's ``{node: {parents}}`` (after bootstrap)."""
    from kedro.framework.project import pipelines

    pipeline = pipelines[name]
    return {n.name: {p.name for p in pipeline.node_dependencies[n]} for n in pipeline.nodes}



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
