"""Pipelines: Kedro runs with 1 GiB intermediates through every kind of dataset.

Each run is a subprocess (``python -m benches._pipelines child SPEC``) that
builds the pipeline and catalog, calls ``runner.run`` in-process and prints one
JSON line: the run's time, the time in dataset loads and saves (Kedro's dataset
hooks) and in each node, and its peak RSS (VmHWM, shared memory it touched
included). The parent polls the summed PSS of the run's process tree (plus an
external vineyardd). The last nodes write their column sums to a file, so
every contender's result can be compared.

Sequential pipeline: ``make -> raw -> transform -> scaled -> summarize``
(``raw`` and ``scaled`` are float64 frames of ``--pipeline-size``), run with
Kedro 1.7 by ``memory`` (default MemoryDataset, which copies DataFrames on
save and load), ``assign`` (MemoryDataset ``copy_mode: assign``: references
passed, the compute floor), ``pickle`` and ``parquet`` (kedro-datasets on
local disk), ``ours`` (our SequentialRunner with the allocator off, embedded
vineyardd: a fresh store every run, as ``kedro run`` gives), ``ours_warm`` (the same against one
long-lived vineyardd, whose memory earlier runs already touched),
``ours_alloc`` (``ours`` with the NEP 49 allocator: the nodes' arrays of at
least 1/64 of the intermediate, 16 MiB at 1 GiB, live in vineyard blobs)
and, on
Kedro 0.18.14 in its own venv, ``official`` (the official plugin's
SequentialRunner against a vineyardd started here). Two-branch pipeline
(``make -> raw``, then two ``transform -> summarize`` branches): Kedro's
ParallelRunner (``kedro_parallel``) against ours (``ours_parallel``, and
``ours_parallel_alloc`` with the allocator in the workers).
In-place-edit pipeline (``make -> raw``, ``edit_in_place(raw)`` edits one
column of 16 and the first rows of another in place and sums the frame, then
``summarize_raw(raw)`` sums the original): Kedro's SequentialRunner with the
default MemoryDataset, which copies ``raw`` for each node (``kedro_inplace``),
against ours (``ours_inplace``), whose loads are copy-on-write mappings that
copy only the pages the edit writes. Derive pipeline: see ``benches._derive``.
The child imports only numpy and pandas at the top (it runs in Kedro 0.18's
venv).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import numpy as np
import pandas as pd

from benches import _derive

# -- the nodes (module level: ParallelRunner pickles them) ------------------------------


def make_frame() -> pd.DataFrame:
    n = max(1, int(os.environ["BENCH_PIPE_BYTES"]) // 8 // 16)
    rng = np.random.default_rng(0)
    return pd.DataFrame({f"c{i}": rng.random(n) for i in range(16)}, copy=False)


def _affine(df: pd.DataFrame, scale: float, shift: float) -> pd.DataFrame:
    cols = {}
    for c in df.columns:
        a = df[c].to_numpy() * scale
        a += shift
        cols[c] = a
    return pd.DataFrame(cols, copy=False)


def transform(raw: pd.DataFrame) -> pd.DataFrame:
    return _affine(raw, 2.0, 1.0)


def transform_b(raw: pd.DataFrame) -> pd.DataFrame:
    return _affine(raw, -1.0, 3.0)


def _summarize(df: pd.DataFrame, name: str) -> list[float]:
    sums = [float(df[c].to_numpy().sum()) for c in df.columns]
    with open(os.path.join(os.environ["BENCH_RESULT_DIR"], f"{name}.json"), "w") as f:
        json.dump(sums, f)
    return sums


def summarize(scaled: pd.DataFrame) -> list[float]:
    return _summarize(scaled, "sums")


def summarize_a(a: pd.DataFrame) -> list[float]:
    return _summarize(a, "sums_a")


def summarize_b(b: pd.DataFrame) -> list[float]:
    return _summarize(b, "sums_b")


def edit_in_place(raw: pd.DataFrame) -> list[float]:
    raw["c0"] *= 2.0
    raw.iloc[:1000, 1] = 0.0
    return _summarize(raw, "sums_edited")


def summarize_raw(raw: pd.DataFrame, edited: list[float]) -> list[float]:
    """Runs after the edit (it takes its result): must see `raw` unedited."""
    return _summarize(raw, "sums_raw")


# -- the child ------------------------------------------------------------------------------

SEQUENTIAL = ["memory", "assign", "pickle", "parquet", "ours", "ours_alloc", "ours_warm", "official"]
PARALLEL = ["kedro_parallel", "ours_parallel", "ours_parallel_alloc"]
INPLACE = ["kedro_inplace", "ours_inplace"]
LABELS = {
    "memory": "MemoryDataset (default copy)",
    "assign": "MemoryDataset copy_mode=assign",
    "pickle": "PickleDataset (local disk)",
    "parquet": "ParquetDataset (local disk)",
    "ours": "ours: SequentialRunner",
    "ours_alloc": "ours with the allocator (node arrays in blobs)",
    "ours_warm": "ours, long-lived vineyardd (warm)",
    "official": "official plugin, Kedro 0.18.14",
    "kedro_parallel": "Kedro ParallelRunner",
    "ours_parallel": "ours: ParallelRunner",
    "ours_parallel_alloc": "ours: ParallelRunner with the allocator",
    "kedro_inplace": "in-place edit: MemoryDataset (default copy)",
    "ours_inplace": "in-place edit: ours (copy-on-write)",
    **_derive.LABELS,
}
DERIVE = _derive.DERIVE
#: The contenders that run with the NEP 49 allocator.
ALLOC = ("ours_alloc", "ours_parallel_alloc", "ours_derive_alloc")
#: Those whose nodes run in the measured process (ParallelRunner's run in
#: workers, whose allocator counts the parent does not see).
ALLOC_IN_PROCESS = ("ours_alloc", "ours_derive_alloc")
#: The contender each one is compared with ("run / ours").
OURS = {
    **{c: "ours" for c in SEQUENTIAL},
    **{c: "ours_parallel" for c in PARALLEL},
    **{c: "ours_inplace" for c in INPLACE},
    **{c: "ours_derive" for c in DERIVE},
}


def _pipeline(parallel: bool, inplace: bool = False) -> Any:
    from kedro.pipeline import node, pipeline

    if inplace:
        return pipeline([
            node(make_frame, None, "raw", name="make"),
            node(edit_in_place, "raw", "sums_edited", name="edit_in_place"),
            node(summarize_raw, ["raw", "sums_edited"], "sums_raw", name="summarize_raw"),
        ])  # fmt: skip
    if not parallel:
        return pipeline([
            node(make_frame, None, "raw", name="make"),
            node(transform, "raw", "scaled", name="transform"),
            node(summarize, "scaled", "sums", name="summarize"),
        ])  # fmt: skip
    return pipeline([
        node(make_frame, None, "raw", name="make"),
        node(transform, "raw", "a", name="transform_a"),
        node(transform_b, "raw", "b", name="transform_b"),
        node(summarize_a, "a", "sums_a", name="summarize_a"),
        node(summarize_b, "b", "sums_b", name="summarize_b"),
    ])  # fmt: skip


def _timing_hooks() -> tuple[Any, dict]:
    from kedro.framework.hooks import hook_impl
    from kedro.framework.hooks.manager import _create_hook_manager

    acc: dict[str, Any] = {"save": 0.0, "load": 0.0, "nodes": {}}
    started: dict[Any, float] = {}

    class Timing:
        @hook_impl
        def before_dataset_loaded(self, dataset_name: str) -> None:
            started["l", dataset_name] = time.perf_counter()

        @hook_impl
        def after_dataset_loaded(self, dataset_name: str) -> None:
            acc["load"] += time.perf_counter() - started.pop(("l", dataset_name))

        @hook_impl
        def before_dataset_saved(self, dataset_name: str) -> None:
            started["s", dataset_name] = time.perf_counter()

        @hook_impl
        def after_dataset_saved(self, dataset_name: str) -> None:
            acc["save"] += time.perf_counter() - started.pop(("s", dataset_name))

        @hook_impl
        def before_node_run(self, node: Any) -> None:
            started["n", node.name] = time.perf_counter()

        @hook_impl
        def after_node_run(self, node: Any) -> None:
            acc["nodes"][node.name] = time.perf_counter() - started.pop(("n", node.name))

    manager = _create_hook_manager()
    manager.register(Timing())
    return manager, acc


def _hwm() -> int | None:
    """This process's peak RSS (VmHWM: anonymous, file and shared memory pages).
    Not ru_maxrss: that one starts from the forking parent's RSS."""
    with open("/proc/self/status") as f:
        return next((int(ln.split()[1]) * 1024 for ln in f if ln.startswith("VmHWM:")), None)


