"""One pipeline run through vineyard: which vineyardd, which namespace, which
datasets go there, and the cleanup afterwards. Shared by the runners and the
hook."""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import tempfile
import time
import uuid
from typing import Any

from vineyard.contrib.kedro import _connection
from vineyard.contrib.kedro._compat import DatasetError, catalog_add, catalog_has, pipeline_datasets
from vineyard.contrib.kedro.errors import VineyardError
from vineyard.contrib.kedro.io.dataset import VineyardDataset
from vineyard.contrib.kedro.runner._resume import RESUME_MARKER, resume_command

logger = logging.getLogger("vineyard.contrib.kedro")

_TRUE = {"1", "true", "yes", "on"}

#: Environment variables for the runner parameters (Kedro 0.19 has no
#: ``--runner-params``); a parameter given to the runner wins.
ENV_KEEP = "VINEYARD_KEDRO_KEEP_OBJECTS"


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
    or a fresh one from the run id) and register a ``VineyardDataset`` for
    every intermediate dataset (produced and consumed by the pipeline) that
    the catalog does not define. Free outputs (produced, never consumed) are
    left to Kedro's own default datasets, so ``run()`` returns what Kedro's
    runner returns, still usable after the cleanup. The registered datasets
    are ``_EPHEMERAL``, like Kedro's MemoryDataset: Kedro's resume hint and
    ``--only-missing-outputs`` treat them as it treats its own.

    On exit: delete what the run created, unless it shares an explicit
    namespace with other processes, ``keep`` is set, or it failed on a
    long-lived vineyardd after some nodes ran (`resume_from` set): then the
    namespace is kept and marked resumable, and a run given that namespace
    reads the pipeline inputs it finds there and deletes the namespace when it
    succeeds. Last, log a summary and drop the embedded vineyardd.
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
        self.socket_from_env = False
        self.embedded = False
        self.namespace = ""
        self.owns_namespace = False
        self.resuming = False
        self.registered: list[str] = []
        #: Set by the runner when a node failed after others ran.
        self.resume_from: list[str] | None = None
        self.failed = False
        self._stats_before: tuple[Any, ...] = ()
        self._stats_dir: str | None = None
        self._start = 0.0

    def __enter__(self) -> VineyardRun:
        self._start = time.perf_counter()
        self._stats_before = _connection.STATS.snapshot()
        explicit = self.explicit_socket or os.environ.get(_connection.ENV_SOCKET)
        if explicit:
            self.socket = explicit
            self.socket_from_env = not self.explicit_socket
            origin = "runner argument" if self.explicit_socket else f"${_connection.ENV_SOCKET}"
            try:
                _connection.client_for(explicit).connect()
            except VineyardError as exc:
                raise DatasetError(f"Cannot use vineyardd at {explicit} (from {origin}): {exc}") from exc
        else:
            if self.keep:
                raise DatasetError(
                    "keep_objects needs a long-lived vineyardd: the embedded one is stopped, and its memory freed, "
                    f"when the run ends. Start one (`vineyard-kedro serve`) and set {_connection.ENV_SOCKET} "
                    "or the vineyard_ipc_socket runner parameter."
                )
            self.socket = _connection.acquire_embedded(self.size)
            self.embedded = True
        try:
            self._choose_namespace()
            self._register()
        except BaseException:
            self._finish()
            raise
        return self

    def _client(self) -> Any:
        assert self.socket is not None
        return _connection.client_for(self.socket)

    def _choose_namespace(self) -> None:
        env_ns = os.environ.get(_connection.ENV_NAMESPACE)
        if env_ns:
            self.namespace = env_ns
            # A namespace a failed run left to be resumed belongs to the run
            # that resumes it; any other one is shared with other processes.
            self.resuming = self._client().resolve(f"{env_ns}/{RESUME_MARKER}") is not None
            self.owns_namespace = self.resuming
        else:
            base = re.sub(r"[^A-Za-z0-9_.:-]", "-", str(self.run_id or "run"))
            self.namespace, self.owns_namespace = f"kedro-{base}-{uuid.uuid4().hex[:8]}", True

    def _dataset(self, name: str) -> VineyardDataset:
        dataset = VineyardDataset(ds_name=name, vineyard_ipc_socket=self.socket, namespace=self.namespace)
        dataset._EPHEMERAL = True  # noqa: SLF001 - Kedro's own flag, read by its resume logic
        dataset._keep = self.keep
        # A fresh namespace: no name in it existed before this run.
        dataset._run_private = self.owns_namespace and not self.resuming
        if self._stats_dir is None:
            self._stats_dir = tempfile.mkdtemp(prefix="vineyard-kedro-stats-")
            os.mkdir(os.path.join(self._stats_dir, "saved"), 0o700)
        dataset._stats_sink = (os.path.join(self._stats_dir, "workers"), os.getpid())
        dataset._saved_ids = os.path.join(self._stats_dir, "saved")
        return dataset

    def _add_dataset(self, name: str) -> None:
        try:
            dataset = self._dataset(name)
        except DatasetError as exc:  # a name outside the grammar (a "/" in it): Kedro's default keeps it
            logger.warning("vineyard: dataset %r stays in memory: %s", name, exc)
            return
        catalog_add(self.catalog, name, dataset)
        self.registered.append(name)

    def _register(self) -> None:
        inputs = set(self.pipeline.inputs())
        outputs = set(self.pipeline.outputs())

        def ours(name: str) -> bool:
            return not (name == "parameters" or name.startswith("params:") or catalog_has(self.catalog, name))

        for name in sorted(pipeline_datasets(self.pipeline) - inputs - outputs):
            if ours(name):
                self._add_dataset(name)
        if self.namespace and not (self.owns_namespace and not self.resuming):
            # An explicit namespace may hold inputs of this run, e.g. the
            # intermediates a failed run kept (`--from-nodes` after a failure).
            client = self._client()
            for name in sorted(inputs):
                if ours(name) and client.resolve(f"{self.namespace}/{name}") is not None:
                    self._add_dataset(name)
        logger.debug(
            "vineyard: %d datasets of this run go through vineyardd at %s under namespace %s",
            len(self.registered),
            self.socket,
            self.namespace,
        )

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        self.failed = self.failed or exc_type is not None
        self._finish()

    def _keeps_for_resume(self) -> bool:
        return self.failed and not self.embedded and self.owns_namespace and (self.resume_from is not None or self.resuming)

    def _cleanup_namespace(self) -> int:
        if self.socket is None or not self.owns_namespace or self.keep or self._keeps_for_resume():
            return 0
        # Names, objects, and in a cluster the copies migrated to other
        # instances; objects some process still views are retired, and freed
        # when the last of them lets go.
        return len(self._client().delete_namespace(f"{self.namespace}/"))

    def _mark_resumable(self) -> None:
        from vineyard.contrib.kedro.codec import put_value

        put_value(self._client(), "left by a failed run, to be resumed", name=f"{self.namespace}/{RESUME_MARKER}", persist=True)
        start = self.resume_from
        if start is None:  # a resumed run failed before any node finished: same start again
            from vineyard.contrib.kedro.runner._resume import resume_start_nodes

            start = resume_start_nodes(self.pipeline, ())
        command = resume_command(self.namespace, start, self.socket if self.socket_from_env else None)
        logger.warning(
            "vineyard: the intermediates of this run are kept in vineyardd at %s under namespace %s. "
            "To resume from the nodes that did not finish, reusing them, run:\n  %s\n"
            "A resumed run that succeeds deletes them; to delete them instead: vineyard-kedro gc --namespace %s",
            self.socket,
            self.namespace,
            command,
            shlex.quote(self.namespace),
        )

    def _finish(self) -> None:
        try:
            if self._keeps_for_resume():
                self._mark_resumable()
            left = self._cleanup_namespace()
            if left:
                logger.debug("vineyard: deleted %d objects left in namespace %s", left, self.namespace)
        except VineyardError as exc:
            logger.warning("vineyard: could not delete the objects of namespace %s: %s", self.namespace, exc)
        finally:
            self._summary()
            if self._stats_dir is not None:
                shutil.rmtree(self._stats_dir, ignore_errors=True)
                self._stats_dir = None
            if self.embedded:
                self.embedded = False
                _connection.release_embedded()

    def _summary(self) -> None:
        now = _connection.STATS.snapshot()
        here = [a - b for a, b in zip(now, self._stats_before)]
        workers = _connection.read_reports(os.path.join(self._stats_dir, "workers")) if self._stats_dir else (0,) * 6
        saves, loads, bsaved, bloaded, tsave, tload = (a + b for a, b in zip(here, workers))
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
