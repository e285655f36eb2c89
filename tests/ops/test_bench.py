"""The bench's plan, rates and hop figures, without a pipeline."""

from __future__ import annotations

import statistics

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from patchlog.consumers.metrics import HOP_BUCKETS, observe_many
from patchlog.ops.benchhops import HOPS, bucket_quantile, hop_figures, parse_samples
from patchlog.ops.load import SCENARIOS, Pacer, offered_rate, plan_runs


def test_light_needs_a_maximum_to_take_its_share_of() -> None:
    """light runs after a default run or with --rate; without either it is refused
    before anything runs, naming both ways out."""
    with pytest.raises(ValueError, match=r"default scenario before it.*or give --rate"):
        plan_runs(["light"], baselines=False, rate=None)
    with pytest.raises(ValueError, match="default scenario before it"):
        plan_runs(["light", "default"], baselines=True, rate=None)
    assert plan_runs(["default", "light"], baselines=True, rate=None) == [
        ("default", False), ("default", True), ("light", False),
    ]  # fmt: skip
    assert plan_runs(["light"], baselines=False, rate=800.0) == [("light", False)]
    with pytest.raises(ValueError, match="no scenario 'heavy'"):
        plan_runs(["heavy"], baselines=False, rate=None)


def test_light_is_offered_a_quarter_of_the_maximum() -> None:
    """A quarter of the default scenario's committed/s measured in the same bench, else
    of --rate; the other scenarios keep --rate (or the closed loop)."""
    light = SCENARIOS["light"]
    assert offered_rate(light, None, 14_564.0) == (
        3641, "25% of 14,564/s (the default scenario's committed/s)"
    )  # fmt: skip
    assert offered_rate(light, 7500.0, 14_564.0)[0] == 3641  # the measured maximum wins
    assert offered_rate(light, 800.0, None) == (200, "25% of 800/s (--rate)")
    assert offered_rate(SCENARIOS["default"], None, 14_564.0) == (None, "")
    assert offered_rate(SCENARIOS["hot"], 500.0, 14_564.0) == (500.0, "")


def test_a_low_open_loop_rate_is_offered_exactly() -> None:
    """364/s over a second of 5 ms ticks sends 364 patches, not 400 (two a tick), the
    slots in turn."""
    pacer = Pacer(364.0, slots=1000)
    sent = [slot for _ in range(round(1 / Pacer.STEP)) for slot in pacer.tick()]
    assert len(sent) == 364
    assert sent == list(range(364))


def test_bucket_quantile_interpolates_like_prometheus() -> None:
    """Linear in the bucket the rank falls in (from 0 in the first), the highest finite
    bound above it, 0 with no observation."""
    buckets = [(0.001, 0.0), (0.002, 10.0), (0.005, 20.0), (float("inf"), 20.0)]
    assert bucket_quantile(0.5, buckets) == pytest.approx(0.002)
    assert bucket_quantile(0.25, buckets) == pytest.approx(0.0015)
    assert bucket_quantile(0.75, buckets) == pytest.approx(0.0035)
    assert bucket_quantile(0.99, [(0.001, 1.0), (float("inf"), 100.0)]) == 0.001
    assert bucket_quantile(0.5, [(0.001, 4.0), (float("inf"), 4.0)]) == pytest.approx(0.0005)
    assert bucket_quantile(0.5, [(0.001, 0.0), (float("inf"), 0.0)]) == 0.0


def test_hop_figures_cover_the_window_between_two_scrapes() -> None:
    """Only what was observed between the scrapes counts: its exact mean, and p50 and
    p99 inside the buckets that hold the true ones; a hop nobody observed has count 0."""
    registry = CollectorRegistry()
    hop = Histogram(
        "patchlog_hop_seconds", "h", ["stage", "hop"], buckets=HOP_BUCKETS, registry=registry
    )
    wait = hop.labels("normalize", "ingress_wait")
    observe_many(wait, [5.0] * 50)  # before the window: left out
    before = parse_samples(generate_latest(registry).decode())
    window = [0.0004 + 0.00001 * i for i in range(98)] + [0.04, 0.045]
    observe_many(wait, window)
    after = parse_samples(generate_latest(registry).decode())

    figures = hop_figures(before, after)
    assert list(figures) == [h for stage, h in HOPS if stage != "bench"]
    got = figures["ingress_wait"]
    assert got["count"] == 100
    assert got["mean"] == pytest.approx(statistics.fmean(window) * 1000)
    assert 0.5 <= got["p50"] <= 1.0  # the median, 0.89 ms, is in the (0.5, 1] ms bucket
    assert 30 <= got["p99"] <= 50  # the 99th value, 40 ms, is in the (30, 50] ms bucket
    assert figures["decide"] == {"count": 0.0, "mean": 0.0, "p50": 0.0, "p99": 0.0}
