"""Our runners called in-process on hand-built pipelines and catalogs."""

from __future__ import annotations

import datetime as dt
import gc
import logging

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import node, pipeline

from vineyard.contrib.kedro import _connection, _core
from vineyard.contrib.kedro.io import VineyardDataSet
from vineyard.contrib.kedro.plugins.hook import VineyardHook
from vineyard.contrib.kedro.runner import ParallelRunner, SequentialRunner, ThreadRunner


def make_values():
    return {
        "frame": pd.DataFrame(
            {
                "i": np.arange(6, dtype="int32"),
                "f": np.linspace(0, 1, 6),
                "s": ["a", "b", None, "d", "e", "f"],
                "c": pd.Categorical(["x", "y", "x", None, "y", "x"], ordered=True),
                "t": pd.date_range("2024-01-01", periods=6, tz="UTC"),
            },
            index=pd.Index(list("uvwxyz"), name="key"),
        ),
        "series": pd.Series([1.5, None, 3.0], name="s"),
        "array": np.arange(24, dtype=np.int16).reshape(2, 3, 4),
        "table": pa.table({"a": [1, 2, None], "b": ["x", None, "z"]}),
        "plain": {"a": [1, (2, 3)], "b": True, "c": None, "d": b"bytes", "e": 2**80, "f": 1.5},
        "when": dt.datetime(2024, 1, 2, 3, 4, 5),
    }


def produce():
    v = make_values()
    return v["frame"], v["series"], v["array"], v["table"], v["plain"], v["when"]


def check(frame, series, array, table, plain, when):
    v = make_values()
    pd.testing.assert_frame_equal(frame, v["frame"], check_exact=True)
    pd.testing.assert_series_equal(series, v["series"], check_exact=True)
    np.testing.assert_array_equal(array, v["array"])
    assert array.dtype == v["array"].dtype
    assert table.equals(v["table"])
    assert plain == v["plain"] and type(plain["a"][1]) is tuple and type(plain["b"]) is bool
    assert when == v["when"]
    return "checked"


OUTS = ["frame", "series", "array", "table", "plain", "when"]


def every_type_pipeline():
    return pipeline([node(produce, None, OUTS, name="produce"), node(check, OUTS, "verdict", name="check")])


@pytest.mark.parametrize("runner_cls", [SequentialRunner, ThreadRunner, ParallelRunner])
def test_nodes_exchange_every_codec_type(vineyardd, runner_cls):
    c = _core.Client(vineyardd.socket)
    names_before = set(c.list_names())
    if runner_cls is ParallelRunner:
        from kedro.io import SharedMemoryDataCatalog  # what KedroSession uses with a ParallelRunner

        catalog = SharedMemoryDataCatalog()
    else:
        catalog = DataCatalog({"verdict": MemoryDataset()})
    runner = runner_cls(vineyard_ipc_socket=vineyardd.socket)
    runner.run(every_type_pipeline(), catalog)
    assert set(c.list_names()) == names_before


def failing(frame, series, array, table, plain, when):
    raise RuntimeError("boom in the second node")


def test_failed_run_keeps_its_intermediates_for_resuming(small_vineyardd, caplog):
    """On a long-lived vineyardd, a failed run keeps what the unfinished nodes
    need, under its namespace, marked resumable; deleting that namespace (what
    `vineyard-kedro gc --namespace` does) frees everything. The vineyardd is
    this test's own: the session's is shared with whatever other tests left
    running, which made its memory figure move (16 MB more, once, in CI)."""
    vineyardd = small_vineyardd
    caplog.set_level(logging.INFO, logger="vineyard.contrib.kedro")
    c = _core.Client(vineyardd.socket)
    names_before = set(c.list_names())
    usage = c.status()["memory_usage"]
    p = pipeline([node(produce, None, OUTS, name="produce"), node(failing, OUTS, "verdict", name="fail")])
    with pytest.raises(RuntimeError, match="boom") as excinfo:
        SequentialRunner(vineyard_ipc_socket=vineyardd.socket).run(p, DataCatalog())
    kept = {name for name, _ in set(c.list_names()) - names_before}
    namespaces = {name.split("/")[0] for name in kept}
    assert len(namespaces) == 1, kept
    namespace = namespaces.pop()
    assert kept == {f"{namespace}/{name}" for name in [*OUTS, "_vineyard_kedro_resume"]}
    hint = [r.getMessage() for r in caplog.records if "To resume" in r.getMessage()]
    assert len(hint) == 1 and f"VINEYARD_KEDRO_NAMESPACE={namespace}" in hint[0] and "--from-nodes fail" in hint[0]
    assert f"vineyard-kedro gc --namespace {namespace}" in hint[0]
    # The traceback holds the failed node's inputs: zero-copy views of the
    # objects, whose deletes wait until the views are gone.
    runner_client = _connection.client_for(vineyardd.socket)
    runner_client.delete_namespace(f"{namespace}/")
    assert set(c.list_names()) == names_before
    assert runner_client.deferred > 0
    del excinfo
    gc.collect()
    runner_client.flush()
    assert runner_client.deferred == 0
    assert c.status()["memory_usage"] == usage


