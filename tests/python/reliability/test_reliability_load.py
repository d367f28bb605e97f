"""Load on one vineyardd: many writers at once, many cycles in a row, and
what other users of the machine can reach.

* Concurrency: 8 processes and 8 threads save and load for CHURN_SECONDS
  (10 s; 60 s with --runslow); every load must return exactly what its
  writer saved (values derive from (writer, iteration)).
* Leaks: CYCLES save/load/release cycles of a 16 MiB frame (200; 1000 with
  --runslow): vineyardd's memory back to its baseline exactly, client RSS
  growth < 32 MiB, open fds growth <= 2.
* Security: the embedded vineyardd's socket is in a 0700 directory of ours,
  it listens on no TCP port (RPC off), and a run never loads a name outside
  its namespace.
"""

from __future__ import annotations

import gc
import json
import os
import stat
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest
from kedro.io import DataCatalog, DatasetError, MemoryDataset
from kedro.pipeline import node, pipeline

from reliability_helpers import HERE, churn, open_fds, rss_bytes, tcp_listeners_of, wait_until
from vineyard.contrib.kedro import _connection, _core
from vineyard.contrib.kedro.codec import put_value
from vineyard.contrib.kedro.io import VineyardDataSet
from vineyard.contrib.kedro.runner import SequentialRunner

MIB = 1 << 20


@pytest.fixture
def runslow(request) -> bool:
    return bool(request.config.getoption("--runslow"))


# -- concurrency ---------------------------------------------------------------------------


