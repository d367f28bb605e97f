"""Readers of vineyard's Arrow layouts and of our Arrow IPC layout (see
`arrow_codec` for the layouts; importing `arrow_codec` registers them). Every array is validated before it is
returned: buffer sizes always, offsets and nested data fully, and the UTF-8
of string data by the core (one pass over the text with the GIL released), so
invalid text fails the load instead of a later pandas operation.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa

from vineyard.contrib.kedro.errors import LayoutError

from .arrow_types import CHUNKED, IPC, LARGE_BINARY, LARGE_STRING, MAX_ITEMS, schema_from_b64, type_from_b64
from .buffers import Reader
from .dispatch import decoder
from .dtypes import safe_dtype, template_arg
from .metadata import EXTRA, get_int, member, typename


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
    if bufs[2] is None:  # all items empty: Arrow still wants a data buffer
        bufs[2] = pa.py_buffer(b"")
    try:
        arr = pa.Array.from_buffers(t, n, bufs, null_count=nulls, offset=offset)
        arr.validate()  # buffer sizes: enough offsets for offset + n items
    except (pa.ArrowException, ValueError, TypeError) as e:
        raise LayoutError(f"{typename(meta)}: invalid array: {e}") from None
    # pyarrow's full validation costs 40 ms per 100 MiB; the core checks
    # bounds (8 bytes per item) and then UTF-8 at memory speed.
    if n:
        itemsize = 8 if large else 4
        offsets = r.blob(meta, "buffer_offsets_")
        if not offsets.offsets_ok(offset * itemsize, n + 1, itemsize, bufs[2].size):
            raise LayoutError(f"{typename(meta)}: offsets decrease or point outside the {bufs[2].size}-byte data buffer")
        if textual and bufs[2].size and not offsets.utf8_ok(offset * itemsize, n + 1, itemsize, r.blob(meta, "buffer_data_")):
            raise LayoutError(f"{typename(meta)}: the string data is not valid UTF-8")
    return arr


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


__all__ = ["decode_arrow_array", "decode_batch", "decode_chunked", "decode_ipc", "decode_schema", "decode_table"]
