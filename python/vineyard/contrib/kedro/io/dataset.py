"""``VineyardDataset``: a Kedro dataset stored in vineyard shared memory."""

from __future__ import annotations

import hashlib
import logging
import os
import time
import warnings
from typing import Any

from vineyard.contrib.kedro import _connection, _core
from vineyard.contrib.kedro._compat import AbstractDataset, DatasetError
from vineyard.contrib.kedro.errors import ConnectError, ObjectNotFoundError, VineyardError
from vineyard.contrib.kedro.io._preview import TablePreview, sliced_meta, table_preview

logger = logging.getLogger(__name__)

# Kedro (0.19, 1.x) warns about any catalog `type:` ending in "Set", before it
# imports the class: the old `VineyardDataSet` spelling is our own supported
# alias, so that warning is silenced for it (and only for it). Kedro loads this
# module through the package's entry points before it parses the catalog.
warnings.filterwarnings(
    "ignore",
    message=r"Since kedro-datasets 2\.0, 'Dataset' is spelled with a lowercase 's'\. "
    r"Got '(vineyard\.contrib\.kedro\.(io\.(dataset\.)?)?)?VineyardDataSet'",
    category=UserWarning,
)


def _nbytes(value: Any) -> int:
    for attr in ("nbytes",):
        n = getattr(value, attr, None)
        if isinstance(n, int):
            return n
    usage = getattr(value, "memory_usage", None)
    if callable(usage):
        try:
            total = usage(index=True, deep=False)
            return int(total.sum()) if hasattr(total, "sum") else int(total)
        except Exception:  # noqa: BLE001 - only for a log line
            return 0
    return 0


