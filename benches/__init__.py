"""Benchmarks of vineyard-kedro against every alternative, side by side.

    python -m benches.run --size 1GiB          # the full run (< 10 minutes on 2 cores)
    python -m benches.run --smoke --out DIR    # tiny sizes, for CI: every contender runs, results equal

`run` drives three parts, each alternating its contenders inside every
repetition so drift on a shared machine hits them all alike:

* `_micro`: save and load of DataFrames (float64 16 columns at 16 MiB, 256 MiB
  and ``--size``; strided, mixed and string frames) for ours, the floor (a copy
  into a fresh shared mapping), pickle / parquet / Arrow IPC to ``/dev/shm`` and
  the official vineyard client (in its own venv, against the same vineyardd);
* `_scaling`: save and load against bytes, column count and object count;
* `_pipelines`: Kedro pipelines with 1 GiB intermediates through every dataset
  kind, our runners and the official plugin on Kedro 0.18.14.

This module holds what they share: sizes, statistics, the frame builders (the
same source text runs here and in the official client's venv) and where the
other venvs are. It imports only the standard library.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
_UNITS = {"": 1, "B": 1, "K": KiB, "KB": KiB, "KIB": KiB, "M": MiB, "MB": MiB, "MIB": MiB, "G": GiB, "GB": GiB, "GIB": GiB}


def parse_size(text: str) -> int:
    """'1GiB', '256MiB', '64k', '1000' -> bytes."""
    t = text.strip().upper()
    num = t.rstrip("KMGIB")
    return int(float(num) * _UNITS[t[len(num) :]])


def fmt_size(n: float) -> str:
    for unit, scale in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= scale:
            v = n / scale
            return f"{v:.0f} {unit}" if abs(v - round(v)) < 0.05 else f"{v:.1f} {unit}"
    return f"{n:.0f} B"


def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} us"
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def stats(values: list[float]) -> dict[str, Any]:
    """Median, min and max of the repetitions (and the repetitions)."""
    vals = [v for v in values if v is not None]
    if not vals:
        return {"median": None, "min": None, "max": None, "runs": []}
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "runs": vals}


def ratio_stats(num: list[float], den: list[float]) -> dict[str, Any]:
    """Statistics of the paired ratios num[i] / den[i] (same repetition)."""
    pairs = [a / b for a, b in zip(num, den) if a is not None and b]
    return stats(pairs)


def core_threads() -> int:
    """The core copies with min(available parallelism, 8) threads (as the floor does)."""
    return max(1, min(len(os.sched_getaffinity(0)), 8))


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * KiB
    except OSError:
        pass
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": model,
        "ram_bytes": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def _venv_python(env: str, dirname: str) -> str | None:
    """The python of a side venv: $env, else <repo>/<dirname> or ../<dirname>."""
    explicit = os.environ.get(env)
    if explicit:
        return explicit if os.path.exists(explicit) else None
    for base in (ROOT, ROOT.parent):
        p = base / dirname / "bin" / "python"
        if p.exists():
            return str(p)
    return None


def official_python() -> str | None:
    """A python with the official ``vineyard==0.24.2`` client (pandas 2)."""
    return _venv_python("VINEYARD_OFFICIAL_PYTHON", ".venv-official")


def kedro018_python() -> str | None:
    """A python with Kedro 0.18.14 and the official ``vineyard-kedro==0.24.2`` plugin."""
    return _venv_python("VINEYARD_KEDRO018_PYTHON", ".venv-kedro018")


def child_env(**extra: str | None) -> dict[str, str]:
    """The environment of the bench's subprocesses (repo on the path, no telemetry)."""
    env = dict(os.environ)
    env.update({"KEDRO_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1", "PYTHONUNBUFFERED": "1", "PYTHONWARNINGS": "ignore"})
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    # Bytecode is cached, as for an installed wheel (pip compiles it): without
    # the cache, an editable build recompiled this package's modules in every
    # run, 40 ms of a pipeline's first save.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    for key, value in extra.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


# -- frames ------------------------------------------------------------------------
# Source text, run here and in the official client's venv (pandas 2 there, where
# the `str` dtype spelling gives object strings). The numeric, strided and string
# builders are codec_bench.py's own.

MIXED = """
def mixed_frame(size):
    # per row: 4 float64, 2 int64, 1 datetime64, 1 category code, 1 string of ~24 bytes
    n = max(8, size // 90)
    rng = np.random.default_rng(2)
    cats = [f"cat-{i:03d}" for i in range(100)]
    cols = {f"f{i}": rng.random(n) for i in range(4)}
    cols["i0"] = rng.integers(0, 1 << 40, n)
    cols["i1"] = np.arange(n, dtype=np.int64)
    cols["t"] = pd.date_range("2020-01-01", periods=n, freq="s")
    cols["s"] = pd.Series(words(n * 24), dtype="str")
    cols["c"] = pd.Categorical.from_codes(rng.integers(0, 100, n), categories=cats)
    return pd.DataFrame(cols)
def arrow_table(size):
    # per row: 2 int64 (one with 10% nulls), 1 float64, 1 string of ~24 bytes
    import pyarrow as pa
    n = max(8, size // 48)
    rng = np.random.default_rng(4)
    nulls = rng.random(n) < 0.1
    return pa.table({
        "i": np.arange(n, dtype=np.int64),
        "j": pa.array(rng.integers(0, 1 << 40, n), mask=nulls),
        "f": rng.random(n),
        "s": pa.array(words(n * 24).tolist(), type=pa.string()),
    })
def columns_frame(columns, rows=1000):
    rng = np.random.default_rng(3)
    return pd.DataFrame(rng.random((rows, columns)), columns=[f"c{i}" for i in range(columns)]).copy()
def tiny_value(kind, i):
    if kind == "dict":
        return {"epoch": i, "loss": 0.5 / (i + 1), "tags": ["a", "b"], "ok": True}
    return pd.DataFrame({"a": np.arange(10, dtype=np.int64) + i, "b": np.linspace(0, 1, 10), "c": np.ones(10)})
def build(kind, size=0, columns=16):
    if kind == "numeric":
        return numeric_frame(size, columns)
    if kind == "strided":
        return strided_frame(size, columns)
    if kind == "mixed":
        return mixed_frame(size)
    if kind == "str":
        return str_frame(size)
    if kind == "object":
        return object_frame(size)
    if kind == "columns":
        return columns_frame(columns)
    if kind == "arrow":
        return arrow_table(size)
    raise ValueError(kind)
"""