def test_catalog_entries_are_honoured(vineyardd):
    """A user's VineyardDataSet entry keeps its own name; a MemoryDataset stays one."""
    c = _core.Client(vineyardd.socket)
    mine = VineyardDataSet(ds_name="user_frame", vineyard_ipc_socket=vineyardd.socket)
    memory = MemoryDataset()
    catalog = DataCatalog({"frame": mine, "series": memory})
    p = pipeline([node(produce, None, OUTS, name="produce")])
    SequentialRunner(vineyard_ipc_socket=vineyardd.socket).run(p, catalog)
    # free outputs of a user-declared dataset stay (the user named them)
    assert c.resolve("user_frame") is not None
    assert isinstance(memory.load(), pd.Series)
    mine.release()


def test_embedded_server_for_in_process_runs(caplog, monkeypatch):
    monkeypatch.delenv("VINEYARD_IPC_SOCKET", raising=False)
    caplog.set_level(logging.INFO, logger="vineyard.contrib.kedro")
    SequentialRunner(vineyard_size="512Mi").run(every_type_pipeline(), DataCatalog({"verdict": MemoryDataset()}))
    started = [r for r in caplog.records if "Started an embedded vineyardd" in r.getMessage()]
    stopped = [r for r in caplog.records if "Stopped the embedded vineyardd" in r.getMessage()]
    assert len(started) == 1 and len(stopped) == 1


def test_hook_routes_intermediates_of_kedros_own_runner(vineyardd, monkeypatch):
    from kedro.runner import SequentialRunner as KedroSequential

    monkeypatch.setenv("VINEYARD_IPC_SOCKET", vineyardd.socket)
    c = _core.Client(vineyardd.socket)
    names_before = set(c.list_names())
    hook = VineyardHook()
    catalog = DataCatalog({"verdict": MemoryDataset()})
    p = every_type_pipeline()
    hook.before_pipeline_run(run_params={"run_id": "hook-test"}, pipeline=p, catalog=catalog)
    assert isinstance(catalog["frame"] if hasattr(catalog, "__getitem__") else catalog._datasets["frame"], VineyardDataSet)
    KedroSequential().run(p, catalog)
    hook.after_pipeline_run(run_params={"run_id": "hook-test"}, catalog=catalog)
    assert set(c.list_names()) == names_before


def test_entry_point_hook_is_off_unless_enabled(monkeypatch, vineyardd):
    from vineyard.contrib.kedro.plugins.hook import entry_point_hook

    monkeypatch.delenv("VINEYARD_KEDRO_HOOK", raising=False)
    catalog = DataCatalog()
    entry_point_hook.before_pipeline_run(run_params={}, pipeline=every_type_pipeline(), catalog=catalog)
    assert "frame" not in catalog
    entry_point_hook.after_pipeline_run(run_params={}, catalog=catalog)


def test_a_dataset_name_outside_the_grammar_stays_in_memory(vineyardd, caplog):
    """A Kedro dataset named with a "/" cannot be a vineyard name (see
    README, Names): the run keeps it in Kedro's default dataset, says so,
    and sends the others through vineyard."""
    c = _core.Client(vineyardd.socket)
    seen = []
    p = pipeline(
        [
            node(lambda: (np.arange(3), np.ones(2)), None, ["models/a", "b"], name="make"),
            node(lambda a, b: seen.append((a.tolist(), b.tolist())) or "ok", ["models/a", "b"], "verdict", name="use"),
        ]
    )
    with caplog.at_level(logging.WARNING, logger="vineyard.contrib.kedro"):
        SequentialRunner(vineyard_ipc_socket=vineyardd.socket).run(p, DataCatalog({"verdict": MemoryDataset()}))
    assert seen == [([0, 1, 2], [1.0, 1.0])]
    assert "dataset 'models/a' stays in memory" in caplog.text
    assert all("models" not in n for n, _ in c.list_names())
