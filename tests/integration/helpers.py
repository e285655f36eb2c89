"""Running stages in-process and reading what they wrote, for integration tests."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from redis.asyncio import Redis

from patchlog.consumers.execute import ExecuteStage
from patchlog.consumers.normalize import NormalizeStage
from patchlog.consumers.runner import Runner
from patchlog.streams.codec import decode_event
from patchlog.streams.schema import Outcome
from patchlog.streams.scripts import Scripts
from patchlog.streams.settings import Settings


def runners(
    redis: Redis,
    settings: Settings,
    scripts: Scripts,
    *,
    normalize: int = 1,
    execute: int = 1,
    drain: bool = True,
) -> list[Runner]:
    """Runner objects for in-process stage workers with stable names."""
    out = [
        Runner(
            redis, settings, scripts, NormalizeStage(redis, settings, scripts), f"n{i}", drain=drain
        )
        for i in range(normalize)
    ]
    out += [
        Runner(
            redis,
            settings,
            scripts,
            ExecuteStage(redis, settings, scripts),
            f"e{i}",
            drain=drain,
            trims=(settings.keys.normalized,),
        )
        for i in range(execute)
    ]
    return out


async def drain(
    redis: Redis,
    settings: Settings,
    scripts: Scripts,
    *,
    normalize: int = 1,
    execute: int = 1,
    timeout: float = 120.0,
) -> list[Runner]:
    """Run normalize to completion, then execute to completion (bounded by ``timeout``)."""
    first = runners(redis, settings, scripts, normalize=normalize, execute=0)
    await asyncio.wait_for(asyncio.gather(*(r.run() for r in first)), timeout)
    second = runners(redis, settings, scripts, normalize=0, execute=execute)
    await asyncio.wait_for(asyncio.gather(*(r.run() for r in second)), timeout)
    return first + second


async def outcomes(redis: Redis, settings: Settings) -> list[Outcome]:
    """Every outcome entry, in stream order."""
    rows: Any = await redis.xrange(settings.keys.outcomes, "-", "+")
    return [decode_event(Outcome, fields) for _, fields in rows]


def by_src(rows: list[Outcome]) -> Counter[str]:
    """How many outcomes each ingress entry got."""
    return Counter(o.src for o in rows)
