"""``patchlog replay`` run as a user runs it, against the real servers: the streams as
JSON lines merged in id order, its filters, paging, ``| head``, and ``--follow``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import signal
import statistics
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from redis.asyncio import Redis

from patchlog.ops.clibase import Exit
from patchlog.ops.replay import STREAMS, entry_time, stream_key
from patchlog.streams.client import Client
from patchlog.streams.codec import encode_event
from patchlog.streams.schema import DeadLetter, HealthResult, HealthStatus
from patchlog.streams.scripts import Scripts
from patchlog.streams.settings import Settings
from tests.integration.helpers import drain, free_port, patchlog, runners

Row = dict[str, Any]


def where(settings: Settings) -> list[str]:
    assert settings.redis_url is not None
    return ["--redis-url", settings.redis_url, "--namespace", settings.namespace]


def parse(out: str) -> list[Row]:
    """Every line of the output as JSON: one object a line, nothing else."""
    assert out.endswith("\n") or out == ""
    return [json.loads(line) for line in out.splitlines()]


def order(row: Row) -> tuple[int, int, int]:
    ms, _, seq = row["id"].partition("-")
    return int(ms), int(seq), STREAMS.index(row["stream"])


def fields_of(event: msgspec.Struct) -> dict[Any, Any]:
    """An event's stream fields as its writers append them."""
    return encode_event(event)


async def everything(redis: Redis, settings: Settings) -> list[Row]:
    """Each public stream's entries as (stream, id, raw fields), read directly."""
    rows: list[Row] = []
    for stream in STREAMS:
        entries: Any = await redis.xrange(stream_key(settings.keys, stream))
        rows += [{"stream": stream, "id": eid.decode(), "raw": fields} for eid, fields in entries]
    return rows


async def replay(settings: Settings, *args: str) -> list[Row]:
    status, out, err = await patchlog("replay", *args, *where(settings))
    assert (status, err) == (Exit.OK, "")
    return parse(out)


@pytest.fixture
async def log(redis: Redis, settings: Settings, scripts: Scripts) -> list[Row]:
    """A log with entries in all five streams: committed, rejected and malformed patches
    to two documents, through the real stages, plus a dead letter and health results as
    their writers append them; one health result is from 1970 (an id given by hand)."""
    await redis.xadd(
        settings.keys.health,
        fields_of(HealthResult(status=HealthStatus.FAILING, checks={"old": True}, at=1000)),
        id="1000-0",
    )
    client = Client(redis, settings.keys)
    insert = {"op": "insert", "at": 1, "lines": ["one", "two"]}
    await client.submit("a", 0, ops=[insert], meta={"run": 1})
    await client.submit("b", 0, ops=[insert])
    await client.submit("a", 0, ops=[{"op": "delete", "from": 9}])  # bounds: rejected
    await client.submit("b", 1, ops=[{"op": "replace", "from": 2, "lines": ["deux"]}])
    await redis.xadd(settings.keys.patches, {"doc": "a", "base": "1", "ops": "[1,"})
    await drain(redis, settings, scripts)
    dead = DeadLetter(stage="execute", error="boom", deliveries=5, entry={"doc": "c"}, at=1)
    await redis.xadd(settings.keys.dead, fields_of(dead))
    ok = HealthResult(status=HealthStatus.OK, checks={"lag": {"execute": 0}}, at=2)
    await redis.xadd(settings.keys.health, fields_of(ok))
    await client.submit("a", 1, ops=[{"op": "insert", "at": 3, "lines": ["three"]}])
    await drain(redis, settings, scripts)
    return await everything(redis, settings)


