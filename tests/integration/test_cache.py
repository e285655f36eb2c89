"""The execute worker's document cache: catching up on revisions other workers made."""

from __future__ import annotations

from redis.asyncio import Redis

from patchlog.consumers.cache import DocCache
from patchlog.projections.load import load_content
from patchlog.streams.client import Client
from patchlog.streams.content import content_hash
from patchlog.streams.scripts import Scripts
from patchlog.streams.settings import Settings
from tests.integration.helpers import drain


async def _commit_lines(client: Client, doc: str, base: int, count: int) -> None:
    for n in range(count):
        await client.submit(doc, base + n, ops=[{"op": "insert", "at": 1, "lines": [f"{n}"]}])


async def test_cache_replays_only_the_missed_revisions(
    redis: Redis, settings: Settings, scripts: Scripts
) -> None:
    """A cached document behind the head is brought to it by replaying the revisions
    it missed (no fresh load), and its content is the log's."""
    client = Client(redis, settings.keys)
    await _commit_lines(client, "d", 0, 3)
    await drain(redis, settings, scripts)
    cache = DocCache(redis, settings.keys)
    await cache.ensure(["d"])
    assert (cache["d"].rev, cache.loaded) == (3, 1)

    await _commit_lines(client, "d", 3, 4)  # another worker's commits
    await drain(redis, settings, scripts)
    await cache.ensure(["d"], check=["d"])

    truth = await load_content(redis, settings.keys, "d")
    assert (cache["d"].rev, cache["d"].lines) == (7, truth.lines)
    assert cache["d"].hash == content_hash(truth.lines)
    assert (cache.loaded, cache.caught_up) == (1, 4)
    assert [h.rev for h in cache["d"].history][-4:] == [4, 5, 6, 7]


async def test_rolled_back_document_is_checked_and_a_wrong_cache_reloaded(
    redis: Redis, settings: Settings, scripts: Scripts
) -> None:
    """A rollback forgets speculative state and marks the head for a read; a cache
    whose content does not replay to the head's hash is loaded afresh."""
    client = Client(redis, settings.keys)
    await _commit_lines(client, "d", 0, 2)
    await drain(redis, settings, scripts)
    cache = DocCache(redis, settings.keys)
    await cache.ensure(["d"])
    doc = cache["d"]
    confirmed = doc.lines
    doc.advance(3, "speculative", ["not", "committed"], doc.history[-1], "0-1")
    cache.rollback("d")
    assert (doc.rev, doc.lines, "d" in cache.suspect) == (2, confirmed, True)

    doc.lines = [*doc.lines, "corrupted"]  # what a bug in the cache would look like
    doc.confirm(doc.rev, doc.hash, doc.lines, doc.src)
    await _commit_lines(client, "d", 2, 1)
    await drain(redis, settings, scripts)
    await cache.ensure(["d"])  # suspect: the head is read without being asked

    truth = await load_content(redis, settings.keys, "d")
    assert (cache["d"].rev, cache["d"].lines) == (3, truth.lines)
    assert cache.loaded == 2
    assert not cache.suspect