def builder_source() -> str:
    """The builders' source text (codec_bench's MAKE plus ours)."""
    from benches.codec_bench import MAKE

    return MAKE + MIXED


_BUILDERS: dict[str, Any] = {}


def builders() -> dict[str, Any]:
    """The builders, executed here once."""
    if not _BUILDERS:
        exec(builder_source(), _BUILDERS)  # noqa: S102 - our own source text, shared with a subprocess
    return _BUILDERS


def build(kind: str, size: int = 0, columns: int = 16) -> Any:
    return builders()["build"](kind, size, columns)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- the official client, in its own venv --------------------------------------------

WORKER = r"""
import gc, json, os, sys, time, warnings
warnings.simplefilter("ignore")
out = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)  # whatever vineyard prints goes to stderr; replies own the real stdout
import numpy as np, pandas as pd
import vineyard
ns = {"np": np, "pd": pd}
state = {"df": None, "client": None}
def reply(**kw):
    out.write(json.dumps(kw) + "\n"); out.flush()
def equal(a, b):
    try:
        if isinstance(b, pd.DataFrame):
            pd.testing.assert_frame_equal(a, b, check_exact=True)
        elif hasattr(b, "schema") and hasattr(b, "equals"):  # pyarrow: the official client widens strings
            if a.equals(b):
                return True, ""
            if a.cast(b.schema).equals(b):
                return True, "types differ"
            return False, "values differ"
        elif a != b:
            return False, "values differ"
        return True, ""
    except Exception as e:
        return False, f"{type(e).__name__}: {str(e)[:300]}"
def put_get(client, value, verify, name=None, collect=True):
    if collect:
        gc.collect()
    t = time.perf_counter()
    oid = client.put(value, persist=True, name=name) if name else client.put(value)
    put = time.perf_counter() - t
    t = time.perf_counter()
    back = client.get(name=name) if name else client.get(oid)
    get = time.perf_counter() - t
    ok, why = equal(back, value) if verify else (True, "")
    del back
    if collect:
        gc.collect()
    if name:
        client.drop_name(name)
    client.delete(oid, deep=True)
    return put, get, ok, why
for line in sys.stdin:
    msg = json.loads(line)
    op = msg["op"]
    try:
        if op == "source":
            exec(msg["source"], ns); reply(ok=True)
        elif op == "connect":
            state["client"] = vineyard.connect(msg["socket"]); reply(ok=True)
        elif op == "build":
            state["df"] = None; gc.collect()
            state["df"] = ns["build"](msg["kind"], msg.get("size", 0), msg.get("columns", 16)); reply(ok=True)
        elif op == "put_get":
            put, get, ok, why = put_get(state["client"], state["df"], msg.get("verify", False))
            reply(ok=True, put=put, get=get, equal=ok, why=why)
        elif op == "fresh_put":
            c = vineyard.connect(msg["socket"])
            gc.collect()
            t = time.perf_counter(); oid = c.put(state["df"]); put = time.perf_counter() - t
            c.delete(oid, deep=True)
            try:
                c.close()
            except Exception:
                pass
            reply(ok=True, put=put)
        elif op == "tiny":
            times, oks = [], True
            for i in range(msg["n"]):
                v = ns["tiny_value"](msg["kind"], i)
                put, get, ok, why = put_get(state["client"], v, i == 0, name=f"bench/tiny/{i}", collect=False)
                times.append(put + get)
                oks = oks and ok
            reply(ok=True, pairs=times, equal=oks)
        elif op == "free":
            state["df"] = None; gc.collect(); reply(ok=True)
        elif op == "exit":
            reply(ok=True); break
    except Exception as e:
        reply(ok=False, error=f"{type(e).__name__}: {str(e)[:400]}")
"""


class OfficialWorker:
    """The official client in a subprocess of its own venv; each request is
    one JSON line and so is each reply. Timings are taken inside it."""

    def __init__(self, python: str, socket: str) -> None:
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [python, "-c", WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True, env=child_env()
        )
        self.call(op="source", source=builder_source())
        self.call(op="connect", socket=socket)

    def call(self, **msg: Any) -> dict:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            self.stderr.seek(0)
            raise RuntimeError(f"the official client's worker died: {self.stderr.read()[-2000:].decode(errors='replace')}")
        return json.loads(line)

    def close(self) -> None:
        try:
            self.call(op="exit")
            self.proc.wait(timeout=30)
        except Exception:  # noqa: BLE001
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()


def start_official(socket: str) -> OfficialWorker | None:
    python = official_python()
    if not python:
        log("official client: no venv (set VINEYARD_OFFICIAL_PYTHON); skipped")
        return None
    try:
        return OfficialWorker(python, socket)
    except Exception as e:  # noqa: BLE001
        log(f"official client: cannot start ({e}); skipped")
        return None
