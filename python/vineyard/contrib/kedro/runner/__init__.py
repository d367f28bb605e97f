"""Kedro runners that pass intermediate datasets through vineyard."""

from vineyard.contrib.kedro.runner.parallel_runner import ParallelRunner
from vineyard.contrib.kedro.runner.sequential_runner import SequentialRunner
from vineyard.contrib.kedro.runner.thread_runner import ThreadRunner

__all__ = ["ParallelRunner", "SequentialRunner", "ThreadRunner"]
