"""Signed pickles: the one place where a load may run code named by the data.

Every pickle we read is a *pickle object* (``vineyard::PickleBuffer`` or
``vineyard::Tensor<object>``), never a string hidden inside another layout,
so this module sees every one of them.

The secret
    ``VINEYARD_KEDRO_SECRET`` holds the secret itself, or names a file that
    holds it: a value starting with ``file:`` names the file after the prefix,
    a value starting with ``/`` is an absolute file path (a mounted Kubernetes
    Secret). The file's bytes are the secret, without trailing newlines. An
    unset or empty variable means no secret. A variable naming a missing or
    empty file is an error (we never fall back to "no secret").

Writing
    With a secret, every pickle we write gets ``vineyard_kedro_hmac_``:
    ``"sha256:" + hex(HMAC-SHA256(secret, DOMAIN + pickle stream))``. The
    out-of-band buffers of a ``PickleBuffer`` are not covered: they are raw
    bytes handed to the unpickled code (as unsigned as any numeric column),
    and hashing them would put SHA-256 on the path of every large array.
    The official client ignores the extra key, so it still reads the object.

Reading
    Without a secret every pickle loads (a private store: the embedded
    vineyardd of a run). With a secret, a pickle without a valid signature
    (unsigned, mis-signed, or written by the official client) raises
    `UnsignedPickleError` before a single byte is unpickled, unless the load
    allows unsigned pickles (the dataset's ``allow_unsigned_pickle: true``).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Any

from vineyard.contrib.kedro.errors import LayoutError, VineyardError

ENV_SECRET = "VINEYARD_KEDRO_SECRET"
#: The metadata key holding a pickle's signature.
SIGNATURE = "vineyard_kedro_hmac_"
_PREFIX = "sha256:"
_DOMAIN = b"vineyard-kedro pickle v1\n"


class SecretError(VineyardError):
    """``VINEYARD_KEDRO_SECRET`` names a file that cannot be read or is empty."""


class UnsignedPickleError(LayoutError):
    """A load met a pickle without a valid signature while a secret is set."""


_cache: dict[tuple, bytes] = {}


def current_secret() -> bytes | None:
    """The configured secret (see the module docstring), or None."""
    value = os.environ.get(ENV_SECRET, "")
    if not value:
        return None
    if value.startswith("file:") or value.startswith("/"):
        path = value[5:] if value.startswith("file:") else value
        try:
            st = os.stat(path)
            key = (path, st.st_mtime_ns, st.st_size, st.st_ino)
            cached = _cache.get(key)
            if cached is not None:
                return cached
            with open(path, "rb") as f:
                secret = f.read().rstrip(b"\r\n")
        except OSError as e:
            raise SecretError(f"${ENV_SECRET} names the file {path!r}, which cannot be read: {e}") from None
        if not secret:
            raise SecretError(f"${ENV_SECRET} names the file {path!r}, which is empty")
        _cache.clear()
        _cache[key] = secret
        return secret
    return value.encode("utf-8")


def signature(secret: bytes, payload: Any) -> str:
    mac = hmac.new(secret, _DOMAIN, hashlib.sha256)
    mac.update(payload)
    return _PREFIX + mac.hexdigest()


def sign(tree: dict, payload: Any, secret: bytes | None) -> dict:
    """Adds the signature of `payload` to `tree` when there is a secret."""
    if secret is not None:
        tree[SIGNATURE] = signature(secret, payload)
    return tree


def check(meta: dict, payload: Any, secret: bytes | None, allow_unsigned: bool) -> None:
    """Raises `UnsignedPickleError` unless `payload` (the pickle stream of
    `meta`) may be unpickled."""
    if secret is None or allow_unsigned:
        return
    sig = meta.get(SIGNATURE)
    what = meta.get("typename")
    how = (
        f"set {ENV_SECRET} to the writer's secret, or allow unsigned pickles for this dataset "
        "(allow_unsigned_pickle: true) if you trust everyone who can write to this vineyardd"
    )
    if sig is None:
        raise UnsignedPickleError(
            f"{what}: refusing to unpickle an unsigned pickle while {ENV_SECRET} is set "
            f"(written without a secret, or by another client, such as the official vineyard client); {how}"
        )
    if not isinstance(sig, str) or not hmac.compare_digest(sig.encode("ascii", "replace"), signature(secret, payload).encode("ascii")):
        raise UnsignedPickleError(
            f"{what}: refusing to unpickle a pickle whose signature does not match {ENV_SECRET} "
            f"(signed with another secret, or forged); {how}"
        )


__all__ = ["ENV_SECRET", "SIGNATURE", "SecretError", "UnsignedPickleError", "check", "current_secret", "sign", "signature"]
