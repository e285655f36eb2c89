"""The consumer-group runner every stage uses.

It creates the group (from id 0, so a backlog is never skipped), re-reads its own
pending entries at start, reads new ones in batches, holds a lease while it lives,
claims the entries of workers whose lease expired, retries what failed with backoff,
dead-letters an entry after ``max_deliveries``, trims the internal stream below what
every group acknowledged, and stops cleanly: on ``stop()`` it finishes the batch in
hand and returns. In drain mode it returns once the stream and the pending list are
empty. Stages decide and acknowledge entries themselves, atomically with their writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import msgspec
import structlog
from redis.asyncio import Redis
from redis.exceptions import (
    BusyLoadingError,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from consumers.backoff import Backoff
from consumers.lease import Lease
from consumers.metrics import BATCH_SECONDS, CLAIMED, DEAD, PROCESSED
from streams.codec import entry_text
from streams.errors import PatchlogError
from streams.keys import Keys
from streams.schema import Outcome, OutcomeStatus, RejectCode
from streams.scripts import Scripts
from streams.settings import Settings

__all__ = [
    "Entry",
    "RetryLater",
    "Runner",
    "Stage",
    "is_transient",
    "outcome_fields",
    "trim_acknowledged",
    "trim_older_than",
]

log = structlog.get_logger("patchlog.runner")

Entry = tuple[str, dict[bytes, bytes]]
"""A stream entry: its id and its raw fields."""

_TRANSIENT_REPLIES = ("OOM", "BUSY", "LOADING", "TRYAGAIN", "MASTERDOWN", "READONLY", "NOSCRIPT")
_JSON = msgspec.json.Encoder()


class RetryLater(PatchlogError):
    """Control-flow signal from a stage: nothing is wrong with the entries, try them
    again later (for example a batch that lost the head race to other workers too
    often). Never counted as a failed delivery."""


def is_transient(err: BaseException) -> bool:
    """Whether an error will likely pass by itself (never a reason to dead-letter)."""
    if isinstance(
        err, (RetryLater, RedisConnectionError, RedisTimeoutError, BusyLoadingError, OSError)
    ):
        return True
    return isinstance(err, ResponseError) and str(err).startswith(_TRANSIENT_REPLIES)


class Stage(Protocol):
    """What the runner needs of a stage."""

    name: str
    """Consumer group name, also the stage name in logs and dead letters."""
    stream: str
    """Stream the stage consumes."""

    async def handle(self, consumer: str, entries: Sequence[Entry]) -> None:
        """Decide and acknowledge ``entries``; raise to have them retried."""

    def identify(self, entry: Entry) -> tuple[str, str]:
        """Best-effort (patch id, doc) of an entry, for its dead-letter outcome."""

    async def tick(self, consumer: str) -> None:
        """Work on entries the stage holds back (bounded waits); called every loop."""

    def busy(self) -> bool:
        """Whether the stage holds entries back (drain mode waits for them)."""


class _Failure(msgspec.Struct):
    entry: Entry
    attempts: int
    retry_at: float
    error: str


class Runner:
    """Runs one stage as consumer ``consumer`` of its group."""

    def __init__(
        self,
        redis: Redis,
        settings: Settings,
        scripts: Scripts,
        stage: Stage,
        consumer: str,
        *,
        drain: bool = False,
        trims: Sequence[str] = (),
        aged: Sequence[tuple[str, float]] = (),
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.keys: Keys = settings.keys
        self.scripts = scripts
        self.stage = stage
        self.consumer = consumer
        self.drain = drain
        self.trims = tuple(trims)
        self.aged = tuple(aged)
        self.lease = Lease(
            redis,
            self.keys.lease(stage.name, consumer),
            settings.lease_ms,
            stage=stage.name,
            consumer=consumer,
        )
        self.backoff = Backoff()
        self._stopping = asyncio.Event()
        self._failures: dict[str, _Failure] = {}
        self._transient = 0
        self._next_claim = 0.0
        self._next_housekeeping = 0.0
        self.log = log.bind(stage=stage.name, consumer=consumer)

    def stop(self) -> None:
        """Ask the runner to stop after the batch in hand."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        """Whether ``stop`` was called."""
        return self._stopping.is_set()

    async def ensure_group(self) -> None:
        """Create the stream and the group from id 0 if missing (idempotent)."""
        try:
            await self.redis.xgroup_create(
                self.stage.stream, self.stage.name, id="0", mkstream=True
            )
        except ResponseError as err:
            if "BUSYGROUP" not in str(err):
                raise

    async def run(self) -> None:
        """Run until ``stop()`` (or, in drain mode, until there is nothing left)."""
        await self._retrying(self.ensure_group)
        await self._retrying(self.lease.start)
        self.log.info("worker started", drain=self.drain)
        try:
            await self._own_pending()
            while not self.stopping:
                await self._step()
                if self.drain and await self._drained():
                    self.log.info("drained")
                    break
        finally:
            await self.lease.release()
            self.log.info("worker stopped", processed=self.lease.info.processed)

    async def _retrying(self, action: Callable[[], Awaitable[None]]) -> None:
        failures = 0
        while True:
            try:
                await action()
            except RedisError as err:
                if not is_transient(err) or self.stopping:
                    raise
                failures += 1
                self.log.warning("server unavailable, retrying", error=str(err))
                await self._sleep(self.backoff.compute(failures))
            else:
                return

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _step(self) -> None:
        try:
            now = time.monotonic()
            if now >= self._next_claim:
                self._next_claim = now + self.settings.claim_interval
                await self._claim()
            if now >= self._next_housekeeping:
                self._next_housekeeping = now + 5.0
                await self._housekeeping()
            await self.stage.tick(self.consumer)
            await self._retry_failures()
            entries = await self._read(">")
            if entries:
                await self._process(entries)
            self._transient = 0
        except RedisError as err:
            if not is_transient(err):
                raise
            self._transient += 1
            self.log.warning("transient server error", error=str(err), streak=self._transient)
            await self._sleep(self.backoff.compute(self._transient))

    async def _read(self, start: str) -> list[Entry]:
        waiting = self.stage.busy() or bool(self._failures)
        block = (
            min(self.settings.block_ms, 100) if waiting or self.drain else self.settings.block_ms
        )
        reply: Any = await self.redis.xreadgroup(
            self.stage.name,
            self.consumer,
            {self.stage.stream: start},
            count=self.settings.batch,
            block=None if start != ">" else block,
        )
        if not reply:
            return []
        entries = reply[0][1]
        gone = [eid for eid, fields in entries if fields is None]
        if gone:
            # Trimmed while pending: the body is lost and nothing can decide it. Count it
            # loudly and acknowledge it, so that it does not sit in the pending list forever.
            self.log.error("pending entries lost by trim", entries=[g.decode() for g in gone])
            await self.redis.xack(self.stage.stream, self.stage.name, *gone)
        return [(eid.decode(), fields) for eid, fields in entries if fields is not None]

    async def _own_pending(self) -> None:
        """Entries delivered to this consumer name before a restart, or whose reply was
        lost, sit in its pending list: work on them before anything new."""
        cursor = "0"
        while not self.stopping:
            entries = await self._read(cursor)
            if not entries:
                return
            self.log.info("re-reading own pending entries", count=len(entries))
            await self._process(entries)
            cursor = entries[-1][0]

    async def _process(self, entries: Sequence[Entry]) -> None:
        try:
            with BATCH_SECONDS.labels(self.stage.name).time():
                await self.stage.handle(self.consumer, entries)
            self.lease.info.processed += len(entries)
            PROCESSED.labels(self.stage.name).inc(len(entries))
        except Exception as err:  # a stage bug must not kill the worker
            if not is_transient(err):
                await self._isolate(entries, err)
                return
            # Not the entries' fault: retry them without counting a delivery.
            for entry in entries:
                self._failures.setdefault(
                    entry[0], _Failure(entry, 0, time.monotonic() + 0.1, str(err))
                )
            if isinstance(err, RedisError):
                raise

    async def _isolate(self, entries: Sequence[Entry], err: BaseException) -> None:
        if len(entries) > 1:
            for entry in entries:
                await self._process([entry])
            return
        entry = entries[0]
        failure = self._failures.get(entry[0])
        attempts = 1 if failure is None else failure.attempts + 1
        deliveries = await self._deliveries(entry[0]) + attempts - 1
        self.lease.info.failed += 1
        self.log.warning(
            "entry failed",
            entry=entry[0],
            deliveries=deliveries,
            error=_describe(err),
            exc_info=False,
        )
        if deliveries >= self.settings.max_deliveries:
            self._failures.pop(entry[0], None)
            await self._dead_letter(entry, _describe(err), deliveries)
            return
        self._failures[entry[0]] = _Failure(
            entry, attempts, time.monotonic() + self.backoff.compute(attempts), _describe(err)
        )

    async def _deliveries(self, entry_id: str) -> int:
        rows = await self.redis.xpending_range(
            self.stage.stream, self.stage.name, entry_id, entry_id, 1
        )
        return int(rows[0]["times_delivered"]) if rows else 1

    async def _retry_failures(self) -> None:
        now = time.monotonic()
        due = [f for f in self._failures.values() if f.retry_at <= now]
        for failure in due:
            if failure.attempts == 0:  # transient: not counted
                self._failures.pop(failure.entry[0], None)
            await self._process([failure.entry])
            current = self._failures.get(failure.entry[0])
            if current is failure:  # handled without raising: it is done
                self._failures.pop(failure.entry[0], None)

    async def _dead_letter(self, entry: Entry, error: str, deliveries: int) -> None:
        patch_id, doc = self.stage.identify(entry)
        fields = entry_text(entry[1])
        message = (
            f"stage {self.stage.name} failed {deliveries} times on this entry ({error[:300]}); "
            f"it is kept in {self.keys.dead}"
        )
        outcome = Outcome(
            id=patch_id,
            doc=doc,
            status=OutcomeStatus.REJECTED,
            rev=0,
            code=RejectCode.INVALID,
            message=message,
            src=entry[0],
        )
        dead = [
            "stage", self.stage.name,
            "error", error[:2000],
            "deliveries", str(deliveries),
            "entry", _JSON.encode(fields).decode(),
            "src", entry[0],
            "consumer", self.consumer,
        ]  # fmt: skip
        result = await self.scripts.dead(
            keys=[
                self.stage.stream,
                self.keys.dead,
                self.keys.outcomes,
                self.keys.patch_id(patch_id),
            ],
            args=[
                self.stage.name,
                self.consumer,
                entry[0],
                self.settings.dead_cap,
                _JSON.encode(dead),
                _JSON.encode(outcome_fields(outcome, entry=fields)),
                _JSON.encode(outcome),
                int(self.settings.idempotency_window * 1000),
            ],
        )
        DEAD.labels(self.stage.name).inc()
        self.log.error("entry dead-lettered", entry=entry[0], deliveries=deliveries, result=result)

    async def _claim(self) -> None:
        """Take over the pending entries of consumers whose lease has expired."""
        consumers = await self.redis.xinfo_consumers(self.stage.stream, self.stage.name)
        others = [c for c in consumers if c["name"].decode() != self.consumer]
        if not others:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for c in others:
                pipe.exists(self.keys.lease(self.stage.name, c["name"].decode()))
            alive = await pipe.execute()
        for c, live in zip(others, alive, strict=True):
            if live:
                continue
            victim = c["name"].decode()
            while not self.stopping:
                claimed, removed = await self.scripts.claim(
                    keys=[self.stage.stream, self.keys.lease(self.stage.name, victim)],
                    args=[self.stage.name, victim, self.consumer, self.settings.batch],
                )
                entries = [
                    (eid.decode(), _pairs(fields)) for eid, fields in claimed if fields is not None
                ]
                if entries:
                    CLAIMED.labels(self.stage.name).inc(len(entries))
                    self.log.info(
                        "claimed entries of a dead worker", victim=victim, count=len(entries)
                    )
                    await self._process(entries)
                if removed or not claimed:
                    break

    async def _housekeeping(self) -> None:
        for stream in self.trims:
            await trim_acknowledged(self.redis, stream)
        for stream, seconds in self.aged:
            await trim_older_than(self.redis, stream, seconds)

    async def _drained(self) -> bool:
        if self.stage.busy() or self._failures:
            return False
        summary = await self.redis.xpending(self.stage.stream, self.stage.name)
        if int(summary["pending"]) > 0:
            return False
        groups = await self.redis.xinfo_groups(self.stage.stream)
        for group in groups:
            if group["name"].decode() == self.stage.name:
                lag = group.get("lag")
                if lag is None:  # Redis cannot tell (after trims): read once more
                    return not await self._read(">")
                return int(lag) == 0
        return True


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


def _pairs(flat: Sequence[bytes]) -> dict[bytes, bytes]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def outcome_fields(outcome: Outcome, *, entry: dict[str, str] | None = None) -> list[str]:
    """The outcome's stream fields as a flat list (without ``at``, added by the script)."""
    flat = ["id", outcome.id, "doc", outcome.doc, "status", outcome.status.value]
    flat += ["rev", str(outcome.rev)]
    if outcome.code is not None:
        flat += ["code", outcome.code.value, "message", outcome.message or ""]
    flat += ["src", outcome.src]
    if entry is not None:
        flat += ["entry", _JSON.encode(entry).decode()]
    return flat