@pytest.mark.parametrize("slow", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["ci", "long"])
def test_8_processes_and_8_threads_churn_without_mixing_values(slow):
    seconds = 60.0 if slow else 10.0
    with _core.Server(size="2Gi") as server:
        socket = server.socket
        procs = [
            subprocess.Popen(
                [sys.executable, str(HERE / "reliability_helpers.py"), "churn", socket, f"p{i}", str(seconds)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(8)
        ]
        reports: list[dict] = []
        errors: list[BaseException] = []

        def thread(i: int) -> None:
            try:
                reports.append(churn(socket, f"t{i}", seconds))
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=thread, args=(i,), daemon=True) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(seconds + 60)
            assert not t.is_alive(), "a thread hung"
        for p in procs:
            out, err = p.communicate(timeout=seconds + 60)
            assert p.returncode == 0, err[-3000:]
            reports.append(json.loads(out.strip().splitlines()[-1]))
        assert not errors, errors
        assert len(reports) == 16
        mismatches = [r["mismatch"] for r in reports if r["mismatch"]]
        assert not mismatches, mismatches
        assert all(r["saves"] >= 3 and r["loads"] >= 3 for r in reports), reports
        total = sum(r["saves"] + r["loads"] for r in reports)
        print(f"churn: 16 writers, {seconds:.0f} s, {total} saves+loads")
        c = _core.Client(socket)
        assert c.list_names() == []
        assert wait_until(lambda: c.status()["memory_usage"] == 0, 10), c.status()


# -- leaks ---------------------------------------------------------------------------------


def _frame() -> pd.DataFrame:
    return pd.DataFrame({"a": np.arange(MIB, dtype=np.float64), "b": np.arange(MIB, dtype=np.int64)})  # 16 MiB


@pytest.mark.parametrize("slow", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["ci", "long"])
def test_save_load_release_cycles_leak_nothing(slow):
    cycles = 1000 if slow else 200
    with _core.Server(size="512Mi") as server:
        ds = VineyardDataSet(ds_name="cycle", vineyard_ipc_socket=server.socket, namespace="leak")
        c = _core.Client(server.socket)
        frame = _frame()

        def cycle() -> None:
            ds.save(frame)
            got = ds.load()
            assert got["a"].iloc[-1] == MIB - 1
            del got
            ds.release()

        for _ in range(10):  # warm up: imports, mappings, allocator arenas
            cycle()
        gc.collect()
        usage0, rss0, fds0 = c.status()["memory_usage"], rss_bytes(), open_fds()
        start = time.monotonic()
        for _ in range(cycles):
            cycle()
        seconds = time.monotonic() - start
        gc.collect()
        _connection.client_for(server.socket).flush()
        usage, rss, fds = c.status()["memory_usage"], rss_bytes(), open_fds()
        print(f"{cycles} cycles of 16 MiB in {seconds:.1f} s; rss {(rss - rss0) / MIB:+.1f} MiB, fds {fds - fds0:+d}")
        assert usage == usage0 == 0, f"vineyardd usage {usage} (baseline {usage0})"
        assert rss - rss0 < 32 * MIB, f"client RSS grew by {(rss - rss0) / MIB:.1f} MiB"
        assert fds - fds0 <= 2, f"{fds - fds0} more open fds"
        assert _connection.client_for(server.socket).deferred == 0


# -- security ------------------------------------------------------------------------------


def test_embedded_vineyardd_is_private_and_has_no_rpc():
    socket = _connection.acquire_embedded("256Mi")
    try:
        server = _connection._embedded
        directory = os.path.dirname(socket)
        st = os.stat(directory)
        assert stat.S_IMODE(st.st_mode) == 0o700, oct(st.st_mode)
        assert st.st_uid == os.getuid()
        assert stat.S_ISSOCK(os.stat(socket).st_mode)
        pid = server.pid
        assert pid and not tcp_listeners_of(pid), "the embedded vineyardd listens on TCP"
        meta = _core.Client(socket).cluster_meta()
        assert [m["rpc_endpoint"] for m in meta.values()] == ["0.0.0.0:0"]
    finally:
        _connection.release_embedded()
    assert not os.path.exists(directory), "the private directory outlived the server"


def test_the_tcp_check_sees_an_rpc_listener():
    """The check above can fail: a vineyardd with RPC on is caught by it."""
    import socket as so

    with so.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with _core.Server(size="64Mi", rpc_port=port) as server:
        assert wait_until(lambda: bool(tcp_listeners_of(server.pid)), 10)


FLAG = "reliability-poison-flag"


class Poison:
    """Loading this value runs code (as any pickle may): it creates a file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def produce_mid():
    return pd.DataFrame({"v": [1, 2, 3]})


def consume_mid(mid):
    assert isinstance(mid, pd.DataFrame), f"got a {type(mid)} instead of this run's frame"
    return int(mid["v"].sum())


def test_a_run_never_loads_a_name_outside_its_namespace(vineyardd, tmp_path, monkeypatch):
    """Objects named like the run's datasets, plain and in another namespace,
    hold pickles that create a file when loaded. The run must use only its
    own namespace: its node gets its own frame and the file never appears."""
    flag = tmp_path / FLAG
    c = _core.Client(vineyardd.socket)
    for name in ("mid", "other-run/mid", "kedro-mid/mid"):
        put_value(c, Poison(str(flag)), name=name)
    monkeypatch.delenv("VINEYARD_KEDRO_NAMESPACE", raising=False)
    total = MemoryDataset()
    p = pipeline([node(produce_mid, None, "mid", name="produce"), node(consume_mid, "mid", "total", name="consume")])
    SequentialRunner(vineyard_ipc_socket=vineyardd.socket).run(p, DataCatalog({"total": total}))
    assert total.load() == 6
    assert not flag.exists(), "a run loaded an object outside its namespace"
    # A dataset in namespace A does not see B's name.
    a = VineyardDataSet(ds_name="mid", vineyard_ipc_socket=vineyardd.socket, namespace="ns-a")
    assert not a.exists()
    with pytest.raises(DatasetError, match="ns-a/mid"):
        a.load()
    assert not flag.exists()
    # The poison is real: loading it by its own name does run code.
    VineyardDataSet(ds_name="mid", vineyard_ipc_socket=vineyardd.socket, namespace="other-run").load()
    assert flag.exists()
    for name in ("mid", "other-run/mid", "kedro-mid/mid"):
        c.delete([c.resolve(name)])
        c.drop_name(name)
