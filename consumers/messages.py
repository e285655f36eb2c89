"""What normalize hands to execute on the internal stream (msgpack, internal only)."""

from __future__ import annotations

from typing import Any

import msgspec

from patchlog.projections.diff import ParsedDiff
from patchlog.projections.patch import Splice
from patchlog.streams.errors import CorruptEntry

__all__ = ["NORMALIZED_VERSION", "NormalizedPatch", "decode_normalized", "encode_normalized"]

NORMALIZED_VERSION = 1
"""Version of ``NormalizedPatch`` this code writes and reads. Bump it when a change means
that a worker of the old version must not act on the entry (a new field with a default
needs no bump); entries written before the field existed are version 1."""


class NormalizedPatch(msgspec.Struct, frozen=True, array_like=True, kw_only=True):
    """A validated patch: everything execute needs, nothing it must parse again.

    Encoded as an array in field order: new fields go after ``v``, never before it.
    """

    id: str
    """Patch id: the client's ``id``, or the ingress entry id."""
    src: str
    """Ingress entry id."""
    doc: str
    base: int
    digest: str
    """``streams.codec.payload_digest`` of the submitted patch."""
    author: str = ""
    splices: tuple[Splice, ...] = ()
    """Normalized ops, highest line first (empty for a diff)."""
    diff: ParsedDiff | None = None
    """A parsed unified diff, checked against the base by execute."""
    v: int = NORMALIZED_VERSION
    """Version of the writer (``NORMALIZED_VERSION``), so a rolling upgrade tells old
    entries from new ones."""


_V_POSITION = NormalizedPatch.__struct_fields__.index("v")  # in the encoded array
_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(NormalizedPatch)


def encode_normalized(patch: NormalizedPatch) -> bytes:
    """msgpack bytes of a normalized patch."""
    return _ENCODER.encode(patch)


def decode_normalized(data: bytes) -> NormalizedPatch:
    """Decode a normalized patch of version ``NORMALIZED_VERSION``.

    Raises ``CorruptEntry`` naming the version seen and the one supported, for an entry
    of another version (a newer normalize during a rolling upgrade) or damaged data.
    """
    try:
        patch = _DECODER.decode(data)
    except msgspec.MsgspecError as err:
        raise CorruptEntry(
            f"normalized entry of version {_version_of(data)} does not decode ({err}); "
            f"this worker reads version {NORMALIZED_VERSION}"
        ) from None
    if patch.v != NORMALIZED_VERSION:
        raise CorruptEntry(
            f"normalized entry of version {patch.v}; this worker reads version {NORMALIZED_VERSION}"
        )
    return patch


def _version_of(data: bytes) -> str:
    """The version an undecodable entry claims, as text, for the error message."""
    try:
        raw: Any = msgspec.msgpack.decode(data)
    except msgspec.MsgspecError:
        return "unknown (not msgpack)"
    if isinstance(raw, list) and len(raw) > _V_POSITION and isinstance(raw[_V_POSITION], int):
        return str(raw[_V_POSITION])
    return "unknown"