async def trim_acknowledged(redis: Redis, stream: str) -> None:
    """Trim ``stream`` below the oldest entry some group has not acknowledged.

    Entries at or after any group's oldest pending entry, or not yet delivered to a
    group, are kept; with no group at all nothing is trimmed.
    """
    groups = await redis.xinfo_groups(stream)
    if not groups:
        return
    floor: tuple[int, int] | None = None
    for group in groups:
        name = group["name"].decode()
        if int(group["pending"]) > 0:
            summary = await redis.xpending(stream, name)
            candidate = _parse_id(summary["min"])
        else:
            candidate = _parse_id(group["last-delivered-id"])
        floor = candidate if floor is None else min(floor, candidate)
    if floor is not None and floor > (0, 0):
        await redis.xtrim(stream, minid=f"{floor[0]}-{floor[1]}", approximate=True)


async def trim_older_than(redis: Redis, stream: str, seconds: float) -> None:
    """Trim entries older than ``seconds`` (by their id's time, on the server clock)."""
    now_s, now_us = await redis.time()
    floor = int(now_s) * 1000 + int(now_us) // 1000 - int(seconds * 1000)
    if floor > 0:
        await redis.xtrim(stream, minid=f"{floor}-0", approximate=True)


def _parse_id(raw: bytes | str) -> tuple[int, int]:
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)
