"""The Python client: submit and wait (``streams.client``), the edit loop, and reads of
the log (a document at any revision, its history, blame, the list of documents)."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from patchlog.projections.blame import BlameLine, blame
from patchlog.projections.edit import Attempt, EditFn, edit
from patchlog.projections.history import (
    AtRevision,
    DocInfo,
    LogRow,
    at_revision,
    documents,
    history,
    rev_at_time,
)
from patchlog.streams.client import Client as _StreamsClient
from patchlog.streams.keys import Keys
from patchlog.streams.schema import Outcome
from patchlog.streams.settings import Durability

__all__ = ["Client"]


class Client(_StreamsClient):
    """Submits to and reads one namespace; async throughout, one Redis client shared.

    ``every`` is the namespace's ``snapshot_every`` (time travel replays fewer
    revisions than that from a checkpoint).
    """

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        durability: Durability = Durability.NORMAL,
        *,
        every: int = 100,
    ) -> None:
        super().__init__(redis, keys, durability)
        self.every = every

    async def edit(
        self,
        doc: str,
        fn: EditFn,
        *,
        retries: int = 10,
        author: str | None = None,
        meta: dict[str, Any] | None = None,
        timeout: float = 30.0,
        on_retry: Attempt | None = None,
    ) -> Outcome | None:
        """Read-modify-write ``doc`` with ``fn`` until it commits; see ``edit.edit``."""
        return await edit(
            self,
            doc,
            fn,
            retries=retries,
            author=author,
            meta=meta,
            timeout=timeout,
            on_retry=on_retry,
        )

    async def at(
        self, doc: str, rev: int | None = None, *, when_ms: int | None = None
    ) -> AtRevision:
        """``doc`` at revision ``rev``, or as it was at ``when_ms`` (ms since the epoch),
        or at its head; raises ``NotFound`` for a missing document or revision."""
        if when_ms is not None:
            rev = await rev_at_time(self.redis, self.keys, doc, when_ms)
        return await at_revision(self.redis, self.keys, doc, rev, every=self.every)

    async def history(self, doc: str, limit: int | None = None) -> list[LogRow]:
        """``doc``'s revisions, newest first (all, or the newest ``limit``)."""
        return await history(self.redis, self.keys, doc, limit)

    async def blame(self, doc: str, rev: int | None = None) -> list[BlameLine]:
        """Each line of ``doc`` at ``rev`` (its head) with the revision that wrote it."""
        return await blame(self.redis, self.keys, doc, rev, every=self.every)

    async def documents(self, prefix: str = "") -> list[DocInfo]:
        """Every document whose name starts with ``prefix``, with its head."""
        return await documents(self.redis, self.keys, prefix)
