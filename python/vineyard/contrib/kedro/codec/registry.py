"""The machinery every codec shares: the buffer list of a put, safe views of
the blobs of a get, JSON helpers and the typename dispatch.

A codec's encoder turns a value into a *tree*: a dict in vineyard's metadata
layout whose dict-valued entries are members, ``{"__blob__": i}`` standing for
the i-th buffer of the put (see `Writer`). A decoder gets the metadata tree as
vineyardd returns it and a `Reader` over the mapped blobs, and must never read
outside a blob whatever the metadata says: every size, offset and shape is
checked before a view is made, and a violation raises `LayoutError`.
"""

from __future__ import annotations

import datetime
import json
import math
import pickle
from typing import Any, Callable

import numpy as np

from vineyard.contrib.kedro import _core
from vineyard.contrib.kedro.errors import LayoutError, UnsupportedValueError

from . import signing

#: The zero-length blob (never allocated; valid wherever a blob is).
EMPTY_BLOB_ID: int = _core.EMPTY_BLOB_ID
#: Prefix of the typenames of our own layouts.
OURS = "vineyard_kedro::"
#: Extra keys we add to vineyard's own layouts start with this (the official
#: readers ignore unknown keys).
EXTRA = "vineyard_kedro_"


# -- writing --------------------------------------------------------------------


class Writer:
    """The buffers of one put: objects that own their memory (bytes, numpy
    arrays, anything with the buffer protocol such as ``pyarrow.Buffer``).

    `Client.put` takes the objects themselves and holds them while it copies
    (with the GIL released): no address is taken here.
    """

    __slots__ = ("buffers", "secret")

    def __init__(self, secret: bytes | None = None) -> None:
        self.buffers: list[Any] = []
        #: The pickle-signing secret (see `signing`), None for unsigned pickles.
        self.secret = secret

    def pickle(self, tree: dict, payload: bytes) -> dict:
        """`tree` (a pickle object whose stream is `payload`) with the
        stream as its ``buffer_`` blob, signed when there is a secret."""
        tree["buffer_"] = self.bytes(payload)
        return signing.sign(tree, payload, self.secret)

    def _add(self, src: Any) -> dict:
        self.buffers.append(src)
        return {"__blob__": len(self.buffers) - 1}

    def empty(self) -> dict:
        """The empty blob."""
        return self._add(b"")

    def bytes(self, data: bytes) -> dict:
        """A blob holding `data` (bytes, or made bytes here)."""
        if type(data) is not bytes:
            data = bytes(data)
        return self._add(data)

    def memory(self, buf: Any) -> dict:
        """A blob holding the bytes of a buffer-protocol object (no copy
        here; a ``pyarrow.Buffer`` slice is a zero-copy view)."""
        return self._add(buf)

    def array(self, a: np.ndarray) -> dict:
        """A blob holding the elements of `a` in C (row-major) order.

        The core gathers contiguous arrays and arrays whose rows are
        contiguous (1-D strided columns, ``a[::k]`` of a C array, negative
        steps) straight from their memory, and makes anything else
        contiguous first.
        """
        return self._add(a)


# -- reading --------------------------------------------------------------------


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


