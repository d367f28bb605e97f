"""The derive pipeline: nodes that return what they were given, a little changed.

``make -> raw`` (float64 frame of ``--pipeline-size``, 16 columns), then
``add_ratio(raw)`` adds one column (``assign``), ``select_columns`` keeps 8 of
the 16 and the new one, ``rename_columns`` renames them and ``bundle`` puts the
frame in a dict with its row count; ``summarize_bundle`` sums it. Contenders:
Kedro's default MemoryDataset (copies on save and load, ``kedro_derive``),
``MemoryDataset(copy_mode="assign")`` (references passed: the floor,
``assign_derive``), ours with referencing turned off
(``VINEYARD_KEDRO_REFERENCE=0``: every save copies, ``ours_derive_copy``) and
ours (a save references the loaded columns it passes on and copies only the
new one, ``ours_derive``) and ours with the NEP 49 allocator (``raw`` and the
new column are born in vineyard blobs, so no save copies at all,
``ours_derive_alloc``). For ours the store's memory is sampled after every
save: its peak, and what it holds after the last save (before the run's
namespace is deleted).

Imported by ``benches._pipelines`` (its child process builds these runs).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import pandas as pd

DERIVE = ["kedro_derive", "assign_derive", "ours_derive_copy", "ours_derive", "ours_derive_alloc"]
LABELS = {
    "kedro_derive": "derive: MemoryDataset (default copy)",
    "assign_derive": "derive: MemoryDataset copy_mode=assign",
    "ours_derive_copy": "derive: ours, referencing off (copies)",
    "ours_derive": "derive: ours (references loaded columns)",
    "ours_derive_alloc": "derive: ours with the allocator (columns born in blobs)",
}
INTERMEDIATES = ("raw", "with_ratio", "narrow", "renamed", "bundle")


def make_raw() -> pd.DataFrame:
    n = max(1, int(os.environ["BENCH_PIPE_BYTES"]) // 8 // 16)
    rng = np.random.default_rng(0)
    return pd.DataFrame({f"c{i}": rng.random(n) for i in range(16)}, copy=False)


def add_ratio(raw: pd.DataFrame) -> pd.DataFrame:
    return raw.assign(ratio=raw["c0"] / (raw["c1"] + 1.0))


def select_columns(with_ratio: pd.DataFrame) -> pd.DataFrame:
    return with_ratio[[f"c{i}" for i in range(8)] + ["ratio"]]


def rename_columns(narrow: pd.DataFrame) -> pd.DataFrame:
    return narrow.rename(columns=str.upper)


def bundle(renamed: pd.DataFrame) -> dict:
    return {"features": renamed, "rows": len(renamed)}


def summarize_bundle(bundle: dict) -> list[float]:
    df = bundle["features"]
    sums = [float(df[c].to_numpy().sum()) for c in df.columns] + [float(bundle["rows"])]
    with open(os.path.join(os.environ["BENCH_RESULT_DIR"], "sums_derive.json"), "w") as f:
        json.dump(sums, f)
    return sums


def pipeline() -> Any:
    from kedro.pipeline import node, pipeline

    return pipeline([
        node(make_raw, None, "raw", name="make"),
        node(add_ratio, "raw", "with_ratio", name="add_ratio"),
        node(select_columns, "with_ratio", "narrow", name="select_columns"),
        node(rename_columns, "narrow", "renamed", name="rename_columns"),
        node(bundle, "renamed", "bundle", name="bundle"),
        node(summarize_bundle, "bundle", "sums_derive", name="summarize_bundle"),
    ])  # fmt: skip


def catalog(contender: str) -> Any:
    from kedro.io import DataCatalog, MemoryDataset

    if contender == "assign_derive":
        return DataCatalog({n: MemoryDataset(copy_mode="assign") for n in INTERMEDIATES})
    if contender == "ours_derive_copy":
        os.environ["VINEYARD_KEDRO_REFERENCE"] = "0"
    return DataCatalog()


def store_hook(acc: dict) -> Any:
    """A hook that samples the embedded store's memory after every save."""
    from kedro.framework.hooks import hook_impl

    from vineyard.contrib.kedro import _connection

    class StoreMemory:
        @hook_impl
        def after_dataset_saved(self, dataset_name: str) -> None:
            socket = _connection.embedded_socket()
            if socket is None:
                return
            used = _connection.client_for(socket).status()["memory_usage"]
            acc["store_peak"] = max(acc.get("store_peak", 0), used)
            acc["store_end"] = used

    return StoreMemory()
