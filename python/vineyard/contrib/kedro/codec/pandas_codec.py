"""pandas DataFrame, Series and Index in vineyard's layouts (protocol 11.2-11.4).

DataFrame (official layout; numeric frames are read by the official client)::

    {"typename": "vineyard::DataFrame", "columns_": "[\\"a\\", \\"b\\"]",
     "__values_-size": 2, "__values_-key-0": "\\"a\\"", "__values_-value-0": <column>, ...,
     "index_": <index>  (absent for the default RangeIndex(0..n)),
     "partition_index_row_": -1, "partition_index_column_": -1, "row_batch_index_": 0,
     "vineyard_kedro_nrows_": n,
     "vineyard_kedro_columns_": <index>   (only when the labels' JSON does not give them back),
     "vineyard_kedro_attrs_": <value>     (only when attrs is not empty),
     "vineyard_kedro_flags_": "{...}"     (only when allows_duplicate_labels is False)}

Each column is one member, laid out by `pandas_arrays` (numeric columns are
plain ``vineyard::Tensor<T>``). Loads assemble the frame from the column
arrays without copying or consolidating blocks. numpy-backed columns are
views of the load's private copy-on-write mappings, so in-place edits
(``df["a"] += 1``, ``.loc`` assignment, ``fillna(inplace=True)``) work as
on a copy and copy only the pages they write; Arrow-backed columns stay
immutable, as Arrow is.

Series: ``vineyard::Series`` ``{name, index_, value_, vineyard_kedro_attrs_}``.

Index layouts:

| index | layout |
|---|---|
| numeric, bool, naive datetime64/timedelta64 | ``vineyard::Index`` ``{name, value_type_, value_: Tensor}`` (+ ``vineyard_kedro_freq_``) |
| RangeIndex | ``vineyard::Index`` ``{name, value_type_: "int64", vineyard_kedro_range_: "[start, stop, step]", value_: vineyard::PickleBuffer of range(start, stop, step)}``: nothing is materialised, and the official reader unpickles the ``range`` into the right values |
| MultiIndex | ``vineyard_kedro::MultiIndex`` ``{names_, __levels_-size, __levels_-<i>: index, __codes_-<i>: Tensor}`` |
| anything else (strings, categorical, tz-aware, period, interval, object) | ``vineyard_kedro::Index`` ``{name, value_: column layout}`` (+ ``vineyard_kedro_freq_``) |

Names and labels are JSON for the official reader; when JSON would not give
them back exactly (tuples, timestamps, nan...), an exact encoding sits next to
them under a ``vineyard_kedro_`` key.
"""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pandas as pd

from .numpy_codec import is_raw, tensor_tree
from .pandas_arrays import decode_values, encode_values
from .pandas_wide import is_wide, wide_tree
from .registry import (
    EXTRA,
    OURS,
    LayoutError,
    Reader,
    Writer,
    decode,
    decode_label,
    decoder,
    exact_label,
    get_int,
    get_name,
    is_plain,
    jdump,
    jload,
    member,
    plain_label,
    put_name,
    typename,
)

INDEX = "vineyard::Index"
OUR_INDEX = OURS + "Index"
MULTI = OURS + "MultiIndex"
MAX_COLUMNS = 1 << 24

try:
    from pandas.api.internals import create_dataframe_from_blocks as _from_blocks
except ImportError:  # pandas < 3
    _from_blocks = None


# -- index ----------------------------------------------------------------------


def _freq(tree: dict, idx: pd.Index) -> None:
    freq = getattr(idx, "freq", None)
    if freq is not None and not isinstance(idx, pd.PeriodIndex):
        tree[EXTRA + "freq_"] = jdump(freq.freqstr)


