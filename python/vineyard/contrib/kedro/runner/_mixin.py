"""What our runners add to Kedro's: ``run`` inside a VineyardRun, and a resume
hint that reuses a long-lived vineyardd."""

from __future__ import annotations

import inspect
import os
import threading
from typing import Any

from vineyard.contrib.kedro import _connection
from vineyard.contrib.kedro.runner import _allocator
from vineyard.contrib.kedro.runner._resume import resume_start_nodes
from vineyard.contrib.kedro.runner._run import ENV_KEEP, VineyardRun, as_bool


class VineyardRunnerMixin:
    """Routes every intermediate dataset the catalog does not define through vineyard.

    Extra keyword arguments (``--runner-params`` on Kedro >= 1.0; each has an
    environment variable, for Kedro 0.19 and for ``kedro run`` lines that
    should stay unchanged):

    - ``vineyard_ipc_socket`` (``VINEYARD_IPC_SOCKET``): the vineyardd to use;
      with neither, an embedded vineyardd for the run;
    - ``vineyard_size`` (``VINEYARD_KEDRO_EMBEDDED_SIZE``): the embedded
      vineyardd's ``--size`` (default: half the machine's memory);
    - ``keep_objects`` (``VINEYARD_KEDRO_KEEP_OBJECTS``): keep the run's
      objects in vineyardd afterwards (needs a long-lived vineyardd);
    - ``allocator`` (``VINEYARD_KEDRO_ALLOCATOR``, on by default; 0 turns it
      off): numpy arrays of at least ``allocator_threshold`` bytes
      (``VINEYARD_KEDRO_ALLOCATOR_THRESHOLD``, default 16 MiB) made inside
      node functions live in vineyard blobs (see ``_allocator``).
    """

    def _init_vineyard(self, base: type, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        self._vineyard_socket = kwargs.pop("vineyard_ipc_socket", None) or None
        self._vineyard_size = kwargs.pop("vineyard_size", None) or os.environ.get(_connection.ENV_EMBEDDED_SIZE) or None
        self._vineyard_keep = as_bool(kwargs.pop("keep_objects", os.environ.get(ENV_KEEP, False)))
        self._vineyard_allocator = _allocator.enabled(kwargs.pop("allocator", None), default=True)
        self._vineyard_threshold = _allocator.parse_threshold(
            kwargs.pop("allocator_threshold", None) or os.environ.get(_allocator.ENV_THRESHOLD) or _allocator.DEFAULT_THRESHOLD
        )
        self._vineyard_runs = threading.local()
        accepted = inspect.signature(base.__init__).parameters
        for key in ("is_async", "max_workers"):
            if key in kwargs and key not in accepted:
                kwargs.pop(key)
        if "is_async" in kwargs:
            kwargs["is_async"] = as_bool(kwargs["is_async"])
        if "max_workers" in kwargs and isinstance(kwargs["max_workers"], str):
            kwargs["max_workers"] = int(kwargs["max_workers"])
        return args, kwargs

    def run(self, pipeline: Any, catalog: Any, hook_manager: Any = None, *args: Any, **kwargs: Any) -> Any:
        run_id = kwargs.get("run_id") or kwargs.get("session_id") or (args[0] if args else None)
        with VineyardRun(
            pipeline,
            catalog,
            run_id,
            socket=self._vineyard_socket,
            size=self._vineyard_size,
            keep=self._vineyard_keep,
        ) as run:
            # Kedro calls _suggest_resume_scenario from the thread that called
            # run(); one runner may run in several threads at once.
            self._vineyard_runs.current = run
            if self._vineyard_allocator and run.socket:
                pipeline = _allocator.wrap_pipeline(pipeline, run.socket, self._vineyard_threshold)
            try:
                return super().run(pipeline, catalog, hook_manager, *args, **kwargs)  # type: ignore[misc]
            finally:
                self._vineyard_runs.current = None
                if self._vineyard_allocator and run.socket:
                    _allocator.release(run.socket)

    def _suggest_resume_scenario(self, pipeline: Any, done_nodes: Any, catalog: Any) -> None:
        run = getattr(self._vineyard_runs, "current", None)
        done = list(done_nodes)
        if run is None or run.embedded or not run.owns_namespace or not (done or run.resuming):
            # What Kedro says is right: our datasets are _EPHEMERAL, as its own.
            super()._suggest_resume_scenario(pipeline, done_nodes, catalog)  # type: ignore[misc]
            return
        # The outputs of the nodes that ran are still in the long-lived
        # vineyardd: resume from the first nodes that did not finish.
        run.resume_from = resume_start_nodes(pipeline, done)
