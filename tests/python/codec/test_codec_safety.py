"""Hostile or broken metadata never reads outside a blob (LayoutError instead),
and deleted objects are not reused under live views."""

from __future__ import annotations

import copy
import gc
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from codec_helpers import CODEC_SETTINGS
from vineyard.contrib.kedro import _core
from vineyard.contrib.kedro.codec import encode, get_value, put_value
from vineyard.contrib.kedro.codec.buffers import Writer
from vineyard.contrib.kedro.errors import LayoutError, StoreFullError, VineyardError


def put_tree(client, tree, buffers):
    object_id, _, _, _ = client.put(tree, buffers, persist=False)
    return object_id


def tree_of(value):
    w = Writer()
    return encode(value, w), w


def assert_layout_error(client, tree, w):
    object_id = put_tree(client, tree, w.buffers)
    try:
        with pytest.raises(LayoutError):
            get_value(client, id=object_id)
    finally:
        client.delete([object_id])


def tensor(shape="[4]", meta="<f8", vtype="float64", blob=0):
    return {"typename": "vineyard::Tensor<double>", "value_type_": vtype, "value_type_meta_": meta, "shape_": shape, "partition_index_": "[]", "order_": '"C"', "nbytes": 32, "buffer_": {"__blob__": blob}}


@pytest.mark.parametrize(
    "patch",
    [
        {"shape_": "[5]"},
        {"shape_": "[2, 3]"},
        {"shape_": "[-1]"},
        {"shape_": "[4611686018427387904, 4611686018427387904]"},
        {"shape_": "4"},
        {"shape_": "[1.5]"},
        {"shape_": "not json"},
        {"value_type_meta_": "|O", "value_type_": "object_", "typename": "vineyard::Tensor<object_>"},
        {"value_type_meta_": "[('a', 'O')]", "value_type_": "x", "typename": "vineyard::Tensor<x>"},
        {"value_type_meta_": "(1000,)f8", "value_type_": "y", "typename": "vineyard::Tensor<y>"},
        {"value_type_meta_": "<c16", "value_type_": "complex128", "shape_": "[3]"},
        {"value_type_": "nonsense", "value_type_meta_": "nonsense", "typename": "vineyard::Tensor<nonsense>"},
    ],
    ids=lambda p: json.dumps(p),
)
def test_bad_tensor_metadata(client, patch):
    a = np.arange(4.0)
    w = Writer()
    t = tensor(blob=0)
    w.array(a)
    t.update(patch)
    assert_layout_error(client, t, w)


def test_blob_member_that_is_not_a_blob(client):
    inner = tensor()
    w = Writer()
    w.array(np.arange(4.0))
    outer = tensor()
    outer["buffer_"] = inner
    assert_layout_error(client, outer, w)


def string_tree():
    return tree_of(pd.DataFrame({"s": pd.Series(["ab", "c", None, "def"], dtype=object)}))


@pytest.mark.parametrize(
    "field,value",
    [("length_", 100), ("offset_", 3), ("offset_", 1 << 40), ("null_count_", 7), ("length_", -1)],
)
def test_bad_string_array_metadata(client, field, value):
    tree, w = string_tree()
    tree["__values_-value-0"]["buffer_"][field] = value
    assert_layout_error(client, tree, w)


def test_string_offsets_pointing_outside_data(client):
    tree, w = string_tree()
    arr = tree["__values_-value-0"]["buffer_"]
    idx = arr["buffer_offsets_"]["__blob__"]
    w.buffers[idx] = np.array([0, 2, 3, 3, 1000], dtype=np.int64).tobytes()
    assert_layout_error(client, tree, w)
    w.buffers[idx] = np.array([0, 2, 1, 3, 6], dtype=np.int64).tobytes()
    assert_layout_error(client, tree, w)


@pytest.mark.parametrize("field,value", [("length_", 1000), ("offset_", 1 << 30), ("null_count_", 2), ("length_", "x")])
def test_bad_numeric_array_metadata(client, field, value):
    tree, w = tree_of(pa.array([1, 2, 3, None]))
    tree[field] = value
    assert_layout_error(client, tree, w)


def test_bad_frame_shapes(client):
    tree, w = tree_of(pd.DataFrame({"a": np.arange(4), "b": np.arange(4.0)}))
    tree["__values_-value-1"]["shape_"] = "[3]"
    assert_layout_error(client, tree, w)
    tree, w = tree_of(pd.DataFrame({"a": np.arange(4)}))
    tree["__values_-size"] = 2
    assert_layout_error(client, tree, w)
    tree, w = tree_of(pd.DataFrame({"a": np.arange(4)}, index=pd.RangeIndex(0, 8, 2)))
    tree["index_"]["vineyard_kedro_range_"] = "[0, 1, 0]"
    assert_layout_error(client, tree, w)


