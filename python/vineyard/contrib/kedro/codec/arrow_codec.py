"""pyarrow values in vineyard's Arrow layouts (protocol sections 11.5, 11.6),
and Arrow IPC for the types those layouts cannot carry.

Official layouts (read by the official clients) are used when every type is
one of: integers, float32, float64, bool, null, string/binary (stored widened
to 64-bit offsets: large_string/large_binary), fixed_size_binary, and
list/large_list (stored as large_list) of those. Buffers are stored sliced to
the array (offsets rebased to 0; ``offset_`` is only the bit offset < 8 that
keeps the validity bitmap's bytes), so a slice never drags its parent's
memory along. When the stored types differ from the value's (widened offsets,
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

Loads are zero-copy: every Arrow buffer is a view of a blob that keeps the
mapping alive, and IPC streams are read in place. Every array read is fully
validated (offsets, sizes, UTF-8) before it is returned.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import pyarrow as pa

from .numpy_codec import safe_dtype, template_arg
from .registry import EXTRA, OURS, LayoutError, Reader, Writer, decode, decoder, get_int, member, typename

IPC = OURS + "ArrowIPC"
CHUNKED = OURS + "ChunkedArray"
LARGE_STRING = "vineyard::BaseBinaryArray<arrow::LargeStringArray>"
LARGE_BINARY = "vineyard::BaseBinaryArray<arrow::LargeBinaryArray>"
MAX_ITEMS = 1 << 24


# -- types ----------------------------------------------------------------------


def portable(t: pa.DataType) -> bool:
    """True when the official layouts can carry type `t`."""
    if pa.types.is_integer(t) or pa.types.is_boolean(t) or pa.types.is_null(t):
        return True
    if t == pa.float32() or t == pa.float64():
        return True
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return True
    if pa.types.is_fixed_size_binary(t):
        return True
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return portable(t.value_type)
    return False


def widen(t: pa.DataType) -> pa.DataType:
    """The type an array of type `t` has once stored (64-bit offsets)."""
    if pa.types.is_string(t):
        return pa.large_string()
    if pa.types.is_binary(t):
        return pa.large_binary()
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        f = t.value_field
        return pa.large_list(pa.field("item", widen(f.type), f.nullable))
    return t


def widen_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema([f.with_type(widen(f.type)) for f in schema], schema.metadata)


def schema_b64(schema: pa.Schema) -> str:
    return base64.b64encode(schema.serialize().to_pybytes()).decode("ascii")


def schema_from_b64(text: Any) -> pa.Schema:
    if not isinstance(text, str):
        raise LayoutError("an Arrow schema should be a base64 string")
    try:
        return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text, validate=True)))
    except (ValueError, pa.ArrowException) as e:
        raise LayoutError(f"bad Arrow schema: {e}") from None


def type_b64(t: pa.DataType) -> str:
    return schema_b64(pa.schema([pa.field("v", t)]))


def type_from_b64(text: Any) -> pa.DataType:
    s = schema_from_b64(text)
    if len(s) != 1:
        raise LayoutError("bad Arrow type")
    return s.field(0).type


# -- encode arrays --------------------------------------------------------------


def _bits(n: int) -> int:
    return (n + 7) // 8


def _validity(arr: pa.Array, w: Writer, start: int, n: int) -> dict:
    bitmap = arr.buffers()[0]
    if arr.null_count == 0 or bitmap is None:
        return w.empty()
    return w.address(bitmap.address + start // 8, _bits(n), keep=bitmap)


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
    r = arr.offset % 8
    start = arr.offset - r
    common = {"length_": n, "null_count_": arr.null_count, "offset_": r, "nbytes": int(arr.nbytes)}
    if pa.types.is_null(t):
        return {"typename": "vineyard::NullArray", "length_": n, "nbytes": 0}
    if pa.types.is_boolean(t):
        values = arr.buffers()[1]
        return {
            "typename": "vineyard::BooleanArray",
            **common,
            "buffer_": w.address(values.address + start // 8, _bits(r + n), keep=values) if n else w.empty(),
            "null_bitmap_": _validity(arr, w, start, r + n),
        }
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        values = arr.buffers()[1]
        size = t.bit_width // 8
        return {
            "typename": f"vineyard::NumericArray<{t}>",
            **common,
            "buffer_": w.address(values.address + start * size, (r + n) * size, keep=values) if n else w.empty(),
            "null_bitmap_": _validity(arr, w, start, r + n),
        }
    if pa.types.is_fixed_size_binary(t):
        values = arr.buffers()[1]
        width = t.byte_width
        return {
            "typename": "vineyard::FixedSizeBinaryArray",
            **common,
            "byte_width_": width,
            "buffer_": w.address(values.address + start * width, (r + n) * width, keep=values) if n and width else w.empty(),
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
            "buffer_data_": w.address(data.address + first, last - first, keep=data) if data is not None else w.empty(),
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


# -- decode ---------------------------------------------------------------------


def _checked(arr: pa.Array, meta: dict) -> pa.Array:
    try:
        arr.validate(full=True)
    except pa.ArrowException as e:
        raise LayoutError(f"{typename(meta)}: invalid array: {e}") from None
    return arr


def _array_common(meta: dict) -> tuple[int, int, int]:
    n = get_int(meta, "length_")
    nulls = get_int(meta, "null_count_", 0, lo=-1, hi=n)
    offset = get_int(meta, "offset_", 0)
    return n, nulls, offset


def _from_buffers(meta: dict, t: pa.DataType, n: int, buffers: list, nulls: int, offset: int, children=None) -> pa.Array:
    try:
        arr = pa.Array.from_buffers(t, n, buffers, null_count=nulls, offset=offset, children=children)
    except (pa.ArrowException, ValueError, TypeError) as e:
        raise LayoutError(f"{typename(meta)}: {e}") from None
    return _checked(arr, meta)


def _numeric(meta: dict, r: Reader) -> pa.Array:
    dtype = safe_dtype(template_arg(typename(meta)))
    if dtype is None or dtype.kind not in "iuf":
        raise LayoutError(f"{typename(meta)}: unsupported element type")
    n, nulls, offset = _array_common(meta)
    t = pa.from_numpy_dtype(dtype)
    return _from_buffers(meta, t, n, [r.arrow_buffer(meta, "null_bitmap_"), r.arrow_buffer(meta, "buffer_")], nulls, offset)


def _boolean(meta: dict, r: Reader) -> pa.Array:
    n, nulls, offset = _array_common(meta)
    bufs = [r.arrow_buffer(meta, "null_bitmap_"), r.arrow_buffer(meta, "buffer_")]
    return _from_buffers(meta, pa.bool_(), n, bufs, nulls, offset)


def _binary(meta: dict, r: Reader) -> pa.Array:
    arg = template_arg(typename(meta)) or typename(meta)
    textual = "String" in arg
    large = "Large" in arg or typename(meta) in (LARGE_STRING, LARGE_BINARY)
    t = (pa.large_string() if large else pa.string()) if textual else (pa.large_binary() if large else pa.binary())
    n, nulls, offset = _array_common(meta)
    bufs = [r.arrow_buffer(meta, "null_bitmap_"), r.arrow_buffer(meta, "buffer_offsets_"), r.arrow_buffer(meta, "buffer_data_")]
    if bufs[1] is None:  # Arrow wants n + 1 offsets even for empty arrays
        if n + offset:
            raise LayoutError(f"{typename(meta)}: no offsets for {n} items")
        bufs[1] = pa.py_buffer(np.zeros(1, dtype=np.int64 if large else np.int32))
    return _from_buffers(meta, t, n, bufs, nulls, offset)


def _fixed(meta: dict, r: Reader) -> pa.Array:
    n, nulls, offset = _array_common(meta)
    width = get_int(meta, "byte_width_", hi=1 << 31)
    bufs = [r.arrow_buffer(meta, "null_bitmap_"), r.arrow_buffer(meta, "buffer_")]
    return _from_buffers(meta, pa.binary(width), n, bufs, nulls, offset)


def _null(meta: dict, r: Reader) -> pa.Array:
    return pa.nulls(get_int(meta, "length_"))


def _list(meta: dict, r: Reader) -> pa.Array:
    n, nulls, offset = _array_common(meta)
    values = decode_arrow_array(member(meta, "values_"), r)
    offsets = r.arrow_buffer(meta, "buffer_offsets_")
    if offsets is None:
        if n + offset:
            raise LayoutError(f"{typename(meta)}: no offsets for {n} items")
        offsets = pa.py_buffer(np.zeros(1, dtype=np.int64))
    bufs = [r.arrow_buffer(meta, "null_bitmap_"), offsets]
    return _from_buffers(meta, pa.large_list(values.type), n, bufs, nulls, offset, children=[values])


_ARRAYS = {
    "vineyard::BooleanArray": _boolean,
    "vineyard::FixedSizeBinaryArray": _fixed,
    "vineyard::NullArray": _null,
    "vineyard::LargeListArray": _list,
    "vineyard::LargeStringArray": _binary,
    "vineyard::LargeBinaryArray": _binary,
    "vineyard::StringArray": _binary,
    "vineyard::BinaryArray": _binary,
}


def decode_arrow_array(meta: dict, r: Reader) -> pa.Array:
    """A pyarrow array from any of vineyard's array layouts."""
    t = typename(meta)
    if t.startswith("vineyard::NumericArray<"):
        return _numeric(meta, r)
    if t.startswith("vineyard::BaseBinaryArray<"):
        return _binary(meta, r)
    fn = _ARRAYS.get(t)
    if fn is None:
        if t == IPC:
            v = decode_ipc(meta, r)
            if isinstance(v, pa.Array):
                return v
        raise LayoutError(f"{t} is not an Arrow array layout")
    return fn(meta, r)


