"""kedro-viz: VineyardDataset.preview() and _describe()."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from vineyard.contrib.kedro._compat import DatasetError
from vineyard.contrib.kedro.io import VineyardDataset


@pytest.fixture
def saved(vineyardd):
    made = []

    def save(name, value):
        ds = VineyardDataset(ds_name=name, vineyard_ipc_socket=vineyardd.socket, namespace="t-preview")
        ds.save(value)
        made.append(ds)
        return ds

    yield save
    for ds in made:
        ds.release()


def test_preview_of_frames_arrays_and_tables(saved):
    df = pd.DataFrame({"a": np.arange(100), "s": [f"v{i}" for i in range(100)], "f": np.linspace(0, 1, 100)})
    p = saved("frame", df).preview(nrows=3, ncolumns=2)
    assert p == {"index": [0, 1, 2], "columns": ["a", "s"], "data": [[0, "v0"], [1, "v1"], [2, "v2"]]}
    json.dumps(p)
    assert saved("series", df["f"]).preview(nrows=2)["data"] == [[0.0], [df["f"][1]]]
    p = saved("cube", np.arange(60).reshape(5, 3, 4)).preview(nrows=2, ncolumns=5)
    assert p["data"] == [[0, 1, 2, 3, 4], [12, 13, 14, 15, 16]]
    assert saved("vector", np.arange(10)).preview(nrows=3)["data"] == [[0], [1], [2]]
    p = saved("table", pa.table({"x": [1, 2, 3], "y": ["a", "b", None]})).preview(nrows=2)
    assert p == {"index": [0, 1], "columns": ["x", "y"], "data": [[1, "a"], [2, "b"]]}
    assert saved("plain", {"epoch": 3, "loss": 0.25}).preview()["data"] == [[3], [0.25]]


def test_preview_return_type_is_what_kedro_viz_looks_for():
    import inspect

    ann = inspect.signature(VineyardDataset.preview).return_annotation
    assert getattr(ann, "__name__", ann) == "TablePreview"


def test_preview_without_a_configured_vineyardd_starts_nothing(monkeypatch):
    from vineyard.contrib.kedro import _connection

    monkeypatch.delenv("VINEYARD_IPC_SOCKET", raising=False)
    assert _connection.embedded_socket() is None
    with pytest.raises(DatasetError, match="no vineyardd configured"):
        VineyardDataset(ds_name="x").preview()
    assert _connection.embedded_socket() is None


def test_describe_says_where_the_object_lives(vineyardd, monkeypatch):
    monkeypatch.delenv("VINEYARD_IPC_SOCKET", raising=False)
    ds = VineyardDataset(ds_name="d", namespace="n", vineyard_ipc_socket=vineyardd.socket)
    assert ds._describe()["stored_in"] == f"'n/d' in vineyardd at {vineyardd.socket}"
    monkeypatch.setenv("VINEYARD_IPC_SOCKET", vineyardd.socket)
    assert ds._describe()["stored_in"] == f"'n/d' in vineyardd at {vineyardd.socket}"
    assert "(from $VINEYARD_IPC_SOCKET)" in VineyardDataset(ds_name="e")._describe()["stored_in"]
    monkeypatch.delenv("VINEYARD_IPC_SOCKET")
    assert "no vineyardd configured" in VineyardDataset(ds_name="e")._describe()["stored_in"]


MEASURE = r"""
import json, sys
from vineyard.contrib.kedro.io import VineyardDataset

def rss():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmRSS:"))

socket = sys.argv[1]
VineyardDataset(ds_name="tiny", namespace="t-preview", vineyard_ipc_socket=socket).preview()  # imports, connection, code
out = {}
for name in ("big", "strings"):
    ds = VineyardDataset(ds_name=name, namespace="t-preview", vineyard_ipc_socket=socket)
    before = rss()
    shown = ds.preview(nrows=5)
    after_preview = rss()
    value = ds.load()
    float(value.select_dtypes("number").to_numpy().sum())  # touch every number
    after_load = rss()
    out[name] = {"preview": after_preview - before, "load": after_load - after_preview, "rows": shown["data"]}
    del value
print(json.dumps(out))
"""


def test_preview_reads_only_what_it_shows(saved, vineyardd):
    """In a fresh process, the preview of a 256 MiB numeric frame, and of a
    frame of 2 M Python strings, adds under 1 MiB of resident memory; loading
    the whole frame adds far more (the counter-check that the measure sees
    shared memory and decoded strings)."""
    # Its preview loads the code both previews run (numbers and strings):
    # the pages of code a first use faults in are not the data's.
    saved("tiny", pd.DataFrame({"a": [1], "s": pd.Series(["x"], dtype=object)}))
    saved("big", pd.DataFrame(np.ones((4 << 20, 8))))
    n = 2 << 20
    saved("strings", pd.DataFrame({"i": np.arange(n), "s": pd.Series([f"value {i}" for i in range(n)], dtype=object)}))
    out = subprocess.run([sys.executable, "-c", MEASURE, vineyardd.socket], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["big"]["rows"] == [[1.0] * 8] * 5
    assert got["strings"]["rows"] == [[i, f"value {i}"] for i in range(5)]
    assert got["big"]["load"] > 200 << 20, got
    assert got["strings"]["load"] > 50 << 20, got
    assert got["big"]["preview"] < 1 << 20, got
    assert got["strings"]["preview"] < 1 << 20, got
