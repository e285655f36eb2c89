"""``patchlog top`` as an operator reads it: the frame's numbers are the server's own, the
rates are differences of its counters, and the live view draws on a terminal and leaves
on Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import pty
import select
import signal
import sys
import time
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from patchlog.ops.clibase import Exit
from patchlog.ops.top import Sample, rates, take_sample
from patchlog.streams.client import Client
from patchlog.streams.scripts import Scripts
from patchlog.streams.settings import Settings
from tests.integration.helpers import drain, patchlog

STAGE_COLUMNS = ["stage", "stream", "length", "lag", "pending", "oldest", "consumers", "in/s"]


def rows(text: str, first: str) -> dict[str, dict[str, str]]:
    """The table whose header starts with ``first``: each row by its first cell, as
    {column: cell} (cells hold no spaces)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:1] == [first])
    header = lines[start].split()
    out = {}
    for line in lines[start + 2 :]:  # past the rule under the header
        cells = line.split()
        if len(cells) != len(header):
            break
        out[cells[0]] = dict(zip(header, cells, strict=True))
    return out


async def test_once_to_a_file_shows_each_stage_with_the_servers_numbers(
    redis: Redis, settings: Settings, scripts: Scripts, tmp_path: Path
) -> None:
    """A row per stage with XINFO GROUPS' lag and pending, XLEN's length, the oldest
    pending age and no consumers; a row per stream with its XLEN; idle rates are 0."""
    assert settings.redis_url is not None
    client = Client(redis, settings.keys)
    for n in range(30):
        await client.submit("d", 0, ops=[{"op": "insert", "at": 1, "lines": [str(n)]}])
    await drain(redis, settings, scripts)
    for n in range(5):  # a backlog for normalize, two of it read and not acknowledged
        await client.submit("d", 1, ops=[{"op": "insert", "at": 1, "lines": [f"late {n}"]}])
    await redis.xreadgroup("normalize", "held", {settings.keys.patches: ">"}, count=2)
    read_at = time.time()
    frame = tmp_path / "top.txt"
    where = ["--redis-url", settings.redis_url, "--namespace", settings.namespace]
    status, out, err = await patchlog(
        "top", "--once", "--interval", "0.2", "--output", str(frame), "--width", "120", *where
    )
    assert (status, out) == (0, ""), err
    text = frame.read_text()
    assert "\x1b" not in text  # plain text, for a file or `watch`
    stages = rows(text, "stage")
    assert list(stages) == ["normalize", "execute"]
    normalize, execute = stages["normalize"], stages["execute"]
    assert normalize["stream"] == "patches"
    assert execute["stream"] == "normalized"
    for row, group, stream in (
        (normalize, "normalize", settings.keys.patches),
        (execute, "execute", settings.keys.normalized),
    ):
        info: Any = next(g for g in await redis.xinfo_groups(stream) if g["name"].decode() == group)
        assert int(row["lag"]) == int(info["lag"])
        assert int(row["pending"]) == int(info["pending"])
        assert int(row["length"].replace(",", "")) == await redis.xlen(stream)
        assert row["consumers"] == "0"  # the drained workers released their leases
        assert (row["in/s"], row["done/s"]) == ("0.0", "0.0")  # idle between the samples
    assert (normalize["lag"], normalize["pending"]) == ("3", "2")
    assert normalize["length"] == "35"
    oldest = float(normalize["oldest"].removesuffix("s"))
    assert 0 <= oldest <= time.time() - read_at + 5
    assert (execute["lag"], execute["pending"], execute["oldest"]) == ("0", "0", "-")
    streams = rows(text, "stream")
    for name in ("patches", "normalized", "revisions", "outcomes", "dead", "health"):
        length = await redis.xlen(getattr(settings.keys, name))
        assert int(streams[name]["length"].replace(",", "")) == length, name
    assert streams["revisions"]["length"] == "30"
    assert "health       no result yet" in text


