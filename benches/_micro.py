"""Micro: save and load of one DataFrame by every contender, alternated.

Contenders (keys of the result records):

* ``ours`` / ``ours_fresh``: ``put_value`` (named, persisted, as the Kedro
  dataset saves) and ``get_value`` through a vineyardd this bench starts; warm
  store (memory freed by an earlier object of the same size) and a fresh one
  (a new vineyardd for every save: every page of the store faults);
* ``floor`` / ``floor_warm``: the same bytes copied into a fresh memfd mapping
  (page faults included) with as many threads as the core copies with, and
  into an already written mapping (the bandwidth alone; a reference);
* ``floor_prefault``: the fresh-mapping floor with each 8 MiB piece faulted in
  by one ``madvise(MADV_POPULATE_WRITE)`` before its copy, as the core does
  (the faster floor, for reference: the targets compare with ``floor``);
* ``pickle``, ``parquet``, ``arrow``: pickle protocol 5, parquet (pyarrow,
  default compression) and an Arrow IPC file, written to and read back from
  ``/dev/shm``; loads come back as pandas;
* ``official`` / ``official_fresh``: the official ``vineyard==0.24.2`` client's
  ``put`` / ``get``, timed inside a worker process in its own venv against the
  same vineyardd (`OfficialWorker`), where it can carry the frame.

Every loaded value is compared with the original once per case
(``assert_frame_equal(check_exact=True)``).
"""

from __future__ import annotations

import ctypes
import gc
import mmap
import os
import pickle
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from benches import MiB, OfficialWorker, build, core_threads, log, stats

NAME = "bench/micro"


# -- helpers -------------------------------------------------------------------------


def frame_bytes(df: Any) -> int:
    if not isinstance(df, pd.DataFrame):  # a pyarrow Table
        return int(df.nbytes)
    return int(df.memory_usage(index=False, deep=True).sum())


def equal(a: Any, b: Any) -> tuple[bool, bool, str]:
    """(values equal, exactly equal with dtypes, why not)."""
    if hasattr(b, "equals") and not isinstance(b, pd.DataFrame):  # pyarrow
        same = bool(a.equals(b))
        return same, same, "" if same else "tables differ"
    if not isinstance(b, pd.DataFrame):
        return a == b, a == b, "" if a == b else "values differ"
    try:
        pd.testing.assert_frame_equal(a, b, check_exact=True)
        return True, True, ""
    except AssertionError as e:
        why = " ".join(str(e).split())[:300]
    try:  # parquet and Arrow give object strings back as pandas 3's `str`
        pd.testing.assert_frame_equal(a, b, check_exact=True, check_dtype=False, check_index_type=False)
        return True, False, why
    except AssertionError:
        return False, False, why


def flat_buffers(df: pd.DataFrame) -> list[np.ndarray]:
    """The frame's numeric storage as flat byte arrays (one per pandas block)."""
    out = []
    for block in df._mgr.blocks:
        a = np.asarray(block.values)
        if a.dtype.kind not in "fiub" or not (a.flags.c_contiguous or a.flags.f_contiguous):
            raise ValueError("the floor is defined for contiguous numeric blocks only")
        out.append(a.ravel(order="K").view(np.uint8))
    return out


MADV_POPULATE_WRITE = 23  # linux/mman.h (Linux 5.14); Python 3.11's mmap lacks the name
_libc = ctypes.CDLL(None, use_errno=True)


def _prefault(piece: np.ndarray) -> None:
    """Faults in the pages of `piece`, writable, in one call (errors ignored:
    the copy then takes the faults)."""
    page = mmap.PAGESIZE
    start = piece.ctypes.data & ~(page - 1)
    _libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(piece.ctypes.data + piece.nbytes - start), MADV_POPULATE_WRITE)


