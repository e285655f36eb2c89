"""Retention: internal streams trimmed only below what every group acknowledged;
outcomes trimmed by age."""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis

from patchlog.consumers.runner import trim_acknowledged, trim_older_than
from patchlog.streams.settings import Settings


async def test_trim_never_drops_pending_or_undelivered_entries(
    redis: Redis, settings: Settings
) -> None:
    """Entries pending in any group, or not yet delivered to one, survive trimming."""
    stream = settings.keys.normalized
    ids = [await redis.xadd(stream, {"n": str(i)}) for i in range(300)]
    await redis.xgroup_create(stream, "fast", id="0")
    await redis.xgroup_create(stream, "slow", id="0")
    await redis.xreadgroup("fast", "f", {stream: ">"}, count=300)
    await redis.xack(stream, "fast", *ids)
    await redis.xreadgroup("slow", "s", {stream: ">"}, count=200)
    await redis.xack(stream, "slow", *ids[:150])
    await trim_acknowledged(redis, stream)
    left: Any = await redis.xrange(stream)
    kept = {eid for eid, _ in left}
    assert set(ids[150:]) <= kept  # slow's pending 150..199 and undelivered 200..299
    pending: Any = await redis.xpending_range(stream, "slow", "-", "+", 100)
    bodies: Any = [await redis.xrange(stream, p["message_id"], p["message_id"]) for p in pending]
    assert all(bodies)
    await redis.xreadgroup("slow", "s", {stream: ">"}, count=100)
    await redis.xack(stream, "slow", *ids)
    await trim_acknowledged(redis, stream)
    assert await redis.xlen(stream) < 150


async def test_outcomes_are_trimmed_by_age(redis: Redis, settings: Settings) -> None:
    """Outcomes older than the window go; recent ones stay."""
    stream = settings.keys.outcomes
    for i in range(1, 201):
        await redis.xadd(stream, {"old": "1"}, id=f"{i}-1")
    recent = await redis.xadd(stream, {"new": "1"})
    await trim_older_than(redis, stream, 3600)
    left: Any = await redis.xrange(stream)
    assert recent in {eid for eid, _ in left}
    assert len(left) < 201


async def test_ingress_is_kept_for_its_retention_after_every_group_acknowledged(
    redis: Redis, settings: Settings
) -> None:
    """Acknowledged ingress entries stay while younger than the retention, then go;
    entries some group has not acknowledged stay whatever their age."""
    stream = settings.keys.patches
    ids = [await redis.xadd(stream, {"n": str(i)}) for i in range(600)]
    await redis.xgroup_create(stream, "normalize", id="0")
    await redis.xreadgroup("normalize", "n", {stream: ">"}, count=400)
    await redis.xack(stream, "normalize", *ids[:300])
    await trim_acknowledged(redis, stream, older_than=3600)
    assert await redis.xlen(stream) == 600  # acknowledged, but within the retention
    await asyncio.sleep(0.3)
    await trim_acknowledged(redis, stream, older_than=0.2)
    left: Any = await redis.xrange(stream)
    kept = {eid for eid, _ in left}
    assert set(ids[300:]) <= kept  # pending 300..399 and undelivered 400..599 stay
    assert len(kept) < 400  # the acknowledged ones older than 0.2 s went (whole nodes)
