"""The batch fence of the stage scripts: an entry claimed away from a slow worker is
not decided by it, however many other entries that worker holds in the same range."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from redis.asyncio import Redis

from patchlog.streams.scripts import Scripts
from patchlog.streams.settings import Settings


async def _forward(
    redis: Redis, settings: Settings, scripts: Scripts, consumer: str, ids: list[str]
) -> list[str]:
    """Forward ``ids`` (all 'f', a dummy payload each) as ``consumer``; the statuses."""
    keys = settings.keys
    batch = [[i, "f", [], ""] for i in ids]
    args: list[str | bytes | int] = ["normalize", consumer, 1000, ids[0], ids[-1]]
    args += [msgspec.msgpack.encode(batch), *[b"payload"] * len(ids)]
    reply: Any = await scripts.forward(
        keys=[keys.patches, keys.normalized, keys.outcomes], args=args
    )
    return [r.decode() for r in reply]


@pytest.mark.parametrize("held", [3, 300])
async def test_fence_skips_claimed_entries(
    redis: Redis, settings: Settings, scripts: Scripts, held: int
) -> None:
    """With few or many own pending entries in the batch's range (300 overflows the
    single fence read), exactly the claimed entry is 'fenced', written nowhere and left
    pending for its new owner; the others are forwarded and acknowledged."""
    keys = settings.keys
    added: list[Any] = [
        await redis.xadd(keys.patches, {"doc": "d", "base": "0", "ops": "[]"}) for _ in range(held)
    ]
    ids = [a.decode() for a in added]
    await redis.xgroup_create(keys.patches, "normalize", id="0")
    await redis.xreadgroup("normalize", "slow", {keys.patches: ">"}, count=held)
    middle = ids[held // 2]
    await redis.xclaim(keys.patches, "normalize", "thief", 0, [middle])

    statuses = await _forward(redis, settings, scripts, "slow", [ids[0], middle, ids[-1]])

    assert statuses == ["ok", "fenced", "ok"]
    assert await redis.xlen(keys.normalized) == 2
    rows: Any = await redis.xpending_range(keys.patches, "normalize", "-", "+", held + 1)
    owners = {r["message_id"].decode(): r["consumer"].decode() for r in rows}
    assert owners[middle] == "thief"
    assert ids[0] not in owners
    assert ids[-1] not in owners
    assert len(owners) == held - 2
