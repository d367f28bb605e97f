"""Micro-benchmark of the codecs against the floor, pickle and the official client.

    python benches/codec_bench.py --size 1GiB [--runs 5] [--strings 256MiB]

For a float64 DataFrame of 16 columns (``--size`` bytes), a "strided" frame of
the same size (16 columns that are views into one C-ordered 2-D array) and
string frames (pandas ``str`` dtype, and object strings; ``--strings`` bytes
of text), it prints the median of ``--runs`` runs of:

* ours: ``put_value`` (a named save replacing the previous one, so the store's
  memory is warm as in a running pipeline; the first, cold save is shown
  apart) and ``get_value``;
* the floor: copying the same bytes into a fresh shared mapping (a new memfd,
  mmapped, page faults included) with as many threads as the core uses;
* ``pickle.dumps`` / ``pickle.loads`` (protocol 5, in band);
* the official client's ``put`` / ``get`` (vineyard 0.24.2, run in a
  subprocess against the same vineyardd) when VINEYARD_OFFICIAL_PYTHON names
  a python that has it.
"""

from __future__ import annotations

import argparse
import gc
import json
import mmap
import os
import pickle
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any, Callable

import numpy as np
import pandas as pd

from vineyard.contrib.kedro import _core
from vineyard.contrib.kedro.codec import get_value, put_value

UNITS = {"": 1, "B": 1, "K": 1 << 10, "KB": 1 << 10, "KIB": 1 << 10, "M": 1 << 20, "MB": 1 << 20, "MIB": 1 << 20, "G": 1 << 30, "GB": 1 << 30, "GIB": 1 << 30}
COLUMNS = 16


def parse_size(text: str) -> int:
    t = text.strip().upper()
    num = t.rstrip("KMGIB")
    return int(float(num) * UNITS[t[len(num) :]])


def core_threads() -> int:
    """The core copies with min(available parallelism, 8) threads."""
    return max(1, min(len(os.sched_getaffinity(0)), 8))


def median_time(fn: Callable[[], Any], runs: int, before: Callable[[], Any] | None = None) -> tuple[float, list[float]]:
    times = []
    for _ in range(runs):
        if before:
            before()
        gc.collect()
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
        del out
    return statistics.median(times), times


