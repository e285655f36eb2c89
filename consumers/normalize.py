"""The normalize stage: decode and validate ingress entries, turn diffs into splices,
check every invariant that needs no snapshot, and forward, in one atomic step per batch
or per 8 MiB of it (forward or reject, and acknowledge)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import msgspec
import structlog
from redis.asyncio import Redis

from patchlog.consumers.messages import NormalizedPatch, encode_normalized
from patchlog.consumers.metrics import NORMALIZE_HOPS, NORMALIZE_STATUSES, StageMetrics, since_id
from patchlog.consumers.runner import SCRIPT_BYTES, Entry, parse_id, rejection
from patchlog.projections.diff import parse_diff
from patchlog.projections.patch import normalize
from patchlog.streams.codec import (
    SERVER_STAMPED,
    decode_ingress,
    event_fields,
    payload_digest,
    with_entry,
)
from patchlog.streams.errors import Rejected
from patchlog.streams.failpoints import failpoint
from patchlog.streams.keys import NORMALIZE
from patchlog.streams.scripts import ForwardRow, Scripts
from patchlog.streams.settings import Settings

__all__ = ["NormalizeStage", "normalize_entry"]

log = structlog.get_logger("patchlog.normalize")
_JSON = msgspec.json.Encoder()
_MSGPACK = msgspec.msgpack.Encoder()

_TURN_S = 0.05  # seconds of checking between two turns of the event loop


def normalize_entry(entry: Entry, settings: Settings) -> NormalizedPatch:
    """Decode and normalize one ingress entry; raises ``Rejected``."""
    src, fields = entry
    patch = decode_ingress(fields, settings.limits)
    splices = normalize(patch.ops, settings.limits) if patch.ops is not None else ()
    diff = parse_diff(patch.diff, settings.limits) if patch.diff is not None else None
    return NormalizedPatch(
        id=patch.id or src,
        src=src,
        doc=patch.doc,
        base=patch.base,
        digest=payload_digest(patch),
        author=patch.author or "",
        splices=splices,
        diff=diff,
    )


def _identify(entry: Entry) -> tuple[str, str, str]:
    fields = entry[1]
    raw_id = fields.get(b"id", b"")
    try:
        patch_id = raw_id.decode("utf-8") if 0 < len(raw_id) <= 128 else entry[0]
    except UnicodeDecodeError:
        patch_id = entry[0]
    doc = fields.get(b"doc", b"").decode("utf-8", "replace")[:256]
    return patch_id, doc, entry[0]


class NormalizeStage:
    """Consumer group ``normalize`` on the ingress stream."""

    name = NORMALIZE

    def __init__(self, redis: Redis, settings: Settings, scripts: Scripts) -> None:
        self.redis = redis
        self.settings = settings
        self.scripts = scripts
        self.keys = settings.keys
        self.stream = self.keys.patches
        self.rejected = 0
        self.forwarded = 0
        self.metrics = StageMetrics(NORMALIZE, NORMALIZE_STATUSES, NORMALIZE_HOPS)

    def identify(self, entry: Entry) -> tuple[str, str, str]:
        """Best-effort (patch id, doc, ingress entry id) of a raw ingress entry."""
        return _identify(entry)

    def held(self) -> set[str]:
        """Normalize never holds entries back."""
        return set()

    def due(self) -> list[Entry]:
        """Nothing held back."""
        return []

    async def handle(self, consumer: str, entries: Sequence[Entry]) -> None:
        """Forward or reject every entry, and acknowledge them: one script call per
        ``SCRIPT_BYTES`` of entries, so that a batch of the largest patches does not hold
        the server for long, and the event loop gets a turn between entries that take
        long to check, so that the lease is renewed (a busy worker is not a dead one)."""
        read = time.time()  # the runner hands a batch over as soon as it read it
        chunk: list[Entry] = []
        size = 0
        for entry in entries:
            weight = sum(len(k) + len(v) for k, v in entry[1].items())
            if chunk and size + weight > SCRIPT_BYTES:
                await self._handle(consumer, chunk, read)
                chunk, size = [], 0
            chunk.append(entry)
            size += weight
        if chunk:
            await self._handle(consumer, chunk, read)

    async def _handle(self, consumer: str, entries: Sequence[Entry], read: float) -> None:
        started = time.perf_counter()
        turn = time.monotonic()
        told: list[dict[str, Any]] = []  # each entry's log line, written once decided
        self.metrics.discard()  # what a batch that failed noted: it is noted again
        keys = [self.keys.patches, self.keys.normalized_stream(0), self.keys.outcomes]
        targets: dict[str, None] = {}  # further normalized streams, in order of first use
        batch: list[ForwardRow | tuple[str, str]] = []  # a forward: (entry id, its stream)
        payloads: list[bytes] = []
        forwarded = 0
        for entry in entries:
            if time.monotonic() - turn > _TURN_S:
                await asyncio.sleep(0)
                turn = time.monotonic()
            try:
                patch = normalize_entry(entry, self.settings)
            except Rejected as err:
                patch_id, doc, src = _identify(entry)
                outcome = rejection(src, patch_id, doc, err.code, err.message)
                listed = with_entry(outcome, entry[1])
                keys.append(self.keys.entry_outcome(src))  # never the id record: owns no id
                batch.append(
                    ForwardRow(
                        entry=entry[0],
                        kind="r",
                        outcome=tuple(event_fields(listed, omit=SERVER_STAMPED)),
                        record=_JSON.encode(outcome).decode(),  # entry: in the stream only
                    )
                )
                payloads.append(b"")
                self.rejected += 1
                self.metrics.outcome("rejected", err.code.value, entry[0])
                told.append({"event": "rejected", "id": patch_id, "doc": doc, "src": entry[0],
                             "code": err.code.value, "message": err.message[:300]})  # fmt: skip
                continue
            stream = self.keys.normalized_of(patch.doc)
            if stream != keys[1]:
                targets.setdefault(stream, None)
            batch.append((entry[0], stream))
            payloads.append(encode_normalized(patch))
            forwarded += 1
            self.metrics.outcome("forwarded", None, entry[0])
            told.append({"event": "forwarded", "id": patch.id, "doc": patch.doc,
                         "base": patch.base, "src": entry[0]})  # fmt: skip
        self.forwarded += forwarded
        # Further normalized streams go after the outcome keys, in order of first use.
        at = {keys[1]: 2} | {stream: len(keys) + 1 + k for k, stream in enumerate(targets)}
        keys.extend(targets)
        rows = [
            r if isinstance(r, ForwardRow) else ForwardRow(entry=r[0], kind="f", stream=at[r[1]])
            for r in batch
        ]
        ids = sorted((entry[0] for entry in entries), key=parse_id)
        args: list[str | bytes | int] = [
            self.name,
            consumer,
            int(self.settings.outcome_ttl * 1000),
            ids[0],
            ids[-1],
            _MSGPACK.encode(rows),
            *payloads,
        ]
        failpoint("normalize.before_forward")
        results: Any = await self.scripts.forward(keys=keys, args=args)
        failpoint("normalize.after_forward")
        done = time.time()
        self.metrics.flush(int(done * 1000), results)
        self._hops(entries, results, read, done)
        _log_decided(told, results, time.perf_counter() - started)

    def _hops(
        self, entries: Sequence[Entry], results: Sequence[bytes], read: float, done: float
    ) -> None:
        """Observe this batch's ingress waits and its normalize time, for each entry
        decided here (one answered ``fenced`` is its new owner's to observe)."""
        if b"fenced" in results:
            ids = [e[0] for e, r in zip(entries, results, strict=True) if r != b"fenced"]
        else:
            ids = [e[0] for e in entries]
        self.metrics.hop("ingress_wait", since_id(ids, read))
        self.metrics.hop_all("normalize", done - read, len(ids))


def _log_decided(told: list[dict[str, Any]], results: Sequence[bytes], seconds: float) -> None:
    """One line per entry (a rejection at info, the rest at debug) and one per batch."""
    tally: dict[str, int] = {}
    for line, result in zip(told, results, strict=True):
        if result == b"fenced":  # claimed by another worker meanwhile: its decision counts
            line["decided"] = line.pop("event")
            line["event"] = "fenced"
        what = line["event"]
        tally[what] = tally.get(what, 0) + 1
        (log.info if what == "rejected" else log.debug)(**line)
    log.info("batch", entries=len(told), **tally, seconds=round(seconds, 6))
