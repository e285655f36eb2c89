"""Time travel and history: a document at any revision or time, and its revision list.

Reaching revision N starts from the document's checkpoint at the multiple of
``snapshot_every`` just below N (execute writes one there as it commits; ``rebuild
--repair`` fills the ones missing), or from its latest snapshot if that is closer, so it
replays fewer than ``snapshot_every`` revisions whatever the length of the log.
"""

from __future__ import annotations

from typing import Any

import msgspec
from redis.asyncio import Redis

from patchlog.projections.fold import fold_revision
from patchlog.projections.load import later_of
from patchlog.streams.content import EMPTY_HASH, content_hash
from patchlog.streams.errors import NotFound, VerifyFailed
from patchlog.streams.keys import Keys
from patchlog.streams.log import (
    Head,
    Snapshot,
    read_checkpoint,
    read_head,
    read_heads,
    read_snapshot,
    revisions_of,
)
from patchlog.streams.schema import Revision

__all__ = [
    "AtRevision",
    "DocInfo",
    "LogRow",
    "at_revision",
    "documents",
    "history",
    "log_row",
    "rev_at_time",
]


class AtRevision(msgspec.Struct, frozen=True):
    """A document's content at one revision, with what identifies that revision."""

    doc: str
    rev: int
    hash: str
    at: int
    """Commit time of the revision, milliseconds since the epoch (0 for revision 0)."""
    lines: list[str]
    replayed: int = 0
    """Revisions folded to get here from the checkpoint or snapshot it started at."""


class LogRow(msgspec.Struct, frozen=True):
    """One revision as ``patchlog log`` lists it."""

    rev: int
    at: int
    """Commit time, milliseconds since the epoch."""
    author: str
    id: str
    added: int
    """Lines the revision's ops insert (a replaced line counts as removed and added)."""
    removed: int
    lines: int
    hash: str
    base: int


async def _existing(redis: Redis, keys: Keys, doc: str) -> Head:
    head = await read_head(redis, keys, doc)
    if head.rev == 0:
        # Not the empty document: a name nobody wrote to is most likely a typo or the
        # wrong server, and printing nothing would read as "my document is empty".
        raise NotFound(f"no document {doc!r}: no patch was ever committed to it")
    return head


async def at_revision(
    redis: Redis, keys: Keys, doc: str, rev: int | None = None, *, every: int = 100
) -> AtRevision:
    """``doc`` at revision ``rev`` (its head when ``None``), replaying fewer than
    ``every`` (``snapshot_every``) revisions when its checkpoints are complete.

    Raises ``NotFound`` if ``doc`` has no revisions or ``rev`` is negative or past the
    head, ``VerifyFailed`` if the replay does not give the logged hash, ``CorruptEntry``
    if the log lacks a revision.
    """
    head = await _existing(redis, keys, doc)
    target = head.rev if rev is None else rev
    if target < 0 or target > head.rev:
        raise NotFound(f"{doc!r} has revisions 0..{head.rev}; there is no revision {target}")
    if target == 0:
        return AtRevision(doc, 0, EMPTY_HASH, 0, [])
    starts = [
        s
        for s in (
            await read_snapshot(redis, keys, doc),
            await read_checkpoint(redis, keys, doc, target, every),
        )
        if s is not None and 0 < s.rev <= target
    ]
    start = Snapshot(0, EMPTY_HASH, [])
    revisions: list[Revision] = []
    if starts:
        best = max(starts, key=lambda s: s.rev)
        # The revision at the start comes along: its hash vouches for the copy (a
        # checkpoint is a cache), and its time is the answer when nothing is replayed.
        revisions = await revisions_of(redis, keys, doc, best.rev, target)
        if revisions[0].hash == best.hash:
            start = best
        else:
            revisions = []
    if start.rev == 0:
        revisions = await revisions_of(redis, keys, doc, 1, target)
    replay = revisions[1:] if start.rev else revisions
    lines = list(start.lines)
    for revision in replay:
        lines = fold_revision(lines, revision)
    last = revisions[-1]
    digest = content_hash(lines)
    if digest != last.hash:
        raise VerifyFailed(
            f"{doc!r} at revision {target}: the log replays to {digest}, revision "
            f"{target} records {last.hash}"
        )
    return AtRevision(doc, target, digest, last.at, lines, len(replay))


async def rev_at_time(redis: Redis, keys: Keys, doc: str, when_ms: int) -> int:
    """The revision ``doc`` was at at ``when_ms`` (milliseconds since the epoch): the last
    one whose commit time (``at``) is at or before it, 0 if none is. A binary search:
    ``log2(revisions)`` reads of one revision each.

    Raises ``NotFound`` if ``doc`` has no revisions.
    """
    head = await _existing(redis, keys, doc)
    low, high = 0, head.rev  # revision ``low`` is at or before the time; ``high + 1`` after
    while low < high:
        mid = (low + high + 1) // 2
        (revision,) = await revisions_of(redis, keys, doc, mid, mid)
        if revision.at <= when_ms:
            low = mid
        else:
            high = mid - 1
    return low


def log_row(revision: Revision) -> LogRow:
    """A revision's row: who, when, and how many lines it added and removed."""
    splices = later_of(revision).splices
    return LogRow(
        rev=revision.rev,
        at=revision.at,
        author=revision.author,
        id=revision.id,
        added=sum(len(s.lines) for s in splices),
        removed=sum(s.end - s.start for s in splices),
        lines=revision.lines,
        hash=revision.hash,
        base=revision.base,
    )


async def history(redis: Redis, keys: Keys, doc: str, limit: int | None = 50) -> list[LogRow]:
    """``doc``'s revisions, newest first (the newest ``limit``, or all when ``None``).

    Raises ``NotFound`` if ``doc`` has no revisions.
    """
    head = await _existing(redis, keys, doc)
    first = 1 if limit is None else max(1, head.rev - limit + 1)
    return [log_row(r) for r in reversed(await revisions_of(redis, keys, doc, first, head.rev))]


class DocInfo(msgspec.Struct, frozen=True):
    """One document as ``patchlog ls`` lists it."""

    doc: str
    rev: int
    lines: int
    at: int
    """Commit time of its head revision, milliseconds since the epoch."""


async def documents(redis: Redis, keys: Keys, prefix: str = "") -> list[DocInfo]:
    """Every document whose name starts with ``prefix``, by name, with its head revision,
    line count and last change; three round trips per 1,000 documents."""
    pattern = _glob_escape(prefix) + "*"
    names = sorted(
        [m.decode() async for m in redis.sscan_iter(keys.docs, match=pattern, count=1000)]
    )
    out: list[DocInfo] = []
    for i in range(0, len(names), 1000):
        page = names[i : i + 1000]
        heads = await read_heads(redis, keys, page)
        async with redis.pipeline(transaction=False) as pipe:
            for name in page:
                pipe.lindex(keys.index(name), -1)
            last: list[Any] = await pipe.execute()
        for name, raw in zip(page, last, strict=True):
            at = int(raw.split(b"-")[0]) if raw else 0
            out.append(DocInfo(name, heads[name].rev, heads[name].lines, at))
    return out


def _glob_escape(text: str) -> str:
    """``text`` matched literally by a Redis glob pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
