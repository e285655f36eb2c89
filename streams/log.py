"""Reading the log: document heads, revisions by document, cached snapshots.

A document's content is not stored whole in the commit: it is the fold of its revisions,
which is projection work (``patchlog.projections.load``). This module only reads and
writes what the log holds, decoded and checked.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import msgspec
from redis.asyncio import Redis

from patchlog.streams.codec import decode_event
from patchlog.streams.content import EMPTY_HASH, content_hash
from patchlog.streams.errors import CorruptEntry
from patchlog.streams.keys import Keys
from patchlog.streams.schema import Op, Revision

__all__ = [
    "Head",
    "Snapshot",
    "checked_snapshot",
    "iter_revisions",
    "read_checkpoint",
    "read_head",
    "read_heads",
    "read_snapshot",
    "read_strict",
    "revisions_of",
    "revisions_since",
    "write_checkpoints",
    "write_snapshot",
]

_PAGE = 1000


class Head(msgspec.Struct, frozen=True):
    """A document's head as the commit script keeps it."""

    rev: int = 0
    hash: str = EMPTY_HASH
    lines: int = 0
    src: str = ""
    """Ingress id of the patch that made this revision (empty for revision 0, and for
    heads written before it was kept): with ``rev`` it names the revision exactly,
    where equal content reached through other revisions has the same hash."""


class Snapshot(msgspec.Struct, frozen=True, array_like=True):
    """A cached copy of a document's content at revision ``rev`` (a cache, not the truth)."""

    rev: int
    hash: str
    lines: list[str]


_HEAD_FIELDS = ["rev", "hash", "lines", "src"]
_SNAP_ENCODER = msgspec.msgpack.Encoder()
_SNAP_DECODER = msgspec.msgpack.Decoder(Snapshot)


def _head(raw: Sequence[bytes | None]) -> Head:
    rev, digest, lines, src = raw
    if rev is None:
        return Head()
    return Head(int(rev), (digest or b"").decode(), int(lines or 0), (src or b"").decode())


async def read_head(redis: Redis, keys: Keys, doc: str) -> Head:
    """The head of ``doc`` (revision 0, the empty document, if it has none)."""
    raw: Any = await redis.hmget(keys.doc(doc), _HEAD_FIELDS)
    return _head(raw)


async def read_heads(redis: Redis, keys: Keys, docs: Sequence[str]) -> dict[str, Head]:
    """Heads of several documents in one round trip (none for no documents)."""
    if not docs:
        return {}
    async with redis.pipeline(transaction=False) as pipe:
        for doc in docs:
            pipe.hmget(keys.doc(doc), _HEAD_FIELDS)
        replies = await pipe.execute()
    return {doc: _head(raw) for doc, raw in zip(docs, replies, strict=True)}


async def revisions_of(redis: Redis, keys: Keys, doc: str, first: int, last: int) -> list[Revision]:
    """Revisions ``first..last`` (inclusive, 1-based) of ``doc``, in order.

    Raises ``CorruptEntry`` if the index or the revisions stream lacks one of them.
    """
    out: list[Revision] = []
    for start in range(first, last + 1, _PAGE):
        stop = min(last, start + _PAGE - 1)
        out += (await revisions_since(redis, keys, {doc: (start, stop)}))[doc]
    return out


def _checked(doc: str, rev: int, reply: Any) -> Revision:
    """Revision ``rev`` of ``doc`` from an XRANGE reply; raises ``CorruptEntry``."""
    if not reply:
        raise CorruptEntry(f"revision {rev} of {doc!r} is missing from the log")
    revision = decode_event(Revision, reply[0][1])
    if revision.rev != rev or revision.doc != doc:
        raise CorruptEntry(f"index of {doc!r} points revision {rev} at {revision.rev}")
    return revision


async def revisions_since(
    redis: Redis, keys: Keys, spans: dict[str, tuple[int, int]]
) -> dict[str, list[Revision]]:
    """Revisions ``first..last`` of several documents (``spans``: doc -> (first, last)),
    in two round trips whatever their number; for short spans (catching up a cache).

    Raises ``CorruptEntry`` if an index or the revisions stream lacks one of them.
    """
    wanted = [(doc, first, last) for doc, (first, last) in spans.items() if last >= first]
    if not wanted:
        return {}
    async with redis.pipeline(transaction=False) as pipe:
        for doc, first, last in wanted:
            pipe.lrange(keys.index(doc), first - 1, last - 1)
        indexes: list[Any] = await pipe.execute()
    for (doc, first, last), ids in zip(wanted, indexes, strict=True):
        if len(ids) != last - first + 1:
            raise CorruptEntry(f"index of {doc!r} lacks revisions {first}..{last}")
    async with redis.pipeline(transaction=False) as pipe:
        for ids in indexes:
            for stream_id in ids:
                pipe.xrange(keys.revisions, stream_id, stream_id)
        replies: list[Any] = await pipe.execute()
    out: dict[str, list[Revision]] = {}
    position = 0
    for (doc, first, _), ids in zip(wanted, indexes, strict=True):
        chunk = replies[position : position + len(ids)]
        out[doc] = [_checked(doc, rev, reply) for rev, reply in enumerate(chunk, first)]
        position += len(ids)
    return out


