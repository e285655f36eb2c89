"""Where ``patchlog bench``'s latency goes: the per-hop breakdown of a scenario run.

The stages observe their own hops in ``patchlog_hop_seconds{stage,hop}``
(``consumers.metrics.HOP``); the bench scrapes every stage worker's ``/metrics`` (each
serves its own on a port of its own, ``Supervisor(metrics_base=...)``) at both edges of
the measured window, sums the workers, and takes the difference: the mean of each hop
from ``_sum`` and ``_count``, and its p50 and p99 interpolated in the buckets as
Prometheus's ``histogram_quantile`` does. The last hop, from the outcome's ``at`` to
the bench's tail reading it, the bench times itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import statistics
import urllib.request
from collections.abc import Iterable, Sequence

from prometheus_client.parser import text_string_to_metric_families

from patchlog.consumers.metrics import EXECUTE_HOPS, NORMALIZE_HOPS
from patchlog.streams.keys import EXECUTE, NORMALIZE

__all__ = [
    "HOPS",
    "OUTCOME_SEEN",
    "Samples",
    "bucket_quantile",
    "hop_figures",
    "parse_samples",
    "scrape_workers",
    "seen_figures",
    "total",
]

OUTCOME_SEEN = "outcome_seen"
"""The bench's own hop: the outcome's ``at`` to the tail reading it."""
HOPS: tuple[tuple[str, str], ...] = (
    *((NORMALIZE, hop) for hop in NORMALIZE_HOPS),
    *((EXECUTE, hop) for hop in EXECUTE_HOPS),
    ("bench", OUTCOME_SEEN),
)
"""(who times it, hop), in the order a patch goes through them."""

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
"""Prometheus samples by (name, sorted labels), summed over the workers scraped."""

_SCRAPE_TIMEOUT = 2.0  # seconds per worker
_HOP = "patchlog_hop_seconds"  # consumers.metrics.HOP: its series are this and a suffix


def parse_samples(text: str, into: Samples | None = None) -> Samples:
    """The ``patchlog_`` samples of a text exposition, added to ``into`` if given."""
    out: Samples = {} if into is None else into
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("patchlog_"):
                key = (sample.name, tuple(sorted(sample.labels.items())))
                out[key] = out.get(key, 0.0) + float(sample.value)
    return out


def _get(port: int) -> str:
    with urllib.request.urlopen(
        f"http://127.0.0.1:{port}/metrics", timeout=_SCRAPE_TIMEOUT
    ) as reply:
        text: str = reply.read().decode()
        return text


async def scrape_workers(ports: Iterable[int]) -> Samples:
    """Every worker's samples on ``ports``, summed; a worker that does not answer is
    left out (its figures then read as missing, not as an error)."""
    out: Samples = {}
    for port in ports:
        with contextlib.suppress(OSError):
            parse_samples(await asyncio.to_thread(_get, port), out)
    return out


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= set(ls))


def bucket_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """The ``q`` quantile of a histogram given as (upper bound, cumulative count) in
    ascending order, the last bound ``inf``: linear in the bucket it falls in (the
    first from 0), the highest finite bound if it falls above it, 0 with no count."""
    if not buckets or buckets[-1][1] <= 0:
        return 0.0
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank and count > below:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def _histogram(samples: Samples, stage: str, hop: str) -> tuple[float, float, dict[float, float]]:
    """(count, sum, cumulative count by upper bound) of one hop's series."""
    count = seconds = 0.0
    buckets: dict[float, float] = {}
    for (name, pairs), value in samples.items():
        if not name.startswith(_HOP):
            continue
        labels = dict(pairs)
        if labels.get("stage") != stage or labels.get("hop") != hop:
            continue
        if name == _HOP + "_count":
            count += value
        elif name == _HOP + "_sum":
            seconds += value
        elif name == _HOP + "_bucket":
            bound = float(labels["le"])
            buckets[bound] = buckets.get(bound, 0.0) + value
    return count, seconds, buckets


def hop_figures(before: Samples, after: Samples) -> dict[str, dict[str, float]]:
    """Each stage hop's count, mean, p50 and p99 (ms) between two scrapes."""
    out: dict[str, dict[str, float]] = {}
    for stage, hop in HOPS:
        if stage == "bench":
            continue
        count0, sum0, buckets0 = _histogram(before, stage, hop)
        count1, sum1, buckets1 = _histogram(after, stage, hop)
        count = count1 - count0
        buckets = [(b, n - buckets0.get(b, 0.0)) for b, n in sorted(buckets1.items())]
        out[hop] = {
            "count": count,
            "mean": (sum1 - sum0) / count * 1000 if count > 0 else 0.0,
            "p50": bucket_quantile(0.5, buckets) * 1000,
            "p99": bucket_quantile(0.99, buckets) * 1000,
        }
    return out


def seen_figures(seconds: Sequence[float]) -> dict[str, float]:
    """Count, mean, p50 and p99 (ms) of the bench's own hop, from every value."""
    if not seconds:
        return {"count": 0.0, "mean": 0.0, "p50": 0.0, "p99": 0.0}
    ordered = sorted(seconds)

    def at(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000

    return {
        "count": float(len(ordered)),
        "mean": statistics.fmean(ordered) * 1000,
        "p50": at(0.5),
        "p99": at(0.99),
    }
