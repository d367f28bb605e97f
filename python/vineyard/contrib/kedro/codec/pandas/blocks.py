"""Taking a DataFrame apart into its columns' data and putting one together
from blocks, both without copying or consolidating (pandas internals, kept in
one place).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

try:
    from pandas.api.internals import create_dataframe_from_blocks as _from_blocks
except ImportError:  # pandas < 3
    _from_blocks = None


def column_values(df: pd.DataFrame) -> list:
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


def frame_from_blocks(blocks: list, index: pd.Index, columns: pd.Index) -> pd.DataFrame:
    """A frame made of exactly these blocks (values, column positions): no copy, no consolidation."""
    if _from_blocks is not None:
        return _from_blocks(blocks, index=index, columns=columns)
    from pandas.core.internals import BlockManager
    from pandas.core.internals.api import make_block

    mgr = BlockManager([make_block(v, placement=p, ndim=2) for v, p in blocks], [columns, index])
    if hasattr(pd.DataFrame, "_from_mgr"):
        return pd.DataFrame._from_mgr(mgr, axes=mgr.axes)
    return pd.DataFrame(mgr)


__all__ = ["column_values", "frame_from_blocks"]
