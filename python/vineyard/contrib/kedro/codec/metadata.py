"""Metadata helpers every codec shares: typenames, JSON-encoded entries,
integers, members, shapes and object ids as vineyard's metadata writes them,
and labels (column names, index names, dict keys) in a form that JSON gives
back exactly.

Every helper checks what it reads and raises `LayoutError` naming the object
and key at fault: metadata comes from the store and is never trusted.
"""

from __future__ import annotations

import datetime
import json
import math
from typing import Any

import numpy as np

from vineyard.contrib.kedro import _core
from vineyard.contrib.kedro.errors import LayoutError

#: Prefix of the typenames of our own layouts.
OURS = "vineyard_kedro::"
#: Extra keys we add to vineyard's own layouts start with this (the official
#: readers ignore unknown keys).
EXTRA = "vineyard_kedro_"


def typename(meta: Any) -> str:
    t = meta.get("typename") if isinstance(meta, dict) else None
    return t if isinstance(t, str) else "<object without typename>"


def jdump(value: Any) -> str:
    """JSON text as the official Python client writes it (``"[2, 3]"``)."""
    return json.dumps(value)


def jload(meta: dict, key: str, default: Any = ...) -> Any:
    """Parses the JSON-encoded string at `key`."""
    if key not in meta:
        if default is ...:
            raise LayoutError(f"{typename(meta)}: key {key!r} is missing")
        return default
    text = meta[key]
    if not isinstance(text, str):
        raise LayoutError(f"{typename(meta)}: {key!r} should be a JSON string, not {type(text).__name__}")
    try:
        return json.loads(text)
    except ValueError as e:
        raise LayoutError(f"{typename(meta)}: {key!r} is not valid JSON: {e}") from None


def get_int(meta: dict, key: str, default: Any = ..., lo: int = 0, hi: int = 1 << 62) -> int:
    """An integer entry (a JSON number or a decimal string) within [lo, hi]."""
    if key not in meta:
        if default is ...:
            raise LayoutError(f"{typename(meta)}: key {key!r} is missing")
        return default
    v = meta[key]
    if isinstance(v, bool):
        raise LayoutError(f"{typename(meta)}: {key!r} should be an integer, not {v!r}")
    if isinstance(v, str):
        try:
            v = int(v)
        except ValueError:
            raise LayoutError(f"{typename(meta)}: {key!r} should be an integer, not {v!r}") from None
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if not isinstance(v, int) or not lo <= v <= hi:
        raise LayoutError(f"{typename(meta)}: {key!r} = {v!r} is out of range [{lo}, {hi}]")
    return v


def member(meta: dict, key: str) -> dict:
    m = meta.get(key)
    if not isinstance(m, dict):
        raise LayoutError(f"{typename(meta)}: member {key!r} is missing")
    return m


def shape_of(meta: dict, key: str = "shape_") -> tuple[int, ...]:
    text = meta.get(key)
    if isinstance(text, str) and len(text) < 24 and text[:1] == "[" and text[-1:] == "]" and text[1:-1].isdigit():
        n = int(text[1:-1])  # the common 1-D case, without the JSON parser
        if n < 1 << 62:
            return (n,)
    shape = jload(meta, key)
    if not isinstance(shape, list) or len(shape) > 64:
        raise LayoutError(f"{typename(meta)}: bad shape {shape!r}")
    for n in shape:
        if isinstance(n, bool) or not isinstance(n, int) or n < 0 or n >= 1 << 62:
            raise LayoutError(f"{typename(meta)}: bad shape {shape!r}")
    return tuple(shape)


def parse_id(text: Any, where: str = "") -> int:
    """An id as an int: an int from a JSON number, or text in the core's one
    id grammar (``_core.parse_id``: ``o`` and 1 to 16 hex digits)."""
    if isinstance(text, int) and not isinstance(text, bool):
        if 0 <= text < 1 << 64:
            return text
    elif isinstance(text, str):
        try:
            return _core.parse_id(text)
        except ValueError:
            pass
    raise LayoutError(f"{where or 'object'}: {text!r} is not an object id")



# -- labels (column names, index names, dict keys) ------------------------------
#
# Labels are stored twice when needed: as plain JSON in the keys the official
# readers use, and, when plain JSON would not give the same Python value back,
# exactly in a tagged form of ours: JSON scalars stand for themselves,
# {"t": [...]} is a tuple, {"f": "nan"} a non-finite float, {"n": [dtype,
# value]} a numpy scalar, {"ts": [ns, unit]} a tz-naive pandas Timestamp,
# {"dt": iso} / {"d": iso} a naive datetime / a date. Nothing else is a
# label of ours: a value holding any other label is stored whole as a pickle
# object (`NeedsPickle`), so a label never runs code when it is read.