def _copy_into(dst: np.ndarray, sources: list[np.ndarray], threads: int, prefault: bool = False) -> None:
    chunk = 8 * MiB
    work, off = [], 0
    for s in sources:
        for o in range(0, s.nbytes, chunk):
            work.append((off + o, s[o : o + chunk]))
        off += s.nbytes
    work.reverse()
    lock = threading.Lock()

    def run() -> None:
        while True:
            with lock:
                if not work:
                    return
                o, piece = work.pop()
            if prefault:
                _prefault(dst[o : o + piece.nbytes])
            np.copyto(dst[o : o + piece.nbytes], piece)  # numpy drops the GIL for the copy

    ts = [threading.Thread(target=run) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


class SharedMapping:
    """A fresh memfd of `n` bytes mapped shared (nothing touched yet)."""

    def __init__(self, n: int) -> None:
        self.fd = os.memfd_create("vineyard-kedro-bench-floor")
        os.ftruncate(self.fd, max(n, 1))
        self.map = mmap.mmap(self.fd, max(n, 1), mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.array = np.frombuffer(self.map, dtype=np.uint8)

    def close(self) -> None:
        self.array = None  # release the export before closing the mapping
        self.map.close()
        os.close(self.fd)


def floor_copy(sources: list[np.ndarray], threads: int, into: SharedMapping | None = None, prefault: bool = False) -> float:
    """Seconds to copy `sources` into a fresh shared mapping (or `into`)."""
    total = sum(s.nbytes for s in sources)
    m = into or SharedMapping(total)
    try:
        t = time.perf_counter()
        _copy_into(m.array, sources, threads, prefault)
        return time.perf_counter() - t
    finally:
        if into is None:
            m.close()


# -- file contenders (/dev/shm) -------------------------------------------------------


class FileContender:
    """Writes to and reads from one file in a private directory of /dev/shm."""

    suffix = ""
    #: The value saved last was a pyarrow Table (loaded back as one).
    table = False

    def __init__(self, directory: Path) -> None:
        self.path = directory / f"frame{self.suffix}"
        self.extra: dict[str, float] = {}

    def clean(self) -> None:
        self.path.unlink(missing_ok=True)


class PickleShm(FileContender):
    suffix = ".pkl"

    def save(self, df: Any) -> None:
        with open(self.path, "wb") as f:
            pickle.dump(df, f, protocol=5)

    def load(self) -> Any:
        data = self.path.read_bytes()
        t = time.perf_counter()
        out = pickle.loads(data)
        self.extra["loads"] = time.perf_counter() - t  # pickle.loads alone, for the str-column target
        return out


class ParquetShm(FileContender):
    suffix = ".parquet"

    def save(self, df: Any) -> None:
        if isinstance(df, pd.DataFrame):
            df.to_parquet(self.path, engine="pyarrow")
        else:
            import pyarrow.parquet as pq

            pq.write_table(df, self.path)
        self.table = not isinstance(df, pd.DataFrame)

    def load(self) -> Any:
        if self.table:
            import pyarrow.parquet as pq

            return pq.read_table(self.path)
        return pd.read_parquet(self.path, engine="pyarrow")


class ArrowShm(FileContender):
    suffix = ".arrow"

    def save(self, df: Any) -> None:
        import pyarrow as pa

        self.table = isinstance(df, pa.Table)
        table = df if self.table else pa.Table.from_pandas(df)
        with pa.OSFile(str(self.path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)

    def load(self) -> Any:
        import pyarrow as pa

        with pa.memory_map(str(self.path)) as source:
            table = pa.ipc.open_file(source).read_all()
        return table if self.table else table.to_pandas()


# -- ours -------------------------------------------------------------------------------


class Ours:
    """Our codecs through one client of the bench's vineyardd (a warm store)."""

    def __init__(self, client: Any, name: str = NAME) -> None:
        self.client, self.name, self.extra = client, name, {}

    def save(self, value: Any) -> None:
        from vineyard.contrib.kedro.codec import put_value

        put_value(self.client, value, name=self.name)

    def load(self) -> Any:
        from vineyard.contrib.kedro.codec import get_value

        return get_value(self.client, name=self.name)

    def clean(self) -> None:
        oid = self.client.resolve(self.name)
        if oid is not None:
            self.client.drop_name(self.name)
            self.client.delete([oid])
        gc.collect()
        self.client.flush()


def fresh_server(nbytes: int) -> Any:
    from vineyard.contrib.kedro import _core

    return _core.Server(size=f"{max(64, (nbytes * 3 // 2) // MiB + 64)}Mi")


def ours_fresh_save(value: Any, nbytes: int) -> float:
    """Seconds of one save into a vineyardd started for it (every page faults)."""
    from vineyard.contrib.kedro import _core
    from vineyard.contrib.kedro.codec import put_value

    server = fresh_server(nbytes)
    try:
        client = _core.Client(server.socket)
        client.connect()
        t = time.perf_counter()
        put_value(client, value, name=NAME)
        elapsed = time.perf_counter() - t
        client.close()
        return elapsed
    finally:
        server.kill()  # stop() can wait out its 5 s grace: vineyardd lingers after SIGTERM


# -- one case ---------------------------------------------------------------------------


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def run_case(label: str, kind: str, size: int, reps: int, ctx: dict, contenders: list[str], columns: int = 16) -> dict:
    """Measures one frame: `contenders` (keys) alternated in every repetition."""
    df = build(kind, size, columns)
    nbytes = frame_bytes(df)
    log(f"micro: {label} ({nbytes / MiB:.1f} MiB), {reps} repetitions: {', '.join(contenders)}")
    threads = core_threads()
    rec: dict[str, Any] = {"label": label, "kind": kind, "bytes": nbytes, "reps": reps, "results": {}}
    raw: dict[str, dict[str, list]] = {k: {"save": [], "load": [], "loads": []} for k in contenders}
    eq: dict[str, tuple[bool, bool, str]] = {}
    errors: dict[str, str] = {}
    ours = Ours(ctx["client"])
    shm = Path(tempfile.mkdtemp(prefix="vineyard-kedro-bench-", dir="/dev/shm"))
    files = {"pickle": PickleShm(shm), "parquet": ParquetShm(shm), "arrow": ArrowShm(shm)}
    official: OfficialWorker | None = ctx.get("official")
    floor_sources = flat_buffers(df) if any(k.startswith("floor") for k in contenders) else []
    warm_map = None
    try:
        if "floor_warm" in contenders:
            warm_map = SharedMapping(nbytes)
            floor_copy(floor_sources, threads, into=warm_map)  # touch every page once
        if "ours" in contenders:  # one untimed round leaves the store's memory warm
            ours.save(df)
            ours.clean()
        if official and ({"official", "official_fresh"} & set(contenders)):
            r = official.call(op="build", kind=kind, size=size, columns=columns)
            r = official.call(op="put_get", verify=False) if r.get("ok") else r
            if not r.get("ok"):
                errors["official"] = errors["official_fresh"] = r.get("error", "?")
        for rep in range(reps):
            order = contenders[rep % len(contenders) :] + contenders[: rep % len(contenders)]
            for key in order:
                if key in errors:
                    continue
                r = raw[key]
                verify = key not in eq
                if key == "ours" or key in files:
                    c = ours if key == "ours" else files[key]
                    t_save, _ = _timed(lambda: c.save(df))
                    t_load, back = _timed(c.load)
                    if verify:
                        eq[key] = equal(back, df)
                    del back
                    r["save"].append(t_save)
                    r["load"].append(t_load)
                    r["loads"].append(c.extra.get("loads"))
                    c.clean()
                elif key == "ours_fresh":
                    r["save"].append(ours_fresh_save(df, nbytes))
                elif key == "floor":
                    r["save"].append(floor_copy(floor_sources, threads))
                elif key == "floor_prefault":
                    r["save"].append(floor_copy(floor_sources, threads, prefault=True))
                elif key == "floor_warm":
                    r["save"].append(floor_copy(floor_sources, threads, into=warm_map))
                elif key == "official" and official:
                    o = official.call(op="put_get", verify=verify)
                    if not o.get("ok"):
                        errors[key] = o.get("error", "?")
                        continue
                    r["save"].append(o["put"])
                    r["load"].append(o["get"])
                    if verify:
                        eq[key] = (o["equal"], o["equal"] and not o["why"], o["why"])
                elif key == "official_fresh" and official:
                    server = fresh_server(nbytes)
                    try:
                        o = official.call(op="fresh_put", socket=server.socket)
                    finally:
                        server.kill()
                    if not o.get("ok"):
                        errors[key] = o.get("error", "?")
                        continue
                    r["save"].append(o["put"])
        for key in contenders:
            if key in ("official", "official_fresh") and not official:
                errors[key] = "no official client venv"
            res = {"save": stats(raw[key]["save"]), "load": stats(raw[key]["load"])}
            if any(v is not None for v in raw[key]["loads"]):
                res["pickle_loads"] = stats(raw[key]["loads"])
            if key in errors:
                res["error"] = errors[key]
            ok, exact, why = eq.get(key, (key not in errors, key not in errors, ""))
            res["equal"] = ok if key not in errors else None
            res["exact"] = exact if key not in errors else None
            if why:
                res["why"] = why
            rec["results"][key] = res
        return rec
    finally:
        if warm_map:
            warm_map.close()
        shutil.rmtree(shm, ignore_errors=True)
        if official:
            official.call(op="free")


ALL = ["ours", "ours_fresh", "floor", "floor_prefault", "floor_warm", "pickle", "parquet", "arrow", "official", "official_fresh"]


def cases(sizes: list[int], mixed: int, strings: int, strided: int) -> list[tuple[str, str, int, list[str]]]:
    """(label, kind, size, contenders) of the micro part."""
    out = [(f"float64 x16, {s // MiB} MiB" if s >= MiB else f"float64 x16, {s // 1024} KiB", "numeric", s, ALL) for s in sizes]
    out.append(("strided x16", "strided", strided, ["ours", "ours_fresh", "floor", "floor_prefault", "official", "official_fresh"]))
    nofloor = [k for k in ALL if not k.startswith("floor")]
    out.append(("mixed", "mixed", mixed, nofloor))
    out.append(("str column", "str", strings, ["ours", "pickle", "parquet", "arrow"]))
    out.append(("object strings", "object", strings, ["ours", "pickle", "parquet", "arrow", "official"]))
    out.append(("pyarrow Table (int, nullable int, float, str)", "arrow", mixed, ["ours", "pickle", "parquet", "arrow", "official"]))
    return out


def run(sizes: list[int], mixed: int, strings: int, strided: int, reps: int, big_reps: int, ctx: dict) -> list[dict]:
    records = []
    for label, kind, size, contenders in cases(sizes, mixed, strings, strided):
        n = big_reps if size > 256 * MiB else reps
        t = time.perf_counter()
        rec = run_case(label, kind, size, n, ctx, contenders)
        rec["seconds"] = time.perf_counter() - t
        records.append(rec)
    return records
