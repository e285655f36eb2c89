"""The partition count a pipeline runs with, recorded on the server, and the check that
refuses a stage worker started with another count while the recorded layout still has
work or workers.

Normalize routes a document's patches to ``normalized_of(doc)``, which depends on
``PATCHLOG_PARTITIONS``. A count changed under a running pipeline strands entries in
streams nobody reads any more (fewer partitions) or splits a document's patches across
two streams and two workers (more), losing their order. A change is safe once every
old normalized stream is drained and no stage worker runs: then the new count is
recorded and the workers start.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import structlog
from redis.asyncio import Redis

from patchlog.ops.groups import read_groups
from patchlog.ops.health import live_workers
from patchlog.streams.errors import KeyChanged, ServerRefused
from patchlog.streams.keys import EXECUTE, Keys
from patchlog.streams.settings import MAX_PARTITIONS, Settings

__all__ = ["check_partitions"]

log = structlog.get_logger("patchlog.partitioning")


_TRIES = 50  # compare-and-set attempts against workers starting at the same moment
_JITTER_S = 0.02  # at most this long between two attempts


async def _left(redis: Redis, old: Keys) -> tuple[int, list[str]]:
    """Entries of ``old``'s normalized streams not yet decided (a stream without its
    group, or whose lag the server cannot tell, counts whole), and the stage workers
    live now."""
    streams = old.normalized_streams
    rows = await read_groups(redis, streams, EXECUTE)
    backlog = 0
    for stream, row in zip(streams, rows, strict=True):
        if row is None or row.lag is None:
            backlog += int(await redis.xlen(stream))
        else:
            backlog += row.backlog
    live = await live_workers(redis, old)
    now_ms = await _server_ms(redis)  # memberships expire on the server's clock
    members: Any = await redis.zrangebyscore(old.members, f"({now_ms}", "+inf")
    live += [f"execute:{m.decode()}" for m in members if f"execute:{m.decode()}" not in live]
    return backlog, live


async def _server_ms(redis: Redis) -> int:
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


def _recorded(keys: Keys, fields: dict[bytes, bytes]) -> tuple[int, int] | None:
    """(count, when it was last confirmed, server ms) from the record, ``None`` if
    there is none. Raises ``ServerRefused`` for a damaged one."""
    if not fields:
        return None
    try:
        had, at = int(fields[b"partitions"]), int(fields.get(b"at", b"0"))
    except (KeyError, ValueError):
        had = 0
    if not 1 <= had <= MAX_PARTITIONS:
        raise ServerRefused(
            f"{keys.layout} is damaged ({fields!r}); with every worker stopped, delete it "
            "and start again"
        )
    return had, at


async def check_partitions(redis: Redis, settings: Settings) -> None:
    """Record ``settings.partitions`` (and now, as the time a worker last started with
    it) if none is recorded or it is the one recorded. Another count is recorded, with
    a warning, only if the recorded layout is drained, has no live worker, and was not
    confirmed within a lease (a worker that started with it may not be live yet).
    Raises ``ServerRefused`` naming both counts, what is left and what to do, otherwise."""
    keys = settings.keys
    want = keys.partitions
    for _ in range(_TRIES):
        try:
            async with redis.pipeline(transaction=True) as pipe:
                await pipe.watch(keys.layout)  # the reads may use any connection
                fields: Any = await redis.hgetall(keys.layout)
                found = _recorded(keys, fields)
                now_ms = await _server_ms(redis)
                if found is not None and found[0] != want:
                    await _refuse_unless_idle(redis, keys, found, now_ms, settings.lease_ms)
                pipe.multi()  # type: ignore[no-untyped-call]
                pipe.hset(keys.layout, mapping={"partitions": want, "at": now_ms})
                await pipe.execute()
        except KeyChanged:  # another worker recorded meanwhile: judge its record
            # Workers of `up` start together: spread their next attempts.
            await asyncio.sleep(random.uniform(0, _JITTER_S))  # noqa: S311 - jitter, not crypto
            continue
        if found is not None and found[0] != want:
            log.warning("partition count changed", was=found[0], now=want, record=keys.layout)
        return
    raise ServerRefused(f"{keys.layout} kept changing while this worker started; try again")


async def _refuse_unless_idle(
    redis: Redis, keys: Keys, found: tuple[int, int], now_ms: int, lease_ms: int
) -> None:
    had, at = found
    backlog, live = await _left(redis, Keys(keys.namespace, had))
    recent = now_ms - at < lease_ms
    if backlog or live or recent:
        starting = "; a worker started with it within the last lease" if recent else ""
        raise ServerRefused(
            f"PATCHLOG_PARTITIONS={keys.partitions}, but the pipeline in namespace "
            f"{keys.namespace!r} runs with {had} ({keys.layout}): {backlog} normalized "
            f"entries not yet decided, {len(live)} live workers "
            f"({', '.join(live[:4]) or 'none'}){starting}; stop every worker, drain with "
            f"PATCHLOG_PARTITIONS={had} (patchlog worker execute --burst), then start "
            f"with {keys.partitions}"
        )
