"""The store's integrity under pressure: a save that does not fit, a writer
SIGKILLed mid-save, values that cannot be stored, and metadata written by a
hostile peer. Nothing half-written may stay allocated or become visible."""

from __future__ import annotations

import copy
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kedro.io import DatasetError

from reliability_helpers import EMPTY_BLOB_ID, HERE, wait_until
from vineyard.contrib.kedro import _core
from vineyard.contrib.kedro.codec import get_value, put_value
from vineyard.contrib.kedro.errors import LayoutError, VineyardError
from vineyard.contrib.kedro.io import VineyardDataSet

MIB = 1 << 20


def usage(c) -> int:
    return c.status()["memory_usage"]


def blob_ids(c) -> set[int]:
    return set(c.list_data("vineyard::Blob"))


def gc(socket: str, *args: str) -> dict:
    code, out, err = _core.run_cli_captured(["vineyard-kedro", "gc", "--socket", socket, "--json", *args])
    assert code == 0, out + err
    return json.loads(out)


# -- store full ------------------------------------------------------------------------


def test_a_frame_larger_than_the_store_fails_and_changes_nothing(small_vineyardd):
    """64 MiB store, 8 MiB already under the name: a 4-column 64 MiB frame
    fails with the bytes asked for and free; the old value, the memory usage
    and the set of blobs are exactly as before."""
    socket = small_vineyardd.socket
    c = _core.Client(socket)
    ds = VineyardDataSet(ds_name="frame", vineyard_ipc_socket=socket, namespace="full")
    old = pd.DataFrame({"a": np.arange(MIB, dtype=np.int64)})
    ds.save(old)
    before, blobs, names = usage(c), blob_ids(c), c.list_names()
    free = 64 * MIB - before
    big = pd.DataFrame({k: np.full(2 * MIB, i, dtype=np.float64) for i, k in enumerate("wxyz")})
    with pytest.raises(DatasetError) as info:
        ds.save(big)
    message = str(info.value)
    assert "full/frame" in message and socket in message, message
    found = re.search(r"asked for (\d+) bytes, (\d+) of (\d+) bytes free", message)
    assert found, message
    requested, available, limit = map(int, found.groups())
    assert requested >= 64 * MIB, message
    assert available == free and limit == 64 * MIB, message
    assert usage(c) == before, "a failed save left memory allocated"
    assert blob_ids(c) == blobs and c.list_names() == names
    pd.testing.assert_frame_equal(ds.load(), old)
    ds.release()


def test_saves_that_barely_fit_succeed_and_failures_do_not_creep(small_vineyardd):
    """Near the limit the client allocates blob by blob; 30 failing saves in a
    row leave the usage where it was, and a save that fits still works."""
    socket = small_vineyardd.socket
    c = _core.Client(socket)
    ds = VineyardDataSet(ds_name="tight", vineyard_ipc_socket=socket, namespace="full")
    base = usage(c)
    too_big = pd.DataFrame({"a": np.zeros(3 * MIB), "b": np.zeros(3 * MIB), "c": np.zeros(3 * MIB)})  # 72 MiB
    for _ in range(30):
        with pytest.raises(DatasetError, match="full"):
            ds.save(too_big)
    assert usage(c) == base
    fits = pd.DataFrame({"a": np.ones(3 * MIB), "b": np.ones(3 * MIB)})  # 48 MiB of 64
    ds.save(fits)
    pd.testing.assert_frame_equal(ds.load(), fits)
    ds.release()
    assert wait_until(lambda: usage(c) == base, 5)


# -- a writer killed mid-save -----------------------------------------------------------


