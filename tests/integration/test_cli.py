"""The command line as a user meets it: options anywhere, one-line errors, exit statuses."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from patchlog.ops.clibase import Exit
from patchlog.ops.config import load_settings, settings_env
from patchlog.streams.client import Client
from patchlog.streams.connection import connect
from patchlog.streams.scripts import Scripts
from patchlog.streams.server import EmbeddedServer
from patchlog.streams.settings import Fsync, Settings
from tests.integration.helpers import dedicated_server, drain, free_port, patchlog, runners


async def test_options_after_the_command_and_errors_in_one_line(
    redis: Redis, settings: Settings, scripts: Scripts
) -> None:
    """Global options work after the subcommand; a missing revision is one line, status 4."""
    assert settings.redis_url is not None
    client = Client(redis, settings.keys)
    await client.submit("d", 0, ops=[{"op": "insert", "at": 1, "lines": ["hello"]}])
    await drain(redis, settings, scripts)
    where = ["--redis-url", settings.redis_url, "--namespace", settings.namespace]

    status, out, err = await patchlog("show", "d", *where)
    assert (status, out) == (0, "hello\n"), err
    status, out, _ = await patchlog("--redis-url", settings.redis_url, "show", "d",
                                    "--namespace", settings.namespace)  # fmt: skip
    assert (status, out) == (0, "hello\n")

    status, out, err = await patchlog("show", "d", "--rev", "99", *where)
    assert status == Exit.NOT_FOUND
    assert err == "patchlog: error: 'd' has revisions 0..1; there is no revision 99\n"
    assert "Traceback" not in err


async def test_unreachable_server_and_bad_settings_have_their_statuses() -> None:
    """No server is status 3; a bad PATCHLOG_* value or flag is status 2; each one line."""
    status, _, err = await patchlog(
        "show", "d", "--redis-url", "redis://127.0.0.1:1/0", env={"PATCHLOG_RETRIES": "0"}
    )
    assert status == Exit.SERVER
    assert err.startswith("patchlog: error: no server at redis://127.0.0.1:1/0")
    assert err.count("\n") == 1
    status, _, err = await patchlog("show", "d", env={"PATCHLOG_BATCH": "many"})
    assert status == Exit.USAGE
    assert err.startswith("patchlog: error: PATCHLOG_BATCH")
    assert err.count("\n") == 1
    # A bad flag, value, argument or command: one line naming it, and where help is.
    for args, named in [
        (["show", "d", "--rev", "abc"], "'--rev'"),
        (["show"], "'DOC'"),
        (["shwo", "d"], "'shwo'"),
        (["submit", "--doc", "d", "--base", "0"], "--ops and --diff"),
    ]:
        status, _, err = await patchlog(*args)
        assert status == Exit.USAGE, args
        assert err.startswith("patchlog: error: "), err
        assert named in err, err
        assert err.count("\n") == 1, err
    status, _, err = await patchlog(
        "worker", "normalize", "--name", "n1", env={"PATCHLOG_LOG_LEVEL": "loud"}
    )
    assert status == Exit.USAGE
    assert "PATCHLOG_LOG_LEVEL" in err
    assert "debug|info|warning|error" in err


def test_settings_reach_workers_whole() -> None:
    """The environment ``up`` gives its workers rebuilds every setting, flags included."""
    given = load_settings(
        env={"PATCHLOG_BATCH": "7", "PATCHLOG_MAX_OPS": "12"},
        overrides={"port": 6451, "fsync": "always", "namespace": "ns", "strict": True},
    )
    assert (given.batch, given.limits.max_ops, given.port, given.fsync) == (
        7,
        12,
        6451,
        Fsync.ALWAYS,
    )
    assert load_settings(env=settings_env(given)) == given
    assert load_settings(env=settings_env(Settings())) == Settings()


async def test_submit_wait_prints_its_own_outcome(
    redis: Redis, settings: Settings, scripts: Scripts
) -> None:
    """`submit --wait` under an id another payload owns prints rejected/id_reuse and exits
    1; the owner's own submission printed committed and exited 0."""
    assert settings.redis_url is not None
    where = ["--redis-url", settings.redis_url, "--namespace", settings.namespace]
    workers = runners(redis, settings, scripts, drain=False)
    tasks = [asyncio.create_task(r.run()) for r in workers]
    try:
        for lines, expected in (('["mine"]', (Exit.OK, "committed", None)),
                                ('["theirs"]', (Exit.NO, "rejected", "id_reuse"))):  # fmt: skip
            ops = f'[{{"op":"insert","at":1,"lines":{lines}}}]'
            status, out, err = await patchlog(
                "submit", "--doc", "d", "--base", "0", "--ops", ops, "--id", "p", "--wait", *where
            )
            told = json.loads(out)
            assert (status, told["status"], told["code"]) == expected, err
            assert told["id"] == "p"
    finally:
        for r in workers:
            r.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)


