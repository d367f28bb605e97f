"""Plain Python values keep their exact types; anything else goes through
pickle 5 with its large buffers out of band (one copy, zero-copy loads)."""

from __future__ import annotations

import collections
import dataclasses
import datetime
import decimal
import fractions
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from codec_helpers import CODEC_SETTINGS, assert_zero_copy, load, roundtrip
from vineyard.contrib.kedro.codec import put_value, typename_of
from vineyard.contrib.kedro.errors import UnsupportedValueError


def same(a, b) -> bool:
    """Equality that also compares types all the way down (and nan == nan)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return len(a) == len(b) and all(same(k, kk) for k, kk in zip(a, b)) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
    return a == b


SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-(2**64), 2**64),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(),
    st.binary(),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(st.one_of(st.text(max_size=3), st.integers(), st.tuples(st.integers())), inner, max_size=4),
    ),
    max_leaves=12,
)


@CODEC_SETTINGS
@given(value=VALUES)
def test_python_values_keep_their_types(client, value):
    assert same(roundtrip(client, value), value)


@CODEC_SETTINGS
@given(value=VALUES)
def test_containers_with_big_members_keep_their_types(client, value):
    holder = {"big": np.arange(2048.0), "value": value, "list": [value, np.ones(300)], "tuple": (np.zeros(512, np.int8), value)}
    out = roundtrip(client, holder)
    assert same(out, holder)


@pytest.mark.parametrize(
    "value,typename",
    [
        (None, "vineyard_kedro::None"),
        (True, "vineyard::Scalar<int>"),
        (7, "vineyard::Scalar<int>"),
        (2**100, "vineyard::Scalar<int>"),
        (-(2**63), "vineyard::Scalar<int>"),
        (1.5, "vineyard::Scalar<double>"),
        (float("nan"), "vineyard::Scalar<double>"),
        ("text", "vineyard::Scalar<std::string>"),
        ("x" * 100_000, "vineyard_kedro::Str"),
        ("lone \ud800 surrogate", "vineyard_kedro::Str"),
        (b"bytes", "vineyard_kedro::Bytes"),
        (bytearray(b"ba"), "vineyard_kedro::Bytes"),
        ([1, 2, 3], "vineyard_kedro::Plain"),
        ({"a": 1, "b": [1.5, None, float("inf")], (1, "x"): b"z", 2**70: (True, bytearray(b"y")), 0.5: {}}, "vineyard_kedro::Plain"),
        ({"when": datetime.date(2020, 1, 2)}, "vineyard::PickleBuffer"),
        ({"lone": "\ud800"}, "vineyard::PickleBuffer"),
        (list(range(257)), "vineyard::PickleBuffer"),
        ({"a": np.arange(4096)}, "vineyard_kedro::Dict"),
        ([np.arange(4096)], "vineyard::Sequence"),
        ((np.arange(4096),), "vineyard::Sequence"),
        ({1, 2}, "vineyard::PickleBuffer"),
        (3 + 4j, "vineyard::PickleBuffer"),
    ],
    ids=repr,
)
def test_layouts_and_exact_values(client, value, typename):
    assert typename_of(value) == typename
    assert same(roundtrip(client, value), value)


@pytest.mark.parametrize(
    "value_",
    ['{"q": 1}', '{"d": [[1]]}', '{"d": [[[1], 2]]}', '{"f": 1.5}', '{"b": "not base64!"}', '{"i": "12x"}', "[" * 20 + "]" * 20],
)
def test_bad_plain_metadata_is_a_layout_error(value_):
    from vineyard.contrib.kedro.codec import decode_meta
    from vineyard.contrib.kedro.errors import LayoutError

    with pytest.raises(LayoutError, match="vineyard_kedro::Plain"):
        decode_meta({"typename": "vineyard_kedro::Plain", "value_": value_}, {})


@dataclasses.dataclass
class Model:
    weights: np.ndarray
    name: str


OTHER = [
    {1, 2, 3},
    frozenset({"a"}),
    3 + 4j,
    decimal.Decimal("1.10"),
    fractions.Fraction(1, 3),
    datetime.datetime(2020, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
    datetime.date(2020, 1, 2),
    collections.OrderedDict(a=1),
    collections.Counter("abca"),
    np.float64(1.5),
    np.int32(7),
    np.datetime64("2020-01-01"),
    pd.Timestamp("2020-01-01", tz="UTC"),
    pd.array([1, None], dtype="Int64"),
    range(3, 10, 2),
    slice(1, 2),
    Ellipsis,
    type(None),
]


@pytest.mark.parametrize("value", OTHER, ids=[type(v).__name__ for v in OTHER])
def test_other_objects_are_pickled(client, value):
    out = roundtrip(client, value)
    assert type(out) is type(value)
    if isinstance(value, pd.api.extensions.ExtensionArray):
        assert out.equals(value)
    else:
        assert out == value


def test_memoryview_comes_back_as_a_read_only_view(client):
    mv = memoryview(np.arange(10, dtype=np.int32)).cast("B").cast("i")
    loaded = load(client, mv)
    out = loaded.value
    assert type(out) is memoryview and out.readonly and out.format == "i" and out.tolist() == mv.tolist()


def test_pickled_object_buffers_are_out_of_band_and_zero_copy(client):
    model = Model(weights=np.random.default_rng(0).random((512, 512)), name="m")
    loaded = load(client, model)
    m = loaded.meta
    assert m["typename"] == "vineyard::PickleBuffer" and m["__buffers_-size"] == 1
    assert m["size_"] < 1024  # the array is not in the pickle stream
    out = loaded.value
    assert isinstance(out, Model) and out.name == "m"
    np.testing.assert_array_equal(out.weights, model.weights)
    assert_zero_copy(loaded, out.weights)


def test_unpicklable_value_raises_unsupported(client):
    with pytest.raises(UnsupportedValueError, match="does not pickle"):
        put_value(client, lambda x: x)
    with pytest.raises(UnsupportedValueError):
        put_value(client, {"f": (lambda: 0), "big": np.arange(5000)})


def test_deep_nesting_falls_back_to_pickle(client):
    value: list = [np.arange(2000)]
    for _ in range(20):
        value = [value, np.arange(2000)]
    assert same(roundtrip(client, value), value)
