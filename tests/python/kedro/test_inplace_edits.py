"""Loads are writable copy-on-write views: nodes that edit their inputs in
place get the results they get under Kedro's default runner (which hands each
node a copy), and the edits stay private to the view that made them."""

from __future__ import annotations

import gc
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import inplace_pipeline as ip
from kedro_project import kedro_env
from vineyard.contrib.kedro import _core
from vineyard.contrib.kedro.codec import get_value, put_value

HERE = Path(__file__).parent


def assert_results_like_kedros(results: dict, kedros: dict, runner: str, inputs: dict | None = None) -> None:
    assert sorted(results) == sorted(kedros)
    for name in ip.RESULTS:
        ip.assert_same(results[name], kedros[name], f"{runner}: {name}")
    # a later node consuming the same inputs still sees them unedited
    for name, want in (inputs or ip.expected_untouched()).items():
        ip.assert_same(results[name], want, f"{runner}: {name}")


@pytest.fixture(scope="module")
def kedros_results(tmp_path_factory) -> dict:
    return ip.run("kedro", "", tmp_path_factory.mktemp("kedro"))


@pytest.mark.parametrize("runner", ["sequential", "thread", "parallel"])
def test_in_place_edits_match_kedros_default_runner(vineyardd, tmp_path, kedros_results, runner):
    c = _core.Client(vineyardd.socket)
    names_before = set(c.list_names())
    results = ip.run(runner, vineyardd.socket, tmp_path)
    assert_results_like_kedros(results, kedros_results, runner)
    # the edit really happened (the default runner's results are not the inputs)
    assert not np.array_equal(kedros_results["arr_times_two"], kedros_results["untouched_arr"])
    assert set(c.list_names()) == names_before


def test_in_place_edits_on_kedro_019_and_pandas_2(vineyardd, tmp_path):
    python = os.environ.get("VINEYARD_KEDRO019_PYTHON")
    if not python:
        pytest.fail("set VINEYARD_KEDRO019_PYTHON to a Python with Kedro 0.19 and this package (.ci/run does)")
    env = kedro_env(PYTHONPATH=str(HERE))
    version = subprocess.run([python, "-c", "import kedro, pandas; print(kedro.__version__, pandas.__version__)"], env=env, capture_output=True, text=True)
    assert version.stdout.startswith("0.19") and " 2." in version.stdout, version.stdout + version.stderr
    out = subprocess.run(
        [python, str(HERE / "inplace_pipeline.py"), vineyardd.socket, str(tmp_path)], env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-4000:]
    results = {r: pickle.loads((tmp_path / f"{r}.pkl").read_bytes()) for r in ip.RUNNERS}
    inputs = pickle.loads((tmp_path / "inputs.pkl").read_bytes())  # as pandas 2 made them
    for runner in ip.RUNNERS:
        assert_results_like_kedros(results[runner], results["kedro"], f"0.19 {runner}", inputs)


def test_every_numpy_view_is_writable_and_arrow_stays_read_only(client):
    value = {
        "a": np.arange(10.0),
        "t": (np.ones((3, 4)),),
        "l": [np.zeros(5, dtype=np.int8)],
        "frame": pd.DataFrame(
            {
                "f": np.arange(4.0),
                "i": pd.array([1, None, 3, 4], dtype="Int64"),
                "c": pd.Categorical(list("xyxy")),
                "t": pd.date_range("2024-01-01", periods=4),
                "s": pd.Series(list("abcd"), dtype="str"),
                "p": pd.Series([1, 2, 3, 4], dtype="int64[pyarrow]"),
            }
        ),
    }
    info = put_value(client, value, persist=False)
    back = get_value(client, id=info.id)
    assert back["a"].flags.writeable and back["t"][0].flags.writeable and back["l"][0].flags.writeable
    frame = back["frame"]
    frame.loc[1, "f"] = -1.0
    frame.loc[0, "i"] = 7
    frame.loc[0, "t"] = pd.Timestamp("2000-01-01")
    frame.loc[3, "c"] = "x"
    frame.loc[2, "s"] = "z"  # Arrow-backed: pandas replaces the array instead of writing into it
    frame.loc[2, "p"] = 9
    assert frame["f"].tolist() == [0.0, -1.0, 2.0, 3.0] and frame["i"].tolist()[0] == 7
    assert frame["s"].tolist() == ["a", "b", "z", "d"] and frame["p"].tolist() == [1, 2, 9, 4]
    again = get_value(client, id=info.id)
    pd.testing.assert_frame_equal(again["frame"], value["frame"], check_exact=True)
    # Arrow memory is never writable, whatever reaches it
    arrow = again["frame"]["p"].array._pa_array.chunks[0].buffers()[1]
    assert not np.frombuffer(arrow, dtype=np.uint8).flags.writeable
    del back, again, frame, arrow
    gc.collect()
    client.delete([info.id])