def _cast(arr: Any, t: pa.DataType, meta: dict) -> Any:
    if arr.type == t:
        return arr
    try:
        return arr.cast(t)
    except (pa.ArrowException, ValueError, TypeError) as e:
        raise LayoutError(f"{typename(meta)}: cannot cast {arr.type} to {t}: {e}") from None


@decoder("vineyard::NumericArray<", "vineyard::BaseBinaryArray<", prefix=True)
@decoder(*_ARRAYS)
def decode_array_value(meta: dict, r: Reader) -> pa.Array:
    arr = decode_arrow_array(meta, r)
    if EXTRA + "type_" in meta:
        arr = _cast(arr, type_from_b64(meta[EXTRA + "type_"]), meta)
    return arr


@decoder("vineyard::SchemaProxy")
def decode_schema(meta: dict, r: Reader) -> pa.Schema:
    try:
        if "buffer_" in meta and isinstance(meta["buffer_"], dict):
            buf = r.arrow_buffer(meta, "buffer_")
        else:
            text = json.loads(meta["schema_binary_"])
            buf = pa.py_buffer(bytes(text["bytes"]))
        return pa.ipc.read_schema(buf)
    except (KeyError, TypeError, ValueError, pa.ArrowException) as e:
        raise LayoutError(f"vineyard::SchemaProxy: bad schema: {e}") from None


