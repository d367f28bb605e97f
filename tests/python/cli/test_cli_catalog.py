"""`kedro vineyard catalog create|list`, in process (CliRunner) and through
`kedro`: where the file goes, what gets an entry, merging without clobbering,
the catch-all pattern, and that Kedro then runs with the entries."""

from __future__ import annotations

from pathlib import Path

import yaml
from click.testing import CliRunner

from kedro_project import accuracy, copy_iris, kedro, kedro_env
from vineyard.contrib.kedro.plugins.cli import commands

TYPE = "vineyard.contrib.kedro.io.dataset.VineyardDataset"
INTERMEDIATES = ["X_test", "X_train", "y_pred", "y_test", "y_train"]
CREATED = "Data Catalog YAML configuration was created: {}"
ALL_DONE = "All datasets are already configured."


def catalog_file(project: Path, env: str = "vineyard", pipeline: str = "__default__") -> Path:
    return project / "conf" / env / "catalog" / f"{pipeline}.yml"


def listing(output: str) -> dict:
    """The YAML `catalog list` prints (after whatever Kedro logged first)."""
    return yaml.safe_load(output[output.index("Datasets in '") :])


def entries(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_create_writes_the_missing_datasets(in_project, tmp_path):
    project = copy_iris(tmp_path)
    invoke = in_project(project)
    assert not (project / "conf" / "vineyard").exists()
    result = invoke("catalog", "create", "-p", "__default__")
    assert result.exit_code == 0, result.output
    path = catalog_file(project)
    assert result.output.strip().endswith(CREATED.format(path))
    assert entries(path) == {name: {"type": TYPE, "ds_name": name} for name in INTERMEDIATES}
    # Parameters and the catalog's own datasets get nothing.
    assert "parameters" not in path.read_text() and "example_iris_data" not in path.read_text()
    before = path.read_text()
    again = invoke("catalog", "create", "--pipeline", "__default__", "--env", "vineyard", "-v")
    assert again.exit_code == 0 and again.output.strip().endswith(ALL_DONE)
    assert path.read_text() == before


def test_create_merges_and_never_clobbers(in_project, tmp_path):
    project = copy_iris(tmp_path)
    path = catalog_file(project)
    path.parent.mkdir(parents=True)
    user = (
        "# my own entries\n"
        "X_train:\n  type: pandas.CSVDataset  # keep me\n  filepath: data/05_model_input/X_train.csv\n"
        "unrelated:\n  type: kedro.io.MemoryDataset\n"
    )
    path.write_text(user)
    base = project / "conf" / "base" / "catalog.yml"
    base.write_text(base.read_text() + "\ny_pred:\n  type: kedro.io.MemoryDataset\n'{name}_test':\n  type: kedro.io.MemoryDataset\n")
    invoke = in_project(project)
    result = invoke("catalog", "create", "-p", "__default__")
    assert result.exit_code == 0, result.output
    text = path.read_text()
    assert text.startswith(user), "the user's text (comments included) must stay as it was"
    merged = entries(path)
    assert merged["X_train"] == {"type": "pandas.CSVDataset", "filepath": "data/05_model_input/X_train.csv"}
    assert merged["unrelated"] == {"type": "kedro.io.MemoryDataset"}
    # y_pred is in base; X_test and y_test match the base's pattern: all defined already.
    added = {k for k, v in merged.items() if v.get("type") == TYPE}
    assert added == {"y_train"}


def test_create_in_another_env_and_missing_options(in_project, tmp_path):
    project = copy_iris(tmp_path)
    invoke = in_project(project)
    result = invoke("catalog", "create", "-p", "__default__", "-e", "prod")
    assert result.exit_code == 0, result.output
    assert set(entries(catalog_file(project, "prod"))) == set(INTERMEDIATES)
    assert not (project / "conf" / "vineyard").exists()
    missing = CliRunner().invoke(commands, ["vineyard", "catalog", "create"])
    assert missing.exit_code == 2 and "--pipeline" in missing.output
    unknown = invoke("catalog", "create", "-p", "nope")
    assert unknown.exit_code == 1
    assert "'nope' pipeline not found! Existing pipelines: __default__" in unknown.output


def test_catch_all_pattern(in_project, tmp_path):
    project = copy_iris(tmp_path)
    invoke = in_project(project)
    result = invoke("catalog", "create", "-p", "__default__", "--catch-all")
    assert result.exit_code == 0, result.output
    assert entries(catalog_file(project)) == {"{default}": {"type": TYPE, "ds_name": "{default}"}}
    again = invoke("catalog", "create", "-p", "__default__", "--catch-all")
    assert again.output.strip().endswith(ALL_DONE)
    # Per-name entries are not needed any more either: the pattern defines every name.
    assert invoke("catalog", "create", "-p", "__default__").output.strip().endswith(ALL_DONE)
    listed = listing(invoke("catalog", "list", "-e", "vineyard").output)
    mentioned = listed["Datasets in '__default__' pipeline"]["Datasets mentioned in pipeline"]
    assert sorted(mentioned["VineyardDataset"]) == INTERMEDIATES


def test_catch_all_is_not_added_over_a_users_pattern(in_project, tmp_path):
    project = copy_iris(tmp_path)
    base = project / "conf" / "base" / "catalog.yml"
    base.write_text(base.read_text() + "\n'{anything}':\n  type: kedro.io.MemoryDataset\n")
    invoke = in_project(project)
    result = invoke("catalog", "create", "-p", "__default__", "--catch-all")
    assert result.exit_code == 0 and result.output.strip().endswith(ALL_DONE)
    assert not catalog_file(project).exists()


def test_a_broken_catalog_file_is_left_alone(in_project, tmp_path):
    project = copy_iris(tmp_path)
    path = catalog_file(project)
    path.parent.mkdir(parents=True)
    path.write_text("- not\n- a mapping\n")
    invoke = in_project(project)
    result = CliRunner().invoke(commands, ["vineyard", "catalog", "create", "-p", "__default__"], obj=invoke.metadata)
    assert result.exit_code != 0
    assert path.read_text() == "- not\n- a mapping\n"


def test_list(in_project, tmp_path):
    project = copy_iris(tmp_path)
    base = project / "conf" / "base" / "catalog.yml"
    base.write_text(base.read_text() + "\nunused_table:\n  type: pandas.CSVDataset\n  filepath: data/x.csv\n")
    invoke = in_project(project)
    result = invoke("catalog", "list")
    assert result.exit_code == 0, result.output
    listed = listing(result.output)
    assert listed == {
        "Datasets in '__default__' pipeline": {
            "Datasets not mentioned in pipeline": {"CSVDataset": ["unused_table"]},
            "Datasets mentioned in pipeline": {"CSVDataset": ["example_iris_data"], "DefaultDataSet": INTERMEDIATES},
        }
    }
    assert invoke("catalog", "create", "-p", "__default__").exit_code == 0
    after = listing(invoke("catalog", "list", "-e", "vineyard", "-p", "__default__").output)
    mentioned = after["Datasets in '__default__' pipeline"]["Datasets mentioned in pipeline"]
    assert mentioned == {"CSVDataset": ["example_iris_data"], "VineyardDataset": INTERMEDIATES}
    unknown = invoke("catalog", "list", "-p", "__default__,nope")
    assert unknown.exit_code == 1 and "'nope' pipeline not found" in unknown.output


def test_catalog_commands_through_kedro_and_a_run(tmp_path, vineyardd):
    project = copy_iris(tmp_path)
    created = kedro(project, "vineyard", "catalog", "create", "-p", "__default__")
    assert created.returncode == 0, created.stdout[-3000:]
    assert CREATED.format(catalog_file(project)) in created.stdout
    assert kedro(project, "vineyard", "catalog", "create", "-p", "__default__").stdout.strip().endswith(ALL_DONE)
    listed = kedro(project, "vineyard", "catalog", "list", "-e", "vineyard")
    assert listed.returncode == 0 and "VineyardDataset:" in listed.stdout
    # The entries are what `kedro run -e vineyard` uses: every intermediate goes through vineyardd,
    # and Kedro's runner releases each one after its last use.
    from vineyard.contrib.kedro import _core

    client = _core.Client(vineyardd.socket)
    try:
        baseline = client.status()["memory_usage"]
        env = kedro_env(VINEYARD_IPC_SOCKET=vineyardd.socket, VINEYARD_KEDRO_NAMESPACE="catalog-test")
        run = kedro(project, "run", "-e", "vineyard", env=env)
        assert run.returncode == 0, run.stdout[-3000:]
        assert accuracy(run.stdout) == 0.933
        for name in INTERMEDIATES:
            assert f"Saving data to {name} (VineyardDataset)" in run.stdout, name
        assert client.list_names("catalog-test/*") == []
        assert client.status()["memory_usage"] == baseline
    finally:
        client.close()
