"""The suite's clients: any-language clients, with nothing of patchlog but the wire format
(XADD to the ingress stream, BLMOVE on an entry's outcome key), recording every step in
the history.

- A chained client owns one document and submits its k-th patch on base k - 1 (append
  line k), without waiting for outcomes: C5 checks they commit in issue order.
- A hot client edits the shared hot documents on a base it read a moment ago: inserts
  at the top (rebased, always committed) and replacements of line 1 (conflicts).

A submission that fails or whose reply is lost is sent again with the same id and
payload (that is what the id is for) until it is acknowledged or the load stops. Half
of the clients leave retries to redis-py's own (``retries=5``); the other half use none
(``retries=0``) and only their own, as FAULT-PLAN section 3 asks.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from patchlog.streams.keys import Keys
from tests.faults.history import Event, Kind, digest, now_ns

__all__ = ["Load", "Submission"]

_JSON = msgspec.json.Encoder()
_RECORD = msgspec.json.Decoder(dict[str, Any])


class Submission(msgspec.Struct, frozen=True):
    """One patch as a client submits it (again and again, until acknowledged)."""

    id: str
    doc: str
    base: int
    ops: bytes
    seq: int = 0


class Load:
    """Clients submitting at ``rate`` patches/s in all, until ``stop``; ``history``
    holds every event."""

    def __init__(
        self,
        url: str,
        keys: Keys,
        *,
        chained: int = 4,
        hot: int = 2,
        rate: float = 300.0,
        socket_timeout: float = 1.0,
        told_every: int = 10,
        seed: int = 0,
    ) -> None:
        self.url = url
        self.keys = keys
        self.chained = chained
        self.hot = hot
        self.rate = rate
        self.socket_timeout = socket_timeout
        self.told_every = told_every
        self.random = random.Random(seed)
        self.history: list[Event] = []
        self.stopping = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self.acked = 0
        self.stopped_at = 0.0
        self._waiting = asyncio.Semaphore(16)  # outcome reads in flight at once

    # -- one submission -------------------------------------------------------------------

    def client(self, own_retries: bool) -> Redis:
        """A connection as one of the clients has it: redis-py's retries, or none."""
        retry = (
            Retry(NoBackoff(), 0)
            if own_retries
            else Retry(ExponentialWithJitterBackoff(base=0.01, cap=1.0), 5)
        )
        return Redis.from_url(
            self.url,
            socket_timeout=self.socket_timeout,
            socket_connect_timeout=self.socket_timeout,
            retry=retry,
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
        )

    def _event(self, proc: str, kind: Kind, s: Submission, **more: Any) -> None:
        self.history.append(
            Event(
                t=now_ns(),
                proc=proc,
                kind=kind,
                id=s.id,
                doc=s.doc,
                base=s.base,
                digest=digest(s.doc, s.base, s.ops),
                seq=s.seq,
                **more,
            )
        )

    async def submit(self, redis: Redis, proc: str, s: Submission) -> str:
        """XADD ``s`` until acknowledged (its entry id), or, once the load stops, for 5 s
        more (then ``""``): each attempt an invoke and its ok, fail or info."""
        fields = {"doc": s.doc, "base": str(s.base), "ops": s.ops, "id": s.id}
        pause = 0.05
        while True:
            self._event(proc, Kind.INVOKE, s)
            try:
                entry: Any = await redis.xadd(self.keys.patches, fields)  # type: ignore[arg-type]
            except ResponseError as err:  # the server said no (OOM, ...): not added
                self._event(proc, Kind.FAIL, s, error=str(err)[:200])
            except (RedisConnectionError, RedisTimeoutError, OSError) as err:
                self._event(proc, Kind.INFO, s, error=f"{type(err).__name__}: {err}"[:200])
            else:
                eid: str = entry.decode()
                self._event(proc, Kind.OK, s, entry=eid)
                self.acked += 1
                return eid
            if self.stopping.is_set() and time.monotonic() > self.stopped_at + 5.0:
                return ""
            await asyncio.sleep(pause)
            pause = min(pause * 2, 1.0)

    async def told(self, redis: Redis, proc: str, s: Submission, entry: str) -> None:
        """Wait (at most 20 s) for the outcome of ``entry`` and record what it says; a
        failed read is tried again within that time."""
        key = self.keys.entry_outcome(entry)
        deadline = time.monotonic() + 20
        async with self._waiting:
            while time.monotonic() < deadline:
                try:
                    got: Any = await redis.lindex(key, 0)
                except (RedisConnectionError, RedisTimeoutError, OSError):
                    got = None
                if got is not None:
                    record = _RECORD.decode(got)
                    self._event(
                        proc,
                        Kind.TOLD,
                        s,
                        entry=entry,
                        status=str(record.get("status", "")),
                        rev=int(record.get("rev", 0)),
                        code=str(record.get("code") or ""),
                    )
                    return
                await asyncio.sleep(0.1)

    # -- the clients ----------------------------------------------------------------------

    async def _client_loop(
        self,
        proc: str,
        own_retries: bool,
        patch: Callable[[Redis, int], Awaitable[Submission | None]],
    ) -> None:
        """Submit ``patch(redis, k)`` for k = 1, 2, ... (``None``: try k again) until the
        load stops, waiting for every ``told_every``-th outcome on the side."""
        redis = self.client(own_retries)
        waits: list[asyncio.Task[None]] = []
        try:
            k = 0
            while not self.stopping.is_set():
                s = await patch(redis, k + 1)
                if s is None:
                    await asyncio.sleep(0.2)
                    continue
                k += 1
                entry = await self.submit(redis, proc, s)
                if not entry:
                    return  # the load stopped with this patch unacknowledged
                if k % self.told_every == 0:
                    waits.append(asyncio.create_task(self.told(redis, proc, s, entry)))
                await asyncio.sleep(self._gap())
        finally:
            await asyncio.gather(*waits, return_exceptions=True)
            await redis.aclose()

    async def _chained(self, n: int) -> None:
        proc, doc = f"chain-{n}", f"own-{n}"

        async def patch(redis: Redis, k: int) -> Submission:
            ops = _JSON.encode([{"op": "insert", "at": k, "lines": [f"{proc} line {k}"]}])
            return Submission(f"{proc}-{k}", doc, k - 1, ops, seq=k)

        await self._client_loop(proc, n % 2 == 1, patch)

    async def _hot(self, n: int) -> None:
        proc = f"hot-{n}"

        async def patch(redis: Redis, k: int) -> Submission | None:
            doc = f"hot-{k % 2}"
            try:
                head: Any = await redis.hmget(self.keys.doc(doc), ["rev", "lines"])
            except (RedisConnectionError, RedisTimeoutError, OSError):
                return None
            base, lines = int(head[0] or 0), int(head[1] or 0)
            text = f"{proc} edit {k}"
            if lines and self.random.random() < 0.25:
                op: dict[str, Any] = {"op": "replace", "from": 1, "lines": [text]}
            else:
                op = {"op": "insert", "at": 1, "lines": [text]}
            return Submission(f"{proc}-{k}", doc, base, _JSON.encode([op]))

        await self._client_loop(proc, n % 2 == 1, patch)

    def _gap(self) -> float:
        return (self.chained + self.hot) / self.rate

    def start(self) -> None:
        """Start every client."""
        self.tasks = [asyncio.create_task(self._chained(n)) for n in range(self.chained)]
        self.tasks += [asyncio.create_task(self._hot(n)) for n in range(self.hot)]

    async def stop(self, within: float = 60.0) -> None:
        """Stop the clients; each ends its submission in hand (retried up to 5 s)."""
        self.stopped_at = time.monotonic()
        self.stopping.set()
        done, pending = await asyncio.wait(self.tasks, timeout=within)
        for task in pending:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    async def until_acked(self, count: int, within: float) -> None:
        """Wait until ``count`` submissions were acknowledged in all (bounded)."""
        deadline = time.monotonic() + within
        while self.acked < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {self.acked} of {count} acknowledged in {within} s")
            await asyncio.sleep(0.05)
