"""Execute partitions: each document is decided by one worker, a joining worker takes its
share, and the partitions of a worker that stops renewing are taken over."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from redis.asyncio import Redis

from patchlog.consumers.execute import ExecuteStage
from patchlog.consumers.messages import decode_normalized
from patchlog.consumers.partitions import Partitioned
from patchlog.consumers.runner import Runner
from patchlog.ops.partitioning import check_partitions
from patchlog.ops.status import stream_lengths
from patchlog.streams.client import Client
from patchlog.streams.errors import ServerRefused
from patchlog.streams.keys import EXECUTE, partition_of
from patchlog.streams.schema import OutcomeStatus, RejectCode
from patchlog.streams.scripts import Scripts
from patchlog.streams.settings import Settings
from tests.integration.helpers import outcomes, own_outcome, runners, submit_load

_P = 4


def _partitioned(settings: Settings) -> Settings:
    return msgspec.structs.replace(settings, partitions=_P)


async def _until(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        await asyncio.sleep(0.05)


def _held(worker: Partitioned) -> set[int]:
    return {p for p, (_, task) in worker.runners.items() if not task.done()}


def _stages(worker: Partitioned) -> list[ExecuteStage]:
    return [r.stage for r, _ in worker.runners.values()]  # type: ignore[misc]


def test_a_document_always_goes_to_one_partition() -> None:
    """Routing is a pure function of the name, spread over every partition."""
    names = [f"doc-{i}" for i in range(200)]
    assert [partition_of(n, _P) for n in names] == [partition_of(n, _P) for n in names]
    assert {partition_of(n, _P) for n in names} == set(range(_P))
    assert partition_of("é/ü", 1) == 0


async def test_two_workers_share_the_partitions_and_commit_everything_once(
    redis: Redis, settings: Settings, scripts: Scripts
) -> None:
    """A worker alone holds every partition; a second one joining gets half of them
    handed over; under load every patch ends exactly once, with no lost head race (a
    document is decided by one worker) and both workers committing."""
    settings = _partitioned(settings)
    first = Partitioned(redis, settings, scripts, "w0")
    first_task = asyncio.create_task(first.run())
    await _until(lambda: _held(first) == set(range(_P)), 10, "w0 holds every partition")
    second = Partitioned(redis, settings, scripts, "w1")
    second_task = asyncio.create_task(second.run())
    await _until(
        lambda: len(_held(first)) == _P // 2 and len(_held(second)) == _P // 2,
        15,
        "the partitions split two and two",
    )
    assert _held(first).isdisjoint(_held(second))
    for p in range(_P):
        holder = await redis.get(settings.keys.partition_lease(p))
        assert holder in (b"w0", b"w1")
    (normalize,) = runners(redis, settings, scripts, execute=0, drain=False)
    normalize_task = asyncio.create_task(normalize.run())
    ids = await asyncio.wait_for(
        submit_load(redis, settings, submitters=8, patches=400, docs=30, seed=7, stale=0.0),
        120,
    )
    found = await outcomes(redis, settings)
    assert sorted(o.id for o in found) == sorted(ids)  # one outcome each
    # Concurrent submitters on shared documents: a patch rebased over another may
    # conflict, but none is lost, invalid or left waiting for a base that never came.
    assert {o.code for o in found} <= {None, RejectCode.CONFLICT, RejectCode.BOUNDS}
    assert sum(o.status is OutcomeStatus.COMMITTED for o in found) > len(ids) // 2
    committed = {w: sum(s.counts.get("committed", 0) for s in _stages(w)) for w in (first, second)}
    assert committed[first] > 0
    assert committed[second] > 0
    assert sum(s.cas_retries for w in (first, second) for s in _stages(w)) == 0
    normalize.stop()
    first.stop()
    second.stop()
    await asyncio.wait_for(asyncio.gather(normalize_task, first_task, second_task), 30)
    for p in range(_P):  # both left: nothing held
        assert await redis.get(settings.keys.partition_lease(p)) is None


async def test_partitions_of_a_silent_worker_are_taken_over(
    redis: Redis, settings: Settings, scripts: Scripts
) -> None:
    """A worker that stops renewing (as a killed one does) loses its partitions once
    their leases run out; the survivor takes them and decides what was pending there,
    with the held entries claimed from the silent worker's consumers."""
    settings = _partitioned(settings)
    survivor = Partitioned(redis, settings, scripts, "alive")
    survivor_task = asyncio.create_task(survivor.run())
    await _until(lambda: _held(survivor) == set(range(_P)), 10, "alive holds all")
    # A worker that took partition 0's lease and read its entries, then went silent: its
    # membership and leases expire, and its consumer holds read entries.
    await redis.set(settings.keys.partition_lease(0), "ghost", px=3000)
    await redis.zadd(settings.keys.members, {"ghost": time.time() * 1000 + 1})
    stream = settings.keys.normalized_streams[0]
    await _until(lambda: 0 not in _held(survivor), 10, "alive stopped reading 0")
    (normalize,) = runners(redis, settings, scripts, execute=0, drain=True)
    docs = [d for d in (f"doc-{i}" for i in range(40)) if partition_of(d, _P) == 0][:5]
    client_ids = [await _submit(redis, settings, doc) for doc in docs]
    await asyncio.wait_for(normalize.run(), 30)
    ghost = Runner(
        redis, settings, scripts, ExecuteStage(redis, settings, scripts, stream), "ghost:0"
    )
    await ghost.ensure_group()
    got: Any = await redis.xreadgroup("execute", "ghost:0", {stream: ">"}, count=100)
    assert len(got[0][1]) == len(docs)  # read, never decided
    started = time.monotonic()
    await _until(lambda: 0 in _held(survivor), 3 * settings.lease_ms / 1000 + 5, "taken")
    found = []
    for _ in range(200):
        found = [o for o in await outcomes(redis, settings) if o.id in client_ids]
        if len(found) == len(docs):
            break
        await asyncio.sleep(0.05)
    assert sorted(o.id for o in found) == sorted(client_ids)
    assert all(o.status is OutcomeStatus.COMMITTED for o in found)
    assert time.monotonic() - started < 3 * settings.lease_ms / 1000 + 5
    survivor.stop()
    await asyncio.wait_for(survivor_task, 30)


