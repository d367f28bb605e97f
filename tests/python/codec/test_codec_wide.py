"""Wide DataFrames (more than VINEYARD_KEDRO_WIDE_COLUMNS columns): one
Tensor per pandas block, zero-copy loads, exact round trips."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from codec_helpers import assert_zero_copy, load, roundtrip

from vineyard.contrib.kedro.codec import put_value
from vineyard.contrib.kedro.codec.pandas.wide import DEFAULT_THRESHOLD, WIDE
from vineyard.contrib.kedro.errors import LayoutError

N = DEFAULT_THRESHOLD + 44


def frames():
    rng = np.random.default_rng(7)
    return {
        "from_2d_array": pd.DataFrame(rng.random((40, N)), columns=[f"c{i}" for i in range(N)]),
        "from_dict": pd.DataFrame({f"c{i}": rng.integers(0, 9, 25, dtype=np.int32) for i in range(N)}),
        "mixed_blocks": pd.DataFrame(
            {
                **{f"f{i}": rng.random(12) for i in range(N)},
                "s": list("abcdefghijkl"),
                "cat": pd.Categorical(list("xyxyxyxyxyxy"), ordered=True),
                "when": pd.date_range("2024-01-01", periods=12, tz="Europe/Paris"),
                "flag": np.arange(12) % 2 == 0,
            },
            index=pd.Index(np.arange(12) * 3, name="k"),
        ),
        "duplicate_labels": pd.DataFrame(np.arange(N * 3, dtype=np.int64).reshape(3, N), columns=["a"] * N),
        "multiindex_columns": pd.DataFrame(
            rng.random((5, N)), columns=pd.MultiIndex.from_arrays([np.arange(N) % 4, [f"v{i}" for i in range(N)]])
        ),
        "no_rows": pd.DataFrame(np.empty((0, N)), columns=range(N)),
    }


@pytest.mark.parametrize("name", list(frames()))
def test_wide_frames_round_trip_exactly(client, name):
    df = frames()[name]
    loaded = load(client, df)
    assert loaded.info.typename == WIDE
    pd.testing.assert_frame_equal(loaded.value, df, check_exact=True)


def test_wide_numeric_blocks_load_zero_copy(client):
    df = frames()["from_2d_array"]
    loaded = load(client, df)
    assert len(loaded.value._mgr.blocks) == 1
    for col in (0, N // 2, N - 1):
        assert_zero_copy(loaded, loaded.value.iloc[:, col].to_numpy())


def test_threshold_can_be_changed_and_turned_off(client, monkeypatch):
    df = pd.DataFrame(np.ones((3, 20)))
    monkeypatch.setenv("VINEYARD_KEDRO_WIDE_COLUMNS", "10")
    assert put_value(client, df, persist=False).typename == WIDE
    monkeypatch.setenv("VINEYARD_KEDRO_WIDE_COLUMNS", "0")
    assert put_value(client, frames()["from_2d_array"], persist=False).typename == "vineyard::DataFrame"
    pd.testing.assert_frame_equal(roundtrip(client, df), df, check_exact=True)


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda m: m.update({"__blocks_-locs-0": "[0, 0]"}),
        lambda m: m.update({"__blocks_-locs-0": f"[{N * 10}]"}),
        lambda m: m.update({"vineyard_kedro_nrows_": 10**9}),
        lambda m: m.update({"__blocks_-size": 5}),
        lambda m: m.update({"__blocks_-transposed-0": not m["__blocks_-transposed-0"]}),
    ],
)
def test_hostile_wide_metadata_is_a_layout_error(client, corrupt):
    from vineyard.contrib.kedro.codec import decode_meta

    info = put_value(client, frames()["from_2d_array"], persist=False)
    _, meta, blobs = client.get(id=info.id)
    corrupt(meta)
    with pytest.raises(LayoutError):
        decode_meta(meta, blobs)
    client.delete([info.id])