def test_bad_pandas_extension_layouts(client):
    tree, w = tree_of(pd.Series(pd.Categorical(["a", "b", "a"])))
    codes = tree["value_"]["codes_"]
    w.buffers[codes["buffer_"]["__blob__"]] = np.array([0, 9, 1], dtype=np.int8).tobytes()
    assert_layout_error(client, tree, w)
    tree, w = tree_of(pd.Series(pd.Categorical(["a", "b", "a"])))
    tree["value_"]["categories_"] = copy.deepcopy(tree["value_"]["codes_"])  # a Tensor, not an index layout
    object_id = put_tree(client, tree, w.buffers)
    with pytest.raises(LayoutError, match="categories_ is not an index"):
        get_value(client, id=object_id)
    client.delete([object_id])
    tree, w = tree_of(pd.Series(pd.array([1, None, 3], dtype="Int64")))
    tree["value_"]["mask_"]["shape_"] = "[2]"
    assert_layout_error(client, tree, w)
    tree, w = tree_of(pd.Series(pd.array([1, None, 3], dtype="Int64")))
    tree["value_"]["dtype_"] = "category"
    assert_layout_error(client, tree, w)


def test_bad_pickle_and_bytes_sizes(client):
    tree, w = tree_of({1, 2, 3})
    tree["size_"] = 1 << 20
    assert_layout_error(client, tree, w)
    tree, w = tree_of(b"abc")
    tree["size_"] = 4
    assert_layout_error(client, tree, w)