async def test_all_streams_merge_in_id_order_with_json_decoded(
    settings: Settings, log: list[Row]
) -> None:
    """Every entry of the five streams, once, in id order across streams (a revision
    before its outcome of the same id), JSON fields decoded and the rest strings."""
    rows = await replay(settings)
    assert [(r["stream"], r["id"]) for r in rows] == sorted(
        ((r["stream"], r["id"]) for r in log), key=lambda p: order({"stream": p[0], "id": p[1]})
    )
    assert [order(r) for r in rows] == sorted(order(r) for r in rows)
    assert {r["stream"] for r in rows} == set(STREAMS)
    assert rows[0]["id"] == "1000-0"  # the 1970 health result comes first
    for row in rows:
        ms = int(row["id"].partition("-")[0])
        assert (row["ms"], row["time"]) == (ms, entry_time(ms))
        fields = row["fields"]
        if row["stream"] in ("patches", "revisions") and "ops_raw" not in fields:
            assert isinstance(fields["ops"], list)
            assert all(isinstance(op, dict) and "op" in op for op in fields["ops"])
        if row["stream"] == "revisions":
            assert fields["rev"].isdigit()  # numbers stay the strings on the wire
    patches = [r["fields"] for r in rows if r["stream"] == "patches"]
    assert patches[0]["meta"] == {"run": 1}
    assert [p for p in patches if "ops_raw" in p] == [{"doc": "a", "base": "1", "ops_raw": "[1,"}]
    rejected = [r["fields"] for r in rows if r["fields"].get("status") == "rejected"]
    assert sorted(r["code"] for r in rejected) == ["bounds", "invalid"]
    assert all(isinstance(r["entry"], dict) for r in rejected)
    assert [r["fields"]["entry"] for r in rows if r["stream"] == "dead"] == [{"doc": "c"}]
    checks = [r["fields"]["checks"] for r in rows if r["stream"] == "health"]
    assert checks == [{"old": True}, {"lag": {"execute": 0}}]


