"""``vineyard_kedro::Plain``: a small container of plain values as one
metadata node, no blob and no pickle.

``{typename: "vineyard_kedro::Plain", value_: JSON}`` where the JSON tags what
JSON alone would lose: ``str``, ``bool``, ``None``, 64-bit ``int`` and
``list`` are themselves; ``{"f": repr}`` a float (exact, nan and inf
included), ``{"i": "digits"}`` a wider int, ``{"b": base64}`` bytes,
``{"ba": base64}`` a bytearray, ``{"t": [...]}`` a tuple, ``{"d": [[key,
value], ...]}`` a dict (keys: str, int, bool, None, ``{"f": ...}``, ``{"i":
...}`` or ``{"t": [...]}``). Used for containers of at most 256 items, 8 levels deep, whose
strings and bytes are under 64 KiB: one small object instead of a pickle.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from vineyard.contrib.kedro.errors import LayoutError

from .buffers import Reader
from .dispatch import decoder
from .metadata import OURS, jdump, jload

PLAIN = OURS + "Plain"
MAX_ITEMS = 256
MAX_DEPTH = 8
SMALL = 1 << 16
_I64 = 1 << 63
_MAX_INT_BITS = 8192  # str(int) refuses beyond ~4300 digits by default


def _utf8(s: str) -> bool:
    if s.isascii():
        return True
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: not valid JSON for other readers
        return False
    return True


def _plain_key(k: Any, depth: int = 0) -> bool:
    t = type(k)
    if k is None or t is bool or t is float:
        return True
    if t is int:
        return k.bit_length() < _MAX_INT_BITS
    if t is str:
        return len(k) < SMALL and _utf8(k)
    return t is tuple and depth < MAX_DEPTH and len(k) <= MAX_ITEMS and all(_plain_key(v, depth + 1) for v in k)


def is_plain(value: Any, depth: int = 0) -> bool:
    """True for a value this layout stores exactly."""
    t = type(value)
    if value is None or t is bool or t is float:
        return True
    if t is int:
        return value.bit_length() < _MAX_INT_BITS
    if t is str:
        return len(value) < SMALL and _utf8(value)
    if t is bytes or t is bytearray:
        return len(value) < SMALL
    if t is list or t is tuple or t is dict:
        if depth >= MAX_DEPTH or len(value) > MAX_ITEMS:
            return False
        if t is dict:
            return all(_plain_key(k) and is_plain(v, depth + 1) for k, v in value.items())
        return all(is_plain(v, depth + 1) for v in value)
    return False


def _tag(v: Any) -> Any:
    t = type(v)
    if v is None or t is bool or t is str:
        return v
    if t is int:
        return v if -_I64 <= v < _I64 else {"i": str(v)}
    if t is float:
        return {"f": repr(v)}
    if t is bytes:
        return {"b": base64.b64encode(v).decode("ascii")}
    if t is bytearray:
        return {"ba": base64.b64encode(v).decode("ascii")}
    if t is list:
        return [_tag(x) for x in v]
    if t is tuple:
        return {"t": [_tag(x) for x in v]}
    return {"d": [[_tag(k), _tag(x)] for k, x in v.items()]}


def encode_plain(value: Any) -> dict:
    return {"typename": PLAIN, "value_": jdump(_tag(value)), "nbytes": 0}


def _untag(x: Any, depth: int, key: bool = False) -> Any:
    if depth > MAX_DEPTH + 1:
        raise LayoutError(f"{PLAIN}: nested deeper than {MAX_DEPTH}")
    if x is None or type(x) in (bool, str, int):
        return x
    if type(x) is list and not key:
        return [_untag(v, depth + 1) for v in x]
    if type(x) is dict and len(x) == 1:
        (tag, body), = x.items()
        try:
            if tag == "f" and type(body) is str:
                return float(body)
            if tag == "t" and type(body) is list:
                return tuple(_untag(v, depth + 1, key) for v in body)
            if tag == "i" and type(body) is str:
                return int(body)
            if key:
                pass
            elif tag in ("b", "ba") and type(body) is str:
                data = base64.b64decode(body, validate=True)
                return data if tag == "b" else bytearray(data)
            elif tag == "d" and type(body) is list:
                out = {}
                for pair in body:
                    if type(pair) is not list or len(pair) != 2:
                        raise LayoutError(f"{PLAIN}: a dict item is not a [key, value] pair")
                    out[_untag(pair[0], depth + 1, key=True)] = _untag(pair[1], depth + 1)
                return out
        except (ValueError, binascii.Error, TypeError) as e:
            raise LayoutError(f"{PLAIN}: bad {tag!r} value: {e}") from None
    raise LayoutError(f"{PLAIN}: unexpected {'key' if key else 'value'} {str(x)[:80]!r}")


@decoder(PLAIN)
def decode_plain(meta: dict, r: Reader) -> Any:
    return _untag(jload(meta, "value_"), 0)


__all__ = ["PLAIN", "encode_plain", "is_plain"]