async def _submit(redis: Redis, settings: Settings, doc: str) -> str:
    client = Client(redis, settings.keys)
    return (await client.submit(doc, 0, ops=[{"op": "insert", "at": 1, "lines": ["x"]}])).id


async def test_normalize_routes_each_patch_to_its_documents_partition(
    redis: Redis, settings: Settings, scripts: Scripts
) -> None:
    """One forward call with rejections among patches of every partition: each patch
    lands in its document's stream only, and the rejections get their outcome."""
    settings = _partitioned(settings)
    keys = settings.keys
    docs = [f"doc-{i}" for i in range(24)]
    sent = [await _submit(redis, settings, doc) for doc in docs]
    bad = [await redis.xadd(keys.patches, {"doc": "x", "base": "zero"}) for _ in range(3)]
    (normalize,) = runners(redis, settings, scripts, execute=0, drain=True)
    await asyncio.wait_for(normalize.run(), 30)
    seen: dict[str, int] = {}
    for p, stream in enumerate(keys.normalized_streams):
        rows: Any = await redis.xrange(stream)
        for _, fields in rows:
            patch = decode_normalized(fields[b"p"])
            assert partition_of(patch.doc, _P) == p
            seen[patch.id] = p
    assert sorted(seen) == sorted(sent)
    assert len(set(seen.values())) == _P
    assert await redis.xlen(keys.normalized) == 0  # the unpartitioned name is unused
    assert (await stream_lengths(redis, keys))["normalized"] == len(sent)  # status's sum
    for entry in bad:
        outcome = await own_outcome(redis, settings, entry)
        assert outcome.code is RejectCode.INVALID


async def test_a_draining_worker_takes_every_free_partition_and_returns(
    redis: Redis, settings: Settings, scripts: Scripts
) -> None:
    """``worker execute --burst`` over partitions: it takes every free one, decides
    what each holds, returns, and leaves nothing held."""
    settings = _partitioned(settings)
    sent = [await _submit(redis, settings, f"doc-{i}") for i in range(30)]
    (normalize,) = runners(redis, settings, scripts, execute=0, drain=True)
    await asyncio.wait_for(normalize.run(), 30)
    burst = Partitioned(redis, settings, scripts, "burst", drain=True)
    await asyncio.wait_for(burst.run(), 60)
    found = {o.id: o.status for o in await outcomes(redis, settings)}
    assert found == dict.fromkeys(sent, OutcomeStatus.COMMITTED)
    for p in range(_P):
        assert await redis.get(settings.keys.partition_lease(p)) is None
    assert await redis.zscore(settings.keys.members, "burst") is None


