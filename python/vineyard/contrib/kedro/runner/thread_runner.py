"""``ThreadRunner``: Kedro's ThreadRunner with intermediates in vineyard."""

from __future__ import annotations

from typing import Any

from kedro.runner import ThreadRunner as _KedroThreadRunner

from vineyard.contrib.kedro.runner._mixin import VineyardRunnerMixin


class ThreadRunner(VineyardRunnerMixin, _KedroThreadRunner):
    """Kedro's ``ThreadRunner`` whose intermediate datasets live in vineyard.

    Every dataset the pipeline produces that the catalog does not define is
    stored in vineyardd under a namespace of its own for this run, released
    as soon as its last consumer has run, and whatever is left is deleted
    when the run ends. With no vineyardd configured, the runner starts a
    private one for the run. Usage::

        kedro run --runner vineyard.contrib.kedro.runner.ThreadRunner
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        args, kwargs = self._init_vineyard(_KedroThreadRunner, args, kwargs)
        super().__init__(*args, **kwargs)
