"""vineyard-kedro: Kedro datasets and runners over vineyard shared memory.

``VineyardDataSet`` stores a dataset in vineyardd; the runners
(``SequentialRunner``, ``ParallelRunner``, ``ThreadRunner``) route every
intermediate dataset through it; ``hooks`` does the same for Kedro's own
runners.
"""

from vineyard.contrib.kedro._core import __version__
from vineyard.contrib.kedro.io import VineyardDataset, VineyardDataSet
from vineyard.contrib.kedro.plugins.hook import VineyardHook, hooks
from vineyard.contrib.kedro.runner import ParallelRunner, SequentialRunner, ThreadRunner

__all__ = [
    "ParallelRunner",
    "SequentialRunner",
    "ThreadRunner",
    "VineyardDataSet",
    "VineyardDataset",
    "VineyardHook",
    "__version__",
    "hooks",
]
