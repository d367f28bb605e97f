"""pyarrow values in vineyard's Arrow layouts (protocol sections 11.5, 11.6),
and Arrow IPC for the types those layouts cannot carry.

Official layouts (read by the official clients) are used when every type is
one of: integers, float32, float64, bool, null, string/binary (stored widened
to 64-bit offsets: large_string/large_binary), fixed_size_binary, and
list/large_list (stored as large_list) of those. Buffers are stored sliced to
the array (offsets rebased to 0; ``offset_`` is only the bit offset < 8 that
lets a bitmap be copied from its first byte, 0 when there is no bitmap), so a
slice does not drag its parent's memory along; the exception is a slice of an
array loaded from vineyard that uses at least half of its blobs, which keeps
the blobs whole with ``offset_`` set, so that saving it references them
instead of copying. When the stored types differ from the value's (widened
offsets, list field names), ``vineyard_kedro_schema_`` holds the original
schema (Arrow IPC, base64) and the reader narrows back, sharing the data
buffers.

| value | layout |
|---|---|
| ``pa.Table`` | ``vineyard::Table`` ``{num_rows_, num_columns_, batch_num_, partitions_-size, schema_, partitions_-<i>: RecordBatch}`` |
| ``pa.RecordBatch`` | ``vineyard::RecordBatch`` ``{row_num_, column_num_, __columns_-size, schema_: SchemaProxy, __columns_-<i>: array}`` |
| ``pa.Array`` | ``vineyard::NumericArray<T>``, ``BooleanArray``, ``BaseBinaryArray<arrow::LargeStringArray>``, ``BaseBinaryArray<arrow::LargeBinaryArray>``, ``FixedSizeBinaryArray``, ``NullArray``, ``LargeListArray`` |
| ``pa.ChunkedArray`` | ``vineyard_kedro::ChunkedArray`` ``{type_: base64 schema, __chunks_-size, __chunks_-<i>: array}`` |
| anything else (dictionary, struct, dates, timestamps, decimals, views, ...) | ``vineyard_kedro::ArrowIPC`` ``{kind_: table/record_batch/array/chunked_array, size_, buffer_: Arrow IPC stream}`` |
| polars DataFrame | as its Arrow table, plus ``"from_polars": true`` (the official convention) |
| any other object with ``__arrow_c_stream__`` (DuckDB relations, arro3, nanoarrow, ...) | its stream read into a ``pa.Table`` (a ``pa.ChunkedArray`` for a stream of non-struct arrays), laid out as above |
| any other object with ``__arrow_c_array__`` | a ``pa.RecordBatch`` (a struct array is a record batch in the PyCapsule interface), else a ``pa.Array``, laid out as above |

The layouts are written and read by the core with arrow-rs (``src/arrow/``):
values cross into it through the Arrow PyCapsule interface, and the buffers
it hands back (`_core.ArrowBuffer`) own the memory a put reads. Loads are zero-copy:
every Arrow buffer is a view of a blob that keeps the mapping alive, and IPC
streams are read in place. Every array read is validated by the core
before it is returned.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from vineyard.contrib.kedro import _core
from vineyard.contrib.kedro.errors import LayoutError, UnsupportedValueError

from .buffers import Reader, Writer
from .dispatch import decoder
from .metadata import OURS


# -- read ------------------------------------------------------------------------

IPC = OURS + "ArrowIPC"
CHUNKED = OURS + "ChunkedArray"

#: Typenames of the array layouts (besides the NumericArray<T> and
#: BaseBinaryArray<T> families): the core's list, which its reader covers.
ARRAY_LAYOUTS = tuple(_core.ARROW_ARRAY_LAYOUTS)


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



# -- write -----------------------------------------------------------------------


def _written(kind: str, value: Any, w: Writer) -> dict:
    tree, buffers = _core.arrow_write(kind, value, len(w.buffers))
    w.buffers.extend(buffers)
    return tree


def array_tree(arr: pa.Array, w: Writer) -> dict:
    """The official layout of an array of a portable type, as other layouts
    embed it (`UnsupportedValueError` for any other type)."""
    return _written("layout", arr, w)


def encode_arrow(value: Any, w: Writer) -> dict | None:
    """The tree of a pyarrow Table/RecordBatch/Array/ChunkedArray, else None."""
    if isinstance(value, pa.Table):
        return _written("table", value, w)
    if isinstance(value, pa.RecordBatch):
        return _written("record_batch", value, w)
    if isinstance(value, pa.ChunkedArray):
        # A stream of one column: pyarrow exports chunked arrays as streams
        # only from version 16 on, tables from 14.
        return _written("chunked_array", pa.Table.from_arrays([value], names=["v"]), w)
    if isinstance(value, pa.Array):
        return _written("array", value, w)
    return None

def _streams_columns(value: Any) -> bool:
    """True unless the object says (``__arrow_c_schema__``) that its stream
    carries non-struct arrays: a stream is read once, so its kind is decided
    before it is opened."""
    if not hasattr(type(value), "__arrow_c_schema__"):
        return True
    return pa.types.is_struct(pa.DataType._import_from_c_capsule(value.__arrow_c_schema__()))


def from_capsules(value: Any) -> Any:
    """The pyarrow value of an object that speaks the Arrow PyCapsule
    interface (zero-copy: pyarrow imports the exported buffers), else None.
    A stream is read whole, as a save stores all of it."""
    t = type(value)
    try:
        if hasattr(t, "__arrow_c_stream__"):
            return pa.table(value) if _streams_columns(value) else pa.chunked_array(value)
        if hasattr(t, "__arrow_c_array__"):
            array = pa.array(value)
            if pa.types.is_struct(array.type) and array.null_count == 0:
                return pa.RecordBatch.from_struct_array(array)
            return array
    except (TypeError, ValueError, pa.ArrowException) as e:
        raise UnsupportedValueError(
            f"cannot store a {t.__module__}.{t.__qualname__} through the Arrow PyCapsule interface: {type(e).__name__}: {e}"
        ) from e
    return None


def encode_polars(df: Any, w: Writer) -> dict:
    table = df.to_arrow()
    tree = encode_arrow(table, w)
    tree["from_polars"] = True
    return tree


__all__ = [
    "ARRAY_LAYOUTS",
    "CHUNKED",
    "IPC",
    "array_tree",
    "decode_arrow",
    "decode_arrow_array",
    "encode_arrow",
    "encode_polars",
    "from_capsules",
    "to_pyarrow",
]
