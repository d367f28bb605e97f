"""Migration on a REAL local cluster (one etcd, vineyardd with --meta=etcd;
see cluster.py): values saved through instance A load through instance B,
which migrates them once and then reads its own copy zero-copy."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np
import pandas as pd
import pytest

from vineyard.contrib.kedro import _core
from vineyard.contrib.kedro._cluster import delete_everywhere, delete_namespace_everywhere, find_copies
from vineyard.contrib.kedro.codec import get_value, put_value

A, B, C = 0, 1, 2
MIB = 1 << 20




def resolve(client, name, timeout=10.0):
    """The id a name points to, once this instance sees it."""
    deadline = time.monotonic() + timeout
    while (oid := client.resolve(name)) is None:
        assert time.monotonic() < deadline, f"name {name} never became visible"
        time.sleep(0.02)
    return oid


def local_meta(client, oid):
    """The metadata of the copy of `oid` that `client`'s instance holds."""
    return client.get_meta(client.migrate(oid))


def wait_usage(clients, want, timeout=15.0):
    deadline = time.monotonic() + timeout
    while (now := [c.status()["memory_usage"] for c in clients]) != want:
        assert time.monotonic() < deadline, f"memory_usage {now}, expected {want}"
        time.sleep(0.05)


def test_dataframe_saved_on_a_loads_on_b_and_is_then_local(cluster, clients):
    a, b = clients(A), clients(B)
    df = pd.DataFrame(
        {
            "x": np.arange(10_000, dtype="int64"),
            "y": np.linspace(0.0, 1.0, 10_000),
            "z": np.arange(10_000, dtype="int32") % 7,
        }
    )
    info = put_value(a, df, name="t1/df")
    assert resolve(b, "t1/df") == info.id
    out = get_value(b, name="t1/df")
    pd.testing.assert_frame_equal(out, df)
    # B now holds its own copy, and every later load uses it.
    meta = local_meta(b, info.id)
    assert meta["instance_id"] == b.instance_id != a.instance_id
    local_id, _, blobs = b.get(name="t1/df")
    assert local_id != info.id
    assert local_id == b.migrate(info.id)
    assert all(m["instance_id"] == b.instance_id for k, m in meta.items() if isinstance(m, dict) and "instance_id" in m)
    pd.testing.assert_frame_equal(get_value(b, id=local_id), df)
    # A still reads its original.
    pd.testing.assert_frame_equal(get_value(a, name="t1/df"), df)
    assert a.get(name="t1/df")[0] == info.id


def test_large_dataframe_256_mib(cluster, clients):
    a, b = clients(A), clients(B)
    rows = 256 * MIB // (4 * 8)
    rng = np.random.default_rng(1)
    df = pd.DataFrame({f"c{i}": rng.random(rows) for i in range(4)})
    info = put_value(a, df, name="t2/big")
    assert info.nbytes >= 256 * MIB
    resolve(b, "t2/big")
    t = time.perf_counter()
    out = get_value(b, name="t2/big")
    took = time.perf_counter() - t
    print(f"256 MiB DataFrame loaded through B (migration included) in {took:.2f} s")
    assert out.shape == df.shape
    for col in df.columns:
        assert np.array_equal(out[col].to_numpy(), df[col].to_numpy()), col
    assert local_meta(b, info.id)["instance_id"] == b.instance_id


def test_dataframe_with_1000_columns(cluster, clients):
    a, b = clients(A), clients(B)
    rng = np.random.default_rng(2)
    df = pd.DataFrame(rng.random((50, 1000)), columns=[f"col_{i}" for i in range(1000)])
    df["ints"] = np.arange(50)
    info = put_value(a, df, name="t3/wide")
    resolve(b, "t3/wide")
    out = get_value(b, name="t3/wide")
    pd.testing.assert_frame_equal(out, df)
    assert local_meta(b, info.id)["instance_id"] == b.instance_id


LOADER = textwrap.dedent(
    """
    import os, sys, time
    from vineyard.contrib.kedro import _core
    from vineyard.contrib.kedro.codec import get_value
    socket, name, go, ready = sys.argv[1:5]
    client = _core.Client(socket)
    client.connect()
    open(ready, "w").close()
    while not os.path.exists(go):
        time.sleep(0.001)
    df = get_value(client, name=name)
    local_id = client.get(name=name)[0]
    print("RESULT", local_id, len(df), float(df["v"].sum()))
    """
)


