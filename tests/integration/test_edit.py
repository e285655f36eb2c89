"""The edit loop under contention, with the pipeline running."""

from __future__ import annotations

import asyncio
from collections import Counter

from redis.asyncio import Redis

from patchlog.projections.client import Client
from patchlog.projections.load import read_document
from patchlog.projections.rebuild import rebuild
from patchlog.streams.schema import Outcome, OutcomeStatus
from patchlog.streams.scripts import Scripts
from patchlog.streams.settings import Settings
from tests.integration.helpers import runners


async def test_twenty_editors_increment_one_counter_to_exactly_1000(
    redis: Redis, settings: Settings, scripts: Scripts
) -> None:
    """20 tasks each add 1 to a counter line 50 times through ``edit``: every race lost
    (a conflict, or a noop because another task wrote the same number) is retried on
    the new head, so none of the 1,000 increments is lost and the other line stays."""
    client = Client(redis, settings.keys)
    workers = runners(redis, settings, scripts, drain=False)
    tasks = [asyncio.create_task(r.run()) for r in workers]
    lost: Counter[str] = Counter()

    def count(_attempt: int, outcome: Outcome) -> None:
        lost[outcome.code or outcome.status] += 1

    def bump(lines: list[str]) -> list[str]:
        if not lines:
            return ["0", "counter above"]
        return [str(int(lines[0]) + 1), *lines[1:]]

    async def editor() -> None:
        for _ in range(50):
            outcome = await client.edit("c", bump, retries=10_000, timeout=30, on_retry=count)
            assert outcome is not None
            assert outcome.status is OutcomeStatus.COMMITTED, outcome

    try:
        assert await client.edit("c", bump) is not None  # creates "0"
        await asyncio.wait_for(asyncio.gather(*(editor() for _ in range(20))), 300)
    finally:
        for r in workers:
            r.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
    rev, lines = await read_document(redis, settings.keys, "c")
    assert lines == ["1000", "counter above"]
    assert rev == 1001  # one revision per increment, no other
    assert lost[OutcomeStatus.NOOP] > 0  # they did race: each of those would be lost
    assert (await rebuild(redis, settings.keys, every=settings.snapshot_every)).ok


async def test_an_edit_that_changes_nothing_submits_nothing(
    redis: Redis, settings: Settings, scripts: Scripts
) -> None:
    """``edit`` returns None and writes no entry when the function keeps the lines."""
    client = Client(redis, settings.keys)
    assert await client.edit("same", lambda lines: lines) is None
    assert await redis.xlen(settings.keys.patches) == 0
