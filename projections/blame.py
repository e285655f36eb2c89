"""Blame: for each line of a document at a revision, the revision that last changed it."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
from redis.asyncio import Redis

from patchlog.projections.history import at_revision
from patchlog.projections.load import later_of
from patchlog.projections.patch import Splice
from patchlog.streams.errors import VerifyFailed
from patchlog.streams.keys import Keys
from patchlog.streams.log import revisions_of
from patchlog.streams.schema import Revision

__all__ = ["BlameLine", "blame", "track"]


class BlameLine(msgspec.Struct, frozen=True):
    """One line and the revision that wrote it (like a row of ``git blame``)."""

    line: int
    """1-based."""
    text: str
    rev: int
    author: str
    id: str
    """The patch id of that revision."""
    at: int
    """Its commit time, milliseconds since the epoch."""


def track(origins: Sequence[int], splices: Sequence[Splice], rev: int) -> list[int]:
    """The origin of every line after one revision: lines it writes come from ``rev``,
    the others keep theirs. ``splices`` as stored (highest line first), like ``fold``."""
    out: list[int] = []
    pos = 0
    for s in reversed(splices):
        out += origins[pos : s.start]
        out += [rev] * len(s.lines)
        pos = s.end
    out += origins[pos:]
    return out


async def blame(
    redis: Redis, keys: Keys, doc: str, rev: int | None = None, *, every: int = 100
) -> list[BlameLine]:
    """Every line of ``doc`` at ``rev`` (the head when ``None``) with its origin.

    Replays revisions 1..rev (origins are not checkpointed) and checks the result
    against the content time travel gives. Raises ``NotFound`` for a missing document or
    revision, ``VerifyFailed`` if the two disagree.
    """
    target = await at_revision(redis, keys, doc, rev, every=every)
    revisions: list[Revision] = (
        await revisions_of(redis, keys, doc, 1, target.rev) if target.rev else []
    )
    origins: list[int] = []
    for revision in revisions:
        origins = track(origins, later_of(revision).splices, revision.rev)
    if len(origins) != len(target.lines):
        raise VerifyFailed(
            f"{doc!r} at revision {target.rev}: blame tracks {len(origins)} lines, the "
            f"content has {len(target.lines)}"
        )
    by_rev = {r.rev: r for r in revisions}
    return [
        BlameLine(
            line=n,
            text=text,
            rev=origin,
            author=by_rev[origin].author,
            id=by_rev[origin].id,
            at=by_rev[origin].at,
        )
        for n, (text, origin) in enumerate(zip(target.lines, origins, strict=True), 1)
    ]
