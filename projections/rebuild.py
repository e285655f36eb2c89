"""Rebuild every document from the revision log: check the chain, compare the live state.

One pass over ``patchlog:revisions`` folds every document (the same ``fold`` execute and
every read use). ``verify`` reports the first broken revision of each document (a gap,
a ``prev`` that is not the previous hash, content that does not hash to ``hash``).
``rebuild`` also compares what is derived from the log (heads, snapshots, checkpoints,
the set of documents) and can rewrite what differs, from the log.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
from redis.asyncio import Redis

from patchlog.projections.fold import fold_revision
from patchlog.streams.content import EMPTY_HASH, content_hash
from patchlog.streams.errors import KeyChanged
from patchlog.streams.keys import Keys
from patchlog.streams.log import (
    checked_snapshot,
    iter_revisions,
    read_heads,
    write_checkpoints,
    write_snapshot,
)
from patchlog.streams.schema import Revision

__all__ = ["Difference", "Progress", "RebuildReport", "Rebuilt", "fold_log", "rebuild", "verify"]

Progress = Callable[[int], None]
"""Called now and then with the number of revisions folded so far."""

_PROGRESS_EVERY = 10_000


class Rebuilt(msgspec.Struct):
    """One document as the log folds it."""

    rev: int = 0
    hash: str = EMPTY_HASH
    lines: list[str] = msgspec.field(default_factory=list)
    src: str = ""
    broken: str | None = None
    """The first broken revision of the chain, described; ``None`` if it holds."""


class Difference(msgspec.Struct, frozen=True):
    """One thing the live state says otherwise than the log."""

    doc: str
    what: str
    """``head``, ``snapshot``, ``checkpoint``, ``chain`` or ``docs``."""
    rev: int
    message: str
    repaired: bool = False


class RebuildReport(msgspec.Struct):
    """What a pass found; ``ok`` when there are no differences (missing checkpoints
    only slow time travel down: they are counted, and ``--repair`` writes them)."""

    documents: int
    revisions: int
    differences: list[Difference]
    missing: list[Difference] = msgspec.field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether the log and the live state agree everywhere."""
        return not self.differences


class _Copies(msgspec.Struct):
    """The hashes a document's cached copies claim, by revision (``None``: unreadable)."""

    snapshot: tuple[int, str | None] | None = None
    checkpoints: dict[int, str | None] = msgspec.field(default_factory=dict)


def _claimed(raw: bytes) -> str | None:
    """The hash a stored copy holds if it decodes and its lines hash to it."""
    snap = checked_snapshot(raw)
    return None if snap is None else snap.hash


def _step(doc: Rebuilt, name: str, stream_id: str, revision: Revision) -> None:
    """Fold one revision onto ``doc``, noting the first way the chain breaks."""
    where = f"{name!r} revision {revision.rev} ({stream_id})"
    problem = None
    if revision.rev != doc.rev + 1:
        problem = f"{where}: follows revision {doc.rev}; rule: revisions are gap-free"
    elif revision.prev != doc.hash:
        problem = f"{where}: prev {revision.prev[:12]} is not revision {doc.rev}'s {doc.hash[:12]}"
    doc.lines = fold_revision(doc.lines, revision)
    doc.hash = content_hash(doc.lines)
    doc.rev, doc.src = revision.rev, revision.src
    if problem is None and doc.hash != revision.hash:
        problem = (
            f"{where}: its ops give content hashing to {doc.hash[:12]}, "
            f"it records {revision.hash[:12]}"
        )
    if problem is None and len(doc.lines) != revision.lines:
        problem = f"{where}: its ops give {len(doc.lines)} lines, it records {revision.lines}"
    if problem is not None and doc.broken is None:
        doc.broken = problem


async def fold_log(
    redis: Redis,
    keys: Keys,
    progress: Progress | None = None,
    at_rev: Callable[[str, int, Rebuilt], None] | None = None,
    until_ms: int | None = None,
) -> dict[str, Rebuilt]:
    """Fold the whole revision log (or what was committed until ``until_ms``) into
    documents in one pass, checking the chain as it goes; ``at_rev(doc, rev, state)``
    sees every document after each of its revisions."""
    docs: dict[str, Rebuilt] = {}
    count = 0
    async for stream_id, revision in iter_revisions(redis, keys):
        if until_ms is not None and int(stream_id.split("-")[0]) > until_ms:
            break
        doc = docs.get(revision.doc)
        if doc is None:
            doc = docs[revision.doc] = Rebuilt()
        _step(doc, revision.doc, stream_id, revision)
        if at_rev is not None:
            at_rev(revision.doc, revision.rev, doc)
        count += 1
        if progress is not None and count % _PROGRESS_EVERY == 0:
            progress(count)
    if progress is not None:
        progress(count)
    return docs


async def verify(redis: Redis, keys: Keys, progress: Progress | None = None) -> RebuildReport:
    """Check every document's revision chain; one difference per broken document,
    naming its first broken revision."""
    docs = await fold_log(redis, keys, progress)
    broken = [
        Difference(name, "chain", 0, doc.broken)
        for name, doc in sorted(docs.items())
        if doc.broken is not None
    ]
    return RebuildReport(len(docs), sum(d.rev for d in docs.values()), broken)


