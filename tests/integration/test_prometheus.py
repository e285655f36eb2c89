"""A real Prometheus server (Debian's binary) scraping a real pipeline (`patchlog up
--metrics-port`) with the scrape config and alert rules of ``ops/prometheus``: a known
load of 200 patches reaches Prometheus as exactly its numbers, per stage, status and
code; the counters survive a kill -9 of a worker; the rules evaluate without error and
every metric the rules and the dashboard name is in the scrape."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import re
import shutil
import signal
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from patchlog.consumers.metrics import LATENCY_BUCKETS, observe_many
from patchlog.streams.connection import connect
from patchlog.streams.settings import Settings
from tests.integration.helpers import free_port

_ROOT = Path(__file__).resolve().parents[2]
_SHIPPED = _ROOT / "ops" / "prometheus"
_KEYS = Settings().keys  # `up` runs in the default namespace
_WAIT = 30.0  # seconds for Prometheus to show what the pipeline did


def _prometheus() -> Path:
    """Debian's prometheus binary; a missing one fails the run (it is no pass)."""
    found = shutil.which("prometheus")
    if found is None:
        pytest.fail(
            "prometheus is not installed (.ci/run installs Debian's prometheus package: "
            "apt-get install --no-install-recommends prometheus)"
        )
    return Path(found)


class _Process:
    """A child process with its output in files (a pipe nobody reads would block it)."""

    def __init__(self, folder: Path, name: str, *args: str) -> None:
        self.args = args
        self.out = folder / f"{name}.out"
        self.err = folder / f"{name}.err"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> _Process:
        # Only the test's arguments configure it, not the environment it runs in.
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("PATCHLOG_") and k not in ("REDIS_URL", "PROMETHEUS_MULTIPROC_DIR")
        }
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.process = await asyncio.create_subprocess_exec(
                *self.args, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=err
            )
        return self

    @property
    def output(self) -> str:
        return self.out.read_text() + self.err.read_text()

    async def stop(self, timeout: float = 20) -> int:
        """SIGTERM, and its exit status (within ``timeout`` seconds)."""
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.process.wait(), timeout)

    def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()


class _Stack(msgspec.Struct):
    """A pipeline and the Prometheus server scraping it."""

    up: _Process
    prometheus: _Process
    redis: Redis
    metrics_port: int
    api: str
    """Prometheus's base URL."""


def _get(url: str, timeout: float = 5) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as reply:  # noqa: S310 - our own http URL
        return bytes(reply.read())


async def _query(stack: _Stack, promql: str) -> list[dict[str, Any]]:
    """The instant vector Prometheus answers for ``promql`` (it must accept it)."""
    url = f"{stack.api}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    try:
        reply = json.loads(await asyncio.to_thread(_get, url))
    except urllib.error.HTTPError as err:  # a query it refuses: 400 with the reason
        pytest.fail(f"Prometheus refused {promql!r}: {err.read().decode()}")
    assert reply["status"] == "success", (promql, reply)
    result: list[dict[str, Any]] = reply["data"]["result"]
    return result


async def _values(stack: _Stack, promql: str, *labels: str) -> dict[tuple[str, ...], float]:
    """``promql``'s series as {label values: value}."""
    return {
        tuple(row["metric"].get(label, "") for label in labels): float(row["value"][1])
        for row in await _query(stack, promql)
    }


async def _until(
    check: Callable[[], Awaitable[Any]], want: Any, timeout: float, what: str
) -> float:
    """Poll ``check`` until it returns ``want`` (bounded); the seconds it took."""
    started = time.monotonic()
    got: Any = None
    while time.monotonic() - started < timeout:
        with contextlib.suppress(OSError, urllib.error.URLError):
            got = await check()
            if got == want:
                return time.monotonic() - started
        await asyncio.sleep(0.25)
    pytest.fail(f"{what}: not within {timeout:g} s; last seen {got!r}, wanted {want!r}")


