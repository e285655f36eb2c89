"""`patchlog up`, `server` and `worker` as processes, as a user or a process manager
runs them: the embedded server restarted after a kill -9, its data folder locked, a
stage that cannot start given up, a weak server's persistence reported once."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from patchlog.ops.clibase import Exit
from patchlog.streams.connection import connect
from patchlog.streams.server import EmbeddedServer
from patchlog.streams.settings import Fsync, Settings
from tests.integration.helpers import Cli, committed, free_port, outcome, until

_KEYS = Settings().keys  # `up` runs in the default namespace


async def leases(redis: Redis, count: int, timeout: float = 30) -> None:
    """Wait (bounded) until ``count`` workers hold their lease: `up` has started."""

    async def held() -> bool:
        return len(await redis.keys(_KEYS.lease("*", "*"))) == count

    await until(held, timeout, f"{count} workers holding leases")


def _insert(doc: str, base: int, patch_id: str, line: str) -> dict[str, str]:
    ops = json.dumps([{"op": "insert", "at": base + 1, "lines": [line]}])
    return {"doc": doc, "base": str(base), "id": patch_id, "ops": ops}


async def _server_pid(redis: Redis) -> int:
    return int((await redis.info("server"))["process_id"])


async def test_up_restarts_its_server_after_a_kill_9(
    tmp_path: Path, clis: Callable[..., Awaitable[Cli]]
) -> None:
    """kill -9 of the embedded server under `up`: `up` restarts it from its AOF, the
    workers carry on, the earlier outcome is still there and a later patch commits."""
    port = free_port()
    up = await clis("up", "--data-dir", str(tmp_path / "data"), "--port", str(port))
    redis = connect(Settings(retries=0), f"redis://127.0.0.1:{port}/0")
    try:
        await until(redis.ping, 30, "the embedded server answering")
        await redis.xadd(_KEYS.patches, _insert("hello", 0, "p1", "hello"))  # type: ignore[arg-type]
        await committed(redis, "p1")
        killed = await _server_pid(redis)
        os.kill(killed, signal.SIGKILL)

        async def restarted() -> bool:
            return await _server_pid(redis) != killed

        await until(restarted, 60, "the server restarted by `up`")
        assert up.process is not None
        assert up.process.returncode is None, up.stderr
        await redis.xadd(_KEYS.patches, _insert("hello", 1, "p2", "again"))  # type: ignore[arg-type]
        await committed(redis, "p2")
        assert (await outcome(redis, "p1") or {})["rev"] == "1"
        assert "restarting it from its AOF" in up.stderr
    finally:
        await redis.aclose()
    assert await up.stop() == 0, up.stderr


async def test_up_exits_3_when_its_server_cannot_restart(
    tmp_path: Path, clis: Callable[..., Awaitable[Cli]]
) -> None:
    """A killed embedded server whose AOF no longer loads is tried a bounded number of
    times; then `up` stops its workers and exits 3 with one line naming the server."""
    port = free_port()
    data = tmp_path / "data"
    up = await clis("up", "--data-dir", str(data), "--port", str(port))
    redis = connect(Settings(retries=0), f"redis://127.0.0.1:{port}/0")
    try:
        await until(redis.ping, 30, "the embedded server answering")
        await leases(redis, 2)
        (manifest,) = (data / "appendonlydir").glob("*.manifest")
        manifest.write_text("not a manifest\n")  # read again only when the server starts
        os.kill(await _server_pid(redis), signal.SIGKILL)
    finally:
        await redis.aclose()
    assert await up.wait(90) == Exit.SERVER, up.stderr
    errors = [line for line in up.stderr.splitlines() if line.startswith("patchlog: error:")]
    assert len(errors) == 1, up.stderr
    assert f"the embedded server at redis://127.0.0.1:{port}/0 could not be restarted" in errors[0]


async def test_one_data_folder_runs_one_server(
    tmp_path: Path, clis: Callable[..., Awaitable[Cli]]
) -> None:
    """A second `up` or `server` on a data folder in use (on another port) exits at
    once, status 3, naming the folder and the pid holding it; it starts no server."""
    data = tmp_path / "data"
    first_port, other_port = free_port(), free_port()
    first = await clis("server", "--data-dir", str(data), "--port", str(first_port))
    redis = connect(Settings(retries=0), f"redis://127.0.0.1:{first_port}/0")
    try:
        await until(redis.ping, 30, "the first server answering")
    finally:
        await redis.aclose()
    for command in ("up", "server"):
        second = await clis(command, "--data-dir", str(data), "--port", str(other_port))
        started = time.monotonic()
        assert await second.wait(30) == Exit.SERVER, second.stderr
        assert time.monotonic() - started < 10
        assert second.stderr == (
            f"patchlog: error: the data folder {data} is in use by process {first.pid} (it "
            f"holds {data / 'patchlog.lock'}): stop that patchlog, or choose another --data-dir\n"
        )
    assert await first.stop() == 0


async def test_a_stage_that_cannot_start_is_given_up(
    tmp_path: Path, clis: Callable[..., Awaitable[Cli]]
) -> None:
    """Workers that fail at start (here a user not allowed XGROUP) are not restarted
    forever: after a few fast failures `up` logs one error naming the stage and exits
    with the worker's status (3: the server refused it)."""
    srv = EmbeddedServer(tmp_path / "srv", port=free_port())
    await srv.start()
    try:
        admin = connect(Settings(), srv.url)
        try:
            await admin.execute_command(
                "ACL", "SETUSER", "limited", "on", ">pw", "~*", "&*", "+@all", "-xgroup"
            )
        finally:
            await admin.aclose()
        url = f"redis://limited:pw@127.0.0.1:{srv.port}/0"
        up = await clis("--json-logs", "up", "--redis-url", url)
        assert await up.wait(60) == Exit.SERVER, up.stderr
        records = [json.loads(line) for line in up.stderr.splitlines() if line.startswith("{")]
        given_up = [r for r in records if "keeps failing at start" in r["event"]]
        assert len(given_up) == 1, up.stderr
        assert given_up[0]["level"] == "error"
        assert "exited 3 times in a row" in given_up[0]["event"]
    finally:
        await srv.stop()