async def test_doc_status_stream_from_and_limit_select_entries(
    settings: Settings, log: list[Row]
) -> None:
    """Each filter prints exactly the entries it selects, in the same order."""
    everything_printed = await replay(settings)
    ids = [(r["stream"], r["id"]) for r in everything_printed]

    def expect(keep: Any) -> list[tuple[str, str]]:
        return [(r["stream"], r["id"]) for r in everything_printed if keep(r)]

    rows = await replay(settings, "--doc", "a")
    assert [(r["stream"], r["id"]) for r in rows] == expect(lambda r: r["fields"].get("doc") == "a")
    assert {r["stream"] for r in rows} == {"patches", "revisions", "outcomes"}
    assert sum(r["stream"] == "revisions" for r in rows) == 2

    rows = await replay(settings, "--status", "rejected")
    assert [(r["stream"], r["id"]) for r in rows] == expect(
        lambda r: r["fields"].get("status") == "rejected"
    )
    assert len(rows) == 2
    assert {r["stream"] for r in rows} == {"outcomes"}

    rows = await replay(settings, "--doc", "b", "--status", "committed")
    assert [r["fields"]["rev"] for r in rows] == ["1", "2"]

    rows = await replay(settings, "--status", "ok")
    assert [r["stream"] for r in rows] == ["health"]

    rows = await replay(settings, "--stream", "outcomes", "--stream", "revisions")
    assert [(r["stream"], r["id"]) for r in rows] == expect(
        lambda r: r["stream"] in ("outcomes", "revisions")
    )
    assert sum(r["stream"] == "outcomes" for r in rows) == 6  # one per submitted patch

    middle = everything_printed[len(everything_printed) // 2]
    rows = await replay(settings, "--from", middle["id"])
    assert (rows[0]["stream"], rows[0]["id"]) == (middle["stream"], middle["id"])  # inclusive
    assert [(r["stream"], r["id"]) for r in rows] == expect(lambda r: order(r) >= order(middle))
    rows = await replay(settings, "--from", middle["time"])
    assert [(r["stream"], r["id"]) for r in rows] == expect(lambda r: r["ms"] >= middle["ms"])
    rows = await replay(settings, "--from", "-1h")
    assert [(r["stream"], r["id"]) for r in rows] == ids[1:]  # all but the 1970 entry
    assert await replay(settings, "--from", "now") == []

    rows = await replay(settings, "--limit", "3")
    assert [(r["stream"], r["id"]) for r in rows] == ids[:3]
    rows = await replay(settings, "--doc", "a", "--limit", "2", "--stream", "revisions")
    assert [r["fields"]["rev"] for r in rows] == ["1", "2"]


@pytest.fixture
async def long_log(redis: Redis, settings: Settings) -> list[tuple[str, str]]:
    """2,500 patches and 2,500 health results whose ids are given by hand so that both
    streams have entries with equal ids and pages end at different places: (stream, id)
    in the order replay must print them."""
    expected: list[tuple[int, int, int, str, str]] = []
    async with redis.pipeline(transaction=False) as pipe:
        for n in range(1, 2501):
            pid = f"{n}-0"
            pipe.xadd(settings.keys.patches, {"doc": f"d{n % 7}", "base": "0", "ops": "[]"}, id=pid)
            expected.append((n, 0, 0, "patches", pid))
        await pipe.execute()
    # Health ids: two per millisecond on every third millisecond (1-0, 1-1, 4-0, 4-1, ...).
    async with redis.pipeline(transaction=False) as pipe:
        for k in range(1250):
            for seq in (0, 1):
                hid = f"{1 + 3 * k}-{seq}"
                pipe.xadd(settings.keys.health, {"status": "ok", "checks": "{}"}, id=hid)
                expected.append((1 + 3 * k, seq, 4, "health", hid))
        await pipe.execute()
    return [(stream, eid) for *_, stream, eid in sorted(expected)]


async def test_a_long_log_comes_out_whole_in_order_across_pages(
    settings: Settings, long_log: list[tuple[str, str]]
) -> None:
    """5,000 entries (several pages of each stream, ties between streams) all come out,
    each once, in id order, a tie in stream order."""
    rows = await replay(settings)
    assert [(r["stream"], r["id"]) for r in rows] == long_log
    rows = await replay(settings, "--doc", "d3")
    assert [r["id"] for r in rows] == [eid for s, eid in long_log if s == "patches"][2::7]


async def test_a_reader_that_stops_reading_ends_replay_quietly(
    settings: Settings, long_log: list[tuple[str, str]], tmp_path: Path
) -> None:
    """`patchlog replay | head -1`: the closed pipe ends it, status 0, nothing on stderr."""
    errors = tmp_path / "stderr"
    # 5,000 lines (~700 KB) are far more than a pipe holds: replay writes after head left.
    command = (
        f"{shlex.join([sys.executable, '-m', 'patchlog', 'replay', *where(settings)])} "
        f"2>{shlex.quote(str(errors))} | head -1; echo status=${{PIPESTATUS[0]}}"
    )
    proc = await asyncio.create_subprocess_exec(
        "bash", "-c", command, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    first, status = out.decode().splitlines()
    assert json.loads(first)["id"] == "1-0"
    assert status == "status=0"
    assert errors.read_text() == ""


@contextlib.asynccontextmanager
async def follower(settings: Settings, *args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """``patchlog replay --follow ARGS`` running, killed at the end if still running."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "patchlog", "replay", "--follow", *args, *where(settings),
        env={k: v for k, v in os.environ.items() if not k.startswith("PATCHLOG_")},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def next_row(proc: asyncio.subprocess.Process, timeout: float = 30) -> Row:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), timeout)
    assert line, "replay --follow ended"
    row: Row = json.loads(line)
    return row


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
async def test_follow_prints_a_new_patch_within_a_second_and_stops_on_a_signal(
    redis: Redis, settings: Settings, scripts: Scripts, stop: signal.Signals
) -> None:
    """With the pipeline running, `replay --follow` prints each patch submitted after it
    started within 1 s of the XADD (and its outcome after it); SIGTERM or SIGINT ends it
    with status 0 within the block time of one read."""
    client = Client(redis, settings.keys)
    first = await client.submit("d", 0, ops=[{"op": "insert", "at": 1, "lines": ["0"]}])
    workers = runners(redis, settings, scripts, drain=False)
    tasks = [asyncio.create_task(r.run()) for r in workers]
    latencies: list[float] = []
    try:
        async with follower(settings, "--stream", "patches", "--stream", "outcomes") as proc:
            row = await next_row(proc)  # the backlog: it is running and about to follow
            assert (row["stream"], row["id"]) == ("patches", first.entry)
            row = await next_row(proc)
            assert (row["stream"], row["fields"]["src"]) == ("outcomes", first.entry)
            for n in range(1, 6):
                await asyncio.sleep(0.3)  # land anywhere within a blocking read
                started = time.monotonic()
                submitted = await client.submit(
                    "d", n, ops=[{"op": "insert", "at": 1, "lines": [str(n)]}]
                )
                row = await next_row(proc, timeout=5)
                latencies.append(time.monotonic() - started)
                assert (row["stream"], row["id"]) == ("patches", submitted.entry)
                assert row["fields"]["ops"] == [{"op": "insert", "at": 1, "lines": [str(n)]}]
                row = await next_row(proc, timeout=10)
                assert (row["stream"], row["fields"]["src"]) == ("outcomes", submitted.entry)
                assert row["fields"]["status"] == "committed"
            asked = time.monotonic()
            proc.send_signal(stop)
            assert proc.stderr is not None
            err = await asyncio.wait_for(proc.stderr.read(), 10)
            status = await asyncio.wait_for(proc.wait(), 10)
            took = time.monotonic() - asked
    finally:
        for r in workers:
            r.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
    print(  # figures for the README: run with -s
        f"follow latency over {len(latencies)} patches: max {max(latencies) * 1000:.0f} ms, "
        f"median {statistics.median(latencies) * 1000:.0f} ms; {stop.name} to exit "
        f"{took * 1000:.0f} ms"
    )
    assert max(latencies) < 1.0, latencies
    assert (status, err) == (0, b"")
    assert took < 3.0


async def test_follow_continues_right_after_the_backlog_and_from(
    redis: Redis, settings: Settings
) -> None:
    """--follow takes over where the backlog ended in each stream: on an empty stream it
    starts at --from (an entry one sequence number before is not printed, the one at it
    is); entries appended together come out in id order across streams."""
    await redis.xadd(settings.keys.dead, {"stage": "s", "error": "e", "entry": "{}"}, id="6000-0")
    await redis.xadd(settings.keys.health, {"status": "ok", "checks": "{}"}, id="10-0")
    async with follower(
        settings, "--from", "5000-0", "--stream", "health", "--stream", "dead"
    ) as p:
        assert [(await next_row(p))["id"]] == ["6000-0"]  # 10-0 is before --from
        async with redis.pipeline(transaction=True) as pipe:
            pipe.xadd(settings.keys.health, {"status": "ok", "checks": "[1]"}, id="4999-7")
            pipe.xadd(settings.keys.dead, {"stage": "s", "error": "e", "entry": "{}"}, id="6000-1")
            pipe.xadd(settings.keys.health, {"status": "ok", "checks": "[2]"}, id="5000-0")
            pipe.xadd(settings.keys.health, {"status": "ok", "checks": "[3]"}, id="7000-0")
            await pipe.execute()
        rows = [await next_row(p, timeout=5) for _ in range(3)]
        assert [(r["stream"], r["id"]) for r in rows] == [
            ("health", "5000-0"),
            ("dead", "6000-1"),
            ("health", "7000-0"),
        ]
        assert rows[0]["fields"]["checks"] == [2]
        p.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(p.wait(), 10) == 0
        assert p.stdout is not None
        assert await p.stdout.read() == b""  # nothing else: 4999-7 was never printed


@pytest.mark.parametrize(
    "value", ["yesterday", "+5m", "5m", "1-2-3", "18446744073709551616-0", "2026-13-01"]
)
async def test_a_bad_from_is_a_usage_error_naming_the_option(value: str) -> None:
    """Status 2, naming --from, the value and the rule, before any server is asked."""
    url = f"redis://127.0.0.1:{free_port()}/0"  # nobody there: the check comes first
    status, out, err = await patchlog("replay", "--from", value, "--redis-url", url)
    assert (status, out) == (Exit.USAGE, "")
    assert "'--from'" in err
    assert repr(value) in err
    assert "rule: a stream id (1796084322494-0" in err
    assert "Traceback" not in err


async def test_no_server_is_status_3_in_one_line() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    status, out, err = await patchlog(
        "replay", "--follow", "--redis-url", url, env={"PATCHLOG_RETRIES": "0"}
    )
    assert (status, out) == (Exit.SERVER, "")
    assert err.startswith(f"patchlog: error: no server at {url} (from --redis-url)")
    assert err.count("\n") == 1