def test_edits_stay_private_to_their_load(client):
    a = np.random.default_rng(1).random((1 << 17, 8))  # 8 MiB
    info = put_value(client, a, name="inplace/private")
    first = get_value(client, name="inplace/private")
    second = get_value(client, name="inplace/private")
    first *= 2
    first[7, 7] = -1
    np.testing.assert_array_equal(second, a)  # another load in the same process
    np.testing.assert_array_equal(get_value(client, name="inplace/private"), a)  # the next load
    probe = (
        "import sys, numpy as np\n"
        "from vineyard.contrib.kedro import _core\n"
        "from vineyard.contrib.kedro.codec import get_value\n"
        "v = get_value(_core.Client(sys.argv[1]), name='inplace/private')\n"
        "print(repr(float(v.sum())), repr(float(v[7, 7])))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe, client.socket], env=kedro_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [repr(float(a.sum())), repr(float(a[7, 7]))]  # another process
    assert first[7, 7] == -1 and first[0, 0] == 2 * a[0, 0]
    client.drop_name("inplace/private")
    client.delete([info.id])


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} missing from /proc/self/status")


def test_resident_memory_grows_only_by_the_pages_written(client):
    size = 256 << 20
    saved = put_value(client, np.full(size // 8, 1.5), persist=False)
    gc.collect()
    rss, anon = _status_kib("VmRSS"), _status_kib("RssAnon")
    arr = get_value(client, id=saved.id)
    assert arr.nbytes == size and arr.flags.writeable
    assert _status_kib("VmRSS") - rss < 8 << 10, "a load must not fault the array in"
    assert arr[:: 1 << 16].sum() == 1.5 * (size // 8 >> 16)
    assert _status_kib("RssAnon") - anon < 8 << 10, "reads must not copy pages"
    arr[:: 1 << 17] = 2.0  # one write every MiB: 256 pages copied
    grown = _status_kib("RssAnon") - anon
    assert 256 * 4 <= grown < 16 << 10, f"{grown} KiB of private memory for 256 written pages"
    arr *= 2  # every page
    assert _status_kib("RssAnon") - anon >= (size >> 10) * 9 // 10
    assert get_value(client, id=saved.id)[:: 1 << 16].tolist() == [1.5] * (size // 8 >> 16)
    del arr
    gc.collect()
    client.delete([saved.id])


def test_delete_waits_for_the_private_views(small_vineyardd):
    """vineyardd frees a deleted blob at once; the pages a private view has
    not copied still read the memory file, so the delete is deferred."""
    c = _core.Client(small_vineyardd.socket)
    a = np.arange(2 << 20, dtype=np.float64)  # 16 MiB
    info = put_value(c, a, persist=False)
    view = get_value(c, id=info.id)
    view[:10] = -1  # some pages private, the rest still the file's
    tail = view[1 << 20 :]
    del view
    gc.collect()
    assert c.delete([info.id]) == 1 and c.deferred == 1
    filler = put_value(c, np.full(2 << 20, 42.0), persist=False)  # would reuse the freed pages
    np.testing.assert_array_equal(tail, a[1 << 20 :])
    del tail
    gc.collect()
    c.flush()
    assert c.deferred == 0
    c.delete([filler.id])
    c.close()
