"""pyarrow values in vineyard's Arrow layouts (protocol sections 11.5, 11.6),
and Arrow IPC for the types those layouts cannot carry.

Official layouts (read by the official clients) are used when every type is
one of: integers, float32, float64, bool, null, string/binary (stored widened
to 64-bit offsets: large_string/large_binary), fixed_size_binary, and
list/large_list (stored as large_list) of those. Buffers are stored sliced to
the array (offsets rebased to 0; ``offset_`` is only the bit offset < 8 that
lets a bitmap be copied from its first byte, 0 when there is no bitmap), so a
slice never drags its parent's memory along. When the stored types differ from the value's (widened offsets,
list field names), ``vineyard_kedro_schema_`` holds the original schema (Arrow
IPC, base64) and the reader casts back, sharing the data buffers.

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

Loads are zero-copy: every Arrow buffer is a view of a blob that keeps the
mapping alive, and IPC streams are read in place. Every array read is
validated by the core (arrow-rs) before it is returned (`arrow_read`).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa

from vineyard.contrib.kedro.errors import UnsupportedValueError

from .arrow_read import decode_arrow, decode_arrow_array
from .arrow_types import CHUNKED, IPC, LARGE_BINARY, LARGE_STRING, portable, schema_b64, type_b64, widen, widen_schema
from .buffers import Writer
from .metadata import EXTRA


# -- encode arrays --------------------------------------------------------------


def _bits(n: int) -> int:
    return (n + 7) // 8


def _validity(arr: pa.Array, w: Writer, start: int, n: int) -> dict:
    bitmap = arr.buffers()[0]
    if arr.null_count == 0 or bitmap is None:
        return w.empty()
    return w.memory(bitmap.slice(start // 8, _bits(n)))


def _offsets(arr: pa.Array, w: Writer, start: int, n: int, large: bool) -> tuple[dict, int, int]:
    """Rebased 64-bit offsets of items [start, start+n); returns (blob, first, last)."""
    buf = arr.buffers()[1]
    if buf is None or n == 0:
        zeros = np.zeros(n + 1, dtype=np.int64)
        return w.array(zeros), 0, 0
    offs = np.frombuffer(buf, dtype=np.int64 if large else np.int32)[start : start + n + 1]
    first, last = int(offs[0]), int(offs[-1])
    if large and first == 0:
        return w.array(offs), first, last
    wide = offs.astype(np.int64)
    if first:
        wide -= first
    return w.array(wide), first, last


def array_tree(arr: pa.Array, w: Writer) -> dict:
    """The official layout of an array of a portable type (see `portable`)."""
    t = arr.type
    n = len(arr)
    # Bitmaps (validity, boolean values) are copied from the byte holding the
    # first bit, so up to 7 leading items stay in front: offset_ skips them.
    bits = pa.types.is_boolean(t) or (arr.null_count > 0 and arr.buffers()[0] is not None)
    r = arr.offset % 8 if bits else 0
    start = arr.offset - r
    common = {"length_": n, "null_count_": arr.null_count, "offset_": r, "nbytes": int(arr.nbytes)}
    if pa.types.is_null(t):
        return {"typename": "vineyard::NullArray", "length_": n, "nbytes": 0}
    if pa.types.is_boolean(t):
        values = arr.buffers()[1]
        return {
            "typename": "vineyard::BooleanArray",
            **common,
            "buffer_": w.memory(values.slice(start // 8, _bits(r + n))) if n else w.empty(),
            "null_bitmap_": _validity(arr, w, start, r + n),
        }
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        values = arr.buffers()[1]
        size = t.bit_width // 8
        return {
            "typename": f"vineyard::NumericArray<{t}>",
            **common,
            "buffer_": w.memory(values.slice(start * size, (r + n) * size)) if n else w.empty(),
            "null_bitmap_": _validity(arr, w, start, r + n),
        }
    if pa.types.is_fixed_size_binary(t):
        values = arr.buffers()[1]
        width = t.byte_width
        return {
            "typename": "vineyard::FixedSizeBinaryArray",
            **common,
            "byte_width_": width,
            "buffer_": w.memory(values.slice(start * width, (r + n) * width)) if n and width else w.empty(),
            "null_bitmap_": _validity(arr, w, start, r + n),
        }
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t):
        large = pa.types.is_large_string(t) or pa.types.is_large_binary(t)
        offsets, first, last = _offsets(arr, w, start, r + n, large)
        data = arr.buffers()[2]
        textual = pa.types.is_string(t) or pa.types.is_large_string(t)
        return {
            "typename": LARGE_STRING if textual else LARGE_BINARY,
            **common,
            "buffer_offsets_": offsets,
            "buffer_data_": w.memory(data.slice(first, last - first)) if data is not None else w.empty(),
            "null_bitmap_": _validity(arr, w, start, r + n),
        }
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        offsets, first, last = _offsets(arr, w, start, r + n, pa.types.is_large_list(t))
        return {
            "typename": "vineyard::LargeListArray",
            **common,
            "buffer_offsets_": offsets,
            "null_bitmap_": _validity(arr, w, start, r + n),
            "values_": array_tree(arr.values.slice(first, last - first), w),
        }
    raise TypeError(f"no official layout for Arrow type {t}")


def schema_tree(schema: pa.Schema) -> dict:
    """``vineyard::SchemaProxy`` of the (widened) schema."""
    data = schema.serialize().to_pybytes()
    return {"typename": "vineyard::SchemaProxy", "schema_binary_": json.dumps({"bytes": list(data)}), "nbytes": len(data)}


def batch_tree(batch: pa.RecordBatch, w: Writer, stored: pa.Schema) -> dict:
    tree: dict[str, Any] = {
        "typename": "vineyard::RecordBatch",
        "row_num_": batch.num_rows,
        "column_num_": batch.num_columns,
        "__columns_-size": batch.num_columns,
        "nbytes": int(batch.nbytes),
        "schema_": schema_tree(stored),
    }
    for i in range(batch.num_columns):
        tree[f"__columns_-{i}"] = array_tree(batch.column(i), w)
    return tree


def table_tree(table: pa.Table, w: Writer) -> dict:
    stored = widen_schema(table.schema)
    batches = table.to_batches()
    tree: dict[str, Any] = {
        "typename": "vineyard::Table",
        "num_rows_": table.num_rows,
        "num_columns_": table.num_columns,
        "batch_num_": len(batches),
        "partitions_-size": len(batches),
        "nbytes": int(table.nbytes),
        "schema_": schema_tree(stored),
    }
    if not stored.equals(table.schema, check_metadata=True):
        tree[EXTRA + "schema_"] = schema_b64(table.schema)
    for i, b in enumerate(batches):
        tree[f"partitions_-{i}"] = batch_tree(b, w, stored)
    return tree


def ipc_tree(value: Any, w: Writer, kind: str) -> dict:
    """One Arrow IPC stream in a blob (written straight into a sized buffer)."""
    if kind == "array":
        value = pa.RecordBatch.from_arrays([value], names=["v"])
    elif kind == "chunked_array":
        value = pa.Table.from_arrays([value], names=["v"])

    def write(sink: Any) -> None:
        with pa.ipc.new_stream(sink, value.schema) as out:
            if isinstance(value, pa.Table):
                out.write_table(value)
            else:
                out.write_batch(value)

    mock = pa.MockOutputStream()
    write(mock)
    size = mock.size()
    buf = np.empty(size, dtype=np.uint8)
    write(pa.FixedSizeBufferWriter(pa.py_buffer(buf)))
    return {"typename": IPC, "kind_": kind, "size_": size, "nbytes": size, "buffer_": w.array(buf)}


def encode_arrow(value: Any, w: Writer) -> dict | None:
    """The tree of a pyarrow Table/RecordBatch/Array/ChunkedArray, else None."""
    if isinstance(value, pa.Table):
        if all(portable(f.type) for f in value.schema):
            return table_tree(value, w)
        return ipc_tree(value, w, "table")
    if isinstance(value, pa.RecordBatch):
        if all(portable(f.type) for f in value.schema):
            stored = widen_schema(value.schema)
            tree = batch_tree(value, w, stored)
            if not stored.equals(value.schema, check_metadata=True):
                tree[EXTRA + "schema_"] = schema_b64(value.schema)
            return tree
        return ipc_tree(value, w, "record_batch")
    if isinstance(value, pa.ChunkedArray):
        if portable(value.type):
            tree = {"typename": CHUNKED, "type_": type_b64(value.type), "__chunks_-size": value.num_chunks, "nbytes": int(value.nbytes)}
            for i, c in enumerate(value.chunks):
                tree[f"__chunks_-{i}"] = array_tree(c, w)
            return tree
        return ipc_tree(value, w, "chunked_array")
    if isinstance(value, pa.Array):
        if portable(value.type):
            tree = array_tree(value, w)
            if widen(value.type) != value.type:
                tree[EXTRA + "type_"] = type_b64(value.type)
            return tree
        return ipc_tree(value, w, "array")
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
    "array_tree",
    "decode_arrow",
    "decode_arrow_array",
    "encode_arrow",
    "encode_polars",
    "from_capsules",
    "portable",
    "schema_tree",
    "widen",
]
