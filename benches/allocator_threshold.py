"""Where a blob pays for itself, and what pooling blobs could save.

    python -m benches.allocator_threshold [--store 2Gi] [--temporaries 50]

First table: one numpy array allocated, written once and freed, from the heap
and from a vineyard blob (the NEP 49 allocator), per size. The README's
allocator threshold (16 MiB) is the size from which the blob is no slower
than the heap.

Second table: a node that makes and drops many large temporaries
(``--temporaries`` times ``a * 2.0`` on a 32 MiB array), on the heap and in
blobs, and the cost of a blob's two round trips to vineyardd (create, drop:
an untouched array allocated and freed), which is all that a pool of freed
blobs could save.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from vineyard.contrib.kedro import _core

SIZES = [64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20, 64 << 20]
TEMPORARY = 32 << 20


def one(size: int, reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a = np.empty(size, np.uint8)
        a[:] = 1
        del a
        best = min(best, time.perf_counter() - t)
    return best


def temporaries(a: np.ndarray, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        tmp = a * 2.0
        del tmp
    return time.perf_counter() - t


def round_trips(size: int, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        tmp = np.empty(size, np.uint8)
        del tmp
    return (time.perf_counter() - t) / n


class Blobs:
    """The allocator installed in this thread (every size from 1 byte)."""

    def __init__(self, socket: str) -> None:
        self.socket = socket

    def __enter__(self) -> None:
        self.token = _core.allocator_install(self.socket, 1)

    def __exit__(self, *exc: object) -> None:
        _core.allocator_restore(self.token)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", default="2Gi")
    p.add_argument("--temporaries", type=int, default=50)
    args = p.parse_args()
    server = _core.Server(size=args.store)
    try:
        print(f"{'size':>10}  {'heap':>10}  {'blob':>10}  blob/heap")
        for size in SIZES:
            reps = max(5, min(200, (256 << 20) // size))
            heap = one(size, reps)
            with Blobs(server.socket):
                blob = one(size, reps)
            print(f"{size >> 10:>7} KiB  {heap * 1e6:>7.0f} us  {blob * 1e6:>7.0f} us  {blob / heap:.2f}x")
        a = np.ones(TEMPORARY // 8)
        print(f"\n{args.temporaries} temporaries of {TEMPORARY >> 20} MiB (a * 2.0), best of 3")
        heap = min(temporaries(a, args.temporaries) for _ in range(3))
        with Blobs(server.socket):
            blob = min(temporaries(a, args.temporaries) for _ in range(3))
            trip = min(round_trips(TEMPORARY, 50) for _ in range(3))
        print(f"  heap {heap:.3f} s, blobs {blob:.3f} s ({blob / heap:.2f}x the heap)")
        print(
            f"  a blob's create and drop: {trip * 1e6:.0f} us, {args.temporaries * trip:.3f} s in all,"
            f" {args.temporaries * trip / blob:.1%} of the blob run: the most a pool could save"
        )
        _core.allocator_release(server.socket)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
