"""A client's chained patches keep their order when the first one is held up (a worker
died holding it, a read's reply was lost), and workers outlive a lost consumer group."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
import pytest
from redis.asyncio import Redis

from patchlog.consumers.normalize import NormalizeStage
from patchlog.consumers.order import earlier_pending
from patchlog.consumers.runner import Runner
from patchlog.ops.dryrun import dry_run
from patchlog.projections.load import read_document
from patchlog.streams.client import Client
from patchlog.streams.keys import EXECUTE, NORMALIZE
from patchlog.streams.schema import Outcome, OutcomeStatus, RejectCode
from patchlog.streams.scripts import Scripts
from patchlog.streams.settings import Settings
from tests.integration.helpers import by_src, drain, outcomes, runners


def insert(at: int, line: str) -> list[dict[str, Any]]:
    """One insert op."""
    return [{"op": "insert", "at": at, "lines": [line]}]


async def until_outcomes(
    redis: Redis, settings: Settings, count: int, timeout: float
) -> list[Outcome]:
    """Outcomes once there are ``count`` of them (bounded by ``timeout`` s)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = await outcomes(redis, settings)
        if len(rows) >= count:
            return rows
        assert time.monotonic() < deadline, f"{len(rows)} of {count} outcomes in {timeout} s"
        await asyncio.sleep(0.05)


async def run_for_outcomes(
    redis: Redis, settings: Settings, scripts: Scripts, count: int, timeout: float
) -> list[Outcome]:
    """Run one normalize and one execute worker until ``count`` outcomes exist."""
    workers = runners(redis, settings, scripts, drain=False)
    tasks = [asyncio.create_task(r.run()) for r in workers]
    try:
        return await until_outcomes(redis, settings, count, timeout)
    finally:
        for r in workers:
            r.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 15)


@pytest.mark.parametrize("stage", [NORMALIZE, EXECUTE])
async def test_chained_patch_waits_for_a_predecessor_a_dead_worker_holds(
    redis: Redis, settings: Settings, scripts: Scripts, stage: str
) -> None:
    """The first patch sits in a dead worker's pending list (of either stage) until its
    lease runs out (3 s, past base_ahead_wait); the chained second commits after it."""
    client = Client(redis, settings.keys)
    await client.submit("d", 0, ops=insert(1, "first"), id="p1")
    await client.submit("d", 1, ops=insert(2, "second"), id="p2")
    stream = settings.keys.patches
    if stage == EXECUTE:  # both patches normalized, none executed
        await drain(redis, settings, scripts, execute=0)
        stream = settings.keys.normalized
    await redis.xgroup_create(stream, stage, id="0", mkstream=True)
    # A worker reads the first patch and dies; its lease lives on for 3 s.
    await redis.xreadgroup(stage, "dead", {stream: ">"}, count=1)
    await redis.set(settings.keys.lease(stage, "dead"), b"{}", px=3000)
    rows = await run_for_outcomes(redis, settings, scripts, 2, 60)
    assert [(o.id, o.status, o.rev) for o in rows] == [
        ("p1", OutcomeStatus.COMMITTED, 1),
        ("p2", OutcomeStatus.COMMITTED, 2),
    ]
    assert await read_document(redis, settings.keys, "d") == (2, ["first", "second"])


async def test_chained_patch_waits_for_a_predecessor_whose_read_was_lost(
    redis: Redis, settings: Settings, scripts: Scripts
) -> None:
    """The first patch sits in a live execute worker's own pending list (the reply of
    its read was lost); it is taken up within seconds and the second commits after it."""
    fast = msgspec.structs.replace(settings, socket_timeout=5.0, block_ms=100)
    client = Client(redis, fast.keys)
    await client.submit("d", 0, ops=insert(1, "first"), id="p1")
    await client.submit("d", 1, ops=insert(2, "second"), id="p2")
    await drain(redis, fast, scripts, execute=0)
    await redis.xgroup_create(fast.keys.normalized, EXECUTE, id="0", mkstream=True)
    # The server delivers the first patch to e0, which never sees the reply.
    await redis.xreadgroup(EXECUTE, "e0", {fast.keys.normalized: ">"}, count=1)
    started = time.monotonic()
    runner = Runner(redis, fast, scripts, runners(redis, fast, scripts)[1].stage, "e0")
    # Not a restart: the worker must find the entry while running, not at start.
    runner._own_pending = _nothing  # type: ignore[method-assign]
    task = asyncio.create_task(runner.run())
    try:
        rows = await until_outcomes(redis, fast, 2, 30)
    finally:
        runner.stop()
        await asyncio.wait_for(task, 15)
    taken_up = time.monotonic() - started
    assert [(o.id, o.status, o.rev) for o in rows] == [
        ("p1", OutcomeStatus.COMMITTED, 1),
        ("p2", OutcomeStatus.COMMITTED, 2),
    ]
    # Before: only entries idle for 2 socket timeouts plus a block (10.1 s) were swept.
    assert taken_up < 8.0, taken_up


