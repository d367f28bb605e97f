"""The seam between Python and the core: `Client.put` takes objects that own
their memory (never an address), and loaded Arrow buffers keep their blob
leased through their base."""

from __future__ import annotations

import gc
import pathlib

import numpy as np
import pyarrow as pa
import pytest

from vineyard.contrib.kedro import _core
from vineyard.contrib.kedro.codec import get_value, put_value

PACKAGE = pathlib.Path(_core.__file__).parent


def blob_tree(n: int) -> dict:
    tree = {"typename": "vineyard_kedro::Test", "nbytes": 0}
    for i in range(n):
        tree[f"b{i}"] = {"__blob__": i}
    return tree


def stored_bytes(client, object_id: int, n: int) -> list[bytes]:
    _, meta, blobs = client.get(id=object_id)
    out = []
    for i in range(n):
        bid = meta[f"b{i}"]["id"]
        bid = _core.parse_id(bid) if isinstance(bid, str) else bid
        out.append(blobs[bid].tobytes() if bid in blobs else b"")
    return out


def test_put_takes_owning_objects_and_stores_their_c_order_bytes(client):
    c_order = np.arange(24, dtype=np.int32).reshape(4, 6)
    fortran = np.asfortranarray(np.arange(12.0).reshape(3, 4))
    every_other_row = c_order[::2]  # rows contiguous, stride 2 rows
    reversed_rows = c_order[::-1]  # negative stride
    columns = c_order[:, 1:4]  # rows not contiguous in the tree's sense: gathered
    reversed_1d = np.arange(10, dtype=np.int64)[::-3]
    buffers = [
        b"plain bytes",
        bytearray(b"a bytearray"),
        memoryview(b"a memoryview"),
        pa.py_buffer(b"a pyarrow buffer").slice(2, 7),
        c_order,
        fortran,
        every_other_row,
        reversed_rows,
        columns,
        reversed_1d,
        np.empty((0, 3)),
        np.float64(2.5),
        memoryview(np.arange(8, dtype=np.int16))[::2],  # a strided buffer, not an ndarray
    ]
    expected = [
        bytes(b) if not isinstance(b, np.ndarray | np.generic) else np.ascontiguousarray(b).tobytes() for b in buffers[:-1]
    ]
    expected.append(np.arange(8, dtype=np.int16)[::2].tobytes())
    object_id, _, nbytes, _ = client.put(blob_tree(len(buffers)), buffers, persist=False)
    try:
        assert stored_bytes(client, object_id, len(buffers)) == expected
        assert nbytes == sum(len(e) for e in expected)
    finally:
        client.delete([object_id])


@pytest.mark.parametrize(
    ("buffer", "message"),
    [
        (12345, "buffer 0: a buffer is bytes, a numpy array or an object with the buffer protocol, not int"),
        ((12345, 8), "buffer 0: a buffer is bytes, a numpy array or an object with the buffer protocol, not tuple"),
        ("text", "buffer 0: a buffer is bytes, a numpy array or an object with the buffer protocol, not str"),
        (np.array([object(), 1], dtype=object), "buffer 0: an object array has no bytes to store"),
    ],
)
def test_put_refuses_addresses_and_objects_without_owned_bytes(client, buffer, message):
    before = set(client.list_data())
    with pytest.raises(TypeError, match=message.replace("(", r"\(")):
        client.put(blob_tree(1), [buffer], persist=False)
    assert set(client.list_data()) == before  # nothing stored, nothing leaked


def test_a_loaded_arrow_buffer_keeps_its_blob_leased(client):
    table = pa.table({"x": np.arange(1 << 16, dtype=np.float64), "s": [str(i) for i in range(1 << 16)]})
    info = put_value(client, table, persist=False)
    loaded = get_value(client, id=info.id)
    column = loaded.column("x").chunk(0)
    strings = loaded.column("s").chunk(0)
    del loaded
    gc.collect()
    assert client.delete([info.id]) == 1 and client.deferred == 1  # the buffers still lease their blobs
    assert column.to_numpy().tolist() == table.column("x").to_pylist()
    assert strings.to_pylist() == table.column("s").to_pylist()
    assert not np.frombuffer(column.buffers()[1], dtype=np.uint8).flags.writeable
    del column, strings
    gc.collect()
    client.flush()
    assert client.deferred == 0


def test_no_address_crosses_the_seam():
    """No blob exposes an address, and the package never builds memory from
    an integer."""
    assert not hasattr(_core.Blob, "address")
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        for needle in ("foreign_buffer", '__array_interface__["data"]', ".address"):
            assert needle not in text, f"{path.relative_to(PACKAGE)} uses {needle}"
