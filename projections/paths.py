"""Document names as relative file paths: safe on every common file system, reversible.

A name is split at ``/``; each part becomes one path segment, written with ASCII
lowercase letters, digits and ``-_.+~`` only, so that no two names give paths that a
case-insensitive (or Unicode-normalizing) file system would take for one:

- ``a``-``z``, ``0``-``9``, ``-``, ``_`` and ``.`` stay as they are;
- an upper-case ASCII letter becomes ``+`` and the letter in lower case
  (``README.md`` → ``+r+e+a+d+m+e.md``);
- every other character (``+`` and ``~`` themselves, spaces, punctuation, anything not
  ASCII) becomes ``~`` and two lower-case hex digits per UTF-8 byte
  (``my notes.txt`` → ``my~20notes.txt``, ``é`` → ``~c3~a9``);
- a ``.`` that begins or ends a segment is written ``~2e`` (no segment is hidden, none
  is ``.`` or ``..``, Windows strips no trailing dot), which leaves every name starting
  with ``.`` in the folder to patchlog's own files;
- a segment whose base (up to its first ``.``) is a Windows device name (``con``,
  ``nul``, ``com1``, ...) has its third character escaped (``con.txt`` → ``co~6e.txt``).

A document is a file, and a name may also be the folder of others (``notes`` and
``notes/today``), so the two kinds of segment never meet: every folder segment ends in
``.d`` (``notes/today`` → ``notes.d/today``), and a document segment that would end in
``.d`` has that dot escaped (``x.d`` → ``x~2ed``).

Names are at most 256 bytes, but a segment is at most ``SEGMENT_MAX`` bytes on most file
systems; a segment whose encoding is longer keeps its first characters and ends in
``~~`` and 32 hex digits of the sha256 of the original segment (such a name is not
reversible, only collision-free). Every other path gives its name back (``doc_of``).
"""

from __future__ import annotations

import hashlib

__all__ = ["DIR_SUFFIX", "SEGMENT_MAX", "doc_of", "path_of"]

SEGMENT_MAX = 255
"""Bytes in one file name on ext4, XFS, APFS, NTFS: no segment of a path is longer."""
DIR_SUFFIX = ".d"
"""Ends every folder segment, so that no document's file is another's folder."""

_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")
_UPPER = "+"
_ESCAPE = "~"
_HASHED = "~~"
_HASH_HEX = 32
_BODY_MAX = SEGMENT_MAX - len(DIR_SUFFIX)
_RESERVED = frozenset(
    ["con", "prn", "aux", "nul"] + [f"{dev}{n}" for dev in ("com", "lpt") for n in range(10)]
)
_HEX = frozenset("0123456789abcdef")
_LOWER = frozenset("abcdefghijklmnopqrstuvwxyz")


def _escape(char: str) -> str:
    return "".join(f"{_ESCAPE}{b:02x}" for b in char.encode("utf-8", "surrogatepass"))


def _tokens(segment: str) -> list[str]:
    """The encoding of each character of ``segment``, one token per character."""
    out = []
    for char in segment:
        if char in _PLAIN:
            out.append(char)
        elif "A" <= char <= "Z":
            out.append(_UPPER + char.lower())
        else:
            out.append(_escape(char))
    return out


def _encode(segment: str, *, folder: bool) -> str:
    tokens = _tokens(segment)
    if tokens[0] == ".":
        tokens[0] = _escape(".")
    if tokens[-1] == ".":
        tokens[-1] = _escape(".")
    if not folder and len(tokens) >= 2 and tokens[-2:] == [".", "d"]:
        tokens[-2] = _escape(".")
    base = tokens[: tokens.index(".")] if "." in tokens else tokens
    if "".join(base) in _RESERVED:
        tokens[2] = _escape(tokens[2])
    body = "".join(tokens)
    if len(body) > _BODY_MAX:
        # Cut between tokens, so the kept part still reads as the name's beginning.
        room = _BODY_MAX - len(_HASHED) - _HASH_HEX
        kept, size = [], 0
        for token in tokens:
            if size + len(token) > room:
                break
            kept.append(token)
            size += len(token)
        digest = hashlib.sha256(segment.encode("utf-8", "surrogatepass")).hexdigest()
        body = "".join(kept) + _HASHED + digest[:_HASH_HEX]
    return body + DIR_SUFFIX if folder else body


def path_of(doc: str) -> str:
    """The relative path (``/``-separated) of the file holding document ``doc``.

    Deterministic, a function of the name alone. Raises ``ValueError`` naming the rule
    if ``doc`` is empty or has an empty segment (a leading, trailing or doubled ``/``),
    which no document name has.
    """
    parts = doc.split("/")
    if any(not part for part in parts):
        raise ValueError(
            f"doc: {doc!r} has an empty segment; rule: '/'-separated names, none empty"
        )
    last = len(parts) - 1
    return "/".join(_encode(part, folder=i < last) for i, part in enumerate(parts))


def _decode(body: str, path: str) -> str:
    if _HASHED in body:
        raise ValueError(f"path: {path!r} holds a shortened segment; its name is not recoverable")
    raw = bytearray()
    i = 0
    while i < len(body):
        char = body[i]
        if char == _UPPER and body[i + 1 : i + 2] in _LOWER:
            raw += body[i + 1].upper().encode()
            i += 2
        elif char == _ESCAPE and len(body) >= i + 3 and set(body[i + 1 : i + 3]) <= _HEX:
            raw.append(int(body[i + 1 : i + 3], 16))
            i += 3
        elif char in _PLAIN:
            raw += char.encode()
            i += 1
        else:
            raise ValueError(f"path: {path!r} is not a document's path (at {body[i:]!r})")
    return raw.decode("utf-8", "surrogatepass")


def doc_of(path: str) -> str:
    """The document whose file is at ``path`` (as ``path_of`` gives it).

    Raises ``ValueError`` if ``path`` is not the path of any document, or is one of the
    shortened (hashed) paths.
    """
    parts = path.split("/")
    names = []
    for i, part in enumerate(parts):
        if i < len(parts) - 1:
            if not part.endswith(DIR_SUFFIX):
                raise ValueError(f"path: {path!r}: folder {part!r} does not end in {DIR_SUFFIX}")
            part = part[: -len(DIR_SUFFIX)]  # noqa: PLW2901 - the segment's body
        if not part:
            raise ValueError(f"path: {path!r} has an empty segment")
        try:
            names.append(_decode(part, path))
        except UnicodeDecodeError:
            raise ValueError(f"path: {path!r} escapes bytes that are not UTF-8") from None
    doc = "/".join(names)
    if "/" in "".join(names) or path_of(doc) != path:
        raise ValueError(f"path: {path!r} is not how a document's path is written")
    return doc
