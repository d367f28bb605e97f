"""A pipeline whose nodes edit their inputs in place, as real node code does
under Kedro's default runner (whose MemoryDataset hands each node a copy).

Importable by the tests (Kedro 1.x, pandas 3) and run as a script by the
Kedro 0.19 / pandas 2 Python: ``python inplace_pipeline.py SOCKET OUT_DIR``
runs every runner and pickles each one's results to ``OUT_DIR/<runner>.pkl``,
and the untouched inputs to ``OUT_DIR/inputs.pkl``.

Every edit node returns the input it edited; ``untouched`` runs after all of
them and returns the inputs it is given, which must be the originals.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np
import pandas as pd

INPUTS = ["arr", "ints", "nested", "arrays", "frame", "holes"]
EDITS = {
    "times_two": ("arr", "arr_times_two"),
    "set_item": ("arr", "arr_set_item"),
    "shuffle": ("ints", "ints_shuffled"),
    "sort": ("ints", "ints_sorted"),
    "clip": ("arr", "arr_clipped"),
    "edit_nested": ("nested", "nested_edited"),
    "edit_list": ("arrays", "arrays_edited"),
    "add_to_column": ("frame", "frame_added"),
    "loc_iloc": ("frame", "frame_located"),
    "fillna": ("holes", "holes_filled"),
    "sort_reset_drop": ("frame", "frame_sorted"),
    "scale_columns": ("frame", "frame_scaled"),
}
RESULTS = [out for _, out in EDITS.values()] + [f"untouched_{i}" for i in INPUTS]
RUNNERS = ["kedro", "sequential", "thread", "parallel"]


def make_inputs() -> dict:
    rng = np.random.default_rng(7)
    n = 300_000  # ~2.3 MiB per float column: edits touch some pages, not all
    frame = pd.DataFrame(
        {
            "a": np.arange(n, dtype=np.int64),
            "b": rng.random(n),
            "c": rng.integers(0, 10, n).astype(np.int32),
            "d": np.linspace(-1.0, 1.0, n),
            "s": pd.Series([f"w{i % 97}" for i in range(n)], dtype="str"),
        }
    )
    holes = pd.DataFrame({"x": np.where(np.arange(n) % 5 == 0, np.nan, np.arange(n, dtype=np.float64)), "y": rng.random(n)})
    return {
        "arr": rng.random((600, 500)),
        "ints": rng.integers(-1000, 1000, 200_000),
        "nested": {"weights": rng.random(50_000), "layers": [np.arange(10_000.0), (np.ones(20_000, dtype=np.int32),)]},
        "arrays": [np.zeros(40_000), np.arange(40_000, dtype=np.int16)],
        "frame": frame,
        "holes": holes,
    }


def produce():
    v = make_inputs()
    return tuple(v[k] for k in INPUTS)


def times_two(arr):
    arr *= 2
    return arr


def set_item(arr):
    arr[0, 0] = 5
    arr[-1, -1] = 5
    return arr


def shuffle(ints):
    np.random.default_rng(11).shuffle(ints)
    return ints


def sort(ints):
    ints.sort()
    return ints


def clip(arr):
    np.clip(arr, 0.25, 0.75, out=arr)
    return arr


def edit_nested(nested):
    nested["weights"] *= -1
    nested["layers"][0][100:200] = 7.0
    nested["layers"][1][0][::2] += 3
    return nested


def edit_list(arrays):
    arrays[0][::1000] = 1.5
    arrays[1] -= 5
    return arrays


def add_to_column(frame):
    frame["a"] += 1
    return frame


def loc_iloc(frame):
    frame.loc[0, "b"] = 99.0
    frame.loc[frame["c"] == 3, "d"] = -5.0
    frame.iloc[1, 0] = -7
    frame.iloc[2:5, 2] = 42
    return frame


def fillna(holes):
    holes.fillna(0.0, inplace=True)
    return holes


def sort_reset_drop(frame):
    frame.sort_values("b", inplace=True)
    frame.reset_index(drop=True, inplace=True)
    frame.drop(columns=["c"], inplace=True)
    return frame


def scale_columns(frame):
    cols = ["b", "d"]
    frame[cols] *= 2
    return frame


def untouched(arr, ints, nested, arrays, frame, holes, *_edited):
    return arr, ints, nested, arrays, frame, holes


def build_pipeline():
    from kedro.pipeline import node, pipeline

    nodes = [node(produce, None, INPUTS, name="produce")]
    nodes += [node(globals()[fn], inp, out, name=fn) for fn, (inp, out) in EDITS.items()]
    edited = [out for _, out in EDITS.values()]
    nodes.append(node(untouched, INPUTS + edited, [f"untouched_{i}" for i in INPUTS], name="untouched"))
    return pipeline(nodes)


def run(runner: str, socket: str, out_dir: Path) -> dict:
    """Runs the pipeline under `runner` ("kedro": Kedro's own SequentialRunner
    with its default MemoryDatasets; the others: ours on `socket`); returns
    the results, which the catalog writes to pickle files in `out_dir`."""
    from kedro.io import DataCatalog
    from kedro_datasets.pickle import PickleDataset

    out_dir.mkdir(parents=True, exist_ok=True)
    results = {name: PickleDataset(filepath=str(out_dir / f"{name}.pkl")) for name in RESULTS}
    if runner == "kedro":
        from kedro.runner import SequentialRunner

        SequentialRunner().run(build_pipeline(), DataCatalog(dict(results)))
    else:
        from vineyard.contrib.kedro import runner as ours

        cls = {"sequential": ours.SequentialRunner, "thread": ours.ThreadRunner, "parallel": ours.ParallelRunner}[runner]
        catalog = DataCatalog(dict(results))
        if runner == "parallel":
            try:
                from kedro.io import SharedMemoryDataCatalog  # Kedro 1.x's catalog for a ParallelRunner
            except ImportError:  # Kedro 0.19 wraps a plain DataCatalog itself
                pass
            else:
                catalog = SharedMemoryDataCatalog(dict(results))
        cls(vineyard_ipc_socket=socket).run(build_pipeline(), catalog)
    # (a catalog may add its intermediates to the dict it was given: hence the copies)
    return {name: ds.load() for name, ds in results.items()}


def expected_untouched() -> dict:
    return {f"untouched_{k}": v for k, v in make_inputs().items()}


def assert_same(got, want, where: str = "value") -> None:
    """Equal values of equal types, recursively."""
    assert type(got) is type(want), f"{where}: {type(got).__name__} != {type(want).__name__}"
    if isinstance(want, pd.DataFrame):
        pd.testing.assert_frame_equal(got, want, check_exact=True, obj=where)
    elif isinstance(want, np.ndarray):
        assert got.dtype == want.dtype and got.shape == want.shape, where
        np.testing.assert_array_equal(got, want, err_msg=where, strict=True)
    elif isinstance(want, dict):
        assert list(got) == list(want), where
        for k in want:
            assert_same(got[k], want[k], f"{where}[{k!r}]")
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same(g, w, f"{where}[{i}]")
    else:
        assert got == want, where


if __name__ == "__main__":
    socket, out = sys.argv[1], Path(sys.argv[2])
    (out / "inputs.pkl").write_bytes(pickle.dumps(expected_untouched(), protocol=5))
    for name in sys.argv[3:] or RUNNERS:
        res = run(name, socket, out / name)
        (out / f"{name}.pkl").write_bytes(pickle.dumps(res, protocol=5))
