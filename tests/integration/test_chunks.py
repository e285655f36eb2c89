"""Execute decides the next chunk of a batch while the server commits the previous one:
a commit that undoes speculative state must not let later patches be decided on a
chain of revisions that does not exist."""

from __future__ import annotations

import asyncio

import msgspec
from redis.asyncio import Redis

from patchlog.consumers.execute import ExecuteStage
from patchlog.consumers.runner import Runner
from patchlog.projections.load import load_content
from patchlog.projections.rebuild import rebuild
from patchlog.streams.client import Client
from patchlog.streams.schema import OutcomeStatus, RejectCode
from patchlog.streams.scripts import Scripts
from patchlog.streams.settings import Settings
from tests.integration.helpers import drain, outcomes, runners


async def test_a_replay_answered_mid_batch_does_not_lose_later_patches(
    redis: Redis, settings: Settings, scripts: Scripts
) -> None:
    """One chunk per patch. A client's replay of a committed patch is decided as a
    noop and answered 'duplicate' by the script (its document is rolled back) while the
    next chunk is already decided; the patch after it, decided in a later round, is
    rebased over what really happened and committed, not lost as a noop."""
    settings = msgspec.structs.replace(settings, commit_chunk=1)
    client = Client(redis, settings.keys)
    await client.submit("d", 0, ops=[{"op": "insert", "at": 1, "lines": ["a", "b", "c"]}])
    first = [{"op": "replace", "from": 1, "lines": ["A"]}]
    await client.submit("d", 1, ops=first, id="p0")
    await drain(redis, settings, scripts)

    await client.submit("d", 1, ops=first, id="p0")  # the client's retry of p0
    p2 = await client.submit("d", 2, ops=[{"op": "replace", "from": 2, "lines": ["B"]}])
    p3 = await client.submit("d", 2, ops=[{"op": "insert", "at": 1, "lines": ["Z"]}])
    await drain(redis, settings, scripts)

    decided = {(o.id, o.status, o.rev) for o in await outcomes(redis, settings)}
    assert ("p0", OutcomeStatus.DUPLICATE, 2) in decided
    assert (p2.id, OutcomeStatus.COMMITTED, 3) in decided
    assert (p3.id, OutcomeStatus.COMMITTED, 4) in decided
    content = await load_content(redis, settings.keys, "d")
    assert content.lines == ["Z", "A", "B", "c"]
    report = await rebuild(redis, settings.keys, every=settings.snapshot_every)
    assert report.ok, report


async def _run(*runs: Runner) -> None:
    await asyncio.wait_for(asyncio.gather(*(r.run() for r in runs)), 60)


async def _through(redis: Redis, settings: Settings, scripts: Scripts, stale: ExecuteStage) -> None:
    """Normalize what was submitted, then let ``stale`` (and only it) execute it."""
    await _run(*runners(redis, settings, scripts, execute=0))
    await _run(Runner(redis, settings, scripts, stale, "stale", drain=True))


async def _stale_worker(
    redis: Redis, settings: Settings, scripts: Scripts, client: Client
) -> ExecuteStage:
    """A worker whose cache holds d = [a, a, b] at revision 1 while another worker has
    committed revision 2 (line 1 deleted): the same content as deleting line 2."""
    stale = ExecuteStage(redis, settings, scripts)
    await client.submit("d", 0, ops=[{"op": "insert", "at": 1, "lines": ["a", "a", "b"]}])
    await client.submit("e", 0, ops=[{"op": "insert", "at": 1, "lines": ["x"]}], id="R")
    await _through(redis, settings, scripts, stale)
    await client.submit("d", 1, ops=[{"op": "delete", "from": 1}], id="other")
    await drain(redis, settings, scripts)
    return stale


async def test_equal_content_through_another_revision_fails_the_head_check(
    redis: Redis, settings: Settings, scripts: Scripts
) -> None:
    """X (delete line 2) loses the race to another worker's revision 2 (delete line 1),
    which leaves the same content. Y, decided in the next chunk on top of X, must not
    pass the head check on that equal content: rebased over what really happened, Y
    touches the deleted line and is a conflict, and X commits."""
    settings = msgspec.structs.replace(settings, commit_chunk=1)
    client = Client(redis, settings.keys)
    stale = await _stale_worker(redis, settings, scripts, client)
    await client.submit("d", 1, ops=[{"op": "delete", "from": 2}], id="X")
    await client.submit("d", 1, ops=[{"op": "replace", "from": 1, "lines": ["Z"]}], id="Y")
    await _through(redis, settings, scripts, stale)

    decided = {o.id: (o.status, o.rev, o.code) for o in await outcomes(redis, settings)}
    assert decided["X"] == (OutcomeStatus.COMMITTED, 3, None)
    assert decided["Y"][0] is OutcomeStatus.REJECTED
    assert decided["Y"][2] is RejectCode.CONFLICT
    assert (await load_content(redis, settings.keys, "d")).lines == ["b"]
    assert (await rebuild(redis, settings.keys, every=settings.snapshot_every)).ok


async def test_a_reused_id_in_a_chunk_does_not_corrupt_the_cached_history(
    redis: Redis, settings: Settings, scripts: Scripts
) -> None:
    """R reuses an id with another payload (answered 'reuse'); Y, decided on top of R
    in the same chunk, meets equal content at the head. Y is decided again on the real
    revision 2, and a later Q on an old base is rebased through the real history (a
    conflict), not through R's ops."""
    client = Client(redis, settings.keys)
    stale = await _stale_worker(redis, settings, scripts, client)
    await client.submit("d", 1, ops=[{"op": "delete", "from": 2}], id="R")
    await client.submit("d", 1, ops=[{"op": "insert", "at": 4, "lines": ["c"]}], id="Y")
    await _through(redis, settings, scripts, stale)
    await client.submit("d", 1, ops=[{"op": "replace", "from": 1, "lines": ["Q"]}], id="Q")
    await _through(redis, settings, scripts, stale)

    decided = {(o.id, o.doc): (o.status, o.rev, o.code) for o in await outcomes(redis, settings)}
    assert decided[("R", "d")][2] is RejectCode.ID_REUSE
    assert decided[("Y", "d")] == (OutcomeStatus.COMMITTED, 3, None)
    assert decided[("Q", "d")][2] is RejectCode.CONFLICT
    assert (await load_content(redis, settings.keys, "d")).lines == ["a", "b", "c"]
    assert (await rebuild(redis, settings.keys, every=settings.snapshot_every)).ok
