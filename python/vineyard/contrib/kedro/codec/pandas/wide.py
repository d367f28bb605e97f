"""Wide DataFrames: one Tensor per pandas block instead of one per column.

vineyardd spends ~0.1 ms of metadata work per object, so the official
layout (one Tensor object per column) costs ~200 ms for a 1,000-column frame
before a byte is copied. Frames wider than ``VINEYARD_KEDRO_WIDE_COLUMNS``
columns (default 256; 0 turns this layout off) are stored as::

    {"typename": "vineyard_kedro::WideDataFrame",
     "columns_": <index>, "vineyard_kedro_nrows_": n, "index_": <index> (absent for RangeIndex(0..n)),
     "__blocks_-size": k,
     "__blocks_-<i>": Tensor of the block, "__blocks_-locs-<i>": "[column positions]",
     "__blocks_-transposed-<i>": true when the Tensor is (rows, columns),
     "__columns_-size": m, "__columns_-<j>": <column layout>, "__columns_-locs": "[positions]",
     "vineyard_kedro_attrs_" / "vineyard_kedro_flags_" as for DataFrame}

Each numpy block of the frame is one Tensor, stored in whichever of its two
orientations is contiguous (a frame built from a 2-D array keeps that
array's layout), so the save is one copy of the block; extension columns use
the per-column layouts. Loads rebuild the same blocks zero-copy. The official
vineyard client cannot read this layout; narrower frames keep the official
one.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd

from vineyard.contrib.kedro.errors import LayoutError

from ..buffers import Reader, Writer
from ..dispatch import Encoder, decode, decoder
from ..dtypes import is_raw
from ..metadata import OURS, get_int, jdump, jload, member
from ..numpy_codec import tensor_tree
from .arrays import decode_values, encode_values
from .blocks import column_values, frame_from_blocks
from .frame import apply_extras, frame_tail
from .index import decode_index, index_tree

WIDE = OURS + "WideDataFrame"
DEFAULT_THRESHOLD = 256


def wide_threshold() -> int:
    """Frames with more columns than this use the wide layout (0: never)."""
    try:
        return max(0, int(os.environ.get("VINEYARD_KEDRO_WIDE_COLUMNS", DEFAULT_THRESHOLD)))
    except ValueError:
        return DEFAULT_THRESHOLD


def is_wide(df: pd.DataFrame) -> bool:
    limit = wide_threshold()
    return limit > 0 and df.shape[1] > limit


def wide_tree(df: pd.DataFrame, w: Writer, encode: Encoder) -> dict:
    tree: dict[str, Any] = {
        "typename": WIDE,
        "columns_": index_tree(df.columns, w),
        "vineyard_kedro_nrows_": len(df),
        "nbytes": 0,
    }
    nbytes = 0
    k = 0
    other_locs: list[int] = []
    others: list[Any] = []
    for block in df._mgr.blocks:
        locs = [int(x) for x in block.mgr_locs.as_array]
        values = block.values
        if isinstance(values, np.ndarray) and values.ndim == 2 and is_raw(values.dtype):
            transposed = not values.flags.c_contiguous and values.T.flags.c_contiguous
            tensor = tensor_tree(values.T if transposed else values, w)
            tree[f"__blocks_-{k}"] = tensor
            tree[f"__blocks_-locs-{k}"] = jdump(locs)
            tree[f"__blocks_-transposed-{k}"] = transposed
            nbytes += int(values.nbytes)
            k += 1
        else:
            columns = column_values(df)
            for loc in locs:
                other_locs.append(loc)
                others.append(columns[loc])
    tree["__blocks_-size"] = k
    tree["__columns_-size"] = len(others)
    tree["__columns_-locs"] = jdump(other_locs)
    for j, values in enumerate(others):
        col = encode_values(values, w, index_tree)
        nbytes += int(col.get("nbytes", 0))
        tree[f"__columns_-{j}"] = col
    tree["nbytes"] = nbytes
    return frame_tail(tree, df, w, encode)


def _locs(meta: dict, key: str, ncols: int) -> np.ndarray:
    locs = jload(meta, key)
    if not isinstance(locs, list) or not all(type(x) is int and 0 <= x < ncols for x in locs):
        raise LayoutError(f"{WIDE}: bad column positions under {key}")
    return np.asarray(locs, dtype=np.intp)


@decoder(WIDE)
def decode_wide(meta: dict, r: Reader) -> pd.DataFrame:
    columns = decode_index(member(meta, "columns_"), r)
    ncols = len(columns)
    nrows = get_int(meta, "vineyard_kedro_nrows_")
    index = decode_index(meta["index_"], r) if isinstance(meta.get("index_"), dict) else pd.RangeIndex(nrows)
    if len(index) != nrows:
        raise LayoutError(f"{WIDE}: {nrows} rows but the index has {len(index)}")
    blocks: list[tuple[Any, np.ndarray]] = []
    seen: set[int] = set()
    for i in range(get_int(meta, "__blocks_-size", hi=ncols)):
        values = decode(member(meta, f"__blocks_-{i}"), r)
        if not isinstance(values, np.ndarray) or values.ndim != 2:
            raise LayoutError(f"{WIDE}: block {i} is not a 2-D array")
        if meta.get(f"__blocks_-transposed-{i}") is True:
            values = values.T
        locs = _locs(meta, f"__blocks_-locs-{i}", ncols)
        if values.shape != (len(locs), nrows):
            raise LayoutError(f"{WIDE}: block {i} has shape {values.shape}, expected {(len(locs), nrows)}")
        blocks.append((values, locs))
        seen.update(locs.tolist())
    m = get_int(meta, "__columns_-size", hi=ncols)
    locs = _locs(meta, "__columns_-locs", ncols)
    if len(locs) != m:
        raise LayoutError(f"{WIDE}: {m} columns but {len(locs)} positions")
    for j in range(m):
        values = decode_values(member(meta, f"__columns_-{j}"), r)
        if len(values) != nrows:
            raise LayoutError(f"{WIDE}: column {j} has {len(values)} rows, expected {nrows}")
        blocks.append((values.reshape(1, -1) if isinstance(values, np.ndarray) else values, locs[j : j + 1]))
        seen.add(int(locs[j]))
    if len(seen) != ncols or sum(len(b[1]) for b in blocks) != ncols:
        raise LayoutError(f"{WIDE}: the blocks do not cover the {ncols} columns exactly once")
    df = frame_from_blocks(blocks, index, columns)
    return apply_extras(df, meta, r)


__all__ = ["decode_wide", "is_wide", "wide_threshold", "wide_tree"]
