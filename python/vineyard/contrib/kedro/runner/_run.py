"""One pipeline run through vineyard: which vineyardd, which namespace, which
datasets go there, and the cleanup afterwards. Shared by the runners and the
hook."""

from __future__ import annotations

import logging
import os
import re
import time
import uuid
from typing import Any

from vineyard.contrib.kedro import _connection
from vineyard.contrib.kedro._compat import DatasetError, catalog_add, catalog_has, pipeline_datasets
from vineyard.contrib.kedro.errors import VineyardError
from vineyard.contrib.kedro.io.dataset import VineyardDataSet

logger = logging.getLogger("vineyard.contrib.kedro")

_TRUE = {"1", "true", "yes", "on"}


def as_bool(value: Any) -> bool:
    """`--runner-params` values arrive as strings."""
    if isinstance(value, str):
        return value.strip().lower() in _TRUE
    return bool(value)


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


class VineyardRun:
    """Context manager around one run.

    On enter: resolve vineyardd (explicit socket, ``VINEYARD_IPC_SOCKET``, or
    start the embedded one), choose the namespace (``VINEYARD_KEDRO_NAMESPACE``
    or a fresh one from the run id) and register a ``VineyardDataSet`` for
    every dataset the pipeline produces that the catalog does not define.
    On exit, successful or not: delete what the run created (unless it shares
    an explicit namespace with other processes, or ``keep`` is set), log a
    summary, and stop the embedded vineyardd.
    """

    def __init__(
        self,
        pipeline: Any,
        catalog: Any,
        run_id: str | None,
        *,
        socket: str | None = None,
        size: str | None = None,
        keep: bool = False,
    ) -> None:
        self.pipeline = pipeline
        self.catalog = catalog
        self.run_id = run_id
        self.explicit_socket = socket
        self.size = size
        self.keep = keep
        self.socket: str | None = None
        self.embedded = False
        self.namespace = ""
        self.owns_namespace = False
        self.registered: list[str] = []
        self._stats_before: tuple[Any, ...] = ()
        self._start = 0.0

    def __enter__(self) -> VineyardRun:
        self._start = time.perf_counter()
        self._stats_before = _connection.STATS.snapshot()
        explicit = self.explicit_socket or os.environ.get(_connection.ENV_SOCKET)
        if explicit:
            self.socket = explicit
            origin = "runner argument" if self.explicit_socket else f"${_connection.ENV_SOCKET}"
            try:
                _connection.client_for(explicit).connect()
            except VineyardError as exc:
                raise DatasetError(f"Cannot use vineyardd at {explicit} (from {origin}): {exc}") from exc
        else:
            self.socket = _connection.acquire_embedded(self.size)
            self.embedded = True
        env_ns = os.environ.get(_connection.ENV_NAMESPACE)
        if env_ns:
            self.namespace, self.owns_namespace = env_ns, False
        else:
            base = re.sub(r"[^A-Za-z0-9_.:-]", "-", str(self.run_id or "run"))
            self.namespace, self.owns_namespace = f"kedro-{base}-{uuid.uuid4().hex[:8]}", True
        try:
            self._register()
        except BaseException:
            self._finish()
            raise
        return self

    def _register(self) -> None:
        inputs = set(self.pipeline.inputs())
        for name in sorted(pipeline_datasets(self.pipeline) - inputs):
            if name == "parameters" or name.startswith("params:") or catalog_has(self.catalog, name):
                continue
            try:
                dataset = VineyardDataSet(ds_name=name, vineyard_ipc_socket=self.socket, namespace=self.namespace)
            except DatasetError as exc:  # a name outside the grammar (a "/" in it): Kedro's default keeps it
                logger.warning("vineyard: dataset %r stays in memory: %s", name, exc)
                continue
            catalog_add(self.catalog, name, dataset)
            self.registered.append(name)
        logger.debug(
            "vineyard: %d datasets of this run go through vineyardd at %s under namespace %s",
            len(self.registered),
            self.socket,
            self.namespace,
        )

    def __exit__(self, *exc: Any) -> None:
        self._finish()

    def _cleanup_namespace(self) -> int:
        if self.socket is None or not self.owns_namespace or self.keep:
            return 0
        # Names, objects, and in a cluster the copies migrated to other
        # instances; objects some process still views are retired, and freed
        # when the last of them lets go.
        return len(_connection.client_for(self.socket).delete_namespace(f"{self.namespace}/"))

    def _finish(self) -> None:
        try:
            left = self._cleanup_namespace()
            if left:
                logger.debug("vineyard: deleted %d objects left in namespace %s", left, self.namespace)
        except VineyardError as exc:
            logger.warning("vineyard: could not delete the objects of namespace %s: %s", self.namespace, exc)
        finally:
            self._summary()
            if self.embedded:
                self.embedded = False
                _connection.release_embedded()

    def _summary(self) -> None:
        now = _connection.STATS.snapshot()
        saves, loads, bsaved, bloaded, tsave, tload = (a - b for a, b in zip(now, self._stats_before))
        logger.info(
            "vineyard: %d objects saved (%s, %.2f s), %d loaded (%s, %.2f s) through %s%s",
            saves,
            _mib(bsaved),
            tsave,
            loads,
            _mib(bloaded),
            tload,
            "the embedded vineyardd" if self.embedded else f"vineyardd at {self.socket}",
            "" if not self.keep else f"; objects kept under namespace {self.namespace}",
        )
