"""The pipeline end to end on real servers: outcomes, revisions, replay."""

from __future__ import annotations

from redis.asyncio import Redis

from projections.content import content_hash
from projections.rebuild import verify
from streams.client import Client
from streams.schema import OutcomeStatus, RejectCode
from streams.scripts import Scripts
from streams.settings import Settings
from tests.integration.helpers import by_src, drain, outcomes


async def test_patches_flow_to_revisions_and_outcomes(
    redis: Redis, settings: Settings, scripts: Scripts
) -> None:
    """Submitted patches are committed in order, rejected with a code, or noops."""
    client = Client(redis, settings.keys)
    first = await client.submit("notes", 0, ops=[{"op": "insert", "at": 1, "lines": ["a", "b"]}])
    second = await client.submit("notes", 1, ops=[{"op": "replace", "from": 2, "lines": ["B"]}])
    stale = await client.submit("notes", 1, ops=[{"op": "insert", "at": 1, "lines": ["top"]}])
    bounds = await client.submit("notes", 0, ops=[{"op": "delete", "from": 4}])
    noop = await client.submit("notes", 1, ops=[{"op": "replace", "from": 1, "lines": ["a"]}])
    await drain(redis, settings, scripts)
    results = {pid: await client.wait(pid, 5) for pid in (first, second, stale, bounds, noop)}
    assert results[first].status is OutcomeStatus.COMMITTED
    assert results[first].rev == 1
    assert results[second].rev == 2
    assert (results[stale].status, results[stale].rev) == (OutcomeStatus.COMMITTED, 3)
    assert results[bounds].code is RejectCode.BOUNDS
    assert results[bounds].message == (
        "delete 4..4: to 4 is past the end of the base (0 lines); rule: 1 <= from <= to <= len = 0"
    )
    assert results[noop].status is OutcomeStatus.NOOP
    rev, lines = await client.show("notes")
    assert (rev, lines) == (3, ["top", "a", "B"])
    head = await redis.hgetall(settings.keys.doc("notes"))
    assert head[b"hash"].decode() == content_hash(lines)
    rows = await outcomes(redis, settings)
    assert set(by_src(rows).values()) == {1}
    assert len(rows) == 5
    assert (await verify(redis, settings.keys)).ok
