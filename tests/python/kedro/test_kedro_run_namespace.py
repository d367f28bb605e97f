"""Names in a run's private namespace (`private=True`): the runners' datasets
save and load them without asking vineyardd what the name points to (its
`get_name` slows down with every name in the store), and still behave as
names: a save replaces and frees, another client's save or delete wins, and
only a fresh namespace of a run is private."""

from __future__ import annotations

import gc

import numpy as np
import pytest
from kedro.io import DataCatalog
from kedro.pipeline import node, pipeline

from vineyard.contrib.kedro import _connection, _core
from vineyard.contrib.kedro.codec import get_value, put_value
from vineyard.contrib.kedro.errors import ObjectNotFoundError
from vineyard.contrib.kedro.runner._run import VineyardRun

NAME = "kedro-run-1234/x"


@pytest.fixture
def store():
    server = _core.Server(size="64Mi")
    c = _core.Client(server.socket)
    yield server, c
    c.close(abandon=True)
    server.stop()


def usage(c):
    c.flush()
    return c.status()["memory_usage"]


def test_private_saves_replace_and_free_like_any_save(store):
    server, c = store
    base = usage(c)
    for i in range(5):
        put_value(c, np.full(1000, i, dtype=np.int64), name=NAME, private=True)
        back = get_value(c, name=NAME, private=True)
        assert (back == i).all()
        del back
    gc.collect()
    [(name, oid)] = c.list_names()
    assert name == NAME and c.resolve(NAME, private=True) == oid == c.resolve(NAME)
    assert usage(c) == base + 8000, "a private save left the object it replaced"
    c.drop_name(NAME)
    c.delete([oid])
    assert usage(c) == base


def test_another_clients_save_wins_over_a_private_name(store):
    server, mine = store
    other = _core.Client(server.socket)  # another process: its own connection and state
    try:
        put_value(mine, np.full(10, 1.0), name=NAME, private=True)
        put_value(other, np.full(10, 2.0), name=NAME)
        assert (get_value(mine, name=NAME, private=True) == 2.0).all()

        # While this client views its own object, another save retires it
        # (it is mapped): the private load still follows the name.
        put_value(mine, np.full(10, 3.0), name=NAME, private=True)
        held = get_value(mine, name=NAME, private=True)
        put_value(other, np.full(10, 4.0), name=NAME)
        assert (get_value(mine, name=NAME, private=True) == 4.0).all()
        assert (held == 3.0).all()
        del held
        gc.collect()

        # Deleted by someone else (`rm`, `gc --namespace`): gone for us too.
        put_value(mine, np.full(10, 5.0), name=NAME, private=True)
        oid = other.resolve(NAME)
        other.drop_name(NAME)
        other.delete([oid])
        with pytest.raises(ObjectNotFoundError):
            get_value(mine, name=NAME, private=True)
        assert mine.resolve(NAME, private=True) is None
        put_value(mine, np.full(10, 6.0), name=NAME, private=True)
        assert (get_value(other, name=NAME) == 6.0).all()
    finally:
        other.close()


def _dataset(catalog, name):
    try:
        return catalog[name]
    except TypeError:  # Kedro 0.19
        return catalog._get_dataset(name)


def test_only_a_fresh_run_namespace_is_private(vineyardd, monkeypatch):
    p = pipeline([node(lambda: 1, None, "a", name="make"), node(lambda a: a, "a", "b", name="use")])
    monkeypatch.delenv(_connection.ENV_NAMESPACE, raising=False)
    catalog = DataCatalog()
    with VineyardRun(p, catalog, "fresh", socket=vineyardd.socket) as run:
        assert run.owns_namespace and not run.resuming
        assert _dataset(catalog, "a")._run_private is True
    # A namespace given by the user is shared with whoever else uses it.
    monkeypatch.setenv(_connection.ENV_NAMESPACE, "shared-ns")
    catalog = DataCatalog()
    with VineyardRun(p, catalog, "explicit", socket=vineyardd.socket):
        assert _dataset(catalog, "a")._run_private is False


def test_an_id_recorded_by_the_producer_serves_other_processes_until_the_name_moves(store):
    """ParallelRunner: the producer's worker records the id it saved; the
    consumers' workers and the main process (which releases) start from it."""
    server, producer = store
    consumer = _core.Client(server.socket)  # another process: nothing saved there
    try:
        first = put_value(producer, np.full(10, 1.0), name=NAME, private=True).id
        assert (get_value(consumer, name=NAME, private=True, saved=first) == 1.0).all()
        assert consumer.resolve(NAME, private=True, saved=first) == first
        second = put_value(producer, np.full(10, 2.0), name=NAME, private=True).id
        # A stale record (its object freed, or retired while still viewed): the name wins.
        assert (get_value(consumer, name=NAME, private=True, saved=first) == 2.0).all()
        assert consumer.resolve(NAME, private=True, saved=first) == second
    finally:
        consumer.close()


def test_a_runs_datasets_record_their_saves_for_the_runs_other_processes(vineyardd, monkeypatch):
    """What a ParallelRunner worker gets is a pickled copy of the dataset: it
    finds the id the producer's worker recorded in the run's directory."""
    import pickle

    monkeypatch.delenv(_connection.ENV_NAMESPACE, raising=False)
    p = pipeline([node(lambda: 1, None, "a", name="make"), node(lambda a: a, "a", "b", name="use")])
    catalog = DataCatalog()
    with VineyardRun(p, catalog, "recorded", socket=vineyardd.socket):
        producer = _dataset(catalog, "a")
        producer.save(np.arange(5))
        copy = pickle.loads(pickle.dumps(producer))
        oid = _core.Client(vineyardd.socket).resolve(producer.object_name)
        assert copy._recorded() == oid
        assert (copy.load() == np.arange(5)).all()
        copy.release()
        assert not producer.exists()
