"""The store commands (`ls`, `inspect`, `rm`, `gc`, `status`, `serve`) through
click's CliRunner, a real `kedro` process and the `vineyard-kedro` script;
and `kedro vineyard --help` listing every command."""

from __future__ import annotations

import importlib.metadata
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from kedro_project import copy_iris, kedro, kedro_env
from vineyard.contrib.kedro import _core
from vineyard.contrib.kedro.io import VineyardDataSet
from vineyard.contrib.kedro.plugins.cli import STORE_COMMANDS, commands, main

ALL_COMMANDS = [*STORE_COMMANDS, "catalog", "docker", "argo"]
SCRIPT = Path(sys.executable).parent / "vineyard-kedro"


def invoke(*args: str, env: dict | None = None):
    return CliRunner().invoke(commands, ["vineyard", *args], env=env, catch_exceptions=False)


@pytest.fixture(scope="module")
def iris(tmp_path_factory) -> Path:
    return copy_iris(tmp_path_factory.mktemp("store"))


@pytest.fixture
def store(small_vineyardd):
    """A private vineyardd holding ns1/frame, ns1/array, ns2/array and plain."""
    sock = small_vineyardd.socket
    VineyardDataSet(ds_name="frame", namespace="ns1", vineyard_ipc_socket=sock).save(pd.DataFrame({"a": [1, 2, 3]}))
    VineyardDataSet(ds_name="array", namespace="ns1", vineyard_ipc_socket=sock).save(np.arange(1000))
    VineyardDataSet(ds_name="array", namespace="ns2", vineyard_ipc_socket=sock).save(np.ones(10))
    VineyardDataSet(ds_name="plain", namespace="", vineyard_ipc_socket=sock).save(np.zeros(3))
    return sock


def names(sock: str) -> set[str]:
    c = _core.Client(sock)
    try:
        return {n for n, _ in c.list_names()}
    finally:
        c.close()


# -- help --------------------------------------------------------------------


def test_group_help_lists_every_command_in_process():
    result = invoke("--help")
    assert result.exit_code == 0, result.output
    listed = result.output.split("Commands:", 1)[1]
    for name in ALL_COMMANDS:
        assert f"\n  {name} " in listed, (name, result.output)
    # The store commands' one-line help comes from the clap definition.
    assert "List named objects" in listed and "Delete every named object under NAMESPACE/" in listed


def test_store_command_help_is_clap_help_in_process():
    for name in STORE_COMMANDS:
        result = invoke(name, "--help")
        assert result.exit_code == 0, result.output
        assert "Usage:" in result.output and f"vineyard {name}" in result.output, result.output
        assert "--socket <PATH>" in result.output


def test_kedro_vineyard_help_in_a_project(iris):
    result = kedro(iris, "vineyard", "--help")
    assert result.returncode == 0, result.stdout[-3000:]
    listed = result.stdout.split("Commands:", 1)[1]
    for name in ALL_COMMANDS:
        assert f"\n  {name} " in listed, (name, result.stdout)
    ls_help = kedro(iris, "vineyard", "ls", "--help")
    assert ls_help.returncode == 0
    assert "vineyard ls [OPTIONS]" in ls_help.stdout  # clap help, under the program name click gives
    assert "--namespace <NAMESPACE>" in ls_help.stdout and "--json" in ls_help.stdout


def test_kedro_vineyard_outside_a_project(tmp_path):
    """Where the group is registered decides what works outside a project."""
    groups = {
        group
        for group in ("kedro.global_commands", "kedro.project_commands")
        for ep in importlib.metadata.entry_points(group=group)
        if ep.value == "vineyard.contrib.kedro.plugins.cli:commands"
    }
    assert groups & {"kedro.global_commands", "kedro.project_commands"}, groups
    result = kedro(tmp_path, "vineyard", "--help")
    catalog = kedro(tmp_path, "vineyard", "catalog", "create", "-p", "__default__")
    assert catalog.returncode != 0
    if "kedro.global_commands" in groups:
        assert result.returncode == 0 and "catalog" in result.stdout, result.stdout[-2000:]
        assert "needs a Kedro project" in catalog.stdout, catalog.stdout[-2000:]
    else:
        assert result.returncode != 0 and "No such command" in result.stdout, result.stdout[-2000:]


# -- ls / inspect / rm / gc / status (in process) ----------------------------


def test_ls_table_and_json(store):
    table = invoke("ls", "--socket", store)
    assert table.exit_code == 0, table.output
    for name in ("ns1/frame", "ns1/array", "ns2/array", "plain"):
        assert name in table.output
    rows = json.loads(invoke("ls", "--json", env={"VINEYARD_IPC_SOCKET": store}).stdout)
    by_name = {r["name"]: r for r in rows}
    assert set(by_name) == {"ns1/frame", "ns1/array", "ns2/array", "plain"}
    assert by_name["ns1/array"]["namespace"] == "ns1" and by_name["plain"]["namespace"] == ""
    assert by_name["ns1/array"]["size"] >= 8000
    assert by_name["ns1/frame"]["id"].startswith("o") and by_name["ns1/frame"]["typename"]
    only = json.loads(invoke("ls", "--json", "--namespace", "ns1", "--socket", store).stdout)
    assert {r["name"] for r in only} == {"ns1/frame", "ns1/array"}


