"""Fixtures of the CLI tests: the `kedro vineyard` group run in process inside
a project, Argo's workflow schema, and the Kedro 0.19 Python."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from argo_sim import schema_candidates, workflow_validator
from kedro_project import ROOT
from vineyard.contrib.kedro.plugins.cli import commands


def _purge(package: str) -> None:
    for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
        del sys.modules[name]


@pytest.fixture
def in_project(monkeypatch):
    """``enter(project)`` -> ``invoke(*args)``: click's CliRunner on the group,
    in the project's directory with the project bootstrapped, as Kedro runs it.
    Every copy of iris has the package ``iris``: the previous one is forgotten."""
    from kedro.framework.startup import bootstrap_project

    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", "-"))
    monkeypatch.delenv("PYTHONPATH")  # restored (to unset, if it was) after the test
    monkeypatch.setattr(sys, "path", list(sys.path))

    def enter(project: Path):
        _purge("iris")
        monkeypatch.chdir(project)
        metadata = bootstrap_project(project)

        def invoke(*args: str, env: dict | None = None):
            return CliRunner().invoke(commands, ["vineyard", *args], obj=metadata, env=env, catch_exceptions=False)

        invoke.metadata = metadata
        return invoke

    yield enter
    _purge("iris")


@pytest.fixture(scope="session")
def validator():
    """Argo's Workflow schema, strict. Skipped (only) where the schema file is absent."""
    candidates = schema_candidates(ROOT)
    for path in candidates:
        if path.is_file():
            return workflow_validator(path)
    pytest.skip(f"Argo schema not found at {' or '.join(map(str, candidates))}; CI always has it")



@pytest.fixture(scope="module")
def python019() -> str:
    """A Python with Kedro 0.19 and this package (.ci/run builds it)."""
    python = os.environ.get("VINEYARD_KEDRO019_PYTHON")
    if not python:
        pytest.fail("set VINEYARD_KEDRO019_PYTHON to a Python with Kedro 0.19 and this package (.ci/run does)")
    return python
