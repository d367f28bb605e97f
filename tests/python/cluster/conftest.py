"""Fixtures of the cluster tests: local clusters (one etcd, vineyardd
instances with --meta=etcd; see local_cluster.py) and clients that clean up
what a test stored on every instance."""

from __future__ import annotations

import pytest

from local_cluster import LocalCluster
from vineyard.contrib.kedro._cluster import delete_everywhere

A = 0


@pytest.fixture(scope="module")
def cluster():
    """Two instances for the module; each test deletes what it made."""
    with LocalCluster(2, size="2Gi") as c:
        yield c


@pytest.fixture
def fresh_cluster():
    """A cluster of its own (for tests that kill an instance or count bytes)."""
    with LocalCluster(3, size="256Mi") as c:
        yield c


@pytest.fixture
def clients(cluster):
    made = []

    def make(i):
        c = cluster.client(i)
        made.append(c)
        return c

    yield make
    # Delete everything the test stored, copies included, and check it is gone.
    first = cluster.client(A)
    names = first.list_names()
    for n, _ in names:
        first.drop_name(n)
    for c in made:
        c.flush(all=True)
    delete_everywhere(cluster.sockets, [oid for _, oid in names])
    for c in made:
        c.close()
