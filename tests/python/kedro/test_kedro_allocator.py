"""numpy's memory handler in vineyard blobs (runner parameter ``allocator``):
the handler itself (malloc, calloc, realloc, free; threshold; fallback),
arrays that outlive the run, and pipelines that give the same results with
the handler on as Kedro's default runner."""

from __future__ import annotations

import gc
import os
import resource

import numpy as np
import pandas as pd
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import node, pipeline
from kedro.runner import SequentialRunner as KedroSequentialRunner

import inplace_pipeline as ip
from vineyard.contrib.kedro import _core
from vineyard.contrib.kedro.runner import ParallelRunner, SequentialRunner, ThreadRunner

MIB = 1 << 20


def usage(socket: str) -> int:
    c = _core.Client(socket)
    try:
        return c.status()["memory_usage"]
    finally:
        c.close()


def live_blobs() -> int:
    return _core.allocator_stats()["live_blobs"]


class Installed:
    """The handler installed in this thread for the `with` block."""

    def __init__(self, socket: str, threshold: int = MIB) -> None:
        self.socket, self.threshold = socket, threshold

    def __enter__(self) -> Installed:
        self.token = _core.allocator_install(self.socket, self.threshold)
        return self

    def __exit__(self, *exc: object) -> None:
        _core.allocator_restore(self.token)
        _core.allocator_release(self.socket)


# -- the handler -----------------------------------------------------------------


