"""kedro-viz previews: the first rows (and columns) of a stored value, as the
``TablePreview`` dict kedro-viz renders (pandas' ``to_dict(orient="split")``).

The value is decoded by the codec, which maps numeric columns, arrays and
Arrow buffers without copying: only the rows shown are read from shared
memory and copied into the preview.
"""

from __future__ import annotations

from typing import Any, NewType

#: kedro-viz picks the renderer by the name of preview()'s return annotation
#: (kedro_datasets._typing.TablePreview; not imported, to need no kedro-datasets).
TablePreview = NewType("TablePreview", dict)


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
