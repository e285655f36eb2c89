"""Prometheus metrics of the stage workers (served by ``ops.metrics``).

Every series carries the label ``stage`` (the group: ``normalize`` or ``execute``) and
only the process running that stage creates it (``StageMetrics``), so one stage's
numbers never show up under another's. No label holds a patch id or a document: the
label values are the fixed sets below (stages, statuses, rejection codes).

Under ``patchlog up --metrics-port`` the workers run in prometheus-client's multiprocess
mode and ``up`` serves their sum; a worker run alone serves its own (``serve_metrics``).
"""

from __future__ import annotations

import bisect
import time
from collections import Counter as Tally
from collections.abc import Iterable, Sequence
from functools import partial

from prometheus_client import Counter, Histogram

from patchlog.streams.schema import Outcome, RejectCode

__all__ = [
    "BATCH_ENTRIES",
    "BATCH_SECONDS",
    "CLAIMED",
    "DEAD",
    "EXECUTE_HOPS",
    "EXECUTE_STATUSES",
    "HOP",
    "HOP_BUCKETS",
    "LATENCY_BUCKETS",
    "NORMALIZE_HOPS",
    "NORMALIZE_STATUSES",
    "OUTCOMES",
    "PROCESSED",
    "REBASED",
    "REJECTIONS",
    "RETRIES",
    "SUBMIT_LATENCY",
    "TRANSIENT",
    "StageMetrics",
    "dead_lettered",
    "observe_many",
    "observe_same",
    "since_id",
    "submitted_ms",
]

