"""The stages' batched histogram writes count exactly what observing each value does."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from patchlog.consumers.metrics import HOP_BUCKETS, observe_many, observe_same


def _samples(registry: CollectorRegistry) -> list[str]:
    return [
        line
        for line in generate_latest(registry).decode().splitlines()
        if not line.startswith("#") and "_created" not in line
    ]


def test_one_value_written_for_many_patches_counts_like_observing_each() -> None:
    """``observe_same`` (a batch's or a commit call's time, once per patch) and a
    one-value ``observe_many`` expose what ``observe`` does, bucket bounds included."""
    one, same = CollectorRegistry(), CollectorRegistry()
    each = Histogram("x_seconds", "x", buckets=HOP_BUCKETS, registry=one)
    batched = Histogram("x_seconds", "x", buckets=HOP_BUCKETS, registry=same)
    for value, count in ((0.0015, 64), (0.002, 3), (0.0, 1), (61.0, 2), (0.3, 0)):
        for _ in range(count):
            each.observe(value)
        observe_same(batched, value, count)
    each.observe(0.004)
    observe_many(batched, [0.004])
    assert _samples(one) == _samples(same)
