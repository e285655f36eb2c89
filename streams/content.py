"""Document content as bytes, and its content hash: the one definition every language checks."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

__all__ = ["EMPTY_HASH", "content_bytes", "content_hash", "split_lines"]


def content_bytes(lines: Sequence[str]) -> bytes:
    """The bytes of a document: each line, UTF-8 encoded, followed by one ``\\n`` byte.

    So a document of n lines is n ``\\n``-terminated lines (a POSIX text file), the empty
    document (no lines) is zero bytes, and a document holding one empty line is the single
    byte ``\\n``. No ``\\r`` is ever added, and lines never contain ``\\n`` or ``\\r``.
    """
    if not lines:
        return b""
    return ("\n".join(lines) + "\n").encode("utf-8")


def content_hash(lines: Sequence[str]) -> str:
    """Lowercase hex sha256 of ``content_bytes(lines)``.

    The empty document hashes to ``EMPTY_HASH``
    (``e3b0c442...b855``, the sha256 of zero bytes).
    """
    return hashlib.sha256(content_bytes(lines)).hexdigest()


EMPTY_HASH = hashlib.sha256(b"").hexdigest()


def split_lines(data: bytes) -> list[str]:
    """The lines of a POSIX text file's bytes; the inverse of ``content_bytes``.

    A missing final ``\\n`` is tolerated (the last line counts as a line). Raises
    ``UnicodeDecodeError`` if ``data`` is not UTF-8.
    """
    if not data:
        return []
    text = data.decode("utf-8")
    if text.endswith("\n"):
        text = text[:-1]
    return text.split("\n")
