"""Fixtures of the codec tests: the Python of a venv with the official vineyard
client (for interop checks)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

HOW = (
    "set VINEYARD_OFFICIAL_PYTHON to the python of a venv with the official client and this package: "
    "python3 -m venv /work/.venv-official && /work/.venv-official/bin/pip install vineyard==0.24.2 "
    '"setuptools<70" numpy "pandas<3" pyarrow && maturin build --release -o /tmp/wheels && '
    "/work/.venv-official/bin/pip install /tmp/wheels/vineyard_kedro-*.whl; "
    "or set VINEYARD_KEDRO_SKIP_OFFICIAL=1 to skip these tests locally"
)


@pytest.fixture(scope="module")
def official_python():
    python = os.environ.get("VINEYARD_OFFICIAL_PYTHON")
    if not python:
        if os.environ.get("VINEYARD_KEDRO_SKIP_OFFICIAL") == "1":
            pytest.skip("VINEYARD_KEDRO_SKIP_OFFICIAL=1: interop with the official vineyard client not tested")
        pytest.fail(f"VINEYARD_OFFICIAL_PYTHON is not set: {HOW}")
    if not Path(python).exists():
        pytest.fail(f"VINEYARD_OFFICIAL_PYTHON={python} does not exist: {HOW}")
    return python