def checked_snapshot(raw: bytes) -> Snapshot | None:
    """A stored snapshot or checkpoint if it decodes and its lines hash to its hash."""
    try:
        snap = _SNAP_DECODER.decode(raw)
    except msgspec.DecodeError:
        return None
    return snap if content_hash(snap.lines) == snap.hash else None


async def read_snapshot(redis: Redis, keys: Keys, doc: str) -> Snapshot | None:
    """``doc``'s cached snapshot if there is one that decodes and matches its own hash.

    Whether it is the logged content at its revision is the caller's to check against
    the revision there.
    """
    raw: Any = await redis.get(keys.snapshot(doc))
    return None if raw is None else checked_snapshot(raw)


async def write_snapshot(redis: Redis, keys: Keys, doc: str, rev: int, lines: list[str]) -> None:
    """Cache ``doc``'s content at ``rev``; readers check its hash before trusting it."""
    await redis.set(
        keys.snapshot(doc), _SNAP_ENCODER.encode(Snapshot(rev, content_hash(lines), lines))
    )


async def write_checkpoints(
    redis: Redis, keys: Keys, rows: Sequence[tuple[str, int, list[str]]]
) -> None:
    """Keep each ``(doc, rev, lines)`` as a checkpoint of ``doc`` at ``rev`` (one round
    trip); readers check its hash against the logged revision before trusting it."""
    if not rows:
        return
    async with redis.pipeline(transaction=False) as pipe:
        for doc, rev, lines in rows:
            snap = Snapshot(rev, content_hash(lines), lines)
            pipe.hset(keys.checkpoints(doc), str(rev), _SNAP_ENCODER.encode(snap))
        await pipe.execute()


async def read_checkpoint(
    redis: Redis, keys: Keys, doc: str, at_most: int, every: int
) -> Snapshot | None:
    """The checkpoint of ``doc`` with the highest revision at most ``at_most``: the one
    at the multiple of ``every`` just below it when it exists (one round trip), else the
    best of the others (two); ``None`` if there is none that decodes and matches its hash.
    """
    key = keys.checkpoints(doc)
    nearest = at_most - at_most % every
    raw: Any = await redis.hget(key, str(nearest)) if nearest > 0 else None
    if raw is None:
        fields: Any = await redis.hkeys(key)
        below = [int(f) for f in fields if f.isdigit() and 0 < int(f) <= at_most]
        if not below:
            return None
        raw = await redis.hget(key, str(max(below)))
    return None if raw is None else checked_snapshot(raw)


_OPS = msgspec.json.Decoder(tuple[Op, ...])


def _revision(fields: dict[bytes, bytes]) -> Revision:
    """A revision from its reply's fields: read directly (the fast path of a pass over
    the log), or, when that fails, by ``decode_event`` for the error naming the field."""
    try:
        return Revision(
            doc=fields[b"doc"].decode(),
            rev=int(fields[b"rev"]),
            id=fields[b"id"].decode(),
            base=int(fields[b"base"]),
            ops=_OPS.decode(fields[b"ops"]),
            lines=int(fields[b"lines"]),
            hash=fields[b"hash"].decode(),
            prev=fields[b"prev"].decode(),
            author=fields.get(b"author", b"").decode(),
            src=fields.get(b"src", b"").decode(),
            at=int(fields.get(b"at", 0)),
        )
    except (KeyError, ValueError, msgspec.MsgspecError):
        return decode_event(Revision, fields)


async def iter_revisions(
    redis: Redis, keys: Keys, start: str = "-", page: int = _PAGE
) -> AsyncIterator[tuple[str, Revision]]:
    """Every revision of every document in log order, from stream id ``start``.

    Raises ``CorruptEntry`` naming the field of a revision that does not decode.
    """

    async def fetch(cursor: str) -> list[tuple[str, Revision]]:
        reply: Any = await redis.xrange(keys.revisions, cursor, "+", count=page)
        return [(stream_id.decode(), _revision(fields)) for stream_id, fields in reply]

    rows = await fetch(start)
    while True:
        # The server reads the next page while this one is folded.
        ahead = asyncio.ensure_future(fetch("(" + rows[-1][0])) if len(rows) == page else None
        try:
            for row in rows:
                yield row
        except BaseException:  # the reader stopped early (or failed): drop the read ahead
            if ahead is not None:
                ahead.cancel()
            raise
        if ahead is None:
            return
        rows = await ahead


_ON = (b"1", b"on", b"true")


async def read_strict(
    redis: Redis, keys: Keys, docs: Sequence[str], default: bool = False
) -> dict[str, bool]:
    """Whether each of ``docs`` is in strict mode, in one round trip: its own entry in
    the strict hash if it has one, else the namespace's ``*`` entry, else ``default``
    (the ``strict`` setting). Read afresh by every decision, so that an ``HSET`` holds
    for every patch decided after it returned."""
    names = list(dict.fromkeys(docs))
    raw: Any = await redis.hmget(keys.strict, ["*", *names])
    fallback = default or raw[0] in _ON
    return {
        name: fallback if value is None else value in _ON
        for name, value in zip(names, raw[1:], strict=True)
    }
