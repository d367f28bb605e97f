"""Plain Python values, with their exact types.

| value | layout |
|---|---|
| ``None`` | ``vineyard_kedro::None`` (no fields) |
| ``bool`` | ``vineyard::Scalar<int>`` ``{value_: true, type_: "bool"}`` (official layout; it reads 1/0) |
| ``int`` | ``vineyard::Scalar<int>`` ``{value_: 7, type_: "int"}``; outside 64 bits ``value_`` is a decimal string |
| ``float`` | ``vineyard::Scalar<double>`` ``{value_: 1.5, type_: "float", vineyard_kedro_repr_: "1.5"}``; nan/inf as the strings "nan", "inf", "-inf" |
| ``str`` | ``vineyard::Scalar<std::string>`` ``{value_: "...", type_: "str"}`` up to 64 KiB; longer (or with lone surrogates) ``vineyard_kedro::Str`` ``{size_, buffer_: utf-8 blob}`` |
| ``bytes``, ``bytearray``, ``memoryview`` | ``vineyard_kedro::Bytes`` ``{type_, size_, buffer_: blob}`` (a memoryview comes back as a zero-copy read-only view) |
| ``list``, ``tuple`` holding big values | ``vineyard::Sequence`` ``{size_, __elements_-size, __elements_-<i>: member, type_: "list"/"tuple"}`` |
| ``dict`` holding big values | ``vineyard_kedro::Dict`` ``{size_, __values_-size, __values_-key-<i>: JSON label, __values_-value-<i>: member}`` |

| ``list``, ``tuple``, ``dict`` of small plain values | ``vineyard_kedro::Plain`` ``{value_: tagged JSON}`` (python_plain.py) |

A container holds members only when some item is big (an array, a frame, an
Arrow object, a long string or bytes), so those items keep their zero-copy
layouts; at most 256 items and 8 levels deep. A container of small plain
values (the scalars above, short str and bytes, such containers) is one
metadata node (a member object per item would cost more than it saves);
other small containers (holding e.g. a datetime) are pickled as one blob.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from vineyard.contrib.kedro.errors import LayoutError

from .buffers import Reader, Writer
from .dispatch import decode, decoder
from .metadata import OURS, decode_label, exact_label, get_int, jdump, jload, member, parse_id
from .python_plain import encode_plain, is_plain

NONE = OURS + "None"
BYTES = OURS + "Bytes"
STR = OURS + "Str"
DICT = OURS + "Dict"
SCALAR_INT = "vineyard::Scalar<int>"
SCALAR_DOUBLE = "vineyard::Scalar<double>"
SCALAR_STR = "vineyard::Scalar<std::string>"
SEQUENCE = "vineyard::Sequence"

MAX_META_STR = 1 << 16
BIG = 1 << 16
MAX_ITEMS = 256
MAX_DEPTH = 8
_I64 = 1 << 63


_BIG_CLASSES = frozenset(
    {"ndarray", "DataFrame", "Series", "Index", "ExtensionArray", "Array", "ChunkedArray", "Table", "RecordBatch"}
)


def _is_big_module(t: type) -> bool:
    m = t.__module__ or ""
    if not m.startswith(("numpy", "pandas", "pyarrow", "polars")):
        return False
    return any(c.__name__ in _BIG_CLASSES for c in t.__mro__)


def is_big(value: Any, depth: int = 0) -> bool:
    """True when `value` deserves its own member object in a container."""
    t = type(value)
    if t in (str, bytes, bytearray):
        return len(value) >= BIG
    if t is memoryview:
        return value.nbytes >= BIG
    if t in (list, tuple, dict):
        return as_members(value, depth + 1)
    if _is_big_module(t):
        return t.__name__ != "ndarray" or value.nbytes >= 1024
    return False


def as_members(value: Any, depth: int = 0) -> bool:
    """True when a list/tuple/dict is stored as members (not one pickle)."""
    if depth >= MAX_DEPTH or len(value) > MAX_ITEMS:
        return False
    items = value.values() if type(value) is dict else value
    return any(is_big(v, depth) for v in items)


def encode_python(value: Any, w: Writer, encode: Callable[[Any, Writer], dict]) -> dict | None:
    """The tree of a plain Python value, or None if it is not one of ours."""
    t = type(value)
    if value is None:
        return {"typename": NONE}
    if t is bool:
        return {"typename": SCALAR_INT, "value_": value, "type_": "bool", "nbytes": 0}
    if t is int:
        if -_I64 <= value < _I64:
            return {"typename": SCALAR_INT, "value_": value, "type_": "int", "nbytes": 0}
        try:
            text = str(value)
        except ValueError:  # more digits than sys.get_int_max_str_digits()
            return None
        return {"typename": SCALAR_INT, "value_": text, "type_": "int", "nbytes": 0}
    if t is float:
        # The JSON number is for other readers; the core's JSON parser may be
        # 1 ulp off, so the exact value travels as its repr too.
        v: Any = value if math.isfinite(value) else repr(value)
        return {"typename": SCALAR_DOUBLE, "value_": v, "type_": "float", "nbytes": 0, "vineyard_kedro_repr_": repr(value)}
    if t is str:
        if len(value) <= MAX_META_STR:
            try:
                value.encode("utf-8")
                return {"typename": SCALAR_STR, "value_": value, "type_": "str", "nbytes": 0}
            except UnicodeEncodeError:
                pass
        data = value.encode("utf-8", "surrogatepass")
        return {"typename": STR, "size_": len(data), "nbytes": len(data), "buffer_": w.bytes(data)}
    if t is bytes:
        return {"typename": BYTES, "type_": "bytes", "size_": len(value), "nbytes": len(value), "buffer_": w.bytes(value)}
    if t is bytearray or t is memoryview:
        mv = memoryview(value)
        if not mv.contiguous:
            mv = memoryview(mv.tobytes())
        tree = {"typename": BYTES, "type_": t.__name__, "size_": mv.nbytes, "nbytes": mv.nbytes, "buffer_": w.memory(mv.cast("B"))}
        if t is memoryview and (mv.format != "B" or mv.ndim != 1):
            tree["format_"] = mv.format
            tree["shape_"] = jdump(list(mv.shape))
        return tree
    if t in (list, tuple, dict) and not as_members(value) and is_plain(value):
        return encode_plain(value)
    if (t is list or t is tuple) and as_members(value):
        tree = {"typename": SEQUENCE, "type_": t.__name__, "size_": len(value), "__elements_-size": len(value), "nbytes": 0}
        for i, item in enumerate(value):
            tree[f"__elements_-{i}"] = encode(item, w)
        return tree
    if t is dict and as_members(value):
        tree = {"typename": DICT, "size_": len(value), "__values_-size": len(value), "nbytes": 0}
        for i, (k, item) in enumerate(value.items()):
            tree[f"__values_-key-{i}"] = jdump(exact_label(k))
            tree[f"__values_-value-{i}"] = encode(item, w)
        return tree
    return None


@decoder(NONE)
def _none(meta: dict, r: Reader) -> None:
    return None


@decoder("vineyard::Scalar<", prefix=True)
def decode_scalar(meta: dict, r: Reader) -> Any:
    t = meta.get("typename")
    kind = meta.get("type_")
    v = meta.get("value_")
    try:
        if kind == "bool":
            if isinstance(v, bool):
                return v
            return bool(int(v))
        if t == SCALAR_STR or kind == "str":
            if not isinstance(v, str):
                raise LayoutError(f"{t}: value_ is not a string")
            return v
        if t == SCALAR_INT or kind == "int" or t in ("vineyard::Scalar<int64>", "vineyard::Scalar<int32>", "vineyard::Scalar<int64_t>"):
            if isinstance(v, float) or isinstance(v, bool):
                raise LayoutError(f"{t}: value_ {v!r} is not an integer")
            return int(v)
        if t in (SCALAR_DOUBLE, "vineyard::Scalar<float>") or kind == "float":
            if isinstance(meta.get("vineyard_kedro_repr_"), str):
                return float(meta["vineyard_kedro_repr_"])
            if isinstance(v, bool) or not isinstance(v, (int, float, str)):
                raise LayoutError(f"{t}: value_ {v!r} is not a number")
            return float(v)
    except (TypeError, ValueError) as e:
        raise LayoutError(f"{t}: bad value_ {v!r}: {e}") from None
    raise LayoutError(f"{t}: unsupported scalar type")


@decoder(STR)
def decode_str(meta: dict, r: Reader) -> str:
    n = get_int(meta, "size_")
    view = r.bytes_view(meta, "buffer_", n, shared=True)
    try:
        return view.tobytes().decode("utf-8", "surrogatepass")
    except UnicodeDecodeError as e:
        raise LayoutError(f"{STR}: not UTF-8: {e}") from None


@decoder(BYTES)
def decode_bytes(meta: dict, r: Reader) -> Any:
    n = get_int(meta, "size_")
    view = r.bytes_view(meta, "buffer_", n, shared=True)
    kind = meta.get("type_", "bytes")
    if kind == "bytes":
        return view.tobytes()
    if kind == "bytearray":
        return bytearray(view)
    if kind == "memoryview":
        mv = memoryview(view)
        if "format_" in meta:
            fmt = meta["format_"]
            shape = jload(meta, "shape_")
            if not isinstance(fmt, str) or not isinstance(shape, list):
                raise LayoutError(f"{BYTES}: bad memoryview format")
            try:
                mv = mv.cast(fmt, shape)
            except (TypeError, ValueError) as e:
                raise LayoutError(f"{BYTES}: bad memoryview format: {e}") from None
        return mv
    raise LayoutError(f"{BYTES}: unknown type_ {kind!r}")


@decoder("vineyard::Blob")
def decode_bare_blob(meta: dict, r: Reader) -> bytes:
    """The official client stores ``bytes`` as a bare blob (its id is the object id)."""
    try:
        blob = r.blobs[parse_id(meta.get("id"), "blob")]
    except KeyError:
        raise LayoutError("vineyard::Blob: an object that is a bare blob was not mapped by the core (its get maps member blobs only)") from None
    return blob.tobytes()


@decoder(SEQUENCE)
def decode_sequence(meta: dict, r: Reader) -> Any:
    n = get_int(meta, "__elements_-size", hi=1 << 24)
    items = [decode(member(meta, f"__elements_-{i}"), r) for i in range(n)]
    return items if meta.get("type_") == "list" else tuple(items)


@decoder(DICT)
def decode_dict(meta: dict, r: Reader) -> dict:
    n = get_int(meta, "__values_-size", hi=1 << 24)
    out = {}
    for i in range(n):
        key = decode_label(jload(meta, f"__values_-key-{i}"))
        out[key] = decode(member(meta, f"__values_-value-{i}"), r)
    return out


__all__ = ["as_members", "encode_python", "is_big"]
