"""A server that refuses writes because a background save failed (MISCONF: a full or
vanished disk) slows the pipeline down; it never kills a worker or dead-letters a patch."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from patchlog.consumers.runner import Runner
from patchlog.streams.client import Client
from patchlog.streams.connection import connect
from patchlog.streams.errors import ServerError
from patchlog.streams.keys import EXECUTE
from patchlog.streams.scripts import load
from patchlog.streams.server import EmbeddedServer
from patchlog.streams.settings import Settings
from tests.integration.helpers import KINDS, binary_for, drain, free_port, outcomes, runners


async def refuses_writes(redis: Redis, settings: Settings) -> bool:
    """Whether the server answers a write with MISCONF now."""
    try:
        await redis.set(settings.keys.doc("probe"), "x")
    except ServerError as err:  # whether it counts as transient is what is under test
        return "MISCONF" in str(err)
    return False


@pytest.mark.parametrize("kind", KINDS)
async def test_misconf_is_waited_out_not_dead_lettered(kind: str, tmp_path: Path) -> None:
    """While background saves fail the worker keeps retrying; once the disk is back the
    patch commits, nothing is dead-lettered and no worker died."""
    srv = EmbeddedServer(tmp_path / "srv", port=free_port(), binary=binary_for(kind))
    await srv.start()
    settings = Settings(
        redis_url=srv.url, namespace="m", block_ms=100, lease_ms=1500, claim_interval=0.2,
        max_deliveries=2,
    )  # fmt: skip
    redis = connect(settings, srv.url, name="misconf-test", block_ms=2000)
    scripts = load(redis)
    try:
        client = Client(redis, settings.keys)
        await client.submit("d", 0, ops=[{"op": "insert", "at": 1, "lines": ["x"]}], id="p1")
        await drain(redis, settings, scripts, execute=0)
        # The execute worker has read the patch (it is in its pending list) when the
        # disk goes away: saves fail and the server refuses every write with MISCONF.
        await redis.xgroup_create(settings.keys.normalized, EXECUTE, id="0")
        await redis.xreadgroup(EXECUTE, "e0", {settings.keys.normalized: ">"}, count=10)
        # A directory where the snapshot goes makes every background save fail.
        blocker = srv.data_dir / "dump.rdb"
        (blocker / "in-the-way").mkdir(parents=True)
        await redis.config_set("save", "3600 1")
        await redis.bgsave()
        deadline = time.monotonic() + 10
        while not await refuses_writes(redis, settings):
            assert time.monotonic() < deadline, "the server never refused writes"
            await asyncio.sleep(0.1)
        stage = runners(redis, settings, scripts)[1].stage
        runner = Runner(redis, settings, scripts, stage, "e0")
        task = asyncio.create_task(runner.run())
        await asyncio.sleep(3.0)
        assert not task.done(), task
        shutil.rmtree(blocker)
        await redis.bgsave()
        deadline = time.monotonic() + 30
        while not await outcomes(redis, settings):
            assert time.monotonic() < deadline, "no outcome after the disk came back"
            assert not task.done(), task
            await asyncio.sleep(0.1)
        runner.stop()
        await asyncio.wait_for(task, 15)
        rows = await outcomes(redis, settings)
        assert [(o.id, o.status.value) for o in rows] == [("p1", "committed")]
        dead: Any = await redis.xlen(settings.keys.dead)
        assert dead == 0
    finally:
        await redis.aclose()
        await srv.stop()
