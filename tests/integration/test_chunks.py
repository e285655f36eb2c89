"""Execute decides the next chunk of a batch while the server commits the previous one:
a commit that undoes speculative state must not let later patches be decided on a
chain of revisions that does not exist."""

from __future__ import annotations

import msgspec
from redis.asyncio import Redis

from projections.rebuild import verify
from streams.client import Client
from streams.log import load_content
from streams.schema import OutcomeStatus
from streams.scripts import Scripts
from streams.settings import Settings
from tests.integration.helpers import drain, outcomes


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
    assert (p2, OutcomeStatus.COMMITTED, 3) in decided
    assert (p3, OutcomeStatus.COMMITTED, 4) in decided
    content = await load_content(redis, settings.keys, "d")
    assert content.lines == ["Z", "A", "B", "c"]
    report = await verify(redis, settings.keys)
    assert report.ok, report