class NeedsPickle(Exception):
    """Part of a value has no safe layout: store the whole value as a pickle."""


def plain_label(x: Any) -> Any:
    """A JSON-able stand-in for a label (what the official client would see)."""
    if x is None or type(x) in (str, int, bool):
        return x
    if type(x) is float:
        return x if math.isfinite(x) else str(x)
    if isinstance(x, tuple):
        return [plain_label(v) for v in x]
    if isinstance(x, (np.integer, np.floating, np.bool_)):
        return plain_label(x.item())
    return str(x)


def exact_label(x: Any) -> Any:
    """A JSON-able encoding of a label that `decode_label` turns back into an
    equal value of the same type; raises `NeedsPickle` for other labels."""
    t = type(x)
    if x is None or t in (str, int, bool):
        return x
    if t is float:
        return x if math.isfinite(x) else {"f": repr(x)}
    if t is tuple:
        return {"t": [exact_label(v) for v in x]}
    if isinstance(x, (np.integer, np.floating, np.bool_)) and t.__module__ == "numpy":
        v = x.item()
        return {"n": [x.dtype.str, v if not isinstance(v, float) or math.isfinite(v) else repr(v)]}
    if t is datetime.datetime and x.tzinfo is None:
        return {"dt": x.isoformat()}
    if t is datetime.date:
        return {"d": x.isoformat()}
    if t.__name__ == "Timestamp" and t.__module__.startswith("pandas") and x.tz is None:
        unit = getattr(x, "unit", "ns")
        return {"ts": [int(x.asm8.view("int64")), unit]}
    raise NeedsPickle(f"a label of type {t.__module__}.{t.__qualname__}")


_NUMPY_LABEL_KINDS = "biuf"


def _decode_tagged(x: dict) -> Any:
    if "t" in x and isinstance(x["t"], list):
        return tuple(decode_label(v) for v in x["t"])
    if "f" in x and x["f"] in ("nan", "inf", "-inf"):
        return float(x["f"])
    if "n" in x and isinstance(x["n"], list) and len(x["n"]) == 2 and isinstance(x["n"][0], str):
        dt = np.dtype(x["n"][0])
        if dt.kind not in _NUMPY_LABEL_KINDS:
            raise ValueError(f"not a numeric dtype: {dt}")
        v = x["n"][1]
        return dt.type(float(v) if isinstance(v, str) else v)
    if "dt" in x and isinstance(x["dt"], str):
        return datetime.datetime.fromisoformat(x["dt"])
    if "d" in x and isinstance(x["d"], str):
        return datetime.date.fromisoformat(x["d"])
    if "ts" in x and isinstance(x["ts"], list) and len(x["ts"]) == 2 and type(x["ts"][0]) is int:
        import pandas as pd

        unit = x["ts"][1]
        if unit not in ("s", "ms", "us", "ns"):
            raise ValueError(f"bad unit {unit!r}")
        return pd.Timestamp(np.datetime64(x["ts"][0], unit))
    if "p" in x:
        raise LayoutError(
            "a pickled label (written by an earlier vineyard-kedro): labels are never unpickled; save the value again"
        )
    raise LayoutError(f"bad label encoding {x!r}")


def decode_label(x: Any) -> Any:
    if isinstance(x, dict):
        try:
            return _decode_tagged(x)
        except LayoutError:
            raise
        except (TypeError, ValueError, OverflowError) as e:
            raise LayoutError(f"bad label encoding {x!r}: {e}") from None
    if isinstance(x, list):  # a tuple label written by the official client
        return tuple(decode_label(v) for v in x)
    return x


def is_plain(x: Any) -> bool:
    """True when JSON gives `x` back with its type (no exact form needed)."""
    return x is None or type(x) in (str, int, bool) or (type(x) is float and math.isfinite(x))


def put_name(tree: dict, name: Any, key: str = "name") -> None:
    """Writes a pandas name: plain JSON for the official reader, exact when needed."""
    tree[key] = jdump(plain_label(name))
    if not is_plain(name):
        tree[EXTRA + key + "_"] = jdump(exact_label(name))


def get_name(meta: dict, key: str = "name") -> Any:
    if EXTRA + key + "_" in meta:
        return decode_label(jload(meta, EXTRA + key + "_"))
    return decode_label(jload(meta, key, None))


__all__ = [
    "EXTRA",
    "OURS",
    "NeedsPickle",
    "decode_label",
    "exact_label",
    "get_int",
    "get_name",
    "is_plain",
    "jdump",
    "jload",
    "member",
    "parse_id",
    "plain_label",
    "put_name",
    "shape_of",
    "typename",
]
