"""Which vineyardd to talk to, one client per socket, and the embedded server.

Resolution order for a dataset: its ``vineyard_ipc_socket`` argument, else
``VINEYARD_IPC_SOCKET``, else the embedded default: a private vineyardd that
this process starts (the runners start it before the first node and stop it
when the run ends). A user who set ``VINEYARD_IPC_SOCKET`` never gets an
embedded server by surprise: a dead socket there is an error that names it.
"""

from __future__ import annotations

import atexit
import logging
import os
import site
import sys
import threading
from dataclasses import dataclass, field

from vineyard.contrib.kedro import _core

logger = logging.getLogger("vineyard.contrib.kedro")
# Kedro's default logging shows only `kedro` and the project's package at
# INFO; our runners' lines ("Pipeline execution completed", the summary)
# belong with them. A level the user configured is left alone.
if logger.level == logging.NOTSET:
    logger.setLevel(logging.INFO)

ENV_SOCKET = "VINEYARD_IPC_SOCKET"
ENV_NAMESPACE = "VINEYARD_KEDRO_NAMESPACE"
ENV_EMBEDDED_SIZE = "VINEYARD_KEDRO_EMBEDDED_SIZE"
ENV_CONNECT_TIMEOUT = "VINEYARD_KEDRO_CONNECT_TIMEOUT"
ENV_READ_TIMEOUT = "VINEYARD_KEDRO_READ_TIMEOUT"
ENV_WRITE_TIMEOUT = "VINEYARD_KEDRO_WRITE_TIMEOUT"

_lock = threading.RLock()
_clients: dict[tuple[str, int], _core.Client] = {}
_embedded: _core.Server | None = None
_embedded_users = 0
_embedded_owner = 0  # pid of the process that started the embedded vineyardd


def _timeout(env: str, default: float) -> float:
    try:
        value = float(os.environ.get(env, default))
    except ValueError:
        return default
    return value if value > 0 else default


def client_for(socket: str) -> _core.Client:
    """The process-wide client of `socket` (one per process: a forked child
    gets its own connection, never its parent's)."""
    key = (socket, os.getpid())
    with _lock:
        c = _clients.get(key)
        if c is None:
            c = _core.Client(
                socket,
                connect_timeout=_timeout(ENV_CONNECT_TIMEOUT, 2.0),
                read_timeout=_timeout(ENV_READ_TIMEOUT, 300.0),
                write_timeout=_timeout(ENV_WRITE_TIMEOUT, 60.0),
            )
            _clients[key] = c
        return c


