"""``patchlog bench``: offered load against a real pipeline, with the figures that matter.

It starts a fresh embedded server (or uses a URL, in its own namespace) and stage
processes, seeds documents through the pipeline, then offers load for a fixed time:
closed loop (one patch in flight per client and document, based on the last head that
client saw) or open loop (a fixed rate). The outcomes stream is tailed to time every
patch from submit to outcome, and ``ops.benchhops`` says where that time went, hop by
hop. CPU time of each stage process comes from /proc, the server's from INFO. The
baselines of ``ops.baselines`` run on the same server. Each run reports the server's
``appendfsync`` (read from it) and the durability mode its clients submitted in.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import structlog
from redis.asyncio import Redis

from patchlog.ops.benchhops import (
    OUTCOME_SEEN,
    Samples,
    hop_figures,
    scrape_workers,
    seen_figures,
    total,
)
from patchlog.ops.config import redact
from patchlog.ops.gcpolicy import quiet_gc
from patchlog.ops.load import (
    SCENARIOS,
    Appender,
    Load,
    Pacer,
    Scenario,
    offered_rate,
    plan_runs,
    seed,
    tail,
)
from patchlog.ops.purge import purge_all
from patchlog.ops.supervisor import Supervisor
from patchlog.streams.connection import connect, read_persistence
from patchlog.streams.keys import EXECUTE, NORMALIZE
from patchlog.streams.server import die_with_parent, free_port
from patchlog.streams.settings import Durability, Fsync, Settings

__all__ = ["SCENARIOS", "BenchResult", "Scenario", "run_bench", "run_scenario"]

log = structlog.get_logger("patchlog.bench")

_TICK = os.sysconf("SC_CLK_TCK")


class BenchResult(msgspec.Struct, kw_only=True):
    """Figures of one scenario run."""

    scenario: str
    mode: str
    seconds: float
    submitted: int
    committed: int
    outcomes: dict[str, int]
    committed_per_s: float
    latency_ms: dict[str, float]
    cpu_us_per_patch: dict[str, float]
    server_ceiling_per_s: float
    server_memory_bytes: int
    memory_per_million_revisions: float
    commit_retries_per_patch: float | None = None
    """Patches decided again after losing the head race, per committed patch (from the
    execute workers' /metrics); ``None`` for the naive pipeline."""
    appendfsync: str | None = None
    """The server's ``appendfsync`` as it said during the run (``CONFIG GET``);
    ``None`` if it would not say."""
    durability: str = Durability.NORMAL.value
    """``strict``: the clients' submissions waited for the fsync (``WAITAOF``)."""
    hops_ms: dict[str, dict[str, float]] = msgspec.field(default_factory=dict)
    """Per hop (``ops.benchhops.HOPS``): count, mean, p50 and p99 in ms; empty for the
    naive pipeline."""
    rate_basis: str = ""
    """Where an open-loop rate derived from a measured maximum came from."""
    partitions: int = 1
    """Execute partitions (``PATCHLOG_PARTITIONS``) of the run."""


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


async def _server_cpu(redis: Redis) -> float:
    info: Any = await redis.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0, "mean": 0.0}
    ordered = sorted(values)

    def at(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000

    return {
        "p50": at(0.50),
        "p95": at(0.95),
        "p99": at(0.99),
        "max": ordered[-1] * 1000,
        "mean": statistics.fmean(ordered) * 1000,
    }


async def run_scenario(
    scenario: Scenario,
    *,
    seconds: float,
    rate: float | None = None,
    url: str | None = None,
    normalize_workers: int = 1,
    execute_workers: int = 1,
    progress: Any = None,
    naive: bool = False,
    fsync: Fsync = Fsync.ALWAYS,
    durability: Durability = Durability.NORMAL,
    partitions: int = 1,
) -> BenchResult:
    """Run one scenario for ``seconds`` of measured load (after 1 s of warm-up), on
    patchlog's workers or, with ``naive``, on the naive pipeline's process instead;
    ``fsync`` is the embedded server's ``appendfsync`` (without ``url``); in strict
    ``durability`` each batch of submissions waits for the server's fsync.

    Raises ``ServerRefused`` for strict durability on a server without ``WAITAOF``."""
    with quiet_gc():  # the clients' own pauses would count as the pipeline's latency
        return await _measure(
            scenario,
            seconds=seconds,
            rate=rate,
            url=url,
            workers=(normalize_workers, execute_workers),
            progress=progress,
            naive=naive,
            fsync=fsync,
            durability=durability,
            partitions=partitions,
        )


async def _measure(  # noqa: PLR0915 - one timed sequence, read top to bottom
    scenario: Scenario,
    *,
    seconds: float,
    rate: float | None,
    url: str | None,
    workers: tuple[int, int],
    progress: Any,
    naive: bool,
    fsync: Fsync,
    durability: Durability,
    partitions: int,
) -> BenchResult:
    folder = Path(tempfile.mkdtemp(prefix="patchlog-bench-"))
    namespace = f"bench{random.randrange(1 << 30):x}"
    settings = Settings(
        redis_url=url,
        data_dir=str(folder),
        port=free_port(),
        namespace=namespace,
        fsync=fsync,
        durability=durability,
        partitions=partitions,
    )
    supervisor = Supervisor(
        settings,
        normalize=0 if naive else workers[0],
        execute=0 if naive else workers[1],
        metrics_base=0 if naive else _free_ports(sum(workers)),
        worker_log=folder / "workers.log",  # the table is the bench's output
    )
    parts = _Parts(supervisor, folder, namespace, external=url is not None)
    failed = True
    try:
        await supervisor.start()
        strict = _check_waitaof(supervisor, durability)
        redis = connect(settings, supervisor.url, name="patchlog-bench", block_ms=1000)
        parts.redis = redis
        appendfsync = (await read_persistence(redis)).appendfsync
        if naive:
            parts.baseline = await _start_naive(supervisor.url, namespace)
        if supervisor.url.startswith("redis://"):
            parts.appender = Appender(supervisor.url)
            await parts.appender.open()
        load = Load(redis, settings, scenario, seed=11, appender=parts.appender, fsynced=strict)
        await seed(redis, settings, load, alive=lambda: all(w.alive for w in supervisor.workers))
        start_id: Any = (await redis.xinfo_stream(settings.keys.outcomes))["last-generated-id"]
        resend: asyncio.Queue[list[int]] = asyncio.Queue()
        parts.tailing = asyncio.create_task(
            tail(redis, settings.keys.outcomes, start_id.decode(), load, parts.stop, resend)
        )
        # The stages' CPU per patch; the health prober (and a projector) are not the load.
        stages = [w for w in supervisor.workers if w.process and w.stage in (NORMALIZE, EXECUTE)]
        pids = {w.name: w.process.pid for w in stages if w.process}
        ports = [w.metrics_port for w in stages if w.metrics_port]
        if parts.baseline is not None:
            pids["naive"] = parts.baseline.pid
        began = time.perf_counter()
        warm_until = began + 1.0
        until = warm_until + seconds
        before = _Snapshot()
        t0 = began
        if rate is None:
            await load.submit(list(range(len(load.slots))))
        next_tick = time.perf_counter()
        pacer = Pacer(rate or 0.0, len(load.slots))
        while True:
            now = time.perf_counter()
            if not load.measuring and now >= warm_until:
                before = await _snapshot(redis, settings, ports, pids)
                load.measuring = True  # the window opens after the slow reads
                t0 = time.perf_counter()
            if now >= until:
                break
            if progress is not None:
                progress(min(1.0, (now - began) / (until - began)), load.committed)
            if rate is None:
                try:
                    ready = await asyncio.wait_for(resend.get(), 0.2)
                except TimeoutError:
                    continue
                await load.submit(ready)
            else:
                await load.submit(pacer.tick())
                next_tick += Pacer.STEP
                await asyncio.sleep(max(0.0, next_tick - time.perf_counter()))
        load.measuring = False  # the window closes before the slow reads
        elapsed = time.perf_counter() - t0
        after = await _snapshot(redis, settings, ports, pids)
        result = _result(scenario, rate, load, elapsed, (before, after), naive=naive)
        result.appendfsync, result.durability = appendfsync, durability.value
        result.partitions = partitions
        failed = False
        return result
    finally:
        await parts.tear_down(failed=failed)


def _result(
    scenario: Scenario,
    rate: float | None,
    load: Load,
    elapsed: float,
    edges: tuple[_Snapshot, _Snapshot],
    *,
    naive: bool,
) -> BenchResult:
    """The figures of a measured window, from the counters read at its ``edges``."""
    before, after = edges
    committed = max(1, load.committed)
    cpu = {name: (after.cpu[name] - before.cpu[name]) / committed * 1e6 for name in after.cpu}
    cpu["server"] = (after.server - before.server) / committed * 1e6
    new_revs = max(1, after.revisions - before.revisions)
    hops: dict[str, dict[str, float]] = {}
    if not naive:
        hops = hop_figures(before.metrics, after.metrics)
        hops[OUTCOME_SEEN] = seen_figures(load.seen)
    return BenchResult(
        scenario=scenario.name + (" (naive)" if naive else ""),
        mode="closed" if rate is None else f"open {rate:g}/s",
        seconds=elapsed,
        submitted=load.submitted,
        committed=load.committed,
        outcomes=dict(sorted(load.counts.items())),
        committed_per_s=load.committed / elapsed,
        latency_ms=_percentiles(load.latencies),
        cpu_us_per_patch={k: round(v, 1) for k, v in cpu.items()},
        server_ceiling_per_s=1e6 / cpu["server"] if cpu["server"] > 0 else 0.0,
        server_memory_bytes=after.memory,
        memory_per_million_revisions=(after.memory - before.memory) / new_revs * 1e6,
        commit_retries_per_patch=None if naive else (after.retries - before.retries) / committed,
        hops_ms={k: {f: round(v, 3) for f, v in fig.items()} for k, fig in hops.items()},
    )


def _check_waitaof(supervisor: Supervisor, durability: Durability) -> bool:
    """Whether ``durability`` is strict; refuses it where the server has no
    ``WAITAOF``, as ``Client`` does."""
    if durability is not Durability.STRICT:
        return False
    if supervisor.info is not None:
        supervisor.info.require_waitaof()
    return True


class _Snapshot(msgspec.Struct):
    """Counters read at the edges of the measured window."""

    cpu: dict[str, float] = msgspec.field(default_factory=dict)
    server: float = 0.0
    metrics: Samples = msgspec.field(default_factory=dict)
    """The stage workers' ``patchlog_`` samples, summed over the workers."""
    memory: int = 0
    revisions: int = 0

    @property
    def retries(self) -> float:
        """Commit retries so far, summed over the execute workers (0 if none answers)."""
        return total(self.metrics, "patchlog_commit_retries_total")


async def _snapshot(
    redis: Redis, settings: Settings, ports: Sequence[int], pids: dict[str, int]
) -> _Snapshot:
    cpu = {name: _cpu_seconds(pid) for name, pid in pids.items()}
    cpu["bench"] = time.process_time()
    server = await _server_cpu(redis)
    memory = int((await redis.info("memory"))["used_memory"])
    revisions = int(await redis.xlen(settings.keys.revisions))
    return _Snapshot(cpu, server, await scrape_workers(ports), memory, revisions)


class _Parts:
    """What one scenario run started, torn down in order whatever failed."""

    def __init__(self, supervisor: Supervisor, folder: Path, namespace: str, *, external: bool):
        self.supervisor = supervisor
        self.folder = folder
        self.namespace = namespace
        self.external = external
        self.stop = asyncio.Event()
        self.redis: Redis | None = None
        self.baseline: asyncio.subprocess.Process | None = None
        self.appender: Appender | None = None
        self.tailing: asyncio.Task[None] | None = None

    async def tear_down(self, *, failed: bool) -> None:
        """Stop the tail, the naive process, the workers and server, and close the
        connections; on a server given by URL, delete the run's keys. After a failed
        run, the end of the workers' log goes to stderr before the folder is removed."""
        self.stop.set()
        steps: list[Any] = []
        if self.tailing is not None:
            steps.append(asyncio.wait_for(self.tailing, 5))
        if self.baseline is not None:
            steps.append(_stop_process(self.baseline))
        if self.redis is not None and self.external:
            steps.append(purge_all(self.redis, self.namespace))
        self.supervisor.stop()
        steps.append(self.supervisor.shutdown())
        if self.appender is not None:
            steps.append(self.appender.close())
        if self.redis is not None:
            steps.append(self.redis.aclose())
        for step in steps:
            try:
                await step
            except Exception as err:  # noqa: BLE001 - the other steps must still run
                log.warning("bench tear-down step failed", error=f"{type(err).__name__}: {err}")
        if failed:
            _show_log_tail(self.folder / "workers.log")
        shutil.rmtree(self.folder, ignore_errors=True)


def _show_log_tail(path: Path, lines: int = 30) -> None:
    try:
        tail_lines = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return
    print(f"--- last lines of {path.name} ---", *tail_lines, sep="\n", file=sys.stderr)


def _free_ports(count: int) -> int:
    """The first of ``count`` consecutive loopback ports that are free right now."""
    rng = random.Random()
    for _ in range(100):
        base = rng.randrange(20_000, 32_000)  # below Linux's ephemeral ports
        try:
            for port in range(base, base + count):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise OSError(f"no {count} consecutive free ports found")


async def _start_naive(url: str, namespace: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "patchlog.ops.baselines", url, namespace,
        stdin=asyncio.subprocess.DEVNULL, preexec_fn=die_with_parent,
    )  # fmt: skip


async def _stop_process(process: asyncio.subprocess.Process) -> None:
    if process.returncode is not None:
        return
    process.terminate()
    try:
        await asyncio.wait_for(process.wait(), 10)
    except TimeoutError:
        process.kill()
        await process.wait()


async def run_bench(
    names: list[str],
    *,
    seconds: float,
    rate: float | None,
    url: str | None,
    normalize_workers: int,
    execute_workers: int,
    baselines: bool,
    out: Path | None,
    min_ratio: float | None,
    fsync: Fsync = Fsync.ALWAYS,
    durability: Durability = Durability.NORMAL,
    partitions: int = 1,
) -> int:
    """Run scenarios and baselines, print the tables, write JSON; the exit status.

    With baselines, the naive pipeline runs under the default scenario's load right
    after patchlog's default run, and the ratio is default over naive, both measured
    the same way (closed or open loop, same clients, same seconds). Raises
    ``ValueError`` as ``plan_runs`` does, before anything runs.
    """
    from rich.console import Console  # noqa: PLC0415 - only the bench needs rich
    from rich.progress import Progress  # noqa: PLC0415

    from patchlog.ops.benchtable import report  # noqa: PLC0415 - only with rich

    console = Console(stderr=True)
    runs = plan_runs(names, baselines=baselines, rate=rate)
    results: list[BenchResult] = []
    with Progress(console=console, transient=True) as bar:
        for name, naive in runs:
            label = f"{name} (naive)" if naive else name
            task = bar.add_task(f"{label}: starting", total=1.0)

            def told(done: float, committed: int, task: Any = task, label: str = label) -> None:
                bar.update(task, completed=done, description=f"{label}: {committed:,} committed")

            scenario = SCENARIOS[name]
            default = next((r.committed_per_s for r in results if r.scenario == "default"), None)
            run_rate, basis = offered_rate(scenario, rate, default)
            result = await run_scenario(
                scenario,
                seconds=seconds,
                rate=run_rate,
                url=url,
                normalize_workers=normalize_workers,
                execute_workers=execute_workers,
                progress=told,
                naive=naive,
                fsync=fsync,
                durability=durability,
                partitions=partitions,
            )
            result.rate_basis = basis
            results.append(result)
            bar.update(task, completed=1.0)
    base: dict[str, float] = {}
    if baselines:
        console.print("baselines: raw ceiling and naive pipeline alone...")
        base = await _alone(url, count=max(20_000, *(r.committed for r in results)), fsync=fsync)
    by_name = {r.scenario: r for r in results}
    ratio = None
    if "default" in by_name and "default (naive)" in by_name:
        ratio = by_name["default"].committed_per_s / by_name["default (naive)"].committed_per_s
    out_console = Console(width=None if console.is_terminal else 200)
    report(out_console, results, base, ratio, (normalize_workers, execute_workers, partitions))
    out_console.print(f"server: {redact(url)}" if url else f"embedded server, asked for {fsync}")
    if out is not None:
        payload = {
            "machine": {"cores": os.cpu_count()},
            "results": [msgspec.to_builtins(r) for r in results],
            "baselines": base,
            "ratio_vs_naive": ratio,
            "fsync": None if url else fsync.value,
            "durability": durability.value,
        }
        await asyncio.to_thread(out.write_text, json.dumps(payload, indent=2) + "\n")
        out_console.print(f"figures written to {out}")
    if min_ratio is not None and (ratio is None or ratio < min_ratio):
        shown = "no ratio (needs the default scenario and baselines)" if ratio is None else (
            f"{ratio:.1f}x")  # fmt: skip
        out_console.print(f"FAIL: {shown} is below the required {min_ratio}x the naive pipeline")
        return 1
    return 0


async def _alone(url: str | None, *, count: int, fsync: Fsync) -> dict[str, float]:
    """The raw ceiling and the naive pipeline draining a backlog, alone on a server."""
    from patchlog.ops.baselines import naive_pipeline, raw_ceiling  # noqa: PLC0415
    from patchlog.streams.server import EmbeddedServer  # noqa: PLC0415

    folder = Path(tempfile.mkdtemp(prefix="patchlog-baseline-"))
    server = None
    if url is None:
        server = EmbeddedServer(folder, port=free_port(), fsync=fsync)
        await server.start()
    where = url or (server.url if server else "")
    redis = connect(Settings(), where, block_ms=1000)
    try:
        prefix = f"baseline{random.randrange(1 << 30):x}"
        return {
            "raw_ceiling_per_s": await raw_ceiling(redis, prefix, count),
            "naive_alone_per_s": await naive_pipeline(where, prefix, 3000),
        }
    finally:
        await redis.aclose()
        if server is not None:
            await server.stop()
        shutil.rmtree(folder, ignore_errors=True)
