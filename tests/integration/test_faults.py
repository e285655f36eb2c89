"""Fault tests with real processes: kill -9 of workers and of the server under load."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from patchlog.projections.rebuild import rebuild
from patchlog.streams.connection import connect
from patchlog.streams.errors import ServerError
from patchlog.streams.log import iter_revisions
from patchlog.streams.server import EmbeddedServer
from patchlog.streams.settings import Fsync, Settings
from tests.integration.helpers import KINDS, binary_for, by_src, free_port, outcomes, submit_load


class Worker:
    """A stage worker process, as `patchlog up` runs it."""

    def __init__(
        self, settings: Settings, url: str, stage: str, name: str, logs: Path, metrics: int = 0
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.log_path = logs / f"{name}.log"
        self.url = url
        self.stage = stage
        self.name = name
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        env = dict(os.environ)
        env.update(
            PATCHLOG_REDIS_URL=self.url,
            PATCHLOG_NAMESPACE=self.settings.namespace,
            PATCHLOG_LEASE_MS="1500",
            PATCHLOG_CLAIM_INTERVAL="0.3",
            PATCHLOG_BLOCK_MS="200",
            PATCHLOG_SHUTDOWN_GRACE="5",
            PATCHLOG_METRICS_PORT=str(self.metrics),
        )
        with self.log_path.open("ab") as log:  # the child keeps its own descriptor
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "patchlog.ops.cli", "--json-logs", "worker", self.stage,
                "--name", self.name,
                env=env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=log,
            )  # fmt: skip

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)

    async def terminate(self, timeout: float = 15) -> int:
        """SIGTERM, and the exit status (which must come within ``timeout``)."""
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.process.wait(), timeout)


async def wait_outcomes(redis: Redis, settings: Settings, count: int, timeout: float) -> None:
    """Poll until the outcomes stream holds ``count`` entries (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(ServerError):
            if await redis.xlen(settings.keys.outcomes) >= count:
                return
        assert time.monotonic() < deadline, f"fewer than {count} outcomes after {timeout} s"
        await asyncio.sleep(0.2)


async def wait_for_lease(redis: Redis, settings: Settings, worker: Worker) -> None:
    """Wait (bounded) until this very process holds its lease: it is up and handles
    signals (a killed predecessor's lease may still be there)."""
    assert worker.process is not None
    deadline = time.monotonic() + 30
    while True:
        raw: Any = await redis.get(settings.keys.lease(worker.stage, worker.name))
        if raw is not None and json.loads(raw)["pid"] == worker.process.pid:
            return
        assert time.monotonic() < deadline, f"{worker.name} did not start"
        await asyncio.sleep(0.05)


async def check_exactly_once(redis: Redis, settings: Settings, submitted: set[str]) -> None:
    rows = await outcomes(redis, settings)
    assert set(by_src(rows).values()) == {1}, "an ingress entry got two outcomes"
    assert {o.id for o in rows} >= submitted, "an acknowledged submission has no outcome"
    applied = Counter([r.id async for _, r in iter_revisions(redis, settings.keys)])
    assert not [pid for pid, n in applied.items() if n > 1], "a patch was applied twice"
    report = await rebuild(redis, settings.keys, every=settings.snapshot_every)
    assert report.differences == []
    for group, stream in (
        ("normalize", settings.keys.patches),
        ("execute", settings.keys.normalized),
    ):
        assert (await redis.xpending(stream, group))["pending"] == 0
    assert await redis.xlen(settings.keys.dead) == 0


async def test_kill_9_workers_under_load(
    redis: Redis, settings: Settings, server: EmbeddedServer, tmp_path: Path
) -> None:
    """kill -9 of an execute and a normalize worker mid-load, one restarted: nothing
    lost, nothing applied twice, nothing left pending, clean SIGTERM exits."""
    workers = [
        Worker(settings, server.url, stage, f"{stage}-{i}", tmp_path)
        for stage in ("normalize", "execute")
        for i in (1, 2)
    ]
    for w in workers:
        await w.start()
    for w in workers:
        await wait_for_lease(redis, settings, w)
    load = asyncio.create_task(
        submit_load(redis, settings, submitters=10, patches=3000, docs=50, seed=3, wait=False)
    )
    await wait_outcomes(redis, settings, 300, 60)
    workers[2].kill()  # execute-1, restarted below under the same name
    workers[0].kill()  # normalize-1, left dead: normalize-2 claims its entries
    await asyncio.sleep(0.5)
    await workers[2].start()
    await wait_for_lease(redis, settings, workers[2])
    ids = await load
    await wait_outcomes(redis, settings, len(ids), 120)
    statuses = [await w.terminate() for w in workers[1:]]
    assert statuses == [0, 0, 0]
    await check_exactly_once(redis, settings, set(ids))


@pytest.mark.parametrize("fsync", [None, Fsync.EVERYSEC], ids=["default", "everysec"])
@pytest.mark.parametrize("kind", KINDS)
async def test_kill_9_server_under_load_loses_no_acknowledged_patch(
    tmp_path: Path, kind: str, fsync: Fsync | None
) -> None:
    """kill -9 of the server under load, then a restart from its AOF: every ingress
    entry the server kept gets exactly one outcome and the workers resume. With the
    default settings (``appendfsync always``) that is every XADD acknowledged, and every
    outcome the test read before the kill (in the stream and under the submitter's
    entry) is still there, unchanged. With ``everysec``
    the server may postpone its AOF write while a slow fsync runs and still reply (Redis
    and Valkey do, for up to 2 s), so a kill in that window can lose acknowledged XADDs
    and outcomes already read."""
    srv = EmbeddedServer(tmp_path / "srv", port=free_port(), binary=binary_for(kind))
    if fsync is not None:  # else the launcher's own default, as `patchlog up` runs it
        srv.fsync = fsync
    await srv.start()
    own = Settings(redis_url=srv.url, namespace="fault")
    redis = connect(own, srv.url, name="fault-test", block_ms=2000)
    workers = [Worker(own, srv.url, s, f"{s}-1", tmp_path) for s in ("normalize", "execute")]
    try:  # whatever fails, no worker or server outlives the test
        config: Any = await redis.config_get("appendfsync")
        assert config["appendfsync"] == (fsync or Fsync.ALWAYS).value
        for w in workers:
            await w.start()
        for w in workers:
            await wait_for_lease(redis, own, w)
        acked: set[str] = set()
        seen: dict[bytes, dict[bytes, bytes]] = {}  # outcome entries read before the kill
        told: dict[str, bytes] = {}  # own outcomes (by ingress entry) read before the kill
        stop = asyncio.Event()
        killing = asyncio.Event()

        async def submitter(k: int) -> None:
            n = 0
            while not stop.is_set():
                pid = f"k{k}-{n}"
                fields = {"doc": f"doc-{n % 7}", "base": "0", "id": pid,
                          "ops": '[{"op":"insert","at":1,"lines":["x"]}]'}  # fmt: skip
                try:
                    await redis.xadd(own.keys.patches, fields)  # type: ignore[arg-type]
                except ServerError:
                    await asyncio.sleep(0.1)  # not acknowledged: may or may not exist
                    continue
                acked.add(pid)
                n += 1

        async def reader() -> None:
            """Reads outcomes as a client tailing the stream would, until the kill."""
            after = "-"
            while not killing.is_set():
                rows: Any = await redis.xrange(own.keys.outcomes, after, "+", count=500)
                for entry_id, fields in rows:
                    seen[entry_id] = fields
                    after = "(" + entry_id.decode()
                # ... and as each submitter waiting on its entry's own outcome would.
                srcs = [fields[b"src"].decode() for _, fields in rows]
                async with redis.pipeline(transaction=False) as pipe:
                    for src in srcs:
                        pipe.lindex(own.keys.entry_outcome(src), 0)
                    answers: list[Any] = await pipe.execute()
                told.update((src, a) for src, a in zip(srcs, answers, strict=True) if a)
                if not rows:
                    await asyncio.sleep(0.02)

        tasks = [asyncio.create_task(submitter(k)) for k in range(4)]
        reading = asyncio.create_task(reader())
        await asyncio.sleep(1.5)
        killing.set()
        await reading  # everything in `seen` was read before the kill
        srv.kill()
        await srv.process.wait()  # type: ignore[union-attr]
        await asyncio.sleep(0.5)
        await srv.start()
        await asyncio.sleep(1.5)
        stop.set()
        await asyncio.gather(*tasks)
        assert len(acked) > 100
        assert len(seen) > 50
        assert len(told) > 50
        entries: Any = await redis.xrange(own.keys.patches)
        kept = {fields[b"id"].decode() for _, fields in entries}
        if fsync is None:
            assert kept >= acked, f"{len(acked - kept)} acknowledged XADDs lost"
        await wait_outcomes(redis, own, len(kept), 120)
        if fsync is None:
            after_restart: Any = await redis.xrange(own.keys.outcomes)
            still = dict(after_restart)
            lost = [entry_id for entry_id, fields in seen.items() if still.get(entry_id) != fields]
            assert not lost, f"{len(lost)} of {len(seen)} outcomes read before the kill are gone"
            async with redis.pipeline(transaction=False) as pipe:
                for src in told:
                    pipe.lindex(own.keys.entry_outcome(src), 0)
                now: list[Any] = await pipe.execute()
            changed = [src for src, a in zip(told, now, strict=True) if a != told[src]]
            assert not changed, f"{len(changed)} of {len(told)} own outcomes told are gone"
        rows = await outcomes(redis, own)
        assert {o.id for o in rows} == kept
        assert set(by_src(rows).values()) == {1}
        assert (await rebuild(redis, own.keys, every=own.snapshot_every)).ok
        assert [await w.terminate() for w in workers] == [0, 0]
    finally:
        for w in workers:
            if w.process and w.process.returncode is None:
                w.kill()
        await redis.aclose()
        await srv.stop()


async def test_worker_serves_prometheus_metrics(
    redis: Redis, settings: Settings, server: EmbeddedServer, tmp_path: Path
) -> None:
    """A worker started with PATCHLOG_METRICS_PORT counts what it handled on /metrics."""
    port = free_port()
    workers = [
        Worker(settings, server.url, "normalize", "normalize-m", tmp_path, metrics=port),
        Worker(settings, server.url, "execute", "execute-m", tmp_path),
    ]
    for w in workers:
        await w.start()
    ids = await submit_load(redis, settings, submitters=2, patches=20, docs=3, seed=5)
    assert len(ids) == 20

    def scrape() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            return str(reply.read().decode())

    text = await asyncio.to_thread(scrape)
    processed = [
        line for line in text.splitlines()
        if line.startswith('patchlog_entries_processed_total{stage="normalize"}')
    ]  # fmt: skip
    assert processed
    assert float(processed[0].split()[-1]) == 20
    assert 'patchlog_outcomes_total{stage="normalize",status="forwarded"} 20.0' in text
    assert [await w.terminate() for w in workers] == [0, 0]
