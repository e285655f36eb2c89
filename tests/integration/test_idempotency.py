"""Exactly-once by patch id: duplicates in a row, concurrent, across a server restart."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from patchlog.projections.load import read_document
from patchlog.projections.rebuild import rebuild
from patchlog.streams.client import Client
from patchlog.streams.schema import OutcomeStatus, RejectCode
from patchlog.streams.scripts import Scripts
from patchlog.streams.server import EmbeddedServer
from patchlog.streams.settings import Settings
from tests.integration.helpers import by_src, drain, outcomes

OPS = [{"op": "insert", "at": 1, "lines": ["once"]}]


async def test_same_id_twice_in_a_row_applies_once(
    redis: Redis, settings: Settings, scripts: Scripts
) -> None:
    """The second submission of an id is a duplicate pointing at the first's revision."""
    client = Client(redis, settings.keys)
    submitted = await client.submit("d", 0, ops=OPS, id="p-1")
    await drain(redis, settings, scripts)
    first = await client.wait(submitted, 5)
    await client.submit("d", 0, ops=OPS, id="p-1")
    await drain(redis, settings, scripts)
    rows = await outcomes(redis, settings)
    assert [(o.status, o.rev) for o in rows] == [
        (OutcomeStatus.COMMITTED, 1),
        (OutcomeStatus.DUPLICATE, 1),
    ]
    assert first.status is OutcomeStatus.COMMITTED
    assert await read_document(client.redis, client.keys, "d") == (1, ["once"])


async def test_twenty_concurrent_submissions_apply_once(
    redis: Redis, settings: Settings, scripts: Scripts
) -> None:
    """Twenty concurrent XADDs of one id: one revision, nineteen duplicates."""
    client = Client(redis, settings.keys)
    sent = await asyncio.gather(*(client.submit("d", 0, ops=OPS, id="p-20") for _ in range(20)))
    await drain(redis, settings, scripts, normalize=2, execute=2)
    rows = await outcomes(redis, settings)
    statuses = sorted(o.status.value for o in rows)
    assert statuses == ["committed"] + ["duplicate"] * 19
    assert set(by_src(rows).values()) == {1}
    assert await read_document(client.redis, client.keys, "d") == (1, ["once"])
    answers = [(await client.wait(s, 1)).status.value for s in sent]
    assert sorted(answers) == statuses  # each submitter learns its own


async def test_duplicate_after_server_restart(
    redis: Redis, settings: Settings, scripts: Scripts, server: EmbeddedServer
) -> None:
    """The idempotency record survives a server restart (AOF): still a duplicate."""
    client = Client(redis, settings.keys)
    await client.submit("d", 0, ops=OPS, id="p-r")
    await drain(redis, settings, scripts)
    await server.stop()
    await server.start()
    await client.submit("d", 0, ops=OPS, id="p-r")
    await drain(redis, settings, scripts)
    rows = await outcomes(redis, settings)
    assert [o.status for o in rows] == [OutcomeStatus.COMMITTED, OutcomeStatus.DUPLICATE]
    assert (await rebuild(redis, settings.keys, every=settings.snapshot_every)).ok


async def test_same_id_other_payload_is_id_reuse(
    redis: Redis, settings: Settings, scripts: Scripts
) -> None:
    """An id reused for a different payload is rejected as id_reuse, naming the first."""
    client = Client(redis, settings.keys)
    await client.submit("d", 0, ops=OPS, id="p-x")
    await drain(redis, settings, scripts)
    first_src = (await outcomes(redis, settings))[0].src
    await client.submit("d", 0, ops=[{"op": "insert", "at": 1, "lines": ["other"]}], id="p-x")
    await drain(redis, settings, scripts)
    reuse = (await outcomes(redis, settings))[1]
    assert reuse.code is RejectCode.ID_REUSE
    assert reuse.message == (
        f"id: 'p-x' was first used by entry {first_src} for a different payload; "
        "rule: one id names one payload (doc, base, ops or diff, author)"
    )
    assert await read_document(client.redis, client.keys, "d") == (1, ["once"])
