"""vineyard-kedro: Kedro datasets and runners over vineyard shared memory.

``VineyardDataset`` (alias ``VineyardDataSet``) stores a dataset in vineyardd; the runners
(``SequentialRunner``, ``ParallelRunner``, ``ThreadRunner``) route every
intermediate dataset through it; ``hooks`` does the same for Kedro's own
runners.

The names are imported on first use (PEP 562): importing ``kedro.runner``
configures Kedro's logging, which must not happen to the ``vineyard-kedro``
script (it would print a log line on stdout, before ``ls --json``'s JSON).
"""

import importlib
from typing import Any

from vineyard.contrib.kedro._core import __version__

_EXPORTS = {
    "ParallelRunner": "vineyard.contrib.kedro.runner",
    "SequentialRunner": "vineyard.contrib.kedro.runner",
    "ThreadRunner": "vineyard.contrib.kedro.runner",
    "VineyardDataSet": "vineyard.contrib.kedro.io",
    "VineyardDataset": "vineyard.contrib.kedro.io",
    "VineyardHook": "vineyard.contrib.kedro.plugins.hook",
    "hooks": "vineyard.contrib.kedro.plugins.hook",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
