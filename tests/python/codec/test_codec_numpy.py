"""numpy arrays through vineyard::Tensor: every dtype and shape, zero-copy loads."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from codec_helpers import CODEC_SETTINGS, address_of, assert_zero_copy, load, roundtrip
from vineyard.contrib.kedro.codec import decode_meta, put_value, typename_of

UNITS = ["Y", "M", "W", "D", "h", "m", "s", "ms", "us", "ns"]
RAW_DTYPES = (
    hnp.boolean_dtypes()
    | hnp.integer_dtypes(endianness="=")
    | hnp.unsigned_integer_dtypes(endianness="=")
    | hnp.floating_dtypes(endianness="=", sizes=(16, 32, 64))
    | hnp.complex_number_dtypes(endianness="=")
    | hnp.datetime64_dtypes(endianness="=")
    | hnp.timedelta64_dtypes(endianness="=")
)


def assert_same(out: np.ndarray, a: np.ndarray) -> None:
    assert type(out) is np.ndarray
    assert out.dtype == a.dtype
    assert out.shape == a.shape
    np.testing.assert_array_equal(out, a, strict=True)
    if a.ndim > 1 and a.flags.f_contiguous and not a.flags.c_contiguous:
        assert out.flags.f_contiguous


@CODEC_SETTINGS
@given(
    a=hnp.arrays(RAW_DTYPES, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6)),
    order=st.sampled_from(["C", "F", "strided", "reversed"]),
)
def test_roundtrip_any_raw_dtype_shape_and_order(client, a, order):
    if order == "F":
        a = np.asfortranarray(a)
    elif order == "strided" and a.ndim:
        a = a[::2]
    elif order == "reversed" and a.ndim:
        a = a[::-1]
    loaded = load(client, a)
    assert_same(loaded.value, a)
    assert loaded.info.typename.startswith("vineyard::Tensor<")
    assert loaded.value.flags.writeable
    if a.nbytes and not (a.ndim > 1 and a.flags.f_contiguous and not a.flags.c_contiguous):
        assert_zero_copy(loaded, loaded.value)


@pytest.mark.parametrize(
    "dtype,typename,meta",
    [
        ("bool", "vineyard::Tensor<bool>", "|b1"),
        ("int8", "vineyard::Tensor<int8>", "|i1"),
        ("uint8", "vineyard::Tensor<uint8>", "|u1"),
        ("int16", "vineyard::Tensor<int16>", "<i2"),
        ("uint16", "vineyard::Tensor<uint16>", "<u2"),
        ("int32", "vineyard::Tensor<int>", "<i4"),
        ("uint32", "vineyard::Tensor<uint32>", "<u4"),
        ("int64", "vineyard::Tensor<int64>", "<i8"),
        ("uint64", "vineyard::Tensor<uint64>", "<u8"),
        ("float16", "vineyard::Tensor<float16>", "<f2"),
        ("float32", "vineyard::Tensor<float>", "<f4"),
        ("float64", "vineyard::Tensor<double>", "<f8"),
        ("datetime64[ns]", "vineyard::Tensor<datetime64[ns]>", "<M8[ns]"),
        ("timedelta64[ms]", "vineyard::Tensor<timedelta64[ms]>", "<m8[ms]"),
    ],
)
def test_official_typenames(client, dtype, typename, meta):
    a = np.zeros((2, 3), dtype=dtype)
    loaded = load(client, a)
    m = loaded.meta
    assert m["typename"] == typename
    assert m["value_type_"] == np.dtype(dtype).name
    assert m["value_type_meta_"] == meta
    assert m["shape_"] == "[2, 3]" and m["order_"] == '"C"' and m["partition_index_"] == "[]"
    assert m["nbytes"] == a.nbytes
    assert_same(loaded.value, a)


def test_fortran_order_is_recorded_and_buffer_is_row_major(client):
    a = np.asfortranarray(np.arange(6, dtype=np.int64).reshape(2, 3))
    loaded = load(client, a)
    assert loaded.meta["order_"] == '"F"'
    blob = next(b for b in loaded.blobs.values() if b.size)
    assert np.frombuffer(blob.tobytes(), dtype=np.int64).tolist() == [0, 1, 2, 3, 4, 5]
    assert_same(loaded.value, a)


@pytest.mark.parametrize(
    "a",
    [
        np.array(3.5),
        np.array(True),
        np.zeros((0,)),
        np.zeros((3, 0, 2), dtype=np.int32),
        np.arange(1_000_000, dtype=np.float64)[::-3],
        np.arange(24).reshape(2, 3, 4)[:, ::2, :],
        np.arange(24).reshape(2, 3, 4).transpose(1, 0, 2),
        np.broadcast_to(np.arange(3), (4, 3)),
        np.array(["2020-01-01", "NaT"], dtype="datetime64[D]"),
        np.array([np.nan, np.inf, -0.0]),
        np.array([1 + 2j], dtype=np.complex64),
        np.array([], dtype="datetime64"),
    ],
    ids=["0d-float", "0d-bool", "empty", "empty-3d", "strided-neg", "3d-view", "transposed", "broadcast", "dates-nat", "nan-inf", "complex", "generic-M8"],
)
def test_edge_arrays(client, a):
    assert_same(roundtrip(client, a), a)


@pytest.mark.parametrize(
    "a",
    [
        np.array(["a", "bcd", ""]),
        np.array([b"x", b"yz"]),
        np.zeros(3, dtype=[("a", "<i4"), ("b", "<f8")]),
        np.arange(4, dtype=">f8"),
        np.ma.masked_array([1, 2, 3], mask=[0, 1, 0]),
        np.rec.array([(1, 2.0)], dtype=[("a", "<i4"), ("b", "<f8")]),
    ],
    ids=["unicode", "bytes", "structured", "big-endian", "masked", "recarray"],
)
def test_arrays_outside_the_tensor_layout_go_through_pickle(client, a):
    assert typename_of(a) == "vineyard::PickleBuffer"
    out = roundtrip(client, a)
    assert type(out) is type(a) and out.dtype == a.dtype
    np.testing.assert_array_equal(np.asarray(out), np.asarray(a))
    if isinstance(a, np.ma.MaskedArray):
        assert (out.mask == a.mask).all()


def test_object_arrays_use_the_official_object_tensor(client):
    a = np.array([1, "a", None, (2, 3), {"k": 1.5}], dtype=object)
    loaded = load(client, a)
    assert loaded.meta["typename"] == "vineyard::Tensor<object>"
    assert loaded.value.dtype == object and loaded.value.tolist() == a.tolist()
    b = np.empty((2, 2), dtype=object)
    b[:] = [[1, "x"], [None, 2.5]]
    out = roundtrip(client, b)
    assert out.shape == (2, 2) and out.tolist() == b.tolist()


def test_large_array_is_zero_copy_and_copy_on_write(client):
    a = np.random.default_rng(0).random((1 << 20, 4))
    loaded = load(client, a, delete=False)
    assert_zero_copy(loaded, loaded.value)
    assert loaded.info.nbytes == a.nbytes
    np.testing.assert_array_equal(loaded.value, a)
    loaded.value[0, 0] = -1.0
    loaded.value[-1] *= 2
    again = decode_meta(*client.get(id=loaded.info.id)[1:])
    np.testing.assert_array_equal(again, a)  # the store keeps the original
    (blob,) = [b for b in loaded.blobs.values() if b.size]
    assert np.frombuffer(blob.tobytes(), dtype=a.dtype)[0] == a[0, 0]
    assert loaded.value[0, 0] == -1.0 and (loaded.value[-1] == 2 * a[-1]).all()
    client.delete([loaded.info.id])


def test_source_is_not_referenced_after_save(client):
    a = np.arange(1000.0)
    info = put_value(client, a, persist=False)
    a[:] = -1  # the saved copy is independent of the source
    loaded = load(client, np.arange(1000.0))
    assert address_of(loaded.value) != address_of(a)
    client.delete([info.id])
