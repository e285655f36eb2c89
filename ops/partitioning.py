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

from typing import Any

import structlog
from redis.asyncio import Redis

from patchlog.ops.groups import read_groups
from patchlog.ops.health import leased_consumers
from patchlog.streams.errors import ServerRefused
from patchlog.streams.keys import EXECUTE, NORMALIZE, Keys
from patchlog.streams.settings import Settings

__all__ = ["check_partitions"]

log = structlog.get_logger("patchlog.partitioning")


async def _left(redis: Redis, old: Keys) -> tuple[int, list[str]]:
    """Entries of ``old``'s normalized streams not yet decided (a stream without its
    group counts whole), and the stage workers live now."""
    streams = old.normalized_streams
    rows = await read_groups(redis, streams, EXECUTE)
    backlog = 0
    for stream, row in zip(streams, rows, strict=True):
        backlog += int(await redis.xlen(stream)) if row is None else row.backlog
    live = [
        f"{group}:{name}"
        for group, stream in [(NORMALIZE, old.patches)] + [(EXECUTE, s) for s in streams]
        for name in await leased_consumers(redis, old, group, stream)
    ]
    seconds, micros = await redis.time()
    members: Any = await redis.zrangebyscore(
        old.members, f"({seconds * 1000 + micros // 1000}", "+inf"
    )
    live += [f"execute:{m.decode()}" for m in members if f"execute:{m.decode()}" not in live]
    return backlog, live


async def check_partitions(redis: Redis, settings: Settings) -> None:
    """Record ``settings.partitions`` if none is recorded; accept it if it is the one
    recorded, or if the recorded layout is drained and has no live worker (then record
    it, with a warning). Raises ``ServerRefused`` naming both counts, what is left and
    what to do, otherwise."""
    keys = settings.keys
    want = keys.partitions
    raw: Any = await redis.get(keys.layout)
    if raw is None and await redis.set(keys.layout, want, nx=True):
        return
    raw = raw if raw is not None else await redis.get(keys.layout)
    had = int(raw)
    if had == want:
        return
    backlog, live = await _left(redis, Keys(keys.namespace, had))
    if backlog or live:
        raise ServerRefused(
            f"PATCHLOG_PARTITIONS={want}, but the pipeline in namespace {keys.namespace!r} "
            f"runs with {had} ({keys.layout}): {backlog} normalized entries not yet "
            f"decided, {len(live)} live workers ({', '.join(live[:4]) or 'none'}); "
            f"stop every worker, drain with PATCHLOG_PARTITIONS={had} "
            f"(patchlog worker execute --burst), then start with {want}"
        )
    await redis.set(keys.layout, want)
    log.warning("partition count changed", was=had, now=want, record=keys.layout)