def _config(folder: Path, metrics_port: int) -> Path:
    """The shipped scrape config and rules, scraping ``metrics_port`` every second."""
    text = (_SHIPPED / "prometheus.yml").read_text()
    for old, new in (
        ("127.0.0.1:9478", f"127.0.0.1:{metrics_port}"),
        ("scrape_interval: 15s", "scrape_interval: 1s"),
        ("evaluation_interval: 15s", "evaluation_interval: 1s"),
        ("scrape_timeout: 10s", "scrape_timeout: 1s"),  # at most the interval
    ):
        assert text.count(old) == 1, f"ops/prometheus/prometheus.yml no longer says {old!r}"
        text = text.replace(old, new)
    shutil.copy(_SHIPPED / "alerts.yml", folder / "alerts.yml")
    config = folder / "prometheus.yml"
    config.write_text(text)
    return config


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[_Stack]:
    """`patchlog up` (embedded server, one worker per stage) with its metrics on one
    port, and a Prometheus server of its own scraping it every second."""
    binary = _prometheus()
    port, metrics_port, api_port = free_port(), free_port(), free_port()
    up = _Process(
        tmp_path, "up", sys.executable, "-m", "patchlog", "up",
        "--data-dir", str(tmp_path / "data"), "--port", str(port),
        "--metrics-port", str(metrics_port),
    )  # fmt: skip
    prometheus = _Process(
        tmp_path, "prometheus", str(binary),
        f"--config.file={_config(tmp_path, metrics_port)}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{api_port}",
        "--log.level=warn",
    )  # fmt: skip
    redis = connect(Settings(retries=0), f"redis://127.0.0.1:{port}/0")
    made = _Stack(up, prometheus, redis, metrics_port, f"http://127.0.0.1:{api_port}")
    try:
        await up.start()
        await prometheus.start()

        async def ready() -> bool:
            await asyncio.to_thread(_get, f"{made.api}/-/ready")
            return True

        await _until(ready, True, _WAIT, f"prometheus ready ({prometheus.output})")

        async def scraped() -> dict[tuple[str, ...], float]:
            return await _values(made, "patchlog_group_consumers", "stage")

        # Both workers hold their lease, and Prometheus has seen them do so.
        await _until(scraped, {("normalize",): 1.0, ("execute",): 1.0}, _WAIT, "workers up")
        yield made
        assert await up.stop() == 0, up.output
        # The workers' metric files went with it.
        folders = set(re.findall(r'(/[^"\s]*/patchlog-metrics-[^"\s/]+)', up.output))
        assert len(folders) == 1, up.output
        assert not await asyncio.to_thread(Path(folders.pop()).exists)
    finally:
        for process in (up, prometheus):  # whatever happened, neither outlives the test
            process.kill()
            if process.process is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(process.process.wait(), 10)
        await redis.aclose()


def _insert(line: str) -> str:
    return json.dumps([{"op": "insert", "at": 1, "lines": [line]}])


def _known_load() -> list[dict[str, str]]:
    """200 entries whose every outcome is known (see ``_EXPECTED``)."""
    # 100 inserts at line 1 of ten documents, all on base 0: the first of each document
    # commits, the nine others are rebased onto it and commit too.
    load = [
        {"doc": f"a{d}", "base": "0", "id": f"a{d}-{k}", "ops": _insert(f"{k}")}
        for k in range(10)
        for d in range(10)
    ]
    # A document of three lines, line 2 replaced at revision 2, then replaced twenty
    # times more on base 1: each a conflict (rebased, and overwriting what it did not see).
    three = json.dumps([{"op": "insert", "at": 1, "lines": ["1", "2", "3"]}])
    load.append({"doc": "c", "base": "0", "id": "c-0", "ops": three})
    load += [
        {"doc": "c", "base": "1", "id": f"c-{k}", "ops": json.dumps(
            [{"op": "replace", "from": 2, "lines": [f"two {k}"]}])}
        for k in range(1, 22)
    ]  # fmt: skip
    # A one-line document, then ten deletes of its line 5: bounds (execute).
    load.append({"doc": "b", "base": "0", "id": "b-0", "ops": _insert("only")})
    delete = json.dumps([{"op": "delete", "from": 5}])
    load += [{"doc": "b", "base": "1", "id": f"b-{k}", "ops": delete} for k in range(1, 11)]
    # Twenty malformed entries (invalid) and ten that delete line 1 twice (overlap),
    # both rejected by normalize.
    load += [{"doc": "d", "base": "x", "id": f"inv-{k}", "ops": "[]"} for k in range(20)]
    twice = json.dumps([{"op": "delete", "from": 1}, {"op": "delete", "from": 1}])
    load += [{"doc": "e", "base": "0", "id": f"ov-{k}", "ops": twice} for k in range(10)]
    # 37 of the first inserts sent again, same id and payload: duplicates.
    load += [dict(entry) for entry in load[:37]]
    assert len(load) == 200
    return load


