"""Broken invariants of vineyard-kedro itself (a blob count that does not
match, a connection the binding lost track of) are `InternalError`, a class of
their own: not `UnsupportedValueError`, which tells users their value is at
fault."""

from __future__ import annotations

import pickle

from vineyard.contrib.kedro import _core, errors


def test_internal_error_is_its_own_class():
    cls = errors.InternalError
    assert cls is _core.InternalError
    assert issubclass(cls, errors.VineyardError)
    for other in (errors.UnsupportedValueError, errors.ProtocolError, errors.LayoutError, ValueError):
        assert not issubclass(cls, other)


def test_internal_error_pickles_as_itself():
    # ParallelRunner ships exceptions between processes.
    e = pickle.loads(pickle.dumps(errors.InternalError("blob count mismatch")))
    assert type(e) is errors.InternalError and e.args == ("blob count mismatch",)
