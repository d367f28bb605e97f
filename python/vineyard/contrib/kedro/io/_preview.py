"""kedro-viz previews: the first rows (and columns) of a stored value, as the
``TablePreview`` dict kedro-viz renders (pandas' ``to_dict(orient="split")``).

Only the rows shown are read. A frame whose columns are tensors (numeric,
or strings in Arrow buffers) with the default index is decoded from a copy of
its metadata that says it has `nrows` rows: the column buffers are mapped,
and only their first rows are turned into Python objects. Other values are
decoded by the codec, which maps numeric data and Arrow buffers without
copying, and then cut to the rows shown.
"""

from __future__ import annotations

import json
from typing import Any, NewType

#: kedro-viz picks the renderer by the name of preview()'s return annotation
#: (kedro_datasets._typing.TablePreview; not imported, to need no kedro-datasets).
TablePreview = NewType("TablePreview", dict)


def _sliced_tensor(meta: Any, k: int) -> dict | None:
    """A 1-D tensor's metadata saying it has `k` rows, or None if it is not
    one whose buffers allow that (raw numbers, strings in an Arrow array)."""
    if not isinstance(meta, dict):
        return None
    t = meta.get("typename", "")
    if not isinstance(t, str) or not t.startswith("vineyard::Tensor<") or "object" in t:
        return None
    try:
        shape = json.loads(meta.get("shape_", ""))
    except (TypeError, ValueError):
        return None
    if not (isinstance(shape, list) and len(shape) == 1 and isinstance(shape[0], int)):
        return None
    out = dict(meta, shape_=json.dumps([min(k, shape[0])]))
    buf = meta.get("buffer_")
    if isinstance(buf, dict) and buf.get("typename") != "vineyard::Blob":
        if not isinstance(buf.get("length_"), int):
            return None
        out["buffer_"] = dict(buf, length_=min(k, buf["length_"]), null_count_=-1)  # -1: Arrow counts them
    return out


#: Our extra keys of a DataFrame root that cutting the rows leaves valid (any
#: other one means a layout this cut does not know: decode whole, then cut).
#: `saved_as_` is the name a save recorded (see the core's `lease`).
_ROW_FREE_KEYS = ("vineyard_kedro_nrows_", "vineyard_kedro_columns_", "vineyard_kedro_saved_as_")


def sliced_meta(meta: dict, k: int) -> dict | None:
    """`meta` cut to its first `k` rows, for the layouts where that is a
    metadata edit; None for the others (decode whole, then cut)."""
    t = meta.get("typename")
    if t == "vineyard::Tensor<std::string>":
        return _sliced_tensor(meta, k)
    if t != "vineyard::DataFrame" or "index_" in meta:
        return None
    nrows = meta.get("vineyard_kedro_nrows_")
    if not isinstance(nrows, int) or any(key.startswith("vineyard_kedro_") and key not in _ROW_FREE_KEYS for key in meta):
        return None
    out = dict(meta, vineyard_kedro_nrows_=min(k, nrows))
    for key, value in meta.items():
        if key.startswith("__values_-key-") and value == '"index_"':
            return None
        if key.startswith("__values_-value-"):
            col = _sliced_tensor(value, k)
            if col is None:
                return None
            out[key] = col
    return out


def _cell(x: Any) -> Any:
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    item = getattr(x, "item", None)
    if callable(item):
        try:
            x = item()
        except (TypeError, ValueError):
            pass
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
    return str(x)


def _split(index: list, columns: list, rows: list) -> TablePreview:
    return TablePreview({"index": [_cell(i) for i in index], "columns": [_cell(c) for c in columns], "data": [[_cell(v) for v in r] for r in rows]})


def table_preview(value: Any, nrows: int, ncolumns: int) -> TablePreview:
    import numpy as np

    mod = type(value).__module__ or ""
    if mod.startswith("pandas"):
        import pandas as pd

        if isinstance(value, pd.Series):
            value = value.iloc[:nrows].to_frame()
        elif isinstance(value, pd.Index):
            value = value[:nrows].to_frame(index=False)
        if isinstance(value, pd.DataFrame):
            head = value.iloc[:nrows, :ncolumns]
            return _split(list(head.index), list(head.columns), [list(r) for r in head.itertuples(index=False, name=None)])
    if isinstance(value, np.ndarray):
        head = value[:nrows] if value.ndim else value.reshape(1)
        flat = head.reshape(len(head), -1)[:, :ncolumns] if head.ndim > 1 else head.reshape(-1, 1)
        columns = list(range(flat.shape[1])) if head.ndim > 1 else ["value"]
        return _split(list(range(len(flat))), columns, flat.tolist())
    if mod.startswith(("pyarrow", "polars")) and hasattr(value, "slice"):
        head = value.slice(0, nrows)
        names = list(getattr(head, "column_names", None) or getattr(head, "columns", []))[:ncolumns]
        if names:
            cols = [head[c].to_list() if hasattr(head[c], "to_list") else head[c].to_pylist() for c in names]
            return _split(list(range(len(head))), names, [list(r) for r in zip(*cols)])
        values = head.to_pylist() if hasattr(head, "to_pylist") else head.to_list()
        return _split(list(range(len(values))), ["value"], [[v] for v in values])
    if isinstance(value, (list, tuple)):
        return _split(list(range(min(nrows, len(value)))), ["value"], [[v] for v in value[:nrows]])
    if isinstance(value, dict):
        items = list(value.items())[:nrows]
        return _split([k for k, _ in items], ["value"], [[v] for _, v in items])
    text = repr(value)
    return _split([0], ["value"], [[text[:1000] + ("..." if len(text) > 1000 else "")]])