def test_garbage_arrow_streams(client):
    tree, w = tree_of(pa.table({"d": pa.array(["a", "b"]).dictionary_encode()}))
    idx = tree["buffer_"]["__blob__"]
    src = w.buffers[idx]
    w.buffers[idx] = src.tobytes()[: len(src) // 2]  # truncated stream
    tree["size_"] = len(src) // 2
    assert_layout_error(client, tree, w)
    tree, w = tree_of(pa.table({"a": [1, 2]}))
    tree["schema_"]["schema_binary_"] = json.dumps({"bytes": [1, 2, 3, 4]})
    assert_layout_error(client, tree, w)


def test_unknown_typename(client):
    assert_layout_error(client, {"typename": "some::Thing"}, Writer())


INT_FIELDS = ["length_", "offset_", "null_count_", "size_", "__values_-size", "__columns_-size", "batch_num_", "row_num_", "num_rows_", "byte_width_", "__elements_-size", "vineyard_kedro_nrows_"]


def _paths(tree, prefix=()):
    for k, v in tree.items():
        if isinstance(v, dict) and "__blob__" not in v:
            yield from _paths(v, prefix + (k,))
        elif k in INT_FIELDS or k in ("shape_", "vineyard_kedro_range_"):
            yield prefix + (k,)


FUZZ_VALUES = [
    pd.DataFrame({"a": np.arange(6), "s": ["x", None, "yy", "", "z", "w"], "c": pd.Categorical(list("abcabc")), "n": pd.array([1, None, 3, 4, 5, 6], dtype="Int8")}, index=pd.RangeIndex(2, 14, 2)),
    pa.table({"i": [1, None, 3], "s": ["a", "bb", None], "l": [[1], None, [2, 3]], "b": [True, False, None], "f": pa.array([b"ab", b"cd", None], pa.binary(2))}),
    {"x": np.arange(3000.0), "y": [np.arange(2000), "text"]},
]


@CODEC_SETTINGS
@given(which=st.integers(0, len(FUZZ_VALUES) - 1), pick=st.integers(0, 10_000), number=st.one_of(st.integers(-3, 70), st.integers(-(2**62), 2**62)))
def test_fuzzed_sizes_never_escape_the_blobs(client, which, pick, number):
    tree, w = tree_of(FUZZ_VALUES[which])
    paths = list(_paths(tree))
    path = paths[pick % len(paths)]
    node = tree
    for k in path[:-1]:
        node = node[k]
    key = path[-1]
    if key == "shape_":
        node[key] = json.dumps([number])
    elif key == "vineyard_kedro_range_":
        node[key] = json.dumps([0, number, 1])
    else:
        node[key] = number
    object_id = put_tree(client, copy.deepcopy(tree), w.buffers)
    try:
        get_value(client, id=object_id)  # a value or a LayoutError, never a crash
    except LayoutError:
        pass
    finally:
        client.delete([object_id])


# -- deferred deletes -------------------------------------------------------------


def test_deleted_object_is_not_reused_under_live_views(small_vineyardd):
    c = _core.Client(small_vineyardd.socket)
    original = np.random.default_rng(7).random(2 << 20)  # 16 MiB of a 64 MiB store
    frame = pd.DataFrame({"a": original[: 1 << 20], "b": original[1 << 20 :]})
    put_value(c, original, name="arr")
    put_value(c, frame, name="frame")
    arr = get_value(c, name="arr")
    df = get_value(c, name="frame")
    c.delete([c.resolve("arr")])
    c.drop_name("arr")
    c.delete([c.resolve("frame")])
    c.drop_name("frame")
    assert c.deferred == 2
    # Fill the store over and over: without the deferral vineyardd would hand
    # the loaded objects' memory to these puts.
    for i in range(12):
        try:
            info = put_value(c, np.full(1 << 20, float(i)), persist=False)
        except StoreFullError:
            break
        c.delete([info.id])
    np.testing.assert_array_equal(arr, original)
    np.testing.assert_array_equal(df["a"].to_numpy(), original[: 1 << 20])
    np.testing.assert_array_equal(df["b"].to_numpy(), original[1 << 20 :])
    del arr, df
    gc.collect()
    c.flush()
    assert c.deferred == 0
    # the memory is free again: 3 puts of 16 MiB fit
    ids = [put_value(c, np.zeros(2 << 20), persist=False).id for _ in range(3)]
    c.delete(ids)
    c.close()


def test_replacing_a_name_defers_deleting_the_viewed_object(small_vineyardd):
    c = _core.Client(small_vineyardd.socket)
    first = np.arange(2 << 20, dtype=np.float64)
    put_value(c, first, name="x")
    view = get_value(c, name="x")
    for i in range(8):  # each save replaces (and deletes) the previous object
        put_value(c, np.full(2 << 20, -float(i)), name="x")
    np.testing.assert_array_equal(view, first)
    assert get_value(c, name="x")[0] == -7.0
    del view
    gc.collect()
    c.flush()
    c.close()


def test_failed_put_leaves_nothing_and_keeps_the_name(small_vineyardd):
    c = _core.Client(small_vineyardd.socket)
    put_value(c, np.arange(10), name="keep")
    before = c.status()["memory_usage"]
    with pytest.raises(VineyardError):
        put_value(c, {"a": np.zeros(6 << 20), "b": np.zeros(6 << 20)}, name="keep")  # 96 MiB > 64 MiB
    assert c.status()["memory_usage"] == before
    np.testing.assert_array_equal(get_value(c, name="keep"), np.arange(10))
    c.close()


@pytest.mark.parametrize("flavour", ["object", {"storage": "pyarrow", "na": "nan"}])
def test_invalid_utf8_in_a_string_column_fails_the_load(client, vineyardd, flavour):
    """As the probe did it: in-bounds offsets over bytes that are not UTF-8
    (each item cuts "é" in two). The load fails with a LayoutError (a
    DatasetError through the dataset) instead of a later pandas error."""
    from vineyard.contrib.kedro._compat import DatasetError
    from vineyard.contrib.kedro.codec.pandas.arrays import string_tree
    from vineyard.contrib.kedro.io import VineyardDataSet

    data = pa.py_buffer("aébc".encode())
    offsets = pa.py_buffer(np.array([0, 2, 4, 5], dtype=np.int64).tobytes())  # "a\xc3", "\xa9b", "c"
    bad = pa.Array.from_buffers(pa.large_string(), 3, [None, offsets, data])
    w = Writer()
    tree = encode(pd.DataFrame({"s": ["x", "y", "z"]}), w)
    tree["__values_-value-0"] = string_tree(bad, w, flavour)
    object_id, _, _, _ = client.put(tree, w.buffers, name=f"bad/utf8_{len(str(flavour))}", persist=True)
    with pytest.raises(LayoutError, match="not valid UTF-8"):
        get_value(client, id=object_id)
    ds = VineyardDataSet(ds_name=f"utf8_{len(str(flavour))}", namespace="bad", vineyard_ipc_socket=vineyardd.socket)
    with pytest.raises(DatasetError, match="not valid UTF-8"):
        ds.load()
    ds.release()
    good = pa.Array.from_buffers(pa.large_string(), 2, [None, pa.py_buffer(np.array([0, 1, 5], dtype=np.int64).tobytes()), data])
    w = Writer()
    tree = encode(pd.DataFrame({"s": ["x", "y"]}), w)
    tree["__values_-value-0"] = string_tree(good, w, flavour)
    object_id, _, _, _ = client.put(tree, w.buffers, persist=False)
    assert get_value(client, id=object_id)["s"].tolist() == ["a", "ébc"]
    client.delete([object_id])
