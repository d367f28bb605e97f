"""``ParallelRunner``: Kedro's ParallelRunner with intermediates in vineyard."""

from __future__ import annotations

from typing import Any

from kedro.runner import ParallelRunner as _KedroParallelRunner

from vineyard.contrib.kedro.runner._mixin import VineyardRunnerMixin


class ParallelRunner(VineyardRunnerMixin, _KedroParallelRunner):
    """Kedro's ``ParallelRunner`` whose intermediate datasets live in vineyard.

    Every dataset the pipeline produces that the catalog does not define is
    stored in vineyardd under a namespace of its own for this run, released
    as soon as its last consumer has run, and whatever is left is deleted
    when the run ends. With no vineyardd configured, the runner starts a
    private one for the run. Usage::

        kedro run --runner vineyard.contrib.kedro.runner.ParallelRunner
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        args, kwargs = self._init_vineyard(_KedroParallelRunner, args, kwargs)
        super().__init__(*args, **kwargs)
