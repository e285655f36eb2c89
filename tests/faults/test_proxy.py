"""The fault proxy against the real servers: each fault does to a redis-py client what the
partition scenarios rely on, on open and on new connections, and its counters show it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from patchlog.streams.server import EmbeddedServer
from patchlog.streams.settings import Settings
from tests.faults.proxy import Fault, Proxy

TIMEOUT = 0.3
"""Socket timeout of the clients that are meant to time out."""


@pytest.fixture
async def proxy(server: EmbeddedServer) -> AsyncIterator[Proxy]:
    """A proxy in front of the test's server, stopped at the end of the test."""
    async with Proxy(server.host, server.port) as running:
        yield running


def through(proxy: Proxy, timeout: float = TIMEOUT, retries: int = 0) -> Redis:
    """A client of the server through ``proxy``: ``retries`` immediate retries on a
    timeout or connection error, and no handshake on connect (RESP2: no HELLO, no
    CLIENT MAINT_NOTIFICATIONS or SETINFO), so a reconnection sends the command itself."""
    return Redis(
        host="127.0.0.1",
        port=proxy.port,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), retries),
        driver_info=None,
        protocol=2,
    )


async def ping(client: Redis) -> bool:
    """PING as a coroutine of its own (for a task)."""
    return bool(await client.ping())


def key(settings: Settings, name: str) -> str:
    """A key in the test's namespace."""
    return f"{settings.namespace}:proxy:{name}"


async def test_commands_pass_through(proxy: Proxy, settings: Settings, redis: Redis) -> None:
    """A megabyte value written through the proxy is on the server and reads back intact."""
    value = bytes(range(256)) * 4096
    client = through(proxy, timeout=5)
    try:
        assert await client.set(key(settings, "big"), value)
        assert await client.get(key(settings, "big")) == value
    finally:
        await client.aclose()
    assert await redis.strlen(key(settings, "big")) == len(value)
    assert proxy.counters.accepted == 1
    assert proxy.counters.bytes_forwarded > 2 * len(value)
    assert proxy.counters.bytes_dropped == proxy.counters.reset == 0


async def test_latency_delays_each_direction(proxy: Proxy) -> None:
    """Under latency(200) a PING on an open connection takes 200 ms each way; heal
    releases a held command at once and the delay is gone."""
    client = through(proxy, timeout=5)
    try:
        assert await client.ping()
        proxy.latency(200)
        start = time.monotonic()
        assert await client.ping()
        assert time.monotonic() - start >= 0.4
        assert proxy.counters.chunks_delayed == 2
        proxy.latency(10_000)
        held = asyncio.create_task(ping(client))
        await asyncio.sleep(0.1)
        proxy.heal()
        assert await asyncio.wait_for(held, 1)
        start = time.monotonic()
        assert await client.ping()
        assert time.monotonic() - start < 0.2
        assert proxy.counters.chunks_delayed == 3
    finally:
        await client.aclose()


async def test_blackhole_times_out_and_heals(proxy: Proxy, settings: Settings) -> None:
    """Under a blackhole a command on an open connection times out and a new connection
    hangs; after heal both clients work again."""
    before = through(proxy)
    after = through(proxy)
    try:
        assert await before.ping()
        proxy.blackhole()
        with pytest.raises(RedisTimeoutError):
            await before.get(key(settings, "x"))
        with pytest.raises(RedisTimeoutError):
            await after.ping()
        assert proxy.counters.accepted == 2
        assert proxy.counters.bytes_dropped > 0
        assert proxy.counters.bytes_forwarded == len(b"*1\r\n$4\r\nPING\r\n+PONG\r\n")
        proxy.heal()
        assert await before.ping()
        assert await after.ping()
    finally:
        await before.aclose()
        await after.aclose()
    assert proxy.counters.switched == {Fault.BLACKHOLE.value: 1, Fault.PASS.value: 1}


