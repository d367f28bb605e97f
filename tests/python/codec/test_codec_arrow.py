"""pyarrow values: vineyard's Arrow layouts where they fit, Arrow IPC otherwise;
loads are zero-copy and validated."""

from __future__ import annotations

import decimal

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from codec_helpers import CODEC_SETTINGS, load, roundtrip

N = 7


def _arrays():
    yield "int8", pa.array([1, None, -3, 4, 5, 6, 7], pa.int8())
    yield "uint64", pa.array([0, 2**64 - 1, None, 4, 5, 6, 7], pa.uint64())
    yield "float32", pa.array([1.5, None, -0.0, 4, 5, 6, np.inf], pa.float32())
    yield "float64", pa.array(np.linspace(0, 1, N))
    yield "bool", pa.array([True, None, False, True, True, False, None])
    yield "null", pa.nulls(N)
    yield "string", pa.array(["a", None, "", "dd", "é", "f", "g"])
    yield "large_string", pa.array(["a", None, "", "dd", "é", "f", "g"], pa.large_string())
    yield "binary", pa.array([b"a", None, b"", b"\x00\xff", b"e", b"f", b"g"])
    yield "large_binary", pa.array([b"a", None, b"", b"\x00\xff", b"e", b"f", b"g"], pa.large_binary())
    yield "fixed_binary", pa.array([b"ab", None, b"cd", b"ef", b"gh", b"ij", b"kl"], pa.binary(2))
    yield "list", pa.array([[1, 2], None, [], [3], [4, 5, 6], [7], [8]], pa.list_(pa.int64()))
    yield "large_list_str", pa.array([["a"], None, [], ["b", None], ["c"], ["d"], ["e"]], pa.large_list(pa.string()))
    yield "list_of_list", pa.array([[[1]], None, [[], [2, 3]], [[4]], [], [[5]], [[6]]], pa.list_(pa.list_(pa.int16())))
    yield "struct", pa.array([{"x": i, "y": str(i)} for i in range(N)])
    yield "dictionary", pa.array(["a", "b", "a", None, "c", "b", "a"]).dictionary_encode()
    yield "date32", pa.array(np.arange(N, dtype=np.int32)).view(pa.date32())
    yield "timestamp_tz", pa.array(np.arange(N, dtype=np.int64), pa.timestamp("us", tz="UTC"))
    yield "decimal", pa.array([decimal.Decimal("1.25")] * N, pa.decimal128(10, 2))
    yield "halffloat", pa.array(np.arange(N, dtype=np.float16))
    yield "map", pa.array([[("k", 1)]] * N, pa.map_(pa.string(), pa.int64()))
    yield "string_view", pa.array(["a", None, "b", "c", "d", "e", "f"], pa.string_view())


ARRAYS = list(_arrays())
OFFICIAL = {"int8", "uint64", "float32", "float64", "bool", "null", "string", "large_string", "binary", "large_binary", "fixed_binary", "list", "large_list_str", "list_of_list"}


@pytest.mark.parametrize("arr", [a for _, a in ARRAYS], ids=[i for i, _ in ARRAYS])
def test_array_roundtrip(client, arr):
    loaded = load(client, arr)
    out = loaded.value
    assert isinstance(out, pa.Array) and out.type == arr.type
    assert out.equals(arr)
    name = next(i for i, a in ARRAYS if a is arr)
    assert loaded.info.typename.startswith("vineyard::") == (name in OFFICIAL), loaded.info.typename


@pytest.mark.parametrize("arr", [a for _, a in ARRAYS], ids=[i for i, _ in ARRAYS])
def test_sliced_array_roundtrip(client, arr):
    part = arr.slice(3, 3)
    out = roundtrip(client, part)
    assert out.type == part.type and out.equals(part)


@CODEC_SETTINGS
@given(
    values=st.lists(st.one_of(st.none(), st.text(max_size=5)), max_size=40),
    start=st.integers(0, 40),
    length=st.integers(0, 40),
)
def test_sliced_strings_property(client, values, start, length):
    arr = pa.array(values, pa.string()).slice(start, length)
    out = roundtrip(client, arr)
    assert out.equals(arr) and out.type == arr.type


