"""vineyardd killed (SIGKILL) before, during and after saves and loads, and
under a Kedro run: every case ends in a clear error naming the socket within
a bounded time, never a hang, and a rerun on a live server succeeds.

Bounds: every failing call must end within LIMIT (10 s); a socket nobody
listens on must fail within 2 s (the default connect timeout) plus 0.5 s of
slack for a loaded CI machine."""

from __future__ import annotations

import logging
import os
import signal
import time

import numpy as np
import pytest
from kedro.io import DataCatalog, DatasetError, MemoryDataset
from kedro.pipeline import node, pipeline

from reliability_helpers import bounded, wait_until
from vineyard.contrib.kedro import _connection, _core
from vineyard.contrib.kedro.errors import ConnectError
from vineyard.contrib.kedro.io import VineyardDataSet
from vineyard.contrib.kedro.runner import ParallelRunner, SequentialRunner, ThreadRunner

LIMIT = 10.0
DEAD_SOCKET_LIMIT = 2.5


@pytest.fixture
def server():
    """A private vineyardd this test may kill."""
    s = _core.Server(size="2Gi")
    yield s
    s.stop()


def _dataset(socket: str, name: str = "x") -> VineyardDataSet:
    return VineyardDataSet(ds_name=name, vineyard_ipc_socket=socket, namespace="faults")


def _fails_naming(outcome, socket: str) -> None:
    assert outcome.finished, f"still running after {LIMIT} s: a hang"
    assert outcome.seconds < LIMIT, outcome.seconds
    assert isinstance(outcome.error, DatasetError), repr(outcome.error)
    assert socket in str(outcome.error), str(outcome.error)


# -- a server killed before, after and during saves and loads --------------------------


@pytest.mark.parametrize("op", ["save", "load", "exists"])
def test_killed_before_first_use(server, op):
    socket = server.socket
    ds = _dataset(socket)
    server.kill()
    call = {"save": lambda: ds.save(np.arange(10)), "load": ds.load, "exists": ds.exists}[op]
    out = bounded(call, LIMIT)
    _fails_naming(out, socket)
    assert out.seconds < DEAD_SOCKET_LIMIT, f"a dead socket took {out.seconds:.2f} s"
    assert "cannot connect" in str(out.error)


@pytest.mark.parametrize("op", ["save", "load"])
def test_killed_after_a_save_and_a_load(server, op):
    socket = server.socket
    ds = _dataset(socket)
    ds.save(np.arange(1000))
    kept = ds.load()  # a view into shared memory
    server.kill()
    call = {"save": lambda: ds.save(np.arange(10)), "load": ds.load}[op]
    out = bounded(call, LIMIT)
    _fails_naming(out, socket)
    # The open connection sees the server go at once; no connect retries.
    assert out.seconds < 1.0, out.seconds
    # What was loaded before stays readable: the memory file outlives vineyardd.
    np.testing.assert_array_equal(kept, np.arange(1000))


@pytest.mark.parametrize("op", ["save", "load"])
def test_killed_during_a_large_save_or_load(server, op):
    """A thread saves (or loads) 256 MiB in a loop; the server is killed while
    one call is in flight. That call fails, naming the socket, within LIMIT.
    (A load's socket traffic lasts microseconds: the kill may land between two
    loads, and then the next one fails.)"""
    socket = server.socket
    ds = _dataset(socket, f"big-{op}")
    value = np.full(32 << 20, 1.5)  # 256 MiB
    if op == "load":
        ds.save(value)
    started: list[float] = []

    def loop():
        for _ in range(200):
            started.append(time.monotonic())
            if op == "save":
                ds.save(value)
            else:
                got = ds.load()
                assert got.shape == value.shape
                del got

    runner = bounded(loop, 0)  # runs in the background; joined below
    assert wait_until(lambda: len(started) >= 2, 30), "the loop did not get going"
    killed_at = time.monotonic()
    server.kill()
    assert wait_until(lambda: runner.finished, LIMIT, 0.01), f"still running {LIMIT} s after the kill: a hang"
    assert isinstance(runner.error, DatasetError), repr(runner.error)
    assert socket in str(runner.error), str(runner.error)
    assert time.monotonic() - killed_at < LIMIT
    if op == "save":
        assert started[-1] <= killed_at, "the failing save started after the kill: nothing was in flight"