async def test_rates_are_differences_of_the_servers_counters(
    redis: Redis, settings: Settings, scripts: Scripts
) -> None:
    """Entries added and acknowledged between two samples are what the rates count,
    whatever trimming does to the stream's length."""
    client = Client(redis, settings.keys)
    for n in range(4):
        await client.submit("d", 0, ops=[{"op": "insert", "at": 1, "lines": [str(n)]}])
    await drain(redis, settings, scripts)
    before = await take_sample(redis, settings)
    for n in range(10):
        await client.submit("e", 0, ops=[{"op": "insert", "at": 1, "lines": [str(n)]}])
    reply: Any = await redis.xreadgroup("normalize", "x", {settings.keys.patches: ">"}, count=6)
    await redis.xack(settings.keys.patches, "normalize", *[eid for eid, _ in reply[0][1][:4]])
    await redis.xtrim(settings.keys.patches, maxlen=0)  # the length drops, the counters do not
    after = await take_sample(redis, settings)
    assert after.added["patches"] - before.added["patches"] == 10
    assert after.done["normalize"] - before.done["normalize"] == 4
    assert after.added["revisions"] == before.added["revisions"] == 4
    moved = rates(before, after)
    span = after.at - before.at
    assert abs(moved.added["patches"] - 10 / span) < 1e-6
    assert abs(moved.done["normalize"] - 4 / span) < 1e-6
    assert moved.added["dead"] == 0.0  # a stream never written counts as nothing added


def test_rates_need_two_samples_and_counters_that_only_grow() -> None:
    """One sample has no rates; a counter that went down (a stream made anew) has none."""

    def sample(at: float, added: dict[str, int], done: dict[str, int]) -> Sample:
        return Sample(at=at, wall_ms=0, status={}, added=added, done=done)

    first = sample(10.0, {"patches": 100, "revisions": 50}, {"normalize": 90})
    second = sample(12.0, {"patches": 140, "revisions": 10}, {"normalize": 130, "execute": 5})
    assert rates(None, second).added == {}
    moved = rates(first, second)
    assert moved.added == {"patches": 20.0}
    assert moved.done == {"normalize": 20.0}
    assert rates(second, second).added == {}


async def test_live_view_draws_on_a_terminal_and_leaves_on_ctrl_c(settings: Settings) -> None:
    """On a terminal it draws full screen and redraws; SIGINT restores the screen and
    exits 0."""
    assert settings.redis_url is not None
    main, child = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PATCHLOG_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "patchlog", "top", "--interval", "0.2",
        "--redis-url", settings.redis_url, "--namespace", settings.namespace,
        stdin=child, stdout=child, stderr=child,
        env={**env, "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"},
    )  # fmt: skip
    os.close(child)
    seen = b""
    try:
        deadline = time.monotonic() + 20
        while seen.count(b"normalize") < 3 and time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 0.5)
            if ready:
                seen += os.read(main, 65536)
        assert seen.count(b"normalize") >= 3, seen[-2000:]  # redrawn, not drawn once
        proc.send_signal(signal.SIGINT)
        status = await asyncio.wait_for(proc.wait(), 10)
        with_rest = seen
        while select.select([main], [], [], 0.2)[0]:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # the terminal closed with the process
                break
            if not chunk:
                break
            with_rest += chunk
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        os.close(main)
    assert status == 0, with_rest[-2000:]
    assert b"\x1b[?1049h" in seen  # the alternate screen, as top and htop use
    assert b"\x1b[?1049l" in with_rest  # and back to the shell's screen
    assert b"Traceback" not in with_rest


async def test_no_server_is_one_line_and_status_3() -> None:
    """An unreachable server is reported like every command's: one line, status 3."""
    status, _, err = await patchlog(
        "top", "--once", "--redis-url", "redis://127.0.0.1:1/0", env={"PATCHLOG_RETRIES": "0"}
    )
    assert status == Exit.SERVER
    assert err.startswith("patchlog: error: no server at redis://127.0.0.1:1/0")
    assert err.count("\n") == 1
