"""Time travel and history: a document at any revision, and its revision list."""

from __future__ import annotations

from datetime import UTC, datetime

from redis.asyncio import Redis

from patchlog.projections.fold import fold
from patchlog.projections.load import later_of, load_content
from patchlog.streams.errors import NotFound
from patchlog.streams.keys import Keys
from patchlog.streams.log import read_head, revisions_of

__all__ = ["content_at", "revision_log"]


async def content_at(
    redis: Redis, keys: Keys, doc: str, rev: int | None = None
) -> tuple[int, list[str]]:
    """``doc``'s lines at revision ``rev`` (its head when ``None``).

    Raises ``NotFound`` if ``doc`` has no revisions (no patch ever committed to it: it
    does not exist, at any revision), or if ``rev`` is negative or past the head.
    """
    head = await read_head(redis, keys, doc)
    if head.rev == 0:
        # Not the empty document: a name nobody wrote to is most likely a typo or the
        # wrong server, and printing nothing would read as "my document is empty".
        raise NotFound(f"no document {doc!r}: no patch was ever committed to it")
    if rev is None or rev == head.rev:
        loaded = await load_content(redis, keys, doc, head)
        return loaded.rev, loaded.lines
    if rev < 0 or rev > head.rev:
        raise NotFound(f"{doc!r} has revisions 0..{head.rev}; there is no revision {rev}")
    lines: list[str] = []
    for revision in await revisions_of(redis, keys, doc, 1, rev):
        lines = fold(lines, later_of(revision).splices)
    return rev, lines


async def revision_log(redis: Redis, keys: Keys, doc: str, limit: int = 50) -> list[str]:
    """One line per revision of ``doc``, newest first: rev, time, author, id, size, hash.

    Raises ``NotFound`` if ``doc`` has no revisions.
    """
    head = await read_head(redis, keys, doc)
    if head.rev == 0:
        raise NotFound(f"no document {doc!r}: no patch was ever committed to it")
    first = max(1, head.rev - limit + 1)
    rows = []
    for r in reversed(await revisions_of(redis, keys, doc, first, head.rev)):
        when = datetime.fromtimestamp(r.at / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
        rows.append(
            f"r{r.rev:<6} {when}  {r.author or '-':<12} {r.id:<34} "
            f"{len(r.ops)} ops  {r.lines} lines  {r.hash[:12]}  base r{r.base}"
        )
    return rows