def test_timeouts_are_settings(monkeypatch, tmp_path):
    # The client's constructor takes them, and rejects nonsense.
    c = _core.Client(str(tmp_path / "none.sock"), connect_timeout=0.2, read_timeout=5, write_timeout=5)
    start = time.monotonic()
    with pytest.raises(ConnectError):
        c.connect()
    assert time.monotonic() - start < 0.7
    with pytest.raises(ValueError):
        _core.Client("/x.sock", connect_timeout=0)
    # The datasets' clients read them from the environment.
    monkeypatch.setenv("VINEYARD_KEDRO_CONNECT_TIMEOUT", "0.3")
    dead = str(tmp_path / "dead.sock")
    ds = VineyardDataSet(ds_name="t", vineyard_ipc_socket=dead)
    out = bounded(ds.exists, LIMIT)
    assert out.finished and isinstance(out.error, DatasetError)
    assert out.seconds < 0.8, out.seconds
    # Default: within 2 s.
    monkeypatch.delenv("VINEYARD_KEDRO_CONNECT_TIMEOUT")
    dead2 = str(tmp_path / "dead2.sock")
    out = bounded(VineyardDataSet(ds_name="t", vineyard_ipc_socket=dead2).exists, LIMIT)
    assert out.finished and isinstance(out.error, DatasetError)
    assert 1.5 < out.seconds < DEAD_SOCKET_LIMIT, out.seconds


@pytest.mark.parametrize("read_timeout", ["1", "300"])
def test_a_frozen_server_is_named_stopped_within_seconds(server, monkeypatch, read_timeout):
    """SIGSTOP, as the probe did it: the server accepts bytes but never
    answers. A wait for a reply checks every second that the server process
    is not stopped, so the error names the stopped server after about 1 s,
    whatever the read timeout (300 s by default); a new connection is
    bounded by the connect timeout, which also bounds the handshake."""
    monkeypatch.setenv("VINEYARD_KEDRO_READ_TIMEOUT", read_timeout)
    monkeypatch.setenv("VINEYARD_KEDRO_CONNECT_TIMEOUT", "1")
    socket = server.socket
    ds = _dataset(socket, "frozen")
    ds.save(np.arange(3))
    os.kill(server.pid, signal.SIGSTOP)
    try:
        out = bounded(ds.load, LIMIT)
        _fails_naming(out, socket)
        assert f"(pid {server.pid}) is stopped" in str(out.error), str(out.error)
        assert 0.9 < out.seconds < 3.0, out.seconds
        # A new connection (the failed one was dropped): bounded as well.
        out = bounded(ds.load, LIMIT)
        _fails_naming(out, socket)
        assert out.seconds < 2.5, out.seconds
    finally:
        os.kill(server.pid, signal.SIGCONT)
    np.testing.assert_array_equal(ds.load(), np.arange(3))  # and it recovers


def test_a_stale_socket_file_fails_within_2_s(tmp_path):
    import socket as so

    path = str(tmp_path / "stale.sock")
    s = so.socket(so.AF_UNIX, so.SOCK_STREAM)
    s.bind(path)
    s.close()  # the file stays, nobody listens: what a killed vineyardd leaves
    out = bounded(lambda: _dataset(path).save(np.arange(3)), LIMIT)
    _fails_naming(out, path)
    assert out.seconds < DEAD_SOCKET_LIMIT, out.seconds


# -- a Kedro run whose vineyardd dies ----------------------------------------------------

def produce():
    return np.arange(100_000)


def kill_then_pass(a):
    # By pid from the environment: ParallelRunner runs this in a worker.
    os.kill(int(os.environ["RELIABILITY_VICTIM_PID"]), signal.SIGKILL)
    return a * 2


def consume(b):
    return int(b.sum())


def _pipeline():
    return pipeline(
        [
            node(produce, None, "a", name="produce"),
            node(kill_then_pass, "a", "b", name="kill"),
            node(consume, "b", "total", name="consume"),
        ]
    )


def total_of(a):
    return int(a.sum())


def _healthy_pipeline():
    return pipeline([node(produce, None, "a", name="produce"), node(total_of, "a", "total", name="sum")])


def _catalog(runner_cls, total):
    if runner_cls is ParallelRunner:
        from kedro.io import SharedMemoryDataCatalog  # what KedroSession uses with a ParallelRunner

        return SharedMemoryDataCatalog({"total": total})
    return DataCatalog({"total": total})


