"""The benchmark harness itself: a tiny run produces sane figures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from patchlog.ops.bench import BenchResult, Scenario, run_bench, run_scenario
from patchlog.ops.benchhops import HOPS
from patchlog.ops.load import Appender
from patchlog.streams.connection import connect
from patchlog.streams.settings import Durability, Settings
from tests.integration.helpers import KINDS, dedicated_server


def _check_hops(result: BenchResult) -> None:
    """Every hop measured, none negative, and their means adding up to the mean time
    from submit to outcome."""
    hops = result.hops_ms
    assert list(hops) == [hop for _, hop in HOPS]
    for hop, figures in hops.items():
        assert figures["count"] >= result.committed / 2, (hop, figures)
        assert figures["mean"] >= 0, (hop, figures)
        assert 0 <= figures["p50"] <= figures["p99"], (hop, figures)
    summed = sum(figures["mean"] for figures in hops.values())
    mean = result.latency_ms["mean"]
    # The hops run without a gap from the server's stamp of the ingress entry id to the
    # tail reading the outcome. Short of the client's time: only its send before that
    # stamp (1.5 to 3 ms on average, measured on a busy 2-core machine). Over it: a
    # server stamp falls inside a script call, so the normalized entry's id overlaps the
    # normalize hop and the outcome's `at` the commit hop, by at most those hops; each
    # of the three stamps, rounded down to its ms, adds up to 1 ms. 10% of the mean
    # more each way for the window's edges, where one patch's hops and outcome can fall
    # on either side.
    slack = 3.0 + 0.1 * mean
    overlap = hops["normalize"]["mean"] + hops["commit"]["mean"]
    assert mean - slack <= summed <= mean + overlap + slack, (summed, mean, hops)


async def test_a_short_bench_run_reports_its_figures() -> None:
    """One second of closed-loop load in strict durability: patches commit; latency,
    CPU, the server's appendfsync and each hop of the patches' way are measured."""
    tiny = Scenario("tiny", docs=20, lines=20, clients=4)
    result = await run_scenario(tiny, seconds=1.0, durability=Durability.STRICT)
    assert result.committed > 100
    assert set(result.outcomes) == {"committed"}
    assert 0 < result.latency_ms["p50"] <= result.latency_ms["p99"] <= result.latency_ms["max"]
    assert {"normalize-1", "execute-1", "server"} <= set(result.cpu_us_per_patch)
    assert all(v > 0 for v in result.cpu_us_per_patch.values())
    assert result.server_ceiling_per_s > result.committed_per_s * 0.5
    assert (result.appendfsync, result.durability) == ("always", "strict")
    _check_hops(result)


@pytest.mark.parametrize("kind", KINDS)
async def test_light_load_on_a_given_server_reports_its_own_fsync_policy(
    tmp_path: Path, kind: str
) -> None:
    """``bench --scenario light --rate 800`` against a server given by URL, set to
    everysec: light is offered a quarter of 800/s, open loop, and the JSON names the
    server's appendfsync as the server says it, the durability mode and every hop."""
    async with dedicated_server(tmp_path / "server", kind) as srv:
        redis = connect(Settings(), srv.url, name="patchlog-test")
        try:
            await redis.config_set("appendfsync", "everysec")
            config: Any = await redis.config_get("appendfsync")
        finally:
            await redis.aclose()
        out = tmp_path / "bench.json"
        status = await run_bench(
            ["light"], seconds=1.0, rate=800.0, url=srv.url, normalize_workers=1,
            execute_workers=1, baselines=False, out=out, min_ratio=None,
        )  # fmt: skip
    assert status == 0
    payload = json.loads(out.read_text())
    [light] = [BenchResult(**r) for r in payload["results"]]
    assert light.mode == "open 200/s"
    assert light.rate_basis == "25% of 800/s (--rate)"
    assert 100 <= light.committed_per_s <= 300  # not the closed loop, nor 800/s
    assert light.appendfsync == config["appendfsync"] == "everysec"
    assert light.durability == payload["durability"] == "normal"
    assert {"normalize-1", "execute-1", "server", "bench"} <= set(light.cpu_us_per_patch)
    _check_hops(light)


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
