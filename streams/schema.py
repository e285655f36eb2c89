"""The public wire format as typed values: ops, the ingress entry, events, codes.

Stream entries are flat maps of string fields; ``streams.codec`` turns those fields into
these structs at the edge and back. Field names here are the wire names (``from`` is
spelled ``from_`` in Python). Schema evolution: new fields get defaults; a field's type
never changes; a breaking change bumps ``WIRE_VERSION``.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any

import msgspec

__all__ = [
    "WIRE_VERSION",
    "DeadLetter",
    "Delete",
    "HealthResult",
    "HealthStatus",
    "IdRecord",
    "IngressEntry",
    "Insert",
    "Op",
    "Outcome",
    "OutcomeStatus",
    "RejectCode",
    "Replace",
    "Revision",
]

WIRE_VERSION = 1

_LineNo = Annotated[int, msgspec.Meta(extra_json_schema={"minimum": 1})]
_Lines = Annotated[
    tuple[str, ...],
    msgspec.Meta(
        description="Lines of text without their line break; no LF, CR or NUL inside a line.",
    ),
]


class RejectCode(enum.StrEnum):
    """Why a patch was rejected (the ``code`` field of a rejected outcome)."""

    INVALID = "invalid"
    """A malformed entry or op: missing field, wrong type, bad text."""
    BOUNDS = "bounds"
    """A line number outside the document (``1 <= at <= len+1``, ``1 <= from <= to <= len``)."""
    OVERLAP = "overlap"
    """Two ops of one patch touch the same line, or insert at the same position."""
    CONFLICT = "conflict"
    """A line the patch touches was changed by a revision after its base."""
    STALE = "stale"
    """The base is not the head and the document is strict."""
    BASE_AHEAD = "base_ahead"
    """The base revision does not exist yet and did not appear in time."""
    TOO_LARGE = "too_large"
    """A configured limit is exceeded (ops, line bytes, patch bytes, document lines)."""
    DIFF_MISMATCH = "diff_mismatch"
    """A unified diff's context or removed lines differ from the base."""
    ID_REUSE = "id_reuse"
    """A patch id seen before came with a different payload."""


class OutcomeStatus(enum.StrEnum):
    """The one final status every submitted patch gets."""

    COMMITTED = "committed"
    REJECTED = "rejected"
    DUPLICATE = "duplicate"
    NOOP = "noop"


class HealthStatus(enum.StrEnum):
    """Overall verdict of one health probe round."""

    OK = "ok"
    DEGRADED = "degraded"
    FAILING = "failing"


class Insert(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag="insert", tag_field="op"):
    """Insert ``lines`` before line ``at``; ``at = len+1`` appends."""

    at: _LineNo
    lines: Annotated[_Lines, msgspec.Meta(min_length=1)]


class Replace(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag="replace",
    tag_field="op",
):
    """Replace lines ``from..to`` (inclusive; ``to`` defaults to ``from``) with ``lines``."""

    from_: _LineNo = msgspec.field(name="from")
    to: _LineNo | None = None
    lines: _Lines


class Delete(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag="delete", tag_field="op"):
    """Delete lines ``from..to`` (inclusive; ``to`` defaults to ``from``)."""

    from_: _LineNo = msgspec.field(name="from")
    to: _LineNo | None = None


Op = Insert | Replace | Delete


class IngressEntry(msgspec.Struct, frozen=True, kw_only=True):
    """A patch as a client submits it to ``patchlog:patches``.

    On the wire every value is a string: ``base`` in decimal, ``ops`` and ``meta`` as
    JSON text. Exactly one of ``ops`` and ``diff`` is given. Unknown fields are ignored,
    so that newer clients can add fields without breaking older workers.
    """

    doc: Annotated[
        str,
        msgspec.Meta(
            min_length=1,
            max_length=256,
            description=(
                "Document name: 1 to 256 UTF-8 bytes, no control characters, usable as a "
                "relative file path ('/'-separated segments, none empty, '.' or '..')."
            ),
        ),
    ]
    base: Annotated[
        int,
        msgspec.Meta(ge=0, description="Revision the line numbers refer to; 0 is the empty doc."),
    ]
    ops: Annotated[tuple[Op, ...], msgspec.Meta(min_length=1)] | None = None
    diff: (
        Annotated[str, msgspec.Meta(description="Unified diff (diff -u or git diff) of one file.")]
        | None
    ) = None
    id: (
        Annotated[
            str,
            msgspec.Meta(
                min_length=1,
                max_length=128,
                description="Idempotency key, at most 128 UTF-8 bytes.",
            ),
        ]
        | None
    ) = None
    author: Annotated[str, msgspec.Meta(max_length=256)] | None = None
    meta: dict[str, Any] | None = None