PROCESSED = Counter("patchlog_entries_processed_total", "Stream entries a stage handled", ["stage"])
OUTCOMES = Counter(
    "patchlog_outcomes_total",
    "Entries a stage finished, by status: the outcomes committed, rejected, duplicate and "
    "noop; forwarded (normalize to execute) and fenced (claimed away before its commit, "
    "decided by the new owner) are not outcomes",
    ["stage", "status"],
)
REJECTIONS = Counter(
    "patchlog_rejections_total", "Rejected outcomes a stage recorded, by code", ["stage", "code"]
)
REBASED = Counter(
    "patchlog_rebased_total",
    "Patches decided against a head newer than their base (committed, noop or conflict "
    "after carrying their line numbers through the revisions in between)",
    ["stage"],
)
RETRIES = Counter(
    "patchlog_commit_retries_total", "Patches decided again after losing the head race", ["stage"]
)
CLAIMED = Counter(
    "patchlog_claimed_total", "Entries taken over from workers whose lease expired", ["stage"]
)
DEAD = Counter("patchlog_dead_lettered_total", "Entries moved to the dead-letter stream", ["stage"])
TRANSIENT = Counter(
    "patchlog_transient_errors_total",
    "Server failures a stage waited out (connection lost, timeout, loading, busy, OOM)",
    ["stage"],
)
BATCH_SECONDS = Histogram(
    "patchlog_batch_seconds",
    "Time to handle one batch of entries",
    ["stage"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
BATCH_ENTRIES = Histogram(
    "patchlog_batch_entries",
    "Entries in one batch a stage handled",
    ["stage"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0
)  # fmt: skip
"""Up to two minutes: a patch whose base is ahead may wait ``pending_wait`` (30 s)."""
SUBMIT_LATENCY = Histogram(
    "patchlog_submit_latency_seconds",
    "Seconds from submission (the ingress entry id's time) to the end of the stage's work "
    "on the patch: forwarded or rejected by normalize, its outcome committed by execute",
    ["stage", "status"],
    buckets=LATENCY_BUCKETS,
)

HOP_BUCKETS = (
    0.0001, 0.0002, 0.0005, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.015,
    0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
"""Fine below 20 ms, where a hop of a pipeline that keeps up lies (``patchlog bench``
interpolates its p50 and p99 in these buckets); up to a minute for a patch that waits
for its base."""
HOP = Histogram(
    "patchlog_hop_seconds",
    "Seconds one patch spent in one hop of its way through a stage: normalize's "
    "ingress_wait (the ingress entry id's time to the read that handled it) and normalize "
    "(that read to its forward script's reply); execute's normalized_wait (the normalized "
    "entry id's time to its read), decide (that read to the commit script call) and "
    "commit (the call to its reply)",
    ["stage", "hop"],
    buckets=HOP_BUCKETS,
)
NORMALIZE_HOPS = ("ingress_wait", "normalize")
EXECUTE_HOPS = ("normalized_wait", "decide", "commit")

NORMALIZE_STATUSES = ("forwarded", "rejected")
EXECUTE_STATUSES = ("committed", "rejected", "duplicate", "noop", "fenced")
_NO_LATENCY = frozenset({"fenced"})  # not decided by this worker: its new owner observes it
_REBASED = frozenset({"committed", "noop"})
_FENCED = ("fenced", None, "", False)


def submitted_ms(src: str) -> int | None:
    """The milliseconds part of ingress entry id ``src`` (the server's clock at XADD),
    or ``None`` for an id that does not say."""
    head, _, _ = src.partition("-")
    return int(head) if head.isdigit() else None


def since_id(ids: Iterable[str], now: float) -> list[float]:
    """Seconds from the time of each stream entry id of ``ids`` (its milliseconds part:
    the server's clock at XADD) to ``now`` (Unix seconds), never below 0."""
    now_ms = now * 1000
    return [max(0.0, now_ms - int(i[: i.find("-")])) / 1000 for i in ids]


def observe_many(histogram: Histogram, values: Sequence[float]) -> None:
    """``histogram.observe`` each of ``values``, writing each bucket touched once.

    In multiprocess mode every write goes to a memory-mapped file: noting 64 patches and
    writing them this way cost 2.4 to 3.8 us a patch on a busy 2-core machine, observing
    each one 11 to 12 us; a batch touches a few buckets. Falls back to plain ``observe``
    should the client's internals change.
    """
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if (
        len(values) == 1  # the same two writes, without the tally (a quiet pipeline's batch)
        or bounds is None
        or buckets is None
        or total is None
        or len(bounds) != len(buckets)
    ):
        for value in values:
            histogram.observe(value)
        return
    if not values:
        return
    total.inc(sum(values))
    # The first bound >= value: the bucket ``observe`` counts it in.
    for index, count in Tally(map(partial(bisect.bisect_left, bounds), values)).items():
        buckets[index].inc(count)


def observe_same(histogram: Histogram, value: float, count: int) -> None:
    """``histogram.observe(value)`` ``count`` times, in one write per series: the time
    that a whole batch or commit call took, counted for each of its patches."""
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for _ in range(count):
            histogram.observe(value)
        return
    if count > 0:
        total.inc(value * count)
        buckets[bisect.bisect_left(bounds, value)].inc(count)


class StageMetrics:
    """The series of one stage, created with the stage (at zero, so that rates and
    alerts have data from the start). A batch's entries are noted as they are decided
    (``outcome``, ``decided``) and counted once its writes returned (``flush``); the
    time its patches spent in each hop of the stage is observed per batch (``hop``)."""

    def __init__(self, stage: str, statuses: Sequence[str], hops: Sequence[str] = ()) -> None:
        self.stage = stage
        self._hops = {h: HOP.labels(stage, h) for h in hops}
        self._outcomes = {s: OUTCOMES.labels(stage, s) for s in statuses}
        self._rejections = {c.value: REJECTIONS.labels(stage, c.value) for c in RejectCode}
        self._latency = {
            s: SUBMIT_LATENCY.labels(stage, s) for s in statuses if s not in _NO_LATENCY
        }
        for metric in (PROCESSED, CLAIMED, DEAD, TRANSIENT, BATCH_SECONDS, BATCH_ENTRIES):
            metric.labels(stage)
        if "committed" in statuses:  # only a stage that commits rebases and retries
            REBASED.labels(stage)
            RETRIES.labels(stage)
        self._noted: list[tuple[str, str | None, str, bool]] = []

    def outcome(
        self, status: str, code: str | None = None, src: str = "", *, rebased: bool = False
    ) -> None:
        """Note one entry finished with ``status`` (``code`` for a rejection), submitted
        as ingress entry ``src`` ('' when unknown: no latency)."""
        self._noted.append((status, code, src, rebased))

    def decided(self, outcome: Outcome, *, behind: bool) -> None:
        """Note one outcome; ``behind``: the patch's base was older than the head it was
        decided against (so rebased, unless rejected for another reason than a
        conflict)."""
        code = None if outcome.code is None else outcome.code.value
        status = outcome.status.value
        rebased = behind and (status in _REBASED or code == RejectCode.CONFLICT.value)
        self._noted.append((status, code, outcome.src, rebased))

    def hop(self, name: str, seconds: Sequence[float]) -> None:
        """Observe hop ``name`` of this stage, one value per patch (``HOP``)."""
        observe_many(self._hops.get(name) or HOP.labels(self.stage, name), seconds)

    def hop_all(self, name: str, seconds: float, count: int) -> None:
        """Observe hop ``name`` of this stage taking ``seconds`` for ``count`` patches."""
        observe_same(self._hops.get(name) or HOP.labels(self.stage, name), seconds, count)

    def retried(self, count: int) -> None:
        """Count ``count`` patches decided again after losing the head race."""
        if count:
            RETRIES.labels(self.stage).inc(count)

    def discard(self) -> None:
        """Forget what was noted since the last ``flush`` (a batch that failed: it is
        retried and noted again)."""
        self._noted.clear()

    def flush(self, now_ms: int, results: Sequence[bytes | str] | None = None) -> None:
        """Count what was noted. ``results``, one per noted entry in order, are the
        script's answers: an entry answered ``fenced`` was claimed by another worker
        meanwhile, which decides it and counts it; here it counts as ``fenced``.
        Latencies end at ``now_ms``: this worker's clock when the batch's writes
        returned (the outcomes' ``at``, stamped by the server a little earlier; one
        clock on a local server)."""
        noted, self._noted = self._noted, []
        if results is not None and (b"fenced" in results or "fenced" in results):
            noted = [
                _FENCED if result in (b"fenced", "fenced") else note
                for note, result in zip(noted, results, strict=True)
            ]
        # Whole-list passes rather than one loop: this runs for every patch.
        for status, count in Tally(note[0] for note in noted).items():
            (self._outcomes.get(status) or OUTCOMES.labels(self.stage, status)).inc(count)
            if status in _NO_LATENCY:
                continue
            try:
                seconds = [
                    max(0, now_ms - int(src[: src.find("-")])) / 1000
                    for st, _, src, _ in noted
                    if st == status and src
                ]
            except ValueError:  # never from the server's ids; the careful way then
                seconds = [
                    max(0, now_ms - ms) / 1000
                    for st, _, src, _ in noted
                    if st == status and (ms := submitted_ms(src)) is not None
                ]
            histogram = self._latency.get(status) or SUBMIT_LATENCY.labels(self.stage, status)
            observe_many(histogram, seconds)
        for code, count in Tally(note[1] for note in noted if note[1] is not None).items():
            (self._rejections.get(code) or REJECTIONS.labels(self.stage, code)).inc(count)
        rebased = sum(note[3] for note in noted)
        if rebased:
            REBASED.labels(self.stage).inc(rebased)


def dead_lettered(stage: str, src: str) -> None:
    """Count an entry ``stage`` moved to the dead-letter stream; its outcome is a
    rejection (code ``invalid``), so it counts there too: every outcome is counted once."""
    DEAD.labels(stage).inc()
    OUTCOMES.labels(stage, "rejected").inc()
    REJECTIONS.labels(stage, RejectCode.INVALID.value).inc()
    ms = submitted_ms(src)
    if ms is not None:
        SUBMIT_LATENCY.labels(stage, "rejected").observe(
            max(0, time.time_ns() // 1_000_000 - ms) / 1000
        )
