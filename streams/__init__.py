"""The log layer: wire schemas, codecs, the content hash, limits and errors."""

from patchlog.streams.codec import decode_event, decode_ingress, encode_event, entry_text
from patchlog.streams.content import EMPTY_HASH, content_bytes, content_hash, split_lines
from patchlog.streams.errors import CorruptEntry, PatchlogError, Rejected
from patchlog.streams.limits import Limits
from patchlog.streams.schema import (
    DeadLetter,
    Delete,
    HealthResult,
    HealthStatus,
    IngressEntry,
    Insert,
    Op,
    Outcome,
    OutcomeStatus,
    RejectCode,
    Replace,
    Revision,
)

__all__ = [
    "EMPTY_HASH",
    "CorruptEntry",
    "DeadLetter",
    "Delete",
    "HealthResult",
    "HealthStatus",
    "IngressEntry",
    "Insert",
    "Limits",
    "Op",
    "Outcome",
    "OutcomeStatus",
    "PatchlogError",
    "RejectCode",
    "Rejected",
    "Replace",
    "Revision",
    "content_bytes",
    "content_hash",
    "decode_event",
    "decode_ingress",
    "encode_event",
    "entry_text",
    "split_lines",
]
