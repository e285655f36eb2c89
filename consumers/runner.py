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

from patchlog.consumers.backoff import Backoff
from patchlog.consumers.lease import Lease
from patchlog.consumers.metrics import (
    BATCH_ENTRIES,
    BATCH_SECONDS,
    CLAIMED,
    PROCESSED,
    TRANSIENT,
    dead_lettered,
)
from patchlog.streams.codec import SERVER_STAMPED, entry_fields, event_fields, with_entry
from patchlog.streams.errors import CommandFailed, GroupMissing, ServerError, is_transient
from patchlog.streams.failpoints import broken, failpoint
from patchlog.streams.keys import Keys
from patchlog.streams.schema import DeadLetter, Outcome, OutcomeStatus, RejectCode
from patchlog.streams.scripts import Scripts
from patchlog.streams.settings import Settings

__all__ = [
    "SCRIPT_BYTES",
    "Entry",
    "Runner",
    "Stage",
    "parse_id",
    "rejection",
    "trim_acknowledged",
    "trim_older_than",
]

# While it holds patches waiting for their base, a worker blocks this long at most (ms)
# in a read: their predecessor is usually being committed by another worker right now.
# A busy server answers the read as soon as entries come; an idle one wakes a blocked
# read only at its own tick (hz 10: about 100 ms), which bounds a hand-off then.
_HELD_BLOCK_MS = 10

SCRIPT_BYTES = 8 << 20
"""Bytes of entries one stage script call carries at most (a single entry may exceed it):
a batch of the largest patches in one call would hold the server for a long time."""

log = structlog.get_logger("patchlog.runner")

Entry = tuple[str, dict[bytes, bytes]]
"""A stream entry: its id and its raw fields."""


_JSON = msgspec.json.Encoder()
_FORGOTTEN_IDLE_MS = 1000
"""Idle time after which an entry in a worker's own pending list that it does not know
of is taken up again (a lost read reply); swept every ``claim_interval``."""


class Stage(Protocol):
    """What the runner needs of a stage."""

    name: str
    """Consumer group name, also the stage name in logs and dead letters."""
    stream: str
    """Stream the stage consumes."""

    async def handle(self, consumer: str, entries: Sequence[Entry]) -> None:
        """Decide and acknowledge ``entries``; raise to have them retried."""

    def identify(self, entry: Entry) -> tuple[str, str, str]:
        """Best-effort (patch id, doc, ingress entry id) of an entry, for its dead-letter
        outcome; the ingress entry id is '' when the entry does not say."""

    def due(self) -> list[Entry]:
        """Entries the stage holds back (a bounded wait) that are due for another try;
        the runner hands them to ``handle`` again."""

    def held(self) -> set[str]:
        """Ids of the entries the stage holds back (drain mode waits for them)."""