async def _copies(redis: Redis, keys: Keys, names: list[str]) -> dict[str, _Copies]:
    """Every document's snapshot and checkpoints, reduced to the hashes they claim."""
    out: dict[str, _Copies] = {}
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.get(keys.snapshot(name))
            pipe.hgetall(keys.checkpoints(name))
        replies: list[Any] = await pipe.execute()
    for i, name in enumerate(names):
        snap_raw, checkpoints = replies[2 * i], replies[2 * i + 1]
        copies = _Copies()
        if snap_raw is not None:
            snap = checked_snapshot(snap_raw)
            copies.snapshot = (0, None) if snap is None else (snap.rev, snap.hash)
        for field, raw in checkpoints.items():
            copies.checkpoints[int(field) if field.isdigit() else -1] = _claimed(raw)
        out[name] = copies
    return out


async def rebuild(
    redis: Redis,
    keys: Keys,
    *,
    every: int,
    repair: bool = False,
    progress: Progress | None = None,
) -> RebuildReport:
    """Fold the log and compare every document's head, snapshot and checkpoints (one at
    each multiple of ``every``) and the set of documents with it.

    With ``repair``, what differs is rewritten from the log: a head only if it did not
    change during the pass (a running pipeline's commit wins; rerun to check again).
    """
    members: Any = await redis.smembers(keys.docs)
    listed = {m.decode() for m in members}
    copies = await _copies(redis, keys, sorted(listed))
    differences: list[Difference] = []
    missing: list[Difference] = []
    fixes: list[tuple[str, int, list[str]]] = []

    def check(name: str, rev: int, state: Rebuilt) -> None:
        mine = copies.get(name, _Copies())
        if rev % every == 0 and mine.checkpoints.get(rev) != state.hash:
            found = "missing" if rev not in mine.checkpoints else "not the logged content"
            message = f"{name!r}: checkpoint at revision {rev} {found}"
            into = missing if rev not in mine.checkpoints else differences
            into.append(Difference(name, "checkpoint", rev, message))
            fixes.append((name, rev, list(state.lines)))
        if mine.snapshot is not None and mine.snapshot[0] == rev and mine.snapshot[1] != state.hash:
            differences.append(
                Difference(
                    name,
                    "snapshot",
                    rev,
                    f"{name!r}: snapshot at revision {rev} is not the logged content",
                )
            )

    docs = await fold_log(redis, keys, progress, check)
    heads = await read_heads(redis, keys, sorted(listed | set(docs)))
    for name, head in heads.items():
        built = docs.get(name, Rebuilt())
        if built.broken is not None:
            differences.append(Difference(name, "chain", 0, built.broken))
        if name not in listed:
            differences.append(
                Difference(name, "docs", built.rev, f"{name!r}: not in the set of documents")
            )
        if (head.rev, head.hash, head.lines) != (built.rev, built.hash, len(built.lines)):
            differences.append(
                Difference(
                    name,
                    "head",
                    built.rev,
                    f"{name!r}: live head is revision {head.rev} ({head.hash[:12]}, "
                    f"{head.lines} lines), the log gives {built.rev} ({built.hash[:12]}, "
                    f"{len(built.lines)} lines)",
                )
            )
        snap = copies.get(name, _Copies()).snapshot
        if snap is not None and (snap[1] is None or snap[0] > built.rev):
            differences.append(
                Difference(
                    name,
                    "snapshot",
                    snap[0],
                    f"{name!r}: snapshot at revision {snap[0]} is unreadable or past the log",
                )
            )
    if repair:
        differences = await _repair(redis, keys, differences, docs, fixes)
        missing = [msgspec.structs.replace(d, repaired=True) for d in missing]
    return RebuildReport(len(heads), sum(d.rev for d in docs.values()), differences, missing)


async def _repair(
    redis: Redis,
    keys: Keys,
    differences: list[Difference],
    docs: dict[str, Rebuilt],
    fixes: list[tuple[str, int, list[str]]],
) -> list[Difference]:
    """Rewrite heads, snapshots, checkpoints and the document set from the log; the
    differences, each marked ``repaired`` when it was."""
    await write_checkpoints(redis, keys, fixes)
    out = []
    for d in differences:
        built = docs.get(d.doc, Rebuilt())
        done = d.what == "checkpoint"
        if d.what == "docs":
            await redis.sadd(keys.docs, d.doc)
            done = True
        elif d.what == "snapshot" and built.broken is None:
            await write_snapshot(redis, keys, d.doc, built.rev, built.lines)
            done = True
        elif d.what == "head" and built.broken is None:
            done = await _repair_head(redis, keys, d.doc, built)
        out.append(msgspec.structs.replace(d, repaired=done))
    return out


async def _repair_head(redis: Redis, keys: Keys, name: str, built: Rebuilt) -> bool:
    """Set ``name``'s head to the log's, unless the document got a revision after the
    pass (its index is longer) or does while this runs (WATCH): a running pipeline's
    commit is never overwritten."""
    key, index = keys.doc(name), keys.index(name)
    try:
        async with redis.pipeline(transaction=True) as pipe:
            await pipe.watch(key, index)
            if int(await pipe.llen(index)) != built.rev:
                return False
            pipe.multi()  # type: ignore[no-untyped-call]
            pipe.hset(
                key,
                mapping={
                    "rev": built.rev,
                    "hash": built.hash,
                    "lines": len(built.lines),
                    "src": built.src,
                },
            )
            await pipe.execute()
    except KeyChanged:
        return False
    return True