def child(spec: dict) -> dict:
    from kedro.io import DataCatalog

    contender, tmp = spec["contender"], spec["tmp"]
    parallel, inplace, derive = contender in PARALLEL, contender in INPLACE, contender in DERIVE
    catalog: Any = DataCatalog()
    timed: dict[str, float] = {}
    if derive:
        catalog = _derive.catalog(contender)
    elif contender == "assign":
        from kedro.io import MemoryDataset

        catalog = DataCatalog({n: MemoryDataset(copy_mode="assign") for n in ("raw", "scaled")})
    elif contender == "pickle":
        from kedro_datasets.pickle import PickleDataset

        catalog = DataCatalog({n: PickleDataset(filepath=os.path.join(tmp, f"{n}.pkl")) for n in ("raw", "scaled")})
    elif contender == "parquet":
        from kedro_datasets.pandas import ParquetDataset

        catalog = DataCatalog({n: ParquetDataset(filepath=os.path.join(tmp, f"{n}.parquet")) for n in ("raw", "scaled")})
    elif parallel:
        from kedro.io import SharedMemoryDataCatalog

        catalog = SharedMemoryDataCatalog()
    if contender in ALLOC or contender in ("ours", "ours_warm", "ours_parallel", "ours_inplace", "ours_derive", "ours_derive_copy"):
        from vineyard.contrib.kedro import _connection
        from vineyard.contrib.kedro.runner import ParallelRunner, SequentialRunner

        for fn in ("acquire_embedded", "release_embedded"):  # time the embedded vineyardd's start and stop
            orig = getattr(_connection, fn)

            def wrapped(*a: Any, _orig: Any = orig, _fn: str = fn, **k: Any) -> Any:
                t = time.perf_counter()
                try:
                    return _orig(*a, **k)
                finally:
                    timed[_fn] = timed.get(_fn, 0.0) + time.perf_counter() - t

            setattr(_connection, fn, wrapped)
        # The allocator (on by default) only in the *_alloc rows: every other
        # row is comparable with the figures measured before it was the default.
        alloc = contender in ALLOC
        runner = ParallelRunner(allocator=alloc) if parallel else SequentialRunner(allocator=alloc)
    elif contender == "official":
        from vineyard.contrib.kedro.runner import SequentialRunner  # the official plugin, in its venv

        runner = SequentialRunner()
    elif parallel:
        from kedro.runner import ParallelRunner

        runner = ParallelRunner()
    else:
        from kedro.runner import SequentialRunner

        runner = SequentialRunner()
    hooks, acc = _timing_hooks()
    if contender.startswith("ours_derive"):
        hooks.register(_derive.store_hook(acc))
    t = time.perf_counter()
    runner.run(_derive.pipeline() if derive else _pipeline(parallel, inplace), catalog, hooks)
    total = time.perf_counter() - t
    out = {"total": total, "save": acc["save"], "load": acc["load"], "nodes": acc["nodes"], "maxrss": _hwm()}
    for key in ("store_peak", "store_end"):
        if key in acc:
            out[key] = acc[key]
    if timed:
        out["embedded_start"] = timed.get("acquire_embedded")
        out["embedded_stop"] = timed.get("release_embedded")
    if parallel:
        out["save"] = out["load"] = None  # dataset hooks run in the worker processes, not here
    if contender in ALLOC:
        from vineyard.contrib.kedro import _core

        out["blob_allocs"] = _core.allocator_stats()["blob_allocs"]
    return out