def test_large_arrays_live_in_blobs_small_ones_on_the_heap(vineyardd):
    base, blobs = usage(vineyardd.socket), live_blobs()
    assert not _core.allocator_active()
    with Installed(vineyardd.socket):
        assert _core.allocator_active()
        big = np.arange(4 * MIB // 8, dtype=np.float64)
        small = np.arange(1000.0)
        assert live_blobs() == blobs + 1
        assert usage(vineyardd.socket) >= base + 4 * MIB
    assert not _core.allocator_active()
    outside = np.ones(4 * MIB // 8)  # after restore: the previous handler
    assert live_blobs() == blobs + 1
    assert big[-1] == 4 * MIB // 8 - 1 and small.sum() == 499500.0 and outside.sum() == MIB // 2
    del big, small, outside
    gc.collect()
    assert live_blobs() == blobs
    assert usage(vineyardd.socket) == base


def test_calloc_zeroes_reused_blob_memory(vineyardd):
    with Installed(vineyardd.socket):
        for _ in range(3):
            dirty = np.full(8 * MIB // 8, 7.0)
            del dirty
            zeros = np.zeros(8 * MIB // 8)
            assert not zeros.any()
            zeros[:] = 5.0
            del zeros


def test_realloc_growth_keeps_contents(vineyardd):
    base, blobs = usage(vineyardd.socket), live_blobs()
    with Installed(vineyardd.socket):
        a = np.arange(MIB // 4, dtype=np.float64)  # 2 MiB: a blob
        grown = np.resize(a, 3 * (MIB // 4))
        np.testing.assert_array_equal(grown[: MIB // 4], a)
        np.testing.assert_array_equal(grown[MIB // 4 : MIB // 2], a)
        # in-place growth and shrink (realloc of a blob)
        b = np.arange(MIB // 4, dtype=np.float64)
        b.resize(MIB, refcheck=False)
        np.testing.assert_array_equal(b[: MIB // 4], np.arange(MIB // 4, dtype=np.float64))
        assert not b[MIB // 4 :].any()
        b.resize(10, refcheck=False)
        np.testing.assert_array_equal(b, np.arange(10.0))
        # an append-style builder: small on the heap, then blobs as it grows
        built = np.empty(0, dtype=np.int64)
        for i in range(12):
            built = np.append(built, np.arange(i * 40_000, (i + 1) * 40_000))
        np.testing.assert_array_equal(built, np.arange(480_000))
        heap = np.arange(1000.0)
        heap.resize(MIB, refcheck=False)  # heap memory grows on the heap
        assert heap[999] == 999.0 and not heap[1000:].any()
        del a, grown, b, built, heap
    gc.collect()
    assert live_blobs() == blobs
    assert usage(vineyardd.socket) == base


def test_a_full_store_falls_back_to_the_heap(small_vineyardd):
    socket = small_vineyardd.socket
    base = usage(socket)
    before = _core.allocator_stats()
    with Installed(socket):
        arrays = [np.full(24 * MIB // 8, float(i)) for i in range(5)]  # 120 MiB in a 64 MiB store
    stats = _core.allocator_stats()
    assert stats["fallbacks"] > before["fallbacks"]
    assert stats["blob_allocs"] > before["blob_allocs"]
    assert [a[-1] for a in arrays] == [0.0, 1.0, 2.0, 3.0, 4.0]
    del arrays
    gc.collect()
    assert live_blobs() == before["live_blobs"]
    assert usage(socket) == base


def test_an_unreachable_server_falls_back_to_the_heap(tmp_path):
    with Installed(str(tmp_path / "no-such.sock")):
        a = np.ones(4 * MIB // 8)
    assert a.sum() == MIB // 2


def test_install_restores_handler_and_nests(vineyardd):
    with Installed(vineyardd.socket):
        with Installed(vineyardd.socket, threshold=1 << 40):
            np.ones(4 * MIB // 8)  # above this threshold only: heap
            assert _core.allocator_active()
        assert _core.allocator_active()
    assert not _core.allocator_active()


# -- runs ------------------------------------------------------------------------

KEPT: list[np.ndarray] = []


def make_big(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float64)


def make_and_keep(n: int) -> np.ndarray:
    big = np.arange(n, dtype=np.float64)
    KEPT.append(big)  # the saved output escapes the run through a module global
    return big


def double(a: np.ndarray) -> np.ndarray:
    out = a * 2.0
    temp = np.sqrt(out) + 1.0  # a temporary: freed inside the node
    return out + temp * 0.0


def edit_kept(doubled: np.ndarray) -> np.ndarray:
    KEPT[0][:] = -1.0  # edits the output of make_and_keep after its save
    return doubled[:10].copy()


def copy_after_edit(big: np.ndarray, head: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return big.copy(), head


def escape_pipeline():
    return pipeline(
        [
            node(make_and_keep, "params:n", "big", name="make_and_keep"),
            node(double, "big", "doubled", name="double"),
            node(edit_kept, "doubled", "head", name="edit_kept"),
            node(copy_after_edit, ["big", "head"], ["big_copy", "head_out"], name="copy_after_edit"),
        ]
    )


def loaded(outputs: dict) -> dict:
    """Free outputs: Kedro 1.x returns their datasets, 0.19 their values."""
    return {k: (v.load() if hasattr(v, "load") else v) for k, v in outputs.items()}


def run_escape(runner_cls, **kwargs):
    catalog = DataCatalog({"params:n": MemoryDataset(MIB // 2)})  # 4 MiB arrays
    return loaded(runner_cls(**kwargs).run(escape_pipeline(), catalog))


@pytest.mark.parametrize("embedded", [True, False])
def test_arrays_that_escape_the_run_stay_valid_and_are_freed(vineyardd, embedded):
    KEPT.clear()
    blobs = live_blobs()
    base = usage(vineyardd.socket)
    kwargs = {"allocator": True, "allocator_threshold": MIB}
    if embedded:
        kwargs["vineyard_size"] = "256Mi"  # stopped when the run ends: escaped arrays keep their mapping
    else:
        kwargs["vineyard_ipc_socket"] = vineyardd.socket
    out = run_escape(SequentialRunner, **kwargs)
    n = MIB // 2
    want = np.arange(n, dtype=np.float64)
    # the free output (a blob) and the array a node kept both outlive the run
    np.testing.assert_array_equal(out["head_out"], want[:10] * 2.0)
    # the edit after the save never reached the stored value that copy_big loaded
    np.testing.assert_array_equal(out["big_copy"], want)
    assert len(KEPT) == 1 and (KEPT[0] == -1.0).all()
    KEPT[0][:5] = 3.0  # still writable after the run
    assert live_blobs() >= blobs + 1
    KEPT.clear()
    del out
    gc.collect()
    assert live_blobs() == blobs
    if not embedded:
        assert usage(vineyardd.socket) == base


@pytest.mark.parametrize("runner_cls", [SequentialRunner, ThreadRunner, ParallelRunner])
def test_in_place_edit_project_matches_kedro_with_the_allocator(vineyardd, tmp_path, monkeypatch, runner_cls):
    monkeypatch.setenv("VINEYARD_KEDRO_ALLOCATOR", "1")
    monkeypatch.setenv("VINEYARD_KEDRO_ALLOCATOR_THRESHOLD", str(MIB))  # the project's arrays are 1.5 to 2.4 MiB
    kedros = ip.run("kedro", "", tmp_path / "kedro")
    before = _core.allocator_stats()["blob_allocs"]
    name = {SequentialRunner: "sequential", ThreadRunner: "thread", ParallelRunner: "parallel"}[runner_cls]
    results = ip.run(name, vineyardd.socket, tmp_path / name)
    for key in ip.RESULTS:
        ip.assert_same(results[key], kedros[key], f"{name}: {key}")
    for key, want in ip.expected_untouched().items():
        ip.assert_same(results[key], want, f"{name}: {key}")
    if runner_cls is not ParallelRunner:  # (workers count in their own process)
        assert _core.allocator_stats()["blob_allocs"] > before
    del results
    gc.collect()
    assert live_blobs() == 0


def awkward_values():
    n = 600_000
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        {
            "f": rng.random(n),
            "i": pd.array(np.where(np.arange(n) % 7 == 0, None, np.arange(n)), dtype="Int64"),
            "c": pd.Categorical(rng.choice(["x", "y", "z"], n)),
            "t": pd.date_range("2024-01-01", periods=n, freq="s", tz="Europe/Paris"),
            "s": pd.Series([f"s{i % 13}" for i in range(n)], dtype="str"),
        }
    )
    return {
        "f16": rng.random(n * 2).astype(np.float16),
        "c128": (rng.random(n) + 1j * rng.random(n)),
        "dt": np.arange(n).astype("datetime64[ns]"),
        "td": np.arange(n).astype("timedelta64[us]"),
        "bools": rng.random(n * 4) > 0.5,
        "be": np.arange(n, dtype=">i4"),
        "rec": np.zeros(n, dtype=[("a", "<i8"), ("b", "<f4"), ("c", "S3")]),
        "fortran": np.asfortranarray(rng.random((1000, 600))),
        "transposed": rng.random((600, 1000)).T,
        "zero_d": np.array(2.5),
        "empty": np.empty((0, 5)),
        "frame": frame,
    }


def make_awkward():
    return awkward_values()


def pass_awkward(values):
    return {k: (v.copy() if hasattr(v, "copy") else v) for k, v in values.items()}


def test_awkward_dtypes_match_with_the_allocator_on_and_off(vineyardd):
    pipe = pipeline([node(make_awkward, None, "values", name="make"), node(pass_awkward, "values", "out", name="pass")])
    kedros = loaded(KedroSequentialRunner().run(pipe, DataCatalog({})))["out"]
    for on in (True, False):
        got = SequentialRunner(vineyard_ipc_socket=vineyardd.socket, allocator=on, allocator_threshold=MIB).run(pipe, DataCatalog({}))
        got = loaded(got)["out"]
        ip.assert_same(got, kedros, f"allocator={on}")
        want = awkward_values()
        ip.assert_same(got, want, f"allocator={on}")
        del got
    gc.collect()
    assert live_blobs() == 0


def rss_kib() -> int:
    with open(f"/proc/{os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def grow(x: np.ndarray) -> np.ndarray:
    temp = x + 1.0
    return temp * 1.0


def test_a_thousand_node_executions_leave_store_and_rss_flat(vineyardd):
    chain = [node(make_big, "params:n", "x0", name="start")]
    chain += [node(grow, f"x{i}", f"x{i + 1}", name=f"grow_{i}") for i in range(19)]
    pipe = pipeline(chain)
    runner = SequentialRunner(vineyard_ipc_socket=vineyardd.socket, allocator=True, allocator_threshold=MIB)

    def one_run():
        out = loaded(runner.run(pipe, DataCatalog({"params:n": MemoryDataset(MIB // 4)})))  # 2 MiB arrays
        assert out["x19"][5] == 5.0 + 19.0

    before_allocs = _core.allocator_stats()["blob_allocs"]
    for _ in range(5):  # warm up (mappings, caches)
        one_run()
    gc.collect()
    base, rss = usage(vineyardd.socket), rss_kib()
    for _ in range(45):  # 50 runs of 20 nodes: 1,000 node executions
        one_run()
    gc.collect()
    assert _core.allocator_stats()["blob_allocs"] - before_allocs >= 1000
    assert live_blobs() == 0
    assert usage(vineyardd.socket) == base
    assert rss_kib() - rss < 32 * 1024, f"RSS grew by {(rss_kib() - rss) / 1024:.1f} MiB over 900 node executions"


def probe(n: int) -> dict:
    before = _core.allocator_stats()["blob_allocs"]
    a = np.ones(n)
    return {"pid": os.getpid(), "active": _core.allocator_active(), "allocs": _core.allocator_stats()["blob_allocs"] - before, "sum": float(a.sum())}


def test_parallel_runner_workers_install_the_handler_in_their_own_process(vineyardd):
    try:
        from kedro.io import SharedMemoryDataCatalog as Catalog  # Kedro 1.x's catalog for a ParallelRunner
    except ImportError:  # Kedro 0.19 wraps a plain DataCatalog itself
        Catalog = DataCatalog
    pipe = pipeline([node(probe, "params:n", f"probe_{i}", name=f"probe_{i}") for i in range(2)])
    runner = ParallelRunner(vineyard_ipc_socket=vineyardd.socket, allocator=True, allocator_threshold=MIB, max_workers=2)
    out = loaded(runner.run(pipe, Catalog({"params:n": MemoryDataset(MIB // 2)})))
    for i in range(2):
        got = out[f"probe_{i}"]
        assert got["pid"] != os.getpid()
        assert got["active"] and got["allocs"] == 1 and got["sum"] == MIB // 2
    assert not _core.allocator_active()


def test_the_switch_defaults_on_and_reads_the_environment(monkeypatch):
    monkeypatch.delenv("VINEYARD_KEDRO_ALLOCATOR", raising=False)
    assert SequentialRunner()._vineyard_allocator is True  # noqa: SLF001
    assert ParallelRunner()._vineyard_allocator is True  # noqa: SLF001
    assert ThreadRunner(allocator="false")._vineyard_allocator is False  # noqa: SLF001
    monkeypatch.setenv("VINEYARD_KEDRO_ALLOCATOR", "0")
    assert SequentialRunner()._vineyard_allocator is False  # noqa: SLF001
    assert SequentialRunner(allocator="1")._vineyard_allocator is True  # noqa: SLF001 - the parameter wins
    monkeypatch.setenv("VINEYARD_KEDRO_ALLOCATOR", "1")
    assert SequentialRunner(allocator=False)._vineyard_allocator is False  # noqa: SLF001
    monkeypatch.setenv("VINEYARD_KEDRO_ALLOCATOR_THRESHOLD", "lots")
    with pytest.raises(ValueError, match="VINEYARD_KEDRO_ALLOCATOR_THRESHOLD"):
        SequentialRunner()


# -- saves without a copy ------------------------------------------------------


def test_a_save_stores_the_blob_itself_and_later_edits_stay_private(vineyardd):
    from vineyard.contrib.kedro.codec import get_value, put_value

    c = _core.Client(vineyardd.socket)
    base, sealed = usage(vineyardd.socket), _core.allocator_stats()["sealed"]
    with Installed(vineyardd.socket):
        a = np.arange(MIB // 2, dtype=np.float64)  # 4 MiB
        b = np.arange(MIB // 2, dtype=np.float64) * 3  # likely a neighbour of a in the store
        info_a = put_value(c, a, name="alloc/a")
        assert _core.allocator_stats()["sealed"] == sealed + 1
        assert info_a.nbytes == 0, "nothing was copied"
        b[:7] = -1.0  # b written after a's pages went private (a page may hold both)
        info_b = put_value(c, b, name="alloc/b")
        assert info_b.nbytes == 0
        assert usage(vineyardd.socket) < base + 9 * MIB, "the stored objects are the arrays' blobs"
        a[:] = 7.0  # edits after the saves
        b[-5:] = 9.0
    want_a = np.arange(MIB // 2, dtype=np.float64)
    want_b = want_a * 3
    want_b[:7] = -1.0
    np.testing.assert_array_equal(get_value(c, name="alloc/a"), want_a)
    np.testing.assert_array_equal(get_value(c, name="alloc/b"), want_b)
    assert (a == 7.0).all() and (b[-5:] == 9.0).all()
    # the arrays go first: the objects stay, with their data
    del a, b
    gc.collect()
    np.testing.assert_array_equal(get_value(c, name="alloc/a"), want_a)
    gc.collect()
    c.delete([info_a.id, info_b.id])
    c.drop_name("alloc/a")
    c.drop_name("alloc/b")
    c.flush(all=True)
    assert live_blobs() == 0
    assert usage(vineyardd.socket) == base
    c.close()


def test_deleting_a_saved_object_while_its_array_lives_retires_it(vineyardd):
    from vineyard.contrib.kedro.codec import put_value

    c = _core.Client(vineyardd.socket)
    base = usage(vineyardd.socket)
    with Installed(vineyardd.socket):
        a = np.full(MIB // 2, 5.0)
        info = put_value(c, a, name="alloc/retired")
    c.drop_name("alloc/retired")
    assert c.delete([info.id]) == 1, "retired: the array still uses the blob"
    assert c.exists(info.id)
    other = np.ones(MIB)  # the store's memory is not handed out under the array
    assert (a == 5.0).all() and other.sum() == MIB
    del a
    gc.collect()
    assert not c.exists(info.id), "freed with the array"
    assert usage(vineyardd.socket) == base
    c.close()


def test_in_place_edit_project_with_the_allocator_on_kedro_019_and_pandas_2(vineyardd, tmp_path):
    import pickle
    import subprocess
    from pathlib import Path

    from kedro_project import kedro_env

    python = os.environ.get("VINEYARD_KEDRO019_PYTHON")
    if not python:
        pytest.fail("set VINEYARD_KEDRO019_PYTHON to a Python with Kedro 0.19 and this package (.ci/run does)")
    here = Path(ip.__file__).parent
    env = kedro_env(PYTHONPATH=str(here), VINEYARD_KEDRO_ALLOCATOR="1", VINEYARD_KEDRO_ALLOCATOR_THRESHOLD=str(MIB))
    # inplace_pipeline.py's main, then how many arrays the allocator put in blobs in this process
    script = (
        "import runpy, sys\n"
        "sys.argv = sys.argv[1:]\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')\n"
        "from vineyard.contrib.kedro import _core\n"
        "print('BLOB_ALLOCS', _core.allocator_stats()['blob_allocs'], _core.allocator_stats()['sealed'])\n"
    )
    out = subprocess.run(
        [python, "-c", script, str(here / "inplace_pipeline.py"), vineyardd.socket, str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-4000:]
    counts = [ln.split()[1:] for ln in out.stdout.splitlines() if ln.startswith("BLOB_ALLOCS")]
    assert counts and int(counts[0][0]) > 0 and int(counts[0][1]) > 0, out.stdout[-2000:]
    results = {r: pickle.loads((tmp_path / f"{r}.pkl").read_bytes()) for r in ip.RUNNERS}
    inputs = pickle.loads((tmp_path / "inputs.pkl").read_bytes())
    for runner in ip.RUNNERS:
        for key in ip.RESULTS:
            ip.assert_same(results[runner][key], results["kedro"][key], f"0.19 {runner}: {key}")
        for key, want in inputs.items():
            ip.assert_same(results[runner][key], want, f"0.19 {runner}: {key}")
