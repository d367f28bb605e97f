"""No code from the store by surprise: labels and time zones are never
unpickled, and with ``VINEYARD_KEDRO_SECRET`` set only pickles signed with it
load (issue 18, as the probe did it: a planted label, a planted time zone,
signed and unsigned pickles with and without a secret)."""

from __future__ import annotations

import base64
import datetime
import json
import pickle
import zoneinfo

import numpy as np
import pandas as pd
import pytest

from vineyard.contrib.kedro._compat import DatasetError
from vineyard.contrib.kedro.codec import encode, get_value, put_value
from vineyard.contrib.kedro.codec import buffers
from vineyard.contrib.kedro.codec.buffers import Writer
from vineyard.contrib.kedro.codec.metadata import EXTRA
from vineyard.contrib.kedro.codec.signing import ENV_SECRET, SIGNATURE, SecretError, UnsignedPickleError
from vineyard.contrib.kedro.errors import LayoutError
from vineyard.contrib.kedro.io import VineyardDataSet


class Planted:
    """Unpickling this creates the file at `path` (stands for os.system)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


class Custom:
    def __init__(self, v):
        self.v = v

    def __eq__(self, other):
        return type(other) is Custom and other.v == self.v

    def __hash__(self):
        return hash(self.v)


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "ran"
    yield str(path)
    assert not path.exists(), "data from the store ran code"


@pytest.fixture
def no_secret(monkeypatch):
    monkeypatch.delenv(ENV_SECRET, raising=False)


@pytest.fixture
def never_unpickles(monkeypatch):
    """Fails the test if a load unpickles anything."""

    def boom(*args, **kwargs):
        raise AssertionError("the load unpickled")

    # Reader.unpickle calls the module's `unpickle` (the only way decoders
    # unpickle), so patching it there catches every unpickle of a load.
    monkeypatch.setattr(buffers, "unpickle", boom)


def put_tree(client, tree, w, name=None):
    object_id, _, _, _ = client.put(tree, w.buffers, name=name, persist=name is not None)
    return object_id


def typenames(tree):
    out = {tree.get("typename")}
    for v in tree.values():
        if isinstance(v, dict):
            out |= typenames(v)
    return out


# -- labels and time zones never unpickle ----------------------------------------


def test_planted_pickled_label_is_refused_without_running(client, marker, no_secret, vineyardd):
    w = Writer()
    tree = encode(pd.DataFrame({"a": [1.0, 2.0]}), w)
    tree["index_"] = encode(pd.Index([1, 2], name="x"), w)
    payload = base64.b64encode(pickle.dumps(Planted(marker))).decode()
    tree["index_"][EXTRA + "name_"] = json.dumps({"p": payload})
    put_tree(client, tree, w, name="planted/label")
    with pytest.raises(LayoutError, match="pickled label"):
        get_value(client, name="planted/label")
    with pytest.raises(DatasetError, match="pickled label"):
        VineyardDataSet(ds_name="label", namespace="planted", vineyard_ipc_socket=vineyardd.socket).load()


def test_planted_pickled_time_zone_is_refused_without_running(client, marker, no_secret):
    w = Writer()
    tree = encode(pd.Series(pd.date_range("2024-01-01", periods=3, tz="Europe/Paris")), w)
    values = tree["value_"] if "value_" in tree else tree
    assert values["typename"] == "vineyard_kedro::DatetimeTZArray"
    del values["tz_spec_"]
    values["tz_pickle_"] = base64.b64encode(pickle.dumps(Planted(marker))).decode()
    object_id = put_tree(client, tree, w)
    with pytest.raises(LayoutError, match="pickled time zone"):
        get_value(client, id=object_id)
    client.delete([object_id])


@pytest.mark.parametrize(
    "tz",
    [
        zoneinfo.ZoneInfo("Europe/Paris"),
        datetime.timezone.utc,
        datetime.timezone(datetime.timedelta(hours=5, minutes=30)),
        datetime.timezone(datetime.timedelta(hours=-3), "BRT"),
        "dateutil/Europe/London",
    ],
    ids=str,
)
def test_time_zones_round_trip_as_json(client, no_secret, never_unpickles, tz):
    s = pd.Series(pd.date_range("2024-03-30", periods=4, freq="12h", tz=tz))
    info = put_value(client, s, persist=False)
    back = get_value(client, id=info.id)
    pd.testing.assert_series_equal(back, s)
    assert type(back.dt.tz) is type(s.dt.tz) and str(back.dt.tz) == str(s.dt.tz)
    client.delete([info.id])


@pytest.mark.parametrize(
    "label",
    [np.int64(3), np.float32(1.5), np.float64("nan"), pd.Timestamp("2024-01-02 03:04"), datetime.datetime(2024, 1, 2, 3), datetime.date(2024, 1, 2)],
    ids=repr,
)
def test_typed_labels_round_trip_without_pickle(client, no_secret, never_unpickles, label):
    s = pd.Series([1.0, 2.0], index=pd.Index(["a", "b"], name=label), name=label)
    info = put_value(client, s, persist=False)
    back = get_value(client, id=info.id)
    for got in (back.name, back.index.name):
        assert type(got) is type(label)
        assert got == label or (got != got and label != label)
    client.delete([info.id])


def test_a_label_without_a_safe_encoding_makes_the_value_a_visible_pickle(client, no_secret):
    s = pd.Series([1.0, 2.0], name=Custom(7))
    info = put_value(client, s, persist=False)
    assert info.typename == "vineyard::PickleBuffer"
    back = get_value(client, id=info.id)
    assert back.name == Custom(7)
    client.delete([info.id])
    d = {Custom(1): np.arange(100_000)}
    info = put_value(client, d, persist=False)
    assert info.typename == "vineyard::PickleBuffer"
    assert list(get_value(client, id=info.id)) == [Custom(1)]
    client.delete([info.id])


# -- signed pickles ---------------------------------------------------------------

PICKLED = {
    "pickle": lambda: Custom(5),
    "object_tensor": lambda: np.array([Custom(1), "x", None], dtype=object),
}


def equal(a, b):
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.tolist() == b.tolist()
    return a == b


@pytest.mark.parametrize("kind", sorted(PICKLED))
def test_signed_pickles_load_and_others_are_refused(client, monkeypatch, kind):
    value = PICKLED[kind]()
    monkeypatch.setenv(ENV_SECRET, "team-a-secret")
    signed = put_value(client, value, persist=False)
    meta = client.get(id=signed.id)[1]
    assert meta["typename"] in ("vineyard::PickleBuffer", "vineyard::Tensor<object>")
    assert meta[SIGNATURE].startswith("sha256:")
    assert equal(get_value(client, id=signed.id), value)

    monkeypatch.delenv(ENV_SECRET)
    unsigned = put_value(client, value, persist=False)
    assert SIGNATURE not in client.get(id=unsigned.id)[1]
    assert equal(get_value(client, id=unsigned.id), value)  # no secret: every pickle loads
    assert equal(get_value(client, id=signed.id), value)

    monkeypatch.setenv(ENV_SECRET, "team-a-secret")
    with pytest.raises(UnsignedPickleError, match="unsigned pickle"):
        get_value(client, id=unsigned.id)
    assert equal(get_value(client, id=unsigned.id, allow_unsigned_pickle=True), value)

    monkeypatch.setenv(ENV_SECRET, "team-b-secret")
    with pytest.raises(UnsignedPickleError, match="does not match"):
        get_value(client, id=signed.id)
    client.delete([signed.id, unsigned.id])


def test_forged_signature_is_refused_without_running(client, monkeypatch, marker):
    monkeypatch.setenv(ENV_SECRET, "s3cret")
    w = Writer(b"s3cret")
    tree = encode(Custom(1), w)
    forged = Writer(b"s3cret")
    payload = pickle.dumps(Planted(marker))
    bad = forged.pickle({"typename": "vineyard::PickleBuffer", "size_": len(payload), "nbytes": len(payload)}, payload)
    bad[SIGNATURE] = tree[SIGNATURE]  # a valid signature of another pickle
    object_id = put_tree(client, bad, forged)
    with pytest.raises(UnsignedPickleError, match="does not match"):
        get_value(client, id=object_id)
    bad[SIGNATURE] = "sha256:" + "0" * 64
    other = put_tree(client, bad, forged)
    with pytest.raises(UnsignedPickleError):
        get_value(client, id=other)
    client.delete([object_id, other])


def test_dataset_refuses_unsigned_unless_allowed(vineyardd, monkeypatch, marker):
    monkeypatch.delenv(ENV_SECRET, raising=False)
    ds = VineyardDataSet(ds_name="pickled", namespace="signing", vineyard_ipc_socket=vineyardd.socket)
    ds.save(Custom(3))
    monkeypatch.setenv(ENV_SECRET, "k")
    with pytest.raises(DatasetError, match="allow_unsigned_pickle"):
        ds.load()
    allowed = VineyardDataSet(ds_name="pickled", namespace="signing", vineyard_ipc_socket=vineyardd.socket, allow_unsigned_pickle=True)
    assert allowed.load() == Custom(3)
    ds.save(Custom(4))  # now signed with "k"
    assert ds.load() == Custom(4)
    ds.release()


def test_secret_from_a_file(client, monkeypatch, tmp_path):
    path = tmp_path / "secret"
    path.write_bytes(b"from-a-file\n")
    for spelling in (str(path), f"file:{path}"):
        monkeypatch.setenv(ENV_SECRET, spelling)
        info = put_value(client, Custom(9), persist=False)
        monkeypatch.setenv(ENV_SECRET, "from-a-file")  # the same secret, given inline
        assert get_value(client, id=info.id) == Custom(9)
        client.delete([info.id])
    monkeypatch.setenv(ENV_SECRET, f"file:{tmp_path / 'missing'}")
    with pytest.raises(SecretError, match="cannot be read"):
        put_value(client, Custom(9), persist=False)
    (tmp_path / "empty").write_bytes(b"\n")
    monkeypatch.setenv(ENV_SECRET, str(tmp_path / "empty"))
    with pytest.raises(SecretError, match="empty"):
        get_value(client, name="anything")


def test_values_without_pickles_load_whatever_the_secret(client, monkeypatch, never_unpickles):
    monkeypatch.setenv(ENV_SECRET, "k")
    df = pd.DataFrame({"a": np.arange(5.0), "s": list("abcde")})
    info = put_value(client, df, persist=False)
    monkeypatch.setenv(ENV_SECRET, "another")
    pd.testing.assert_frame_equal(get_value(client, id=info.id), df)
    client.delete([info.id])
