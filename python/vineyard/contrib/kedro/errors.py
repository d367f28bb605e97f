"""Exceptions raised by vineyard-kedro.

The classes are defined by the native core under this module's name, so they
pickle across Kedro's ParallelRunner worker processes.
"""

from vineyard.contrib.kedro._core import (
    ConnectError,
    InternalError,
    LaunchError,
    LayoutError,
    MigrationError,
    ObjectNotFoundError,
    ProtocolError,
    ServerError,
    StoreFullError,
    UnsupportedValueError,
    VineyardError,
)

__all__ = [
    "ConnectError",
    "InternalError",
    "LaunchError",
    "LayoutError",
    "MigrationError",
    "ObjectNotFoundError",
    "ProtocolError",
    "ServerError",
    "StoreFullError",
    "UnsupportedValueError",
    "VineyardError",
]
