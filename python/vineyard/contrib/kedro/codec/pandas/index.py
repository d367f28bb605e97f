"""pandas Index layouts (protocol 11.4): an index is a frame's or a Series'
row labels, a frame's column labels, or a categorical's categories.

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

import numpy as np
import pandas as pd

from vineyard.contrib.kedro.errors import LayoutError

from ..buffers import Reader, Writer
from ..dispatch import decode, decoder
from ..dtypes import is_raw
from ..metadata import EXTRA, OURS, decode_label, exact_label, get_int, get_name, is_plain, jdump, jload, member, plain_label, put_name, typename
from ..numpy_codec import tensor_tree
from .arrays import decode_values, encode_values

INDEX = "vineyard::Index"
OUR_INDEX = OURS + "Index"
MULTI = OURS + "MultiIndex"


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
        tree = {"typename": OUR_INDEX, "nbytes": int(idx.nbytes), "value_": encode_values(idx._values, w, index_tree)}
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


__all__ = ["INDEX", "MULTI", "OUR_INDEX", "decode_index", "index_tree"]