_EXPECTED = {
    "outcomes": {
        ("normalize", "forwarded"): 170.0,
        ("normalize", "rejected"): 30.0,
        ("execute", "committed"): 103.0,
        ("execute", "rejected"): 30.0,
        ("execute", "duplicate"): 37.0,
    },
    "rejections": {
        ("normalize", "invalid"): 20.0,
        ("normalize", "overlap"): 10.0,
        ("execute", "conflict"): 20.0,
        ("execute", "bounds"): 10.0,
    },
    "processed": {("normalize",): 200.0, ("execute",): 170.0},
    "rebased": {("execute",): 110.0},
    "latency_count": {
        ("normalize", "forwarded"): 170.0,
        ("normalize", "rejected"): 30.0,
        ("execute", "committed"): 103.0,
        ("execute", "rejected"): 30.0,
        ("execute", "duplicate"): 37.0,
    },
}


async def _counted(stack: _Stack) -> dict[str, dict[tuple[str, ...], float]]:
    """The patch counters as Prometheus has them (zero series left out)."""
    return {
        "outcomes": await _values(stack, "patchlog_outcomes_total > 0", "stage", "status"),
        "rejections": await _values(stack, "patchlog_rejections_total > 0", "stage", "code"),
        "processed": await _values(stack, "patchlog_entries_processed_total > 0", "stage"),
        "rebased": await _values(stack, "patchlog_rebased_total > 0", "stage"),
        "latency_count": await _values(
            stack, "patchlog_submit_latency_seconds_count > 0", "stage", "status"
        ),
    }


async def _submit(redis: Redis, entries: list[dict[str, str]]) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        for entry in entries:
            pipe.xadd(_KEYS.patches, entry)  # type: ignore[arg-type]
        await pipe.execute()


async def _outcomes_stream(redis: Redis) -> collections.Counter[tuple[str, str]]:
    """(status, code) of every entry in patchlog:outcomes: the truth the counters count."""
    rows: Any = await redis.xrange(_KEYS.outcomes)
    return collections.Counter(
        (f[b"status"].decode(), f.get(b"code", b"").decode()) for _, f in rows
    )


def _metric_names(text: str) -> set[str]:
    """The ``patchlog_`` names (of series, before any label) in ``text``."""
    return set(re.findall(r"\bpatchlog_[a-z_]+[a-z]", text))


