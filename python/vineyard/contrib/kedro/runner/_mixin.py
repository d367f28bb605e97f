"""The one method our runners add to Kedro's: wrap ``run`` in a VineyardRun."""

from __future__ import annotations

import inspect
from typing import Any

from vineyard.contrib.kedro.runner._run import VineyardRun, as_bool


class VineyardRunnerMixin:
    """Routes every dataset the catalog does not define through vineyard.

    Extra keyword arguments (also accepted through ``--runner-params``):

    - ``vineyard_ipc_socket``: the vineyardd to use (default
      ``VINEYARD_IPC_SOCKET``, else an embedded vineyardd for the run);
    - ``vineyard_size``: the embedded vineyardd's ``--size`` (default: half
      the machine's memory, or ``VINEYARD_KEDRO_EMBEDDED_SIZE``);
    - ``keep_objects``: keep the run's objects in vineyardd afterwards.
    """

    def _init_vineyard(self, base: type, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        self._vineyard_socket = kwargs.pop("vineyard_ipc_socket", None) or None
        self._vineyard_size = kwargs.pop("vineyard_size", None) or None
        self._vineyard_keep = as_bool(kwargs.pop("keep_objects", False))
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
        ):
            return super().run(pipeline, catalog, hook_manager, *args, **kwargs)  # type: ignore[misc]
