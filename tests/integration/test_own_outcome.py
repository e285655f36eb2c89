"""Each submitter learns the outcome of its own submission (one BLMOVE on its entry's
outcome key), whatever other entries carry the same id."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest
from redis.asyncio import Redis

from patchlog.projections.load import read_document
from patchlog.streams.client import Client
from patchlog.streams.schema import IdRecord, OutcomeStatus, RejectCode
from patchlog.streams.scripts import Scripts
from patchlog.streams.settings import Settings
from tests.integration.helpers import by_src, drain, outcomes, own_outcome

MINE = '[{"op":"insert","at":1,"lines":["mine"]}]'
THEIRS = '[{"op":"insert","at":1,"lines":["theirs"]}]'


async def xadd(redis: Redis, settings: Settings, **fields: str) -> Any:
    """Submit raw fields as any client would; the ingress entry id."""
    return await redis.xadd(settings.keys.patches, fields)  # type: ignore[arg-type]


async def id_record(redis: Redis, settings: Settings, patch_id: str) -> IdRecord:
    """The id record of ``patch_id`` (it must exist)."""
    raw: Any = await redis.lindex(settings.keys.patch_id(patch_id), 0)
    assert raw is not None
    return msgspec.json.decode(raw, type=IdRecord)


@pytest.mark.parametrize("together", [False, True], ids=["later", "same-batch"])
async def test_another_payload_under_a_used_id_learns_id_reuse(
    redis: Redis, settings: Settings, scripts: Scripts, together: bool
) -> None:
    """A resubmission under a used id with another payload is told rejected/id_reuse, the
    first submitter committed, and the id record stays the first's."""
    client = Client(redis, settings.keys)
    first = await client.submit("d", 0, ops=msgspec.json.decode(MINE), id="p")
    if not together:
        await drain(redis, settings, scripts)
    second = await client.submit("d", 0, ops=msgspec.json.decode(THEIRS), id="p")
    await drain(redis, settings, scripts)
    mine, theirs = await client.wait(first, 5), await client.wait(second, 5)
    assert (mine.status, mine.rev, mine.src) == (OutcomeStatus.COMMITTED, 1, first.entry)
    assert (theirs.status, theirs.code, theirs.src) == (
        OutcomeStatus.REJECTED,
        RejectCode.ID_REUSE,
        second.entry,
    )
    owner = await client.outcome("p")
    assert owner is not None
    assert (owner.status, owner.src) == (OutcomeStatus.COMMITTED, first.entry)
    assert await read_document(redis, settings.keys, "d") == (1, ["mine"])


@pytest.mark.parametrize("malformed_first", [False, True], ids=["valid-first", "malformed-first"])
async def test_a_malformed_entry_never_answers_for_the_valid_patch_of_its_id(
    redis: Redis, settings: Settings, scripts: Scripts, malformed_first: bool
) -> None:
    """A malformed entry carrying the id of a valid patch not yet decided: each waiter,
    blocked before either is decided, learns its own outcome (committed, rejected/
    invalid), and the id record is the valid patch's."""
    valid = {"doc": "d", "base": "0", "id": "p", "ops": MINE}
    malformed = {"doc": "d", "base": "x", "id": "p", "ops": MINE}
    order = [malformed, valid] if malformed_first else [valid, malformed]
    entries = [await xadd(redis, settings, **fields) for fields in order]
    good, bad = (entries[1], entries[0]) if malformed_first else (entries[0], entries[1])
    waiters = [asyncio.create_task(own_outcome(redis, settings, e)) for e in (good, bad)]
    await asyncio.sleep(0.2)  # both block before anything is decided
    await drain(redis, settings, scripts)
    committed, rejected = await asyncio.gather(*waiters)
    assert (committed.status, committed.rev, committed.src) == (
        OutcomeStatus.COMMITTED,
        1,
        good.decode(),
    )
    assert (rejected.status, rejected.code, rejected.src) == (
        OutcomeStatus.REJECTED,
        RejectCode.INVALID,
        bad.decode(),
    )
    owner = await id_record(redis, settings, "p")
    assert (owner.status, owner.src) == (OutcomeStatus.COMMITTED, good.decode())
    rows = await outcomes(redis, settings)
    assert set(by_src(rows).values()) == {1}
    assert len(rows) == 2


@pytest.mark.parametrize("together", [False, True], ids=["later", "same-batch"])
async def test_a_replay_learns_duplicate_of_the_first_revision(
    redis: Redis, settings: Settings, scripts: Scripts, together: bool
) -> None:
    """The same payload resubmitted under its id is told duplicate, pointing at the
    revision that applied the first; its answer expires after the outcome TTL."""
    await xadd(redis, settings, doc="d", base="0", id="p0", ops=THEIRS)  # revision 1
    first = await xadd(redis, settings, doc="d", base="1", id="p", ops=MINE)
    if not together:
        await drain(redis, settings, scripts)
    again = await xadd(redis, settings, doc="d", base="1", id="p", ops=MINE)
    await drain(redis, settings, scripts)
    mine, replay = (
        await own_outcome(redis, settings, first),
        await own_outcome(redis, settings, again),
    )
    assert (mine.status, mine.rev) == (OutcomeStatus.COMMITTED, 2)
    assert (replay.id, replay.doc, replay.status, replay.rev, replay.src) == (
        "p",
        "d",
        OutcomeStatus.DUPLICATE,
        2,
        again.decode(),
    )
    assert (replay.code, replay.message) == (None, None)
    ttl = await redis.pttl(settings.keys.entry_outcome(again.decode()))
    assert 0 < ttl <= settings.outcome_ttl * 1000
    assert await read_document(redis, settings.keys, "d") == (2, ["mine", "theirs"])


@pytest.mark.parametrize(
    ("ops", "status", "code"),
    [
        ('[{"op":"delete","from":2}]', OutcomeStatus.REJECTED, RejectCode.BOUNDS),
        ('[{"op":"replace","from":1,"lines":["mine"]}]', OutcomeStatus.NOOP, None),
    ],
    ids=["rejected", "noop"],
)
async def test_a_replay_of_a_patch_decided_without_a_revision_learns_the_same(
    redis: Redis,
    settings: Settings,
    scripts: Scripts,
    ops: str,
    status: OutcomeStatus,
    code: RejectCode | None,
) -> None:
    """A patch rejected against its document, or one that changes nothing (noop at the
    head), owns its id: its replay is told the same status, code, message and revision,
    with its own src; no revision is made."""
    await xadd(redis, settings, doc="d", base="0", id="p0", ops=MINE)  # revision 1
    first = await xadd(redis, settings, doc="d", base="1", id="r", ops=ops)
    await drain(redis, settings, scripts)
    again = await xadd(redis, settings, doc="d", base="1", id="r", ops=ops)
    await drain(redis, settings, scripts)
    told, replay = (
        await own_outcome(redis, settings, first),
        await own_outcome(redis, settings, again),
    )
    assert (told.id, told.status, told.code, told.rev) == ("r", status, code, 1)
    assert (replay.status, replay.code, replay.message, replay.rev) == (
        told.status,
        told.code,
        told.message,
        told.rev,
    )
    assert (told.src, replay.src) == (first.decode(), again.decode())
    assert await read_document(redis, settings.keys, "d") == (1, ["mine"])