def _original(meta: dict) -> pa.Schema | None:
    return schema_from_b64(meta[EXTRA + "schema_"]) if EXTRA + "schema_" in meta else None


def _batch(meta: dict, r: Reader, schema: pa.Schema | None = None) -> pa.RecordBatch:
    stored = decode_schema(member(meta, "schema_"), r)
    n = get_int(meta, "__columns_-size", hi=MAX_ITEMS)
    if n != len(stored):
        raise LayoutError(f"vineyard::RecordBatch: {n} columns but the schema has {len(stored)}")
    schema = schema or stored
    rows = get_int(meta, "row_num_", None)
    cols = []
    for i in range(n):
        col = decode_arrow_array(member(meta, f"__columns_-{i}"), r)
        if rows is not None and len(col) != rows:
            raise LayoutError(f"vineyard::RecordBatch: column {i} has {len(col)} rows, not {rows}")
        cols.append(_cast(col, schema.field(i).type, meta))
    try:
        return pa.RecordBatch.from_arrays(cols, schema=schema)
    except (pa.ArrowException, ValueError, TypeError) as e:
        raise LayoutError(f"vineyard::RecordBatch: {e}") from None


@decoder("vineyard::RecordBatch")
def decode_batch(meta: dict, r: Reader) -> pa.RecordBatch:
    return _batch(meta, r, _original(meta))


