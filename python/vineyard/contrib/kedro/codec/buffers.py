"""The blobs of one object: `Writer` collects the buffers of a put, `Reader`
makes bounds-checked views of the blobs of a get.

A codec's encoder turns a value into a *tree*: a dict in vineyard's metadata
layout whose dict-valued entries are members, ``{"__blob__": i}`` standing for
the i-th buffer of the put. A buffer is an object that owns its memory
(bytes, a numpy array, any buffer-protocol object such as a
``pyarrow.Buffer``): the core holds it while it copies, so no address is ever
taken in Python. A decoder gets the metadata tree as vineyardd returns it and
a `Reader` over the mapped blobs, and must never read outside a blob whatever
the metadata says: every size, offset and shape is checked before a view is
made, and a violation raises `LayoutError`. Views hold the blob (their numpy
base), which holds the blob's lease.
"""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np

from vineyard.contrib.kedro import _core
from vineyard.contrib.kedro.errors import LayoutError

from . import signing
from .metadata import parse_id, typename

#: The zero-length blob (never allocated; valid wherever a blob is).
EMPTY_BLOB_ID: int = _core.EMPTY_BLOB_ID


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


__all__ = ["EMPTY_BLOB_ID", "Reader", "Writer", "unpickle"]
