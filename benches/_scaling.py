"""Scaling: save and load time against bytes, column count and object count.

* bytes: a float64 16-column frame at a few sizes (ours in a warm and a fresh
  store, and the floor); `run` merges in the micro part's numeric sizes, so the
  curve spans 1 MiB to ``--size``. Save should be linear and near the floor;
  load (zero-copy) should stay flat.
* columns: 10, 100 and 1,000 float64 columns of 1,000 rows, every contender
  that can carry them.
* objects: 1,000 tiny values saved and loaded one after the other (named and
  loaded by name, as a Kedro dataset does), per pair: ours, pickle files in
  ``/dev/shm``, and the official client.
* store size: the save+load pair of one tiny dict under one name (each save
  replaces, so deletes the previous value) with 0, 10,000 and 100,000 other
  named objects in the store: the cost of a pair should not grow with them.
  Two pairs: one under a name in a run's private namespace, as the runners'
  datasets save and load (`private`), and one under a name any process may
  move, which asks vineyardd what the name points to on every save and load;
  with the time of that request alone (a `get_name`), whose cost in vineyardd
  0.24.2 grows with the names in the store. Each row alternates with the same
  pairs on an empty vineyardd, and compares the two.
"""

from __future__ import annotations

import gc
import pickle
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from benches import MiB, builders, log, stats
from benches._micro import Ours, equal, run_case

COLUMN_COUNTS = [10, 100, 1000]
TINY_KINDS = ["dict", "frame"]


def bytes_curve(sizes: list[int], reps: int, ctx: dict) -> list[dict]:
    out = []
    for size in sizes:
        label = f"float64 x16, {size / MiB:g} MiB"
        out.append(run_case(label, "numeric", size, reps, ctx, ["ours", "ours_fresh", "floor", "floor_prefault", "floor_warm"]))
    return out


def columns_curve(reps: int, ctx: dict, counts: list[int] = COLUMN_COUNTS) -> list[dict]:
    out = []
    for n in counts:
        rec = run_case(
            f"{n} columns x 1000 rows", "columns", 0, reps, ctx, ["ours", "pickle", "parquet", "arrow", "official"], columns=n
        )
        rec["columns"] = n
        out.append(rec)
    return out


def _tiny_ours(client: Any, kind: str, n: int) -> tuple[list[float], bool]:
    make = builders()["tiny_value"]
    times, ok = [], True
    names = [f"bench/tiny/{i}" for i in range(n)]
    for i, name in enumerate(names):
        v = make(kind, i)
        c = Ours(client, name)
        t = time.perf_counter()
        c.save(v)
        back = c.load()
        times.append(time.perf_counter() - t)
        if i == 0 or i == n - 1:
            ok = ok and equal(back, v)[1]
        del back
    ids = [client.resolve(name) for name in names]
    for name in names:
        client.drop_name(name)
    client.delete([i for i in ids if i is not None])
    gc.collect()
    client.flush()
    return times, ok


def _tiny_pickle(kind: str, n: int) -> tuple[list[float], bool]:
    make = builders()["tiny_value"]
    d = Path(tempfile.mkdtemp(prefix="vineyard-kedro-bench-tiny-", dir="/dev/shm"))
    times, ok = [], True
    try:
        for i in range(n):
            v = make(kind, i)
            path = d / f"{i}.pkl"
            t = time.perf_counter()
            with open(path, "wb") as f:
                pickle.dump(v, f, protocol=5)
            with open(path, "rb") as f:
                back = pickle.load(f)
            times.append(time.perf_counter() - t)
            if i == 0 or i == n - 1:
                ok = ok and equal(back, v)[1]
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return times, ok


