"""The progress line of ``patchlog up``: its numbers against what the pipeline did."""

from __future__ import annotations

from redis.asyncio import Redis

from patchlog.ops.pulse import Pulse, PulseSample, pulse_text
from patchlog.streams.client import Client
from patchlog.streams.scripts import Scripts
from patchlog.streams.settings import Settings
from tests.integration.helpers import drain


def test_the_line_says_rate_backlog_and_rejections() -> None:
    """Committed per second over the interval, each backlog, rejections by code."""
    before = PulseSample(at=0.0, committed=100, backlog={}, rejected={})
    after = PulseSample(
        at=10.0,
        committed=8220,
        backlog={"normalize": 0, "execute": 12},
        rejected={"conflict": 3, "bounds": 1},
    )
    assert pulse_text(before, after) == (
        "patchlog: 812 committed/s, backlog normalize 0 execute 12; rejected bounds 1, conflict 3"
    )
    capped = PulseSample(at=10.0, committed=100, backlog={}, rejected={"stale": 2}, capped=True)
    assert pulse_text(before, capped).endswith("rejected stale 2 (of the first outcomes only)")


async def test_samples_count_commits_backlog_and_new_rejections(
    redis: Redis, settings: Settings, scripts: Scripts
) -> None:
    """Between two samples: the commits made, the backlog left, and only the rejections
    decided after the first sample."""
    client = Client(redis, settings.keys)
    await client.submit("d", 0, ops=[{"op": "delete", "from": 1}])  # bounds, before
    await drain(redis, settings, scripts)
    pulse = Pulse(redis, settings.keys)
    first = await pulse.sample(0.0)
    for n in range(5):
        await client.submit("d", n, ops=[{"op": "insert", "at": 1, "lines": [str(n)]}])
    await client.submit("d", 0, ops=[{"op": "delete", "from": 9}])  # bounds, after
    await drain(redis, settings, scripts)
    for _ in range(3):  # waiting for normalize
        await client.submit("d", 5, ops=[{"op": "insert", "at": 1, "lines": ["late"]}])
    second = await pulse.sample(1.0)
    assert second.committed - first.committed == 5
    assert second.backlog == {"normalize": 3, "execute": 0}
    assert second.rejected == {"bounds": 1}
    assert pulse_text(first, second).startswith("patchlog: 5.0 committed/s, backlog normalize 3")
