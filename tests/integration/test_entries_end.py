"""Every entry ends with exactly one outcome: however large (its outcome and dead letter
carry a bounded copy), and whatever a damaged id record holds (the scripts check what
they read before their first write)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest
from redis.asyncio import Redis

from patchlog.consumers.normalize import NormalizeStage
from patchlog.consumers.runner import Entry, Runner
from patchlog.projections.load import read_document
from patchlog.streams.codec import CUT, ENTRY_CAP, decode_event
from patchlog.streams.connection import connect
from patchlog.streams.schema import DeadLetter, Outcome, OutcomeStatus, RejectCode
from patchlog.streams.scripts import Scripts, load
from patchlog.streams.settings import Settings
from tests.integration.helpers import KINDS, by_src, dedicated_server, drain, outcomes, own_outcome

OPS = '[{"op":"insert","at":1,"lines":["x"]}]'
CONTROL = "\x01" * 600_000
"""600 KB that JSON writes as 3.6 MB (``\\u0001`` each), over a 1 MiB argument limit."""


class Poisoned(NormalizeStage):
    """Raises on every entry of the document ``poison``, like a stage bug would."""

    async def handle(self, consumer: str, entries: Sequence[Entry]) -> None:
        if any(fields.get(b"doc") == b"poison" for _, fields in entries):
            raise RuntimeError("boom on poison")
        await super().handle(consumer, entries)


async def poisoned_drain(redis: Redis, settings: Settings, scripts: Scripts) -> None:
    """Normalize with ``Poisoned`` until its stream and pending list are empty."""
    stage = Poisoned(redis, settings, scripts)
    await asyncio.wait_for(Runner(redis, settings, scripts, stage, "n0", drain=True).run(), 60)


def netstrings(fields: dict[str, str]) -> bytes:
    """The bytes ``entry_sha256`` digests, written out independently of the code."""
    out = b""
    for name, value in fields.items():
        for raw in (name.encode(), value.encode()):
            out += str(len(raw)).encode() + b":" + raw + b","
    return out


def assert_cut(
    copy: dict[str, str], size: int | None, digest: str | None, sent: dict[str, str]
) -> None:
    """A copy of ``sent`` cut to the cap, with the marker, the whole size and digest."""
    assert len(msgspec.json.encode(copy)) <= ENTRY_CAP
    assert copy["author"].endswith(CUT)
    assert {k: v for k, v in copy.items() if k != "author"} == {
        k: v for k, v in sent.items() if k != "author"
    }
    assert size == sum(len(k.encode()) + len(v.encode()) for k, v in sent.items())
    assert digest == hashlib.sha256(netstrings(sent)).hexdigest()


@pytest.fixture(params=KINDS)
async def tight(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Settings, Redis, Scripts]]:
    """A server of its own that refuses any argument over 1 MiB (proto-max-bulk-len)."""
    async with dedicated_server(tmp_path, request.param) as srv:
        settings = Settings(
            redis_url=srv.url, block_ms=100, lease_ms=1500, claim_interval=0.2, batch=64
        )
        redis = connect(settings, srv.url, name="patchlog-test", block_ms=2000)
        try:
            await redis.config_set("proto-max-bulk-len", "1mb")
            yield settings, redis, load(redis)
        finally:
            await redis.aclose()


async def test_an_entry_too_big_for_its_outcome_still_ends(
    tight: tuple[Settings, Redis, Scripts],
) -> None:
    """A rejected entry whose escaped fields exceed the server's argument limit gets one
    outcome, carrying a copy cut to the cap with the marker, its size and its digest."""
    settings, redis, scripts = tight
    sent = {"doc": "d", "base": "0", "ops": OPS, "author": CONTROL, "id": "big"}
    big: Any = await redis.xadd(settings.keys.patches, sent)  # type: ignore[arg-type]
    fine: Any = await redis.xadd(settings.keys.patches, {"doc": "e", "base": "0", "ops": OPS})
    await drain(redis, settings, scripts, timeout=30)
    rows = {o.src: o for o in await outcomes(redis, settings)}
    assert set(by_src(list(rows.values())).values()) == {1}
    outcome = rows[big.decode()]
    assert (outcome.status, outcome.code) == (OutcomeStatus.REJECTED, RejectCode.INVALID)
    assert outcome.entry is not None
    assert_cut(outcome.entry, outcome.entry_bytes, outcome.entry_sha256, sent)
    assert (await own_outcome(redis, settings, big)).code is RejectCode.INVALID
    assert rows[fine.decode()].status is OutcomeStatus.COMMITTED


async def test_an_entry_too_big_for_its_dead_letter_still_ends(
    tight: tuple[Settings, Redis, Scripts],
) -> None:
    """An entry that keeps failing and whose escaped fields exceed the server's argument
    limit reaches the dead-letter stream, cut to the cap, with one rejected outcome."""
    settings, redis, scripts = tight
    sent = {"doc": "poison", "base": "0", "ops": OPS, "author": CONTROL}
    big: Any = await redis.xadd(settings.keys.patches, sent)  # type: ignore[arg-type]
    await poisoned_drain(redis, settings, scripts)
    dead: Any = await redis.xrange(settings.keys.dead)
    assert len(dead) == 1
    letter = decode_event(DeadLetter, dead[0][1])
    assert_cut(letter.entry, letter.entry_bytes, letter.entry_sha256, sent)
    rows = await outcomes(redis, settings)
    assert [(o.src, o.status) for o in rows] == [(big.decode(), OutcomeStatus.REJECTED)]
    assert rows[0].entry is not None
    assert_cut(rows[0].entry, rows[0].entry_bytes, rows[0].entry_sha256, sent)
    assert "failed 5 times" in (await own_outcome(redis, settings, big)).message  # type: ignore[operator]


async def damage(redis: Redis, key: str, how: str) -> None:
    """Leave a damaged id record at ``key``."""
    if how == "string":
        await redis.set(key, "oops")
    elif how == "not-json":
        await redis.rpush(key, "{not json")
    else:
        await redis.rpush(key, '{"digest":"abc","rev":"one"}')


DAMAGES = ["string", "not-json", "not-an-outcome"]


async def only_outcome(redis: Redis, settings: Settings, entry: Any) -> Outcome:
    """The one outcome of ``entry``; the stream holds no other outcome of it."""
    rows = [o for o in await outcomes(redis, settings) if o.src == entry.decode()]
    assert len(rows) == 1, rows
    told = await own_outcome(redis, settings, entry)
    assert (told.status, told.code) == (rows[0].status, rows[0].code)
    return rows[0]


@pytest.mark.parametrize("how", DAMAGES)
async def test_a_damaged_id_record_does_not_repeat_a_rejection(
    redis: Redis, settings: Settings, scripts: Scripts, how: str
) -> None:
    """Normalize rejects a malformed entry once, whatever its id's record holds."""
    await damage(redis, settings.keys.patch_id("c"), how)
    bad: Any = await redis.xadd(settings.keys.patches, {"doc": "d", "base": "x", "id": "c"})
    await drain(redis, settings, scripts, timeout=30)
    outcome = await only_outcome(redis, settings, bad)
    assert (outcome.status, outcome.code) == (OutcomeStatus.REJECTED, RejectCode.INVALID)


