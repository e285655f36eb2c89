"""Runner behaviour: poison entries, slow workers, raw malformed XADDs."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections import Counter
from collections.abc import Sequence
from typing import Any, ClassVar

import pytest
from redis.asyncio import Redis

from patchlog.consumers.execute import ExecuteStage
from patchlog.consumers.messages import decode_normalized
from patchlog.consumers.normalize import NormalizeStage
from patchlog.consumers.runner import Entry, Runner
from patchlog.streams.client import Client
from patchlog.streams.errors import ServerUnavailable
from patchlog.streams.schema import OutcomeStatus, RejectCode
from patchlog.streams.scripts import Scripts
from patchlog.streams.server import EmbeddedServer
from patchlog.streams.settings import Settings
from tests.integration.helpers import by_src, drain, outcomes


class PoisonedExecute(ExecuteStage):
    """Raises on every patch of the document ``poison``, like a stage bug would."""

    async def handle(self, consumer: str, entries: Sequence[Entry]) -> None:
        for _, fields in entries:
            if decode_normalized(fields[b"p"]).doc == "poison":
                raise RuntimeError("boom on poison")
        await super().handle(consumer, entries)


async def test_poison_entry_is_dead_lettered_and_others_flow(
    redis: Redis, settings: Settings, scripts: Scripts
) -> None:
    """An entry that makes the stage raise ends in the dead-letter stream after
    max_deliveries, with a rejected outcome; the other patches are committed."""
    client = Client(redis, settings.keys)
    good = [
        await client.submit(f"ok-{i}", 0, ops=[{"op": "insert", "at": 1, "lines": ["x"]}])
        for i in range(5)
    ]
    bad = await client.submit("poison", 0, ops=[{"op": "insert", "at": 1, "lines": ["x"]}])
    await drain(redis, settings, scripts, execute=0)
    stage = PoisonedExecute(redis, settings, scripts)
    await asyncio.wait_for(Runner(redis, settings, scripts, stage, "e0", drain=True).run(), 60)
    dead: Any = await redis.xrange(settings.keys.dead)
    assert len(dead) == 1
    fields = dead[0][1]
    assert fields[b"stage"] == b"execute"
    assert fields[b"deliveries"] == str(settings.max_deliveries).encode()
    assert b"boom on poison" in fields[b"error"]
    outcome = await client.wait(bad, 1)
    assert (outcome.status, outcome.code) == (OutcomeStatus.REJECTED, RejectCode.INVALID)
    assert "failed 5 times" in (outcome.message or "")
    for pid in good:
        assert (await client.wait(pid, 1)).status is OutcomeStatus.COMMITTED
    assert (await redis.xpending(settings.keys.normalized, "execute"))["pending"] == 0


class SlowExecute(ExecuteStage):
    """Sleeps longer than the lease and claim timings on its first batch; counts handles."""

    handled: ClassVar[Counter[str]] = Counter()

    def __init__(self, *args: object, delay: float) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.delay = delay

    async def handle(self, consumer: str, entries: Sequence[Entry]) -> None:
        for entry_id, _ in entries:
            SlowExecute.handled[entry_id] += 1
        if self.delay:
            await asyncio.sleep(self.delay)
            self.delay = 0
        await super().handle(consumer, entries)


async def test_slow_worker_with_live_lease_is_not_robbed(
    redis: Redis, settings: Settings, scripts: Scripts
) -> None:
    """A worker slower than the lease time but alive keeps its entries: nothing is
    processed twice, nothing is fenced."""
    client = Client(redis, settings.keys)
    for i in range(20):
        await client.submit(f"s-{i}", 0, ops=[{"op": "insert", "at": 1, "lines": ["x"]}])
    await drain(redis, settings, scripts, execute=0)
    SlowExecute.handled = Counter()
    slow = SlowExecute(redis, settings, scripts, delay=settings.lease_ms / 1000 * 2.5)
    fast = SlowExecute(redis, settings, scripts, delay=0)
    slow_runner = Runner(redis, settings, scripts, slow, "slow", drain=True)
    slow_task = asyncio.create_task(slow_runner.run())
    await asyncio.sleep(0.3)  # the slow one holds the whole backlog now
    fast_runner = Runner(redis, settings, scripts, fast, "fast", drain=True)
    await asyncio.wait_for(asyncio.gather(slow_task, fast_runner.run()), 60)
    assert len(SlowExecute.handled) == 20
    assert set(SlowExecute.handled.values()) == {1}
    assert slow.counts.get("fenced", 0) == fast.counts.get("fenced", 0) == 0
    rows = await outcomes(redis, settings)
    assert [o.status for o in rows] == [OutcomeStatus.COMMITTED] * 20


RAW_CASES: list[tuple[list[str], RejectCode, str]] = [
    (["doc", "d"], RejectCode.INVALID, "base: missing; rule: a patch has doc and base"),
    (
        ["doc", "d", "base", "zero", "ops", "[]"],
        RejectCode.INVALID,
        "base: 'zero' is not a revision",
    ),
    (["doc", "d", "base", "0", "ops", "[{"], RejectCode.INVALID, "ops: "),
    (
        ["doc", "d", "base", "0", "ops", '[{"op":"delete","from":"1"}]'],
        RejectCode.INVALID,
        "ops[0].from: expected int, got str",
    ),
    (
        ["doc", "d", "base", "0", "ops", '[{"op":"insert","at":0,"lines":["a"]}]'],
        RejectCode.BOUNDS,
        "ops[0] (insert at 0): at is 0",
    ),
    (
        ["doc", "d", "base", "0", "ops", '[{"op":"delete","from":-3}]'],
        RejectCode.BOUNDS,
        "ops[0] (delete -3..-3): from is -3",
    ),
    (
        ["doc", "d", "base", "0", "ops", '[{"op":"insert","at":1,"lines":["a"]}]', "meta", "7"],
        RejectCode.INVALID,
        "meta: expected object, got int",
    ),
]


@pytest.mark.skipif(shutil.which("redis-cli") is None, reason="redis-cli (.ci/run installs it)")
async def test_raw_redis_cli_entries_are_rejected_with_their_code(
    redis: Redis, settings: Settings, scripts: Scripts, server: EmbeddedServer
) -> None:
    """Malformed entries written with redis-cli, or with invalid UTF-8 or huge values,
    each end as a rejection with its code; the workers keep running."""
    srcs = []
    for fields, _, _ in RAW_CASES:
        done = subprocess.run(
            ["redis-cli", "-p", str(server.port), "XADD", settings.keys.patches, "*", *fields],
            capture_output=True,
            check=True,
            timeout=10,
        )
        srcs.append(done.stdout.decode().strip())
    bad_utf8: Any = await redis.xadd(
        settings.keys.patches,
        {"doc": b"d", "base": b"0", "ops": b'[{"op":"insert","at":1,"lines":["\xff"]}]'},
    )
    huge: Any = await redis.xadd(
        settings.keys.patches,
        {"doc": "d", "base": "0", "ops": "[" + '{"op":"delete","from":1},' * 300_000 + "]"},
    )
    fine = await Client(redis, settings.keys).submit(
        "d", 0, ops=[{"op": "insert", "at": 1, "lines": ["ok"]}]
    )
    await drain(redis, settings, scripts)
    rows = {o.src: o for o in await outcomes(redis, settings)}
    for src, (_, code, message) in zip(srcs, RAW_CASES, strict=True):
        assert rows[src].code is code
        assert (rows[src].message or "").startswith(message)
        assert rows[src].entry is not None
    assert rows[bad_utf8.decode()].code is RejectCode.INVALID
    assert rows[huge.decode()].code is RejectCode.TOO_LARGE
    assert (await Client(redis, settings.keys).wait(fine, 1)).status is OutcomeStatus.COMMITTED
    assert set(by_src(list(rows.values())).values()) == {1}


class FailingStage(NormalizeStage):
    """Fails every step with a transient error, like a server that keeps refusing."""

    steps = 0

    def due(self) -> list[Entry]:
        self.steps += 1
        raise ServerUnavailable("server unavailable: LOADING")


async def test_lasting_transient_failure_backs_off_instead_of_spinning(
    redis: Redis, settings: Settings, scripts: Scripts
) -> None:
    """A failure that lasts makes the worker wait longer each time, not retry 40 times a
    second (full jitter from 50 ms doubling to 2 s: about 8 tries in 3 s)."""
    stage = FailingStage(redis, settings, scripts)
    runner = Runner(redis, settings, scripts, stage, "n0")
    task = asyncio.create_task(runner.run())
    await asyncio.sleep(3.0)
    runner.stop()
    await asyncio.wait_for(task, 10)
    assert 3 <= stage.steps <= 25, stage.steps