class VineyardDataset(AbstractDataset):
    """Stores a value in vineyard shared memory, under a vineyard name.

    A node writes its output once into vineyardd's shared memory; the next
    node, in this process or another one, maps it back without copying
    (numpy arrays and numpy-backed pandas columns come back as writable
    copy-on-write views, Arrow buffers as read-only ones). pandas, numpy, pyarrow, polars and plain Python values
    are stored in vineyard's own layouts where they exist, so the official
    vineyard clients read them too.

    The object is named ``ds_name``, or ``<namespace>/<ds_name>`` when a
    namespace is given (argument, else ``VINEYARD_KEDRO_NAMESPACE``); neither
    may contain ``/`` and the name is at most 4096 bytes. The
    vineyardd is ``vineyard_ipc_socket``, else ``VINEYARD_IPC_SOCKET``, else
    the embedded vineyardd started by the vineyard runners.

    Example usage for the `YAML API <https://docs.kedro.org/en/stable/catalog-data/data_catalog_yaml_examples/>`_:

    .. code-block:: yaml

        model_input_table:
          type: vineyard.contrib.kedro.io.dataset.VineyardDataset
          ds_name: model_input_table

        # every dataset the catalog does not name otherwise (Kedro >= 0.19)
        "{default}":
          type: vineyard.contrib.kedro.io.dataset.VineyardDataset
          ds_name: "{default}"

    Example usage for the Python API:

    .. code-block:: pycon

        >>> import pandas as pd
        >>> from vineyard.contrib.kedro.io import VineyardDataset
        >>> dataset = VineyardDataset(ds_name="frame", vineyard_ipc_socket=socket)
        >>> dataset.save(pd.DataFrame({"a": [1, 2]}))
        >>> dataset.load()["a"].tolist()
        [1, 2]
        >>> dataset.release()

    Security: anyone who can open the vineyardd socket can read and replace
    every object in it, and values stored as pickles run code when they are
    loaded. Keep the socket private (the embedded vineyardd's directory is
    mode 0700); on a shared vineyardd set ``VINEYARD_KEDRO_SECRET`` so that
    only pickles signed with it load (README, "Security").
    """

    def __init__(
        self,
        ds_name: str,
        vineyard_ipc_socket: str | None = None,
        namespace: str | None = None,
        metadata: dict[str, Any] | None = None,
        allow_unsigned_pickle: bool = False,
    ) -> None:
        """Creates a dataset; nothing connects until the first load or save.

        Args:
            ds_name: The dataset's name; the vineyard object is named after it.
            vineyard_ipc_socket: vineyardd's IPC socket. Defaults to
                ``VINEYARD_IPC_SOCKET``, then the runner's embedded vineyardd.
            namespace: Prefix of the object name (``<namespace>/<ds_name>``).
                Defaults to ``VINEYARD_KEDRO_NAMESPACE``, else no prefix.
            metadata: Free-form metadata for hooks and plugins; not used here.
            allow_unsigned_pickle: Load pickles that are not signed with
                ``VINEYARD_KEDRO_SECRET`` (no effect without a secret: then
                every pickle loads). Pickles run code: allow this only when
                everyone who can write to the vineyardd is trusted.
        """
        if not ds_name or not isinstance(ds_name, str):
            raise DatasetError(f"VineyardDataset needs a non-empty ds_name, got {ds_name!r}")
        self.ds_name = ds_name
        self.vineyard_ipc_socket = vineyard_ipc_socket
        self.namespace = namespace if namespace is not None else (os.environ.get(_connection.ENV_NAMESPACE) or None)
        self.metadata = metadata
        try:
            self._object_name = _core.object_name(self.namespace, ds_name)
        except VineyardError as exc:
            raise DatasetError(f"VineyardDataSet {ds_name[:60]!r}: {exc} (names: README, 'Names')") from exc
        self.allow_unsigned_pickle = bool(allow_unsigned_pickle)
        # Set by the runners: where worker processes report their saves and
        # loads for the run's summary (path, pid of the run's process).
        self._stats_sink: tuple[str, int] | None = None
        # Set by the runners with keep_objects: Kedro's releases keep the object.
        self._keep = False
        # Set by the runners in the fresh namespace of a run: only this
        # dataset's producer saves the name, once, so a save need not ask
        # vineyardd what the name pointed to, and a load in the producer's
        # process starts from the object it saved (vineyardd's name lookups
        # slow down with every name in the store).
        self._run_private = False
        # Set with it: the run's directory where a save records the id it
        # made, for the loads and the release in the run's other processes
        # (ParallelRunner's workers, its main process).
        self._saved_ids: str | None = None

    # Kedro aliases _load/_save to load/save (and wraps them with logging and
    # DatasetError); instances pickle as plain configuration, since clients
    # are per process and reconnect lazily.

    # -- naming and connection -------------------------------------------------

    @property
    def object_name(self) -> str:
        """The vineyard name the value is stored under (``<namespace>/<ds_name>``
        or ``ds_name``; neither part may contain ``/``)."""
        return self._object_name

    def _socket(self) -> tuple[str, str]:
        return _connection.resolve_socket(self.vineyard_ipc_socket)

    def _where(self, socket: str, origin: str) -> str:
        if origin == "embedded":
            return f"the embedded vineyardd at {socket}"
        if origin == _connection.ENV_SOCKET:
            return f"vineyardd at {socket} (from ${_connection.ENV_SOCKET})"
        return f"vineyardd at {socket}"

    def _fail(self, action: str, socket: str, origin: str, exc: Exception) -> DatasetError:
        where = self._where(socket, origin)
        # The runners hand their datasets the embedded socket explicitly, so
        # the origin alone does not tell; the socket does.
        if isinstance(exc, ConnectError) and _connection.embedded_is_dead(socket):
            where += " (the embedded vineyardd died during the run)"
        return DatasetError(f"Failed while {action} '{self.object_name}' in {where}: {exc}")

    def _saved_id_path(self) -> str | None:
        if not self._run_private or self._saved_ids is None:
            return None
        return os.path.join(self._saved_ids, hashlib.sha256(self.object_name.encode()).hexdigest())

    def _record_saved(self, object_id: int) -> None:
        path = self._saved_id_path()
        if path is None:
            return
        try:
            tmp = f"{path}.{os.getpid()}"
            with open(tmp, "w", encoding="ascii") as f:
                f.write(str(object_id))
            os.replace(tmp, path)
        except OSError:
            pass  # the other processes ask vineyardd instead

    def _recorded(self) -> int | None:
        path = self._saved_id_path()
        if path is None:
            return None
        try:
            with open(path, encoding="ascii") as f:
                return int(f.read())
        except (OSError, ValueError):
            return None

    # -- Kedro dataset API -----------------------------------------------------

    def _load(self) -> Any:
        from vineyard.contrib.kedro.codec import get_value

        socket, origin = self._socket()
        start = time.perf_counter()
        try:
            value = get_value(
                _connection.client_for(socket),
                name=self.object_name,
                allow_unsigned_pickle=self.allow_unsigned_pickle,
                private=self._run_private,
                saved=self._recorded(),
            )
        except ObjectNotFoundError as exc:
            raise DatasetError(
                f"No object named '{self.object_name}' in {self._where(socket, origin)}: it was never saved, "
                f"or was released or deleted ({exc})"
            ) from exc
        except VineyardError as exc:
            raise self._fail("loading", socket, origin, exc) from exc
        seconds = time.perf_counter() - start
        nbytes = _nbytes(value)
        _connection.STATS.add_load(nbytes, seconds)
        _connection.report_to(self._stats_sink, "load", nbytes, seconds)
        logger.debug("Loaded '%s' from vineyard: %d bytes in %.3f s", self.object_name, nbytes, seconds)
        return value

    def _save(self, data: Any) -> None:
        from vineyard.contrib.kedro.codec import put_value

        socket, origin = self._socket()
        start = time.perf_counter()
        try:
            info = put_value(
                _connection.client_for(socket), data, name=self.object_name, persist=True, private=self._run_private
            )
            self._record_saved(info.id)
        except VineyardError as exc:
            raise self._fail(f"saving a {type(data).__module__}.{type(data).__qualname__} to", socket, origin, exc) from exc
        except Exception as exc:  # an unpicklable value, a broken __reduce__, ...
            raise DatasetError(
                f"Cannot save a {type(data).__module__}.{type(data).__qualname__} to '{self.object_name}' "
                f"in {self._where(socket, origin)}: {type(exc).__name__}: {exc}"
            ) from exc
        seconds = time.perf_counter() - start
        _connection.STATS.add_save(info.nbytes, seconds)
        _connection.report_to(self._stats_sink, "save", info.nbytes, seconds)
        logger.debug("Saved '%s' to vineyard: %d bytes in %.3f s", self.object_name, info.nbytes, seconds)

    def _exists(self) -> bool:
        socket, origin = self._socket()
        try:
            client = _connection.client_for(socket)
            return client.resolve(self.object_name, private=self._run_private, saved=self._recorded()) is not None
        except VineyardError as exc:
            raise self._fail("checking", socket, origin, exc) from exc

    def _release(self) -> None:
        if self._keep:
            return
        socket, origin = self._socket()
        try:
            c = _connection.client_for(socket)
            object_id = c.resolve(self.object_name, private=self._run_private, saved=self._recorded())
            if object_id is not None:
                c.drop_name(self.object_name)
                c.delete([object_id])
        except VineyardError as exc:
            raise self._fail("releasing", socket, origin, exc) from exc

    def _where_configured(self) -> tuple[str | None, str]:
        """The socket and where it comes from, without starting anything."""
        if self.vineyard_ipc_socket:
            return self.vineyard_ipc_socket, f"vineyardd at {self.vineyard_ipc_socket}"
        env = os.environ.get(_connection.ENV_SOCKET)
        if env:
            return env, f"vineyardd at {env} (from ${_connection.ENV_SOCKET})"
        embedded = _connection.embedded_socket()
        if embedded:
            return embedded, f"the embedded vineyardd at {embedded}"
        return None, "the embedded vineyardd of the run that uses it (no vineyardd configured)"

    def _describe(self) -> dict[str, Any]:
        return {
            "ds_name": self.ds_name,
            "object_name": self.object_name,
            "namespace": self.namespace,
            "vineyard_ipc_socket": self.vineyard_ipc_socket,
            "stored_in": f"'{self.object_name}' in {self._where_configured()[1]}",
        }

    def preview(self, nrows: int = 5, ncolumns: int = 20) -> TablePreview:
        """kedro-viz's preview: the first `nrows` rows (and `ncolumns` columns)
        of a frame, the head of an array, the first items of a container.

        Reads only the rows it shows of frames with tensor columns (numbers,
        strings) and of arrays; never starts a vineyardd.
        """
        from vineyard.contrib.kedro.codec import decode_meta
        from vineyard.contrib.kedro.errors import LayoutError

        socket, where = self._where_configured()
        if socket is None:
            raise DatasetError(f"Cannot preview '{self.object_name}': no vineyardd configured (set {_connection.ENV_SOCKET})")
        try:
            _, meta, blobs = _connection.client_for(socket).get(name=self.object_name)
            value = None
            head = sliced_meta(meta, max(0, int(nrows)))
            if head is not None:
                try:
                    value = decode_meta(head, blobs)
                except LayoutError:  # not sliceable after all: decode the whole value
                    value = None
            if value is None:
                value = decode_meta(meta, blobs)
        except ObjectNotFoundError as exc:
            raise DatasetError(f"No object named '{self.object_name}' in {where} to preview ({exc})") from exc
        except VineyardError as exc:
            raise DatasetError(f"Failed while previewing '{self.object_name}' in {where}: {exc}") from exc
        return table_preview(value, max(0, int(nrows)), max(1, int(ncolumns)))



#: The spelling of vineyard-kedro 0.24 (Kedro 0.18 days); same class.
VineyardDataSet = VineyardDataset

__all__ = ["VineyardDataSet", "VineyardDataset"]
