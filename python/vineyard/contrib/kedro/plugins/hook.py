"""``VineyardHook``: vineyard intermediates for users who keep Kedro's runner.

Enable it in ``settings.py``::

    from vineyard.contrib.kedro import hooks
    HOOKS = (hooks,)

The ``kedro.hooks`` entry point registers a second instance automatically,
but it stays off unless ``VINEYARD_KEDRO_HOOK=1`` is set, so installing the
package never changes how an existing project runs.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from kedro.framework.hooks import hook_impl

from vineyard.contrib.kedro.runner._run import VineyardRun, as_bool


class VineyardHook:
    """Registers vineyard datasets before a run and cleans up after it.

    One instance serves every session of the process (``HOOKS`` holds it), and
    sessions may run at once (``kedro server``, notebooks, threads): each run
    has its own state, found again by its run id and catalog, and the end of a
    run finishes that run only. The embedded vineyardd is shared by the runs
    that use it and stops when the last one ends.
    """

    def __init__(self, enable_env: str | None = None) -> None:
        self._enable_env = enable_env
        self._lock = threading.Lock()
        self._runs: dict[tuple[str | None, int], VineyardRun] = {}

    def _enabled(self) -> bool:
        return self._enable_env is None or as_bool(os.environ.get(self._enable_env, ""))

    @staticmethod
    def _key(run_params: dict[str, Any], catalog: Any) -> tuple[str | None, int]:
        # The run id alone may repeat (0.19 session ids are timestamps);
        # Kedro hands every hook of one run the same catalog object.
        return (run_params.get("run_id") or run_params.get("session_id"), id(catalog))

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        if not self._enabled():
            return
        key = self._key(run_params, catalog)
        run = VineyardRun(pipeline, catalog, key[0])
        run.__enter__()
        with self._lock:
            self._runs[key] = run

    def _finish(self, run_params: dict[str, Any], catalog: Any, failed: bool) -> None:
        with self._lock:
            run = self._runs.pop(self._key(run_params, catalog), None)
        if run is not None:
            run.failed = failed
            run.__exit__(None, None, None)

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any], catalog: Any) -> None:
        self._finish(run_params, catalog, failed=False)

    @hook_impl
    def on_pipeline_error(self, run_params: dict[str, Any], catalog: Any) -> None:
        self._finish(run_params, catalog, failed=True)


#: Add to ``HOOKS`` in ``settings.py``.
hooks = VineyardHook()
#: The ``kedro.hooks`` entry point: active only with ``VINEYARD_KEDRO_HOOK=1``.
entry_point_hook = VineyardHook(enable_env="VINEYARD_KEDRO_HOOK")

__all__ = ["VineyardHook", "entry_point_hook", "hooks"]
