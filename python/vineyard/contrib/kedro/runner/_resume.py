"""Resuming a failed run from what it left in a long-lived vineyardd.

Kedro's own hint (``--from-nodes``) restarts from the nearest nodes whose
inputs are persisted, re-running everything whose outputs were in memory.
With a vineyardd that outlives the run, the outputs of the nodes that did run
are still there: a failed run keeps them, marks its namespace as resumable,
and prints one command that runs only the nodes that did not finish, reading
the rest from vineyard.
"""

from __future__ import annotations

import os
import shlex
import sys
from typing import Any, Iterable

#: Name (under the namespace) of the object that marks a namespace as left by
#: a failed run: a run given that namespace owns it and deletes it on success.
RESUME_MARKER = "_vineyard_kedro_resume"


def resume_start_nodes(pipeline: Any, done_nodes: Iterable[Any]) -> list[str]:
    """The unfinished nodes none of whose inputs an unfinished node produces.

    Every input of such a node is a pipeline input or the output of a node
    that ran; Kedro releases a dataset only after its last consumer ran, so
    those outputs are all still stored. ``--from-nodes`` of these covers every
    unfinished node.
    """
    remaining = set(pipeline.nodes) - set(done_nodes)
    produced = {out for n in remaining for out in n.outputs}
    return sorted(n.name for n in remaining if not (set(n.inputs) & produced))


def _kedro_run_args() -> list[str] | None:
    """The arguments of the `kedro run` that this process is, or None."""
    argv = list(sys.argv)
    prog = os.path.basename(argv[0]) if argv else ""
    # `python -m kedro` sets argv[0] to "python -m kedro" (0.19 and 1.x).
    if prog == "kedro" or argv[0] == "python -m kedro" or (prog == "__main__.py" and "kedro" in argv[0]):
        args = argv[1:]
    else:
        return None
    if not args or args[0] != "run":
        return None
    kept: list[str] = []
    skip = False
    for arg in args[1:]:
        if skip:
            skip = False
            continue
        if arg in ("--from-nodes",):
            skip = True
            continue
        if arg.startswith("--from-nodes="):
            continue
        kept.append(arg)
    return ["kedro", "run", *kept]


def resume_command(namespace: str, start_nodes: list[str], socket_env: str | None) -> str:
    """One shell command that resumes the run (or, outside `kedro run`, the
    environment and argument to add to the command that started it)."""
    env = f"VINEYARD_KEDRO_NAMESPACE={shlex.quote(namespace)}"
    if socket_env:
        env = f"VINEYARD_IPC_SOCKET={shlex.quote(socket_env)} {env}"
    from_nodes = f"--from-nodes {shlex.quote(','.join(start_nodes))}"
    args = _kedro_run_args()
    if args is None:
        return f"{env} <the command of this run> {from_nodes}"
    return f"{env} {shlex.join(args)} {from_nodes}"
