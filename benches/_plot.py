"""Presentation of the figures: the printed tables, the README section
(markdown) and the plot (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benches import GiB, MiB, fmt_size, fmt_time, ratio_stats

LABEL = {
    "ours": "ours (warm store)",
    "ours_fresh": "ours (fresh store)",
    "floor": "floor: fresh shared mapping",
    "floor_prefault": "floor, prefaulted (MADV_POPULATE_WRITE)",
    "floor_warm": "memcpy into a warm mapping",
    "pickle": "pickle, /dev/shm",
    "parquet": "parquet, /dev/shm",
    "arrow": "Arrow IPC, /dev/shm",
    "official": "official client (warm)",
    "official_fresh": "official client (fresh)",
}
#: The ours-figure each contender is compared with (the same store state).
REF = {"ours_fresh": "ours_fresh", "floor": "ours_fresh", "floor_prefault": "ours_fresh", "official_fresh": "ours_fresh"}
COLORS = {
    "ours": "#1b7837", "ours_fresh": "#5aae61", "floor": "#404040", "floor_prefault": "#707070", "floor_warm": "#a0a0a0", "pickle": "#2166ac",
    "parquet": "#b2182b", "arrow": "#e08214", "official": "#762a83", "official_fresh": "#c2a5cf",
}  # fmt: skip


def _span(s: dict | None, f: Any = fmt_time) -> str:
    if not s or s.get("median") is None:
        return "n/a"
    return f"{f(s['median'])} ({f(s['min'])}-{f(s['max'])})" if len(s.get("runs", [])) > 1 else f(s["median"])


def _x(s: dict | None) -> str:
    if not s or s.get("median") is None:
        return ""
    return f"{s['median']:.2f}x ({s['min']:.2f}-{s['max']:.2f})" if len(s["runs"]) > 1 else f"{s['median']:.2f}x"


def _gb(n: float | None) -> str:
    return "n/a" if n is None else f"{n / 1e9:.2f} GB"


def _eq(res: dict) -> str:
    if res.get("unsupported"):
        return "cannot carry it"
    if "error" in res:
        return "failed"
    return {True: "yes" if res.get("exact", True) is not False else "values (dtype differs)", False: "NO", None: ""}[
        res.get("equal")
    ]


def micro_rows(rec: dict) -> list[list[str]]:
    rows = []
    for key, res in rec["results"].items():
        ref = rec["results"].get(REF.get(key, "ours"), {})
        rs = ratio_stats(res["save"]["runs"], ref.get("save", {}).get("runs", [])) if key != REF.get(key, "ours") else None
        rl = ratio_stats(res["load"]["runs"], ref.get("load", {}).get("runs", [])) if key != REF.get(key, "ours") else None
        err = res.get("error", "")
        rows.append(
            [
                LABEL[key],
                _span(res["save"]) if not err else "n/a",
                _span(res["load"]) if res["load"]["runs"] else "",
                _x(rs),
                _x(rl),
                _eq(res),
            ]
        )
    return rows


def _table(header: list[str], rows: list[list[str]], md: bool = False) -> str:
    if md:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    out = ["  ".join(c.ljust(w) for c, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
    return "\n".join(out + ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows])


MICRO_HEADER = ["case", "contender", "save", "load", "save x ours", "load x ours", "equal"]


def micro_table(records: list[dict], md: bool = False) -> str:
    rows = []
    for rec in records:
        first = f"{rec['label']} ({fmt_size(rec['bytes'])})"
        for i, r in enumerate(micro_rows(rec)):
            rows.append([first if i == 0 else "", *r])
    return _table(MICRO_HEADER, rows, md)


def _startstop(res: dict) -> str:
    """The embedded vineyardd's start and stop inside the run, per run."""
    a, b = (res.get("embedded_start") or {}).get("runs"), (res.get("embedded_stop") or {}).get("runs")
    if not a or not b:
        return ""
    return ", ".join(fmt_time(x + y) for x, y in zip(a, b))