async def test_a_changed_partition_count_waits_for_a_drained_and_stopped_pipeline(
    redis: Redis, settings: Settings
) -> None:
    """The first worker records the count; one started with another count is refused,
    naming both, while the old layout has an undecided entry or a live worker (its
    entries would be stranded or a document's order split), and accepted, recorded,
    once it is drained and stopped."""
    one = msgspec.structs.replace(settings, partitions=1)
    four = msgspec.structs.replace(settings, partitions=4, lease_ms=300)
    await check_partitions(redis, one)
    assert await redis.hget(one.keys.layout, "partitions") == b"1"
    # A worker that started with 1 a moment ago may not hold a lease yet.
    with pytest.raises(ServerRefused, match="a worker started with it within the last lease"):
        await check_partitions(redis, four)
    await asyncio.sleep(0.4)
    stream = one.keys.normalized
    await redis.xgroup_create(stream, EXECUTE, id="0", mkstream=True)
    await redis.xadd(stream, {"p": "undecided"})
    with pytest.raises(ServerRefused, match=r"PATCHLOG_PARTITIONS=4, but .* runs with 1") as err:
        await check_partitions(redis, four)
    assert "1 normalized entries not yet decided" in str(err.value)
    got: Any = await redis.xreadgroup(EXECUTE, "e1", {stream: ">"})
    await redis.xack(stream, EXECUTE, got[0][1][0][0])
    await redis.set(one.keys.lease(EXECUTE, "e1"), b"{}", px=30_000)  # still running
    with pytest.raises(ServerRefused, match=r"1 live workers \(execute:e1\)"):
        await check_partitions(redis, four)
    await redis.delete(one.keys.lease(EXECUTE, "e1"))
    await check_partitions(redis, four)
    assert await redis.hget(one.keys.layout, "partitions") == b"4"
    await check_partitions(redis, four)  # the recorded count: nothing to check
    await redis.hset(one.keys.layout, "partitions", "many")
    with pytest.raises(ServerRefused, match="damaged"):
        await check_partitions(redis, four)


async def test_a_drainer_is_no_member_and_renewing_takes_nothing(
    redis: Redis, settings: Settings, scripts: Scripts
) -> None:
    """The ownership script: a draining worker takes the free partitions but those it
    already drained, without becoming a member that live workers would hand their share
    to; 'renew' (run while a slow hand-over finishes) keeps the leases held and takes
    nothing."""
    keys = _partitioned(settings).keys
    script_keys = [keys.members] + [keys.partition_lease(p) for p in range(_P)]

    async def call(*args: str | int) -> Any:
        return await scripts.partition(keys=script_keys, args=list(args))

    await call("live", 10_000, "join")
    held, _, _ = await call("burst", 10_000, "any", 1)  # partition 1 drained already
    assert sorted(map(int, held)) == [p for p in range(_P) if p != 1]
    assert await redis.zscore(keys.members, "burst") is None
    held, _, wanted = await call("live", 10_000, "round")
    assert (list(map(int, held)), len(wanted)) == ([1], _P - 1)
    await redis.pexpire(keys.partition_lease(1), 100)
    await call("burst", 10_000, "release", 0)
    assert await call("live", 10_000, "renew") == []
    assert await redis.get(keys.partition_lease(0)) is None  # free, but not taken
    assert await redis.pttl(keys.partition_lease(1)) > 5_000  # renewed


async def test_workers_starting_together_with_two_counts_run_with_one(
    redis: Redis, settings: Settings
) -> None:
    """Twelve workers start at once, half with 4 partitions and half with 8: one count
    is recorded, every worker with it starts, every other one is refused."""
    counts = [4, 8] * 6
    results = await asyncio.gather(
        *(check_partitions(redis, msgspec.structs.replace(settings, partitions=n)) for n in counts),
        return_exceptions=True,
    )
    recorded = int(await redis.hget(settings.keys.layout, "partitions") or 0)
    assert recorded in (4, 8)
    for n, result in zip(counts, results, strict=True):
        if n == recorded:
            assert result is None, result
        else:
            assert isinstance(result, ServerRefused), result
            assert f"runs with {recorded}" in str(result)
