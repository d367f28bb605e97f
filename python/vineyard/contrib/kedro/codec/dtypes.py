"""Element types: every spelling of a numpy element type that writers put in
typenames and ``value_type_`` (Python and C++), read as numpy dtypes that are
safe to view raw memory as. Shared by the Tensor and the Arrow readers.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

#: Every spelling of an element type seen in typenames or ``value_type_``
#: (Python and C++ writers), to the numpy dtype name.
ALIASES = {
    "bool": "bool",
    "int8": "int8", "int8_t": "int8", "char": "int8", "byte": "int8", "i8": "int8",
    "uint8": "uint8", "uint8_t": "uint8", "unsigned char": "uint8", "u8": "uint8",
    "int16": "int16", "int16_t": "int16", "short": "int16", "i16": "int16",
    "uint16": "uint16", "uint16_t": "uint16", "unsigned short": "uint16", "u16": "uint16",
    "int": "int32", "int32": "int32", "int32_t": "int32", "i32": "int32",
    "uint": "uint32", "uint32": "uint32", "uint32_t": "uint32", "uint_t": "uint32", "unsigned int": "uint32", "u32": "uint32",
    "int64": "int64", "int64_t": "int64", "i64": "int64", "long": "int64", "long long": "int64", "long int": "int64",
    "uint64": "uint64", "uint64_t": "uint64", "u64": "uint64", "unsigned long": "uint64", "unsigned long long": "uint64",
    "float16": "float16", "half": "float16", "halffloat": "float16",
    "float": "float32", "float32": "float32",
    "double": "float64", "float64": "float64",
    "complex64": "complex64", "complex128": "complex128",
}  # fmt: skip
STRING_TYPES = frozenset({"string", "std::string", "str", "std::__1::string", "std::__cxx11::string", "large_string", "utf8"})
_TIME = re.compile(r"^(datetime64|timedelta64)(\[(Y|M|W|D|h|m|s|ms|us|ns|ps|fs|as)\])?$")
#: dtype kinds a Tensor may hold as raw bytes.
RAW_KINDS = frozenset("biufcmM")



def is_raw(dtype: np.dtype) -> bool:
    """True for dtypes stored as raw bytes in a Tensor (and viewed on load)."""
    return dtype.kind in RAW_KINDS and dtype.isnative and dtype.fields is None and dtype.subdtype is None


def safe_dtype(spec: Any) -> np.dtype | None:
    """A numpy dtype for an element spelling, if it is one we may view raw
    memory as (never object, structured or sub-array dtypes)."""
    if not isinstance(spec, str) or len(spec) > 40:
        return None
    name = ALIASES.get(spec.strip())
    if name is not None:
        return np.dtype(name)
    if _TIME.match(spec):
        return np.dtype(spec)
    if re.match(r"^[<>|=]?[biufcmM]\d*(\[\w+\])?$", spec):
        try:
            d = np.dtype(spec)
        except Exception:  # noqa: BLE001 - any refusal means "not a dtype"
            return None
        if d.kind in RAW_KINDS and d.fields is None and d.subdtype is None and d.itemsize > 0:
            return d
    return None


def template_arg(name: str) -> str | None:
    lt, gt = name.find("<"), name.rfind(">")
    return name[lt + 1 : gt] if 0 < lt < gt else None


__all__ = ["ALIASES", "RAW_KINDS", "STRING_TYPES", "is_raw", "safe_dtype", "template_arg"]
