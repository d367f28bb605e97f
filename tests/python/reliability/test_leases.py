"""Lifetimes across processes: a value that one process loaded stays valid
and unchanged while other processes delete it through this package, and its
memory comes back once the holder lets go or dies (SIGKILL included).

Each test runs a real holder process (lease_holder.py) against a private
64 MiB vineyardd, deletes its value from this process (or the CLI), then
fills the store so that vineyardd would hand out the held memory if it had
been freed, and asks the holder whether its array changed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from reliability_helpers import HERE, wait_until
from vineyard.contrib.kedro import _core
from vineyard.contrib.kedro.codec import put_value
from vineyard.contrib.kedro.errors import StoreFullError
from vineyard.contrib.kedro.io import VineyardDataSet

MIB = 1 << 20
N = 2 * MIB  # float64 items: 16 MiB, a quarter of the store
NS = "lease"


@pytest.fixture
def store():
    server = _core.Server(size="64Mi")
    c = _core.Client(server.socket)
    yield server.socket, c
    c.close(abandon=True)
    server.stop()


class Holder:
    def __init__(self, socket: str, ds_name: str = "x") -> None:
        self.p = subprocess.Popen(
            [sys.executable, str(HERE / "lease_holder.py"), socket, NS, ds_name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.expect("loaded")

    def expect(self, want: str) -> str:
        line = self.p.stdout.readline().strip()
        if not line.startswith(want):
            self.p.kill()
            raise AssertionError(f"holder said {line!r}, wanted {want!r}: {self.p.stderr.read()}")
        return line

    def ask(self, cmd: str, want: str) -> str:
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()
        return self.expect(want)

    def close(self) -> None:
        if self.p.poll() is None:
            self.p.stdin.write("exit\n")
            self.p.stdin.flush()
        self.p.wait(30)

    def kill(self) -> None:
        os.kill(self.p.pid, signal.SIGKILL)
        self.p.wait(30)


def cli(socket: str, *args: str) -> str:
    code, out, err = _core.run_cli_captured(["vineyard-kedro", *args, "--socket", socket])
    assert code == 0, out + err
    return out


def usage(c) -> int:
    return c.status()["memory_usage"]


def fill(c) -> list[int]:
    """Saves 42.0 arrays until the store is full: every byte vineyardd can
    hand out is overwritten."""
    ids = []
    for _ in range(4):
        try:
            ids.append(put_value(c, np.full(N, 42.0)).id)
        except StoreFullError:
            break
    return ids


def delete_by(how: str, socket: str, c) -> None:
    ds = VineyardDataSet(ds_name="x", namespace=NS, vineyard_ipc_socket=socket)
    if how == "save":
        ds.save(np.full(N // 2, 3.0))
    elif how == "release":
        ds.release()
    elif how == "rm":
        cli(socket, "rm", f"{NS}/x")
    elif how == "gc":
        cli(socket, "gc", "--namespace", NS)
    else:
        raise ValueError(how)


@pytest.mark.parametrize("how", ["save", "release", "rm", "gc"])
def test_a_holders_view_survives_deletes_by_other_processes(store, how):
    socket, c = store
    base = usage(c)
    VineyardDataSet(ds_name="x", namespace=NS, vineyard_ipc_socket=socket).save(np.ones(N))
    holder = Holder(socket)
    try:
        delete_by(how, socket, c)
        fillers = fill(c)
        holder.ask("check", "same")
        c.delete(fillers)
        # The holder lets go: its release frees the retired object at once.
        held = usage(c)
        holder.ask("drop", "dropped")
        assert wait_until(lambda: usage(c) <= held - N * 8, 10), (usage(c), held)
    finally:
        holder.close()
    c.delete_namespace(f"{NS}/")
    assert wait_until(lambda: usage(c) == base, 10), (usage(c), base)


def test_a_sigkilled_holders_memory_is_reclaimed_by_gc(store):
    socket, c = store
    base = usage(c)
    VineyardDataSet(ds_name="x", namespace=NS, vineyard_ipc_socket=socket).save(np.ones(N))
    holder = Holder(socket)
    report = json.loads(cli(socket, "gc", "--namespace", NS, "--json"))
    assert report["deleted"] == 1 and report["retired"] == 1, report
    c.delete(fill(c))
    holder.ask("check", "same")
    assert usage(c) == base + N * 8, "the retired object stays while its holder lives"
    holder.kill()
    report = json.loads(cli(socket, "gc", "--orphans", "--json"))
    assert report["reclaimed"] == 1, report
    assert wait_until(lambda: usage(c) == base, 10), (usage(c), base)


def test_a_sigkilled_process_that_saved_over_its_own_view_leaves_nothing_after_gc(store):
    """The first leftover of the issue: the deletes a process deferred for
    its own views used to die with it."""
    socket, c = store
    base = usage(c)
    VineyardDataSet(ds_name="x", namespace=NS, vineyard_ipc_socket=socket).save(np.ones(N))
    holder = Holder(socket)
    holder.ask("saveover", "saved")
    holder.ask("check", "same")
    holder.kill()
    cli(socket, "gc", "--orphans")
    # Only the value saved last is left.
    assert wait_until(lambda: usage(c) == base + N * 8, 10), (usage(c), base)
    c.delete_namespace(f"{NS}/")
    assert wait_until(lambda: usage(c) == base, 10), (usage(c), base)


def test_a_holder_that_exits_frees_what_was_retired_under_it(store):
    socket, c = store
    base = usage(c)
    VineyardDataSet(ds_name="x", namespace=NS, vineyard_ipc_socket=socket).save(np.ones(N))
    holder = Holder(socket)
    c.delete_namespace(f"{NS}/")
    assert usage(c) == base + N * 8
    holder.close()  # exits with the view alive: the exit flush frees it
    assert wait_until(lambda: usage(c) == base, 10), (usage(c), base)


def test_concurrent_kedro_runs_with_catalog_entries_neither_crash_nor_read_garbage(tmp_path):
    """Two `kedro run`s (Kedro's own runner) of a project whose intermediates
    are `"{default}"` VineyardDataset entries: both save and load the same
    names, each run's saves replace the other's objects while it reads them.
    Same parameters, so every value either run can read is a right one: a
    run that finishes reports the reference accuracy. A run may also stop
    with a clear DatasetError when the other one released a name it was about
    to load (Kedro releases an intermediate after its last consumer), never
    with a crash or a wrong result. The store goes back to its baseline once
    the names are removed."""
    from kedro_project import accuracy, copy_iris, kedro_env

    server = _core.Server(size="256Mi")
    c = _core.Client(server.socket)
    try:
        base = usage(c)
        projects = []
        for name in ("a", "b"):
            project = copy_iris(tmp_path / name)
            (project / "conf" / "base" / "catalog_vineyard.yml").write_text(
                '"{default}":\n  type: vineyard.contrib.kedro.io.dataset.VineyardDataset\n  ds_name: "{default}"\n'
            )
            projects.append(project)
        env = kedro_env(VINEYARD_IPC_SOCKET=server.socket, VINEYARD_KEDRO_NAMESPACE=None)
        finished = 0
        for _ in range(3):
            procs = [
                subprocess.Popen(
                    [sys.executable, "-m", "kedro", "run"],
                    cwd=p,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
                for p in projects
            ]
            for p in procs:
                out, _ = p.communicate(timeout=300)
                if p.returncode == 0:
                    finished += 1
                    assert accuracy(out) == pytest.approx(0.933, abs=1e-3), out[-3000:]
                else:
                    assert "DatasetError" in out and "it was never saved, or was released or deleted" in out, out[-3000:]
        assert finished >= 1
        names = [n for n, _ in c.list_names()]
        if names:
            cli(server.socket, "rm", *names)
        cli(server.socket, "gc", "--orphans")
        assert wait_until(lambda: usage(c) == base, 10), (usage(c), base)
    finally:
        c.close(abandon=True)
        server.stop()
