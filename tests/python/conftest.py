"""Shared fixtures: a real vineyardd per session (or per test where a test
breaks its server), and the environment every test runs in."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest

# Kedro telemetry tries the network; vineyardd's glog must stay out of /tmp.
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
if "GLOG_log_dir" not in os.environ:  # a private directory, removed at exit
    os.environ["GLOG_log_dir"] = tempfile.mkdtemp(prefix="vineyard-kedro-glog-")
    atexit.register(shutil.rmtree, os.environ["GLOG_log_dir"], True)

from vineyard.contrib.kedro import _core  # noqa: E402

def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run the long variants")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="long variant: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


@pytest.fixture(scope="session")
def vineyardd():
    """One private vineyardd (4 GiB, RPC off) for the whole session."""
    server = _core.Server(size="4Gi")
    yield server
    server.stop()


@pytest.fixture
def client(vineyardd):
    """A fresh client on the session's vineyardd."""
    c = _core.Client(vineyardd.socket)
    yield c
    c.flush(all=True)
    c.close()


@pytest.fixture
def small_vineyardd():
    """A private 64 MiB vineyardd for tests that fill or break the store."""
    server = _core.Server(size="64Mi")
    yield server
    server.stop()
