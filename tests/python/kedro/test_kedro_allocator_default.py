"""The allocator as our runners' default: on without any setting, off with the
runner parameter or the environment variable, and temporaries of a node
released as they die (not held until the node or the run ends)."""

from __future__ import annotations

import gc

import numpy as np
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import node, pipeline

from vineyard.contrib.kedro import _core
from vineyard.contrib.kedro.runner import SequentialRunner

MIB = 1 << 20


def usage(socket: str) -> int:
    c = _core.Client(socket)
    try:
        return c.status()["memory_usage"]
    finally:
        c.close()


def loaded(outputs: dict) -> dict:
    """Free outputs: Kedro 1.x returns their datasets, 0.19 their values."""
    return {k: (v.load() if hasattr(v, "load") else v) for k, v in outputs.items()}


def make(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float64)


def total(a: np.ndarray) -> float:
    return float(a.sum())


def counted_run(socket: str, **kwargs) -> tuple[dict, float]:
    pipe = pipeline([node(make, "params:n", "big", name="make"), node(total, "big", "sum", name="total")])
    catalog = DataCatalog({"params:n": MemoryDataset(16 * MIB // 8)})  # 16 MiB: the default threshold
    before = _core.allocator_stats()
    out = loaded(SequentialRunner(vineyard_ipc_socket=socket, **kwargs).run(pipe, catalog))
    after = _core.allocator_stats()
    return {k: after[k] - before[k] for k in ("blob_allocs", "sealed")}, out["sum"]


def test_without_settings_node_arrays_from_16_mib_live_in_blobs_and_saves_do_not_copy(vineyardd, monkeypatch):
    monkeypatch.delenv("VINEYARD_KEDRO_ALLOCATOR", raising=False)
    monkeypatch.delenv("VINEYARD_KEDRO_ALLOCATOR_THRESHOLD", raising=False)
    base = usage(vineyardd.socket)
    counts, got = counted_run(vineyardd.socket)
    n = 16 * MIB // 8
    assert got == n * (n - 1) / 2
    assert counts == {"blob_allocs": 1, "sealed": 1}, "the output was born in a blob and stored as it is"
    gc.collect()
    assert _core.allocator_stats()["live_blobs"] == 0
    assert usage(vineyardd.socket) == base


def test_the_parameter_or_the_variable_turns_it_off(vineyardd, monkeypatch):
    monkeypatch.delenv("VINEYARD_KEDRO_ALLOCATOR_THRESHOLD", raising=False)
    monkeypatch.delenv("VINEYARD_KEDRO_ALLOCATOR", raising=False)
    counts, _ = counted_run(vineyardd.socket, allocator=False)
    assert counts == {"blob_allocs": 0, "sealed": 0}
    monkeypatch.setenv("VINEYARD_KEDRO_ALLOCATOR", "0")
    counts, _ = counted_run(vineyardd.socket)
    assert counts == {"blob_allocs": 0, "sealed": 0}
    counts, _ = counted_run(vineyardd.socket, allocator="1")  # the parameter wins over the variable
    assert counts["blob_allocs"] == 1


def churn(a: np.ndarray) -> dict:
    """50 temporaries of 4 MiB, each dropped before the next is made; reports
    the most blobs and store bytes live at once while the node ran."""
    most_blobs = most_bytes = 0
    acc = 0.0
    for i in range(50):
        tmp = a * float(i)
        acc += float(tmp[1])
        stats = _core.allocator_stats()
        most_blobs, most_bytes = max(most_blobs, stats["live_blobs"]), max(most_bytes, stats["live_bytes"])
        del tmp
    return {"acc": acc, "most_blobs": most_blobs, "most_bytes": most_bytes}


def test_temporaries_are_released_as_they_die(vineyardd):
    pipe = pipeline([node(make, "params:n", "a", name="make"), node(churn, "a", "report", name="churn")])
    catalog = DataCatalog({"params:n": MemoryDataset(4 * MIB // 8)})
    base = usage(vineyardd.socket)
    before = _core.allocator_stats()
    runner = SequentialRunner(vineyard_ipc_socket=vineyardd.socket, allocator=True, allocator_threshold=MIB)
    report = loaded(runner.run(pipe, catalog))["report"]
    assert report["acc"] == sum(float(i) for i in range(50))
    assert _core.allocator_stats()["blob_allocs"] - before["blob_allocs"] >= 51, "every temporary was a blob"
    # live at once: the loaded input is not ours, the output `a` may still be
    # held by Kedro (one blob), and the one temporary of the moment
    assert report["most_blobs"] - before["live_blobs"] <= 2
    assert report["most_bytes"] - before["live_bytes"] <= 8 * MIB
    gc.collect()
    assert _core.allocator_stats()["live_blobs"] == before["live_blobs"]
    assert usage(vineyardd.socket) == base
