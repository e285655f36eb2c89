"""The pipeline end to end on real servers: outcomes, revisions, replay."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import msgspec
from redis.asyncio import Redis

from patchlog.projections.load import read_document
from patchlog.projections.rebuild import rebuild, verify
from patchlog.streams.client import Client
from patchlog.streams.content import content_hash
from patchlog.streams.log import iter_revisions
from patchlog.streams.schema import OutcomeStatus, RejectCode
from patchlog.streams.scripts import Scripts
from patchlog.streams.settings import Settings
from tests.integration.helpers import by_src, drain, outcomes, runners, submit_load


async def test_patches_flow_to_revisions_and_outcomes(
    redis: Redis, settings: Settings, scripts: Scripts
) -> None:
    """Submitted patches are committed in order, rejected with a code, or noops."""
    client = Client(redis, settings.keys)
    first = await client.submit("notes", 0, ops=[{"op": "insert", "at": 1, "lines": ["a", "b"]}])
    second = await client.submit("notes", 1, ops=[{"op": "replace", "from": 2, "lines": ["B"]}])
    stale = await client.submit("notes", 1, ops=[{"op": "insert", "at": 1, "lines": ["top"]}])
    bounds = await client.submit("notes", 0, ops=[{"op": "delete", "from": 4}])
    noop = await client.submit("notes", 1, ops=[{"op": "replace", "from": 1, "lines": ["a"]}])
    await drain(redis, settings, scripts)
    results = {pid: await client.wait(pid, 5) for pid in (first, second, stale, bounds, noop)}
    assert results[first].status is OutcomeStatus.COMMITTED
    assert results[first].rev == 1
    assert results[second].rev == 2
    assert (results[stale].status, results[stale].rev) == (OutcomeStatus.COMMITTED, 3)
    assert results[bounds].code is RejectCode.BOUNDS
    assert results[bounds].message == (
        "delete 4..4: to 4 is past the end of the base (0 lines); rule: 1 <= from <= to <= len = 0"
    )
    assert results[noop].status is OutcomeStatus.NOOP
    rev, lines = await read_document(client.redis, client.keys, "notes")
    assert (rev, lines) == (3, ["top", "a", "B"])
    head: Any = await redis.hgetall(settings.keys.doc("notes"))
    assert head[b"hash"].decode() == content_hash(lines)
    rows = await outcomes(redis, settings)
    assert set(by_src(rows).values()) == {1}
    assert len(rows) == 5
    assert (await rebuild(redis, settings.keys, every=settings.snapshot_every)).ok


async def test_ten_thousand_patches_each_get_one_outcome_and_replay(
    redis: Redis, settings: Settings, scripts: Scripts
) -> None:
    """10,000 patches, 20 submitters, 200 docs, stale bases, 2+2 workers: one outcome
    each, gap-free revisions, and the log replays to the live state and every hash;
    every checkpoint (one each 10 revisions here) is written and is the logged content."""
    settings = msgspec.structs.replace(settings, snapshot_every=10)
    workers = runners(redis, settings, scripts, normalize=2, execute=2, drain=False)
    tasks = [asyncio.create_task(w.run()) for w in workers]
    ids = await submit_load(redis, settings, submitters=20, patches=10_000, docs=200, seed=1)
    for w in workers:
        w.drain = True
    await asyncio.wait_for(asyncio.gather(*tasks), 180)
    rows = await outcomes(redis, settings)
    counts = by_src(rows)
    assert len(ids) == 10_000
    assert len(rows) == 10_000
    assert set(counts.values()) == {1}
    assert {o.id for o in rows} == set(ids)
    statuses = Counter(o.status for o in rows)
    codes = Counter((o.status.value, o.code.value if o.code else "") for o in rows)
    assert statuses[OutcomeStatus.COMMITTED] > 6_000, codes
    assert codes["rejected", "conflict"] > 0, codes
    rebased = [r async for _, r in iter_revisions(redis, settings.keys) if r.base < r.rev - 1]
    assert len(rebased) > 100
    report = await rebuild(redis, settings.keys, every=settings.snapshot_every)
    assert report.differences == []
    assert report.missing == []  # execute wrote every checkpoint
    assert report.revisions == statuses[OutcomeStatus.COMMITTED]
    chain = await verify(redis, settings.keys)
    assert chain.ok
    assert chain.revisions == report.revisions
    for group, stream in (
        ("normalize", settings.keys.patches),
        ("execute", settings.keys.normalized),
    ):
        assert (await redis.xpending(stream, group))["pending"] == 0
    assert await redis.xlen(settings.keys.dead) == 0
