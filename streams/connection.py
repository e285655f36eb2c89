"""Connections: redis-py asyncio (hiredis parser) with a timeout on every call, retries
with jittered exponential backoff, and a check that the server is fit for patchlog."""

from __future__ import annotations

import msgspec
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from patchlog.streams.errors import ServerError, ServerRefused
from patchlog.streams.settings import Settings

__all__ = ["ServerInfo", "check_server", "connect"]


def connect(settings: Settings, url: str, *, name: str = "patchlog", block_ms: int = 0) -> Redis:
    """A client for ``url``. Every call times out after ``settings.socket_timeout``
    seconds plus ``block_ms`` (for the blocking reads made on this client)."""
    return Redis.from_url(
        url,
        socket_timeout=settings.socket_timeout + block_ms / 1000,
        socket_connect_timeout=settings.connect_timeout,
        retry=Retry(ExponentialWithJitterBackoff(base=0.01, cap=1.0), settings.retries),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        health_check_interval=30,
        client_name=name,
    )


class ServerInfo(msgspec.Struct, frozen=True):
    """What patchlog learned about its server."""

    product: str
    """``valkey`` or ``redis``."""
    version: tuple[int, int, int]
    policy: str


def _version(text: str) -> tuple[int, int, int]:
    parts = [int(p) for p in text.split(".")[:3] if p.isdigit()]
    while len(parts) < 3:
        parts.append(0)
    return parts[0], parts[1], parts[2]


async def check_server(redis: Redis) -> ServerInfo:
    """Check that the server is Redis >= 7.0 or Valkey >= 7.2 and never evicts keys.

    Raises ``ServerRefused`` naming the problem and the fix, ``ServerError`` if the
    server cannot be reached.
    """
    try:
        info = await redis.info("server")
        memory = await redis.info("memory")
    except RedisError as err:
        raise ServerError(f"cannot reach the server: {err}") from err
    if "valkey_version" in info:
        product, version = "valkey", _version(str(info["valkey_version"]))
        if version < (7, 2, 0):
            raise ServerRefused(f"Valkey {info['valkey_version']} is too old: 7.2 or later")
    else:
        product, version = "redis", _version(str(info.get("redis_version", "0")))
        if version < (7, 0, 0):
            raise ServerRefused(f"Redis {info.get('redis_version')} is too old: 7.0 or later")
    policy = str(memory.get("maxmemory_policy", ""))
    if not policy:
        try:
            policy = str((await redis.config_get("maxmemory-policy"))["maxmemory-policy"])
        except (ResponseError, KeyError):
            policy = "unknown"
    if policy != "noeviction":
        raise ServerRefused(
            f"maxmemory-policy is {policy!r}: the server could evict patchlog's keys "
            "(revisions, idempotency records); set it to noeviction"
        )
    return ServerInfo(product, version, policy)