def default_embedded_size() -> str:
    """Half the machine's memory (at least 1 GiB), unless configured."""
    configured = os.environ.get(ENV_EMBEDDED_SIZE)
    if configured:
        return configured
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        total = 8 << 30
    gib = max(1, total // 2 // (1 << 30))
    return f"{gib}Gi"


def _site_dirs() -> list[str]:
    dirs = list(getattr(site, "getsitepackages", lambda: [])())
    user = getattr(site, "getusersitepackages", lambda: None)()
    if user:
        dirs.append(user)
    dirs.extend(p for p in sys.path if p.endswith("site-packages"))
    return dirs


def embedded_socket() -> str | None:
    """The socket of the running embedded vineyardd, if any."""
    server = _embedded
    return server.socket if server is not None else None


def acquire_embedded(size: str | None = None) -> str:
    """Starts the embedded vineyardd (or reuses it) and returns its socket."""
    global _embedded, _embedded_users, _embedded_owner
    with _lock:
        if _embedded is None or not _embedded.is_running():
            size = size or default_embedded_size()
            # PR_SET_PDEATHSIG follows the creating *thread*: only ask for it
            # from the main thread, whose end is the process's end.
            main = threading.current_thread() is threading.main_thread()
            # The embedded vineyardd holds nothing but this run's data, which
            # ends with the run: it is killed at once (no grace). A graceful
            # stop buys nothing here and costs time: vineyardd's own shutdown
            # takes ~0.1 s, and it ignores SIGTERM while any client (a worker
            # process, Kedro's multiprocessing manager) still holds a
            # connection, which cost ParallelRunner a 1 s grace per run.
            _embedded = _core.Server(size=size, site_dirs=_site_dirs(), die_with_parent=main, stop_grace=0.0)
            _embedded_owner = os.getpid()
            logger.info(
                "Started an embedded vineyardd at %s (size %s, RPC off); it stops when the run ends. "
                "Set VINEYARD_IPC_SOCKET to use a vineyardd of your own.",
                _embedded.socket,
                size,
            )
        _embedded_users += 1
        return _embedded.socket


def release_embedded() -> None:
    """Drops one user of the embedded vineyardd; the last one stops it."""
    global _embedded, _embedded_users
    with _lock:
        _embedded_users = max(0, _embedded_users - 1)
        if _embedded_users == 0 and _embedded is not None:
            server, _embedded = _embedded, None
            socket = server.socket
            for key in [k for k in _clients if k[0] == socket]:
                _clients.pop(key).close(abandon=True)  # vineyardd waits for open connections
            server.stop()
            logger.info("Stopped the embedded vineyardd at %s.", socket)


def embedded_is_dead(socket: str) -> bool:
    """True when `socket` belongs to an embedded vineyardd that has exited.

    Works in forked workers too (ParallelRunner): only the process that
    started the server can reap it, so elsewhere the pid's state is read
    from /proc (an exited but unreaped server is a zombie).
    """
    server = _embedded
    if server is None or server.socket != socket:
        return False
    pid = server.pid
    if pid is None:
        return True
    if os.getpid() == _embedded_owner:
        return not server.is_running()
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in (b"Z", b"X")


def resolve_socket(explicit: str | None) -> tuple[str, str]:
    """Returns (socket, origin) where origin says where it came from."""
    if explicit:
        return explicit, "argument"
    env = os.environ.get(ENV_SOCKET)
    if env:
        return env, ENV_SOCKET
    with _lock:
        if _embedded is not None:
            return _embedded.socket, "embedded"
        # No runner started one (e.g. Kedro's own runner with our datasets in
        # the catalog): start it for the life of this process.
        socket = acquire_embedded()
        atexit.register(release_embedded)
        return socket, "embedded"


@dataclass
class Stats:
    """Bytes and seconds moved through vineyard by this process."""

    saves: int = 0
    loads: int = 0
    bytes_saved: int = 0
    bytes_loaded: int = 0
    save_seconds: float = 0.0
    load_seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add_save(self, nbytes: int, seconds: float) -> None:
        with self._lock:
            self.saves += 1
            self.bytes_saved += nbytes
            self.save_seconds += seconds

    def add_load(self, nbytes: int, seconds: float) -> None:
        with self._lock:
            self.loads += 1
            self.bytes_loaded += nbytes
            self.load_seconds += seconds

    def snapshot(self) -> tuple[int, int, int, int, float, float]:
        with self._lock:
            return (self.saves, self.loads, self.bytes_saved, self.bytes_loaded, self.save_seconds, self.load_seconds)


STATS = Stats()


def report_to(sink: tuple[str, int] | None, kind: str, nbytes: int, seconds: float) -> None:
    """Appends one save or load to `sink`'s file when this process is not the
    one that owns it (ParallelRunner's workers): the run's summary adds them.
    One short O_APPEND write per line, so concurrent workers do not interleave."""
    if sink is None or os.getpid() == sink[1]:
        return
    try:
        fd = os.open(sink[0], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{kind} {nbytes} {seconds:.6f}\n".encode())
        finally:
            os.close(fd)
    except OSError:
        pass  # the summary line only misses this one


def read_reports(path: str) -> tuple[int, int, int, int, float, float]:
    """Sums the lines `report_to` wrote, in `Stats.snapshot`'s order."""
    saves = loads = bsaved = bloaded = 0
    tsave = tload = 0.0
    try:
        with open(path, encoding="ascii") as f:
            lines = f.read().splitlines()
    except OSError:
        return (0, 0, 0, 0, 0.0, 0.0)
    for line in lines:
        parts = line.split()
        if len(parts) != 3:
            continue
        kind, n, t = parts[0], int(parts[1]), float(parts[2])
        if kind == "save":
            saves, bsaved, tsave = saves + 1, bsaved + n, tsave + t
        elif kind == "load":
            loads, bloaded, tload = loads + 1, bloaded + n, tload + t
    return (saves, loads, bsaved, bloaded, tsave, tload)


def _flush_all() -> None:
    for (_, pid), c in list(_clients.items()):
        if pid == os.getpid():
            try:
                c.flush(all=True)
            except Exception:  # noqa: BLE001 - the server may be gone at exit
                pass


atexit.register(_flush_all)
