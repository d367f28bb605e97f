"""The machinery every codec shares, in one import: `buffers` (the `Writer`
of a put, the `Reader` of a get), `metadata` (typenames, JSON entries, ids,
labels) and `dispatch` (typename -> decoder). Those three modules import one
way (metadata <- buffers <- dispatch); codecs import them directly.
"""

from __future__ import annotations

from vineyard.contrib.kedro.errors import LayoutError, UnsupportedValueError

from .buffers import EMPTY_BLOB_ID, Reader, Writer, unpickle
from .dispatch import Decoder, Encoder, decode, decoder
from .metadata import (
    EXTRA,
    OURS,
    NeedsPickle,
    decode_label,
    exact_label,
    get_int,
    get_name,
    is_plain,
    jdump,
    jload,
    member,
    parse_id,
    plain_label,
    put_name,
    shape_of,
    typename,
)

__all__ = [
    "EMPTY_BLOB_ID",
    "EXTRA",
    "Decoder",
    "Encoder",
    "OURS",
    "LayoutError",
    "NeedsPickle",
    "Reader",
    "UnsupportedValueError",
    "Writer",
    "decode",
    "decode_label",
    "decoder",
    "exact_label",
    "get_int",
    "get_name",
    "is_plain",
    "jdump",
    "jload",
    "member",
    "parse_id",
    "plain_label",
    "put_name",
    "shape_of",
    "typename",
    "unpickle",
]
