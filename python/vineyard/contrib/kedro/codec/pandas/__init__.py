"""pandas values in vineyard's layouts, in modules that each build only on
the ones before them (no import cycles)::

    blocks   frames taken apart and put together without copies (pandas internals)
    arrays   one-dimensional data: a column, a Series' values, an Index's values
    index    Index, RangeIndex, MultiIndex (their values are `arrays` layouts)
    frame    DataFrame and Series (official layouts)
    wide     DataFrames wider than ``VINEYARD_KEDRO_WIDE_COLUMNS`` (one Tensor per block)

Where the layouts nest the other way (a categorical's categories are an
Index), the recursion goes through a parameter (`arrays.encode_values` takes
`index.index_tree`) or `dispatch` by typename (decoders).
Importing this package registers every pandas decoder.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ..buffers import Writer
from ..dispatch import Encoder
from .frame import dataframe_tree, decode_dataframe, decode_series, series_tree
from .index import decode_index, index_tree
from .wide import decode_wide, is_wide, wide_tree


def encode_pandas(value: Any, w: Writer, encode: Encoder) -> dict | None:
    """The tree of a DataFrame, Series or Index, else None; `encode` writes
    the values of ``attrs``."""
    t = type(value)
    if t is pd.DataFrame:
        if is_wide(value):
            return wide_tree(value, w, encode)
        return dataframe_tree(value, w, encode)
    if t is pd.Series:
        return series_tree(value, w, encode)
    if isinstance(value, pd.Index) and t.__module__.startswith("pandas"):
        return index_tree(value, w)
    return None


__all__ = ["decode_dataframe", "decode_index", "decode_series", "decode_wide", "encode_pandas", "index_tree"]