def _spawn_saver(socket: str, name: str, mib: int) -> subprocess.Popen:
    p = subprocess.Popen(
        [sys.executable, str(HERE / "reliability_helpers.py"), "save", socket, name, str(mib)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen = []
    for line in p.stdout:  # Kedro may log to stdout first
        seen.append(line)
        if line.strip() == "ready":
            return p
    raise AssertionError("the saver never got ready: " + "".join(seen) + p.stderr.read())


@pytest.fixture(scope="module")
def big_vineyardd():
    s = _core.Server(size="3Gi")
    yield s
    s.stop()


def test_a_writer_killed_mid_save_leaves_no_partial_object_and_gc_reclaims_its_blobs(big_vineyardd):
    """SIGKILL of a process saving 1 GiB under a name that holds an old value:
    the name keeps the old value (or, if the save finished, the whole new
    one), never a partial object; the dead writer's blobs are freed by
    `vineyard-kedro gc --orphans`, back to the exact usage before. Attempts
    with shorter delays are made until one kill lands mid-save."""
    socket = big_vineyardd.socket
    c = _core.Client(socket)
    name = "killed/victim"
    old = np.arange(10)
    put_value(c, old, name=name)
    base, blobs = usage(c), blob_ids(c)
    observed = []
    for delay in (0.2, 0.1, 0.05, 0.3, 0.02):
        p = _spawn_saver(socket, name, 1024)
        time.sleep(delay)
        os.kill(p.pid, signal.SIGKILL)
        p.wait(30)
        got = get_value(c, name=name)
        if got.shape == old.shape:
            np.testing.assert_array_equal(got, old)
        else:  # the save finished before the kill: all of it, then
            assert got.shape == (1 << 27,) and bool((got == 7).all())
            del got
            put_value(c, old, name=name)
            assert wait_until(lambda: usage(c) == base, 5)
            continue
        del got
        leaked = usage(c) - base
        report = gc(socket, "--orphans")
        assert usage(c) == base, f"gc left {usage(c) - base} bytes (report {report})"
        assert blob_ids(c) == blobs
        if leaked:
            assert report["orphan_blobs"] >= 1 and report["orphan_bytes"] == leaked, report
            observed.append((delay, leaked))
            break
    assert observed, "no kill landed during a save: the test did not test anything"
    np.testing.assert_array_equal(get_value(c, name=name), old)


def test_a_killed_runs_namespace_and_blobs_are_reclaimed_by_gc(big_vineyardd):
    """A run killed mid-save leaves its finished objects under its namespace
    and its interrupted save's blobs: `gc --namespace NS --orphans` frees both."""
    socket = big_vineyardd.socket
    c = _core.Client(socket)
    base, names = usage(c), c.list_names()
    put_value(c, pd.DataFrame({"x": np.arange(1000)}), name="deadrun/first")
    for delay in (0.2, 0.1, 0.3):
        p = _spawn_saver(socket, "deadrun/second", 1024)
        time.sleep(delay)
        os.kill(p.pid, signal.SIGKILL)
        p.wait(30)
        if c.resolve("deadrun/second") is None:
            break
    report = gc(socket, "--namespace", "deadrun", "--orphans")
    assert report["deleted"] >= 1
    assert c.list_names() == names
    assert wait_until(lambda: usage(c) == base, 5), usage(c) - base


def test_gc_orphans_spares_a_live_writers_save_in_progress(big_vineyardd):
    """A gc running while another process is in the middle of a large save
    must not free that save's blobs: the save completes and reads back."""
    socket = big_vineyardd.socket
    c = _core.Client(socket)
    p = _spawn_saver(socket, "live/save", 512)
    reports = []
    while p.poll() is None:
        reports.append(gc(socket, "--orphans"))
    out, err = p.communicate()
    assert p.returncode == 0 and "saved" in out, out + err
    assert all(r["orphan_blobs"] == 0 for r in reports), reports
    got = get_value(c, name="live/save")
    assert got.shape == (512 << 17,) and bool((got == 7).all())
    del got
    c.drop_name("live/save")


# -- values that cannot be stored --------------------------------------------------------


class RaisesOnPickle:
    def __reduce__(self):
        raise RuntimeError("refuses to be pickled")


class RaisesInGetstate:
    def __getstate__(self):
        raise ValueError("broken __getstate__")


def _deep(n: int):
    v: list = []
    for _ in range(n):
        v = [v]
    return v


BAD_VALUES = {
    "generator": lambda: (x for x in range(3)),
    "lambda": lambda: (lambda: 1),
    "lock": lambda: threading.Lock(),
    "raises_on_pickle": lambda: RaisesOnPickle(),
    "raises_in_getstate": lambda: RaisesInGetstate(),
    "nested_unpicklable": lambda: {"ok": np.arange(MIB), "bad": [RaisesOnPickle()]},
    "object_array": lambda: np.array([RaisesOnPickle(), 1], dtype=object),
    "frame_with_a_generator": lambda: pd.DataFrame({"g": [(x for x in range(2)), 1]}),
    "too_deep": lambda: _deep(100_000),
}


@pytest.mark.parametrize("kind", sorted(BAD_VALUES))
def test_a_value_that_cannot_be_stored_is_a_dataset_error_and_leaves_nothing(vineyardd, kind):
    value = BAD_VALUES[kind]()
    c = _core.Client(vineyardd.socket)
    ds = VineyardDataSet(ds_name=f"bad-{kind}", vineyard_ipc_socket=vineyardd.socket, namespace="badvalues")
    ds.save(np.arange(5))  # an old value that must survive
    before, blobs, names = usage(c), blob_ids(c), c.list_names()
    with pytest.raises(DatasetError) as info:
        ds.save(value)
    message = str(info.value)
    assert f"badvalues/bad-{kind}" in message, message
    assert type(value).__qualname__ in message, message
    assert usage(c) == before and blob_ids(c) == blobs and c.list_names() == names
    np.testing.assert_array_equal(ds.load(), np.arange(5))
    ds.release()


@pytest.mark.parametrize("value", [10**10000, -(10**5000), 2**64, [10**4300, -1]], ids=["10e10000", "neg", "2e64", "list"])
def test_huge_ints_round_trip_exactly(vineyardd, value):
    ds = VineyardDataSet(ds_name="huge", vineyard_ipc_socket=vineyardd.socket, namespace="badvalues")
    ds.save(value)
    got = ds.load()
    assert type(got) is type(value) and got == value
    ds.release()


# -- metadata from a hostile peer ---------------------------------------------------------


def _tree_of(meta: dict, blobs: dict, buffers: list, sizes: list) -> dict:
    """A put tree that recreates `meta` (its blobs become fresh copies)."""
    tree = {}
    for k, v in meta.items():
        if k in ("id", "signature", "instance_id", "transient", "__timestamp", "__name", "global"):
            continue
        if isinstance(v, dict):
            bid = int(v["id"][1:], 16)
            if bid & EMPTY_BLOB_ID:
                data = b"" if bid == EMPTY_BLOB_ID else blobs[bid].tobytes()
                buffers.append(data)
                sizes.append(len(data))
                tree[k] = {"__blob__": len(buffers) - 1}
            else:
                tree[k] = _tree_of(v, blobs, buffers, sizes)
        else:
            tree[k] = v
    return tree


def _template(c, value) -> tuple[dict, list]:
    info = put_value(c, value)
    _, meta, blobs = c.get(id=info.id)
    buffers: list = []
    tree = _tree_of(meta, blobs, buffers, [])
    del blobs
    c.delete([info.id])
    return tree, buffers


def _put_raw(c, tree: dict, buffers: list) -> int:
    object_id, _, _, _ = c.put(tree, buffers, persist=False)
    return object_id


def _tensor(shape: str, blob: bytes = bytes(16), **extra) -> tuple[dict, list]:
    tree = {
        "typename": "vineyard::Tensor<int64>",
        "value_type_": "int64",
        "value_type_meta_": "<i8",
        "order_": '"C"',
        "partition_index_": "[]",
        "shape_": shape,
        "buffer_": {"__blob__": 0},
    }
    tree.update(extra)
    return tree, [blob]


def _binary(offsets, data: bytes, length: int, offset: int = 0) -> tuple[dict, list]:
    return (
        {
            "typename": "vineyard::BaseBinaryArray<arrow::LargeStringArray>",
            "length_": length,
            "null_count_": 0,
            "offset_": offset,
            "buffer_offsets_": {"__blob__": 0},
            "buffer_data_": {"__blob__": 1},
            "null_bitmap_": {"__blob__": 2},
        },
        [np.array(offsets, dtype=np.int64).tobytes(), data, b""],
    )


def _numeric(length, offset=0, null_count=0, blob=bytes(16), bitmap=b"") -> tuple[dict, list]:
    return (
        {
            "typename": "vineyard::NumericArray<int64>",
            "length_": length,
            "null_count_": null_count,
            "offset_": offset,
            "buffer_": {"__blob__": 0},
            "null_bitmap_": {"__blob__": 1},
        },
        [blob, bitmap],
    )


HOSTILE = {
    "huge_shape_small_blob": lambda: _tensor("[1000000000]"),
    "shape_product_overflows": lambda: _tensor("[4611686018427387904, 4]"),
    "negative_shape": lambda: _tensor("[-1]"),
    "shape_not_json": lambda: _tensor("nope"),
    "shape_of_strings": lambda: _tensor('["a", "b"]'),
    "shape_is_an_object": lambda: _tensor('{"a": 1}'),
    "float_shape": lambda: _tensor("[1e300]"),
    # (Readers take the first valid spelling of the element type among
    # value_type_meta_, value_type_ and the typename, so all three lie here.)
    "unknown_dtype": lambda: _tensor(
        "[2]", value_type_="complex512", value_type_meta_="<c64", typename="vineyard::Tensor<complex512>"
    ),
    "structured_dtype": lambda: _tensor(
        "[2]", value_type_="[('a', '<i8')]", value_type_meta_="V8", typename="vineyard::Tensor<V8>"
    ),
    "missing_buffer": lambda: ({k: v for k, v in _tensor("[2]")[0].items() if k != "buffer_"}, []),
    "buffer_is_an_object": lambda: (
        dict(_tensor("[2]")[0], buffer_={"typename": "vineyard::Scalar<int>", "value_": 1, "type_": "int"}),
        [bytes(16)],
    ),
    "numeric_length_past_blob": lambda: _numeric(10**9),
    "numeric_offset_past_blob": lambda: _numeric(1, offset=2**62),
    "numeric_negative_length": lambda: _numeric(-5),
    "numeric_length_is_a_string": lambda: _numeric("7"),
    "numeric_nulls_without_bitmap": lambda: _numeric(2, null_count=2),
    "numeric_short_bitmap": lambda: _numeric(64, null_count=1, blob=bytes(512), bitmap=b"\x01"),
    "binary_offsets_past_data": lambda: _binary([0, 5, 1 << 40], b"abc", 2),
    "binary_offsets_backwards": lambda: _binary([3, 1, 2], b"abc", 2),
    "binary_too_few_offsets": lambda: _binary([0], b"abc", 5),
    "binary_negative_offset": lambda: _binary([-8, 2], b"abc", 1),
    "frame_missing_column": lambda: (
        {"typename": "vineyard::DataFrame", "columns_": '["a", "b"]', "__values_-size": 1, "__values_-key-0": '"a"'},
        [],
    ),
    "frame_size_huge": lambda: (
        {"typename": "vineyard::DataFrame", "columns_": "[]", "__values_-size": 10**12},
        [],
    ),
    "unknown_typename": lambda: ({"typename": "no::Such"}, []),
    "scalar_value_wrong_type": lambda: ({"typename": "vineyard::Scalar<int>", "value_": "x", "type_": "int"}, []),
    "garbage_pickle": lambda: ({"typename": "vineyard::PickleBuffer", "size_": 18, "buffer_": {"__blob__": 0}}, [b"not a pickle at all"]),
    "garbage_object_tensor": lambda: _tensor("[2]", blob=b"\x80\x05garbage", value_type_="object", value_type_meta_="|O", typename="vineyard::Tensor<object>"),
    "schema_not_arrow": lambda: (
        {"typename": "vineyard::SchemaProxy", "schema_binary_": '{"bytes": [1, 2, 3]}'},
        [],
    ),
    "table_without_batches": lambda: (
        {"typename": "vineyard::Table", "num_rows_": 5, "num_columns_": 1, "batch_num_": 3, "partitions_-size": 3},
        [],
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_metadata_is_a_layout_error(vineyardd, case):
    """Objects whose metadata lies about their blobs (stored through the real
    server, then read back): a LayoutError (or another VineyardError), never
    a crash, another exception type, or a value read from outside a blob."""
    c = _core.Client(vineyardd.socket)
    tree, buffers = HOSTILE[case]()
    object_id = _put_raw(c, tree, buffers)
    try:
        with pytest.raises(VineyardError) as info:
            get_value(c, id=object_id)
        assert isinstance(info.value, LayoutError), repr(info.value)
    finally:
        c.delete([object_id], force=True)


VALUES = {
    "tensor": lambda: np.arange(24, dtype=np.int32).reshape(2, 3, 4),
    "strings": lambda: np.array(["a", "bc", "def"]),
    "frame": lambda: pd.DataFrame({"i": [1, 2, 3], "s": ["x", None, "z"], "c": pd.Categorical(["a", "b", "a"])}),
    "series": lambda: pd.Series([1.5, None], name="n", index=["p", "q"]),
    "table": lambda: pa.table({"a": [1, None, 3], "b": ["x", "y", None], "l": [[1], [], None]}),
    "plain": lambda: {"a": [1, "two", b"three"], "b": (None, True, 2.5)},
    "objects": lambda: np.array([1, "a", None, 2.5], dtype=object),
    "pickled": lambda: RaisesInGetstate.__mro__,  # a tuple of classes: pickled by reference
}

_TEMPLATES: dict = {}

INT_LIES = [-1, 0, 1, 7, 2**31, 2**62, 2**63 - 1, "12", None, True, 1.5, [1]]
STR_LIES = ["[1000000000000]", "[-3]", "[]", "[2, 2, 2, 2, 2, 2]", "null", "", "[1e308]", '"C"', "{}", "[[1]]", "\"\\u0000\""]


def _paths(tree, prefix=()):
    for k, v in tree.items():
        if isinstance(v, dict):
            if "__blob__" in v:
                yield prefix + (k,), "blob"
            else:
                yield from _paths(v, prefix + (k,))
        else:
            yield prefix + (k,), "leaf"


@st.composite
def mutations(draw):
    kind = draw(st.sampled_from(sorted(VALUES)))
    edits = draw(
        st.lists(
            st.tuples(
                st.integers(0, 10**6),
                st.sampled_from(["int", "str", "drop", "typename", "blob_short", "blob_swap", "blob_garbage"]),
                st.integers(0, 10**6),
            ),
            min_size=1,
            max_size=3,
        )
    )
    return kind, edits


def _apply(tree: dict, buffers: list, edits) -> None:
    for where, op, pick in edits:
        paths = list(_paths(tree))
        path, what = paths[where % len(paths)]
        parent = tree
        for k in path[:-1]:
            parent = parent[k]
        key = path[-1]
        if op == "drop":
            parent.pop(key, None)
        elif op == "int":
            parent[key] = INT_LIES[pick % len(INT_LIES)]
        elif op == "str":
            parent[key] = STR_LIES[pick % len(STR_LIES)]
        elif op == "typename":
            parent["typename"] = ["vineyard::Tensor<int64>", "vineyard::NumericArray<int64>", "vineyard::DataFrame",
                                  "vineyard::Series", "vineyard::Table", "vineyard::Sequence", "vineyard::PickleBuffer",
                                  "vineyard::BaseBinaryArray<arrow::LargeStringArray>"][pick % 8]
        elif what == "blob":
            i = parent[key]["__blob__"]
            data = buffers[i]
            if op == "blob_short":
                buffers[i] = data[: pick % (len(data) + 1)]
            elif op == "blob_swap":
                parent[key] = {"__blob__": pick % len(buffers)}
            else:
                rng = np.random.default_rng(pick)
                buffers[i] = rng.bytes(len(data) or 8)


FUZZ_EXAMPLES = int(os.environ.get("HOSTILE_META_EXAMPLES", "300"))


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(m=mutations())
def test_randomly_corrupted_metadata_never_escapes_as_another_error(vineyardd, m):
    """Valid objects of every codec, re-stored with random lies in their
    metadata and blobs: get_value returns a value or raises VineyardError."""
    kind, edits = m
    c = _TEMPLATES.setdefault("client", _core.Client(vineyardd.socket))
    if kind not in _TEMPLATES:
        _TEMPLATES[kind] = _template(c, VALUES[kind]())
    tree, buffers = copy.deepcopy(_TEMPLATES[kind])
    _apply(tree, buffers, edits)
    try:
        object_id = _put_raw(c, tree, buffers)
    except VineyardError:
        return  # the server refused the lie (e.g. a non-object member)
    try:
        try:
            value = get_value(c, id=object_id)
        except VineyardError:
            return
        repr(value)  # touching every element must not crash either
        del value
    finally:
        c.delete([object_id], force=True)
