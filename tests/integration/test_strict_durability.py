"""Strict durability: a submission whose fsync cannot be confirmed still tells the caller
what it appended, so that the natural retry is harmless."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from patchlog.projections.load import read_document
from patchlog.streams.client import Client
from patchlog.streams.connection import connect
from patchlog.streams.errors import NotDurable, ServerRefused
from patchlog.streams.schema import OutcomeStatus
from patchlog.streams.scripts import load
from patchlog.streams.settings import Durability, Settings
from tests.integration.helpers import KINDS, dedicated_server, drain, outcomes

OPS = [{"op": "insert", "at": 1, "lines": ["once"]}]


async def test_a_submission_whose_fsync_fails_gives_its_ids(tmp_path: Path) -> None:
    """When WAITAOF fails after the XADD (AOF turned off), the caller gets NotDurable with
    the generated patch id and the entry id; a retry under that id applies once."""
    async with dedicated_server(tmp_path, "valkey") as srv:  # Redis 7.0 has no WAITAOF
        settings = Settings(redis_url=srv.url, durability=Durability.STRICT, block_ms=100)
        redis = connect(settings, srv.url, name="patchlog-test", block_ms=2000)
        try:
            await redis.config_set("appendonly", "no")
            strict = Client(redis, settings.keys, settings.durability)
            with pytest.raises(NotDurable) as caught:
                await strict.submit("d", 0, ops=OPS)
            err = caught.value
            rows: Any = await redis.xrange(settings.keys.patches)
            assert [(e.decode(), f[b"id"].decode()) for e, f in rows] == [(err.entry, err.patch_id)]
            assert err.patch_id in str(err)
            await Client(redis, settings.keys).submit("d", 0, ops=OPS, id=err.patch_id)
            await drain(redis, settings, load(redis))
            statuses = [o.status for o in await outcomes(redis, settings)]
            assert statuses == [OutcomeStatus.COMMITTED, OutcomeStatus.DUPLICATE]
            assert await read_document(redis, settings.keys, "d") == (1, ["once"])
        finally:
            await redis.aclose()


@pytest.mark.skipif("redis" not in KINDS, reason="Debian's Redis 7.0 is not among the servers")
async def test_strict_durability_is_refused_by_a_server_without_waitaof(tmp_path: Path) -> None:
    """On Redis 7.0 (no WAITAOF) a strict submission is refused before anything is
    appended: it could never be confirmed."""
    async with dedicated_server(tmp_path, "redis") as srv:
        settings = Settings(redis_url=srv.url, durability=Durability.STRICT)
        redis = connect(settings, srv.url, name="patchlog-test", block_ms=2000)
        try:
            with pytest.raises(ServerRefused, match="needs WAITAOF"):
                await Client(redis, settings.keys, settings.durability).submit("d", 0, ops=OPS)
            assert not await redis.exists(settings.keys.patches)
        finally:
            await redis.aclose()
