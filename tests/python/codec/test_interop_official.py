"""Interop with the official vineyard Python client (vineyard==0.24.2) on the
same vineyardd: it reads what we write (numeric DataFrame, Series, ndarrays,
numeric Arrow table) and we read what it writes (numeric and object-string
DataFrames, Series, ndarray, Arrow table). Also: our package imports and works
next to the official `vineyard` package (both share the `vineyard` namespace).

The official client lives in its own venv (it pins older pandas); point
VINEYARD_OFFICIAL_PYTHON at that venv's python:

    python3 -m venv /work/.venv-official
    /work/.venv-official/bin/pip install vineyard==0.24.2 "setuptools<70" numpy "pandas<3" pyarrow
    maturin build --release -o /tmp/wheels && /work/.venv-official/bin/pip install /tmp/wheels/vineyard_kedro-*.whl
    export VINEYARD_OFFICIAL_PYTHON=/work/.venv-official/bin/python

Locally, VINEYARD_KEDRO_SKIP_OFFICIAL=1 skips these tests instead of failing.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import vineyard
from vineyard.contrib.kedro.codec import get_value, put_value

def run(python: str, socket: str, script: str, tmp_path: Path) -> dict:
    out = tmp_path / "result.pickle"
    env = {**os.environ, "SOCKET": socket, "RESULT": str(out), "KEDRO_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1"}
    proc = subprocess.run([python, "-c", textwrap.dedent(script)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"official-client script failed:\n{proc.stdout}\n{proc.stderr}"
    with open(out, "rb") as f:
        return pickle.load(f)


def numeric_frame(n: int = 1000) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    return pd.DataFrame(
        {
            "i64": np.arange(n, dtype=np.int64),
            "f64": rng.random(n),
            "i32": (np.arange(n) % 97).astype(np.int32),
            "u8": (np.arange(n) % 200).astype(np.uint8),
            "f32": rng.random(n).astype(np.float32),
            "b": np.arange(n) % 3 == 0,
        }
    )


ARRAYS = {
    "int8": np.arange(-50, 50, dtype=np.int8),
    "uint16": np.arange(100, dtype=np.uint16),
    "int32": np.arange(12, dtype=np.int32).reshape(3, 4),
    "int64": np.arange(24, dtype=np.int64).reshape(2, 3, 4),
    "float32": np.linspace(0, 1, 10, dtype=np.float32),
    "float64": np.random.default_rng(4).random((5, 6)),
    "bool": np.array([True, False, True]),
    "fortran": np.asfortranarray(np.arange(12.0).reshape(3, 4)),
    "scalar": np.array(2.5),
}

# The official client reads our objects and writes its own; everything it
# reads is reduced to plain numpy/lists before pickling back to us.
OFFICIAL_SCRIPT = """
    import os, pickle
    import numpy as np, pandas as pd, pyarrow as pa
    import vineyard
    client = vineyard.connect(os.environ["SOCKET"])

    def plain_frame(df):
        return {"columns": list(df.columns), "index": np.asarray(df.index), "index_type": type(df.index).__name__,
                "values": {c: np.asarray(df[c]) for c in df.columns}, "dtypes": [str(t) for t in df.dtypes]}

    res = {"read": {}}
    res["read"]["frame"] = plain_frame(client.get(name="ours/frame"))
    res["read"]["frame_range"] = plain_frame(client.get(name="ours/frame_range"))
    res["read"]["frame_index"] = plain_frame(client.get(name="ours/frame_index"))
    s = client.get(name="ours/series")
    res["read"]["series"] = {"name": s.name, "values": np.asarray(s), "index": np.asarray(s.index)}
    s = client.get(name="ours/series_range")
    res["read"]["series_range"] = {"name": s.name, "values": np.asarray(s), "index": np.asarray(s.index)}
    res["read"]["arrays"] = {k: np.array(client.get(name="ours/array/" + k)) for k in %(arrays)r}
    st = client.get(name="ours/strings")
    res["read"]["strings"] = {c: st[c].tolist() for c in st.columns}
    t = client.get(name="ours/table")
    res["read"]["table"] = {"names": t.column_names, "columns": [t.column(i).to_numpy() for i in range(t.num_columns)],
                            "batches": len(t.to_batches())}

    rng = np.random.default_rng(5)
    n = 500
    frame = pd.DataFrame({"i": np.arange(n), "f": rng.random(n), "i32": np.arange(n, dtype=np.int32)})
    client.put(frame, persist=True, name="theirs/frame")
    strings = pd.DataFrame({"s": ["v%%d" %% i if i %% 7 else None for i in range(n)], "x": np.arange(n) * 0.5})
    strings.index = pd.Index(np.arange(n) * 2)
    client.put(strings, persist=True, name="theirs/strings")
    client.put(pd.Series(rng.random(n), name="s"), persist=True, name="theirs/series")
    client.put(np.arange(24, dtype=np.int16).reshape(4, 6), persist=True, name="theirs/array")
    client.put(np.asfortranarray(np.arange(6.0).reshape(2, 3)), persist=True, name="theirs/fortran")
    table = pa.Table.from_batches([pa.record_batch({"a": np.arange(i, i + 10), "b": np.arange(10) * 1.5}) for i in (0, 10, 20)])
    client.put(table, persist=True, name="theirs/table")
    client.put(pa.table({"s": ["x", None, "zz"], "l": [[1], [], [2, 3]]}), persist=True, name="theirs/table_strings")
    with open(os.environ["RESULT"], "wb") as f:
        pickle.dump(res, f)