def index_tree(idx: pd.Index, w: Writer) -> dict:
    if type(idx) is pd.RangeIndex:
        data = pickle.dumps(range(idx.start, idx.stop, idx.step), protocol=2)
        tree = {
            "typename": INDEX,
            "value_type_": "int64",
            "nbytes": 0,
            EXTRA + "range_": jdump([idx.start, idx.stop, idx.step]),
            "value_": w.pickle({"typename": "vineyard::PickleBuffer", "size_": len(data), "nbytes": len(data)}, data),
        }
        put_name(tree, idx.name)
        return tree
    if isinstance(idx, pd.MultiIndex):
        names = list(idx.names)
        tree = {"typename": MULTI, "names_": jdump([plain_label(n) for n in names]), "__levels_-size": idx.nlevels, "nbytes": 0}
        if not all(is_plain(n) for n in names):
            tree[EXTRA + "names_"] = jdump([exact_label(n) for n in names])
        for i, (level, codes) in enumerate(zip(idx.levels, idx.codes)):
            tree[f"__levels_-{i}"] = index_tree(level, w)
            tree[f"__codes_-{i}"] = tensor_tree(np.asarray(codes), w)
        return tree
    values = idx._values
    if type(values) in (pd.arrays.DatetimeArray, pd.arrays.TimedeltaArray) and getattr(values.dtype, "tz", None) is None:
        values = values._ndarray
    if type(idx) in (pd.Index, pd.DatetimeIndex, pd.TimedeltaIndex) and isinstance(values, np.ndarray) and is_raw(values.dtype):
        tree = {"typename": INDEX, "value_type_": values.dtype.name, "nbytes": int(values.nbytes), "value_": tensor_tree(values, w)}
    else:
        tree = {"typename": OUR_INDEX, "nbytes": int(idx.nbytes), "value_": encode_values(idx._values, w)}
    put_name(tree, idx.name)
    _freq(tree, idx)
    return tree


def _with_freq(idx: pd.Index, meta: dict) -> pd.Index:
    if EXTRA + "freq_" not in meta:
        return idx
    freq = jload(meta, EXTRA + "freq_")
    try:
        if isinstance(idx, pd.DatetimeIndex):
            return pd.DatetimeIndex(idx, freq=freq, name=idx.name)
        if isinstance(idx, pd.TimedeltaIndex):
            return pd.TimedeltaIndex(idx, freq=freq, name=idx.name)
    except (TypeError, ValueError) as e:
        raise LayoutError(f"{typename(meta)}: bad freq {freq!r}: {e}") from None
    return idx


@decoder(INDEX, OUR_INDEX, MULTI)
def decode_index(meta: dict, r: Reader) -> pd.Index:
    t = typename(meta)
    if t == MULTI:
        return _decode_multi(meta, r)
    name = get_name(meta)
    if EXTRA + "range_" in meta:
        rng = jload(meta, EXTRA + "range_")
        if not (isinstance(rng, list) and len(rng) == 3 and all(type(v) is int for v in rng) and rng[2] != 0):
            raise LayoutError(f"{t}: bad range {rng!r}")
        return pd.RangeIndex(*rng, name=name)
    values = decode_values(member(meta, "value_"), r)
    try:
        idx = pd.Index(values, dtype=values.dtype, name=name, copy=False)
    except (TypeError, ValueError) as e:
        raise LayoutError(f"{t}: {e}") from None
    return _with_freq(idx, meta)


def _decode_multi(meta: dict, r: Reader) -> pd.MultiIndex:
    n = get_int(meta, "__levels_-size", hi=1 << 16)
    levels = [decode_index(member(meta, f"__levels_-{i}"), r) for i in range(n)]
    codes = [decode(member(meta, f"__codes_-{i}"), r) for i in range(n)]
    if EXTRA + "names_" in meta:
        names = [decode_label(x) for x in jload(meta, EXTRA + "names_")]
    else:
        names = [decode_label(x) for x in jload(meta, "names_", [None] * n)]
    try:
        return pd.MultiIndex(levels=levels, codes=codes, names=names, verify_integrity=True)
    except (TypeError, ValueError, IndexError) as e:
        raise LayoutError(f"{MULTI}: {e}") from None


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


def _extras(tree: dict, obj: Any, w: Writer) -> None:
    from . import encode

    if obj.attrs:
        tree[EXTRA + "attrs_"] = encode(dict(obj.attrs), w)
    if not obj.flags.allows_duplicate_labels:
        tree[EXTRA + "flags_"] = jdump({"allows_duplicate_labels": False})