def test_concurrent_loads_from_two_processes_migrate_once(cluster, clients):
    a, b = clients(A), clients(B)
    df = pd.DataFrame({"v": np.arange(4 * MIB, dtype="float64")})  # 32 MiB
    info = put_value(a, df, name="t4/shared")
    resolve(b, "t4/shared")
    before = b.status()["memory_usage"]
    with tempfile.TemporaryDirectory() as tmp:
        go = os.path.join(tmp, "go")
        env = dict(os.environ, KEDRO_DISABLE_TELEMETRY="1")
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", LOADER, cluster.sockets[B], "t4/shared", go, os.path.join(tmp, f"ready{i}")],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            for i in range(2)
        ]
        # Let both import and connect, then release them together.
        deadline = time.monotonic() + 60
        while not all(os.path.exists(os.path.join(tmp, f"ready{i}")) for i in range(2)):
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "loaders did not start"
            time.sleep(0.01)
        open(go, "w").close()
        outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-2000:]
    results = [next(line.split()[1:] for line in out.splitlines() if line.startswith("RESULT ")) for out, _ in outs]
    ids = {int(r[0]) for r in results}
    assert len(ids) == 1, f"two copies were made: {results}"
    assert ids != {info.id}
    assert all(int(r[1]) == len(df) and float(r[2]) == float(df["v"].sum()) for r in results)
    assert b.status()["memory_usage"] - before == info.nbytes, "B holds exactly one copy"
    assert find_copies(cluster.sockets, [info.id]) == {info.id: a.instance_id, ids.pop(): b.instance_id}


def test_holder_stopped_before_the_load_is_a_clear_error(fresh_cluster):
    a, b = fresh_cluster.client(A), fresh_cluster.client(B, read_timeout=30.0)
    df = pd.DataFrame({"v": np.arange(1000.0)})
    put_value(a, df, name="t5/gone")
    resolve(b, "t5/gone")
    holder, port = a.instance_id, fresh_cluster.rpc_ports[A]
    a.close()
    fresh_cluster.stop(A)
    for _ in range(2):  # and vineyardd is not left waiting on a doomed migration
        t = time.monotonic()
        with pytest.raises(_core.MigrationError) as exc:
            get_value(b, name="t5/gone")
        text = str(exc.value)
        assert f"instance {holder}" in text and f":{port}" in text, text
        assert "unreachable" in text, text
        assert time.monotonic() - t < 8.0
    assert fresh_cluster.is_running(B)


def test_namespace_cleanup_leaves_nothing_on_any_instance(fresh_cluster):
    cs = [fresh_cluster.client(i) for i in (A, B, C)]
    a, b, c = cs
    base = [x.status()["memory_usage"] for x in cs]
    frames = {f"ns/d{i}": pd.DataFrame({"v": np.arange(100_000.0) * i, "w": np.arange(100_000)}) for i in range(3)}
    ids = {}
    for i, (name, df) in enumerate(frames.items()):
        ids[name] = put_value(cs[i], df, name=name).id  # one dataset per instance
    keep = put_value(a, pd.DataFrame({"k": [1, 2, 3]}), name="other/keep")
    # Every instance loads every dataset of the namespace: each dataset ends
    # up on all three instances.
    for x in cs:
        for name, df in frames.items():
            resolve(x, name)
            pd.testing.assert_frame_equal(get_value(x, name=name), df)
    for x in cs:
        x.flush(all=True)

    # What the dataset's release does (drop the name, delete what it points
    # to, through one instance) also deletes the copies on the others.
    for name, oid in a.list_names(pattern="ns/d0"):
        a.drop_name(name)
        a.delete([oid])
    assert not any(x.list_names(pattern="ns/d0") for x in cs)

    # What the runner's end-of-run cleanup does: one call through one instance.
    assert len(b.delete_namespace("ns/")) >= 2
    keep_bytes = keep.nbytes
    wait_usage(cs, [base[0] + keep_bytes, base[1], base[2]])
    for x in cs:
        assert [n for n, _ in x.list_names()] == ["other/keep"]
        assert {oid for oid, m in x.list_data().items() if not m["typename"].endswith("Blob")} >= {keep.id}

    # The Python helper over several sockets does the same right after loading.
    again = put_value(b, frames["ns/d1"], name="ns/again")
    for x in cs:
        resolve(x, "ns/again")
        get_value(x, name="ns/again")
        x.flush(all=True)
    gone = delete_namespace_everywhere([c, a, b], "ns/")
    assert again.id in gone and len(gone) == 3
    wait_usage(cs, [base[0] + keep_bytes, base[1], base[2]])
    assert all(not x.list_names(pattern="ns/*") for x in cs)


def test_delete_everywhere_by_id(fresh_cluster):
    a, b = fresh_cluster.client(A), fresh_cluster.client(B)
    base = [a.status()["memory_usage"], b.status()["memory_usage"]]
    info = put_value(a, pd.DataFrame({"v": np.arange(200_000.0)}), name="t7/x")
    resolve(b, "t7/x")
    copy = b.get(name="t7/x")[0]
    b.flush(all=True)
    a.drop_name("t7/x")
    assert delete_everywhere(fresh_cluster.sockets[:2], [info.id]) == sorted([info.id, copy])
    wait_usage([a, b], base)
    assert not a.exists(info.id) and not b.exists(copy)