async def test_prometheus_counts_a_known_load_exactly(stack: _Stack) -> None:
    """200 patches (103 committed, 37 duplicates, 60 rejected with four codes) show up in
    Prometheus as exactly those numbers per stage, status and code, within 30 s; the
    group gauges come back to zero backlog; the scrape passes ``promtool check
    metrics``; every rule evaluates cleanly; and each metric the rules and the
    dashboard use is in the scrape, each dashboard query accepted by Prometheus."""
    started = time.monotonic()
    await _submit(stack.redis, _known_load())
    took = await _until(lambda: _counted(stack), _EXPECTED, _WAIT, "the counters of the load")
    print(f"counters matched in Prometheus {took:.1f} s after the load was submitted")

    # The outcomes stream says the same (so the expectation is the pipeline's truth).
    assert await _outcomes_stream(stack.redis) == {
        ("committed", ""): 103, ("duplicate", ""): 37, ("rejected", "invalid"): 20,
        ("rejected", "overlap"): 10, ("rejected", "conflict"): 20, ("rejected", "bounds"): 10,
    }  # fmt: skip

    async def gauges() -> dict[str, Any]:
        backlog = await _values(stack, "patchlog_group_lag + patchlog_group_pending", "stage")
        streams = await _values(stack, "patchlog_stream_length", "stream")
        up = await _values(stack, "patchlog_server_up")
        return {"backlog": backlog, "outcomes": streams.get(("outcomes",)), "up": up}

    await _until(
        gauges,
        {"backlog": {("normalize",): 0.0, ("execute",): 0.0}, "outcomes": 200.0, "up": {(): 1.0}},
        _WAIT,
        "the group and stream gauges",
    )
    health = await _values(stack, "patchlog_health_status == 1", "status")
    assert list(health) in ([("ok",)], [("degraded",)]), health
    assert await _values(stack, "patchlog_dead_lettered_total", "stage") == {
        ("normalize",): 0.0, ("execute",): 0.0,
    }  # fmt: skip

    scrape = await asyncio.to_thread(_get, f"http://127.0.0.1:{stack.metrics_port}/metrics")
    lines = scrape.count(b"\n")
    print(f"one scrape of the pipeline: {len(scrape)} bytes, {lines} lines")
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool comes with Debian's prometheus package"
    checked = await asyncio.create_subprocess_exec(
        promtool, "check", "metrics",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    said, _ = await asyncio.wait_for(checked.communicate(scrape), 30)
    assert checked.returncode == 0, said.decode()

    exposed = {
        sample.name
        for family in text_string_to_metric_families(scrape.decode())
        for sample in family.samples
    }
    rules = (_SHIPPED / "alerts.yml").read_text()
    dashboard = json.loads((_SHIPPED / "grafana-dashboard.json").read_text())
    queries = [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]  # fmt: skip
    named = _metric_names(rules) | _metric_names("\n".join(queries))
    assert named - exposed == set(), "named by the rules or the dashboard, not in the scrape"
    for promql in queries:
        await _query(stack, promql.replace("$instance", ".*").replace("$__rate_interval", "5s"))

    async def rules_evaluated() -> list[tuple[str, str]]:
        reply = json.loads(await asyncio.to_thread(_get, f"{stack.api}/api/v1/rules"))
        found = [r for g in reply["data"]["groups"] for r in g["rules"]]
        assert len(found) == rules.count("- alert:")
        return [(r["name"], r.get("lastError", "")) for r in found if r["health"] != "ok"]

    await _until(rules_evaluated, [], _WAIT, "every rule evaluated without error")
    assert time.monotonic() - started < 30


async def test_counters_survive_a_worker_killed_and_restarted(stack: _Stack) -> None:
    """kill -9 of the execute worker: `up` restarts it and folds the dead worker's
    files into the sum, so Prometheus never sees the counter go back (no reset), and
    the commits after the restart add to those before."""

    def inserts(first: int, count: int) -> list[dict[str, str]]:
        return [
            {"doc": "r", "base": "0", "id": f"r-{k}", "ops": _insert(f"{k}")}
            for k in range(first, first + count)
        ]

    async def committed() -> dict[tuple[str, ...], float]:
        return await _values(
            stack, 'patchlog_outcomes_total{stage="execute",status="committed"}', "stage"
        )

    await _submit(stack.redis, inserts(0, 10))
    await _until(committed, {("execute",): 10.0}, _WAIT, "ten commits counted")
    lease: Any = await stack.redis.get(_KEYS.lease("execute", "execute-1"))
    os.kill(json.loads(lease)["pid"], signal.SIGKILL)

    async def exits() -> dict[tuple[str, ...], float]:
        return await _values(stack, "patchlog_worker_exits_total", "stage")

    await _until(
        exits,
        {("normalize",): 0.0, ("execute",): 1.0, ("health",): 0.0},
        _WAIT,
        "the kill counted by up",
    )
    await _submit(stack.redis, inserts(10, 10))
    await _until(committed, {("execute",): 20.0}, _WAIT, "ten more commits counted")
    resets = await _values(
        stack, 'resets(patchlog_outcomes_total{stage="execute",status="committed"}[1m])'
    )
    assert resets == {(): 0.0}
    running = await _values(stack, "patchlog_workers_running", "stage")
    assert running == {("normalize",): 1.0, ("execute",): 1.0, ("health",): 1.0}


def test_observe_many_counts_like_observe() -> None:
    """A batch written through ``observe_many`` exposes what observing each value does."""
    one, many = CollectorRegistry(), CollectorRegistry()
    values = [0.0, 0.001, 0.0011, 0.003, 1.0, 2.5, 7.0, 119.0, 120.0, 121.0, 1e6] * 3
    each = Histogram("x_seconds", "x", buckets=LATENCY_BUCKETS, registry=one)
    for value in values:
        each.observe(value)
    observe_many(Histogram("x_seconds", "x", buckets=LATENCY_BUCKETS, registry=many), values)

    def samples(registry: CollectorRegistry) -> list[str]:
        return [
            line
            for line in generate_latest(registry).decode().splitlines()
            if not line.startswith("#") and "_created" not in line
        ]

    assert samples(one) == samples(many)