class Reader:
    """The mapped blobs of one get, with bounds-checked views, and the
    policy for the pickles in it (see `signing`)."""

    __slots__ = ("allow_unsigned", "blobs", "secret")

    def __init__(self, blobs: dict, secret: bytes | None = None, allow_unsigned: bool = False) -> None:
        self.blobs = blobs
        self.secret = secret
        self.allow_unsigned = allow_unsigned

    def unpickle(self, meta: dict, stream: Any, buffers: Any = None) -> Any:
        """Unpickles the stream of the pickle object `meta`, once its
        signature is checked (the only way our decoders unpickle)."""
        signing.check(meta, stream, self.secret, self.allow_unsigned)
        return unpickle(stream, typename(meta), buffers)

    def blob(self, meta: Any, key: str) -> Any:
        """The `Blob` that member `key` of `meta` refers to."""
        member = meta.get(key) if isinstance(meta, dict) else None
        if not isinstance(member, dict):
            raise LayoutError(f"{typename(meta)}: member {key!r} is missing")
        bid = parse_id(member.get("id"), key)
        if not bid & EMPTY_BLOB_ID:
            raise LayoutError(f"{typename(meta)}: member {key!r} is not a blob")
        try:
            return self.blobs[bid]
        except KeyError:
            if bid == EMPTY_BLOB_ID:
                return _EMPTY
            raise LayoutError(f"{typename(meta)}: blob {key!r} (o{bid:016x}) is not local") from None

    def _range(self, meta: Any, key: str, nbytes: int | None, offset: int) -> tuple[Any, int]:
        """Blob `key` and the byte count wanted at `offset`, checked to lie inside it."""
        b = self.blob(meta, key)
        size = b.size
        if nbytes is None:
            nbytes = size - offset
        if offset < 0 or nbytes < 0 or offset + nbytes > size:
            raise LayoutError(
                f"{typename(meta)}: member {key!r} needs {nbytes} bytes at offset {offset} but the blob has {size}"
            )
        return b, nbytes

    def bytes_view(self, meta: Any, key: str, nbytes: int | None = None, offset: int = 0, *, shared: bool = False) -> np.ndarray:
        """A writable uint8 view of `nbytes` bytes at `offset` of blob `key`
        (the whole blob from `offset` when `nbytes` is None), in this load's
        private copy-on-write mapping of the blob. `shared`: a read-only view
        of the blob as stored instead, for bytes that are only read or
        copied (no mapping to make)."""
        b, nbytes = self._range(meta, key, nbytes, offset)
        if nbytes == 0:
            return np.empty(0, dtype=np.uint8)
        return np.asarray(b.shared_view() if shared else b)[offset : offset + nbytes]

    def view(self, meta: Any, key: str, dtype: np.dtype, count: int, offset: int = 0) -> np.ndarray:
        """A writable (copy-on-write) 1-D view of `count` items of `dtype` in blob `key`."""
        dtype = np.dtype(dtype)
        if dtype.hasobject:
            raise LayoutError(f"{typename(meta)}: refusing to view raw memory as {dtype}")
        raw = self.bytes_view(meta, key, count * dtype.itemsize, offset * dtype.itemsize)
        if count == 0:
            return np.empty(0, dtype=dtype)
        return raw.view(dtype)

    def arrow_buffer(self, meta: Any, key: str, nbytes: int | None = None, offset: int = 0):
        """A zero-copy `pyarrow.Buffer` over a blob (None for the empty blob),
        in the shared mapping: Arrow never writes to its buffers."""
        import pyarrow as pa

        b, nbytes = self._range(meta, key, nbytes, offset)
        if b.size == 0:
            return None
        # A read-only numpy view of the shared mapping, whose base (the
        # SharedView) holds the blob's lease: the Buffer keeps it alive.
        return pa.py_buffer(np.asarray(b.shared_view())[offset : offset + nbytes])


class _EmptyBlob:
    size = 0
    __array_interface__ = {"version": 3, "shape": (0,), "typestr": "|u1", "data": (0, True)}

    def shared_view(self) -> _EmptyBlob:
        return self

    def tobytes(self) -> bytes:
        return b""


_EMPTY = _EmptyBlob()


# -- metadata helpers -----------------------------------------------------------


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


def unpickle(data: Any, what: str, buffers: Any = None) -> Any:
    """pickle.loads on data read from the store: a corrupt stream (any error
    while unpickling) is a LayoutError naming `what`, never a stray exception.
    Decoders call `Reader.unpickle`, which checks the signature first."""
    try:
        return pickle.loads(data, fix_imports=True, buffers=buffers)
    except LayoutError:
        raise
    except Exception as e:  # noqa: BLE001 - hostile bytes can raise anything
        raise LayoutError(f"{what}: the pickle is corrupt: {type(e).__name__}: {e}") from e


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


# -- dispatch -------------------------------------------------------------------

Decoder = Callable[[dict, Reader], Any]
_DECODERS: dict[str, Decoder] = {}
_PREFIX_DECODERS: list[tuple[str, Decoder]] = []


def decoder(*typenames: str, prefix: bool = False) -> Callable[[Decoder], Decoder]:
    """Registers a decoder for exact typenames (or typename prefixes)."""

    def deco(fn: Decoder) -> Decoder:
        for t in typenames:
            if prefix:
                _PREFIX_DECODERS.append((t, fn))
                _PREFIX_DECODERS.sort(key=lambda p: -len(p[0]))
            else:
                _DECODERS[t] = fn
        return fn

    return deco


def decode(meta: Any, r: Reader) -> Any:
    """Rebuilds the value of a metadata tree."""
    t = typename(meta)
    fn = _DECODERS.get(t)
    if fn is None:
        for p, f in _PREFIX_DECODERS:
            if t.startswith(p):
                fn = f
                break
    if fn is None:
        if not _LOADED:
            _load_all()
            return decode(meta, r)
        raise LayoutError(f"no codec reads objects of type {t!r}")
    return fn(meta, r)


_LOADED: list[bool] = []


def _load_all() -> None:
    """Imports every codec (pandas and pyarrow only when first needed)."""
    import importlib

    for name in ("numpy_codec", "pickle_codec", "python_codec", "arrow_codec", "pandas"):
        try:
            importlib.import_module(f"{__package__}.{name}")
        except ImportError:  # pandas or pyarrow missing: their layouts are unreadable
            pass
    _LOADED.append(True)


Encoder = Callable[[Any, Writer], dict]


__all__ = [
    "EMPTY_BLOB_ID",
    "EXTRA",
    "Encoder",
    "OURS",
    "LayoutError",
    "NeedsPickle",
    "Reader",
    "UnsupportedValueError",
    "Writer",
    "decode",
    "decode_label",
    "decoder",
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
