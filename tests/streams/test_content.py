"""The content hash: the cross-language definition, pinned by known vectors."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given

from patchlog.streams.content import EMPTY_HASH, content_bytes, content_hash, split_lines
from tests.strategies import document


@pytest.mark.parametrize(
    ("lines", "digest"),
    [
        ([], "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        (["a"], "87428fc522803d31065e7bce3cf03fe475096631e5e07bbd7a0fde60c4cf25c7"),
        ([""], "01ba4719c80b6fe911b091a7c05124b64eeece964e09c058ef8f9805daca546b"),
        (["café", "", "z"], "98f7bb7e43b402b9382ebe73a706bf96380dd65ae6e022dda7cbeefb85d69f0a"),
    ],
)
def test_known_vectors(lines: list[str], digest: str) -> None:
    """Hashes equal `printf ... | sha256sum` of the POSIX file (vectors for other languages)."""
    assert content_hash(lines) == digest


def test_empty_document_is_zero_bytes() -> None:
    """Revision 0, the empty document, is zero bytes and hashes to EMPTY_HASH."""
    assert content_bytes([]) == b""
    assert content_hash([]) == EMPTY_HASH


@given(document)
def test_bytes_are_each_line_then_lf(lines: list[str]) -> None:
    """The bytes are every line followed by one LF, and read back to the same lines."""
    data = content_bytes(lines)
    assert data == b"".join(line.encode() + b"\n" for line in lines)
    assert content_hash(lines) == hashlib.sha256(data).hexdigest()
    assert split_lines(data) == lines
