"""Real servers for the integration suite: the embedded Valkey and Debian's Redis 7.

Each server is started once per session in its own folder on a free port; each test
gets its own namespace, so tests never see each other's keys.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis

from patchlog.streams.connection import connect
from patchlog.streams.scripts import Scripts, load
from patchlog.streams.server import EmbeddedServer
from patchlog.streams.settings import Settings
from tests.integration.helpers import KINDS, Cli, binary_for, free_port


@pytest.fixture(scope="session", params=KINDS)
async def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[EmbeddedServer]:
    """A server of each kind, started for the session, stopped at its end."""
    kind: str = request.param
    srv = EmbeddedServer(
        tmp_path_factory.mktemp(f"server-{kind}"), port=free_port(), binary=binary_for(kind)
    )
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
def settings(server: EmbeddedServer) -> Settings:
    """Settings for one test: its own namespace on the session's server, quick timings."""
    return Settings(
        redis_url=server.url,
        namespace=f"t{uuid.uuid4().hex[:10]}",
        block_ms=100,
        lease_ms=1500,
        claim_interval=0.2,
        base_ahead_wait=0.5,
        batch=64,
        commit_chunk=16,  # several commits per batch: the overlapped path runs everywhere
    )


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    """A client of the test's server."""
    assert settings.redis_url is not None
    client = connect(settings, settings.redis_url, name="patchlog-test", block_ms=2000)
    yield client
    await client.aclose()


@pytest.fixture
def scripts(redis: Redis) -> Scripts:
    """The server-side scripts, registered on the test's client."""
    return load(redis)


@pytest.fixture
async def clis(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Cli]]]:
    """Start CLI processes; whatever happens in the test, none outlives it."""
    started: list[Cli] = []

    async def start(*args: str) -> Cli:
        cli = await Cli(tmp_path, *args).start()
        started.append(cli)
        return cli

    yield start
    for cli in started:
        cli.kill()
        with contextlib.suppress(TimeoutError):
            await cli.wait(10)