def tiny_objects(n: int, reps: int, ctx: dict) -> list[dict]:
    """`n` save+load pairs per contender and kind; the repetitions alternate them."""
    out = []
    for kind in TINY_KINDS:
        log(f"scaling: {n} tiny {kind} objects, {reps} repetitions")
        pairs: dict[str, list[float]] = {"ours": [], "pickle": [], "official": []}
        eq: dict[str, bool] = {}
        err: dict[str, str] = {}
        per_rep: dict[str, list[float]] = {k: [] for k in pairs}
        for rep in range(reps):
            order = list(pairs)[rep % 3 :] + list(pairs)[: rep % 3]
            for key in order:
                if key in err:
                    continue
                if key == "ours":
                    times, ok = _tiny_ours(ctx["client"], kind, n)
                elif key == "pickle":
                    times, ok = _tiny_pickle(kind, n)
                else:
                    official = ctx.get("official")
                    if not official:
                        err[key] = "no official client venv"
                        continue
                    r = official.call(op="tiny", kind=kind, n=n)
                    if not r.get("ok"):
                        err[key] = r.get("error", "?")
                        continue
                    times, ok = r["pairs"], r["equal"]
                pairs[key].extend(times)
                per_rep[key].append(sorted(times)[len(times) // 2])
                eq[key] = eq.get(key, True) and ok
        results = {}
        for key in pairs:
            res: dict[str, Any] = {"pair": stats(per_rep[key]), "pairs_median_all": stats(pairs[key])["median"]}
            res["pair"]["runs"] = per_rep[key]
            res["equal"] = eq.get(key) if key not in err else None
            if key in err:
                res["error"] = err[key]
            results[key] = res
        out.append({"label": f"{n} tiny {kind}s", "kind": kind, "n": n, "reps": reps, "results": results})
    return out


def _pairs(client: Any, n: int, name: str, private: bool) -> tuple[list[float], bool]:
    from vineyard.contrib.kedro.codec import get_value, put_value

    make = builders()["tiny_value"]
    times, ok = [], True
    for i in range(n):
        v = make("dict", i)
        t = time.perf_counter()
        put_value(client, v, name=name, private=private)
        back = get_value(client, name=name, private=private)
        times.append(time.perf_counter() - t)
        ok = ok and equal(back, v)[1]
        del back
    return times, ok


def _lookups(client: Any, n: int, name: str) -> list[float]:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        client.resolve(name)
        times.append(time.perf_counter() - t)
    return times


def store_size(others: list[int], pairs: int) -> list[dict]:
    """Median save+load pair with `others` other named objects in the store
    (tiny dicts, named as datasets are): under a name of a run's private
    namespace (`pair`, what the runners do) and under a shared name
    (`shared`), whose save and load each ask vineyardd for the name
    (`get_name`, timed alone). Each row alternates, in small chunks, with the
    same pairs on a second vineyardd that stays empty, so that a loaded host
    slows both alike: `*_vs_empty` compares the two (the 0 row: two empty
    stores, the noise floor). Both vineyardds are dropped at the end."""
    from vineyard.contrib.kedro import _core
    from vineyard.contrib.kedro.codec import put_value

    make = builders()["tiny_value"]
    servers = [_core.Server(size="1Gi"), _core.Server(size="2Gi")]
    empty, full = (_core.Client(s.socket) for s in servers)
    out, have = [], 0
    try:
        for n in sorted(others):
            log(f"scaling: save+load pair with {n} other objects in the store")
            while have < n:
                # Unnamed put, then the name: a named put asks vineyardd for
                # the name's old object, which costs more the more names there are.
                full.put_name(put_value(full, make("dict", have)).id, f"bench/others/{have}")
                have += 1
            private, shared = f"bench-run-{n}/pair", f"bench/store-size/{n}"
            times: dict[str, list[float]] = {k: [] for k in ("pair", "shared", "get_name")}
            base: dict[str, list[float]] = {k: [] for k in times}
            ok = True
            for chunk in range(10):
                both = [(empty, base), (full, times)]
                for c, into in both if chunk % 2 == 0 else both[::-1]:
                    t, o = _pairs(c, pairs // 10, private, True)
                    into["pair"] += t
                    t, o2 = _pairs(c, pairs // 10, shared, False)
                    into["shared"] += t
                    into["get_name"] += _lookups(c, pairs // 10, shared)
                    ok = ok and o and o2
            rec: dict[str, Any] = {"label": f"pair, {n} other objects", "others": n, "pairs": pairs, "equal": ok}
            for key in times:
                rec[key] = stats(times[key])
                rec[f"empty_{key}"] = stats(base[key])
                rec[f"{key}_vs_empty"] = rec[key]["median"] / rec[f"empty_{key}"]["median"]
            rec["vs_empty"] = rec["pair_vs_empty"]
            out.append(rec)
    finally:
        for c in (empty, full):
            c.close(abandon=True)
        for s in servers:
            s.kill()
    return out


def run(
    sizes: list[int], reps: int, tiny_n: int, ctx: dict, column_counts: list[int] = COLUMN_COUNTS, others: list[int] | None = None
) -> dict:
    t = time.perf_counter()
    out = {
        "bytes": bytes_curve(sizes, reps, ctx),
        "columns": columns_curve(reps, ctx, column_counts),
        "objects": tiny_objects(tiny_n, min(reps, 3), ctx),
        "store_size": store_size(others if others is not None else [0, 10_000, 100_000], 300),
    }
    out["seconds"] = time.perf_counter() - t
    return out


def slope(points: list[tuple[int, float]]) -> float | None:
    """Least-squares seconds per GiB through the (bytes, seconds) points."""
    if len(points) < 2:
        return None
    xs = [b / (1 << 30) for b, _ in points]
    ys = [s for _, s in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else None
