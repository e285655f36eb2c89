"""The health prober against real servers: groups judged by movement, a paused server."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
from redis.asyncio import Redis

from patchlog.ops.clibase import Exit
from patchlog.ops.config import settings_env
from patchlog.ops.health import Prober, exit_code, latest, run_prober
from patchlog.streams.client import Client
from patchlog.streams.connection import connect
from patchlog.streams.schema import HealthStatus
from patchlog.streams.scripts import Scripts
from patchlog.streams.settings import Settings
from tests.integration.helpers import dedicated_server, drain, free_port, patchlog


async def test_execute_group_judged_slow_stalled_unattended_and_ok(
    redis: Redis, settings: Settings
) -> None:
    """A live consumer acknowledging fewer than arrive is degraded; no progress over
    the window is failing; no live consumer with a backlog is failing; caught up is ok.
    Each result lands in patchlog:health."""
    settings = msgspec.structs.replace(settings, health_window=0.5)
    stream = settings.keys.normalized
    prober = Prober(redis, settings)

    async def judged() -> tuple[HealthStatus, str]:
        result = await prober.round()
        await prober.append(result)
        group = result.checks["groups"]["execute"]
        reasons = [r for r in result.checks["reasons"] if r.startswith("execute")]
        return (HealthStatus.OK if not reasons else result.status), " ".join(reasons) or str(group)

    ids = [await redis.xadd(stream, {"n": str(i)}) for i in range(100)]
    await redis.xgroup_create(stream, "execute", id="0")
    await redis.set(settings.keys.lease("execute", "e1"), "1", px=60_000)
    await judged()
    read: list[bytes] = []
    for _ in range(2):  # slower than arrivals: 10 acknowledged, 30 arrive
        await asyncio.sleep(0.15)  # the window fills (half of it at least) first
        got: Any = await redis.xreadgroup("execute", "e1", {stream: ">"}, count=10)
        batch = [eid for eid, _ in got[0][1]]
        await redis.xack(stream, "execute", *batch)
        read += batch
        ids += [await redis.xadd(stream, {"n": "more"}) for _ in range(30)]
        status, reason = await judged()
    assert status is HealthStatus.DEGRADED, reason
    assert "slower than arrivals" in reason
    await asyncio.sleep(0.6)  # a window in which nothing is acknowledged
    await judged()
    await asyncio.sleep(0.3)
    status, reason = await judged()
    assert (status, "stalled" in reason) == (HealthStatus.FAILING, True), reason
    await redis.delete(settings.keys.lease("execute", "e1"))
    status, reason = await judged()
    assert status is HealthStatus.FAILING
    assert reason.endswith("and no live consumer")
    await redis.set(settings.keys.lease("execute", "e1"), "1", px=60_000)
    got = await redis.xreadgroup("execute", "e1", {stream: ">"}, count=1000)
    await redis.xack(stream, "execute", *[eid for eid, _ in got[0][1]])
    status, reason = await judged()
    assert status is HealthStatus.OK, reason
    newest = await latest(redis, settings.keys)
    assert newest is not None
    assert newest.checks["groups"]["execute"]["lag"] == 0
    assert exit_code(newest, int(time.time() * 1000), settings.health_interval) in (0, 1)


async def test_a_paused_server_is_failing_within_the_probe_timeout(tmp_path: Path) -> None:
    """SIGSTOP of the server: /healthz answers 503 within the probe timeout plus one
    interval and the prober keeps running; after SIGCONT it answers 200 again."""
    async with dedicated_server(tmp_path, "valkey") as srv:
        settings = Settings(
            redis_url=srv.url, health_interval=0.3, health_probe_timeout=0.5, socket_timeout=1.0
        )
        redis = connect(settings, srv.url)
        port = free_port()
        stop = asyncio.Event()
        task = asyncio.create_task(run_prober(redis, settings, stop, port=port))

        async def healthz() -> int:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /healthz HTTP/1.0\r\n\r\n")
            status = int((await reader.readline()).split()[1])
            writer.close()
            return status

        async def until(code: int, within: float) -> float:
            start = time.monotonic()
            while time.monotonic() - start < within:
                try:
                    if await healthz() == code:
                        return time.monotonic() - start
                except OSError:
                    pass
                await asyncio.sleep(0.05)
            raise AssertionError(f"/healthz did not answer {code} within {within} s")

        try:
            await until(200, 5)
            assert srv.process is not None
            os.kill(srv.process.pid, signal.SIGSTOP)
            took = await until(503, 0.5 + 0.3 + 1.0)
            assert not task.done()
            os.kill(srv.process.pid, signal.SIGCONT)
            await until(200, 10)
            assert took < 2.0
        finally:
            if srv.process is not None:
                os.kill(srv.process.pid, signal.SIGCONT)
            stop.set()
            await asyncio.wait_for(task, 10)
            await redis.aclose()


async def test_a_projector_far_behind_the_log_is_degraded(redis: Redis, settings: Settings) -> None:
    """A projector whose position is more than the window behind the newest revision
    makes the round degraded, naming it; one at the newest revision does not; a retired
    one, forgotten, is not judged any more."""
    settings = msgspec.structs.replace(settings, health_window=60.0)
    now_ms = int(time.time() * 1000)
    await redis.xadd(settings.keys.revisions, {"doc": "d"}, id=f"{now_ms}-0")
    for name, at_ms in [("host:/srv/docs", now_ms - 120_000), ("host:/srv/live", now_ms)]:
        await redis.hset(settings.keys.projector(name), "id", f"{at_ms}-0")
        await redis.sadd(settings.keys.projectors, name)  # as a projector publishes
    prober = Prober(redis, settings)
    result = await prober.round()
    assert result.status is HealthStatus.DEGRADED
    assert result.checks["reasons"] == ["projectors behind: host:/srv/docs 120 s"]
    assert result.checks["projectors"]["behind_s"]["host:/srv/live"] == 0
    # Retired: `purge --projector` forgets it, and health is ok again.
    where = ["--redis-url", str(settings.redis_url), "--namespace", settings.namespace]
    status, out, err = await patchlog("purge", "--projector", "host:/srv/docs", *where)
    assert (status, out.startswith("forgot projector 'host:/srv/docs'")) == (0, True), err
    status, _, err = await patchlog("purge", "--projector", "host:/srv/docs", *where)
    assert status == Exit.NOT_FOUND, err
    result = await prober.round()
    assert result.status is HealthStatus.OK, result.checks["reasons"]
    # A checkpoint deleted by hand drops out of the set on the next round.
    await redis.delete(settings.keys.projector("host:/srv/live"))
    assert (await prober.round()).checks["projectors"]["behind_s"] == {}
    assert not await redis.exists(settings.keys.projectors)


async def test_a_real_execute_worker_stopped_then_continued(
    redis: Redis, settings: Settings, scripts: Scripts
) -> None:
    """An execute worker process under SIGSTOP with a backlog: failing (nothing
    processed over the window), then, once its lease runs out, failing for no live
    consumer; after SIGCONT it drains the backlog and the group is ok again."""
    settings = msgspec.structs.replace(settings, health_window=0.5, lease_ms=6000)
    client = Client(redis, settings.keys)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PATCHLOG_")}
    env.update(settings_env(settings))
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "patchlog", "worker", "execute", "--name", "exec-1",
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    prober = Prober(redis, settings)

    async def execute_reason() -> str:
        result = await prober.round()
        return next((r for r in result.checks["reasons"] if r.startswith("execute")), "ok")

    async def until(want: str, within: float) -> None:
        deadline = time.monotonic() + within
        seen = ""
        while time.monotonic() < deadline:
            seen = await execute_reason()
            if want in seen:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"execute never judged {want!r} within {within} s: {seen}")

    try:
        lease = settings.keys.lease("execute", "exec-1")
        deadline = time.monotonic() + 30
        while not await redis.exists(lease):  # started and holding its lease
            assert time.monotonic() < deadline, "the worker never took its lease"
            await asyncio.sleep(0.1)
        os.kill(worker.pid, signal.SIGSTOP)
        for n in range(100):
            await client.submit(f"d{n % 5}", 0, ops=[{"op": "insert", "at": 1, "lines": [str(n)]}])
        await drain(redis, settings, scripts, execute=0)  # normalize only: execute's backlog
        await until("stalled", 10)
        await until("no live consumer", 10)
        os.kill(worker.pid, signal.SIGCONT)
        await until("ok", 30)
        assert await redis.xlen(settings.keys.revisions) > 0
    finally:
        os.kill(worker.pid, signal.SIGCONT)
        worker.terminate()
        await asyncio.wait_for(worker.wait(), 30)


async def test_probes_listen_on_the_configured_address(redis: Redis, settings: Settings) -> None:
    """PATCHLOG_HTTP_HOST moves /healthz and /readyz off loopback's 127.0.0.1: they answer
    on the address given and nowhere else."""
    settings = msgspec.structs.replace(settings, http_host="127.0.0.2", health_interval=0.2)
    port = free_port()
    stop = asyncio.Event()
    task = asyncio.create_task(run_prober(redis, settings, stop, port=port))
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.2", port)
                break
            except OSError:
                assert time.monotonic() < deadline, "nothing listens on 127.0.0.2"
                await asyncio.sleep(0.05)
        writer.write(b"GET /healthz HTTP/1.0\r\n\r\n")
        status = int((await asyncio.wait_for(reader.readline(), 5)).split()[1])
        writer.close()
        assert status in (200, 503)
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except ConnectionRefusedError:
            pass
        else:
            writer.close()
            raise AssertionError("the probes also answer on 127.0.0.1")
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_real_execute_worker_slowed_under_load_is_degraded_then_ok(
    redis: Redis, settings: Settings
) -> None:
    """Real normalize and execute worker processes under a steady load that they keep
    up with (ok); then the execute worker slowed down (stopped nine tenths of the time,
    as a CPU limiter would): it still acknowledges entries but its backlog grows, so
    health is degraded (slower than arrivals), not failing; once the limiter and the
    load stop, the backlog drains and health is ok again."""
    settings = msgspec.structs.replace(
        settings, health_window=1.5, health_interval=0.2, lease_ms=6000
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PATCHLOG_")}
    env.update(settings_env(settings))
    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "patchlog",
            "worker",
            stage,
            "--name",
            f"{stage}-1",
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        for stage in ("normalize", "execute")
    ]
    execute = workers[1]
    prober = Prober(redis, settings)
    slowing = asyncio.Event()
    loading = asyncio.Event()

    async def limiter() -> None:
        while slowing.is_set():
            os.kill(execute.pid, signal.SIGSTOP)
            await asyncio.sleep(0.045)
            os.kill(execute.pid, signal.SIGCONT)
            await asyncio.sleep(0.005)

    submitted = [0]

    async def load() -> None:
        while loading.is_set():
            async with redis.pipeline(transaction=False) as pipe:
                for _ in range(50):  # about 500/s: a small share of what execute can do
                    n = submitted[0]
                    ops = [{"op": "insert", "at": 1, "lines": [str(n)]}]
                    fields = {"doc": f"d{n % 20}", "base": 0, "ops": msgspec.json.encode(ops)}
                    pipe.xadd(settings.keys.patches, fields)  # type: ignore[arg-type]
                    submitted[0] += 1
                await pipe.execute()
            await asyncio.sleep(0.1)

    async def judged(want: HealthStatus, within: float) -> str:
        deadline = time.monotonic() + within
        seen = ""
        while time.monotonic() < deadline:
            result = await prober.round()
            seen = " ".join(r for r in result.checks["reasons"] if r.startswith("execute"))
            if result.status is want:
                return seen
            await asyncio.sleep(settings.health_interval)
        raise AssertionError(f"never {want.value} within {within} s: {seen}")

    tasks: list[asyncio.Task[None]] = []
    try:
        deadline = time.monotonic() + 30
        for stage in ("normalize", "execute"):  # both started and holding their leases
            while not await redis.exists(settings.keys.lease(stage, f"{stage}-1")):
                assert time.monotonic() < deadline, f"the {stage} worker never took its lease"
                await asyncio.sleep(0.1)
        loading.set()
        tasks = [asyncio.create_task(load())]
        for _ in range(15):  # unslowed, the worker keeps up with the load
            result = await prober.round()
            assert result.status is HealthStatus.OK, result.checks["reasons"]
            await asyncio.sleep(settings.health_interval)
        slowing.set()
        before = await redis.xlen(settings.keys.revisions)
        tasks.append(asyncio.create_task(limiter()))
        reason = await judged(HealthStatus.DEGRADED, 20)
        assert "slower than arrivals" in reason, reason
        assert await redis.xlen(settings.keys.revisions) > before  # slowed, not stopped
        slowing.clear()
        loading.clear()
        await asyncio.gather(*tasks)
        os.kill(execute.pid, signal.SIGCONT)
        await judged(HealthStatus.OK, 60)
        deadline = time.monotonic() + 30
        while await redis.xlen(settings.keys.revisions) < submitted[0]:  # all worked off
            assert time.monotonic() < deadline, "the backlog was not worked off"
            await asyncio.sleep(0.1)
    finally:
        slowing.clear()
        loading.clear()
        for task in tasks:
            task.cancel()
        for worker in workers:
            os.kill(worker.pid, signal.SIGCONT)
            worker.terminate()
            await asyncio.wait_for(worker.wait(), 30)
