"""The log layer: wire schemas, codecs, limits and errors."""

from streams.codec import decode_event, decode_ingress, encode_event, entry_text
from streams.errors import CorruptEntry, PatchlogError, Rejected
from streams.limits import Limits
from streams.schema import (
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
    "decode_event",
    "decode_ingress",
    "encode_event",
    "entry_text",
]
