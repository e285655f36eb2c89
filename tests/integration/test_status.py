"""``patchlog status`` as an operator reads it, checked against the server's own answers."""

from __future__ import annotations

import json
from typing import Any

from redis.asyncio import Redis

from patchlog.streams.client import Client
from patchlog.streams.scripts import Scripts
from patchlog.streams.settings import Settings
from tests.integration.helpers import drain, patchlog


async def test_status_json_matches_xinfo_field_by_field(
    redis: Redis, settings: Settings, scripts: Scripts
) -> None:
    """Stream lengths are XLEN's, each group's lag and pending XINFO GROUPS', and the
    oldest pending age and consumers are present; the text view names both groups."""
    assert settings.redis_url is not None
    client = Client(redis, settings.keys)
    for n in range(30):
        await client.submit("d", 0, ops=[{"op": "insert", "at": 1, "lines": [str(n)]}])
    await drain(redis, settings, scripts)
    for n in range(5):  # a backlog for normalize, some of it read and not acknowledged
        await client.submit("d", 1, ops=[{"op": "insert", "at": 1, "lines": [f"late {n}"]}])
    await redis.xreadgroup("normalize", "held", {settings.keys.patches: ">"}, count=2)
    await redis.set(settings.keys.lease("normalize", "held"), b"{}", px=60_000)
    where = ["--redis-url", settings.redis_url, "--namespace", settings.namespace]
    status, out, err = await patchlog("status", "--json", *where)
    assert status == 0, err
    shown = json.loads(out)
    for name in ("patches", "normalized", "revisions", "outcomes", "dead", "health"):
        assert shown["streams"][name] == await redis.xlen(getattr(settings.keys, name))
    for group, stream in (
        ("normalize", settings.keys.patches),
        ("execute", settings.keys.normalized),
    ):
        info: Any = next(g for g in await redis.xinfo_groups(stream) if g["name"].decode() == group)
        mine = shown["groups"][group]
        assert (mine["lag"], mine["pending"]) == (int(info["lag"]), int(info["pending"]))
    assert shown["groups"]["normalize"]["pending"] == 2
    assert shown["groups"]["normalize"]["lag"] == 3
    assert shown["groups"]["normalize"]["oldest_pending_s"] >= 0
    assert shown["server"]["product"] in ("valkey", "redis")
    # The consumer holding a lease; the drained workers' consumers have none.
    assert shown["workers"] == ["normalize:held"]
    status, out, _ = await patchlog("status", *where)
    assert status == 0
    assert "group       normalize lag 3, pending 2" in out
    assert "group       execute" in out
