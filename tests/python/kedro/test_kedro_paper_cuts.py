"""Small things a Kedro user meets: `serve` from a venv that is not
activated, the old dataset spelling, keep_objects, ParallelRunner's summary."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kedro.io import DataCatalog, MemoryDataset, SharedMemoryDataCatalog
from test_kedro_runner import OUTS, every_type_pipeline

from vineyard.contrib.kedro import _core
from vineyard.contrib.kedro._compat import DatasetError
from vineyard.contrib.kedro.runner import ParallelRunner, SequentialRunner


def test_serve_from_a_venv_that_is_not_activated(tmp_path):
    """`<venv>/bin/vineyard-kedro serve` with nothing but /usr/bin:/bin on
    PATH, no VIRTUAL_ENV and no VINEYARDD: it finds the vineyardd that pip
    installed next to the package."""
    script = Path(sys.executable).parent / "vineyard-kedro"
    assert script.exists(), script
    sock = tmp_path / "served.sock"
    env = {"HOME": os.environ.get("HOME", "/"), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    if os.environ.get("GLOG_log_dir"):
        env["GLOG_log_dir"] = os.environ["GLOG_log_dir"]
    proc = subprocess.Popen(
        [str(script), "serve", "--socket", str(sock), "--size", "64Mi"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not sock.exists():
            assert proc.poll() is None, proc.communicate()[0][-3000:]
            assert time.monotonic() < deadline, "serve did not expose its socket"
            time.sleep(0.2)
        assert _core.Client(str(sock)).connect() >= 0
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_old_spelling_in_a_catalog_gives_no_warning():
    """`type: ...VineyardDataSet` loads the same class; Kedro's "lowercase s"
    warning (an error here, -W error) is silenced for our alias only."""
    code = (
        "import vineyard.contrib.kedro.plugins.hook\n"  # what Kedro's entry points load first
        "from kedro.io import DataCatalog\n"
        "from vineyard.contrib.kedro.io import VineyardDataset\n"
        "for t in ('vineyard.contrib.kedro.io.dataset.VineyardDataSet', 'vineyard.contrib.kedro.io.VineyardDataSet'):\n"
        "    c = DataCatalog.from_config({'a': {'type': t, 'ds_name': 'a'}})\n"
        "    assert type(c['a'] if hasattr(c, '__getitem__') else c._get_dataset('a')) is VineyardDataset\n"
        "try:\n"
        "    c = DataCatalog.from_config({'b': {'type': 'kedro.io.MemoryDataSet'}})\n"
        "    c['b'] if hasattr(c, '__getitem__') else c._get_dataset('b')\n"
        "except Exception as w:  # Kedro wraps the warning, an error here, in a DatasetError\n"
        "    print('others still warned:', 'lowercase' in str(w))\n"
    )
    pythons = [sys.executable]
    if os.environ.get("VINEYARD_KEDRO019_PYTHON"):
        pythons.append(os.environ["VINEYARD_KEDRO019_PYTHON"])
    for python in pythons:
        result = subprocess.run([python, "-W", "error::UserWarning", "-c", code], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "others still warned: True" in result.stdout, python


def test_keep_objects_refuses_the_embedded_server(monkeypatch):
    monkeypatch.delenv("VINEYARD_IPC_SOCKET", raising=False)
    with pytest.raises(DatasetError, match="keep_objects needs a long-lived vineyardd"):
        SequentialRunner(keep_objects="true").run(every_type_pipeline(), DataCatalog({"verdict": MemoryDataset()}))
    monkeypatch.setenv("VINEYARD_KEDRO_KEEP_OBJECTS", "1")
    with pytest.raises(DatasetError, match="keep_objects needs a long-lived vineyardd"):
        SequentialRunner().run(every_type_pipeline(), DataCatalog({"verdict": MemoryDataset()}))


def test_keep_objects_keeps_them_on_a_long_lived_server(vineyardd, monkeypatch):
    monkeypatch.setenv("VINEYARD_KEDRO_KEEP_OBJECTS", "1")
    c = _core.Client(vineyardd.socket)
    before = set(c.list_names())
    SequentialRunner(vineyard_ipc_socket=vineyardd.socket).run(every_type_pipeline(), DataCatalog({"verdict": MemoryDataset()}))
    kept = {name for name, _ in set(c.list_names()) - before}
    namespaces = {name.split("/")[0] for name in kept}
    assert len(namespaces) == 1, kept
    namespace = namespaces.pop()
    assert kept == {f"{namespace}/{name}" for name in OUTS}
    c.delete_namespace(f"{namespace}/")


def test_parallel_runner_summary_counts_the_workers(vineyardd, caplog):
    caplog.set_level(logging.INFO, logger="vineyard.contrib.kedro")
    ParallelRunner(vineyard_ipc_socket=vineyardd.socket).run(every_type_pipeline(), SharedMemoryDataCatalog())
    summary = [r.getMessage() for r in caplog.records if r.getMessage().startswith("vineyard: ") and "saved" in r.getMessage()]
    assert len(summary) == 1
    assert summary[0].startswith(f"vineyard: {len(OUTS)} objects saved"), summary[0]
    assert f", {len(OUTS)} loaded" in summary[0], summary[0]
