"""numpy arrays as ``vineyard::Tensor<T>`` (protocol section 11.1).

Layout (exactly the official Python client's)::

    {"typename": "vineyard::Tensor<double>", "value_type_": "float64",
     "value_type_meta_": "<f8", "shape_": "[2, 3]", "partition_index_": "[]",
     "order_": "\\"C\\"", "nbytes": 48, "buffer_": <blob, C-order bytes>}

* The blob always holds the elements in C (row-major) order. A Fortran-ordered
  array records ``order_ "F"`` and comes back Fortran-ordered (the only case
  that copies, on save and on load).
* numeric, bool, float16, complex, datetime64 and timedelta64 of every unit
  are stored this way; loads are zero-copy writable views of the load's
  private copy-on-write mapping of the blob (a write copies the pages it
  touches; the store and every other load keep the original).
* object arrays: ``vineyard::Tensor<object>`` whose ``buffer_`` blob is an
  in-band pickle (protocol 5), as the official client writes them.
* Arrays the layout cannot carry (numpy strings, structured or non-native byte
  order dtypes, subclasses) go through the pickle codec (their buffers travel
  out of band, so they are still copied once and loaded zero-copy).
"""

from __future__ import annotations

import math
import pickle
from typing import Any

import numpy as np

from vineyard.contrib.kedro.errors import LayoutError

from .dtypes import STRING_TYPES, is_raw, safe_dtype, template_arg
from .buffers import Reader, Writer
from .dispatch import decoder
from .metadata import EXTRA, jdump, jload, shape_of, typename

#: numpy names whose C++ spelling the official client uses in the typename.
_CPP_NAME = {"int32": "int", "float32": "float", "float64": "double"}


def tensor_typename(dtype: np.dtype) -> str:
    return f"vineyard::Tensor<{_CPP_NAME.get(dtype.name, dtype.name)}>"


_DTYPES: dict[tuple, np.dtype] = {}


def tensor_dtype(meta: dict) -> np.dtype:
    """The element dtype of a Tensor, from any writer's spelling."""
    key = (meta.get("value_type_meta_"), meta.get("value_type_"), meta.get("typename"))
    try:
        return _DTYPES[key]
    except (KeyError, TypeError):  # TypeError: unhashable junk in hostile metadata
        pass
    for spec in (key[0], key[1], template_arg(typename(meta))):
        d = safe_dtype(spec)
        if d is not None:
            if len(_DTYPES) < 4096 and all(isinstance(k, (str, type(None))) for k in key):
                _DTYPES[key] = d
            return d
    raise LayoutError(
        f"{typename(meta)}: unsupported element type {meta.get('value_type_')!r} / {meta.get('value_type_meta_')!r}"
    )


# -- encode ---------------------------------------------------------------------


def tensor_tree(a: np.ndarray, w: Writer) -> dict:
    """A Tensor of a raw-dtype array (see `is_raw`)."""
    dt = a.dtype
    fortran = a.ndim > 1 and a.flags.f_contiguous and not a.flags.c_contiguous
    return {
        "typename": tensor_typename(dt),
        "value_type_": dt.name,
        "value_type_meta_": dt.str,
        "shape_": jdump(list(a.shape)),
        "partition_index_": "[]",
        "order_": '"F"' if fortran else '"C"',
        "nbytes": int(a.nbytes),
        "buffer_": w.array(a),
    }


def object_tensor_tree(a: np.ndarray, w: Writer) -> dict:
    """An object array as the official ``Tensor<object>`` (in-band pickle)."""
    payload = pickle.dumps(a, protocol=5)
    tree = {
        "typename": "vineyard::Tensor<object>",
        "value_type_": "object",
        "value_type_meta_": "|O",
        "shape_": jdump(list(a.shape)),
        "partition_index_": "[]",
        "order_": '"F"' if a.ndim > 1 and a.flags.f_contiguous and not a.flags.c_contiguous else '"C"',
        "nbytes": len(payload),
        EXTRA + "size_": len(payload),
    }
    return w.pickle(tree, payload)


def encode_ndarray(a: np.ndarray, w: Writer) -> dict:
    if is_raw(a.dtype):
        return tensor_tree(a, w)
    if a.dtype.kind == "O":
        return object_tensor_tree(a, w)
    from .pickle_codec import encode_pickle

    return encode_pickle(a, w)


# -- decode ---------------------------------------------------------------------


def decode_raw_tensor(meta: dict, r: Reader) -> np.ndarray:
    dtype = tensor_dtype(meta)
    shape = shape_of(meta)
    count = math.prod(shape)
    flat = r.view(meta, "buffer_", dtype, count)
    a = flat.reshape(shape)
    order = meta.get("order_", '"C"')
    if a.ndim > 1 and order != '"C"' and jload(meta, "order_", "C") == "F":
        a = np.asfortranarray(a)
    return a


def decode_string_tensor(meta: dict, r: Reader) -> np.ndarray:
    from .arrow_codec import decode_arrow_array  # pyarrow only when a string tensor is read

    buf = meta.get("buffer_")
    if not isinstance(buf, dict):
        raise LayoutError(f"{typename(meta)}: member 'buffer_' is missing")
    arr = decode_arrow_array(buf, r)
    shape = shape_of(meta) if "shape_" in meta else (len(arr),)
    if math.prod(shape) != len(arr):
        raise LayoutError(f"{typename(meta)}: shape {shape} does not match {len(arr)} strings")
    out = arr.to_numpy(zero_copy_only=False)
    if out.dtype != object:
        out = out.astype(object)
    return out.reshape(shape)


def decode_object_tensor(meta: dict, r: Reader) -> Any:
    size = meta.get(EXTRA + "size_")
    view = r.bytes_view(meta, "buffer_", size if isinstance(size, int) and not isinstance(size, bool) else None, shared=True)
    return r.unpickle(meta, memoryview(view))


@decoder("vineyard::Tensor<", prefix=True)
def decode_tensor(meta: dict, r: Reader) -> Any:
    vt = meta.get("value_type_")
    arg = template_arg(typename(meta))
    if vt in STRING_TYPES or (vt is None and arg in STRING_TYPES):
        return decode_string_tensor(meta, r)
    if vt == "object" or (vt is None and arg == "object"):
        return decode_object_tensor(meta, r)
    return decode_raw_tensor(meta, r)


@decoder("vineyard::Array<", prefix=True)
def decode_array(meta: dict, r: Reader) -> np.ndarray:
    """The C++ ``vineyard::Array<T>`` (a flat blob of T)."""
    dtype = safe_dtype(template_arg(typename(meta)))
    if dtype is None:
        raise LayoutError(f"{typename(meta)}: unsupported element type")
    size = r.blob(meta, "buffer_").size
    return r.view(meta, "buffer_", dtype, size // dtype.itemsize)


__all__ = [
    "decode_raw_tensor",
    "decode_tensor",
    "encode_ndarray",
    "tensor_dtype",
    "tensor_tree",
    "tensor_typename",
]