def _overhead(res: dict) -> str:
    """Run time less the nodes' own time (median over runs): what the datasets cost, without
    the compute, whose page faults make it the noisiest part on a VM."""
    runs = [t - sum(n.values()) for t, n in zip((res.get("total") or {}).get("runs", []), res.get("nodes") or []) if n]
    return fmt_time(sorted(runs)[len(runs) // 2]) if runs else ""


def pipeline_table(p: dict, md: bool = False) -> str:
    cs = p["contenders"]
    header = [
        "pipeline",
        "contender",
        "run",
        "in save",
        "in load",
        "run - node compute",
        "vineyardd start+stop",
        "peak RSS",
        "peak PSS, tree+vineyardd",
        "run / ours",
        "memory / ours",
        "store peak / at end",
        "equal",
    ]
    rows = []
    for key, res in cs.items():
        ours = cs.get(res.get("ours") or ("ours_parallel" if res["parallel"] else "ours"), {})
        tot = res.get("total", {}).get("median")
        o_tot = ours.get("total", {}).get("median")
        mem = "peak_pss" if res["parallel"] else "maxrss"  # a parallel run's memory is in its workers
        rss = res.get("maxrss", {}).get("median")
        m, o_m = res.get(mem, {}).get("median"), ours.get(mem, {}).get("median")
        shape = "two-branch, ParallelRunner" if res["parallel"] else "3 nodes, sequential"
        if res.get("ours") == "ours_inplace":
            shape = "3 nodes, in-place edit"
        if res.get("ours") == "ours_derive":
            shape = "6 nodes, derive (assign, select, rename, dict)"
        peak, end = (res.get(k, {}).get("median") for k in ("store_peak", "store_end"))
        store = f"{_gb(peak)} / {_gb(end)}" if peak is not None else ""
        kind = f"{shape}, {fmt_size(res['bytes'])}"
        rows.append([
            kind, res["label"], _span(res.get("total")) if tot else "failed", _span(res.get("save")), _span(res.get("load")),
            _overhead(res),
            _startstop(res), _gb(rss), _gb(res.get("peak_pss", {}).get("median")), f"{tot / o_tot:.2f}x" if tot and o_tot else "",
            f"{m / o_m:.2f}x" if m and o_m else "", store, "yes" if res["equal"] else "NO",
        ])  # fmt: skip
    return _table(header, rows, md)


def scaling_tables(s: dict, md: bool = False) -> str:
    parts = []
    for name in ("bytes", "columns"):
        if s.get(name):
            parts.append(micro_table(s[name], md))
    rows = []
    for rec in s.get("objects", []):
        for key, res in rec["results"].items():
            rows.append(
                [
                    rec["label"],
                    key,
                    _span(res["pair"]) if "error" not in res else res["error"][:60],
                    "yes" if res.get("equal") else ("" if res.get("equal") is None else "NO"),
                ]
            )
    parts.append(_table(["objects", "contender", "save+load pair (median per repetition)", "equal"], rows, md))
    rows = [
        [
            f"{r['others']:,}",
            _span(r["pair"]),
            f"{r['pair_vs_empty']:.2f}x",
            _span(r["shared"]),
            f"{r['shared_vs_empty']:.2f}x",
            _span(r["get_name"]),
            f"{r['get_name_vs_empty']:.0f}x",
            "yes" if r["equal"] else "NO",
        ]
        for r in s.get("store_size", [])
        if "empty_pair" in r
    ]
    if rows:
        head = [
            "other named objects",
            "pair, run's namespace",
            "vs empty store",
            "pair, shared name",
            "vs empty store",
            "get_name alone",
            "vs empty store",
            "equal",
        ]
        parts.append(_table(head, rows, md))
    return "\n\n".join(parts)


def targets_table(targets: list[dict], md: bool = False) -> str:
    rows = [[t["target"], t["measured"], t["limit"], "met" if t["met"] else f"MISSED ({t['by']})"] for t in targets]
    return _table(["target", "measured", "limit", "verdict"], rows, md)


def tables(data: dict) -> str:
    m = data["machine"]
    out = [
        f"vineyard-kedro benchmarks: {m['nproc']} CPUs ({m['cpu']}), {m['ram_bytes'] / GiB:.0f} GiB RAM, {data['config']['threads']} copy threads, {data['seconds']:.0f} s"
    ]
    if data.get("micro"):
        out += [
            "",
            "MICRO: save and load of one DataFrame; median (min-max) of the repetitions; 'x ours' = contender / ours in the same repetition",
            micro_table(data["micro"]),
        ]
    if data.get("scaling"):
        out += ["", "SCALING", scaling_tables(data["scaling"])]
    if data.get("pipelines"):
        out += ["", "PIPELINES (Kedro 1.7 unless noted; run = runner.run)", pipeline_table(data["pipelines"])]
    if data.get("targets"):
        out += ["", "TARGETS (issue 7)", targets_table(data["targets"])]
    return "\n".join(out)


def _fault_note(data: dict) -> str:
    recs = [r for r in data.get("micro", []) if r["kind"] == "numeric" and "floor_warm" in r["results"]]
    if not recs:
        return ""
    r = max(recs, key=lambda r: r["bytes"])
    fresh, warm = (r["results"][k]["save"]["median"] * GiB / r["bytes"] for k in ("floor", "floor_warm"))
    return (
        f" On this machine a copy into fresh shared memory costs {fresh:.2f} s per GiB (page faults), a copy into "
        f"memory already touched {warm:.3f} s per GiB: every 'fresh store' figure, and every run that allocates, pays the former."
    )


def markdown(data: dict) -> str:
    m = data["machine"]
    out = [
        "## Benchmarks",
        "",
        f"Measured with `{data['command'].strip()}` ({data['seconds'] / 60:.1f} minutes) on {m['nproc']} CPUs ({m['cpu']}), "
        f"{m['ram_bytes'] / GiB:.0f} GiB RAM, Linux {m['kernel']}, Python {m['python']}. Every comparison ran in that one "
        "invocation, contenders alternated within each repetition; times are medians with (min-max). "
        "Ratios are the contender's time over ours in the same repetition (above 1: we are faster). "
        "Pipelines: peak RSS is the run's process (VmHWM, shared memory it touched included); memory / ours compares "
        "that, or for ParallelRunner the summed PSS of all its processes and vineyardd." + _fault_note(data),
        "",
        "![benchmarks](benches/results/bench.png)",
        "",
        "### Save and load of one DataFrame",
        "",
        micro_table(data.get("micro", []), md=True),
        "",
        "### Kedro pipelines",
        "",
        pipeline_table(data["pipelines"], md=True) if data.get("pipelines") else "",
        "",
        "### Scaling",
        "",
        scaling_tables(data["scaling"], md=True) if data.get("scaling") else "",
        "",
        "### Targets",
        "",
        targets_table(data.get("targets", []), md=True),
        "",
    ]
    return "\n".join(out)


# -- the plot ------------------------------------------------------------------------------


def _bars(ax: Any, records: list[dict], what: str, title: str, room: float = 1.0) -> None:
    keys = [k for k in LABEL if any(k in r["results"] and r["results"][k][what]["runs"] for r in records)]
    width = 0.8 / max(1, len(keys))
    for j, key in enumerate(keys):
        xs, ys, lo, hi = [], [], [], []
        for i, r in enumerate(records):
            s = r["results"].get(key, {}).get(what)
            if s and s["median"]:
                xs.append(i + (j - len(keys) / 2 + 0.5) * width)
                ys.append(s["median"])
                lo.append(s["median"] - s["min"])
                hi.append(s["max"] - s["median"])
        ax.bar(xs, ys, width, yerr=[lo, hi], label=LABEL[key], color=COLORS[key], capsize=1.5, error_kw={"lw": 0.6})
    short = {"numeric": "f64 x16", "strided": "strided", "mixed": "mixed", "str": "str col", "object": "object str"}
    ax.set_xticks(range(len(records)))
    ax.set_xticklabels([f"{short.get(r['kind'], r['kind'])}\n{fmt_size(r['bytes'])}" for r in records], fontsize=7)
    ax.set_yscale("log")
    lo, hi = ax.get_ylim()
    ax.set_ylim(lo, hi * room)  # room for a legend above the bars
    ax.set_ylabel("seconds (log)")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", which="both", alpha=0.25)


def plot(data: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(18, 9.5))
    micro = data.get("micro", [])
    if micro:
        _bars(axes[0][0], micro, "save", "save one DataFrame (lower is better)", room=12)
        axes[0][0].legend(fontsize=6.5, ncol=3, loc="upper center")
        _bars(axes[0][1], micro, "load", "load it back as pandas")
    s = data.get("scaling", {})
    ax = axes[0][2]
    points = [r for r in s.get("bytes", []) + [r for r in micro if r["kind"] == "numeric"]]
    points.sort(key=lambda r: r["bytes"])
    for key, what, style in (
        ("ours", "save", "-o"),
        ("ours_fresh", "save", "-s"),
        ("floor", "save", "--"),
        ("ours", "load", ":^"),
    ):
        xy = [
            (r["bytes"] / MiB, r["results"][key][what]["median"])
            for r in points
            if key in r["results"] and r["results"][key][what]["median"]
        ]
        if xy:
            ax.plot(*zip(*xy), style, color=COLORS[key], label=f"{LABEL[key]}: {what}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("frame size, MiB")
    ax.set_ylabel("seconds")
    ax.set_title("scaling with bytes (float64 x16)", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(which="both", alpha=0.25)
    ax = axes[1][0]
    cols = s.get("columns", [])
    for key in ("ours", "pickle", "parquet", "arrow", "official"):
        for what, style in (("save", "-o"), ("load", ":^")):
            xy = [
                (r["columns"], r["results"][key][what]["median"])
                for r in cols
                if key in r["results"] and r["results"][key][what]["median"]
            ]
            if xy:
                ax.plot(*zip(*xy), style, color=COLORS[key], label=f"{LABEL[key]}: {what}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("columns (x 1,000 rows)")
    ax.set_title("scaling with columns", fontsize=10)
    ax.legend(fontsize=6, ncol=2)
    ax.grid(which="both", alpha=0.25)
    _pipeline_bars(axes[1][1], data.get("pipelines", {}))
    _tiny_bars(axes[1][2], s.get("objects", []))
    m = data["machine"]
    fig.suptitle(f"vineyard-kedro benchmarks: {m['nproc']} CPUs ({m['cpu']}), {m['ram_bytes'] / GiB:.0f} GiB RAM", fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _pipeline_bars(ax: Any, p: dict) -> None:
    cs = p.get("contenders", {})
    names = [k for k, v in cs.items() if v.get("total")]
    for i, k in enumerate(names):
        v = cs[k]
        tot = v["total"]["median"]
        save = (v.get("save") or {}).get("median") or 0
        load = (v.get("load") or {}).get("median") or 0
        ax.barh(i, tot - save - load, color="#bbbbbb", label="compute and overhead" if i == 0 else None)
        ax.barh(i, save, left=tot - save - load, color="#d6604d", label="in save" if i == 0 else None)
        ax.barh(i, load, left=tot - load, color="#4393c3", label="in load" if i == 0 else None)
        mem = (v.get("peak_pss") if v["parallel"] else v.get("maxrss")) or {}
        what = "PSS of all processes" if v["parallel"] else "RSS"
        ax.text(tot, i, f"  {tot:.1f} s, {what} {_gb(mem.get('median'))}", va="center", fontsize=7)
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(
        [f"{cs[k]['label']}\n({fmt_size(cs[k]['bytes'])}{', 2 branches' if cs[k]['parallel'] else ''})" for k in names],
        fontsize=7,
    )
    ax.invert_yaxis()
    ax.set_xlim(0, max([cs[k]["total"]["median"] for k in names] or [1]) * 1.45)
    ax.set_xlabel("run time, s (median); label: and peak memory")
    ax.set_title("Kedro pipelines", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")


def _tiny_bars(ax: Any, objects: list[dict]) -> None:
    keys = ["ours", "pickle", "official"]
    for j, key in enumerate(keys):
        xs, ys = [], []
        for i, rec in enumerate(objects):
            s = rec["results"].get(key, {}).get("pair")
            if s and s["median"]:
                xs.append(i + (j - 1) * 0.27)
                ys.append(s["median"] * 1000)
        ax.bar(xs, ys, 0.27, color=COLORS[key], label=LABEL[key].split(" (")[0])
    ax.set_xticks(range(len(objects)))
    ax.set_xticklabels([r["label"] for r in objects], fontsize=8)
    ax.set_ylabel("ms per save+load pair (median)")
    ax.set_title("many tiny objects", fontsize=10)
    ax.legend(fontsize=7)
