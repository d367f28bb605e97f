"""One id grammar for the package: `_core.parse_id` (Rust `ObjectId::parse`),
used by the codecs' `metadata.parse_id` for metadata and by the CLI for ids
users type."""

from __future__ import annotations

import pytest

from vineyard.contrib.kedro import _core
from vineyard.contrib.kedro.codec import buffers, metadata
from vineyard.contrib.kedro.errors import LayoutError

JUNK = ["", "o", "1234", "12345678901234567", "o+1", "o-1", "o 1", " o1", "o1 ", "o_1",
        "0x1", "oxyz", "O1", "o1234567890abcdef0", "o\uff11"]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("o6889041a79c00005", 0x6889041A79C00005),  # as vineyardd writes it
        ("o8000000000000000", 0x8000000000000000),
        ("oFFFFFFFFFFFFFFFF", (1 << 64) - 1),
        ("o1", 1),  # vineyardd reads short hex too
    ],
)
def test_both_callers_read_the_same_spellings(text, value):
    assert _core.parse_id(text) == value
    assert metadata.parse_id(text, "buffer_") == value


@pytest.mark.parametrize("text", JUNK)
def test_junk_is_refused_by_both_callers(text):
    with pytest.raises(ValueError, match="is not an object id"):
        _core.parse_id(text)
    with pytest.raises(LayoutError, match=r"^buffer_: .* is not an object id"):
        metadata.parse_id(text, "buffer_")


def test_json_numbers_and_non_strings():
    assert metadata.parse_id(5) == 5
    for bad in (-1, 1 << 64, True, None, 1.0, b"o1"):
        with pytest.raises(LayoutError, match="is not an object id"):
            metadata.parse_id(bad)


def test_empty_blob_id_is_the_cores():
    assert buffers.EMPTY_BLOB_ID == _core.EMPTY_BLOB_ID == 0x8000000000000000