class _Failure(msgspec.Struct):
    entry: Entry
    attempts: int
    """Failures counted against the delivery budget (transient errors are not)."""
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
        retained: Sequence[tuple[str, float]] = (),
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
        self.retained = tuple(retained)
        """Streams trimmed of entries every group acknowledged that are older than the
        seconds given (the ingress stream, kept for ``patches_retention``)."""
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
        self._group_missing = False
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
        except CommandFailed as err:
            if err.code != "BUSYGROUP":
                raise

    async def run(self) -> None:
        """Run until ``stop()`` (or, in drain mode, until there is nothing left)."""
        # Bound for this task and the tasks it starts: the stage's own lines (per patch,
        # per batch) and library lines carry the stage and the worker too.
        structlog.contextvars.bind_contextvars(stage=self.stage.name, consumer=self.consumer)
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
            except ServerError as err:
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
        failed = False
        try:
            await self._regroup()
            now = time.monotonic()
            if now >= self._next_claim:
                self._next_claim = now + self.settings.claim_interval
                await self._claim()
                await self._sweep_own()
            if now >= self._next_housekeeping:
                self._next_housekeeping = now + 5.0
                await self._housekeeping()
            due = self.stage.due()
            if due:
                await self._process(due, delivered=False)
            await self._retry_failures()
            entries = await self._read(">")
            if entries:
                await self._process(entries)
        except Exception as err:  # the worker outlives any one failure
            failed = True
            if is_transient(err):
                self._note_transient(err)
            else:
                self.log.exception("worker step failed", error=_describe(err))
                self._transient += 1
        # The streak ends only with a step that worked, so that the backoff grows while a
        # failure lasts instead of retrying it tens of times a second.
        if failed:
            await self._sleep(self.backoff.compute(self._transient))
        else:
            self._transient = 0

    def _note_transient(self, err: BaseException) -> None:
        self._transient += 1
        TRANSIENT.labels(self.stage.name).inc()
        if isinstance(err, GroupMissing):
            self._group_missing = True
        self.log.warning("transient server error", error=_describe(err), streak=self._transient)

    async def _read(self, start: str) -> list[Entry]:
        held = bool(self.stage.held())
        block = (
            min(self.settings.block_ms, _HELD_BLOCK_MS if held else 100)
            if held or self._failures or self.drain
            else self.settings.block_ms
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
        return await self._bodies(reply[0][1])

    async def _bodies(self, entries: Any) -> list[Entry]:
        # An entry always has a field: none means its body was deleted while pending.
        gone = [eid for eid, fields in entries if not fields]
        if gone:
            # Trimmed while pending: the body is lost and nothing can decide it. Count it
            # loudly and acknowledge it, so that it does not sit in the pending list forever.
            self._lost_by_trim(gone)
            await self.redis.xack(self.stage.stream, self.stage.name, *gone)
        return [(eid.decode(), fields) for eid, fields in entries if fields]

    def _lost_by_trim(self, ids: Sequence[bytes]) -> None:
        self.log.error("pending entries lost by trim", entries=[g.decode() for g in ids])

    async def _regroup(self) -> None:
        """Create the group again after a NOGROUP (the server lost it: restarted without
        its data, failed over, flushed), so the worker goes on instead of failing forever.
        From id 0: entries already decided are answered as replays, not applied again."""
        if not self._group_missing:
            return
        await self.ensure_group()
        self._group_missing = False
        self.log.error(
            "consumer group was missing; created it again from id 0", stream=self.stage.stream
        )

    async def _own_pending(self) -> None:
        """Entries delivered to this consumer name before a restart sit in its pending
        list: work on them before anything new."""
        cursor = "0"
        while not self.stopping:
            try:
                await self._regroup()
                entries = await self._read(cursor)
            except ServerError as err:
                if not is_transient(err):
                    raise
                self._note_transient(err)
                await self._sleep(self.backoff.compute(self._transient))
                continue
            self._transient = 0
            if not entries:
                return
            self.log.info("re-reading own pending entries", count=len(entries))
            await self._process(entries)
            cursor = entries[-1][0]

    async def _sweep_own(self) -> None:
        """Take up entries idling in this consumer's own pending list that it does not
        know about: a read or claim whose reply was lost after the server delivered it."""
        # The runner reads, claims and processes one thing at a time, so at this point
        # every entry it knows of is acknowledged, held by the stage or scheduled for a
        # retry: anything else in its pending list came from a reply it never read. A
        # second of idleness is only a margin; the sweep runs every claim interval.
        idle_ms = _FORGOTTEN_IDLE_MS
        known = self.stage.held() | set(self._failures)
        # Entries it knows of come first in the reply too: look past them for a batch.
        rows: Any = await self.redis.xpending_range(
            self.stage.stream,
            self.stage.name,
            "-",
            "+",
            self.settings.batch + len(known),
            consumername=self.consumer,
            idle=idle_ms,
        )
        lost = [r["message_id"] for r in rows if r["message_id"].decode() not in known]
        lost = lost[: self.settings.batch]
        if not lost:
            return
        claimed: Any = await self.redis.xclaim(
            self.stage.stream, self.stage.name, self.consumer, idle_ms, lost
        )
        got = {eid for eid, _ in claimed}
        if len(got) < len(lost):  # XCLAIM leaves out (and unlists) deleted entries
            self._lost_by_trim([eid for eid in lost if eid not in got])
        entries = await self._bodies(claimed)
        if entries:
            self.log.warning("taking up forgotten pending entries", count=len(entries))
            await self._process(entries)

    async def _process(self, entries: Sequence[Entry], *, delivered: bool = True) -> None:
        """Hand entries to the stage; never raises. A transient error schedules them
        again without counting a failure; any other error is narrowed down to the
        entry that causes it, which is retried with backoff and, after
        ``max_deliveries``, dead-lettered. ``delivered``: the entries were just read or
        claimed (not a patch waiting for its base looked at again, nor a retry)."""
        if delivered:
            failpoint(f"{self.stage.name}.after_read")
            if broken("ack_before_work"):
                await self.redis.xack(self.stage.stream, self.stage.name, *(e[0] for e in entries))
        try:
            with BATCH_SECONDS.labels(self.stage.name).time():
                await self.stage.handle(self.consumer, entries)
        except Exception as err:  # noqa: BLE001 - a stage bug must not kill the worker
            if is_transient(err):
                self._note_transient(err)
                retry_at = time.monotonic() + self.backoff.compute(self._transient)
                for entry in entries:
                    known = self._failures.get(entry[0])
                    if known is None:
                        self._failures[entry[0]] = _Failure(entry, 0, retry_at, _describe(err))
                    else:
                        known.retry_at = retry_at
                return
            if len(entries) > 1:
                for entry in entries:
                    await self._process([entry], delivered=False)
                return
            await self._failed(entries[0], err)
            return
        for entry in entries:
            self._failures.pop(entry[0], None)
        self.lease.info.processed += len(entries)
        PROCESSED.labels(self.stage.name).inc(len(entries))
        BATCH_ENTRIES.labels(self.stage.name).observe(len(entries))

    async def _failed(self, entry: Entry, err: BaseException) -> None:
        known = self._failures.get(entry[0])
        attempts = (0 if known is None else known.attempts) + 1
        failure = _Failure(
            entry, attempts, time.monotonic() + self.backoff.compute(attempts), _describe(err)
        )
        self._failures[entry[0]] = failure  # recorded first: nothing below may lose it
        self.lease.info.failed += 1
        try:
            deliveries = await self._deliveries(entry[0]) + attempts - 1
            patch_id, doc, src = self.stage.identify(entry)
            self.log.warning(
                "entry failed", id=patch_id, doc=doc, src=src, entry=entry[0],
                deliveries=deliveries, error=failure.error,
            )  # fmt: skip
            if deliveries >= self.settings.max_deliveries:
                await self._dead_letter(entry, failure.error, deliveries)
                self._failures.pop(entry[0], None)
        except Exception as later:
            if is_transient(later):
                self._note_transient(later)
            else:
                self.log.exception("could not dead-letter an entry", entry=entry[0])

    async def _deliveries(self, entry_id: str) -> int:
        rows = await self.redis.xpending_range(
            self.stage.stream, self.stage.name, entry_id, entry_id, 1
        )
        return int(rows[0]["times_delivered"]) if rows else 1

    async def _retry_failures(self) -> None:
        now = time.monotonic()
        for failure in [f for f in self._failures.values() if f.retry_at <= now]:
            if self.stopping:
                return
            await self._process([failure.entry], delivered=False)

    async def _dead_letter(self, entry: Entry, error: str, deliveries: int) -> None:
        patch_id, doc, src = self.stage.identify(entry)
        message = (
            f"stage {self.stage.name} failed {deliveries} times on this entry ({error[:300]}); "
            f"it is kept in {self.keys.dead}"
        )
        outcome = rejection(src, patch_id, doc, RejectCode.INVALID, message)
        dead = DeadLetter(
            stage=self.stage.name,
            error=error[:2000],
            deliveries=deliveries,
            entry={},
            at=outcome.at,
            src=entry[0],
            consumer=self.consumer,
            stream=self.stage.stream,
        )
        # Never the id record: a dead-lettered entry owns no id. Its submitter waits on
        # its ingress entry's outcome key, unknown for an entry that does not decode.
        keys = [self.stage.stream, self.keys.dead, self.keys.outcomes]
        keys += [self.keys.entry_outcome(src)] if src else []
        result = await self.scripts.dead(
            keys=keys,
            args=[
                self.stage.name,
                self.consumer,
                entry[0],
                self.settings.dead_cap,
                _JSON.encode(event_fields(with_entry(dead, entry[1]), omit=SERVER_STAMPED)),
                _JSON.encode(event_fields(with_entry(outcome, entry[1]), omit=SERVER_STAMPED)),
                _JSON.encode(outcome),  # entry: in the streams only
                int(self.settings.outcome_ttl * 1000),
            ],
        )
        if result in (b"ok", "ok"):  # else 'fenced': its new owner decides it
            dead_lettered(self.stage.name, src)
        self.log.error(
            "entry dead-lettered", id=patch_id, doc=doc, src=src, entry=entry[0],
            deliveries=deliveries, result=result,
        )  # fmt: skip

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
                claimed, removed, gone = await self.scripts.claim(
                    keys=[self.stage.stream, self.keys.lease(self.stage.name, victim)],
                    args=[self.stage.name, victim, self.consumer, self.settings.batch],
                )
                if gone:
                    self._lost_by_trim(gone)
                entries = [
                    (eid.decode(), entry_fields(fields))
                    for eid, fields in claimed
                    if fields is not None
                ]
                if entries:
                    CLAIMED.labels(self.stage.name).inc(len(entries))
                    self.log.info(
                        "claimed entries of a dead worker", victim=victim, count=len(entries)
                    )
                    failpoint(f"{self.stage.name}.after_claim")
                    await self._process(entries)
                if removed or not claimed:
                    break

    async def _housekeeping(self) -> None:
        try:
            for stream in self.trims:
                await trim_acknowledged(self.redis, stream)
            for stream, seconds in self.retained:
                await trim_acknowledged(self.redis, stream, older_than=seconds)
            for stream, seconds in self.aged:
                await trim_older_than(self.redis, stream, seconds)
        except ServerError as err:  # trimming can wait for the next round
            self.log.warning("housekeeping failed", error=_describe(err))

    async def _drained(self) -> bool:
        if self.stage.held() or self._failures:
            return False
        try:
            summary: Any = await self.redis.xpending(self.stage.stream, self.stage.name)
            if int(summary["pending"]) > 0:
                return False
            # The newest entry that exists (not last-generated-id: it may be deleted).
            newest: Any = await self.redis.xrevrange(self.stage.stream, count=1)
            groups: Any = await self.redis.xinfo_groups(self.stage.stream)
        except ServerError as err:
            if not is_transient(err):
                raise
            return False
        if not newest:
            return True
        last = parse_id(newest[0][0])
        for group in groups:
            if group["name"].decode() == self.stage.name:
                return parse_id(group["last-delivered-id"]) >= last
        return True


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


def rejection(src: str, patch_id: str, doc: str, code: RejectCode, message: str) -> Outcome:
    """The outcome of ingress entry ``src`` rejected before it reached its document
    (``rev`` 0)."""
    return Outcome(
        id=patch_id,
        doc=doc,
        status=OutcomeStatus.REJECTED,
        rev=0,
        code=code,
        message=message,
        src=src,
        at=time.time_ns() // 1_000_000,
    )


async def trim_acknowledged(redis: Redis, stream: str, older_than: float | None = None) -> None:
    """Trim ``stream`` below the oldest entry some group has not acknowledged, and, with
    ``older_than`` (seconds), only entries older than that too (by their id's time, on
    the server clock).

    Entries at or after any group's oldest pending entry, or not yet delivered to a
    group, are kept; with no group at all nothing is trimmed.
    """
    groups = await redis.xinfo_groups(stream)
    if not groups:
        return
    floor: tuple[int, int] | None = None
    for group in groups:
        name = group["name"].decode()
        candidate = parse_id(group["last-delivered-id"])
        if int(group["pending"]) > 0:
            summary: Any = await redis.xpending(stream, name)
            if summary["min"] is not None:  # else it was acknowledged meanwhile
                candidate = min(candidate, parse_id(summary["min"]))
        floor = candidate if floor is None else min(floor, candidate)
    if floor is not None and older_than is not None:
        now_s, now_us = await redis.time()
        age_floor = int(now_s) * 1000 + int(now_us) // 1000 - int(older_than * 1000)
        floor = min(floor, (max(age_floor, 0), 0))
    if floor is not None and floor > (0, 0):
        await redis.xtrim(stream, minid=f"{floor[0]}-{floor[1]}", approximate=True)


async def trim_older_than(redis: Redis, stream: str, seconds: float) -> None:
    """Trim entries older than ``seconds`` (by their id's time, on the server clock)."""
    now_s, now_us = await redis.time()
    floor = int(now_s) * 1000 + int(now_us) // 1000 - int(seconds * 1000)
    if floor > 0:
        await redis.xtrim(stream, minid=f"{floor}-0", approximate=True)


def parse_id(raw: bytes | str) -> tuple[int, int]:
    """A stream entry id as (milliseconds, sequence), which orders like the stream."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)