@decoder("vineyard::Table")
def decode_table(meta: dict, r: Reader) -> Any:
    schema = _original(meta) or decode_schema(member(meta, "schema_"), r)
    n = get_int(meta, "batch_num_", None, hi=MAX_ITEMS)
    if n is None:
        n = get_int(meta, "partitions_-size", hi=MAX_ITEMS)
    batches = [_batch(member(meta, f"partitions_-{i}"), r, schema) for i in range(n)]
    try:
        table = pa.Table.from_batches(batches, schema=schema)
    except (pa.ArrowException, ValueError, TypeError) as e:
        raise LayoutError(f"vineyard::Table: {e}") from None
    return _maybe_polars(meta, table)


def _maybe_polars(meta: dict, table: pa.Table) -> Any:
    if meta.get("from_polars") in (True, "true", 1):
        try:
            import polars as pl
        except ImportError:
            return table
        return pl.from_arrow(table, rechunk=False)
    return table


@decoder(CHUNKED)
def decode_chunked(meta: dict, r: Reader) -> pa.ChunkedArray:
    t = type_from_b64(meta.get("type_"))
    n = get_int(meta, "__chunks_-size", hi=MAX_ITEMS)
    chunks = [_cast(decode_arrow_array(member(meta, f"__chunks_-{i}"), r), t, meta) for i in range(n)]
    try:
        return pa.chunked_array(chunks, type=t)
    except (pa.ArrowException, ValueError, TypeError) as e:
        raise LayoutError(f"{CHUNKED}: {e}") from None


@decoder(IPC)
def decode_ipc(meta: dict, r: Reader) -> Any:
    size = r.blob(meta, "buffer_").size
    n = get_int(meta, "size_", size, hi=size)
    kind = meta.get("kind_")
    buf = r.arrow_buffer(meta, "buffer_", n)
    if buf is None:
        raise LayoutError(f"{IPC}: empty stream")
    try:
        table = pa.ipc.open_stream(buf).read_all()
        table.validate(full=True)
    except pa.ArrowException as e:
        raise LayoutError(f"{IPC}: bad Arrow IPC stream: {e}") from None
    if kind == "table":
        return _maybe_polars(meta, table)
    if kind == "record_batch":
        batches = table.to_batches()
        if len(batches) == 1:
            return batches[0]
        return table.combine_chunks().to_batches()[0] if table.num_rows else pa.RecordBatch.from_pylist([], schema=table.schema)
    if table.num_columns != 1:
        raise LayoutError(f"{IPC}: an array stream needs one column")
    col = table.column(0)
    if kind == "chunked_array":
        return col
    if kind == "array":
        if col.num_chunks == 1:
            return col.chunk(0)
        return col.combine_chunks() if col.num_chunks else pa.array([], type=col.type)
    raise LayoutError(f"{IPC}: unknown kind_ {kind!r}")


def encode_polars(df: Any, w: Writer) -> dict:
    table = df.to_arrow()
    tree = encode_arrow(table, w)
    tree["from_polars"] = True
    return tree


__all__ = ["array_tree", "decode_arrow_array", "encode_arrow", "encode_polars", "portable", "schema_tree", "widen"]
