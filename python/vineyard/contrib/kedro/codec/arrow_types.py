"""Arrow types and names shared by the writers (`arrow_codec`) and the readers
(the core, `src/arrow`): which types the official layouts carry, how they are widened
when stored, and schemas as base64 Arrow IPC.
"""

from __future__ import annotations

import base64

import pyarrow as pa


from .metadata import OURS

IPC = OURS + "ArrowIPC"
CHUNKED = OURS + "ChunkedArray"
LARGE_STRING = "vineyard::BaseBinaryArray<arrow::LargeStringArray>"
LARGE_BINARY = "vineyard::BaseBinaryArray<arrow::LargeBinaryArray>"


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


def type_b64(t: pa.DataType) -> str:
    return schema_b64(pa.schema([pa.field("v", t)]))


__all__ = [
    "CHUNKED",
    "IPC",
    "LARGE_BINARY",
    "LARGE_STRING",
    "portable",
    "schema_b64",
    "type_b64",
    "widen",
    "widen_schema",
]