# -- the parent ------------------------------------------------------------------------------


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def _pss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith("Pss:"))
    except (OSError, StopIteration):
        return 0


class Poller:
    """Peak of the summed PSS of a process tree (and extra pids), sampled every 0.1 s."""

    def __init__(self, root: int, extra: list[int]) -> None:
        import threading

        self.peak, self._stop = 0, threading.Event()

        def sample() -> None:
            while not self._stop.wait(0.1 if self.peak else 0.0):
                self.peak = max(self.peak, sum(_pss(p) for p in _tree(root) + extra), 1)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def run_one(contender: str, nbytes: int, python: str, disk: str, env: dict[str, str | None], extra_pids: list[int]) -> dict:
    """One pipeline run in a subprocess; its figures and results."""
    import shutil
    import subprocess
    import tempfile

    from benches import ROOT, child_env

    tmp = tempfile.mkdtemp(prefix="pipeline-", dir=disk)
    results = os.path.join(tmp, "results")
    os.mkdir(results)
    spec = {"contender": contender, "tmp": tmp}
    env = child_env(BENCH_PIPE_BYTES=str(nbytes), BENCH_RESULT_DIR=results, **env)
    with tempfile.TemporaryFile() as log:
        t = time.perf_counter()
        cmd = [python, "-m", "benches._pipelines", "child", json.dumps(spec)]
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        poller = Poller(proc.pid, extra_pids)
        proc.wait()
        wall = time.perf_counter() - t
        peak = poller.stop()
        log.seek(0)
        text = log.read().decode(errors="replace")
    rec: dict[str, Any] = {"rc": proc.returncode, "wall": wall, "peak_pss": peak}
    line = [ln for ln in text.splitlines() if ln.startswith("BENCH-RESULT ")]
    if proc.returncode or not line:
        rec["error"] = text[-3000:]
    else:
        rec.update(json.loads(line[-1][len("BENCH-RESULT ") :]))
    rec["sums"] = {}
    for name in os.listdir(results):
        with open(os.path.join(results, name)) as f:
            rec["sums"][name[: -len(".json")]] = json.load(f)
    shutil.rmtree(tmp, ignore_errors=True)
    return rec


