"""Rebuild every document from the revision log, and verify the live state against it."""

from __future__ import annotations

from typing import Any

import msgspec
from redis.asyncio import Redis

from patchlog.projections.fold import fold
from patchlog.projections.patch import from_ops
from patchlog.streams.content import EMPTY_HASH, content_hash
from patchlog.streams.keys import Keys
from patchlog.streams.log import iter_revisions, read_heads

__all__ = ["Rebuilt", "VerifyReport", "rebuild", "verify"]


class Rebuilt(msgspec.Struct):
    """One document as the log folds it."""

    rev: int = 0
    hash: str = EMPTY_HASH
    lines: list[str] = msgspec.field(default_factory=list)


class VerifyReport(msgspec.Struct):
    """What ``verify`` found; ``ok`` when ``problems`` is empty."""

    documents: int
    revisions: int
    problems: list[str]

    @property
    def ok(self) -> bool:
        """Whether the log and the live state agree everywhere."""
        return not self.problems


async def rebuild(
    redis: Redis, keys: Keys, problems: list[str] | None = None
) -> dict[str, Rebuilt]:
    """Fold the whole revision log into documents, checking as it goes that revisions
    are gap-free per document, chain their hashes (``prev``), and match their ``hash``.
    Problems are appended to ``problems`` (the fold goes on)."""
    docs: dict[str, Rebuilt] = {}
    found = problems if problems is not None else []
    async for stream_id, revision in iter_revisions(redis, keys):
        doc = docs.setdefault(revision.doc, Rebuilt())
        where = f"{revision.doc!r} revision {revision.rev} ({stream_id})"
        if revision.rev != doc.rev + 1:
            found.append(f"{where}: follows revision {doc.rev}; revisions are gap-free")
        if revision.prev != doc.hash:
            found.append(f"{where}: prev {revision.prev[:12]} is not {doc.hash[:12]}")
        doc.lines = fold(doc.lines, from_ops(revision.ops))
        doc.hash = content_hash(doc.lines)
        doc.rev = revision.rev
        if doc.hash != revision.hash:
            found.append(
                f"{where}: content hashes to {doc.hash[:12]}, recorded {revision.hash[:12]}"
            )
        if len(doc.lines) != revision.lines:
            found.append(f"{where}: {len(doc.lines)} lines, recorded {revision.lines}")
    return docs


async def verify(redis: Redis, keys: Keys) -> VerifyReport:
    """Rebuild from the log and compare with every live document head."""
    problems: list[str] = []
    docs = await rebuild(redis, keys, problems)
    members: Any = await redis.smembers(keys.docs)
    names = sorted({m.decode() for m in members} | set(docs))
    heads = await read_heads(redis, keys, names)
    for name in names:
        head = heads[name]
        built = docs.get(name, Rebuilt())
        if (head.rev, head.hash, head.lines) != (built.rev, built.hash, len(built.lines)):
            problems.append(
                f"{name!r}: live head is revision {head.rev} ({head.hash[:12]}, {head.lines} "
                f"lines), the log gives {built.rev} ({built.hash[:12]}, {len(built.lines)})"
            )
    revisions = sum(d.rev for d in docs.values())
    return VerifyReport(documents=len(names), revisions=revisions, problems=problems)
