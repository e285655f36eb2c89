"""The benchmark harness itself: a tiny run produces sane figures."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis

from patchlog.ops.bench import Scenario, run_scenario
from patchlog.ops.load import Appender
from patchlog.streams.settings import Settings


async def test_a_short_bench_run_reports_its_figures() -> None:
    """One second of closed-loop load: patches commit, latency and CPU are measured."""
    tiny = Scenario("tiny", docs=20, lines=20, clients=4)
    result = await run_scenario(tiny, seconds=1.0)
    assert result.committed > 100
    assert set(result.outcomes) == {"committed"}
    assert 0 < result.latency_ms["p50"] <= result.latency_ms["p99"] <= result.latency_ms["max"]
    assert {"normalize-1", "execute-1", "server"} <= set(result.cpu_us_per_patch)
    assert all(v > 0 for v in result.cpu_us_per_patch.values())
    assert result.server_ceiling_per_s > result.committed_per_s * 0.5


async def test_the_naive_pipeline_runs_under_the_same_load() -> None:
    """The naive baseline runs as its own process where patchlog's workers run, and
    the same clients measure it: its patches commit, its CPU is counted."""
    tiny = Scenario("tiny", docs=20, lines=20, clients=4)
    result = await run_scenario(tiny, seconds=1.0, naive=True)
    assert result.scenario == "tiny (naive)"
    assert result.committed > 20
    assert set(result.outcomes) == {"committed"}
    assert {"naive", "bench", "server"} == set(result.cpu_us_per_patch)
    assert result.cpu_us_per_patch["naive"] > 0


async def test_appender_writes_entries_and_reports_error_replies(
    redis: Redis, settings: Settings
) -> None:
    """The bench clients' plain-protocol XADDs land in the stream in order; an error
    reply surfaces as an exception naming it, not as a silent loss."""
    assert settings.redis_url is not None
    appender = Appender(settings.redis_url)
    await appender.open()
    try:
        stream = settings.keys.patches
        await appender.xadd(stream, [{"doc": f"d{i}", "base": "0", "ops": "[]"} for i in range(3)])
        rows: Any = await redis.xrange(stream)
        assert [r[1][b"doc"] for r in rows] == [b"d0", b"d1", b"d2"]
        await redis.set(settings.keys.dead, "not a stream")
        with pytest.raises(OSError, match="WRONGTYPE"):
            await appender.xadd(settings.keys.dead, [{"doc": "x"}])
    finally:
        await appender.close()
