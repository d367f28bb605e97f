"""Saves of objects that speak only the Arrow PyCapsule interface
(``__arrow_c_stream__`` / ``__arrow_c_array__``: DuckDB relations, arro3,
nanoarrow, ...): stored in vineyard's Arrow layouts, read back as pyarrow,
and read by the official client."""

from __future__ import annotations

import os
import pickle
import subprocess
import textwrap

import pyarrow as pa
import pytest

from vineyard.contrib.kedro.codec import get_value, put_value
from vineyard.contrib.kedro.errors import UnsupportedValueError


class StreamOnly:
    """Exposes a pyarrow value through ``__arrow_c_stream__`` and nothing else."""

    def __init__(self, value):
        self._value = value

    def __arrow_c_stream__(self, requested_schema=None):
        return self._value.__arrow_c_stream__(requested_schema)


class StreamWithSchema(StreamOnly):
    """A stream that also says what it streams (``__arrow_c_schema__``)."""

    def __arrow_c_schema__(self):
        v = self._value
        return (v.schema if isinstance(v, pa.Table) else v.type).__arrow_c_schema__()


class ArrayOnly:
    """Exposes a pyarrow value through ``__arrow_c_array__`` and nothing else."""

    def __init__(self, value):
        self._value = value

    def __arrow_c_array__(self, requested_schema=None):
        return self._value.__arrow_c_array__(requested_schema)


def sample_table() -> pa.Table:
    batches = [
        pa.record_batch(
            {
                "i": pa.array(range(i, i + 50), pa.int64()),
                "f": pa.array([x * 0.5 if x % 7 else None for x in range(50)], pa.float64()),
                "s": pa.array([f"v{x}" if x % 5 else None for x in range(50)], pa.string()),
                "l": pa.array([[x, x + 1] if x % 3 else [] for x in range(50)], pa.list_(pa.int32())),
                "b": pa.array([x % 2 == 0 for x in range(50)]),
            }
        )
        for i in (0, 50)
    ]
    return pa.Table.from_batches(batches)


def test_stream_only_object_is_stored_as_a_table(client):
    table = sample_table()
    info = put_value(client, StreamOnly(table), persist=False)
    assert info.typename == "vineyard::Table"
    back = get_value(client, id=info.id)
    assert isinstance(back, pa.Table)
    assert back.equals(table, check_metadata=True)
    client.delete([info.id])


def test_array_only_objects_are_stored_as_a_record_batch_or_an_array(client):
    batch = sample_table().to_batches()[0]
    info = put_value(client, ArrayOnly(batch), persist=False)
    assert info.typename == "vineyard::RecordBatch"
    back = get_value(client, id=info.id)
    assert isinstance(back, pa.RecordBatch) and back.equals(batch)
    client.delete([info.id])

    array = pa.array([1.5, None, 3.0])
    info = put_value(client, ArrayOnly(array), persist=False)
    assert info.typename == "vineyard::NumericArray<double>"
    back = get_value(client, id=info.id)
    assert isinstance(back, pa.Array) and back.equals(array)
    client.delete([info.id])


def test_a_stream_of_plain_arrays_is_stored_as_a_chunked_array(client):
    chunked = pa.chunked_array([[1, 2], [3, None]], pa.int16())
    info = put_value(client, StreamWithSchema(chunked), persist=False)
    assert info.typename == "vineyard_kedro::ChunkedArray"
    assert get_value(client, id=info.id).equals(chunked)
    client.delete([info.id])
    info = put_value(client, StreamWithSchema(sample_table()), persist=False)
    assert info.typename == "vineyard::Table"
    client.delete([info.id])


def test_a_stream_that_cannot_be_a_table_is_refused_and_stores_nothing(client):
    before = set(client.list_data())
    with pytest.raises(UnsupportedValueError, match=r"StreamOnly through the Arrow PyCapsule interface"):
        put_value(client, StreamOnly(pa.chunked_array([[1, 2]])), persist=False)
    assert set(client.list_data()) == before


OFFICIAL_READS = """
    import os, pickle
    import vineyard
    client = vineyard.connect(os.environ["SOCKET"])
    res = {}
    for name in ("capsule/table", "capsule/batch"):
        v = client.get(name=name)
        res[name] = (type(v).__name__, {c: v.column(c).to_pylist() for c in v.schema.names})
    with open(os.environ["RESULT"], "wb") as f:
        pickle.dump(res, f)
"""


def test_official_client_reads_what_capsule_objects_saved(client, vineyardd, official_python, tmp_path):
    table = sample_table()
    batch = table.to_batches()[1]
    put_value(client, StreamOnly(table), name="capsule/table")
    put_value(client, ArrayOnly(batch), name="capsule/batch")
    out = tmp_path / "result.pickle"
    env = {**os.environ, "SOCKET": vineyardd.socket, "RESULT": str(out)}
    proc = subprocess.run(
        [official_python, "-c", textwrap.dedent(OFFICIAL_READS)], env=env, capture_output=True, text=True, timeout=300
    )
    try:
        assert proc.returncode == 0, f"official-client script failed:\n{proc.stdout}\n{proc.stderr}"
        with open(out, "rb") as f:
            res = pickle.load(f)
        # Strings and lists come back widened (large_string, large_list): compare values.
        assert res["capsule/table"] == ("Table", table.to_pydict())
        assert res["capsule/batch"] == ("RecordBatch", batch.to_pydict())
    finally:
        for name in ("capsule/table", "capsule/batch"):
            client.delete([client.resolve(name)])
            client.drop_name(name)
