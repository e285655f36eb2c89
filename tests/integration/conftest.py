"""Real servers for the integration suite: the embedded Valkey and Debian's Redis 7.

Each server is started once per session in its own folder on a free port; each test
gets its own namespace, so tests never see each other's keys.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from patchlog.ops.demo import free_port
from patchlog.streams.connection import connect
from patchlog.streams.scripts import Scripts, load
from patchlog.streams.server import EmbeddedServer, server_binary
from patchlog.streams.settings import Settings

KINDS = [k for k in os.environ.get("PATCHLOG_TEST_SERVERS", "valkey,redis").split(",") if k]


def binary_for(kind: str) -> Path:
    """The server binary of a kind; a missing one fails the run (it is no pass)."""
    if kind == "valkey":
        return server_binary()
    found = shutil.which("redis-server")
    if found is None:
        pytest.fail("redis-server is not installed (.ci/run installs Debian's redis-server)")
    return Path(found)


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
