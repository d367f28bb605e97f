"""Helpers shared by the codec tests (the session's vineyardd and the `client`
fixture come from conftest.py)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from hypothesis import HealthCheck, settings

from vineyard.contrib.kedro.codec import decode_meta, put_value

#: Hypothesis profile of the codec suite: few examples, no deadline (the first
#: put maps fresh shared memory), fixtures reused across examples on purpose.
#: VINEYARD_KEDRO_EXAMPLES=1000 runs a longer search.
CODEC_SETTINGS = settings(
    max_examples=int(os.environ.get("VINEYARD_KEDRO_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


class Loaded:
    """A value loaded back, with the blobs it was built from."""

    def __init__(self, info: Any, value: Any, meta: dict, blobs: dict) -> None:
        self.info = info
        self.value = value
        self.meta = meta
        self.blobs = blobs

    def inside(self, address: int) -> bool:
        """True when `address` lies in one of the object's blobs as stored
        (the shared mapping, which Arrow reads)."""
        for b in self.blobs.values():
            if b.size:
                start = address_of(b.shared_view())
                if start <= address < start + b.size:
                    return True
        return False

    def inside_private(self, address: int) -> bool:
        """True when `address` lies in this load's private (copy-on-write)
        mapping of one of the object's blobs (what numpy views)."""
        for b in self.blobs.values():
            if b.size:
                start = b.__array_interface__["data"][0]
                if start <= address < start + b.size:
                    return True
        return False


def address_of(a: Any) -> int:
    return np.asarray(a).__array_interface__["data"][0]


def load(client: Any, value: Any, *, delete: bool = True) -> Loaded:
    """Puts `value`, gets it back and (by default) deletes the object at once:
    the delete is deferred by the core while the loaded value is alive."""
    info = put_value(client, value, persist=False)
    _, meta, blobs = client.get(id=info.id)
    out = decode_meta(meta, blobs)
    if delete:
        client.delete([info.id])
    return Loaded(info, out, meta, blobs)


def roundtrip(client: Any, value: Any) -> Any:
    return load(client, value).value


def assert_zero_copy(loaded: Loaded, arr: Any) -> None:
    a = np.asarray(arr)
    if a.nbytes == 0:
        return
    assert loaded.inside_private(address_of(a)), "the loaded array is not a view of the load's mapping of the blob"

