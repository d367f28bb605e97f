"""Node outputs born in vineyard blobs: numpy's NEP 49 memory handler around
node execution.

While a node function runs, numpy arrays (and pandas columns, which numpy
allocates) of at least ``threshold`` bytes get their memory from unsealed
blobs of the run's vineyardd instead of the heap; smaller arrays, and
everything outside node functions (loads, saves, Kedro itself), keep the
previous handler. A full or unreachable store falls back to the previous
handler. Each blob is freed when numpy frees the array's memory, whenever
that is: an array that outlives the run keeps its blob (and its mapping)
as long as it lives. A save of an array that is exactly one blob seals the
blob in place instead of copying it (the core's ``store::put``).

The handler is installed by the node's function itself (a wrapper), so it
applies in whatever thread or worker process runs the node; numpy keeps the
handler in a context variable, so other threads are unaffected.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
from typing import Any, Callable

from vineyard.contrib.kedro import _core
from vineyard.contrib.kedro.runner._run import as_bool

logger = logging.getLogger("vineyard.contrib.kedro")

#: Turns the allocator off (0) or on (1, the default); the runner parameter ``allocator`` wins.
ENV_ALLOCATOR = "VINEYARD_KEDRO_ALLOCATOR"
#: Smallest array, in bytes, whose memory comes from a blob.
ENV_THRESHOLD = "VINEYARD_KEDRO_ALLOCATOR_THRESHOLD"
#: Measured (see README, "Arrays allocated in vineyard"): below ~16 MiB a
#: blob's two round trips to vineyardd cost more than the heap allocation
#: and page faults they replace.
DEFAULT_THRESHOLD = 16 << 20

_warned = False


def parse_threshold(value: Any) -> int:
    """Bytes, from an int or a string such as ``"16777216"``."""
    try:
        threshold = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"the allocator threshold must be a number of bytes, not {value!r} (from {ENV_THRESHOLD} or allocator_threshold)") from None
    if threshold < 1:
        raise ValueError(f"the allocator threshold must be at least 1 byte, not {threshold}")
    return threshold


class AllocatingCall:
    """A node function run with numpy's memory handler set to vineyard blobs.

    Picklable when the function is (ParallelRunner ships nodes to its
    workers, and each worker installs the handler in its own process).
    """

    def __init__(self, func: Callable[..., Any], socket: str, threshold: int) -> None:
        self.func = func
        self.socket = socket
        self.threshold = threshold
        functools.update_wrapper(self, func)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        global _warned
        try:
            token = _core.allocator_install(self.socket, self.threshold)
        except (ImportError, RuntimeError) as exc:  # no numpy, or numpy < 1.22
            if not _warned:
                _warned = True
                logger.warning("vineyard: node outputs are allocated on the heap: %s", exc)
            return self.func(*args, **kwargs)
        try:
            return self.func(*args, **kwargs)
        finally:
            _core.allocator_restore(token)

    def __reduce__(self) -> tuple[Any, ...]:
        return (AllocatingCall, (self.func, self.socket, self.threshold))


def wrap_pipeline(pipeline: Any, socket: str, threshold: int) -> Any:
    """`pipeline` with every node function run under the handler.

    Generator nodes are left as they are: their body runs after the
    function returns, and Kedro recognises them by their function.
    """
    from kedro.pipeline import Pipeline

    nodes = []
    for node in pipeline.nodes:
        if inspect.isgeneratorfunction(node.func) or isinstance(node.func, AllocatingCall):
            nodes.append(node)
        else:
            nodes.append(node._copy(func=AllocatingCall(node.func, socket, threshold)))  # noqa: SLF001 - Kedro's own copy
    return Pipeline(nodes)


def release(socket: str) -> None:
    """The end of a run: closes the allocator's connection unless arrays
    allocated in its blobs are still alive."""
    _core.allocator_release(socket)


def enabled(value: Any, default: bool = False) -> bool:
    """The runner parameter, else the environment variable, else `default`."""
    if value is None:
        env = os.environ.get(ENV_ALLOCATOR)
        return default if env is None or env.strip() == "" else as_bool(env)
    return as_bool(value)
