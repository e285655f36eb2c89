"""Agents appending to one transcript from stale bases all commit, in commit order."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from patchlog.projections.load import read_document
from patchlog.projections.rebuild import rebuild
from patchlog.streams.client import Client
from patchlog.streams.log import read_head
from patchlog.streams.schema import OutcomeStatus
from patchlog.streams.scripts import Scripts
from patchlog.streams.settings import Settings
from tests.integration.helpers import drain, outcomes


async def test_ten_appenders_on_stale_bases_all_commit(
    redis: Redis, settings: Settings, scripts: Scripts
) -> None:
    """10 appenders x 200 appends to one document, each on a head read up to 20 appends
    earlier: all 2,000 commit, every appender's lines in its own order, gap-free."""
    client = Client(redis, settings.keys)
    await client.submit("t", 0, ops=[{"op": "insert", "at": 1, "lines": ["start"]}], id="seed")
    await drain(redis, settings, scripts)

    async def appender(k: int) -> None:
        for n in range(200):
            if n % 20 == 0:
                head = await read_head(redis, settings.keys, "t")
            line = f"a{k}-{n}"
            ops = [{"op": "insert", "at": head.lines + 1, "lines": [line]}]
            await client.submit("t", head.rev, ops=ops, id=line)

    await asyncio.gather(*(appender(k) for k in range(10)))
    await drain(redis, settings, scripts)
    rows = [o for o in await outcomes(redis, settings) if o.id != "seed"]
    assert len(rows) == 2000
    assert {o.status for o in rows} == {OutcomeStatus.COMMITTED}
    rev, lines = await read_document(redis, settings.keys, "t")
    assert rev == 2001
    assert lines[0] == "start"
    assert sorted(lines[1:]) == sorted(f"a{k}-{n}" for k in range(10) for n in range(200))
    for k in range(10):
        mine = [x for x in lines if x.startswith(f"a{k}-")]
        assert mine == [f"a{k}-{n}" for n in range(200)]
    assert (await rebuild(redis, settings.keys, every=settings.snapshot_every)).ok