def _same(a: dict, b: dict) -> bool:
    if not a or set(a) != set(b):
        return False
    return all(
        len(a[k]) == len(b[k]) and all(abs(x - y) <= 1e-12 * max(abs(x), abs(y), 1.0) for x, y in zip(a[k], b[k])) for k in a
    )


def _unedited(sums: dict) -> bool:
    """The in-place pipeline's later node saw `raw` as made: its first column
    sums to half the edited one (the edit doubled it)."""
    if "sums_raw" not in sums:
        return True
    raw, edited = sums["sums_raw"], sums.get("sums_edited") or [0.0, 0.0]
    return abs(2 * raw[0] - edited[0]) <= 1e-9 * max(abs(edited[0]), 1.0) and raw[1] != edited[1]


def _run_contender(c: str, nbytes: int, ctx: dict, warm: Any, python018: str | None) -> dict:
    from benches import MiB

    env: dict[str, str | None] = {"VINEYARD_IPC_SOCKET": None}
    python, server, pids = sys.executable, None, []
    if c == "ours_warm":
        env, pids = {"VINEYARD_IPC_SOCKET": warm.socket}, [warm.pid]
    if c in ALLOC:  # 16 MiB (the default) at 1 GiB; smaller at smoke sizes, so that blobs are used
        env["VINEYARD_KEDRO_ALLOCATOR_THRESHOLD"] = str(max(64 << 10, min(16 * MiB, nbytes // 64)))
    if c == "official":  # the official plugin against a vineyardd of its own, started here
        from vineyard.contrib.kedro import _core

        server = _core.Server(size=f"{3 * nbytes // MiB + 512}Mi")
        python, env, pids = python018 or "", {"VINEYARD_IPC_SOCKET": server.socket}, [server.pid]
    try:
        return run_one(c, nbytes, python, ctx["disk"], env, pids)
    finally:
        if server:
            server.kill()


def run(
    nbytes: int, reps: int, ctx: dict, groups: tuple[str, ...] = ("sequential", "parallel", "inplace", "derive")
) -> dict:
    """Every pipeline contender of `groups` `reps` times, alternated; statistics per contender."""
    from benches import MiB, kedro018_python, log, stats

    python018 = kedro018_python()
    seq = [c for c in SEQUENTIAL if c != "official" or python018] if "sequential" in groups else []
    par = PARALLEL if "parallel" in groups else []
    inp = INPLACE if "inplace" in groups else []
    der = DERIVE if "derive" in groups else []
    skipped = {} if python018 or not seq else {"official": "no Kedro 0.18.14 venv (set VINEYARD_KEDRO018_PYTHON)"}
    runs: dict[str, list[dict]] = {c: [] for c in seq + par + inp + der}
    t0 = time.perf_counter()
    warm = None
    if "ours_warm" in seq:  # one vineyardd for all its runs, warmed by a run that is not counted
        from vineyard.contrib.kedro import _core

        warm = _core.Server(size=f"{3 * nbytes // MiB + 512}Mi")
    try:
        if warm:
            run_one("ours_warm", nbytes, sys.executable, ctx["disk"], {"VINEYARD_IPC_SOCKET": warm.socket}, [warm.pid])
        for group in filter(None, (seq, par, inp, der)):
            for rep in range(reps):
                for c in group[rep % len(group) :] + group[: rep % len(group)]:
                    runs[c].append(_run_contender(c, nbytes, ctx, warm, python018))
                    r = runs[c][-1]
                    took = "failed" if "error" in r else f"{r['total']:.2f} s"
                    log(f"pipeline: {c} rep {rep}: {took}, wall {r['wall']:.1f} s")
    finally:
        if warm:
            warm.kill()
    ref = next((r["sums"] for c in ("assign", "memory", *runs) for r in runs.get(c, []) if "error" not in r and r["sums"]), {})
    ref_par = next((r["sums"] for c in PARALLEL for r in runs.get(c, []) if "error" not in r and r["sums"]), {})
    ref_inp = next((r["sums"] for c in INPLACE for r in runs.get(c, []) if "error" not in r and r["sums"]), {})
    ref_der = next((r["sums"] for c in DERIVE for r in runs.get(c, []) if "error" not in r and r["sums"]), {})
    out: dict[str, Any] = {"bytes": nbytes, "reps": reps, "contenders": {}, "skipped": skipped}
    for c, rs in runs.items():
        ok = [r for r in rs if "error" not in r]
        res: dict[str, Any] = {
            "label": LABELS[c],
            "parallel": c in PARALLEL,
            "ours": OURS[c],
            "bytes": nbytes,
            "ran": len(ok),
            "failed": len(rs) - len(ok),
        }
        keys = ("total", "save", "load", "wall", "maxrss", "peak_pss", "embedded_start", "embedded_stop", "blob_allocs", "store_peak", "store_end")
        for key in keys:
            vals = [r.get(key) for r in ok]
            if any(v is not None for v in vals):
                res[key] = stats(vals)
        res["nodes"] = [r.get("nodes") for r in ok]
        want = ref_par if c in PARALLEL else ref_inp if c in INPLACE else ref_der if c in DERIVE else ref
        res["equal"] = bool(ok) and all(_same(r["sums"], want) and _unedited(r["sums"]) for r in ok)
        if len(ok) < len(rs):
            res["error"] = next(r["error"] for r in rs if "error" in r)[-1500:]
        out["contenders"][c] = res
    out["seconds"] = time.perf_counter() - t0
    return out


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "child":
    import logging
    import warnings

    warnings.simplefilter("ignore")
    logging.disable(logging.INFO)
    result = child(json.loads(sys.argv[2]))
    sys.stdout.write("BENCH-RESULT " + json.dumps(result) + "\n")
    sys.stdout.flush()
    sys.exit(0)
