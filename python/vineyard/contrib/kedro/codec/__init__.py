"""Codecs: Python values <-> vineyard objects.

``put_value(client, value, name=None, persist=True) -> PutInfo`` stores any
value as one object (atomically: all of it or nothing) and
``get_value(client, id=None, name=None)`` rebuilds it. Values are laid out as
the official vineyard clients lay them out wherever such a layout exists, so
they read what we write (numeric DataFrames, Series, ndarrays, Arrow tables)
and we read what they write; everything else gets a layout of ours, named
``vineyard_kedro::...``. See each module for its layouts:

* `numpy_codec`: ndarray -> ``vineyard::Tensor<T>``
* `pandas` (a package): DataFrame, Series, Index, every column dtype
* `arrow_codec`: Table, RecordBatch, Array, ChunkedArray, polars DataFrame, and
  any object with ``__arrow_c_stream__`` or ``__arrow_c_array__`` (the Arrow
  PyCapsule interface)
* `python_codec`: None, bool, int, float, str, bytes, list, tuple, dict
* `pickle_codec`: anything else (pickle 5, buffers out of band)

Saves copy each buffer once (by the core, GIL released); loads of numeric
data are zero-copy views of the shared memory, kept mapped (and protected
from deletion) for as long as they are referenced. numpy views are writable:
each load maps its blobs privately (copy-on-write), so a write copies only
the pages it touches and the store and every other load keep the original,
like an edit of a copy. Arrow views stay read-only, as Arrow is.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from vineyard.contrib.kedro.errors import LayoutError, UnsupportedValueError, VineyardError

from .buffers import Reader, Writer
from .dispatch import decode
from .metadata import NeedsPickle
from .numpy_codec import encode_ndarray
from .pickle_codec import encode_pickle
from .python_codec import encode_python
from .signing import current_secret


class PutInfo(NamedTuple):
    """What `put_value` stored."""

    #: The new object's id.
    id: int
    #: Bytes copied into shared memory.
    nbytes: int
    #: The root object's typename.
    typename: str
    #: The object the name pointed to before (now deleted), if any.
    replaced: int | None = None
    #: Bytes not copied: buffers that were unchanged blobs this process
    #: loaded, which the new object references.
    referenced: int = 0


def _module(value: Any) -> str:
    return type(value).__module__ or ""


def encode(value: Any, w: Writer) -> dict:
    """The metadata tree of `value`; its buffers are appended to `w`."""
    t = type(value)
    if t is np.ndarray:
        return encode_ndarray(value, w)
    mod = _module(value)
    if mod.startswith("pandas"):
        from .pandas import encode_pandas

        tree = encode_pandas(value, w, encode)
        if tree is not None:
            return tree
    elif mod.startswith("pyarrow"):
        from .arrow_codec import encode_arrow

        tree = encode_arrow(value, w)
        if tree is not None:
            return tree
    elif mod.startswith("polars") and t.__name__ == "DataFrame":
        from .arrow_codec import encode_polars

        return encode_polars(value, w)
    if hasattr(t, "__arrow_c_stream__") or hasattr(t, "__arrow_c_array__"):
        from .arrow_codec import encode_arrow, from_capsules

        tree = encode_arrow(from_capsules(value), w)
        if tree is not None:
            return tree
    tree = encode_python(value, w, encode)
    if tree is not None:
        return tree
    return encode_pickle(value, w)


def encode_value(value: Any, secret: bytes | None = None) -> tuple[dict, Writer]:
    """The tree of `value` and its writer: its own layout, or, when part of
    it has no safe layout (`NeedsPickle`), the whole value as one pickle."""
    w = Writer(secret)
    try:
        return encode(value, w), w
    except NeedsPickle:
        w = Writer(secret)
        return encode_pickle(value, w), w


def typename_of(value: Any) -> str:
    """The typename `put_value` would give `value`'s root object (this builds
    the layout without storing anything, so it may pickle)."""
    return encode_value(value)[0]["typename"]


def put_value(client: Any, value: Any, name: str | None = None, persist: bool = True, private: bool = False) -> PutInfo:
    """Stores `value` as one object; `name` (if given) then points to it and
    the object it pointed to before is deleted. `private`: the name is in a
    run's private namespace (`Client.put`), so vineyardd is not asked what
    it pointed to.

    Raises `UnsupportedValueError` for values that cannot be stored, and the
    core's errors (`StoreFullError`, `ConnectError`, ...) when storing fails;
    a failed put leaves nothing behind and the name untouched.
    """
    try:
        tree, w = encode_value(value, current_secret())
    except (VineyardError, MemoryError):
        raise
    except RecursionError as e:
        raise UnsupportedValueError(f"cannot store a {type(value).__qualname__}: nested too deeply") from e
    object_id, replaced, nbytes, referenced = client.put(tree, w.buffers, name=name, persist=persist, private=private)
    return PutInfo(object_id, nbytes, tree["typename"], replaced, referenced)


def get_value(
    client: Any,
    id: int | None = None,  # noqa: A002 - the core's spelling
    name: str | None = None,
    allow_unsigned_pickle: bool = False,
    private: bool = False,
    saved: int | None = None,
) -> Any:
    """Loads the object with this id (or name) and rebuilds its value.

    Raises `ObjectNotFoundError` for an unknown id or name and `LayoutError`
    when the object's metadata does not describe a valid value of its type;
    with a secret configured, `UnsignedPickleError` (a `LayoutError`) for a
    pickle without a valid signature unless `allow_unsigned_pickle`.
    `private`: the name is in a run's private namespace, `saved` the id its
    producer recorded (`Client.get`).
    """
    secret = current_secret()
    _, meta, blobs = client.get(id=id, name=name, private=private, saved=saved)
    return decode_meta(meta, blobs, secret, allow_unsigned_pickle)


def decode_meta(meta: dict, blobs: dict, secret: bytes | None = None, allow_unsigned_pickle: bool = False) -> Any:
    """Rebuilds a value from a metadata tree and its mapped blobs; pickles
    are checked against `secret` (see `signing`)."""
    try:
        return decode(meta, Reader(blobs, secret, allow_unsigned_pickle))
    except (VineyardError, ImportError):
        raise
    except (KeyError, IndexError, TypeError, ValueError, OverflowError, AttributeError, RecursionError) as e:
        raise LayoutError(f"cannot rebuild a {meta.get('typename') if isinstance(meta, dict) else '?'}: {type(e).__name__}: {e}") from e


__all__ = ["PutInfo", "decode_meta", "encode", "encode_value", "get_value", "put_value", "typename_of"]
