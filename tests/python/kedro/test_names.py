"""Unambiguous names (issue 18): namespace ``a`` + dataset ``b/c`` and
namespace ``a/b`` + dataset ``c`` cannot both become ``a/b/c``, and
``gc --namespace a`` deletes the objects of ``a`` and nothing else."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from click.testing import CliRunner

from vineyard.contrib.kedro import _core
from vineyard.contrib.kedro._compat import DatasetError
from vineyard.contrib.kedro.codec import get_value, put_value
from vineyard.contrib.kedro.errors import UnsupportedValueError
from vineyard.contrib.kedro.io import VineyardDataSet
from vineyard.contrib.kedro.plugins.cli import commands


def test_the_probe_collision_is_rejected(vineyardd):
    sock = vineyardd.socket
    with pytest.raises(DatasetError, match="invalid dataset name \"b/c\".*'/'"):
        VineyardDataSet(ds_name="b/c", namespace="a", vineyard_ipc_socket=sock)
    with pytest.raises(DatasetError, match="invalid namespace \"a/b\".*'/'"):
        VineyardDataSet(ds_name="c", namespace="a/b", vineyard_ipc_socket=sock)
    ok = VineyardDataSet(ds_name="c", namespace="a", vineyard_ipc_socket=sock)
    assert ok.object_name == "a/c"


def test_namespace_from_the_environment_follows_the_grammar(vineyardd, monkeypatch):
    monkeypatch.setenv("VINEYARD_KEDRO_NAMESPACE", "team/run")
    with pytest.raises(DatasetError, match="invalid namespace"):
        VineyardDataSet(ds_name="x", vineyard_ipc_socket=vineyardd.socket)


def test_name_length_is_bounded():
    assert _core.MAX_NAME_BYTES == 4096
    assert _core.object_name(None, "n" * 4096) == "n" * 4096
    with pytest.raises(UnsupportedValueError, match="longer than 4096 bytes"):
        _core.object_name("ns", "n" * 4094)


def test_membership_predicate():
    assert _core.in_namespace("a/x", "a")
    for name in ("a/b/x", "ab/x", "a", "a/", "x/a"):
        assert not _core.in_namespace(name, "a"), name


def test_gc_namespace_deletes_that_namespace_only(small_vineyardd):
    sock = small_vineyardd.socket
    c = _core.Client(sock)
    ours = put_value(c, np.arange(3), name="a/x").id
    # names another client could have made: deeper, sharing the prefix, plain
    others = {}
    for name in ("a/b/y", "ab/z", "a", "plain"):
        others[name] = put_value(c, np.arange(4), name=name).id
    res = CliRunner().invoke(commands, ["vineyard", "gc", "--namespace", "a", "--json", "--socket", sock], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["names"] == ["a/x"] and report["deleted"] == 1
    assert not c.exists(ours)
    left = dict(c.list_names())
    assert {n: left.get(n) for n in others} == others
    for name, oid in others.items():
        assert get_value(c, name=name).tolist() == [0, 1, 2, 3], name
    res = CliRunner().invoke(commands, ["vineyard", "ls", "--namespace", "a", "--socket", sock], catch_exceptions=False)
    assert res.exit_code == 0 and "a/b/y" not in res.output + res.stderr
    bad = CliRunner().invoke(commands, ["vineyard", "gc", "--namespace", "a/b", "--socket", sock], catch_exceptions=False)
    assert bad.exit_code == 2 and "invalid namespace" in bad.output + bad.stderr
    c.delete(list(others.values()))
    c.close()


def test_a_1mb_name_fails_at_once_and_leaves_nothing(small_vineyardd):
    """The probe's huge name: with a ~300 KB+ name, three pipelined requests
    used to fill both socket buffers (vineyardd echoes the name in its error
    reply) and the save stalled until the write timeout, then blamed the
    wrong request and leaked the object."""
    sock = small_vineyardd.socket
    huge = "n" * (1 << 20)
    with pytest.raises(DatasetError, match="longer than 4096 bytes"):
        VineyardDataSet(ds_name=huge, vineyard_ipc_socket=sock)
    c = _core.Client(sock)
    before = (c.status()["memory_usage"], dict(c.list_data("*", False, 1 << 20)))
    start = time.monotonic()
    with pytest.raises(UnsupportedValueError, match=r"invalid object name \"nnn.*\(1048576 bytes\): it is longer than 4096"):
        put_value(c, np.arange(1000.0), name=huge)
    for call in (lambda: c.resolve(huge), lambda: c.drop_name(huge)):
        with pytest.raises(UnsupportedValueError, match="longer than 4096"):
            call()
    assert time.monotonic() - start < 5
    assert (c.status()["memory_usage"], dict(c.list_data("*", False, 1 << 20))) == before
    assert c.list_names() == []
    # the connection is still usable
    info = put_value(c, np.arange(3.0), name="n" * 4096)
    assert get_value(c, name="n" * 4096).tolist() == [0.0, 1.0, 2.0]
    c.delete([info.id])
    c.close()
