"""Where a blob pays for itself: one numpy array allocated, written once and
freed, from the heap and from a vineyard blob (the NEP 49 allocator), per size.

    python -m benches.allocator_threshold [--store 2Gi]

The README's allocator threshold (16 MiB) is the size from which the blob is
no slower than the heap.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from vineyard.contrib.kedro import _core

SIZES = [64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20, 64 << 20]


def one(size: int, reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a = np.empty(size, np.uint8)
        a[:] = 1
        del a
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", default="2Gi")
    args = p.parse_args()
    server = _core.Server(size=args.store)
    try:
        print(f"{'size':>10}  {'heap':>10}  {'blob':>10}  blob/heap")
        for size in SIZES:
            reps = max(5, min(200, (256 << 20) // size))
            heap = one(size, reps)
            token = _core.allocator_install(server.socket, 1)
            try:
                blob = one(size, reps)
            finally:
                _core.allocator_restore(token)
            print(f"{size >> 10:>7} KiB  {heap * 1e6:>7.0f} us  {blob * 1e6:>7.0f} us  {blob / heap:.2f}x")
        _core.allocator_release(server.socket)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
