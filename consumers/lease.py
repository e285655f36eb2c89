"""A worker's lease: a key with a TTL, renewed while the worker lives.

Other workers claim a consumer's pending entries only once its lease key is gone, so a
slow worker keeps its entries and a dead one loses them within ``lease_ms``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time

import msgspec
import structlog
from redis.asyncio import Redis

from patchlog.streams.errors import ServerError, ServerUnavailable

__all__ = ["Lease", "LeaseInfo"]

log = structlog.get_logger("patchlog.lease")


class LeaseInfo(msgspec.Struct, kw_only=True):
    """What a lease tells about its worker (the key's JSON value)."""

    host: str
    pid: int
    stage: str
    consumer: str
    started: float
    """Unix time the worker started."""
    renewed: float = 0.0
    processed: int = 0
    failed: int = 0


_ENCODER = msgspec.json.Encoder()


class Lease:
    """Holds ``key`` for ``ttl_ms`` at a time, renewing every third of it."""

    def __init__(self, redis: Redis, key: str, ttl_ms: int, *, stage: str, consumer: str) -> None:
        self.redis = redis
        self.key = key
        self.ttl_ms = ttl_ms
        self.info = LeaseInfo(
            host=socket.gethostname(),
            pid=os.getpid(),
            stage=stage,
            consumer=consumer,
            started=time.time(),
        )
        self._task: asyncio.Task[None] | None = None
        self._done = asyncio.Event()

    async def renew(self) -> None:
        """Write the lease now (raises ``ServerError`` if the server cannot be reached).

        A server out of memory refuses the write (OOM): the lease is then only extended
        (PEXPIRE needs no memory), so that live workers are not taken for dead ones and
        robbed of their entries while memory is short."""
        self.info.renewed = time.time()
        try:
            await self.redis.set(self.key, _ENCODER.encode(self.info), px=self.ttl_ms)
        except ServerUnavailable as err:
            if err.code != "OOM" or not await self.redis.pexpire(self.key, self.ttl_ms):
                raise

    async def start(self) -> None:
        """Take the lease and keep renewing it in the background."""
        await self.renew()
        self._task = asyncio.create_task(self._loop(), name=f"lease {self.key}")

    async def _loop(self) -> None:
        interval = self.ttl_ms / 3000
        while not self._done.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._done.wait(), interval)
                return
            try:
                await self.renew()
            except ServerError as err:
                log.warning(
                    "lease renewal failed", key=self.key, error=f"{type(err).__name__}: {err}"
                )

    async def release(self) -> None:
        """Stop renewing and delete the lease, so others may claim what is left at once."""
        if self._task is not None:
            # Let a renewal in flight finish: cancelling a command midway can leave the
            # connection in a state that makes the delete below wait.
            self._done.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._task, self.ttl_ms / 1000)
            self._task = None
        with contextlib.suppress(ServerError):
            await self.redis.delete(self.key)
