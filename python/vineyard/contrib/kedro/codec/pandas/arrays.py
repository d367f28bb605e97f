"""One-dimensional pandas data (a column, a Series' values, an Index's values).

| values | layout |
|---|---|
| numpy numeric, bool, float16, complex, datetime64/timedelta64 (any unit) | ``vineyard::Tensor<T>`` (official; zero-copy load) |
| object column of ``str``/``None`` | ``vineyard::Tensor<std::string>`` with a ``vineyard::BaseBinaryArray<arrow::LargeStringArray>`` ``buffer_`` (official), plus ``vineyard_kedro_dtype_: "\\"object\\""`` |
| pandas ``str``/``string`` dtype (pyarrow or python storage) | the same, with ``vineyard_kedro_dtype_: {"storage": ..., "na": "nan"/"NA"}``; pyarrow-backed columns come back zero-copy over the blobs |
| other object columns | ``vineyard::Tensor<object>`` (official: an in-band pickle) |
| nullable ``Int*``/``UInt*``/``Float*``/``boolean`` | ``vineyard_kedro::MaskedArray`` ``{dtype_, data_: Tensor, mask_: Tensor<bool>}`` (zero-copy) |
| categorical | ``vineyard_kedro::Categorical`` ``{ordered_, codes_: Tensor, categories_: index}`` |
| tz-aware datetimes | ``vineyard_kedro::DatetimeTZArray`` ``{tz_, tz_spec_ (JSON, see `timezones`), value_: Tensor<datetime64[unit]> (UTC)}``; a zone without a JSON spec: ``vineyard::PickleBuffer`` |
| ``pd.ArrowDtype`` | ``vineyard_kedro::ArrowExtensionArray`` ``{value_: Arrow chunked array}`` (zero-copy) |
| anything else (Period, Interval, Sparse, custom extension arrays) | ``vineyard::PickleBuffer`` (pickle 5, buffers out of band) |
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from vineyard.contrib.kedro.errors import LayoutError

from ..arrow_codec import array_tree, decode_arrow_array, encode_arrow
from ..buffers import Reader, Writer
from ..dispatch import Encoder, decode, decoder
from ..dtypes import is_raw
from ..metadata import EXTRA, OURS, jdump, jload, member, typename
from ..numpy_codec import decode_raw_tensor, object_tensor_tree, tensor_tree
from ..pickle_codec import encode_pickle
from ..timezones import tz_from_spec, tz_spec

MASKED = OURS + "MaskedArray"
CATEGORICAL = OURS + "Categorical"
DATETIME_TZ = OURS + "DatetimeTZArray"
ARROW_EXT = OURS + "ArrowExtensionArray"
STRING_TENSOR = "vineyard::Tensor<std::string>"

try:
    from pandas.core.arrays.masked import BaseMaskedArray
except ImportError:  # pragma: no cover - every supported pandas has it
    BaseMaskedArray = ()  # type: ignore[assignment,misc]


def string_dtype(storage: str, na: str) -> Any:
    """``pd.StringDtype`` for a storage and NA flavour on any pandas >= 2."""
    na_value = np.nan if na == "nan" else pd.NA
    try:
        return pd.StringDtype(storage, na_value=na_value)
    except TypeError:  # pandas < 2.3
        if na == "nan" and storage == "pyarrow":
            return pd.StringDtype("pyarrow_numpy")
        return pd.StringDtype(storage)


def _string_flavour(dtype: Any) -> dict:
    storage = dtype.storage
    na = "nan" if storage == "pyarrow_numpy" or getattr(dtype, "na_value", pd.NA) is not pd.NA else "NA"
    return {"storage": "pyarrow" if storage == "pyarrow_numpy" else storage, "na": na}


# -- encode ---------------------------------------------------------------------


def string_tree(arr: pa.Array, w: Writer, flavour: Any) -> dict:
    if pa.types.is_null(arr.type):
        arr = arr.cast(pa.large_string())
    return {
        "typename": STRING_TENSOR,
        "value_type_": "string",
        "value_type_meta_": "str",
        "shape_": jdump([len(arr)]),
        "partition_index_": "[]",
        "order_": '"C"',
        "nbytes": int(arr.nbytes),
        "buffer_": array_tree(arr, w),
        EXTRA + "dtype_": jdump(flavour),
    }


def _object_strings(values: np.ndarray) -> pa.Array | None:
    """An Arrow string array of an object array holding only str and None
    (Arrow's type inference says "string" only then: bytes infer binary,
    NaN and other objects fail)."""
    try:
        arr = pa.array(values, from_pandas=False)
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        return None
    if isinstance(arr, pa.ChunkedArray):  # > 2 GiB of text
        if not all(pa.types.is_string(c.type) for c in arr.chunks):
            return None
        arr = pa.array(values, type=pa.large_string(), from_pandas=False)
    if pa.types.is_null(arr.type) and len(arr):  # all None
        return arr.cast(pa.large_string())
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type) or len(arr) == 0):
        return None
    return arr


def _one_chunk(ca: pa.ChunkedArray) -> pa.Array:
    if ca.num_chunks == 1:
        return ca.chunk(0)
    if ca.num_chunks == 0:
        return pa.array([], type=ca.type)
    return ca.combine_chunks()


def encode_values(values: Any, w: Writer, index_tree: Encoder) -> dict:
    """The tree of 1-D pandas data (an ndarray or an ExtensionArray).

    `index_tree` writes an Index (`index.index_tree`): a categorical's
    categories are an Index, and index layouts hold values, so the index
    module passes itself in instead of being imported here."""
    if isinstance(values, np.ndarray):
        if values.ndim == 1 and is_raw(values.dtype):
            return tensor_tree(values, w)
        if values.dtype == object and values.ndim == 1:
            arr = _object_strings(values)
            if arr is not None:
                return string_tree(arr, w, "object")
            return object_tensor_tree(values, w)
        return encode_pickle(values, w)
    dtype = values.dtype
    if isinstance(values, (pd.arrays.DatetimeArray, pd.arrays.TimedeltaArray)):
        raw = values._ndarray
        tz = getattr(dtype, "tz", None)
        if tz is None:
            return tensor_tree(raw, w)
        spec = tz_spec(tz)
        if spec is None:
            return encode_pickle(values, w)
        return {
            "typename": DATETIME_TZ,
            "tz_": str(tz),
            "tz_spec_": jdump(spec),
            "nbytes": int(raw.nbytes),
            "value_": tensor_tree(raw, w),
        }
    if isinstance(dtype, pd.StringDtype):
        flavour = _string_flavour(dtype)
        if hasattr(values, "_pa_array"):
            arr = _one_chunk(values._pa_array)
        else:
            arr = pa.array(np.asarray(values._ndarray), type=pa.large_string(), from_pandas=True)
        return string_tree(arr, w, flavour)
    if isinstance(values, BaseMaskedArray):
        return {
            "typename": MASKED,
            "dtype_": str(dtype),
            "nbytes": int(values.nbytes),
            "data_": tensor_tree(values._data, w),
            "mask_": tensor_tree(values._mask, w),
        }
    if isinstance(values, pd.Categorical):
        return {
            "typename": CATEGORICAL,
            "ordered_": bool(dtype.ordered),
            "nbytes": int(values.nbytes),
            "codes_": tensor_tree(values.codes, w),
            "categories_": index_tree(dtype.categories, w),
        }
    if isinstance(dtype, pd.ArrowDtype):
        return {"typename": ARROW_EXT, "nbytes": int(values.nbytes), "value_": encode_arrow(values._pa_array, w)}
    return encode_pickle(values, w)


# -- decode ---------------------------------------------------------------------


def _decode_strings(meta: dict, r: Reader) -> Any:
    buf = member(meta, "buffer_")
    arr = decode_arrow_array(buf, r)
    if not (pa.types.is_large_string(arr.type) or pa.types.is_string(arr.type)):
        arr = arr.cast(pa.large_string())
    flavour = jload(meta, EXTRA + "dtype_", "object")
    if isinstance(flavour, dict):
        storage, na = flavour.get("storage"), flavour.get("na")
        if storage not in ("pyarrow", "python") or na not in ("nan", "NA"):
            raise LayoutError(f"{typename(meta)}: unknown string dtype {flavour!r}")
        dtype = string_dtype(storage, na)
        if storage == "pyarrow":
            if not pa.types.is_large_string(arr.type):
                arr = arr.cast(pa.large_string())
            try:
                return pd.arrays.ArrowStringArray(pa.chunked_array([arr]), dtype=dtype)
            except TypeError:  # pandas < 3: no dtype argument
                return pd.array(pa.chunked_array([arr]), dtype=dtype)
        return pd.array(arr.to_numpy(zero_copy_only=False), dtype=dtype)
    out = arr.to_numpy(zero_copy_only=False)
    return out if out.dtype == object else out.astype(object)


@decoder(MASKED)
def decode_masked(meta: dict, r: Reader) -> Any:
    name = meta.get("dtype_")
    try:
        dtype = pd.api.types.pandas_dtype(name)
    except (TypeError, ValueError):
        raise LayoutError(f"{MASKED}: unknown dtype {name!r}") from None
    cls = dtype.construct_array_type() if isinstance(dtype, pd.api.extensions.ExtensionDtype) else None
    if cls is None or not issubclass(cls, BaseMaskedArray):
        raise LayoutError(f"{MASKED}: {name!r} is not a nullable numeric dtype")
    data = decode_raw_tensor(member(meta, "data_"), r)
    mask = decode_raw_tensor(member(meta, "mask_"), r)
    if data.dtype != dtype.numpy_dtype or mask.dtype != np.bool_ or data.ndim != 1 or data.shape != mask.shape:
        raise LayoutError(f"{MASKED}: data {data.dtype}{data.shape} and mask {mask.dtype}{mask.shape} do not fit {name}")
    return cls(data, mask)


@decoder(CATEGORICAL)
def decode_categorical(meta: dict, r: Reader) -> pd.Categorical:
    codes = decode_raw_tensor(member(meta, "codes_"), r)
    # The categories are an index layout, read through `dispatch` (the
    # index module, which registers them, is built on this one).
    categories = decode(member(meta, "categories_"), r)
    if not isinstance(categories, pd.Index):
        raise LayoutError(f"{CATEGORICAL}: categories_ is not an index but a {type(categories).__name__}")
    if codes.ndim != 1 or codes.dtype.kind != "i":
        raise LayoutError(f"{CATEGORICAL}: codes must be 1-D integers")
    try:
        dtype = pd.CategoricalDtype(categories, ordered=bool(meta.get("ordered_", False)))
        return pd.Categorical.from_codes(codes, dtype=dtype)
    except (TypeError, ValueError) as e:
        raise LayoutError(f"{CATEGORICAL}: {e}") from None


@decoder(DATETIME_TZ)
def decode_datetime_tz(meta: dict, r: Reader) -> Any:
    raw = decode_raw_tensor(member(meta, "value_"), r)
    if raw.ndim != 1 or raw.dtype.kind != "M":
        raise LayoutError(f"{DATETIME_TZ}: values must be 1-D datetime64")
    try:
        if "tz_spec_" in meta:
            tz = tz_from_spec(jload(meta, "tz_spec_"))
        elif "tz_pickle_" in meta:
            raise LayoutError(f"{DATETIME_TZ}: a pickled time zone (written by an earlier vineyard-kedro) is never unpickled; save the value again")
        else:
            tz = meta["tz_"]
        unit = np.datetime_data(raw.dtype)[0]
        dtype = pd.DatetimeTZDtype(unit=unit, tz=tz)
    except (KeyError, TypeError, ValueError) as e:
        raise LayoutError(f"{DATETIME_TZ}: bad time zone: {e}") from None
    try:
        return pd.arrays.DatetimeArray._simple_new(raw, dtype=dtype)
    except (AttributeError, TypeError):  # a pandas without the fast path
        return pd.array(pd.DatetimeIndex(raw).tz_localize("UTC").tz_convert(tz))


@decoder(ARROW_EXT)
def decode_arrow_ext(meta: dict, r: Reader) -> Any:
    v = decode(member(meta, "value_"), r)
    if isinstance(v, pa.Array):
        v = pa.chunked_array([v])
    if not isinstance(v, pa.ChunkedArray):
        raise LayoutError(f"{ARROW_EXT}: value_ is not an Arrow array")
    return pd.arrays.ArrowExtensionArray(v)


def decode_values(meta: Any, r: Reader) -> Any:
    """1-D data from any layout a column may have (ours or a writer's)."""
    t = typename(meta)
    if t.startswith("vineyard::Tensor<"):
        vt = meta.get("value_type_")
        if vt in ("string", "std::string", "str", "std::__1::string", "std::__cxx11::string") or t == STRING_TENSOR:
            out = _decode_strings(meta, r)
        else:
            out = decode(meta, r)
    else:
        out = decode(meta, r)
    if isinstance(out, (pa.Array, pa.ChunkedArray)):
        out = pd.arrays.ArrowExtensionArray(out if isinstance(out, pa.ChunkedArray) else pa.chunked_array([out]))
    if not (isinstance(out, np.ndarray) or isinstance(out, pd.api.extensions.ExtensionArray)) or out.ndim != 1:
        raise LayoutError(f"{t}: a column must be 1-D array data, got {type(out).__name__}")
    return out


__all__ = ["decode_values", "encode_values", "string_dtype", "string_tree"]
