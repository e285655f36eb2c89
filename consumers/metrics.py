"""Prometheus metrics of the stage workers (served by ``ops.metrics``)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

__all__ = ["BATCH_SECONDS", "CLAIMED", "DEAD", "OUTCOMES", "PROCESSED", "RETRIES"]

PROCESSED = Counter("patchlog_entries_processed_total", "Stream entries a stage handled", ["stage"])
OUTCOMES = Counter(
    "patchlog_outcomes_total", "Outcomes a stage recorded, by status", ["stage", "status"]
)
RETRIES = Counter(
    "patchlog_commit_retries_total", "Patches decided again after losing the head race"
)
CLAIMED = Counter(
    "patchlog_claimed_total", "Entries taken over from workers whose lease expired", ["stage"]
)
DEAD = Counter("patchlog_dead_lettered_total", "Entries moved to the dead-letter stream", ["stage"])
BATCH_SECONDS = Histogram(
    "patchlog_batch_seconds",
    "Time to handle one batch of entries",
    ["stage"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
