"""VineyardDataSet on its own: the Kedro dataset contract."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from kedro.io import DatasetError

from vineyard.contrib.kedro import _core
from vineyard.contrib.kedro.io import VineyardDataset, VineyardDataSet
from vineyard.contrib.kedro.io.dataset import VineyardDataSet as FromModule


def test_import_paths_of_the_old_plugin_still_work():
    import vineyard.contrib.kedro as pkg
    from vineyard.contrib.kedro.runner import ParallelRunner, SequentialRunner, ThreadRunner  # noqa: F401

    assert FromModule is VineyardDataSet is VineyardDataset is pkg.VineyardDataSet
    assert pkg.hooks is not None


def test_save_load_exists_release(vineyardd):
    ds = VineyardDataSet(ds_name="frame", vineyard_ipc_socket=vineyardd.socket, namespace="t-basic")
    df = pd.DataFrame({"a": np.arange(5), "b": np.linspace(0, 1, 5)})
    assert not ds.exists()
    ds.save(df)
    assert ds.exists()
    pd.testing.assert_frame_equal(ds.load(), df, check_exact=True)
    ds.release()
    assert not ds.exists()
    with pytest.raises(DatasetError, match="t-basic/frame"):
        ds.load()


def test_plain_ds_name_is_the_vineyard_name(vineyardd, monkeypatch):
    monkeypatch.delenv("VINEYARD_KEDRO_NAMESPACE", raising=False)
    ds = VineyardDataSet(ds_name="compat_name", vineyard_ipc_socket=vineyardd.socket)
    ds.save(pd.DataFrame({"x": [1.0, 2.0]}))
    c = _core.Client(vineyardd.socket)
    assert c.resolve("compat_name") is not None
    ds.release()
    assert c.resolve("compat_name") is None


def test_namespace_from_environment(vineyardd, monkeypatch):
    monkeypatch.setenv("VINEYARD_KEDRO_NAMESPACE", "wf-123")
    ds = VineyardDataSet(ds_name="y", vineyard_ipc_socket=vineyardd.socket)
    assert ds.object_name == "wf-123/y"


def test_socket_from_environment(vineyardd, monkeypatch):
    monkeypatch.setenv("VINEYARD_IPC_SOCKET", vineyardd.socket)
    ds = VineyardDataSet(ds_name="env_socket", namespace="t-env")
    ds.save(np.arange(3))
    np.testing.assert_array_equal(ds.load(), np.arange(3))
    ds.release()


def test_overwrite_replaces_and_frees_the_old_value(vineyardd):
    c = _core.Client(vineyardd.socket)
    ds = VineyardDataSet(ds_name="over", vineyard_ipc_socket=vineyardd.socket, namespace="t-over")
    ds.save(np.zeros(1 << 20))
    used = c.status()["memory_usage"]
    ds.save(np.ones(1 << 20))
    np.testing.assert_array_equal(ds.load(), np.ones(1 << 20))
    assert c.status()["memory_usage"] == used
    ds.release()


def test_describe_and_repr(vineyardd):
    ds = VineyardDataSet(ds_name="d", vineyard_ipc_socket="/x.sock", namespace="n")
    desc = ds._describe()
    assert desc["ds_name"] == "d" and desc["object_name"] == "n/d" and desc["vineyard_ipc_socket"] == "/x.sock"
    assert "VineyardDataset" in str(ds)


def test_pickles_and_works_in_another_process(vineyardd):
    ds = VineyardDataSet(ds_name="shipped", vineyard_ipc_socket=vineyardd.socket, namespace="t-pickle")
    ds.save(pd.Series([1, 2, 3], name="s"))
    blob = pickle.dumps(ds)
    code = (
        "import pickle, sys; ds = pickle.loads(sys.stdin.buffer.read()); "
        "s = ds.load(); assert s.tolist() == [1, 2, 3] and s.name == 's'; ds.save(s * 2); print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], input=blob, capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr.decode()[-3000:]
    assert ds.load().tolist() == [2, 4, 6]
    ds.release()


def test_dead_socket_is_a_dataset_error_naming_it(tmp_path):
    dead = str(tmp_path / "dead.sock")
    ds = VineyardDataSet(ds_name="x", vineyard_ipc_socket=dead)
    with pytest.raises(DatasetError, match=dead):
        ds.save(np.arange(3))
    with pytest.raises(DatasetError, match=dead):
        ds.exists()


def test_store_full_names_the_bytes_and_keeps_the_old_value(small_vineyardd):
    ds = VineyardDataSet(ds_name="big", vineyard_ipc_socket=small_vineyardd.socket, namespace="t-full")
    c = _core.Client(small_vineyardd.socket)
    ds.save(np.arange(1000))
    used = c.status()["memory_usage"]
    with pytest.raises(DatasetError, match=r"(?s)full.*134217728 bytes"):
        ds.save(np.zeros(1 << 24))  # 128 MiB into a 64 MiB store
    np.testing.assert_array_equal(ds.load(), np.arange(1000))
    assert c.status()["memory_usage"] == used
    ds.release()


def test_unpicklable_value_is_a_dataset_error_and_leaves_nothing(vineyardd):
    ds = VineyardDataSet(ds_name="gen", vineyard_ipc_socket=vineyardd.socket, namespace="t-bad")
    c = _core.Client(vineyardd.socket)
    before = c.status()["memory_usage"]
    with pytest.raises(DatasetError, match="generator"):
        ds.save(x for x in range(3))
    assert not ds.exists()
    assert c.status()["memory_usage"] == before