"""


def test_official_client_and_we_read_each_other(client, vineyardd, official_python, tmp_path):
    frame = numeric_frame()
    put_value(client, frame, name="ours/frame")
    put_value(client, frame.iloc[100:300], name="ours/frame_range")  # RangeIndex(100, 300)
    put_value(client, frame.set_index(frame["i64"] * 3), name="ours/frame_index")
    series = pd.Series(np.linspace(0, 1, 50), name="ser", index=pd.Index(np.arange(50) * 2, name="k"))
    put_value(client, series, name="ours/series")
    put_value(client, pd.Series(np.arange(20.0), name="r"), name="ours/series_range")
    for k, a in ARRAYS.items():
        put_value(client, a, name=f"ours/array/{k}")
    table = pa.Table.from_batches([pa.record_batch({"a": np.arange(i, i + 5), "f": np.arange(5) * 0.25}) for i in (0, 5)])
    put_value(client, table, name="ours/table")
    words = ["a", None, "bb", "", "é€", "z"]
    put_value(client, pd.DataFrame({"str": pd.Series(words, dtype="str"), "obj": pd.Series(words, dtype=object)}), name="ours/strings")

    res = run(official_python, vineyardd.socket, OFFICIAL_SCRIPT % {"arrays": list(ARRAYS)}, tmp_path)

    # -- the official client read ours
    def check_frame(got, df):
        assert got["columns"] == list(df.columns)
        np.testing.assert_array_equal(got["index"], np.asarray(df.index))
        assert got["dtypes"] == [str(t) for t in df.dtypes]
        for c in df.columns:
            np.testing.assert_array_equal(got["values"][c], df[c].to_numpy(), strict=True)

    read = res["read"]
    check_frame(read["frame"], frame)
    check_frame(read["frame_range"], frame.iloc[100:300])
    check_frame(read["frame_index"], frame.set_index(frame["i64"] * 3))
    assert read["series"]["name"] == "ser"
    np.testing.assert_array_equal(read["series"]["values"], series.to_numpy(), strict=True)
    np.testing.assert_array_equal(read["series"]["index"], series.index.to_numpy(), strict=True)
    np.testing.assert_array_equal(read["series_range"]["index"], np.arange(20))
    np.testing.assert_array_equal(read["series_range"]["values"], np.arange(20.0), strict=True)
    for k, a in ARRAYS.items():
        np.testing.assert_array_equal(read["arrays"][k], a, strict=True)
    assert read["strings"]["obj"] == words  # object strings stay object strings
    assert read["strings"]["str"] == words  # pandas 3 `str` reaches pandas 2 as object strings
    assert read["table"]["names"] == ["a", "f"] and read["table"]["batches"] == 2
    np.testing.assert_array_equal(read["table"]["columns"][0], np.arange(10))
    np.testing.assert_array_equal(read["table"]["columns"][1], np.tile(np.arange(5) * 0.25, 2))

    # -- we read theirs
    rng = np.random.default_rng(5)
    n = 500
    expected = pd.DataFrame({"i": np.arange(n), "f": rng.random(n), "i32": np.arange(n, dtype=np.int32)})
    pd.testing.assert_frame_equal(get_value(client, name="theirs/frame"), expected, check_exact=True)
    strings = get_value(client, name="theirs/strings")
    assert strings["s"].dtype == object
    assert strings["s"].tolist() == [f"v{i}" if i % 7 else None for i in range(n)]
    np.testing.assert_array_equal(strings["x"].to_numpy(), np.arange(n) * 0.5)
    np.testing.assert_array_equal(strings.index.to_numpy(), np.arange(n) * 2)
    s = get_value(client, name="theirs/series")
    assert s.name == "s"
    np.testing.assert_array_equal(s.to_numpy(), rng.random(n), strict=True)
    np.testing.assert_array_equal(get_value(client, name="theirs/array"), np.arange(24, dtype=np.int16).reshape(4, 6), strict=True)
    fortran = get_value(client, name="theirs/fortran")
    assert fortran.flags.f_contiguous
    np.testing.assert_array_equal(fortran, np.arange(6.0).reshape(2, 3), strict=True)
    t = get_value(client, name="theirs/table")
    assert t.equals(pa.table({"a": np.arange(30), "b": np.tile(np.arange(10) * 1.5, 3)}))
    t = get_value(client, name="theirs/table_strings")
    assert t.column("s").to_pylist() == ["x", None, "zz"] and t.column("l").to_pylist() == [[1], [], [2, 3]]


COEXIST_SCRIPT = """
    import os, pickle
    import numpy as np, pandas as pd
    import vineyard  # the official package: a regular package with __init__.py
    from vineyard.contrib.kedro import _core
    from vineyard.contrib.kedro.codec import get_value, put_value
    c = _core.Client(os.environ["SOCKET"])
    df = pd.DataFrame({"a": np.arange(10), "s": ["x%d" % i for i in range(10)], "c": pd.Categorical(list("ab") * 5)})
    info = put_value(c, df, name="coexist/frame")
    back = get_value(c, name="coexist/frame")
    pd.testing.assert_frame_equal(back, df, check_exact=True)
    with open(os.environ["RESULT"], "wb") as f:
        pickle.dump({"official": vineyard.__version__, "official_file": vineyard.__file__, "typename": info.typename,
                     "pandas": pd.__version__}, f)
