"""What the server holds once a run has quiesced, read once for the checker: ingress
entries, outcomes, revisions (folded and checked), heads, queues and dead letters."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import msgspec
from redis.asyncio import Redis

from patchlog.projections.paths import path_of
from patchlog.projections.rebuild import fold_log
from patchlog.streams.codec import decode_event
from patchlog.streams.keys import EXECUTE, NORMALIZE, Keys
from patchlog.streams.log import iter_revisions, read_heads
from patchlog.streams.schema import DeadLetter, Outcome

__all__ = ["Applied", "Folded", "Said", "State", "read_state"]

_PAGE = 5000


class Applied(msgspec.Struct, frozen=True):
    """One revision: which patch made it, where and when."""

    stream_id: str
    doc: str
    rev: int
    id: str
    src: str
    at: int
    """Server wall clock, ms."""


class Said(msgspec.Struct, frozen=True):
    """One outcome."""

    src: str
    id: str
    doc: str
    status: str
    rev: int
    code: str
    message: str = ""


class Folded(msgspec.Struct, frozen=True):
    """A document as the log folds it, and as the live state and the projection say."""

    rev: int
    hash: str
    lines: list[str]
    broken: str | None
    """The chain's first break, ``None`` when it holds."""
    head_rev: int
    head_hash: str
    index: int
    """Length of the document's revision index."""
    projected: str | None = None
    """Content hash of the projector's file, ``None`` without a projector."""


class State(msgspec.Struct):
    """Everything the checker reads from the server."""

    ingress: dict[str, tuple[str, str]]
    """Ingress entry id -> (patch id, document), for every entry still in the stream."""
    ingress_trimmed: bool
    """Whether retention trimmed the ingress stream (then entries may be missing)."""
    outcomes: list[Said]
    applied: list[Applied]
    docs: dict[str, Folded]
    pending: dict[str, int]
    """Group -> entries delivered and not acknowledged."""
    lag: dict[str, int]
    dead: list[DeadLetter]
    max_deliveries: int
    """Highest delivery count among dead letters (0 without any)."""


async def _stream(redis: Redis, key: str) -> list[tuple[str, dict[bytes, bytes]]]:
    out: list[tuple[str, dict[bytes, bytes]]] = []
    cursor = "-"
    while True:
        page: Any = await redis.xrange(key, cursor, "+", count=_PAGE)
        out += [(sid.decode(), fields) for sid, fields in page]
        if len(page) < _PAGE:
            return out
        cursor = "(" + out[-1][0]


def _text(fields: dict[bytes, bytes], name: bytes) -> str:
    return fields.get(name, b"").decode("utf-8", "replace")


def streams_of(keys: Keys) -> list[tuple[str, str]]:
    """(stream, group) of every stream a stage group reads: the execute partitions too."""
    return [(s, g) for g in (NORMALIZE, EXECUTE) for s in keys.group_streams(g)]


async def read_state(redis: Redis, keys: Keys, projected: Path | None = None) -> State:
    """Read the state of namespace ``keys``; ``projected``: the projector's folder."""
    ingress = {
        sid: (_text(f, b"id"), _text(f, b"doc")) for sid, f in await _stream(redis, keys.patches)
    }
    info: Any = await redis.xinfo_stream(keys.patches) if await redis.exists(keys.patches) else {}
    first = (info.get("first-entry") or [b"0-0"])[0] if info else b"0-0"
    trimmed = int((info or {}).get("entries-added", len(ingress))) > len(ingress) or (
        first != b"0-0" and bool(ingress) and min(ingress) != first.decode()
    )
    outcomes = []
    for _, fields in await _stream(redis, keys.outcomes):
        said = decode_event(Outcome, fields)
        outcomes.append(
            Said(
                said.src,
                said.id,
                said.doc,
                said.status.value,
                said.rev,
                said.code.value if said.code else "",
                (said.message or "")[:300],
            )
        )
    applied = [
        Applied(sid, r.doc, r.rev, r.id, r.src, r.at)
        async for sid, r in iter_revisions(redis, keys)
    ]
    folded = await fold_log(redis, keys)
    heads = await read_heads(redis, keys, sorted(folded))
    docs: dict[str, Folded] = {}
    for name, doc in folded.items():
        head = heads[name]
        projected_hash = None
        if projected is not None:
            path = projected / path_of(name)
            projected_hash = hashlib.sha256(path.read_bytes() if path.exists() else b"").hexdigest()
        docs[name] = Folded(
            rev=doc.rev,
            hash=doc.hash,
            lines=doc.lines,
            broken=doc.broken,
            head_rev=head.rev,
            head_hash=head.hash,
            index=int(await redis.llen(keys.index(name))),
            projected=projected_hash,
        )
    pending: dict[str, int] = {}
    lag: dict[str, int] = {}
    for stream, group in streams_of(keys):
        groups: Any = await redis.xinfo_groups(stream) if await redis.exists(stream) else []
        for g in groups:
            if g["name"].decode() == group:
                pending[group] = pending.get(group, 0) + int(g["pending"])
                lag[group] = lag.get(group, 0) + int(g.get("lag") or 0)
    dead = [decode_event(DeadLetter, f) for _, f in await _stream(redis, keys.dead)]
    return State(
        ingress=ingress,
        ingress_trimmed=trimmed,
        outcomes=outcomes,
        applied=applied,
        docs=docs,
        pending=pending,
        lag=lag,
        dead=dead,
        max_deliveries=max((d.deliveries for d in dead), default=0),
    )