async def test_blackhole_holds_a_close_until_heal(proxy: Proxy, redis: Redis) -> None:
    """The server closing a connection under a blackhole reaches the client only after
    heal, as a FIN held by a partition."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(b"CLIENT ID\r\n")
        reply = await asyncio.wait_for(reader.readline(), 2)
        proxy.blackhole()
        assert await redis.client_kill_filter(_id=reply[1:].strip().decode()) == 1
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(1), TIMEOUT)
        proxy.heal()
        assert await asyncio.wait_for(reader.read(1), 2) == b""
    finally:
        writer.close()


async def test_reset_aborts_open_and_new_connections(proxy: Proxy) -> None:
    """reset() sends an RST (not a FIN) on open connections and resets new ones; redis-py
    gets a ConnectionError, then reconnects after heal."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    client = through(proxy)
    try:
        writer.write(b"PING\r\n")
        assert await asyncio.wait_for(reader.readline(), 2) == b"+PONG\r\n"
        assert await client.ping()
        proxy.reset()
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reader.read(1), 2)
        assert proxy.counters.reset == 2
        with pytest.raises(RedisConnectionError):
            await client.ping()
        # The client's next connection is reset as soon as it is accepted.
        with pytest.raises(RedisConnectionError):
            await client.ping()
        assert proxy.counters.accepted == 3
        assert proxy.counters.reset == 3
        proxy.heal()
        assert await client.ping()
    finally:
        writer.close()
        await client.aclose()


async def test_half_open_loses_the_reply_of_an_executed_command(
    proxy: Proxy, settings: Settings, redis: Redis
) -> None:
    """Under half-open an INCR times out at the client although the server ran it: the
    lost-reply case; after heal the next INCR sees the first one."""
    client = through(proxy)
    counter = key(settings, "counter")
    try:
        assert await client.ping()
        proxy.half_open()
        with pytest.raises(RedisTimeoutError):
            await client.incr(counter)
        assert await redis.get(counter) == b"1"
        assert proxy.counters.bytes_dropped == len(b":1\r\n")
        figures = proxy.counters.figures()
        assert figures["proxy_bytes_dropped"] == 4
        assert figures["proxy_half_open_switched"] == 1
        proxy.heal()
        assert await client.incr(counter) == 2
    finally:
        await client.aclose()


async def test_half_open_retries_run_the_command_again(
    proxy: Proxy, settings: Settings, redis: Redis
) -> None:
    """redis-py resending a timed-out INCR on new connections under half-open runs it once
    per attempt: the client saw only failures, the server counted three."""
    client = through(proxy, retries=2)
    counter = key(settings, "counter")
    try:
        assert await client.ping()
        proxy.half_open()
        with pytest.raises(RedisTimeoutError):
            await client.incr(counter)
        assert await redis.get(counter) == b"3"
        assert proxy.counters.accepted == 3
    finally:
        await client.aclose()


async def test_stop_is_bounded_and_closes_every_connection(server: EmbeddedServer) -> None:
    """stop() returns quickly with a blackholed client and a chunk held by latency, and
    the clients see their connections closed."""
    proxy = Proxy(server.host, server.port, stop_timeout=1)
    await proxy.start()
    held = through(proxy, timeout=5)
    hung = through(proxy, timeout=5)
    try:
        assert await held.ping()
        assert await hung.ping()
        proxy.latency(5000)
        pending = asyncio.create_task(ping(held))
        await asyncio.sleep(0.1)
        proxy.blackhole()
        blocked = asyncio.create_task(ping(hung))
        await asyncio.sleep(0.1)
        start = time.monotonic()
        await proxy.stop()
        assert time.monotonic() - start < 1
        for task in (pending, blocked):
            with pytest.raises(RedisConnectionError):
                await asyncio.wait_for(task, 2)
        with pytest.raises(RuntimeError):
            _ = proxy.port
    finally:
        await held.aclose()
        await hung.aclose()
