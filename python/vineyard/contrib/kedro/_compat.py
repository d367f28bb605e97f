"""What differs between Kedro 0.18, 0.19 and 1.x, in one place."""

from __future__ import annotations

from typing import Any

try:  # Kedro >= 0.19
    from kedro.io.core import AbstractDataset, DatasetError
except ImportError:  # Kedro 0.18
    from kedro.io.core import AbstractDataSet as AbstractDataset  # type: ignore[no-redef]
    from kedro.io.core import DataSetError as DatasetError  # type: ignore[no-redef]

__all__ = ["AbstractDataset", "DatasetError", "pipeline_datasets", "catalog_has", "catalog_add", "catalog_get"]


def pipeline_datasets(pipeline: Any) -> set[str]:
    """Every dataset name a pipeline reads or writes."""
    if hasattr(pipeline, "datasets"):
        return set(pipeline.datasets())
    return set(pipeline.data_sets())  # 0.18


def catalog_has(catalog: Any, name: str) -> bool:
    """True when the catalog defines `name` (explicitly or by a user pattern)."""
    if hasattr(catalog, "__contains__"):
        try:
            return name in catalog
        except TypeError:
            pass
    if hasattr(catalog, "_data_sets"):  # 0.18
        return name in catalog._data_sets or bool(getattr(catalog, "_match_pattern", lambda *_: None)(getattr(catalog, "_dataset_patterns", {}), name))
    return name in catalog.list()


def catalog_get(catalog: Any, name: str) -> Any:
    """The dataset object registered under `name`, or None."""
    for attr in ("_datasets", "_data_sets"):
        store = getattr(catalog, attr, None)
        if isinstance(store, dict) and name in store:
            return store[name]
    return None


def catalog_add(catalog: Any, name: str, dataset: Any) -> None:
    """Registers (or replaces) a dataset in any Kedro version's catalog."""
    if hasattr(catalog, "__setitem__") and not hasattr(catalog, "add"):  # 1.x
        catalog[name] = dataset
    elif hasattr(catalog, "add"):  # 0.18 / 0.19
        catalog.add(name, dataset, replace=True)
    else:
        catalog[name] = dataset
