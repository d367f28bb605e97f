"""The benchmark's entry point: every comparison in one invocation.

    python -m benches.run --size 1GiB [--out benches/out] [--publish]
    python -m benches.run --smoke --out DIR     # tiny sizes: only checks that every contender ran and agreed

Prints the tables (medians with min and max over the repetitions, and
ratios), and writes ``bench.json`` (raw figures), ``bench.png`` (the plot)
and ``bench.md`` (the README section) to ``--out``; ``--publish`` also copies
the PNG and JSON to ``benches/results/``. See ``benches/__init__.py`` for the
parts and ``benches/_micro.py`` for the contenders.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
if "GLOG_log_dir" not in os.environ:  # a private directory, removed at exit
    os.environ["GLOG_log_dir"] = tempfile.mkdtemp(prefix="vineyard-kedro-bench-glog-")
    atexit.register(shutil.rmtree, os.environ["GLOG_log_dir"], True)

from benches import MiB, ROOT, core_threads, log, machine, official_python, parse_size, start_official  # noqa: E402

#: Where the official client cannot carry the frame (categorical columns fail to load).
UNSUPPORTED = {("official", "mixed"), ("official_fresh", "mixed")}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="1GiB", help="largest float64 frame and the pipelines' intermediates (default 1GiB)")
    p.add_argument("--mixed", default="256MiB", help="size of the mixed frame (default 256MiB)")
    p.add_argument("--strings", default="64MiB", help="text in the string frames (default 64MiB)")
    p.add_argument("--strided", default=None, help="size of the strided frame (default --size)")
    p.add_argument("--pipeline-size", default=None, help="intermediates of the sequential pipeline (default --size)")
    p.add_argument(
        "--parallel-size", default="256MiB", help="intermediates of the two-branch ParallelRunner pipeline (default 256MiB)"
    )
    p.add_argument("--reps", type=int, default=5, help="repetitions of frames up to 256 MiB (default 5)")
    p.add_argument("--big-reps", type=int, default=5, help="repetitions of frames over 256 MiB (default 5)")
    p.add_argument("--pipeline-reps", type=int, default=3, help="runs of each pipeline contender (default 3)")
    p.add_argument("--tiny", type=int, default=1000, help="tiny objects saved and loaded (default 1000)")
    p.add_argument(
        "--parts",
        default="micro,scaling,pipelines",
        help="comma list of the parts to run (micro, scaling, pipelines; derive: only the derive pipeline)",
    )
    p.add_argument("--out", default=str(ROOT / "benches" / "out"), help="output directory (default benches/out)")
    p.add_argument("--publish", action="store_true", help="also write benches/results/bench.{png,json}")
    p.add_argument("--smoke", action="store_true", help="tiny sizes and one pass, for CI")
    a = p.parse_args(argv)
    a.parts = set(a.parts.split(","))
    size = parse_size(a.size)
    if a.smoke:
        a.sizes = [256 * 1024, 1 * MiB]
        a.mixed_b, a.strings_b, a.strided_b = 512 * 1024, 256 * 1024, 1 * MiB
        a.pipeline_b = a.parallel_b = 8 * MiB
        a.reps = a.big_reps = 2
        a.pipeline_reps = 1
        a.tiny = min(a.tiny, 50)
        a.scaling_sizes, a.columns = [64 * 1024, 512 * 1024], [10, 100]
        a.others = [0, 300]
    else:
        a.sizes = sorted({s for s in (16 * MiB, 256 * MiB, size) if s <= size})
        a.mixed_b, a.strings_b = parse_size(a.mixed), parse_size(a.strings)
        a.strided_b = parse_size(a.strided) if a.strided else size
        a.pipeline_b = parse_size(a.pipeline_size) if a.pipeline_size else size
        a.parallel_b = parse_size(a.parallel_size)
        a.scaling_sizes = [s for s in (1 * MiB, 4 * MiB, 64 * MiB) if s < size]
        a.columns = [10, 100, 1000]
        a.others = [0, 10_000, 100_000]
    return a


def _med(rec: dict | None, key: str, what: str = "save") -> float | None:
    res = (rec or {}).get("results", {}).get(key, {})
    return None if "error" in res else (res.get(what) or {}).get("median")


def targets(data: dict) -> list[dict]:
    """Issue 7's targets, evaluated on this run's medians."""
    out: list[dict] = []

    def add(name: str, value: float | None, limit: float, op: str, unit: str = "x") -> None:
        if value is None:
            return
        met = value <= limit if op == "<=" else value >= limit
        by = value / limit if op == "<=" else limit / value if value else float("inf")
        show = (lambda v: f"{v:.2f}x") if unit == "x" else (lambda v: f"{v * 1000:.1f} ms")  # noqa: E731
        out.append({"target": name, "value": value, "limit": limit, "op": op, "met": met, "measured": show(value),
                    "limit_text": f"{op} {show(limit)}", "by": f"{(by - 1) * 100:.0f}% off", "unit": unit})  # fmt: skip
        out[-1]["limit"] = out[-1].pop("limit_text")

    def div(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    micro = data.get("micro", [])
    numeric = [r for r in micro if r["kind"] == "numeric"]
    big = [r for r in numeric if r["bytes"] >= 256 * MiB] or numeric[-2:]
    for r in big:
        size = r["label"].split(", ")[-1]
        add(f"save <= floor, warm store, {size}", div(_med(r, "ours"), _med(r, "floor")), 1.0, "<=")
        add(f"save <= floor, fresh store, {size}", div(_med(r, "ours_fresh"), _med(r, "floor")), 1.0, "<=")
        add(f"save <= 1.2x official put, warm store, {size}", div(_med(r, "ours"), _med(r, "official")), 1.2, "<=")
        add(f"save <= 1.2x official put, fresh store, {size}", div(_med(r, "ours_fresh"), _med(r, "official_fresh")), 1.2, "<=")
    by_kind = {r["kind"]: r for r in micro}
    st = by_kind.get("strided")
    add("strided save >= 3x faster than official put, warm", div(_med(st, "official"), _med(st, "ours")), 3.0, ">=")
    add("strided save >= 3x faster than official put, fresh", div(_med(st, "official_fresh"), _med(st, "ours_fresh")), 3.0, ">=")
    loads = [_med(r, "ours", "load") for r in numeric + ([st] if st else [])]
    if loads and None not in loads:
        add("numeric load < 20 ms at every size (slowest)", max(loads), 0.020, "<=", "ms")
    s = by_kind.get("str")
    if s and "pickle" in s["results"]:
        loads_only = (s["results"]["pickle"].get("pickle_loads") or {}).get("median")
        add("str column load >= 10x faster than pickle.loads", div(loads_only, _med(s, "ours", "load")), 10.0, ">=")
    o = by_kind.get("object")
    add("object strings save <= official put", div(_med(o, "ours"), _med(o, "official")), 1.0, "<=")
    add("object strings load <= official get", div(_med(o, "ours", "load"), _med(o, "official", "load")), 1.0, "<=")
    p = data.get("pipelines", {}).get("contenders", {})

    def pm(key: str, what: str = "total") -> float | None:
        return (p.get(key, {}).get(what) or {}).get("median")

    add("pipeline <= 1.5x MemoryDataset assign", div(pm("ours"), pm("assign")), 1.5, "<=")
    add("pipeline <= 1.5x assign, long-lived vineyardd (not the default)", div(pm("ours_warm"), pm("assign")), 1.5, "<=")
    add("pipeline <= 0.4x default MemoryDataset", div(pm("ours"), pm("memory")), 0.4, "<=")
    add("pipeline with the allocator <= 1.2x assign (embedded vineyardd)", div(pm("ours_alloc"), pm("assign")), 1.2, "<=")
    # the condition for the allocator being on by default
    add("pipeline with the allocator no slower than without it", div(pm("ours_alloc"), pm("ours")), 1.0, "<=")
    add("ParallelRunner with the allocator no slower than without it", div(pm("ours_parallel_alloc"), pm("ours_parallel")), 1.0, "<=")
    one = data.get("pipelines", {}).get("bytes")
    ours_peak, alloc_peak = pm("ours", "peak_pss"), pm("ours_alloc", "peak_pss")
    if one and ours_peak and alloc_peak:  # the allocator's peak PSS at most the copying run's less one intermediate
        add("allocator peak PSS <= ours' less one intermediate", div(alloc_peak, ours_peak - one), 1.0, "<=")
    add("pipeline <= 0.7x official plugin (Kedro 0.18.14)", div(pm("ours"), pm("official")), 0.7, "<=")
    add("pipeline peak RSS <= 0.5x official plugin's", div(pm("ours", "maxrss"), pm("official", "maxrss")), 0.5, "<=")
    add("ParallelRunner >= 3x faster than Kedro's", div(pm("kedro_parallel"), pm("ours_parallel")), 3.0, ">=")
    add("in-place-edit pipeline <= default MemoryDataset", div(pm("ours_inplace"), pm("kedro_inplace")), 1.0, "<=")
    add("derive pipeline, allocator off, <= 1.2x MemoryDataset assign", div(pm("ours_derive"), pm("assign_derive")), 1.2, "<=")
    add(
        "derive pipeline with the allocator (the default) <= 1.2x assign",
        div(pm("ours_derive_alloc"), pm("assign_derive")),
        1.2,
        "<=",
    )
    sc = data.get("scaling", {})
    cols = [r for r in sc.get("columns", []) if r.get("columns") == 1000]
    if cols:
        add("1,000-column frame saved < 50 ms", _med(cols[0], "ours"), 0.050, "<=", "ms")
    for rec in sc.get("objects", []):
        pair = (rec["results"]["ours"].get("pair") or {}).get("median")
        add(f"{rec['label']}: save+load pair < 1 ms (median)", pair, 0.001, "<=", "ms")
    for rec in sc.get("store_size", []):
        if rec["others"]:
            add(
                f"save+load pair in a run's namespace with {rec['others']:,} other named objects <= 1.2x empty store",
                rec.get("vs_empty"),
                1.2,
                "<=",
            )
    return out


def mark_unsupported(records: list[dict]) -> None:
    for rec in records:
        for key, res in rec["results"].items():
            if "error" in res and (key, rec.get("kind")) in UNSUPPORTED:
                res["unsupported"] = True


def smoke_problems(data: dict) -> list[str]:
    """Contenders that did not run or did not give back equal results."""
    from benches._pipelines import ALLOC_IN_PROCESS

    problems = []
    missing_official = not data["config"]["official_python"]
    records = data.get("micro", []) + [r for k in ("bytes", "columns", "objects") for r in data.get("scaling", {}).get(k, [])]
    for rec in data.get("scaling", {}).get("store_size", []):
        if not rec["equal"]:
            problems.append(f"{rec['label']}: a load gave back a different value")
    for rec in records:
        for key, res in rec["results"].items():
            if res.get("unsupported") or (missing_official and key.startswith("official")):
                continue
            if "error" in res:
                problems.append(f"{rec['label']}: {key} did not run: {res['error'][:200]}")
            elif res.get("equal") is False:
                problems.append(f"{rec['label']}: {key} gave back a different value: {res.get('why', '')[:200]}")
    pipes = data.get("pipelines", {})
    for key, res in pipes.get("contenders", {}).items():
        if res["failed"] or not res["ran"]:
            problems.append(f"pipeline {key} failed: {res.get('error', '')[-300:]}")
        elif not res["equal"]:
            problems.append(f"pipeline {key} gave different results")
        elif key in ALLOC_IN_PROCESS and not (res.get("blob_allocs") or {}).get("median"):
            problems.append(f"pipeline {key} allocated no array in a blob")
    return problems


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from vineyard.contrib.kedro import _core

    from benches import _micro, _pipelines, _plot, _scaling

    t0 = time.perf_counter()
    data: dict[str, Any] = {
        "command": "python -m benches.run " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine(),
        "config": {
            "sizes": args.sizes,
            "mixed": args.mixed_b,
            "strings": args.strings_b,
            "strided": args.strided_b,
            "pipeline": args.pipeline_b,
            "parallel": args.parallel_b,
            "reps": args.reps,
            "big_reps": args.big_reps,
            "pipeline_reps": args.pipeline_reps,
            "tiny": args.tiny,
            "threads": core_threads(),
            "official_python": official_python(),
            "smoke": args.smoke,
            "core_built": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(os.path.getmtime(_core.__file__))),
        },  # fmt: skip
    }
    largest = max(args.sizes + [args.strided_b, args.mixed_b * 2, args.strings_b * 4])
    server = _core.Server(size=f"{(3 * largest) // MiB + 1024}Mi")
    ctx: dict[str, Any] = {"client": _core.Client(server.socket), "disk": tempfile.mkdtemp(prefix="tmp-", dir=out)}
    try:
        ctx["official"] = start_official(server.socket)
        if "micro" in args.parts:
            data["micro"] = _micro.run(args.sizes, args.mixed_b, args.strings_b, args.strided_b, args.reps, args.big_reps, ctx)
            mark_unsupported(data["micro"])
            gc.collect()
        if "scaling" in args.parts:
            data["scaling"] = _scaling.run(args.scaling_sizes, args.reps, args.tiny, ctx, args.columns, args.others)
        if ctx["official"]:
            ctx["official"].close()
            ctx["official"] = None
        ctx["client"].close()
        server.kill()
        server = None
        if "pipelines" in args.parts:
            seq = _pipelines.run(args.pipeline_b, args.pipeline_reps, ctx, groups=("sequential",))
            par = _pipelines.run(args.parallel_b, args.pipeline_reps, ctx, groups=("parallel",))
            inp = _pipelines.run(args.pipeline_b, args.pipeline_reps, ctx, groups=("inplace",))
            der = _pipelines.run(args.pipeline_b, args.pipeline_reps, ctx, groups=("derive",))
            for other in (par, inp, der):
                seq["contenders"].update(other["contenders"])
                seq["seconds"] += other["seconds"]
            data["pipelines"] = seq
        elif "derive" in args.parts:
            data["pipelines"] = _pipelines.run(args.pipeline_b, args.pipeline_reps, ctx, groups=("derive",))
    finally:
        if ctx.get("official"):
            ctx["official"].close()
        if server:
            server.kill()
        shutil.rmtree(ctx["disk"], ignore_errors=True)
    data["seconds"] = time.perf_counter() - t0
    data["targets"] = targets(data)
    print(_plot.tables(data))
    (out / "bench.json").write_text(json.dumps(data, indent=1, default=str))
    (out / "bench.md").write_text(_plot.markdown(data))
    png = None
    try:
        png = _plot.plot(data, out / "bench.png")
    except ImportError as e:
        log(f"no plot ({e}): pip install matplotlib")
    if args.publish:
        results = ROOT / "benches" / "results"
        results.mkdir(exist_ok=True)
        (results / "bench.json").write_text(json.dumps(data, indent=1, default=str))
        if png:
            shutil.copy(png, results / "bench.png")
    log(f"wrote {out}/bench.json, bench.md{', bench.png' if png else ''} in {data['seconds']:.0f} s")
    if args.smoke:
        problems = smoke_problems(data)
        for p in problems:
            log(f"SMOKE: {p}")
        return 1 if problems else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
