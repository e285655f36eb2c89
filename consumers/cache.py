"""The execute worker's cache of document heads and content.

A cached document moves ahead speculatively while a batch is decided, and keeps the
last state the server confirmed. When a commit finds the head moved (another worker
committed), the document goes back to its confirmed state and is brought up to the
head by replaying only the revisions it missed, checked against the head's hash; a
full load (snapshot plus replay) happens only for documents not cached, or when the
cache cannot be trusted.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence

from redis.asyncio import Redis

from patchlog.projections.fold import fold
from patchlog.projections.load import later_of, load_content
from patchlog.projections.rebase import Later
from patchlog.streams.content import content_hash
from patchlog.streams.keys import Keys
from patchlog.streams.log import Head, read_heads, revisions_since

__all__ = ["CachedDoc", "DocCache"]

HISTORY = 512
"""Recent revisions kept per document, to rebase patches on older bases."""
MAX_CATCH_UP = 64
"""A document further behind than this is loaded afresh rather than replayed."""
_EPOCHS = itertools.count(1)


class CachedDoc:
    """A document's head and content: speculative (``rev``, ``hash``, ``lines``, ``src``
    of the patch that made it) and the last state the server confirmed."""

    __slots__ = (
        "confirmed_hash",
        "confirmed_lines",
        "confirmed_rev",
        "confirmed_src",
        "epoch",
        "hash",
        "history",
        "lines",
        "rev",
        "snapshot_rev",
        "src",
    )

    def __init__(
        self,
        rev: int,
        digest: str,
        lines: list[str],
        history: Iterable[Later],
        snap: int,
        src: str = "",
    ) -> None:
        self.rev = rev
        self.hash = digest
        self.lines = lines
        self.src = src
        self.history: deque[Later] = deque(history, maxlen=HISTORY)
        self.snapshot_rev = snap
        self.confirmed_rev = rev
        self.confirmed_hash = digest
        self.confirmed_lines = lines
        self.confirmed_src = src
        self.epoch = next(_EPOCHS)
        """Changes on every rollback: a decision made in another epoch was made on a
        speculative chain that no longer exists."""

    def advance(self, rev: int, digest: str, lines: list[str], later: Later, src: str) -> None:
        """Move ahead speculatively: a decided patch (``src``), not committed yet."""
        self.rev, self.hash, self.lines, self.src = rev, digest, lines, src
        self.history.append(later)

    def confirm(self, rev: int, digest: str, lines: list[str], src: str) -> None:
        """The server committed revision ``rev`` (patch ``src``) with this content."""
        self.confirmed_rev, self.confirmed_hash = rev, digest
        self.confirmed_lines, self.confirmed_src = lines, src

    def rollback(self) -> None:
        """Forget what was not confirmed."""
        self.epoch = next(_EPOCHS)
        self.rev, self.hash = self.confirmed_rev, self.confirmed_hash
        self.lines, self.src = self.confirmed_lines, self.confirmed_src
        while self.history and self.history[-1].rev > self.rev:
            self.history.pop()


class DocCache:
    """Least recently used documents of one execute worker (at most ``max_docs``, never
    evicting a document of the batch in hand)."""

    def __init__(self, redis: Redis, keys: Keys, max_docs: int = 4096) -> None:
        self.redis = redis
        self.keys = keys
        self.max_docs = max_docs
        self.docs: OrderedDict[str, CachedDoc] = OrderedDict()
        self.suspect: set[str] = set()
        """Rolled back documents whose head must be read before deciding on them."""
        self.caught_up = 0
        """Revisions replayed into cached documents (not loaded afresh)."""
        self.loaded = 0
        """Documents loaded afresh."""

    def __getitem__(self, doc: str) -> CachedDoc:
        return self.docs[doc]

    def __contains__(self, doc: object) -> bool:
        return doc in self.docs

    def get(self, doc: str) -> CachedDoc | None:
        """The cached document, or ``None`` (without touching its recency)."""
        return self.docs.get(doc)

    def drop(self, doc: str) -> None:
        """Forget ``doc`` entirely (its next use loads it afresh)."""
        self.docs.pop(doc, None)
        self.suspect.discard(doc)

    def confirm(
        self, doc: str, epoch: int, rev: int, digest: str, lines: list[str], src: str
    ) -> None:
        """The server committed revision ``rev`` of ``doc`` with this content, decided in
        ``epoch``. A document rolled back since (a chunk before lost a race) holds
        another chain of speculative revisions: it is loaded afresh."""
        cached = self.docs.get(doc)
        if cached is None:
            return
        if cached.epoch != epoch or cached.rev < rev:
            self.drop(doc)
            return
        cached.confirm(rev, digest, lines, src)

    def rollback(self, doc: str) -> None:
        """Back to the confirmed state; the head is read before the next decision."""
        cached = self.docs.get(doc)
        if cached is not None:
            cached.rollback()
            self.suspect.add(doc)

    async def ensure(self, docs: Sequence[str], check: Iterable[str] = ()) -> None:
        """Have every document of ``docs`` cached at its head as far as known: load the
        missing ones, and read the head of those in ``check`` or suspect, catching up
        the ones behind."""
        wanted = list(dict.fromkeys(docs))
        for doc in wanted:
            if doc in self.docs:
                self.docs.move_to_end(doc)
        verify = [d for d in dict.fromkeys([*check, *self.suspect]) if d in self.docs]
        missing = [d for d in wanted if d not in self.docs]
        heads = await read_heads(self.redis, self.keys, verify + missing)
        self.suspect.difference_update(verify)
        behind: dict[str, tuple[int, int]] = {}
        for doc in verify:
            cached, head = self.docs[doc], heads[doc]
            if (head.rev, head.hash, head.src) == (cached.rev, cached.hash, cached.src):
                continue
            if (
                cached.rev < head.rev <= cached.rev + MAX_CATCH_UP
                and cached.rev == cached.confirmed_rev
            ):
                # From the cached revision itself: it must be the log's, not equal
                # content reached through other revisions.
                behind[doc] = (max(1, cached.rev), head.rev)
            else:
                del self.docs[doc]
                missing.append(doc)
        await self._catch_up(behind, heads)
        for doc in missing:
            await self._load(doc, heads[doc])
        while len(self.docs) > max(self.max_docs, len(wanted)):
            evicted, _ = self.docs.popitem(last=False)
            self.suspect.discard(evicted)

    async def _catch_up(self, behind: dict[str, tuple[int, int]], heads: dict[str, Head]) -> None:
        if not behind:
            return
        found = await revisions_since(self.redis, self.keys, behind)
        for doc, found_revisions in found.items():
            cached = self.docs[doc]
            revisions = [r for r in found_revisions if r.rev > cached.rev]
            own = [r for r in found_revisions if r.rev == cached.rev]
            if own and cached.src and own[0].src != cached.src:  # another history
                del self.docs[doc]
                await self._load(doc, heads[doc])
                continue
            lines = cached.lines
            laters = [later_of(r) for r in revisions]
            for later in laters:
                lines = fold(lines, later.splices)
            head = heads[doc]
            if content_hash(lines) != head.hash:  # the cache was wrong: start afresh
                del self.docs[doc]
                await self._load(doc, head)
                continue
            cached.history.extend(laters)
            cached.rev, cached.hash, cached.lines, cached.src = head.rev, head.hash, lines, head.src
            cached.confirm(head.rev, head.hash, lines, head.src)
            self.caught_up += len(laters)

    async def _load(self, doc: str, head: Head) -> None:
        self.loaded += 1
        if head.rev == 0:
            self.docs[doc] = CachedDoc(0, head.hash, [], [], 0, head.src)
            return
        loaded = await load_content(self.redis, self.keys, doc, head)
        self.docs[doc] = CachedDoc(
            loaded.rev, loaded.hash, loaded.lines, loaded.history, loaded.snapshot_rev, head.src
        )
