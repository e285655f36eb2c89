"""``patchlog status``: one view of the server, the streams, the groups, the workers,
dead letters and the latest health result."""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis

from patchlog.ops.health import GROUPS, Prober, latest, live_workers
from patchlog.streams.keys import Keys
from patchlog.streams.settings import Settings

__all__ = ["STREAMS", "gather_status", "render_status", "stream_lengths"]

STREAMS = ("patches", "normalized", "revisions", "outcomes", "dead", "health")
"""The ``Keys`` properties naming each stream, in pipeline order."""


async def stream_lengths(redis: Redis, keys: Keys) -> dict[str, int]:
    """Each stream's length by role (``STREAMS``), the partitions of one role summed."""
    roles = [(name, keys.role_streams(name)) for name in STREAMS]
    async with redis.pipeline(transaction=False) as pipe:
        for _, streams in roles:
            for stream in streams:
                pipe.xlen(stream)
        replies: list[Any] = await pipe.execute()
    out: dict[str, int] = {}
    at = 0
    for name, streams in roles:
        out[name] = sum(int(n) for n in replies[at : at + len(streams)])
        at += len(streams)
    return out


async def gather_status(redis: Redis, settings: Settings) -> dict[str, Any]:
    """Everything ``status`` shows, as plain data (what ``--json`` prints). Each part is
    read under ``health_probe_timeout``; one that is not read says so instead."""
    keys = settings.keys
    prober = Prober(redis, settings)
    timeout = settings.health_probe_timeout

    async def lengths() -> dict[str, int]:
        return await stream_lengths(redis, keys)

    async def server() -> dict[str, Any]:
        info: Any = await redis.info("server")
        probed = await prober.probe_server()  # the prober's probes, not judged here
        probed.pop("verdict")
        return {
            "product": "valkey" if "valkey_version" in info else "redis",
            "version": info.get("valkey_version") or info.get("redis_version"),
            **probed,
        }

    async def persistence() -> dict[str, Any]:
        probed = await prober.probe_persistence()
        probed.pop("verdict")
        return probed

    async def groups() -> dict[str, Any]:
        out = {}
        for group, stream in GROUPS:
            probed = await prober.probe_group(group, stream)()
            probed.pop("verdict")
            probed.pop("sample")
            out[group] = probed
        return out

    async def workers() -> list[str]:
        return await live_workers(redis, keys)

    async def health() -> Any:
        result = await latest(redis, keys)
        if result is None:
            return None
        reasons = result.checks.get("reasons", [])
        return {"status": result.status.value, "at": result.at, "reasons": reasons}

    parts = {
        "server": server,
        "persistence": persistence,
        "streams": lengths,
        "groups": groups,
        "workers": workers,
        "health": health,
    }
    done = await asyncio.gather(
        *(asyncio.wait_for(p(), timeout) for p in parts.values()), return_exceptions=True
    )
    return {
        name: (
            {"error": str(value) or type(value).__name__}
            if isinstance(value, BaseException)
            else value
        )
        for name, value in zip(parts, done, strict=True)
    }


def render_status(status: dict[str, Any]) -> str:
    """The status as one screen of text."""
    lines: list[str] = []
    server = status["server"]
    if "error" in server:
        lines.append(f"server      unreachable: {server['error']}")
    else:
        memory = f"{server['used_memory'] / 2**20:.1f} MiB"
        if server["maxmemory"]:
            memory += f" of {server['maxmemory'] / 2**20:.0f} MiB"
        lines.append(
            f"server      {server['product']} {server['version']}, "
            f"ping {server['ping_ms']:.2f} ms, memory {memory}"
        )
    persistence = status["persistence"]
    if "error" not in persistence:
        lines.append(
            "persistence aof "
            + ("on" if str(persistence.get("aof_enabled")) == "1" else "off")
            + f", last write {persistence.get('aof_last_write_status')}"
        )
    streams = status["streams"]
    if "error" not in streams:
        lines.append("streams     " + ", ".join(f"{k} {v:,}" for k, v in streams.items()))
    groups = status["groups"]
    if "error" not in groups:
        for name, g in groups.items():
            oldest = g["oldest_pending_s"]
            lines.append(
                f"group       {name:<9} lag {g['lag']:,}, pending {g['pending']:,}"
                + (f" (oldest {oldest:.1f} s)" if oldest is not None else "")
                + f", consumers {g['consumers']}"
            )
    workers = status["workers"]
    if isinstance(workers, list):
        lines.append("workers     " + (", ".join(workers) if workers else "none"))
    health = status["health"]
    if health is None:
        lines.append("health      no result yet (patchlog up starts a prober)")
    elif "error" not in health:
        lines.append(
            f"health      {health['status']}"
            + "".join(f"\n            {r}" for r in health["reasons"])
        )
    return "\n".join(lines) + "\n"
