"""``kedro vineyard docker init|build``: kedro-docker's conventions, plus vineyard.

``init`` writes a ``Dockerfile`` (rendered by ``_core.render_dockerfile``:
non-root ``kedro_docker`` user, the project's requirements, this package
installed, ``kedro vineyard catalog create`` run at build time) and a
``.dockerignore``, never overwriting either. ``build`` runs ``init`` and then
``docker build`` if a Docker engine answers ``docker version``; if none does,
it says so and prints the exact command to run where one does (exit code 1).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import click

from vineyard.contrib.kedro import _core
from vineyard.contrib.kedro.plugins._catalog import require_project, verbose_option

__all__ = ["DEFAULT_BASE_IMAGE", "docker", "docker_engine_problem", "write_docker_files"]

DEFAULT_BASE_IMAGE = f"python:{sys.version_info.major}.{sys.version_info.minor}-slim"
ENV_TIMEOUT = "VINEYARD_KEDRO_DOCKER_TIMEOUT"
NO_ENGINE = "no Docker engine answered"


def _requirements(project_path: Path) -> str:
    """The project's requirements file: what this Kedro version's layout uses, else whichever exists."""
    import kedro

    preferred = _core.requirements_path(kedro.__version__)
    for candidate in (preferred, "requirements.txt", "src/requirements.txt"):
        if (project_path / candidate).is_file():
            return candidate
    return preferred


def write_docker_files(
    metadata: Any, *, with_vineyard: bool, base_image: str, pipeline: str, env: str
) -> list[Path]:
    """Writes Dockerfile and .dockerignore into the project unless they exist; returns what was written."""
    project_path = Path(metadata.project_path)
    spec = {
        "package_name": metadata.package_name,
        "base_image": base_image,
        "requirements": _requirements(project_path),
        "with_vineyard": with_vineyard,
        "env": env,
        "pipeline": pipeline,
    }
    try:
        files = {"Dockerfile": _core.render_dockerfile(json.dumps(spec)), ".dockerignore": _core.render_dockerignore()}
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    written = []
    for name, text in files.items():
        dest = project_path / name
        if dest.exists():
            click.echo(f"{dest} already exists and won't be overwritten.")
        else:
            dest.write_text(text, encoding="utf-8")
            written.append(dest)
            click.echo(f"Created `{dest}`")
    return written


def docker_engine_problem(timeout: float | None = None) -> str | None:
    """Why no Docker engine answers (None when one does)."""
    if timeout is None:
        try:
            timeout = float(os.environ.get(ENV_TIMEOUT, "20"))
        except ValueError:
            timeout = 20.0
    exe = shutil.which("docker")
    if exe is None:
        return "the `docker` command is not installed"
    try:
        result = subprocess.run(
            [exe, "version", "--format", "{{.Server.Version}}"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return f"`docker version` did not answer within {timeout:g} s"
    except OSError as exc:
        return f"cannot run `docker version`: {exc}"
    if result.returncode != 0 or not result.stdout.strip():
        lines = (result.stderr or result.stdout).strip().splitlines()
        return lines[-1] if lines else f"`docker version` exited with code {result.returncode}"
    return None


def _uid_gid(uid: int | None, gid: int | None) -> tuple[int, int]:
    """The current user's ids, as kedro-docker does; 999 and 0 (kedro-docker's
    fallbacks) where there are none, or for root: the image's user is not root,
    and `useradd -u 0` would fail."""
    if uid is None:
        uid = os.getuid() if hasattr(os, "getuid") else 0
        if uid == 0:
            uid, gid = 999, 0 if gid is None else gid
    if gid is None:
        try:
            import pwd

            gid = pwd.getpwuid(uid).pw_gid
        except (ImportError, KeyError):
            gid = os.getgid() if hasattr(os, "getgid") else 0
    return uid, gid


def _split_args(ctx: click.Context, param: click.Parameter, value: str | None) -> list[str]:
    try:
        return shlex.split(value or "")
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from exc


def _with_vineyard(default: bool) -> Any:
    return click.option(
        "--with-vineyard",
        "--with_vineyard",
        "-w",
        "with_vineyard",
        type=bool,
        default=default,
        show_default=True,
        help="Install vineyard-kedro in the image and generate the vineyard catalog at build time (true/false).",
    )


def _image_options(func: Any) -> Any:
    for option in reversed(
        [
            click.option("--base-image", type=str, default=DEFAULT_BASE_IMAGE, show_default=True, help="Base image."),
            click.option(
                "--pipeline", "-p", type=str, default="__default__", show_default=True,
                help="Pipeline whose datasets get catalog entries at build time.",
            ),
            click.option(
                "--env", "-e", type=str, default="vineyard", show_default=True,
                help="Kedro environment the vineyard catalog is generated into.",
            ),
        ]
    ):
        func = option(func)
    return func


@click.group(name="docker")
def docker() -> None:
    """Commands for working with docker."""


@docker.command("init")
@verbose_option
@_with_vineyard(True)
@_image_options
@click.pass_obj
def docker_init(metadata: Any, with_vineyard: bool, base_image: str, pipeline: str, env: str, verbose: bool) -> None:
    """Write a Dockerfile and .dockerignore for the project (existing files are kept)."""
    metadata = require_project(metadata, "docker init")
    write_docker_files(metadata, with_vineyard=with_vineyard, base_image=base_image, pipeline=pipeline, env=env)


@docker.command("build")
@verbose_option
@click.option("--uid", type=int, default=None, help="User ID of the kedro user in the image (default: yours; 999 for root).")
@click.option("--gid", type=int, default=None, help="Group ID of the kedro user in the image (default: yours; 0 for root).")
@click.option("--image", type=str, default=None, help="Name (tag) of the image (default: the project directory's name).")
@click.option(
    "--docker-args", type=str, default="", callback=_split_args,
    help='Extra arguments for `docker build`, one string split like a shell does ("--no-cache --pull").',
)
@_with_vineyard(True)
@_image_options
@click.pass_obj
def docker_build(
    metadata: Any,
    uid: int | None,
    gid: int | None,
    image: str | None,
    docker_args: list[str],
    with_vineyard: bool,
    base_image: str,
    pipeline: str,
    env: str,
    verbose: bool,
) -> None:
    """Build the project's image: `docker init`, then `docker build`.

    Without a Docker engine, prints the exact `docker build` command to run
    where there is one, and exits with code 1.
    """
    metadata = require_project(metadata, "docker build")
    project_path = Path(metadata.project_path)
    write_docker_files(metadata, with_vineyard=with_vineyard, base_image=base_image, pipeline=pipeline, env=env)
    uid, gid = _uid_gid(uid, gid)
    image = image or project_path.name.lower()
    command = _core.docker_build_command(image, uid, gid, base_image, docker_args, ".")
    problem = docker_engine_problem()
    if problem is not None:
        click.secho(f"{NO_ENGINE} `docker version` ({problem}).", fg="red", err=True)
        click.echo(
            f"The Dockerfile is ready. Build the image where a Docker engine runs, in {project_path}:\n\n"
            f"    {shlex.join(command)}\n",
            err=True,
        )
        raise click.exceptions.Exit(1)
    click.echo(f"Running: {shlex.join(command)}")
    code = subprocess.call(command, cwd=project_path)
    if code != 0:
        raise click.exceptions.Exit(code)
