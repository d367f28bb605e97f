"""Kedro datasets backed by vineyard."""

from vineyard.contrib.kedro.io.dataset import VineyardDataset, VineyardDataSet

__all__ = ["VineyardDataSet", "VineyardDataset"]