async def test_strict_submit_whose_fsync_fails_prints_the_patch_id(tmp_path: Path) -> None:
    """With strict durability, a submission appended but not confirmed fsynced is one
    line naming the patch id and the entry, status 3."""
    async with dedicated_server(tmp_path, "valkey") as srv:  # Redis 7.0 has no WAITAOF
        redis = connect(Settings(), srv.url)
        try:
            await redis.config_set("appendonly", "no")
            status, out, err = await patchlog(
                "submit", "--doc", "d", "--base", "0", "--ops", '[{"op":"delete","from":1}]',
                "--redis-url", srv.url, env={"PATCHLOG_DURABILITY": "strict"},
            )  # fmt: skip
            rows: Any = await redis.xrange(Settings().keys.patches)
        finally:
            await redis.aclose()
    assert (status, out) == (Exit.SERVER, "")
    assert len(rows) == 1
    entry, fields = rows[0][0].decode(), rows[0][1]
    assert err.startswith(f"patchlog: error: patch {fields[b'id'].decode()} (entry {entry})")
    assert err.count("\n") == 1


async def test_a_missing_document_names_the_server_and_its_folder(
    settings: Settings, server: EmbeddedServer
) -> None:
    """`show` or `log` of a document nobody wrote is status 4 naming the server and its
    data folder (the likeliest mistake is another server or folder), not an empty page."""
    assert settings.redis_url is not None
    where = ["--redis-url", settings.redis_url, "--namespace", settings.namespace]
    for command in (
        ["show", "nosuchdoc"],
        ["show", "nosuchdoc", "--rev", "0"],
        ["log", "nosuchdoc"],
    ):
        status, out, err = await patchlog(*command, *where)
        assert (status, out) == (Exit.NOT_FOUND, ""), err
        assert err == (
            f"patchlog: error: no document 'nosuchdoc' in namespace {settings.namespace!r} on "
            f"{settings.redis_url} (data folder {server.data_dir}): no patch was ever "
            "committed to it\n"
        )


async def test_up_and_worker_stop_at_once_without_a_server() -> None:
    """`up` and `worker` against an unreachable URL exit 3 within seconds, with one line
    naming the URL and where it came from, before starting anything."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    for command, env, flags, source in (
        (["up"], {"REDIS_URL": url}, [], "REDIS_URL"),
        (["worker", "execute"], {"PATCHLOG_REDIS_URL": url}, [], "PATCHLOG_REDIS_URL"),
        (["up"], {"REDIS_URL": "redis://elsewhere:1/0"}, ["--redis-url", url], "--redis-url"),
    ):
        started = time.monotonic()
        status, out, err = await patchlog(*command, *flags, env=env, timeout=30)
        assert time.monotonic() - started < 15
        assert status == Exit.SERVER, err
        assert err.startswith(f"patchlog: error: no server at {url} (from {source}): "), err
        assert err.count("\n") == 1, err
        assert "Traceback" not in err
        assert out == ""  # `up` printed no banner: it started nothing
