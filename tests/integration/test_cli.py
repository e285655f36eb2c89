"""The command line as a user meets it: options anywhere, one-line errors, exit statuses."""

from __future__ import annotations

import asyncio
import os
import sys

from redis.asyncio import Redis

from patchlog.ops.cli import Exit
from patchlog.ops.config import load_settings, settings_env
from patchlog.streams.client import Client
from patchlog.streams.scripts import Scripts
from patchlog.streams.settings import Fsync, Settings
from tests.integration.helpers import drain


async def patchlog(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run ``python -m patchlog ARGS``; (status, stdout, stderr)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PATCHLOG_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "patchlog", *args,
        env={**clean, **(env or {})},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


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
    """No server is status 3 and a bad PATCHLOG_* value status 2, each one line."""
    status, _, err = await patchlog(
        "show", "d", "--redis-url", "redis://127.0.0.1:1/0", env={"PATCHLOG_RETRIES": "0"}
    )
    assert status == Exit.SERVER
    assert err.startswith("patchlog: error: no server at redis://127.0.0.1:1/0")
    assert err.count("\n") == 1
    status, _, err = await patchlog("show", "d", env={"PATCHLOG_BATCH": "many"})
    assert status == Exit.USAGE
    assert "PATCHLOG_BATCH" in err
    assert "Traceback" not in err


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