@CODEC_SETTINGS
@given(values=st.lists(st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)), max_size=50), start=st.integers(0, 50))
def test_sliced_ints_with_nulls_property(client, values, start):
    arr = pa.array(values, pa.int64()).slice(start)
    loaded = load(client, arr)
    assert loaded.value.equals(arr)
    # only the slice is stored (plus < 8 leading items when a bitmap is kept)
    assert loaded.info.nbytes <= (len(arr) + 7) * 9 // 8 * 8 + 2


def test_table_of_many_chunks_official_layout(client):
    batches = [pa.record_batch({"a": np.arange(i, i + 5), "s": [str(j) for j in range(5)], "f": np.ones(5)}) for i in range(0, 50, 5)]
    table = pa.Table.from_batches(batches).replace_schema_metadata({"origin": "test"})
    loaded = load(client, table)
    assert loaded.meta["typename"] == "vineyard::Table"
    assert loaded.meta["batch_num_"] == 10
    out = loaded.value
    assert out.equals(table, check_metadata=True) and out.schema == table.schema
    col = out.column("a").chunk(0)
    assert loaded.inside(col.buffers()[1].address)


def test_table_with_unaligned_chunks(client):
    a = pa.chunked_array([np.arange(10), np.arange(10, 30)])
    b = pa.chunked_array([np.arange(3.0), np.arange(3.0, 30.0)])
    table = pa.Table.from_arrays([a, b], names=["a", "b"])
    loaded = load(client, table)
    assert loaded.value.equals(table)
    assert loaded.info.nbytes == 30 * 8 * 2  # slices of shared chunks are not duplicated


def test_table_with_non_portable_types_uses_ipc(client):
    table = pa.table({"d": [a for i, a in ARRAYS if i == "dictionary"][0], "ts": [a for i, a in ARRAYS if i == "timestamp_tz"][0]})
    loaded = load(client, table)
    assert loaded.meta["typename"] == "vineyard_kedro::ArrowIPC"
    assert loaded.value.equals(table)
    chunk = loaded.value.column("ts").chunk(0)
    assert loaded.inside(chunk.buffers()[1].address)  # read in place


def test_record_batch_and_chunked_array(client):
    batch = pa.record_batch({"a": [1, 2, None], "s": ["x", None, "z"], "nn": pa.array([1, 2, 3], pa.int32())}, schema=pa.schema([("a", pa.int64()), ("s", pa.string()), pa.field("nn", pa.int32(), nullable=False)]))
    out = roundtrip(client, batch)
    assert isinstance(out, pa.RecordBatch) and out.equals(batch) and out.schema == batch.schema
    ca = pa.chunked_array([["a", "b"], [], ["c"]])
    out = roundtrip(client, ca)
    assert isinstance(out, pa.ChunkedArray) and out.equals(ca) and out.num_chunks == 3
    empty = pa.chunked_array([], type=pa.int32())
    assert roundtrip(client, empty).equals(empty)
    nested = pa.chunked_array([[{"x": 1}], [{"x": 2}]])
    assert roundtrip(client, nested).equals(nested)
    dict_batch = pa.record_batch({"d": pa.array(["a", "b"]).dictionary_encode()})
    assert roundtrip(client, dict_batch).equals(dict_batch)


def test_empty_table(client):
    table = pa.table({"a": pa.array([], pa.int64()), "s": pa.array([], pa.string())})
    out = roundtrip(client, table)
    assert out.schema == table.schema and out.num_rows == 0
    assert roundtrip(client, pa.table({})).num_columns == 0


def test_large_numeric_table_is_zero_copy(client):
    table = pa.table({f"c{i}": np.random.default_rng(i).random(200_000) for i in range(4)})
    loaded = load(client, table)
    for col in loaded.value.columns:
        for chunk in col.chunks:
            assert loaded.inside(chunk.buffers()[1].address)
    assert loaded.value.equals(table)


def test_polars_dataframe_comes_back_as_polars(client):
    pl = pytest.importorskip("polars")
    df = pl.DataFrame({"a": [1, 2, None], "s": ["x", None, "z"], "f": [1.5, 2.5, 3.5]})
    loaded = load(client, df)
    assert loaded.meta.get("from_polars") is True
    assert isinstance(loaded.value, pl.DataFrame)
    assert loaded.value.equals(df)