async def _nothing() -> None:
    return None


async def test_workers_create_a_vanished_group_again_and_go_on(
    redis: Redis, settings: Settings, scripts: Scripts
) -> None:
    """After both consumer groups vanish (a server that lost them), the workers create
    them again from id 0: new patches commit, decided ones (a commit, a malformed entry's
    rejection) are not applied or answered twice."""
    client = Client(redis, settings.keys)
    workers = runners(redis, settings, scripts, drain=False)
    tasks = [asyncio.create_task(r.run()) for r in workers]
    try:
        await client.submit("d", 0, ops=insert(1, "before"), id="p1")
        await redis.xadd(settings.keys.patches, {"doc": "d", "base": "x", "ops": "[]"})
        await until_outcomes(redis, settings, 2, 30)
        await redis.xgroup_destroy(settings.keys.patches, NORMALIZE)
        await redis.xgroup_destroy(settings.keys.normalized, EXECUTE)
        await client.submit("d", 1, ops=insert(2, "after"), id="p2")
        rows = await until_outcomes(redis, settings, 3, 30)
        await asyncio.sleep(1.0)  # time for a wrongly repeated outcome to show up
        rows = await outcomes(redis, settings)
    finally:
        for r in workers:
            r.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 15)
    assert sorted((o.status.value, o.rev) for o in rows) == [
        ("committed", 1),
        ("committed", 2),
        ("rejected", 0),
    ]
    assert set(by_src(rows).values()) == {1}
    assert await read_document(redis, settings.keys, "d") == (2, ["before", "after"])


async def test_strict_mode_holds_from_the_moment_hset_returns(
    redis: Redis, settings: Settings, scripts: Scripts
) -> None:
    """A document set strict with HSET rejects the next stale patch as stale, even when
    the execute worker read the strict flags a moment before; dry runs agree."""
    client = Client(redis, settings.keys)
    workers = runners(redis, settings, scripts, drain=False)
    tasks = [asyncio.create_task(r.run()) for r in workers]
    try:
        await client.submit("d", 0, ops=insert(1, "one"), id="p1")
        await until_outcomes(redis, settings, 1, 30)
        await redis.hset(settings.keys.strict, "d", "1")
        await client.submit("d", 0, ops=insert(1, "stale"), id="p2")
        rows = await until_outcomes(redis, settings, 2, 30)
        text, accepted = await dry_run(client, settings, "d", 0, '[{"op":"delete","from":1}]', None)
    finally:
        for r in workers:
            r.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 15)
    assert [(o.id, o.status, o.code) for o in rows] == [
        ("p1", OutcomeStatus.COMMITTED, None),
        ("p2", OutcomeStatus.REJECTED, RejectCode.STALE),
    ]
    assert not accepted
    assert '"code": "stale"' in text


async def test_a_predecessor_forwarded_after_its_successor_is_still_found(
    redis: Redis, settings: Settings, scripts: Scripts
) -> None:
    """Two normalize workers may forward an earlier patch after a later one; while an
    execute worker holds the earlier one, the later one still sees it as pending, and a
    missing normalize group counts as nothing pending there."""
    keys = settings.keys
    client = Client(redis, keys)
    await redis.xgroup_create(keys.patches, NORMALIZE, id="0", mkstream=True)
    await redis.xgroup_create(keys.normalized, EXECUTE, id="0", mkstream=True)
    first = await client.submit("d", 0, ops=insert(1, "x"), id="p1")
    second = await client.submit("d", 1, ops=insert(1, "y"), id="p2")
    stage = NormalizeStage(redis, settings, scripts)
    a: Any = await redis.xreadgroup(NORMALIZE, "nA", {keys.patches: ">"}, count=1)
    b: Any = await redis.xreadgroup(NORMALIZE, "nB", {keys.patches: ">"}, count=1)
    await stage.handle("nB", [(i.decode(), f) for i, f in b[0][1]])  # the later one first
    await stage.handle("nA", [(i.decode(), f) for i, f in a[0][1]])
    await redis.xreadgroup(EXECUTE, "e2", {keys.normalized: ">"}, count=1)  # p2's entry
    held: Any = await redis.xreadgroup(EXECUTE, "e1", {keys.normalized: ">"}, count=1)
    assert await earlier_pending(redis, keys, "d", second.entry) == held[0][1][0][0].decode()
    assert await earlier_pending(redis, keys, "d", first.entry) is None
    await redis.xgroup_destroy(keys.patches, NORMALIZE)
    assert await earlier_pending(redis, keys, "d", second.entry) is not None
