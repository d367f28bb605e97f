"""``kedro vineyard ...``: the store, catalog, Docker and Argo commands.

The store commands (``ls``, ``inspect``, ``rm``, ``gc``, ``status``,
``serve``) have one definition, the Rust command line (clap) behind the
``vineyard-kedro`` script; here they are forwarded to it unparsed, so
``kedro vineyard ls --help`` prints clap's help and both spellings accept
the same options. ``catalog``, ``docker`` and ``argo`` need the Kedro
project (its pipelines and catalog): they gather that here and leave the
rendering (serde_yaml, typed Dockerfile instructions) to the Rust core.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from vineyard.contrib.kedro import _core
from vineyard.contrib.kedro.plugins._argo import argo
from vineyard.contrib.kedro.plugins._catalog import catalog
from vineyard.contrib.kedro.plugins._docker import docker

__all__ = ["commands", "main", "vineyard"]

PROGRAM = "vineyard-kedro"
# The Rust command line's subcommands (all store commands) with clap's one-line help.
_CLAP_COMMANDS: list[tuple[str, str]] = _core.cli_commands()
STORE_COMMANDS = tuple(name for name, _ in _CLAP_COMMANDS)
_HELP_FLAGS = ("-h", "--help")


def _point_at_vineyardd() -> None:
    """Before `serve`: the Rust side looks for vineyardd in $VINEYARDD, the
    activated virtualenv and $PATH. Run as `<venv>/bin/vineyard-kedro` with the
    venv not activated, none of them has the vineyardd pip installed next to
    this package; find it here (this package's own site-packages, then this
    interpreter's) and hand it over as $VINEYARDD."""
    if os.environ.get("VINEYARDD"):
        return
    from vineyard.contrib.kedro._connection import _site_dirs

    own = str(Path(__file__).resolve().parents[4])  # <site-packages>/vineyard/contrib/kedro/plugins
    try:
        os.environ["VINEYARDD"] = _core.find_vineyardd(None, [own, *_site_dirs()])
    except Exception:  # noqa: BLE001 - not found: serve reports it, with its own message
        pass


class ForwardedCommand(click.Command):
    """A click command that hands its arguments, unparsed, to the Rust CLI.

    Output is captured and echoed through click (so ``CliRunner`` and
    Kedro's own streams see it), except for ``foreground`` commands
    (``serve``) that run until stopped and write straight to fds 1 and 2.
    """

    def __init__(self, name: str, about: str, foreground: bool = False) -> None:
        super().__init__(
            name,
            help=f"{about}\n\nForwarded to `{PROGRAM} {name}`; see `--help` for its options.",
            short_help=about,
            add_help_option=False,
            context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "allow_interspersed_args": False},
            params=[click.Argument(["args"], nargs=-1, type=click.UNPROCESSED)],
        )
        self.foreground = foreground

    def _program(self, ctx: click.Context) -> str:
        parent = ctx.parent.command_path if ctx.parent is not None else ""
        return parent or PROGRAM

    def invoke(self, ctx: click.Context) -> Any:
        argv = [self._program(ctx), self.name or "", *ctx.params.get("args", ())]
        if self.foreground and not any(a in _HELP_FLAGS for a in argv[2:]):
            _point_at_vineyardd()
            sys.stdout.flush()
            sys.stderr.flush()
            ctx.exit(_core.run_cli(argv))
        code, out, err = _core.run_cli_captured(argv)
        if out:
            click.echo(out, nl=False)
        if err:
            click.echo(err, nl=False, err=True)
        ctx.exit(code)


@click.group(name="Vineyard")
def commands() -> None:
    """Commands for working with vineyard."""


@commands.group(name="vineyard", context_settings={"help_option_names": list(_HELP_FLAGS)})
def vineyard() -> None:
    """Commands for working with vineyard: see what a vineyardd holds and clean
    it (ls, inspect, rm, gc, status), run one (serve), write VineyardDataset
    catalog entries (catalog), build the image (docker) and generate the Argo
    workflow (argo) that runs the pipeline one node per pod."""


def _add_store_commands() -> None:
    """Every subcommand of the Rust command line, with clap's own one-line help."""
    for name, about in _CLAP_COMMANDS:
        vineyard.add_command(ForwardedCommand(name, about or f"`{PROGRAM} {name}`", foreground=name == "serve"))


_add_store_commands()
vineyard.add_command(catalog)
vineyard.add_command(docker)
vineyard.add_command(argo)


def main() -> None:
    """The ``vineyard-kedro`` script: the Rust command line, without Kedro."""
    if "serve" in sys.argv[1:]:
        _point_at_vineyardd()
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(_core.run_cli([PROGRAM, *sys.argv[1:]]))


if __name__ == "__main__":
    main()
