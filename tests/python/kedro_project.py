"""Helpers to run the iris example project with the real ``kedro`` command."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
IRIS = ROOT / "examples" / "iris"
ACCURACY = re.compile(r"Model has accuracy of ([0-9.]+) on test data")
EMBEDDED = re.compile(r"Started an embedded vineyardd at (\S+)")


def copy_iris(dest: Path, kedro_init_version: str | None = None) -> Path:
    """A private copy of examples/iris (runs must not write into the repo)."""
    project = dest / "iris"
    shutil.copytree(IRIS, project, ignore=shutil.ignore_patterns("__pycache__", ".telemetry", "*.log"))
    if kedro_init_version:
        toml = project / "pyproject.toml"
        text = re.sub(r'kedro_init_version = "[^"]*"', f'kedro_init_version = "{kedro_init_version}"', toml.read_text())
        toml.write_text(text)
    return project


def kedro_env(**extra: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"KEDRO_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1", "COLUMNS": "250", "PYTHONUNBUFFERED": "1"})
    for key, value in extra.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def kedro(project: Path, *args: str, python: str | None = None, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Runs ``python -m kedro ARGS`` in `project` and returns the result (output merged)."""
    cmd = [python or sys.executable, "-m", "kedro", *args]
    return subprocess.run(
        cmd, cwd=project, env=env or kedro_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout
    )


def accuracy(output: str) -> float:
    found = ACCURACY.findall(output)
    assert found, f"no accuracy line in the output:\n{output[-4000:]}"
    return float(found[-1])
