"""The integration tests' helpers, the one module they import them from: servers,
stages run in-process, a concurrent load, and reading what the stages wrote."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from redis.asyncio import Redis

from patchlog.consumers.execute import ExecuteStage
from patchlog.consumers.normalize import NormalizeStage
from patchlog.consumers.runner import Runner
from patchlog.ops.randomops import single_op, stale_base
from patchlog.streams.client import Client
from patchlog.streams.codec import decode_event
from patchlog.streams.log import read_head
from patchlog.streams.schema import IdRecord, Outcome
from patchlog.streams.scripts import Scripts
from patchlog.streams.server import EmbeddedServer, free_port, server_binary
from patchlog.streams.settings import Settings

__all__ = [
    "KINDS",
    "binary_for",
    "by_src",
    "dedicated_server",
    "drain",
    "free_port",
    "outcomes",
    "own_outcome",
    "runners",
    "submit_load",
]

KINDS = [k for k in os.environ.get("PATCHLOG_TEST_SERVERS", "valkey,redis").split(",") if k]
"""The server kinds the suite runs against."""


def binary_for(kind: str) -> Path:
    """The server binary of a kind; a missing one fails the run (it is no pass)."""
    if kind == "valkey":
        return server_binary()
    found = shutil.which("redis-server")
    if found is None:
        pytest.fail("redis-server is not installed (.ci/run installs Debian's redis-server)")
    return Path(found)


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


async def own_outcome(redis: Redis, settings: Settings, entry: Any, timeout: int = 5) -> IdRecord:
    """The outcome of one ingress entry (the reply of its XADD), waited for with the one
    blocking command any client uses."""
    key = settings.keys.entry_outcome(entry.decode() if isinstance(entry, bytes) else entry)
    raw: Any = await redis.blmove(key, key, timeout, "LEFT", "RIGHT")
    assert raw is not None, f"no outcome in {key} within {timeout} s"
    assert await redis.llen(key) == 1  # one answer, still there for other waiters
    return msgspec.json.decode(raw, type=IdRecord)


@contextlib.asynccontextmanager
async def dedicated_server(folder: Path, kind: str) -> AsyncIterator[EmbeddedServer]:
    """A server of ``kind`` for one test, to reconfigure freely; stopped whatever happens."""
    srv = EmbeddedServer(folder, port=free_port(), binary=binary_for(kind))
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


async def outcomes(redis: Redis, settings: Settings) -> list[Outcome]:
    """Every outcome entry, in stream order."""
    rows: Any = await redis.xrange(settings.keys.outcomes, "-", "+")
    return [decode_event(Outcome, fields) for _, fields in rows]


def by_src(rows: list[Outcome]) -> Counter[str]:
    """How many outcomes each ingress entry got."""
    return Counter(o.src for o in rows)


async def submit_load(
    redis: Redis,
    settings: Settings,
    *,
    submitters: int,
    patches: int,
    docs: int,
    seed: int,
    stale: float = 0.2,
    wait: bool = True,
) -> list[str]:
    """Submit ``patches`` one-op patches from ``submitters`` tasks; return every patch id.

    Each patch is based on the head the submitter just read, or (with probability
    ``stale``) a revision or three behind it, so rebases and conflicts happen. With
    ``wait`` each submitter waits for its patch's outcome before the next (closed loop).
    """
    client = Client(redis, settings.keys)
    names = [f"doc-{i}" for i in range(docs)]
    ids: list[str] = []
    quota = patches // submitters

    async def submitter(k: int) -> None:
        rng = random.Random(seed * 1000 + k)
        for n in range(quota):
            doc = rng.choice(names)
            head = await read_head(redis, settings.keys, doc)
            base = stale_base(rng, head.rev, share=stale)
            # on a stale base, only the first lines, which the older base most likely had
            length = head.lines if base == head.rev else min(head.lines, 2)
            op = single_op(rng, length, [f"s{k} p{n}"], insert=0.5, replace=0.3)
            submitted = await client.submit(doc, base, ops=[op], author=f"s{k}")
            ids.append(submitted.id)
            if wait:
                await client.wait(submitted, 60)

    await asyncio.gather(*(submitter(k) for k in range(submitters)))
    return ids
