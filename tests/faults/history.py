"""The history of a run (FAULT-PLAN section 3): what each client did and was told, one
event per line, as Jepsen records operations.

A submission is an ``invoke``, then ``ok`` (XADD returned the entry id: acknowledged),
``fail`` (a definite error: the entry was not added) or ``info`` (a timeout or a lost
connection: it may or may not have been added). A client that waited for its own
outcome records ``told`` with what it was told.
"""

from __future__ import annotations

import enum
import hashlib
import time
from collections.abc import Iterable
from pathlib import Path

import msgspec

__all__ = ["Event", "Kind", "digest", "load", "save"]


class Kind(enum.StrEnum):
    """What an event records."""

    INVOKE = "invoke"
    OK = "ok"
    FAIL = "fail"
    INFO = "info"
    TOLD = "told"


class Event(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One step of one client."""

    t: int
    """Wall clock, ns (the revisions' ``at`` is the server's wall clock, ms)."""
    proc: str
    """The client."""
    kind: Kind
    id: str
    """The patch id (the idempotency key)."""
    doc: str
    base: int = 0
    digest: str = ""
    """sha256 of the payload (doc, base, ops): equal for a resubmission of the same patch."""
    seq: int = 0
    """The patch's place in its client's chain on its own document (1, 2, ...), 0 when not
    chained: the chain's k-th patch must be the document's k-th revision (C5)."""
    entry: str = ""
    """The ingress entry id XADD returned (``ok``)."""
    error: str = ""
    """What went wrong (``fail``, ``info``)."""
    status: str = ""
    """The outcome the client was told (``told``)."""
    rev: int = 0
    code: str = ""


def now_ns() -> int:
    """The wall clock, ns."""
    return time.time_ns()


def digest(doc: str, base: int, ops: bytes) -> str:
    """The payload's sha256 (hex), the same for every resubmission of one patch."""
    return hashlib.sha256(b"%s\0%d\0%s" % (doc.encode(), base, ops)).hexdigest()


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(Event)


def save(events: Iterable[Event], path: Path) -> None:
    """Write ``events`` as JSON lines."""
    with path.open("wb") as out:
        for event in events:
            out.write(_ENCODER.encode(event) + b"\n")


def load(path: Path) -> list[Event]:
    """The events of a JSON-lines file written by ``save``."""
    return [_DECODER.decode(line) for line in path.read_bytes().splitlines() if line]
