"""Migration throughput between two local vineyardd instances, side by side
with a plain copy of the same bytes.

Starts a local cluster (one etcd, two vineyardd with --meta=etcd; see
tests/python/cluster/local_cluster.py), stores a 1 GiB numeric DataFrame through instance
A, then repeatedly migrates it to instance B (``Client.migrate``: B pulls
the blobs over RPC from A, allocates and seals its own copy) and deletes the
copy again. The baseline copies the same bytes with numpy into freshly
allocated memory (page faults included, as for the migrated copy). Prints
one line per variant with the median of the repetitions:

    python benches/migration_bench.py [--gib 1] [--reps 5] [--no-uncompressed]

The default vineyardd compresses migration traffic with zstd
(``--compression=true``); the second variant starts both instances with
``--compression=false`` to show what that costs on one host.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "python" / "cluster"))
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
if "GLOG_log_dir" not in os.environ:  # a private directory, removed at exit
    os.environ["GLOG_log_dir"] = tempfile.mkdtemp(prefix="vineyard-kedro-bench-glog-")
    atexit.register(shutil.rmtree, os.environ["GLOG_log_dir"], True)

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from local_cluster import LocalCluster, free_port  # noqa: E402

from vineyard.contrib.kedro import _core  # noqa: E402
from vineyard.contrib.kedro.codec import get_value, put_value  # noqa: E402

GIB = 1 << 30


def frame(nbytes: int) -> pd.DataFrame:
    cols = 8
    rows = nbytes // (8 * cols)
    rng = np.random.default_rng(0)
    return pd.DataFrame({f"c{i}": rng.random(rows) for i in range(cols)})


class RawServer:
    """A vineyardd started by hand, for flags `_core.Server` does not take."""

    def __init__(self, binary: str, etcd: str, prefix: str, size: str, extra: list[str]):
        self.dir = tempfile.mkdtemp(prefix="vineyard-kedro-bench-")
        self.socket = os.path.join(self.dir, "vineyard.sock")
        self.rpc_port = free_port()
        self.proc = subprocess.Popen(
            [
                binary,
                f"--socket={self.socket}",
                f"--size={size}",
                "--meta=etcd",
                f"--etcd_endpoint={etcd}",
                f"--etcd_prefix={prefix}",
                f"--rpc_socket_port={self.rpc_port}",
                *extra,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(self.dir, "stderr"), "wb"),  # noqa: SIM115
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                _core.Client(self.socket, connect_timeout=0.2).connect()
                return
            except _core.VineyardError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("vineyardd did not start") from None
                time.sleep(0.05)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def measure(sock_a: str, sock_b: str, df: pd.DataFrame, reps: int) -> tuple[list[float], list[float], int]:
    a, b = _core.Client(sock_a), _core.Client(sock_b)
    info = put_value(a, df, name="bench/df")
    deadline = time.monotonic() + 10
    while b.resolve("bench/df") is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    migrate, load = [], []
    for _ in range(reps):
        t = time.perf_counter()
        copy = b.migrate(info.id)
        migrate.append(time.perf_counter() - t)
        assert copy != info.id
        t = time.perf_counter()
        out = get_value(b, id=copy)  # zero-copy rebuild of the local copy
        load.append(time.perf_counter() - t)
        assert out.shape == df.shape and out.iloc[-1, -1] == df.iloc[-1, -1]
        del out
        b.flush(all=True)
        b.delete([copy])
        b.flush(all=True)
        deadline = time.monotonic() + 10
        while b.status()["memory_usage"] != 0:
            assert time.monotonic() < deadline, "the copy was not freed"
            time.sleep(0.01)
    a.drop_name("bench/df")
    a.delete([info.id])
    return migrate, load, info.nbytes


def memcpy(df: pd.DataFrame, reps: int) -> tuple[list[float], int]:
    cols = [np.ascontiguousarray(df[c].to_numpy()).view(np.uint8) for c in df.columns]
    nbytes = sum(c.nbytes for c in cols)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        for src in cols:
            dst = np.empty_like(src)  # fresh memory, faulted in by the copy
            np.copyto(dst, src)
        times.append(time.perf_counter() - t)
        del dst
    return times, nbytes


def line(label: str, times: list[float], nbytes: int) -> str:
    med = statistics.median(times)
    return (
        f"{label:<44} median {med * 1000:8.1f} ms  {nbytes / med / GIB:6.2f} GiB/s"
        f"  (n={len(times)}, min {min(times) * 1000:.1f} ms, max {max(times) * 1000:.1f} ms)"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gib", type=float, default=1.0, help="DataFrame size in GiB (default 1)")
    p.add_argument("--reps", type=int, default=5, help="repetitions per variant (default 5)")
    p.add_argument("--no-uncompressed", action="store_true", help="skip the --compression=false variant")
    args = p.parse_args()
    nbytes = int(args.gib * GIB)
    size = f"{max(2, int(args.gib * 2) + 1)}Gi"
    df = frame(nbytes)
    gib = sum(df[c].nbytes for c in df.columns) / GIB
    print(f"migration benchmark: {gib:.2f} GiB DataFrame ({df.shape[1]} float64 columns), {args.reps} reps, 2 local instances")

    copy_t, copy_n = memcpy(df, args.reps)
    print(line("plain copy (numpy, fresh memory)", copy_t, copy_n))

    with LocalCluster(2, size=size) as cluster:
        mig, load, n = measure(cluster.sockets[0], cluster.sockets[1], df, args.reps)
    print(line("migrate A->B (vineyardd default, zstd on)", mig, n))
    print(f"{'then loading the local copy on B (zero-copy)':<44} median {statistics.median(load) * 1000:8.1f} ms")

    if not args.no_uncompressed:
        with LocalCluster(0) as etcd:
            binary = _core.find_vineyardd()
            servers = [RawServer(binary, etcd.etcd_endpoint, etcd.prefix, size, ["--compression=false"]) for _ in range(2)]
            try:
                mig2, _, n2 = measure(servers[0].socket, servers[1].socket, df, args.reps)
            finally:
                for s in servers:
                    s.close()
        print(line("migrate A->B (--compression=false)", mig2, n2))
        ratio = statistics.median(mig2) / statistics.median(copy_t)
        print(f"uncompressed migration takes {ratio:.1f}x the plain copy")
    ratio = statistics.median(mig) / statistics.median(copy_t)
    print(f"default migration takes {ratio:.1f}x the plain copy")


if __name__ == "__main__":
    main()