"""


def test_our_package_works_next_to_the_official_one(vineyardd, official_python, tmp_path):
    res = run(official_python, vineyardd.socket, COEXIST_SCRIPT, tmp_path)
    assert res["official"] == "0.24.2" and res["official_file"].endswith("vineyard/__init__.py")
    assert res["typename"] == "vineyard::DataFrame"


def test_our_package_works_without_the_official_one(client):
    # In this venv `vineyard` is only a namespace (no __init__.py anywhere).
    assert getattr(vineyard, "__file__", None) is None, "the official vineyard package is installed here"
    for root in (Path(__file__).parents[3] / "python" / "vineyard",):
        assert not (root / "__init__.py").exists() and not (root / "contrib" / "__init__.py").exists()
    df = numeric_frame(10)
    put_value(client, df, name="alone/frame")
    pd.testing.assert_frame_equal(get_value(client, name="alone/frame"), df, check_exact=True)


SIGNED_SCRIPT = """
    import os, pickle
    import numpy as np
    import vineyard
    client = vineyard.connect(os.environ["SOCKET"])
    res = {"set": client.get(name="signed/set"), "objects": client.get(name="signed/objects").tolist()}
    client.put(np.array(["x", 1, None], dtype=object), persist=True, name="theirs/objects")
    with open(os.environ["RESULT"], "wb") as f:
        pickle.dump(res, f)
"""


def test_signed_pickles_and_the_official_client(client, vineyardd, official_python, tmp_path, monkeypatch):
    """The official client reads our signed pickles (it ignores the signature
    key); with a secret set, its object tensors are refused unless allowed."""
    from vineyard.contrib.kedro.codec.signing import ENV_SECRET, UnsignedPickleError

    monkeypatch.setenv(ENV_SECRET, "shared-secret")
    put_value(client, {1, 2, 3}, name="signed/set")
    put_value(client, np.array([{"k": 1}, "s", None], dtype=object), name="signed/objects")
    res = run(official_python, vineyardd.socket, SIGNED_SCRIPT, tmp_path)
    assert res == {"set": {1, 2, 3}, "objects": [{"k": 1}, "s", None]}
    with pytest.raises(UnsignedPickleError, match=r"vineyard::Tensor<object>: refusing to unpickle an unsigned pickle"):
        get_value(client, name="theirs/objects")
    assert get_value(client, name="theirs/objects", allow_unsigned_pickle=True).tolist() == ["x", 1, None]
    monkeypatch.delenv(ENV_SECRET)
    assert get_value(client, name="theirs/objects").tolist() == ["x", 1, None]