def floor_copy(src: np.ndarray, threads: int) -> float:
    """Copy `src` into a fresh memfd mapping with `threads` threads."""
    n = src.nbytes
    fd = os.memfd_create("vineyard-kedro-floor")
    try:
        os.ftruncate(fd, n)
        m = mmap.mmap(fd, n, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        dst = np.frombuffer(m, dtype=np.uint8)
        flat = src.reshape(-1).view(np.uint8)
        chunk = 8 << 20
        starts = list(range(0, n, chunk))
        lock = threading.Lock()

        def work() -> None:
            while True:
                with lock:
                    if not starts:
                        return
                    o = starts.pop()
                np.copyto(dst[o : o + chunk], flat[o : o + chunk])

        t = time.perf_counter()
        workers = [threading.Thread(target=work) for _ in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        elapsed = time.perf_counter() - t
        dst = flat = None  # release the exports of the mapping before closing it
        m.close()
        return elapsed
    finally:
        os.close(fd)


# -- data (the official script builds the same frames) ---------------------------

MAKE = '''
import numpy as np, pandas as pd
def numeric_frame(size, columns):
    n = size // 8 // columns
    rng = np.random.default_rng(0)
    return pd.DataFrame({f"c{i}": rng.random(n) for i in range(columns)}, copy=False)
def strided_frame(size, columns):
    n = size // 8 // columns
    block = np.random.default_rng(1).random((n, columns))
    return pd.DataFrame(block, columns=[f"c{i}" for i in range(columns)], copy=False)
def words(size):
    # ~24 bytes per string, 100k distinct values
    n = max(1, size // 24)
    base = np.array([f"value-{i:06d}-{'x' * (i % 12)}" for i in range(100_000)], dtype=object)
    return base[np.arange(n) % len(base)]
def object_frame(size):
    return pd.DataFrame({"s": pd.Series(words(size), dtype=object, copy=False)})
def str_frame(size):
    return pd.DataFrame({"s": pd.Series(words(size), dtype="str")})
'''
_builders: dict = {}
exec(MAKE, _builders)  # noqa: S102 - the same frame builders run here and in the official subprocess
numeric_frame = _builders["numeric_frame"]
strided_frame = _builders["strided_frame"]
str_frame = _builders["str_frame"]
object_frame = _builders["object_frame"]


OFFICIAL = MAKE + '''
import gc, json, os, statistics, sys, time, warnings
warnings.simplefilter("ignore")
import vineyard
args = json.loads(sys.argv[1])
client = vineyard.connect(args["socket"])
out = {}
for kind in args["kinds"]:
    if kind == "numeric":
        df = numeric_frame(args["size"], args["columns"])
    elif kind == "strided":
        df = strided_frame(args["size"], args["columns"])
    elif kind == "object":
        df = object_frame(args["strings"])
    else:
        continue
    puts, gets, prev = [], [], None
    for _ in range(args["runs"]):
        gc.collect()
        t = time.perf_counter(); oid = client.put(df); puts.append(time.perf_counter() - t)
        if prev is not None:
            client.delete(prev, deep=True)
        t = time.perf_counter(); back = client.get(oid); gets.append(time.perf_counter() - t)
        assert back.shape == df.shape
        del back
        prev = oid
    client.delete(prev, deep=True)
    out[kind] = {"put": statistics.median(puts), "get": statistics.median(gets), "put_runs": puts, "get_runs": gets}
    del df
print(json.dumps(out))
'''


def run_official(python: str, socket: str, kinds: list[str], args: argparse.Namespace, size: int, strings: int) -> dict:
    payload = json.dumps({"socket": socket, "kinds": kinds, "runs": args.runs, "size": size, "columns": COLUMNS, "strings": strings})
    proc = subprocess.run([python, "-c", textwrap.dedent(OFFICIAL), payload], capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        print(f"official client failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
        return {}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_ours(client: Any, df: pd.DataFrame, runs: int, name: str) -> dict:
    client.drop_name(name)
    t = time.perf_counter()
    put_value(client, df, name=name)
    cold = time.perf_counter() - t
    save, save_runs = median_time(lambda: put_value(client, df, name=name), runs)
    load, load_runs = median_time(lambda: get_value(client, name=name), runs)
    check = get_value(client, name=name)
    assert check.shape == df.shape
    del check
    client.delete([client.resolve(name)])
    client.drop_name(name)
    gc.collect()
    client.flush()
    return {"cold": cold, "save": save, "load": load, "save_runs": save_runs, "load_runs": load_runs}


def bench_pickle(df: pd.DataFrame, runs: int) -> dict:
    dumps, _ = median_time(lambda: pickle.dumps(df, protocol=5), runs)
    data = pickle.dumps(df, protocol=5)
    loads, _ = median_time(lambda: pickle.loads(data), runs)
    data = None
    return {"dumps": dumps, "loads": loads}


def fmt(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    return f"{seconds * 1000:.2f} ms" if seconds < 0.1 else f"{seconds:.3f} s"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="1GiB", help="bytes of the numeric frames (default 1GiB)")
    p.add_argument("--strings", default=None, help="bytes of text in the string frames (default size/4)")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--skip-official", action="store_true")
    args = p.parse_args()
    size = parse_size(args.size)
    strings = parse_size(args.strings) if args.strings else max(1 << 20, size // 4)
    threads = core_threads()
    store = 3 * size + 3 * strings * 4 + (1 << 30)
    server = _core.Server(size=f"{store >> 20}Mi")
    try:
        client = _core.Client(server.socket)
        rows: list[tuple[str, dict]] = []
        official_python = None if args.skip_official else os.environ.get("VINEYARD_OFFICIAL_PYTHON")

        # numeric and strided frames
        numeric = numeric_frame(size, COLUMNS)
        nbytes = int(numeric.memory_usage(index=False).sum())
        source = np.random.default_rng(9).random(nbytes // 8)  # the floor copies this many bytes
        floor, _ = median_time(lambda: floor_copy(source, threads), args.runs)
        source = None
        ours = bench_ours(client, numeric, args.runs, "bench/numeric")
        pk = bench_pickle(numeric, args.runs)
        rows.append(("float64 frame", {"bytes": nbytes, "floor": floor, **ours, **pk}))
        del numeric
        gc.collect()

        strided = strided_frame(size, COLUMNS)
        assert strided._mgr.blocks[0].values.flags.f_contiguous, "the strided frame's columns should be strided views"
        ours = bench_ours(client, strided, args.runs, "bench/strided")
        pk = bench_pickle(strided, args.runs)
        rows.append(("strided frame", {"bytes": nbytes, "floor": floor, **ours, **pk}))
        del strided
        gc.collect()

        for label, make in (("str column", str_frame), ("object strings", object_frame)):
            df = make(strings)
            text = int(df["s"].str.len().sum())
            ours = bench_ours(client, df, args.runs, f"bench/{label}")
            pk = bench_pickle(df, args.runs)
            rows.append((label, {"bytes": text, "floor": None, **ours, **pk}))
            del df
            gc.collect()

        official: dict = {}
        if official_python:
            official = run_official(official_python, server.socket, ["numeric", "strided", "object"], args, size, strings)
        keys = {"float64 frame": "numeric", "strided frame": "strided", "object strings": "object"}
        for label, row in rows:
            o = official.get(keys.get(label, ""), {})
            row["official_put"] = o.get("put")
            row["official_get"] = o.get("get")

        print(f"\nvineyard-kedro codec bench: {size / (1 << 30):.2f} GiB numeric frames ({COLUMNS} float64 columns), "
              f"{strings / (1 << 20):.0f} MiB of text, median of {args.runs} runs, {threads} copy threads, "
              f"{os.cpu_count()} CPUs, pandas {pd.__version__}")
        if not official_python:
            print("(official client: set VINEYARD_OFFICIAL_PYTHON to a python with vineyard==0.24.2 to compare)")
        header = ["frame", "MiB", "floor", "save", "save/floor", "save (cold)", "load", "pickle.dumps", "pickle.loads", "official put", "official get", "save vs official", "load vs pickle"]
        table = [header]
        for label, r in rows:
            ratio = lambda a, b: f"{a / b:.2f}x" if a is not None and b else "n/a"  # noqa: E731
            table.append([
                label, f"{r['bytes'] / (1 << 20):.0f}", fmt(r["floor"]), fmt(r["save"]), ratio(r["save"], r["floor"]), fmt(r["cold"]),
                fmt(r["load"]), fmt(r["dumps"]), fmt(r["loads"]), fmt(r["official_put"]), fmt(r["official_get"]),
                ratio(r["save"], r["official_put"]), ratio(r["load"], r["loads"]),
            ])  # fmt: skip
        widths = [max(len(row[i]) for row in table) for i in range(len(header))]
        for i, row in enumerate(table):
            print("  ".join(cell.rjust(w) if j else cell.ljust(w) for j, (cell, w) in enumerate(zip(row, widths))))
            if i == 0:
                print("  ".join("-" * w for w in widths))
        if "str column" in dict(rows):
            print("official client and pandas `str` columns: not measured (its DataFrame builder stores only the first value of such a column)")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