def test_inspect_by_name_and_id(store):
    result = invoke("inspect", "ns1/array", "--socket", store)
    assert result.exit_code == 0, result.output
    meta = json.loads(result.stdout)
    assert "typename" in json.dumps(meta)
    oid = json.loads(invoke("ls", "--json", "--socket", store).stdout)[0]["id"]
    by_id = invoke("inspect", oid, "--socket", store)
    assert by_id.exit_code == 0 and json.loads(by_id.stdout)
    missing = invoke("inspect", "no/such/name", "--socket", store)
    assert missing.exit_code == 1 and "error" in missing.stderr


def test_rm_and_gc(store):
    result = invoke("rm", "plain", "--socket", store)
    assert result.exit_code == 0, result.output
    assert names(store) == {"ns1/frame", "ns1/array", "ns2/array"}
    gc = invoke("gc", "--namespace", "ns1", "--json", "--socket", store)
    assert gc.exit_code == 0, gc.output
    assert json.loads(gc.stdout)
    assert names(store) == {"ns2/array"}
    assert invoke("rm", "--socket", store).exit_code == 2  # names are required
    assert invoke("rm", "never-saved", "--socket", store).exit_code == 1


def test_status(store):
    text = invoke("status", "--socket", store)
    assert text.exit_code == 0, text.output
    assert "memory" in text.stdout.lower()
    status = json.loads(invoke("status", "--json", "--socket", store).stdout)
    assert json.dumps(status)


def test_no_socket_is_a_usage_error():
    env = {"VINEYARD_IPC_SOCKET": None}
    result = CliRunner().invoke(commands, ["vineyard", "ls"], env=env)
    assert result.exit_code == 2
    assert "no vineyardd socket" in result.stderr


def test_dead_socket_is_an_error(tmp_path):
    result = invoke("status", "--socket", str(tmp_path / "nobody.sock"))
    assert result.exit_code == 1 and "error" in result.stderr


# -- real processes ------------------------------------------------------------


def test_store_commands_through_kedro(iris, store):
    env = kedro_env(VINEYARD_IPC_SOCKET=store)
    ls = kedro(iris, "vineyard", "ls", "--namespace", "ns1", env=env)
    assert ls.returncode == 0, ls.stdout[-2000:]
    assert "ns1/frame" in ls.stdout and "ns2/array" not in ls.stdout
    assert kedro(iris, "vineyard", "inspect", "ns2/array", env=env).returncode == 0
    assert kedro(iris, "vineyard", "status", env=env).returncode == 0
    assert kedro(iris, "vineyard", "rm", "plain", env=env).returncode == 0
    gc = kedro(iris, "vineyard", "gc", "--namespace", "ns1", env=env)
    assert gc.returncode == 0, gc.stdout[-2000:]
    assert names(store) == {"ns2/array"}
    bad = kedro(iris, "vineyard", "gc", env=env)
    assert bad.returncode == 2 and "--namespace" in bad.stdout


def test_vineyard_kedro_script(store, tmp_path):
    """The console script: no Kedro project needed; data on stdout only."""
    assert SCRIPT.exists(), f"{SCRIPT} is not installed"
    env = kedro_env(VINEYARD_IPC_SOCKET=store)
    run = lambda *a: subprocess.run([str(SCRIPT), *a], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)  # noqa: E731
    version = run("--version")
    assert version.returncode == 0 and _core.__version__ in version.stdout
    listed = run("ls", "--json")
    assert listed.returncode == 0, listed.stderr
    try:
        rows = json.loads(listed.stdout)
    except json.JSONDecodeError:
        pytest.fail(
            "stdout must hold only the JSON; importing the package must not configure Kedro's logging "
            f"(importing kedro.framework.project logs to stdout):\n{listed.stdout[:400]}"
        )
    assert {r["name"] for r in rows} == {"ns1/frame", "ns1/array", "ns2/array", "plain"}
    assert run("gc", "--namespace", "ns2").returncode == 0
    assert "ns2/array" not in names(store)
    usage = run("frobnicate")
    assert usage.returncode == 2 and "frobnicate" in usage.stderr


def test_main_runs_the_rust_cli(monkeypatch, capfd):
    monkeypatch.setattr(sys, "argv", ["vineyard-kedro", "gc", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 0
    assert "Usage: vineyard-kedro gc" in capfd.readouterr().out


def _wait_for(sock: Path, proc: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        if sock.exists():
            try:
                _core.Client(str(sock)).close()
                return
            except _core.VineyardError:
                pass
        time.sleep(0.2)
    raise AssertionError(f"no vineyardd at {sock} after {seconds} s")


@pytest.mark.parametrize("how", ["kedro", "script"])
def test_serve_runs_until_sigterm(iris, tmp_path, how):
    sock = tmp_path / "served.sock"
    args = ["serve", "--socket", str(sock), "--size", "64Mi"]
    cmd = [sys.executable, "-m", "kedro", "vineyard", *args] if how == "kedro" else [str(SCRIPT), *args]
    env = kedro_env(VINEYARD_IPC_SOCKET=None, VINEYARDD=os.environ.get("VINEYARDD"))
    proc = subprocess.Popen(cmd, cwd=iris, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(sock, proc)
        status = invoke("status", "--json", "--socket", str(sock))
        assert status.exit_code == 0, status.output
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out[-3000:]
        assert not sock.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