class Revision(msgspec.Struct, frozen=True, kw_only=True):
    """One applied patch, as appended to ``patchlog:revisions`` (the truth).

    Written only through ``streams.codec.event_fields``, so the field order here is the
    order on the wire (the commit script appends ``at``).
    """

    doc: str
    rev: int
    id: str
    base: int
    ops: tuple[Op, ...]
    """The ops as applied to revision ``rev - 1``, after rebase, highest line first."""
    lines: int
    """Line count of the new content."""
    hash: str
    """sha256 hex of the new content (see ``streams.content.content_hash``)."""
    prev: str
    """Hash of revision ``rev - 1``."""
    author: str = ""
    src: str = ""
    """Stream id of the ingress entry."""
    at: int = 0
    """Commit time, milliseconds since the epoch (server clock)."""


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """The one final outcome of a submitted patch, in ``patchlog:outcomes``.

    Written through ``streams.codec.event_fields`` (the scripts append ``at``), except the
    answer to a replay, which ``commit.lua`` builds from the id record in this order.
    """

    id: str
    doc: str
    status: OutcomeStatus
    rev: int
    """The revision that applied the patch, or the head at the time of the outcome."""
    code: RejectCode | None = None
    message: str | None = None
    src: str = ""
    entry: dict[str, str] | None = None
    """The submitted fields, for rejections; cut to ``streams.codec.ENTRY_CAP`` bytes."""
    entry_bytes: int | None = None
    """Size of the whole submitted entry, when ``entry`` was cut."""
    entry_sha256: str | None = None
    """Digest of the whole submitted entry, when ``entry`` was cut
    (``streams.codec.entry_digest``)."""
    at: int = 0


class IdRecord(Outcome, frozen=True, kw_only=True):
    """An outcome as JSON in a list, without ``entry``, plus the payload digest: in
    ``<ns>:out:<entry>``, the outcome of one ingress entry (what its submitter waits
    for); in ``<ns>:id:<id>``, the outcome of the patch that owns the id (the
    idempotency record)."""

    digest: str = ""


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """An entry that failed a stage too many times, in ``patchlog:dead``.

    Written through ``streams.codec.event_fields``; the dead-letter script appends ``at``
    after the other fields.
    """

    stage: str
    error: str
    deliveries: int
    entry: dict[str, str]
    """The failed entry's fields, as text; cut to ``streams.codec.ENTRY_CAP`` bytes."""
    entry_bytes: int | None = None
    """Size of the whole failed entry, when ``entry`` was cut."""
    entry_sha256: str | None = None
    """Digest of the whole failed entry, when ``entry`` was cut."""
    at: int
    src: str = ""
    """Id of the failed entry in the stage's stream."""
    consumer: str = ""
    """The consumer that gave up on it."""
    stream: str | None = None
    """The stream the entry was read from (an execute partition's); none in letters of
    versions before partitions: the stage's one stream."""


class HealthResult(msgspec.Struct, frozen=True, kw_only=True):
    """One consolidated probe round, in ``patchlog:health``."""

    status: HealthStatus
    checks: dict[str, Any]
    at: int


def ingress_json_schema() -> dict[str, Any]:
    """JSON Schema (2020-12) of an ingress entry, for clients to validate before XADD.

    It describes the entry's decoded values (``base`` a number, ``ops`` an array); on
    the wire each value is sent as a string, ``ops`` and ``meta`` as JSON text.
    """
    schema = msgspec.json.schema(IngressEntry)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://patchlog.dev/schema/ingress-v{WIRE_VERSION}.json"
    schema["title"] = "patchlog ingress entry"
    schema["description"] = (
        "A patch submitted with XADD to the patches stream. Exactly one of ops and diff. "
        "On the wire every field value is a string: base in decimal, ops and meta as "
        "JSON text. Line numbers also have a configurable upper bound (default 1000001)."
    )
    schema["oneOf"] = [{"required": ["ops"]}, {"required": ["diff"]}]
    return schema
