"""A consumer group's counters as ``XINFO GROUPS`` reports them, read one way for the
prober, ``status``, ``top`` and ``up``'s progress line."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
from redis.asyncio import Redis

__all__ = ["GroupRow", "group_row", "read_groups"]


class GroupRow(msgspec.Struct, frozen=True):
    """One group on one stream."""

    pending: int
    """Entries delivered and not acknowledged."""
    lag: int | None
    """Entries not yet delivered; ``None`` when the server cannot tell (entries deleted
    from the middle of the stream, or a group created at an id)."""
    read: int | None
    """Entries the group has read (its progress counter): 0 for a group that has read
    nothing yet, ``None`` when the server cannot tell."""

    @property
    def backlog(self) -> int:
        """What the group still has to process, counting an unknown lag as none."""
        return (self.lag or 0) + self.pending


def group_row(groups: Sequence[dict[Any, Any]], name: str) -> GroupRow | None:
    """The row of group ``name`` in an ``XINFO GROUPS`` reply (names as bytes or text),
    ``None`` if the stream has no such group."""
    info = next((g for g in groups if g["name"] in (name, name.encode())), None)
    if info is None:
        return None
    lag = info.get("lag")
    if info.get("entries-read") is not None:
        read: int | None = int(info["entries-read"])
    else:
        read = 0 if info.get("last-delivered-id") in (b"0-0", "0-0") else None
    return GroupRow(pending=int(info["pending"]), lag=None if lag is None else int(lag), read=read)


async def read_groups(redis: Redis, streams: Sequence[str], group: str) -> list[GroupRow | None]:
    """``group``'s row on each of ``streams``, in one round trip; ``None`` for a stream
    that does not exist or has no such group."""
    async with redis.pipeline(transaction=False) as pipe:
        for stream in streams:
            pipe.xinfo_groups(stream)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
    return [None if isinstance(r, Exception) else group_row(r, group) for r in replies]