@pytest.mark.parametrize("runner_cls", [SequentialRunner, ThreadRunner, ParallelRunner])
def test_run_whose_vineyardd_is_killed_fails_naming_the_socket_and_a_rerun_succeeds(runner_cls, monkeypatch):
    first = _core.Server(size="256Mi")
    monkeypatch.setenv("RELIABILITY_VICTIM_PID", str(first.pid))
    try:
        catalog = _catalog(runner_cls, MemoryDataset())
        out = bounded(lambda: runner_cls(vineyard_ipc_socket=first.socket).run(_pipeline(), catalog), 60)
        assert out.finished, "the run hung after its vineyardd was killed"
        assert isinstance(out.error, DatasetError), repr(out.error)
        assert first.socket in str(out.error), str(out.error)
        assert "'b'" in str(out.error) or "/b'" in str(out.error), str(out.error)
    finally:
        first.stop()
    # A new server, a new run: it works.
    with _core.Server(size="256Mi") as second:
        total = MemoryDataset()
        catalog = _catalog(runner_cls, total)
        runner_cls(vineyard_ipc_socket=second.socket).run(_healthy_pipeline(), catalog)
        if runner_cls is not ParallelRunner:  # (its workers write their own copy)
            assert catalog.load("total") == int(np.arange(100_000).sum())
        assert _core.Client(second.socket).list_names() == []


def kill_embedded_then_pass(a):
    _connection._embedded.kill()
    return a * 2


def test_embedded_vineyardd_that_dies_mid_run_is_reported_as_such(monkeypatch, caplog):
    monkeypatch.delenv("VINEYARD_IPC_SOCKET", raising=False)
    caplog.set_level(logging.INFO, logger="vineyard.contrib.kedro")
    p = pipeline(
        [
            node(produce, None, "a", name="produce"),
            node(kill_embedded_then_pass, "a", "b", name="kill"),
            node(consume, "b", "total", name="consume"),
        ]
    )
    out = bounded(lambda: SequentialRunner(vineyard_size="256Mi").run(p, DataCatalog({"total": MemoryDataset()})), 60)
    assert out.finished, "the run hung after its embedded vineyardd died"
    assert isinstance(out.error, DatasetError), repr(out.error)
    message = str(out.error)
    assert "the embedded vineyardd died during the run" in message, message
    started = [r.getMessage() for r in caplog.records if "Started an embedded vineyardd" in r.getMessage()]
    assert started and started[0].split(" at ")[1].split(" ")[0] in message
    assert _connection._embedded is None, "the dead embedded server was not released"
    # The next run starts a new embedded vineyardd and succeeds.
    total = MemoryDataset()
    SequentialRunner(vineyard_size="256Mi").run(_healthy_pipeline(), DataCatalog({"total": total}))
    assert total.load() == int(np.arange(100_000).sum())


def test_a_live_embedded_server_is_not_reported_dead(monkeypatch):
    """The "died" note must not appear for other connection errors."""
    socket = _connection.acquire_embedded("64Mi")
    try:
        assert not _connection.embedded_is_dead(socket)
        assert not _connection.embedded_is_dead("/some/other.sock")
        _connection._embedded.kill()
        assert _connection.embedded_is_dead(socket)
    finally:
        _connection.release_embedded()


def test_a_sigkilled_owner_leaves_a_directory_the_next_launch_removes(tmp_path):
    """As the probe did it: a process that started a vineyardd is SIGKILLed
    (no cleanup runs; its vineyardd dies with it), leaving its private
    directory; the next launch in the same place removes it."""
    import subprocess
    import sys

    script = (
        "import sys, time\n"
        "from vineyard.contrib.kedro import _core\n"
        f"s = _core.Server(size='32Mi', parent_dir={str(tmp_path)!r})\n"
        "print(s.dir, s.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        left, server_pid = proc.stdout.readline().split()
    finally:
        proc.kill()
        proc.wait()
    def server_gone() -> bool:
        import socket as sk

        with sk.socket(sk.AF_UNIX) as probe:
            return probe.connect_ex(os.path.join(left, "vineyard.sock")) != 0

    assert wait_until(server_gone, 10), f"vineyardd {server_pid} outlived its owner"
    assert os.path.isdir(left)
    with _core.Server(size="32Mi", parent_dir=str(tmp_path)) as fresh:
        assert not os.path.exists(left), "the dead owner's directory is still there"
        assert os.path.isdir(fresh.dir)
