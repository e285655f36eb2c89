"""``patchlog demo``: a fresh pipeline, agents patching shared documents, checked.

Agents submit ops based on the head they last saw, some on stale bases (rebased, or in
conflict), some malformed (raw XADD), some twice with the same id. Every patch's
outcome is awaited, the log is replayed against the live state, and a summary printed.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import click
import msgspec
from redis.asyncio import Redis

from patchlog.ops.randomops import single_op, stale_base
from patchlog.ops.supervisor import Supervisor
from patchlog.projections.rebuild import rebuild
from patchlog.streams.client import Client, Submitted
from patchlog.streams.connection import connect
from patchlog.streams.keys import Keys
from patchlog.streams.log import read_head
from patchlog.streams.server import free_port
from patchlog.streams.settings import Settings

__all__ = ["run_demo"]

_MALFORMED: list[dict[str, str]] = [
    {"doc": "d", "base": "0"},
    {"doc": "d", "base": "x", "ops": "[]"},
    {"doc": "d", "base": "0", "ops": '[{"op":"insert","at":0,"lines":["a"]}]'},
    {"doc": "d", "base": "0", "ops": "{not json"},
    {"doc": "d", "base": "0", "ops": '[{"op":"delete","from":true}]'},
    {"doc": "../escape", "base": "0", "ops": "[]"},
]


async def _agent(
    agent: int,
    client: Client,
    redis: Redis,
    keys: Keys,
    docs: list[str],
    quota: int,
    rng: random.Random,
    latencies: list[float],
    outcomes: Counter[str],
) -> None:
    for n in range(quota):
        doc = rng.choice(docs)
        head = await read_head(redis, keys, doc)
        roll = rng.random()
        started = time.perf_counter()
        if roll < 0.03:
            fields = dict(rng.choice(_MALFORMED))
            fields["id"] = f"a{agent}-bad-{n}"
            entry: Any = await redis.xadd(keys.patches, fields)  # type: ignore[arg-type]
            submitted = Submitted(fields["id"], entry.decode())
        else:
            # a stale base for 17 % of all patches (0.175 of the 97 % well-formed ones):
            # rebased, or rejected as conflicts
            base = stale_base(rng, head.rev, share=0.175)
            # on a stale base, only the first lines, which the older base most likely had
            lines = head.lines if base == head.rev else min(head.lines, 3)
            text = [f"agent {agent} edit {n} line {i}" for i in range(rng.randint(1, 3))]
            ops = [single_op(rng, lines, text, insert=0.4, replace=0.3)]
            submitted = await client.submit(doc, base, ops=ops, author=f"agent-{agent}")
            if roll > 0.97:  # a retry of the same patch: must not apply twice
                await client.submit(doc, base, ops=ops, id=submitted.id, author=f"agent-{agent}")
        outcome = await client.wait(submitted, timeout=60)
        latencies.append(time.perf_counter() - started)
        outcomes[outcome.status.value + (f":{outcome.code.value}" if outcome.code else "")] += 1


async def run_demo(
    base: Settings, *, patches: int, agents: int, docs: int, keep: bool = False
) -> int:
    """Run the demo with ``base`` settings (environment and flags) on a fresh embedded
    server in a temporary folder; returns the exit status (0 when every check passed)."""
    folder = Path(tempfile.mkdtemp(prefix="patchlog-demo-"))
    port = free_port()
    # The demo owns its server, folder and port; everything else is the user's.
    settings = msgspec.structs.replace(
        base, redis_url=None, data_dir=str(folder), port=port, base_ahead_wait=1.0
    )
    supervisor = Supervisor(settings, normalize=2, execute=2)
    click.echo(f"demo: server on 127.0.0.1:{port}, data in {folder}")
    await supervisor.start()
    redis = connect(settings, supervisor.url, name="patchlog-demo", block_ms=2000)
    watcher = asyncio.create_task(supervisor.watch())
    try:
        client = Client(redis, settings.keys)
        names = [f"docs/notes-{i}.md" for i in range(docs)]
        latencies: list[float] = []
        outcomes: Counter[str] = Counter()
        rng = random.Random(7)
        started = time.perf_counter()
        quota = max(1, patches // agents)
        await asyncio.gather(
            *(
                _agent(a, client, redis, settings.keys, names, quota, random.Random(rng.random()),
                       latencies, outcomes)
                for a in range(agents)
            )
        )  # fmt: skip
        elapsed = time.perf_counter() - started
        report = await rebuild(redis, settings.keys, every=settings.snapshot_every)
        extra = await redis.xlen(settings.keys.outcomes)
        total = sum(outcomes.values())
        click.echo(f"\n{total} patches from {agents} agents on {docs} documents in {elapsed:.1f} s "
                   f"({total / elapsed:,.0f} patches/s, closed loop)")  # fmt: skip
        for key, count in sorted(outcomes.items()):
            click.echo(f"  {key:<28} {count:>6}")
        lat = sorted(latencies)
        pct = {p: lat[min(len(lat) - 1, int(p / 100 * len(lat)))] * 1000 for p in (50, 95, 99)}
        click.echo(
            f"submit-to-outcome latency: p50 {pct[50]:.1f} ms, p95 {pct[95]:.1f} ms, "
            f"p99 {pct[99]:.1f} ms, mean {statistics.fmean(lat) * 1000:.1f} ms"
        )
        click.echo(f"outcome entries: {extra} (one per submitted entry, retries included)")
        click.echo(f"revisions: {report.revisions} in {report.documents} documents")
        for problem in report.differences:
            click.echo(f"MISMATCH {problem.message}")
        ok = report.ok and total == agents * quota
        click.echo("replay of the revision log reproduces every live document: "
                   + ("yes" if report.ok else "NO"))  # fmt: skip
        return 0 if ok else 1
    finally:
        supervisor.stop()
        await watcher
        await supervisor.shutdown()
        await redis.aclose()
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)
