"""What differs between Kedro 0.19 and 1.x, in one place."""

from __future__ import annotations

from typing import Any

from kedro.io.core import AbstractDataset, DatasetError

__all__ = ["AbstractDataset", "DatasetError", "pipeline_datasets", "catalog_has", "catalog_add"]


def pipeline_datasets(pipeline: Any) -> set[str]:
    """Every dataset name a pipeline reads or writes."""
    return set(pipeline.datasets())


def catalog_has(catalog: Any, name: str) -> bool:
    """True when the catalog defines `name` (explicitly or by a user pattern)."""
    return name in catalog


def catalog_add(catalog: Any, name: str, dataset: Any) -> None:
    """Registers (or replaces) a dataset in either Kedro's catalog."""
    if hasattr(catalog, "add"):  # 0.19's DataCatalog
        catalog.add(name, dataset, replace=True)
    else:  # 1.x
        catalog[name] = dataset
