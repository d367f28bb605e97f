"""Kedro plugins: the ``kedro vineyard`` commands and the hook (imported on first use)."""

from typing import Any

__all__ = ["VineyardHook", "hooks"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from vineyard.contrib.kedro.plugins import hook

        return getattr(hook, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