@pytest.mark.parametrize("how", DAMAGES)
async def test_a_damaged_id_record_does_not_repeat_a_dead_letter(
    redis: Redis, settings: Settings, scripts: Scripts, how: str
) -> None:
    """An entry that keeps failing is dead-lettered once, whatever its id's record holds."""
    await damage(redis, settings.keys.patch_id("c"), how)
    poison: Any = await redis.xadd(
        settings.keys.patches, {"doc": "poison", "base": "0", "ops": OPS, "id": "c"}
    )
    await poisoned_drain(redis, settings, scripts)
    assert await redis.xlen(settings.keys.dead) == 1
    outcome = await only_outcome(redis, settings, poison)
    assert (outcome.status, outcome.code) == (OutcomeStatus.REJECTED, RejectCode.INVALID)


@pytest.mark.parametrize("how", DAMAGES)
async def test_a_damaged_id_record_stops_its_commit_before_any_write(
    redis: Redis, settings: Settings, scripts: Scripts, how: str
) -> None:
    """A patch whose id record is damaged is never applied: the commit script refuses
    before writing, the patch is dead-lettered with one outcome, and the other patches
    of its batch commit."""
    await damage(redis, settings.keys.patch_id("c"), how)
    patch: Any = await redis.xadd(
        settings.keys.patches, {"doc": "d", "base": "0", "ops": OPS, "id": "c"}
    )
    other: Any = await redis.xadd(settings.keys.patches, {"doc": "e", "base": "0", "ops": OPS})
    await drain(redis, settings, scripts, timeout=60)
    outcome = await only_outcome(redis, settings, patch)
    assert (outcome.status, outcome.code) == (OutcomeStatus.REJECTED, RejectCode.INVALID)
    assert "id record" in (outcome.message or "")
    assert (await only_outcome(redis, settings, other)).status is OutcomeStatus.COMMITTED
    assert await read_document(redis, settings.keys, "d") == (0, [])
    assert await redis.xlen(settings.keys.dead) == 1
