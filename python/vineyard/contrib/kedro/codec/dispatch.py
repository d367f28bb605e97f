"""Typename dispatch: decoders register the typenames they read, and
`decode` rebuilds a value from its metadata tree with the decoder of its
typename (importing every codec on the first miss, so that pandas and pyarrow
load only when an object needs them)."""

from __future__ import annotations

from typing import Any, Callable

from vineyard.contrib.kedro.errors import LayoutError

from .buffers import Reader, Writer
from .metadata import typename

Decoder = Callable[[dict, Reader], Any]
_DECODERS: dict[str, Decoder] = {}
_PREFIX_DECODERS: list[tuple[str, Decoder]] = []


def decoder(*typenames: str, prefix: bool = False) -> Callable[[Decoder], Decoder]:
    """Registers a decoder for exact typenames (or typename prefixes)."""

    def deco(fn: Decoder) -> Decoder:
        for t in typenames:
            if prefix:
                _PREFIX_DECODERS.append((t, fn))
                _PREFIX_DECODERS.sort(key=lambda p: -len(p[0]))
            else:
                _DECODERS[t] = fn
        return fn

    return deco


def decode(meta: Any, r: Reader) -> Any:
    """Rebuilds the value of a metadata tree."""
    t = typename(meta)
    fn = _DECODERS.get(t)
    if fn is None:
        for p, f in _PREFIX_DECODERS:
            if t.startswith(p):
                fn = f
                break
    if fn is None:
        if not _LOADED:
            _load_all()
            return decode(meta, r)
        raise LayoutError(f"no codec reads objects of type {t!r}")
    return fn(meta, r)


_LOADED: list[bool] = []


def _load_all() -> None:
    """Imports every codec (pandas and pyarrow only when first needed)."""
    import importlib

    for name in ("numpy_codec", "pickle_codec", "python_codec", "arrow_codec", "pandas"):
        try:
            importlib.import_module(f"{__package__}.{name}")
        except ImportError:  # pandas or pyarrow missing: their layouts are unreadable
            pass
    _LOADED.append(True)


Encoder = Callable[[Any, Writer], dict]


__all__ = ["Decoder", "Encoder", "decode", "decoder"]
