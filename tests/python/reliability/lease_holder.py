"""A process that holds a loaded value while others delete it (the
cross-process lease tests drive it through stdin/stdout).

`python lease_holder.py SOCKET NAMESPACE DS_NAME`: loads the dataset the way a
notebook does (`VineyardDataSet.load()`), prints "loaded", then answers one
command per line:

* ``check``: "same" when the array still holds only 1.0, else "changed ...";
* ``saveover``: saves a new value under the same name while still viewing the
  old one, prints "saved";
* ``drop``: drops the view (and collects), prints "dropped";
* ``exit``: leaves.
"""

from __future__ import annotations

import gc
import sys

import numpy as np


def main() -> None:
    _, socket, namespace, ds_name = sys.argv
    from vineyard.contrib.kedro.io import VineyardDataSet

    ds = VineyardDataSet(ds_name=ds_name, namespace=namespace, vineyard_ipc_socket=socket)
    arr = ds.load()
    expected = arr.size
    print("loaded", flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "check":
            ok = arr is not None and arr.size == expected and bool((arr == 1.0).all())
            print("same" if ok else f"changed: {np.unique(arr)[:5]}", flush=True)
        elif cmd == "saveover":
            ds.save(np.full(expected, 2.0))
            print("saved", flush=True)
        elif cmd == "drop":
            arr = None
            gc.collect()
            print("dropped", flush=True)
        elif cmd == "exit":
            return


if __name__ == "__main__":
    main()
