"""Any picklable value: pickle protocol 5 with out-of-band buffers.

Layout (the official ``vineyard::PickleBuffer``, plus out-of-band blobs)::

    {"typename": "vineyard::PickleBuffer", "size_": <pickle length>, "nbytes": <total>,
     "buffer_": <blob: the pickle stream>,
     "__buffers_-size": k, "__buffers_-0": <blob>, ..., "__buffers_-{k-1}": <blob>}

Large buffers that support out-of-band pickling (numpy arrays, pandas blocks,
Arrow buffers...) are not copied into the pickle stream: each one becomes its
own blob, copied once by the core, and on load the pickle is given writable
copy-on-write views of those blobs, so such arrays come back zero-copy and
editable (a write copies only the pages it touches). Without out-of-band
buffers the object is exactly what the official client writes and reads.

Loading a pickle runs code named by the data: with a secret configured, only
pickles signed with it load (see `signing`).
"""

from __future__ import annotations

import pickle
from typing import Any

from vineyard.contrib.kedro.errors import UnsupportedValueError

from .buffers import Reader, Writer
from .dispatch import decoder
from .metadata import get_int

TYPENAME = "vineyard::PickleBuffer"
MAX_BUFFERS = 1 << 20


def encode_pickle(value: Any, w: Writer, typename: str = TYPENAME) -> dict:
    raws: list[Any] = []

    def keep(buf: pickle.PickleBuffer) -> Any:
        try:
            raws.append(buf.raw())
        except BufferError:  # not contiguous: let pickle copy it in band
            return True
        return False

    try:
        payload = pickle.dumps(value, protocol=5, buffer_callback=keep)
    except Exception as e:  # noqa: BLE001 - every pickling failure means "cannot store"
        raise UnsupportedValueError(
            f"cannot store a {type(value).__module__}.{type(value).__qualname__}: it does not pickle ({type(e).__name__}: {e})"
        ) from e
    tree: dict[str, Any] = w.pickle({"typename": typename, "size_": len(payload)}, payload)
    total = len(payload)
    if raws:
        tree["__buffers_-size"] = len(raws)
        for i, raw in enumerate(raws):
            tree[f"__buffers_-{i}"] = w.memory(raw)
            total += raw.nbytes
    tree["nbytes"] = total
    return tree


@decoder(TYPENAME)
def decode_pickle(meta: dict, r: Reader) -> Any:
    size = r.blob(meta, "buffer_").size
    n = get_int(meta, "size_", size, hi=size)
    stream = r.bytes_view(meta, "buffer_", n, shared=True)
    k = get_int(meta, "__buffers_-size", 0, hi=MAX_BUFFERS)
    buffers = [r.bytes_view(meta, f"__buffers_-{i}") for i in range(k)]
    return r.unpickle(meta, memoryview(stream), buffers=buffers)


__all__ = ["TYPENAME", "decode_pickle", "encode_pickle"]
