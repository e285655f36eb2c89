"""What normalize hands to execute on the internal stream (msgpack, internal only)."""

from __future__ import annotations

import msgspec

from patchlog.projections.diff import ParsedDiff
from patchlog.projections.patch import Splice

__all__ = ["NormalizedPatch", "decode_normalized", "encode_normalized"]


class NormalizedPatch(msgspec.Struct, frozen=True, array_like=True, kw_only=True):
    """A validated patch: everything execute needs, nothing it must parse again."""

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


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(NormalizedPatch)


def encode_normalized(patch: NormalizedPatch) -> bytes:
    """msgpack bytes of a normalized patch."""
    return _ENCODER.encode(patch)


def decode_normalized(data: bytes) -> NormalizedPatch:
    """Decode a normalized patch; raises ``msgspec.DecodeError`` on corrupt data."""
    return _DECODER.decode(data)
