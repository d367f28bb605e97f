"""pandas DataFrame and Series in vineyard's layouts (protocol 11.2, 11.3).

DataFrame (official layout; numeric frames are read by the official client)::

    {"typename": "vineyard::DataFrame", "columns_": "[\\"a\\", \\"b\\"]",
     "__values_-size": 2, "__values_-key-0": "\\"a\\"", "__values_-value-0": <column>, ...,
     "index_": <index>  (absent for the default RangeIndex(0..n)),
     "partition_index_row_": -1, "partition_index_column_": -1, "row_batch_index_": 0,
     "vineyard_kedro_nrows_": n,
     "vineyard_kedro_columns_": <index>   (only when the labels' JSON does not give them back),
     "vineyard_kedro_attrs_": <value>     (only when attrs is not empty),
     "vineyard_kedro_flags_": "{...}"     (only when allows_duplicate_labels is False)}

Each column is one member, laid out by `arrays` (numeric columns are
plain ``vineyard::Tensor<T>``). Loads assemble the frame from the column
arrays without copying or consolidating blocks. numpy-backed columns are
views of the load's private copy-on-write mappings, so in-place edits
(``df["a"] += 1``, ``.loc`` assignment, ``fillna(inplace=True)``) work as
on a copy and copy only the pages they write; Arrow-backed columns stay
immutable, as Arrow is.

Series: ``vineyard::Series`` ``{name, index_, value_, vineyard_kedro_attrs_}``.

Indexes are laid out by `index`, wide frames by `wide`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from vineyard.contrib.kedro.errors import LayoutError

from ..buffers import Reader, Writer
from ..dispatch import Encoder, decode, decoder
from ..metadata import EXTRA, decode_label, get_int, get_name, is_plain, jdump, jload, member, plain_label, put_name, typename
from .arrays import decode_values, encode_values
from .blocks import column_values, frame_from_blocks
from .index import INDEX, MULTI, OUR_INDEX, decode_index, index_tree

MAX_COLUMNS = 1 << 24

# -- DataFrame ------------------------------------------------------------------


def _labels_index(labels: list) -> pd.Index:
    """The column Index a reader builds from the plain JSON labels."""
    try:
        return pd.Index(labels, tupleize_cols=False)
    except (TypeError, ValueError):
        return pd.Index(labels, dtype=object, tupleize_cols=False)


def _needs_exact_columns(columns: pd.Index, labels: list) -> bool:
    if type(columns) is not pd.Index or columns.name is not None or not all(is_plain(x) for x in labels):
        return True
    rebuilt = _labels_index(labels)
    return type(rebuilt) is not pd.Index or rebuilt.dtype != columns.dtype or not rebuilt.equals(columns)


def put_extras(tree: dict, obj: Any, w: Writer, encode: Encoder) -> None:
    """attrs (any value: written by the codecs' `encode`, which the caller
    passes in) and flags."""
    if obj.attrs:
        tree[EXTRA + "attrs_"] = encode(dict(obj.attrs), w)
    if not obj.flags.allows_duplicate_labels:
        tree[EXTRA + "flags_"] = jdump({"allows_duplicate_labels": False})


def apply_extras(obj: Any, meta: dict, r: Reader) -> Any:
    if EXTRA + "attrs_" in meta:
        attrs = decode(member(meta, EXTRA + "attrs_"), r)
        if not isinstance(attrs, dict):
            raise LayoutError(f"{typename(meta)}: attrs must be a dict")
        obj.attrs.update(attrs)
    if EXTRA + "flags_" in meta:
        flags = jload(meta, EXTRA + "flags_")
        if isinstance(flags, dict) and flags.get("allows_duplicate_labels") is False:
            obj = obj.set_flags(allows_duplicate_labels=False)
    return obj


def dataframe_tree(df: pd.DataFrame, w: Writer, encode: Encoder) -> dict:
    columns = df.columns
    labels = columns.tolist()
    tree: dict[str, Any] = {
        "typename": "vineyard::DataFrame",
        "columns_": jdump([plain_label(x) for x in labels]),
        "__values_-size": len(labels),
        "partition_index_row_": -1,
        "partition_index_column_": -1,
        "row_batch_index_": 0,
        "nbytes": 0,
        EXTRA + "nrows_": len(df),
    }
    if _needs_exact_columns(columns, labels):
        tree[EXTRA + "columns_"] = index_tree(columns, w)
    nbytes = 0
    for i, (label, values) in enumerate(zip(labels, column_values(df))):
        tree[f"__values_-key-{i}"] = jdump(plain_label(label))
        col = encode_values(values, w, index_tree)
        nbytes += int(col.get("nbytes", 0))
        tree[f"__values_-value-{i}"] = col
    tree["nbytes"] = nbytes
    return frame_tail(tree, df, w, encode)


def frame_tail(tree: dict, df: pd.DataFrame, w: Writer, encode: Encoder) -> dict:
    """The index (left out for the default RangeIndex(0..n), which readers
    assume) and the extras, common to both DataFrame layouts."""
    idx = df.index
    if not (type(idx) is pd.RangeIndex and idx.start == 0 and idx.step == 1 and idx.name is None):
        tree["index_"] = index_tree(idx, w)
    put_extras(tree, df, w, encode)
    return tree


def _frame(arrays: list, index: pd.Index, columns: pd.Index) -> pd.DataFrame:
    blocks = []
    for i, a in enumerate(arrays):
        values = a.reshape(1, -1) if isinstance(a, np.ndarray) else a
        blocks.append((values, np.array([i], dtype=np.intp)))
    return frame_from_blocks(blocks, index, columns)


@decoder("vineyard::DataFrame")
def decode_dataframe(meta: dict, r: Reader) -> pd.DataFrame:
    n = get_int(meta, "__values_-size", hi=MAX_COLUMNS)
    labels: list = []
    arrays: list = []
    index = None
    for i in range(n):
        key = jload(meta, f"__values_-key-{i}")
        col = member(meta, f"__values_-value-{i}")
        if key == "index_" and typename(col) in (INDEX, OUR_INDEX, MULTI):  # the C++ DataFrame's index
            index = decode_index(col, r)
            continue
        labels.append(decode_label(key))
        arrays.append(decode_values(col, r))
    if "index_" in meta and isinstance(meta["index_"], dict):
        index = decode_index(meta["index_"], r)
    nrows = get_int(meta, EXTRA + "nrows_", None)
    if index is None:
        if nrows is None:
            nrows = len(arrays[0]) if arrays else 0
        index = pd.RangeIndex(nrows)
    for a, label in zip(arrays, labels):
        if len(a) != len(index):
            raise LayoutError(f"vineyard::DataFrame: column {label!r} has {len(a)} rows, the index {len(index)}")
    if EXTRA + "columns_" in meta:
        columns = decode_index(member(meta, EXTRA + "columns_"), r)
        if len(columns) != len(arrays):
            raise LayoutError(f"vineyard::DataFrame: {len(columns)} column labels for {len(arrays)} columns")
    else:
        columns = _labels_index(labels)
    df = _frame(arrays, index, columns)
    return apply_extras(df, meta, r)


# -- Series ---------------------------------------------------------------------


def series_tree(s: pd.Series, w: Writer, encode: Encoder) -> dict:
    values = encode_values(s._values, w, index_tree)
    tree = {"typename": "vineyard::Series", "nbytes": int(values.get("nbytes", 0)), "index_": index_tree(s.index, w), "value_": values}
    put_name(tree, s.name)
    put_extras(tree, s, w, encode)
    return tree


@decoder("vineyard::Series")
def decode_series(meta: dict, r: Reader) -> pd.Series:
    values = decode_values(member(meta, "value_"), r)
    index = decode_index(meta["index_"], r) if isinstance(meta.get("index_"), dict) else pd.RangeIndex(len(values))
    if len(index) != len(values):
        raise LayoutError(f"vineyard::Series: {len(values)} values but the index has {len(index)}")
    s = pd.Series(values, index=index, name=get_name(meta), dtype=values.dtype, copy=False)
    return apply_extras(s, meta, r)


__all__ = ["apply_extras", "dataframe_tree", "decode_dataframe", "decode_series", "frame_tail", "put_extras", "series_tree"]
