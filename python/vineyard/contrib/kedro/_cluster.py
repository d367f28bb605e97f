"""Cluster-wide deletion: objects together with the copies migration made.

Loading an object held by another instance migrates it: the loading instance
gets its own persisted copy, with a new id, the *same signature* and the
original's ``__name`` entry, but no name pointing to it. Deleting the
original (or dropping the name) leaves that copy behind, so a namespace
cleanup that only follows names leaks memory on every instance that loaded
something. ``delete_everywhere`` finds copies by signature through
``list_data``, which shows every persisted object of the cluster, and deletes
each object through the instance that holds it (or through the first client
when no socket of that instance was given: deleting a persisted object
anywhere removes it cluster-wide); each instance retires, instead of
freeing, what a process still maps there. ``delete_namespace_everywhere`` is
the core's one namespace deletion (``vineyard_kedro::lease::delete_namespace``,
also behind ``vineyard-kedro gc --namespace`` and the runners' cleanup).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

from vineyard.contrib.kedro._core import Client, ObjectNotFoundError

_GLOB = set("*?[]\\")


def _clients(sockets_or_clients: Iterable[Any]) -> list[Client]:
    out = []
    for s in sockets_or_clients:
        out.append(s if isinstance(s, Client) else Client(os.fspath(s)))
    if not out:
        raise ValueError("give at least one socket or client of the cluster")
    return out


def _pattern(typename: Any) -> str:
    if isinstance(typename, str) and typename and not (_GLOB & set(typename)):
        return typename
    return "*"


def find_copies(sockets_or_clients: Iterable[Any], object_ids: Iterable[int]) -> dict[int, int | None]:
    """``{id: instance_id}`` of the given objects and of every copy of them
    in the cluster. Ids no instance knows are left out."""
    clients = _clients(sockets_or_clients)
    metas: dict[int, dict] = {}
    for oid in object_ids:
        for c in clients:
            try:
                metas[oid] = c.get_meta(oid, sync_remote=True)
                break
            except ObjectNotFoundError:
                continue
    found: dict[int, int | None] = {oid: m.get("instance_id") for oid, m in metas.items()}
    sigs = {m.get("signature") for m in metas.values()} - {None}
    if not sigs:
        return found
    patterns = {_pattern(m.get("typename")) for m in metas.values()}
    if "*" in patterns:
        patterns = {"*"}
    for p in patterns:
        for oid, m in clients[0].list_data(pattern=p).items():
            if m.get("signature") in sigs:
                found[oid] = m.get("instance_id")
    return found


def delete_everywhere(sockets_or_clients: Sequence[Any], object_ids: Iterable[int], force: bool = False) -> list[int]:
    """Deletes the objects and every migrated copy of them on every instance;
    returns the ids deleted (sorted). Each object is deleted through the
    client of the instance that holds it when one is given."""
    clients = _clients(sockets_or_clients)
    found = find_copies(clients, object_ids)
    by_instance: dict[int, Client] = {}
    for c in clients:
        by_instance.setdefault(c.connect(), c)
    groups: dict[int, list[int]] = {}
    for oid, inst in found.items():
        holder = by_instance.get(inst) if inst is not None else None
        groups.setdefault(id(holder or clients[0]), []).append(oid)
    for c in clients:
        ids = groups.pop(id(c), None)
        if ids:
            c.delete(sorted(ids), force=force)
    return sorted(found)


def delete_namespace_everywhere(sockets_or_clients: Sequence[Any], prefix: str) -> list[int]:
    """Drops every name of namespace ``prefix`` (``ns`` or ``ns/``; see
    ``_core.in_namespace``) and deletes, cluster-wide, the objects they point
    to, their copies, and objects left over from earlier copies of that
    namespace; returns the ids deleted or retired (sorted)."""
    return _clients(sockets_or_clients)[0].delete_namespace(prefix)


__all__ = ["delete_everywhere", "delete_namespace_everywhere", "find_copies"]
