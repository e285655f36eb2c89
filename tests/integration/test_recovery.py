"""Regression tests for recovery paths: forgotten pending entries, replays of decided
ids, ids reused inside one batch, drains after deletions, snapshots that lie."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest
from redis.asyncio import Redis

from patchlog.consumers.execute import ExecuteStage
from patchlog.consumers.runner import Runner
from patchlog.projections.load import load_content, read_document
from patchlog.streams.client import Client
from patchlog.streams.connection import connect
from patchlog.streams.errors import CommandFailed, KeyChanged, ServerUnavailable
from patchlog.streams.log import write_snapshot
from patchlog.streams.schema import OutcomeStatus, RejectCode
from patchlog.streams.scripts import Scripts
from patchlog.streams.settings import Settings
from tests.integration.helpers import by_src, drain, outcomes

OPS = [{"op": "insert", "at": 1, "lines": ["x"]}]


async def test_entries_delivered_but_never_seen_are_taken_up(
    redis: Redis, settings: Settings, scripts: Scripts
) -> None:
    """Entries delivered to a live worker whose reply it never read (a lost XREADGROUP
    reply) are found by its own-pending sweep and decided."""
    fast = msgspec.structs.replace(settings, socket_timeout=0.3, block_ms=100)
    client = Client(redis, fast.keys)
    await client.submit("d", 0, ops=OPS, id="seen")
    await drain(redis, fast, scripts, execute=0)
    runner = Runner(redis, fast, scripts, ExecuteStage(redis, fast, scripts), "e0")
    task = asyncio.create_task(runner.run())
    await asyncio.sleep(0.3)
    lost = await client.submit("d", 1, ops=OPS, id="lost")
    await drain(redis, fast, scripts, execute=0)
    # The server delivers to e0, but e0 never sees the reply.
    await redis.xreadgroup("execute", "e0", {fast.keys.normalized: ">"}, count=10)
    outcome = await client.wait(lost, 15)
    runner.stop()
    await asyncio.wait_for(task, 10)
    assert outcome.status is OutcomeStatus.COMMITTED
    assert (await redis.xpending(fast.keys.normalized, "execute"))["pending"] == 0


async def test_replay_of_a_rejected_id_gets_the_same_rejection(
    redis: Redis, settings: Settings, scripts: Scripts
) -> None:
    """A resubmitted id whose patch was rejected is answered with that rejection again,
    never applied later; another payload under the id is id_reuse."""
    client = Client(redis, settings.keys)
    await client.submit("d", 0, ops=[{"op": "delete", "from": 1}], id="r")
    await drain(redis, settings, scripts)
    await client.submit("d", 0, ops=OPS, id="other")
    await drain(redis, settings, scripts)
    await client.submit("d", 0, ops=[{"op": "delete", "from": 1}], id="r")
    await client.submit("d", 1, ops=OPS, id="r")
    await drain(redis, settings, scripts)
    rows = [o for o in await outcomes(redis, settings) if o.id == "r"]
    assert [(o.status, o.code) for o in rows] == [
        (OutcomeStatus.REJECTED, RejectCode.BOUNDS),
        (OutcomeStatus.REJECTED, RejectCode.BOUNDS),
        (OutcomeStatus.REJECTED, RejectCode.ID_REUSE),
    ]
    assert rows[0].message == rows[1].message
    assert await read_document(client.redis, client.keys, "d") == (1, ["x"])


async def test_one_id_twice_in_one_batch_on_two_documents(
    redis: Redis, settings: Settings, scripts: Scripts
) -> None:
    """The same id on two documents in one batch: one applies, the other is id_reuse."""
    client = Client(redis, settings.keys)
    await client.submit("d1", 0, ops=OPS, id="same")
    await client.submit("d2", 0, ops=OPS, id="same")
    await drain(redis, settings, scripts)
    rows = await outcomes(redis, settings)
    assert sorted((o.doc, o.status.value, o.code.value if o.code else "") for o in rows) == [
        ("d1", "committed", ""),
        ("d2", "rejected", "id_reuse"),
    ]
    assert set(by_src(rows).values()) == {1}


async def test_drain_finishes_after_entries_were_deleted(
    redis: Redis, settings: Settings, scripts: Scripts
) -> None:
    """Drain mode returns even when XDEL left the group's lag unknown."""
    client = Client(redis, settings.keys)
    for i in range(5):
        await client.submit(f"d{i}", 0, ops=OPS)
    junk: Any = await redis.xadd(settings.keys.patches, {"doc": "d", "base": "0", "ops": "[]"})
    await redis.xdel(settings.keys.patches, junk)
    await drain(redis, settings, scripts, timeout=15)
    rows = await outcomes(redis, settings)
    assert len(rows) == 5
    assert (await redis.xpending(settings.keys.patches, "normalize"))["pending"] == 0


async def test_a_snapshot_that_is_not_the_logged_content_is_ignored(
    redis: Redis, settings: Settings, scripts: Scripts
) -> None:
    """A self-consistent snapshot whose hash is not the log's at its revision is not
    trusted: the document still loads with its true content."""
    client = Client(redis, settings.keys)
    await client.submit("d", 0, ops=OPS)
    await client.submit("d", 1, ops=[{"op": "insert", "at": 2, "lines": ["y"]}])
    await drain(redis, settings, scripts)
    await write_snapshot(redis, settings.keys, "d", 1, ["bogus"])
    loaded = await load_content(redis, settings.keys, "d")
    assert loaded.lines == ["x", "y"]
    await write_snapshot(redis, settings.keys, "d", 1, ["x"])
    good = await load_content(redis, settings.keys, "d")
    assert (good.lines, good.snapshot_rev) == (["x", "y"], 1)


async def test_client_raises_patchlog_errors_from_commands_pipelines_and_scripts(
    redis: Redis, settings: Settings, scripts: Scripts
) -> None:
    """A real server's error replies and a dead server surface as patchlog's errors."""
    key = settings.keys.doc("wrongtype")
    await redis.set(key, "x")
    with pytest.raises(CommandFailed) as direct:
        await redis.xadd(key, {"a": "b"})
    assert direct.value.code == "WRONGTYPE"
    async with redis.pipeline(transaction=False) as pipe:
        pipe.get(key)
        pipe.hget(key, "f")
        with pytest.raises(CommandFailed) as piped:
            await pipe.execute()
    assert piped.value.code == "WRONGTYPE"
    await redis.script_flush()  # the registered script loads itself again (NOSCRIPT)
    with pytest.raises(CommandFailed):
        await scripts.claim(keys=[], args=[])
    # A transaction whose watched key another writer changed is KeyChanged, which
    # rebuild --repair takes as "a commit came first", never a redis-py exception.
    async with redis.pipeline(transaction=True) as pipe:
        await pipe.watch(key)
        await redis.set(key, "committed meanwhile")
        pipe.multi()  # type: ignore[no-untyped-call]
        pipe.set(key, "repaired")
        with pytest.raises(KeyChanged):
            await pipe.execute()
    assert await redis.get(key) == b"committed meanwhile"
    dead = connect(msgspec.structs.replace(settings, retries=0), "redis://127.0.0.1:1/0")
    try:
        with pytest.raises(ServerUnavailable):
            await dead.ping()
    finally:
        await dead.aclose()
