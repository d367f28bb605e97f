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
from typing import Any

from kedro.framework.hooks import hook_impl

from vineyard.contrib.kedro.runner._run import VineyardRun, as_bool


class VineyardHook:
    """Registers vineyard datasets before a run and cleans up after it."""

    def __init__(self, enable_env: str | None = None) -> None:
        self._enable_env = enable_env
        self._runs: list[VineyardRun] = []

    def _enabled(self) -> bool:
        return self._enable_env is None or as_bool(os.environ.get(self._enable_env, ""))

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        if not self._enabled():
            return
        run_id = run_params.get("run_id") or run_params.get("session_id")
        run = VineyardRun(pipeline, catalog, run_id)
        run.__enter__()
        self._runs.append(run)

    def _finish(self) -> None:
        while self._runs:
            self._runs.pop().__exit__(None, None, None)

    @hook_impl
    def after_pipeline_run(self) -> None:
        self._finish()

    @hook_impl
    def on_pipeline_error(self) -> None:
        self._finish()


#: Add to ``HOOKS`` in ``settings.py``.
hooks = VineyardHook()
#: The ``kedro.hooks`` entry point: active only with ``VINEYARD_KEDRO_HOOK=1``.
entry_point_hook = VineyardHook(enable_env="VINEYARD_KEDRO_HOOK")

__all__ = ["VineyardHook", "entry_point_hook", "hooks"]