def _apply_extras(obj: Any, meta: dict, r: Reader) -> Any:
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


def _column_values(df: pd.DataFrame) -> list:
    """Each column's 1-D data without copying (views into 2-D blocks)."""
    out: list = [None] * df.shape[1]
    for block in df._mgr.blocks:
        locs = block.mgr_locs.as_array
        values = block.values
        if isinstance(values, np.ndarray) and values.ndim == 2:
            for j, loc in enumerate(locs):
                out[loc] = values[j]
        else:
            arr = values
            if getattr(arr, "ndim", 1) == 2:  # 2-D extension block (datetimes)
                for j, loc in enumerate(locs):
                    out[loc] = arr[j]
            else:
                out[locs[0]] = arr
    return out


def dataframe_tree(df: pd.DataFrame, w: Writer) -> dict:
    if is_wide(df):
        return wide_tree(df, w)
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
    for i, (label, values) in enumerate(zip(labels, _column_values(df))):
        tree[f"__values_-key-{i}"] = jdump(plain_label(label))
        col = encode_values(values, w)
        nbytes += int(col.get("nbytes", 0))
        tree[f"__values_-value-{i}"] = col
    tree["nbytes"] = nbytes
    return frame_tail(tree, df, w)


def frame_tail(tree: dict, df: pd.DataFrame, w: Writer) -> dict:
    """The index (left out for the default RangeIndex(0..n), which readers
    assume) and the extras, common to both DataFrame layouts."""
    idx = df.index
    if not (type(idx) is pd.RangeIndex and idx.start == 0 and idx.step == 1 and idx.name is None):
        tree["index_"] = index_tree(idx, w)
    _extras(tree, df, w)
    return tree


def _frame(arrays: list, index: pd.Index, columns: pd.Index) -> pd.DataFrame:
    blocks = []
    for i, a in enumerate(arrays):
        values = a.reshape(1, -1) if isinstance(a, np.ndarray) else a
        blocks.append((values, np.array([i], dtype=np.intp)))
    return _frame_from_blocks(blocks, index, columns)


def _frame_from_blocks(blocks: list, index: pd.Index, columns: pd.Index) -> pd.DataFrame:
    """A frame made of exactly these blocks (values, column positions): no copy, no consolidation."""
    if _from_blocks is not None:
        return _from_blocks(blocks, index=index, columns=columns)
    from pandas.core.internals import BlockManager
    from pandas.core.internals.api import make_block

    mgr = BlockManager([make_block(v, placement=p, ndim=2) for v, p in blocks], [columns, index])
    if hasattr(pd.DataFrame, "_from_mgr"):
        return pd.DataFrame._from_mgr(mgr, axes=mgr.axes)
    return pd.DataFrame(mgr)


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
    return _apply_extras(df, meta, r)


# -- Series ---------------------------------------------------------------------


def series_tree(s: pd.Series, w: Writer) -> dict:
    values = encode_values(s._values, w)
    tree = {"typename": "vineyard::Series", "nbytes": int(values.get("nbytes", 0)), "index_": index_tree(s.index, w), "value_": values}
    put_name(tree, s.name)
    _extras(tree, s, w)
    return tree


@decoder("vineyard::Series")
def decode_series(meta: dict, r: Reader) -> pd.Series:
    values = decode_values(member(meta, "value_"), r)
    index = decode_index(meta["index_"], r) if isinstance(meta.get("index_"), dict) else pd.RangeIndex(len(values))
    if len(index) != len(values):
        raise LayoutError(f"vineyard::Series: {len(values)} values but the index has {len(index)}")
    s = pd.Series(values, index=index, name=get_name(meta), dtype=values.dtype, copy=False)
    return _apply_extras(s, meta, r)


def encode_pandas(value: Any, w: Writer) -> dict | None:
    t = type(value)
    if t is pd.DataFrame:
        return dataframe_tree(value, w)
    if t is pd.Series:
        return series_tree(value, w)
    if isinstance(value, pd.Index) and t.__module__.startswith("pandas"):
        return index_tree(value, w)
    return None


__all__ = ["decode_dataframe", "decode_index", "decode_series", "encode_pandas", "index_tree"]
