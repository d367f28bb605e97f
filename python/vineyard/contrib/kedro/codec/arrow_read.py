"""Readers of vineyard's Arrow layouts and of our Arrow IPC layout (see
`arrow_codec` for the layouts; importing `arrow_codec` registers them).

The core reads them with arrow-rs (``src/arrow/read.rs``): it checks the
metadata, builds arrays whose buffers are the mapped blobs, validates them
fully (buffer sizes, offsets, UTF-8 of string data) with the GIL released,
and restores the types a value had before it was stored. Here pyarrow only
imports the result through the Arrow PyCapsule interface: zero-copy, each
buffer holding its blob's lease.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from vineyard.contrib.kedro import _core
from vineyard.contrib.kedro.errors import LayoutError

from .buffers import Reader
from .dispatch import decoder
from .metadata import OURS

IPC = OURS + "ArrowIPC"
CHUNKED = OURS + "ChunkedArray"

#: Typenames of the array layouts (besides the NumericArray<T> and
#: BaseBinaryArray<T> families), the same list as ``src/arrow/read.rs``.
ARRAY_LAYOUTS = (
    "vineyard::BooleanArray",
    "vineyard::FixedSizeBinaryArray",
    "vineyard::NullArray",
    "vineyard::LargeListArray",
    "vineyard::LargeStringArray",
    "vineyard::LargeBinaryArray",
    "vineyard::StringArray",
    "vineyard::BinaryArray",
)


def to_pyarrow(value: Any) -> Any:
    """The pyarrow object of an `_core.ArrowValue` (zero-copy import)."""
    kind = value.kind
    try:
        if kind == "array":
            return pa.Array._import_from_c_capsule(*value.__arrow_c_array__())
        if kind == "record_batch":
            return pa.RecordBatch._import_from_c_capsule(*value.__arrow_c_array__())
        if kind == "table":
            return pa.RecordBatchReader._import_from_c_capsule(value.__arrow_c_stream__()).read_all()
        if kind == "chunked_array":
            t = pa.Field._import_from_c_capsule(value.__arrow_c_schema__()).type
            return pa.chunked_array([to_pyarrow(c) for c in value.chunks()], type=t)
        if kind == "schema":
            return pa.Schema._import_from_c_capsule(value.__arrow_c_schema__())
    except pa.ArrowException as e:
        raise LayoutError(f"pyarrow refused the Arrow {kind} read from vineyard: {e}") from None
    raise LayoutError(f"unknown Arrow value kind {kind!r}")


def decode_arrow_array(meta: dict, r: Reader) -> pa.Array:
    """A pyarrow array from any of vineyard's array layouts, in its stored
    types (strings and lists with 64-bit offsets)."""
    return to_pyarrow(_core.arrow_read_array(meta, r.blobs))


@decoder("vineyard::NumericArray<", "vineyard::BaseBinaryArray<", prefix=True)
@decoder(*ARRAY_LAYOUTS, "vineyard::RecordBatch", "vineyard::Table", "vineyard::SchemaProxy", CHUNKED, IPC)
def decode_arrow(meta: dict, r: Reader) -> Any:
    """An Arrow value: array, record batch, table (a polars DataFrame when
    one was saved), chunked array or schema."""
    value = to_pyarrow(_core.arrow_read(meta, r.blobs))
    if isinstance(value, pa.Table) and meta.get("from_polars") in (True, "true", 1):
        try:
            import polars as pl
        except ImportError:
            return value
        return pl.from_arrow(value, rechunk=False)
    return value


__all__ = ["ARRAY_LAYOUTS", "CHUNKED", "IPC", "decode_arrow", "decode_arrow_array", "to_pyarrow"]
