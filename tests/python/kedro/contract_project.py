"""A small Kedro project for comparing our runners and hook with Kedro's own.

Pipeline (node: inputs -> outputs)::

    make_raw:   params:n           -> raw               (intermediate)
    double:     raw                -> doubled, summary  (summary: free output, a dict)
    frame:      doubled            -> table             (free output, a DataFrame)
    total:      doubled, raw       -> total             (free output, an int)
    persist:    raw                -> stored            (catalog entry, a text file)

Every node appends its name to ``$CONTRACT_NODE_LOG``; the node named in
``$CONTRACT_FAIL_AT`` raises. Logging goes to stdout, plain (no rich wrapping),
so hints can be read back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

NODES_PY = '''
import os

import pandas as pd


def _ran(name):
    log = os.environ.get("CONTRACT_NODE_LOG")
    if log:
        with open(log, "a") as f:
            f.write(name + "\\n")
    if os.environ.get("CONTRACT_FAIL_AT") == name:
        raise RuntimeError(f"node {name} fails on purpose")


def make_raw(n):
    _ran("make_raw")
    return pd.DataFrame({"x": list(range(n)), "y": [float(i) / 2 for i in range(n)]})


def double(raw):
    _ran("double")
    return raw * 2, {"rows": len(raw), "label": "doubled"}


def frame(doubled):
    _ran("frame")
    return doubled.head(3).reset_index(drop=True)


def total(doubled, raw):
    _ran("total")
    return int(doubled["x"].sum() + raw["x"].sum())


def persist(raw):
    _ran("persist")
    return ",".join(str(v) for v in raw["x"])
'''

DATASETS_PY = '''
from pathlib import Path

from kedro.io.core import AbstractDataset


class TextDataset(AbstractDataset):
    def __init__(self, filepath):
        self._path = Path(filepath)

    def _load(self):
        return self._path.read_text()

    def _save(self, data):
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._path.write_text(data)

    def _exists(self):
        return self._path.exists()

    def _describe(self):
        return {"filepath": str(self._path)}

    load = _load
    save = _save
'''

PIPELINE_REGISTRY_PY = '''
from kedro.pipeline import node, pipeline

from contract.nodes import double, frame, make_raw, persist, total


def register_pipelines():
    p = pipeline(
        [
            node(make_raw, "params:n", "raw", name="make_raw"),
            node(double, "raw", ["doubled", "summary"], name="double"),
            node(frame, "doubled", "table", name="frame"),
            node(total, ["doubled", "raw"], "total", name="total"),
            node(persist, "raw", "stored", name="persist"),
        ]
    )
    return {"__default__": p}
'''

LOGGING_YML = """version: 1
disable_existing_loggers: False
formatters:
  plain: {format: "%(levelname)s %(name)s: %(message)s"}
handlers:
  console: {class: logging.StreamHandler, stream: "ext://sys.stdout", formatter: plain}
loggers:
  kedro: {level: INFO}
  vineyard: {level: INFO}
  contract: {level: INFO}
root: {handlers: [console]}
"""

#: Runs one session and prints the run() result as one JSON line
#: (`RESULT {...}`): for each returned name, the type of what was returned and
#: the repr of its value (loaded, on Kedro 1.x where run() returns datasets).
SESSION_SCRIPT = r"""
import json, os, sys
from pathlib import Path
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

path, spec = Path(sys.argv[1]), sys.argv[2]
kind, name = spec.split(":")
bootstrap_project(path)
if kind == "ours":
    import vineyard.contrib.kedro.runner as runners
else:
    import kedro.runner as runners
runner = getattr(runners, name)()  # kept: ParallelRunner's free outputs live in its manager
with KedroSession.create(project_path=path) as session:
    result = session.run(runner=runner)
out = {}
for key, value in sorted(result.items()):
    kind_of = type(value).__name__
    if hasattr(value, "load") and not isinstance(value, dict):
        value = value.load()
    out[key] = [kind_of, repr(value)]
print("RESULT " + json.dumps(out))
"""


def make_project(dest: Path, kedro_init_version: str = "1.7.0") -> Path:
    project = dest / "contract"
    src = project / "src" / "contract"
    src.mkdir(parents=True)
    (project / "conf" / "base").mkdir(parents=True)
    (project / "conf" / "local").mkdir(parents=True)
    (project / "pyproject.toml").write_text(
        "[tool.kedro]\n"
        'package_name = "contract"\nproject_name = "contract"\n'
        f'kedro_init_version = "{kedro_init_version}"\nsource_dir = "src"\n'
    )
    (src / "__init__.py").write_text('__version__ = "0.1"\n')
    (src / "settings.py").write_text("")
    (src / "nodes.py").write_text(NODES_PY)
    (src / "datasets.py").write_text(DATASETS_PY)
    (src / "pipeline_registry.py").write_text(PIPELINE_REGISTRY_PY)
    (project / "conf" / "base" / "catalog.yml").write_text(
        "stored:\n  type: contract.datasets.TextDataset\n  filepath: data/stored.txt\n"
    )
    (project / "conf" / "base" / "parameters.yml").write_text("n: 6\n")
    (project / "conf" / "base" / "logging.yml").write_text(LOGGING_YML)
    return project


def contract_env(project: Path, node_log: Path, **extra: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "KEDRO_DISABLE_TELEMETRY": "1",
            "DO_NOT_TRACK": "1",
            "PYTHONUNBUFFERED": "1",
            "KEDRO_LOGGING_CONFIG": str(project / "conf" / "base" / "logging.yml"),
            "CONTRACT_NODE_LOG": str(node_log),
        }
    )
    for key in ("VINEYARD_IPC_SOCKET", "VINEYARD_KEDRO_NAMESPACE", "VINEYARD_KEDRO_HOOK", "CONTRACT_FAIL_AT"):
        env.pop(key, None)
    for key, value in extra.items():
        if value is not None:
            env[key] = value
    return env


def run(cmd: list[str], project: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)


def session_result(python: str, project: Path, spec: str, env: dict[str, str]) -> dict[str, list[str]]:
    """`spec` is `ours:SequentialRunner` or `kedro:ThreadRunner`."""
    result = run([python, "-c", SESSION_SCRIPT, str(project), spec], project, env)
    assert result.returncode == 0, result.stdout[-4000:]
    line = [x for x in result.stdout.splitlines() if x.startswith("RESULT ")]
    assert line, result.stdout[-4000:]
    return json.loads(line[-1][len("RESULT ") :])


def nodes_ran(node_log: Path) -> list[str]:
    if not node_log.exists():
        return []
    names = node_log.read_text().split()
    node_log.unlink()
    return sorted(names)


def kedro_cmd(python: str | None, *args: str) -> list[str]:
    return [python or sys.executable, "-m", "kedro", *args]
