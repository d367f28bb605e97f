"""Helpers of the reliability tests: bounded waits, process introspection
(/proc), deterministic values, and the worker the concurrency test runs in
several processes."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np

from vineyard.contrib.kedro import _core

HERE = Path(__file__).resolve().parent
EMPTY_BLOB_ID = _core.EMPTY_BLOB_ID


# -- time bounds -----------------------------------------------------------------


class Outcome:
    """What a bounded call did: its value or exception, and how long it took."""

    def __init__(self) -> None:
        self.value: Any = None
        self.error: BaseException | None = None
        self.seconds = 0.0
        self.finished = False


def bounded(fn: Callable[[], Any], limit: float) -> Outcome:
    """Runs `fn` in a daemon thread and waits at most `limit` seconds; the
    caller asserts `finished` (a hang then fails the test instead of the
    whole session)."""
    out = Outcome()

    def run() -> None:
        start = time.monotonic()
        try:
            out.value = fn()
        except BaseException as e:  # noqa: BLE001 - reported to the test
            out.error = e
        out.seconds = time.monotonic() - start
        out.finished = True

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(limit)
    return out


def wait_until(pred: Callable[[], bool], timeout: float, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


# -- this process ------------------------------------------------------------------


def rss_bytes(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# -- sockets of a process --------------------------------------------------------------


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets process `pid` holds open."""
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(int(target[8:-1]))
    return out


def listening_tcp_inodes(pid: int) -> set[int]:
    """Inodes of TCP sockets in LISTEN state (0A) in `pid`'s network namespace."""
    out = set()
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if cols[3] == "0A":
                        out.add(int(cols[9]))
        except FileNotFoundError:
            pass
    return out


def tcp_listeners_of(pid: int) -> set[int]:
    """The TCP sockets `pid` listens on (empty when RPC is off)."""
    return socket_inodes(pid) & listening_tcp_inodes(pid)


# -- values ------------------------------------------------------------------------------


def value_for(writer: str, iteration: int) -> Any:
    """A value that only (writer, iteration) produces: a mix-up is detected
    by comparing with what the reader expects."""
    seed = zlib.crc32(f"{writer}/{iteration}".encode())
    rng = np.random.default_rng(seed)
    kind = iteration % 3
    n = int(rng.integers(1, 200_000))
    if kind == 0:
        return rng.integers(0, 1 << 62, size=n, dtype=np.int64)
    if kind == 1:
        import pandas as pd

        return pd.DataFrame({"w": [writer] * 3, "i": [iteration] * 3, "x": rng.random(3)}).assign(
            big=lambda d: [n, seed, iteration]
        )
    return {"writer": writer, "iteration": iteration, "payload": rng.bytes(int(rng.integers(0, 4096)))}


def same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if hasattr(a, "equals"):
        return type(a) is type(b) and a.equals(b)
    return type(a) is type(b) and a == b


def churn(socket: str, writer: str, seconds: float) -> dict:
    """Saves and loads under names of its own until `seconds` have passed;
    every load must return exactly what this writer saved last under it.
    Returns counts, and the first mismatch found (None when all matched)."""
    from vineyard.contrib.kedro.io import VineyardDataSet

    deadline = time.monotonic() + seconds
    slots = [VineyardDataSet(ds_name=f"slot{k}", vineyard_ipc_socket=socket, namespace=f"conc-{writer}") for k in range(3)]
    last: dict[int, int] = {}
    saves = loads = 0
    mismatch = None
    i = 0
    while time.monotonic() < deadline and mismatch is None:
        k = i % len(slots)
        slots[k].save(value_for(writer, i))
        last[k] = i
        saves += 1
        # Read back what was just written, and an older slot.
        for j in {k, (k + 1) % len(slots)}:
            if j not in last:
                continue
            got = slots[j].load()
            loads += 1
            if not same(value_for(writer, last[j]), got):
                mismatch = f"{writer}: slot {j} should hold iteration {last[j]}, got {str(got)[:200]}"
                break
            del got
        i += 1
    import gc

    gc.collect()  # frames may sit in reference cycles; their views defer deletes
    for s in slots:
        s.release()
    return {"writer": writer, "saves": saves, "loads": loads, "mismatch": mismatch}


def worker_main() -> None:
    """`python reliability_helpers.py churn SOCKET WRITER SECONDS` (a process
    of the concurrency test): prints the churn report as JSON."""
    _, cmd, socket, writer, seconds = sys.argv
    assert cmd == "churn"
    report = churn(socket, writer, float(seconds))
    print(json.dumps(report), flush=True)


def big_saver_main() -> None:
    """`python reliability_helpers.py save SOCKET NAME MIB`: saves a MIB MiB
    array of 7s under NAME, printing "ready" just before (the test kills this
    process during the save)."""
    _, cmd, socket, name, mib = sys.argv
    assert cmd == "save"
    from vineyard.contrib.kedro import _core
    from vineyard.contrib.kedro.codec import put_value

    c = _core.Client(socket)
    c.connect()
    value = np.full(int(mib) << 17, 7, dtype=np.float64)
    print("ready", flush=True)
    put_value(c, value, name=name)
    print("saved", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "churn":
        worker_main()
    elif sys.argv[1] == "save":
        big_saver_main()
