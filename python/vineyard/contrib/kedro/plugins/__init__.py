"""Kedro plugins: the ``kedro vineyard`` commands and the hook."""

from vineyard.contrib.kedro.plugins.hook import VineyardHook, hooks

__all__ = ["VineyardHook", "hooks"]
