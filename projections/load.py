"""Loading a document from the log: a checked snapshot plus the revisions after it.

Used by the execute stage's cache, by time travel and by every read of a document's
content, so that each gets the same fold of the same revisions.
"""

from __future__ import annotations

import msgspec
from redis.asyncio import Redis

from patchlog.projections.fold import fold
from patchlog.projections.patch import from_ops
from patchlog.projections.rebase import Later
from patchlog.streams.content import EMPTY_HASH, content_hash
from patchlog.streams.errors import VerifyFailed
from patchlog.streams.keys import Keys
from patchlog.streams.log import Head, Snapshot, read_head, read_snapshot, revisions_of
from patchlog.streams.schema import Revision

__all__ = ["Loaded", "later_of", "load_content", "read_document"]


class Loaded(msgspec.Struct):
    """A document's content at revision ``rev``, with the recent revisions behind it."""

    rev: int
    hash: str
    lines: list[str]
    history: list[Later]
    """Revisions replayed to get here (ascending), for rebasing patches on older bases."""
    snapshot_rev: int


def later_of(revision: Revision) -> Later:
    """The splices a stored revision applied, for folding and rebasing."""
    return Later(rev=revision.rev, splices=from_ops(revision.ops))


async def load_content(
    redis: Redis, keys: Keys, doc: str, head: Head | None = None, known: Loaded | None = None
) -> Loaded:
    """The content of ``doc`` at its head (or at ``head``), checked against the hash.

    ``known``, an earlier load of the same document, is caught up by the revisions after
    it instead of replaying from the snapshot (what a retrying editor needs). Raises
    ``VerifyFailed`` if replaying the log does not give the head's hash, and
    ``CorruptEntry`` if the log lacks one of the revisions.
    """
    if head is None:
        head = await read_head(redis, keys, doc)
    start = Snapshot(0, EMPTY_HASH, [])
    revisions: list[Revision] | None = None
    snap = None
    if known is not None and known.rev <= head.rev:
        start = Snapshot(known.rev, known.hash, known.lines)
        revisions = await revisions_of(redis, keys, doc, known.rev + 1, head.rev)
    else:
        snap = await read_snapshot(redis, keys, doc)
    if snap is not None and 0 < snap.rev <= head.rev:
        # One read covers the check and the replay: the revision at the snapshot (a
        # snapshot is a cache, used only if it is the logged content there) and after.
        revisions = await revisions_of(redis, keys, doc, snap.rev, head.rev)
        if revisions[0].hash == snap.hash:
            start, revisions = snap, revisions[1:]
        else:
            revisions = None
    if revisions is None:
        revisions = await revisions_of(redis, keys, doc, 1, head.rev)
    lines = list(start.lines)
    history = []
    for revision in revisions:
        later = later_of(revision)
        lines = fold(lines, later.splices)
        history.append(later)
    digest = content_hash(lines)
    if digest != head.hash:
        raise VerifyFailed(
            f"{doc!r} at revision {head.rev}: the log replays to {digest}, the head says "
            f"{head.hash}"
        )
    return Loaded(head.rev, digest, lines, history, start.rev)


async def read_document(redis: Redis, keys: Keys, doc: str) -> tuple[int, list[str]]:
    """The head revision of ``doc`` and its lines (``(0, [])`` for an unknown document)."""
    loaded = await load_content(redis, keys, doc)
    return loaded.rev, loaded.lines