def _warnings(stderr: str) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    return [r for r in records if r["level"] == "warning" and "setting" in r]


async def test_weak_persistence_of_a_url_server_is_reported_once(
    tmp_path: Path, clis: Callable[..., Awaitable[Cli]]
) -> None:
    """On a server given by URL, `up` (for all its workers) and `worker` log one warning
    naming the setting and what a crash loses: everysec, then appendonly no."""
    srv = EmbeddedServer(tmp_path / "srv", port=free_port(), fsync=Fsync.EVERYSEC)
    await srv.start()
    redis = connect(Settings(), srv.url)
    try:
        up = await clis("--json-logs", "up", "--redis-url", srv.url, "--execute", "2")
        await leases(redis, 3)
        assert await up.stop() == 0, up.stderr
        (warning,) = _warnings(up.stderr)
        assert warning["setting"] == "appendfsync everysec"
        assert "about the last 1-2 s of acknowledged submissions" in warning["loss"]

        await redis.config_set("appendonly", "no")
        worker = await clis("--json-logs", "worker", "normalize", "--burst", "--redis-url", srv.url)
        assert await worker.wait(30) == 0, worker.stderr
        (warning,) = _warnings(worker.stderr)
        assert warning["setting"] == "appendonly no"
        assert "everything written since its last RDB snapshot" in warning["loss"]
    finally:
        await redis.aclose()
        await srv.stop()


async def test_up_runs_a_health_prober_that_health_reads(
    tmp_path: Path, clis: Callable[..., Awaitable[Cli]]
) -> None:
    """`up` starts a prober: a result reaches patchlog:health, and `patchlog health`
    prints it and exits 0 (ok) on an idle pipeline. A flag given to `up` (here
    --namespace, after the command) reaches every worker it starts."""
    port = free_port()
    up = await clis(
        "up", "--data-dir", str(tmp_path / "data"), "--port", str(port), "--namespace", "flag"
    )
    keys = Settings(namespace="flag").keys
    redis = connect(Settings(retries=0), f"redis://127.0.0.1:{port}/0")
    try:
        await until(redis.ping, 30, "the embedded server answering")

        async def probed() -> bool:
            return bool(await redis.xlen(keys.health))

        await until(probed, 30, "a health result")
        health = await clis("health", "--port", str(port), "--namespace", "flag")
        assert await health.wait(30) == 0, health.out.read_text() + health.stderr
        assert health.out.read_text().startswith("ok, ")
        await redis.xadd(keys.patches, _insert("hello", 0, "p1", "hello"))  # type: ignore[arg-type]
        await committed(redis, "p1", namespace="flag")
        assert not await redis.exists(_KEYS.health, _KEYS.patches, _KEYS.outcomes)
    finally:
        await redis.aclose()
    assert await up.stop() == 0, up.stderr
