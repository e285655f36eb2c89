"""A TCP fault proxy on loopback between patchlog and its server (FAULT-PLAN.md section 3).

Clients connect to ``Proxy.url`` instead of the server. One fault is active at a time and
switching it takes effect at once on every open connection and on every new one:

- ``pass_()`` / ``heal()``: bytes flow both ways unchanged;
- ``latency(ms)``: every chunk waits ``ms`` in each direction, so a round trip gains
  twice ``ms``;
- ``blackhole()``: bytes are read and dropped both ways, nothing is answered; a close
  by either side is held back until the fault is lifted, as a partition holds a FIN;
- ``reset()``: every open connection is aborted with a TCP RST on both sides, new ones
  are reset as soon as they are accepted;
- ``half_open()``: client → server flows, server → client is dropped: the server runs
  each command and the client never sees its reply.

``Proxy.counters`` records what was done, so a scenario can show that its fault fired.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import socket
import struct
from types import TracebackType
from typing import Self

__all__ = ["Counters", "Fault", "Proxy"]

CHUNK = 64 * 1024
"""Bytes read from a socket at once."""
QUEUE_CHUNKS = 16
"""Chunks in flight per direction (held for latency); a full queue stops the reads."""
_DIRECTIONS = ("c2s", "s2c")


class Fault(enum.Enum):
    """What the proxy does to the traffic."""

    PASS = "pass"  # noqa: S105  # a fault's name, not a password
    LATENCY = "latency"
    BLACKHOLE = "blackhole"
    RESET = "reset"
    HALF_OPEN = "half_open"


# Which directions each fault drops; a dropped close is held until the fault changes.
_DROPS: dict[Fault, frozenset[str]] = {
    Fault.PASS: frozenset(),
    Fault.LATENCY: frozenset(),
    Fault.BLACKHOLE: frozenset(_DIRECTIONS),
    Fault.RESET: frozenset(_DIRECTIONS),
    Fault.HALF_OPEN: frozenset({"s2c"}),
}


@dataclasses.dataclass
class Counters:
    """What the proxy has done since it started."""

    accepted: int = 0
    """Client connections accepted."""
    reset: int = 0
    """Connections aborted with an RST (open ones at ``reset()``, new ones under it)."""
    upstream_failed: int = 0
    """Accepted connections closed because the server could not be reached."""
    bytes_forwarded: int = 0
    """Bytes written to the other side, both directions."""
    bytes_dropped: int = 0
    """Bytes read and thrown away (blackhole, half-open)."""
    chunks_delayed: int = 0
    """Chunks held back by ``latency``."""
    switched: dict[str, int] = dataclasses.field(default_factory=dict)
    """Times each fault was switched on, by ``Fault`` value."""

    def figures(self, prefix: str = "proxy_") -> dict[str, int]:
        """The counters as flat named figures for a scenario's row."""
        flat = {f"{prefix}{k}": v for k, v in dataclasses.asdict(self).items() if k != "switched"}
        flat.update({f"{prefix}{k}_switched": v for k, v in sorted(self.switched.items())})
        return flat


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close ``writer``'s socket with an RST: SO_LINGER 0, then drop the transport."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Link:
    """One client connection and its own connection to the server."""

    def __init__(
        self,
        proxy: Proxy,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream = upstream
        self.tasks: list[asyncio.Task[None]] = []

    async def run(self) -> None:
        """Pump both directions until one side closes or fails, then close both."""
        pairs = {
            "c2s": (self.client[0], self.upstream[1]),
            "s2c": (self.upstream[0], self.client[1]),
        }
        writers = []
        for direction, (src, dst) in pairs.items():
            queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(QUEUE_CHUNKS)
            self.tasks.append(asyncio.create_task(self._read(src, queue)))
            writers.append(asyncio.create_task(self._write(queue, dst, direction)))
        self.tasks += writers
        try:
            # A close ends the link once it is delivered, after the bytes read before it.
            await asyncio.wait(writers, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.close()

    def close(self) -> None:
        """Stop pumping and close both sockets with a FIN (unwritten bytes are lost)."""
        for task in self.tasks:
            task.cancel()
        self.client[1].close()
        self.upstream[1].close()

    def abort(self) -> None:
        """Stop pumping and close both sockets with an RST."""
        for task in self.tasks:
            task.cancel()
        _abort(self.client[1])
        _abort(self.upstream[1])

    async def _read(
        self, src: asyncio.StreamReader, queue: asyncio.Queue[tuple[float, bytes]]
    ) -> None:
        """Read chunks into ``queue`` with their arrival time until the peer closes;
        ``b""`` marks the close (a reset by the peer counts as one)."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                chunk = await src.read(CHUNK)
            except OSError:
                chunk = b""
            await queue.put((loop.time(), chunk))
            if not chunk:
                return

    async def _write(
        self,
        queue: asyncio.Queue[tuple[float, bytes]],
        dst: asyncio.StreamWriter,
        direction: str,
    ) -> None:
        """Deliver chunks from ``queue`` under the fault in force when each is due.

        Returns when a close has been let through or ``dst`` fails."""
        proxy = self.proxy
        loop = asyncio.get_running_loop()
        while True:
            arrived, chunk = await queue.get()
            if arrived + proxy.latency_ms / 1000 > loop.time():
                proxy.counters.chunks_delayed += 1
            # The delay is looked up again at each switch: heal() releases held chunks.
            while (wait := arrived + proxy.latency_ms / 1000 - loop.time()) > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proxy.changed(), wait)
            if not chunk:
                while direction in _DROPS[proxy.fault]:
                    await proxy.changed()
                return
            if direction in _DROPS[proxy.fault]:
                proxy.counters.bytes_dropped += len(chunk)
                continue
            try:
                dst.write(chunk)
                await dst.drain()  # back-pressure: a slow reader slows its sender
            except OSError:
                return
            proxy.counters.bytes_forwarded += len(chunk)


class Proxy:
    """A TCP proxy to ``upstream_host:upstream_port`` listening on loopback.

    ``listen_port=0`` picks a free port (see ``port`` after ``start``). Use as
    ``async with Proxy(host, port) as proxy:`` or call ``start`` and ``stop``.
    """

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        listen_port: int = 0,
        *,
        connect_timeout: float = 2.0,
        stop_timeout: float = 2.0,
    ) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.listen_port = listen_port
        self.connect_timeout = connect_timeout
        """Seconds to reach the server for a new client before closing that client."""
        self.stop_timeout = stop_timeout
        """Seconds ``stop`` waits for connection handlers once it has cancelled them."""
        self.counters = Counters()
        self.fault = Fault.PASS
        self.latency_ms = 0.0
        """Delay per chunk and direction now in force (0 unless ``Fault.LATENCY``)."""
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._handlers: set[asyncio.Task[object]] = set()
        self._changed = asyncio.Event()

    @property
    def port(self) -> int:
        """The port the proxy listens on (only once started)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the proxy is not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        """The ``redis://`` URL that reaches the server through the proxy."""
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        """Listen on ``127.0.0.1:listen_port``."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.listen_port)

    async def stop(self) -> None:
        """Stop listening, reset every connection and wait (bounded) for the handlers."""
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            link.abort()
        for task in self._handlers:
            task.cancel()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=self.stop_timeout)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), self.stop_timeout)
            self._server = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # The faults.

    def pass_(self) -> None:
        """Forward everything unchanged (lifts any fault)."""
        self._switch(Fault.PASS)

    def heal(self) -> None:
        """The same as ``pass_``: the partition is over."""
        self.pass_()

    def latency(self, ms: float) -> None:
        """Hold every chunk ``ms`` milliseconds in each direction."""
        self._switch(Fault.LATENCY, ms)

    def blackhole(self) -> None:
        """Read and drop everything both ways: clients wait until they time out."""
        self._switch(Fault.BLACKHOLE)

    def reset(self) -> None:
        """Abort every open connection with an RST, and every new one until lifted."""
        self._switch(Fault.RESET)
        for link in list(self._links):
            link.abort()
            self.counters.reset += 1

    def half_open(self) -> None:
        """Forward client → server and drop server → client: replies are lost."""
        self._switch(Fault.HALF_OPEN)

    async def changed(self) -> None:
        """Return at the next fault switch."""
        await self._changed.wait()

    def _switch(self, fault: Fault, latency_ms: float = 0.0) -> None:
        self.fault = fault
        self.latency_ms = latency_ms
        self.counters.switched[fault.value] = self.counters.switched.get(fault.value, 0) + 1
        # Wake every waiter of the old event; later waiters get the new one.
        self._changed.set()
        self._changed = asyncio.Event()

    def _resetting(self) -> bool:
        return self.fault is Fault.RESET

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Handle one accepted client connection until it closes or ``stop`` cancels it."""
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._handle(reader, writer)
        except asyncio.CancelledError:
            # Only stop() cancels a handler; asyncio (3.11) would log one that ends
            # cancelled as an error of the server, so it ends normally instead.
            _abort(writer)
        finally:
            self._handlers.discard(task)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.counters.accepted += 1
        if self._resetting():
            self.counters.reset += 1
            _abort(writer)
            return
        try:
            upstream = await asyncio.wait_for(
                asyncio.open_connection(self.upstream_host, self.upstream_port),
                self.connect_timeout,
            )
        except (OSError, TimeoutError):
            self.counters.upstream_failed += 1
            _abort(writer)
            return
        link = _Link(self, (reader, writer), upstream)
        if self._resetting():  # switched on while we were connecting
            self.counters.reset += 1
            link.abort()
            return
        self._links.add(link)
        try:
            await link.run()
        finally:
            self._links.discard(link)
