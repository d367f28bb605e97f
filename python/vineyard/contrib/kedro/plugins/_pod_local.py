"""Which datasets of a pipeline live in one pod only, for ``argo generate``.

A task of an Argo workflow is its own pod. A dataset that one task writes and
another reads must be somewhere both pods can reach: vineyard (with the
operator), or a remote filesystem (``s3://``, ``gs://``, ``abfs://``...). It
cannot be a ``MemoryDataset`` (Kedro's default for a dataset without a
catalog entry) or a file on the pod's own disk. Here each dataset of the
pipeline is classified from the catalog ``kedro run -e ENV`` would use; the
renderer (``_core.render_argo``) then finds the ones that cross tasks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["pod_local_datasets"]

LOCAL_PROTOCOLS = {"file", "local"}


def _dataset(catalog: Any, name: str) -> Any:
    """The dataset object (explicit or matched by a pattern)."""
    if hasattr(catalog, "get_type"):  # Kedro 1.x
        return catalog[name]
    return catalog._get_dataset(name)  # Kedro 0.19


def _unmaterialised(catalog: Any, name: str) -> tuple[type, dict[str, Any]] | None:
    """``(class, config)`` of a dataset Kedro 1.x has not built yet: building
    it could need a filesystem package (``s3fs``) that only the image has."""
    from kedro.utils import load_obj

    resolver = getattr(catalog, "config_resolver", None)
    if not hasattr(catalog, "get_type") or resolver is None or name in getattr(catalog, "_datasets", {}):
        return None
    config = resolver.config.get(name) or resolver.resolve_pattern(name)
    qualified = catalog.get_type(name)
    if not config or not qualified:
        return None
    try:
        return load_obj(qualified), config
    except Exception:  # noqa: BLE001 - fall back to building the dataset
        return None


def _type_name(cls: type) -> str:
    module = cls.__module__
    if module.startswith("kedro_datasets."):
        # `kedro_datasets.pandas.csv_dataset.CSVDataset` -> `pandas.CSVDataset`, as catalogs spell it.
        return f"{module.split('.')[1]}.{cls.__name__}"
    return cls.__name__


def _protocol(path: Any, protocol: Any = None) -> str:
    from kedro.io.core import get_protocol_and_path

    if not protocol:
        protocol, _ = get_protocol_and_path(str(path))
    if isinstance(protocol, (list, tuple)):
        protocol = protocol[0]
    return str(protocol)


def _file_location(dataset: Any) -> tuple[str, str] | None:
    """``(protocol, path)`` of a built file-backed dataset, ``None`` for any other."""
    path = getattr(dataset, "_filepath", None) or getattr(dataset, "_path", None)
    if path is None:
        try:
            described = dataset._describe()
        except Exception:  # noqa: BLE001 - a third-party dataset's description is best effort
            described = {}
        path = described.get("filepath") or described.get("path")
    if path is None:
        return None
    return _protocol(path, getattr(dataset, "_protocol", None)), str(path)


def _shown(path: str, project: Path | None) -> str:
    """Kedro makes relative file paths absolute: show them relative to the project again."""
    if project is not None:
        try:
            return str(Path(path).relative_to(project))
        except ValueError:
            pass
    return path


def _classify(catalog: Any, name: str, env: str, project: Path | None) -> tuple[str, str] | None:
    """``(kind, detail)`` for a pod-local dataset, ``None`` for one that can cross pods."""
    from kedro.io import MemoryDataset

    from vineyard.contrib.kedro.io.dataset import VineyardDataSet

    if name not in catalog:
        return "memory", f"no entry in the {env!r} catalog: a MemoryDataset"
    lazy = _unmaterialised(catalog, name)
    if lazy is not None:
        cls, config = lazy
        path = config.get("filepath") or config.get("path")
        location = (_protocol(path), str(path)) if isinstance(path, (str, Path)) else None
    else:
        dataset = _dataset(catalog, name)
        cls, location = type(dataset), _file_location(dataset)
    if issubclass(cls, MemoryDataset):
        return "memory", _type_name(cls)
    if issubclass(cls, VineyardDataSet):
        return "vineyard", "VineyardDataset"
    if location is not None and location[0] in LOCAL_PROTOCOLS:
        return "local_file", f"{_type_name(cls)} at {_shown(location[1], project)}"
    return None


def pod_local_datasets(catalog: Any, names: set[str], env: str, project: Path | None = None) -> list[dict[str, str]]:
    """``[{name, kind, detail}]`` for the datasets in `names` that live in one
    pod only: ``memory``, ``local_file``, or ``vineyard`` (which crosses pods
    only with the operator; the renderer decides). File paths under
    `project` are shown relative to it."""
    found = []
    for name in sorted(names):
        classified = _classify(catalog, name, env, project)
        if classified is not None:
            kind, detail = classified
            found.append({"name": name, "kind": kind, "detail": detail})
    return found
