"""``patchlog up``: the embedded server (unless a URL is given) and the stage processes,
restarted if they die, stopped cleanly on Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from pathlib import Path

import structlog

from patchlog.consumers.backoff import Backoff
from patchlog.ops.config import ENV_PREFIX, settings_env
from patchlog.streams.keys import EXECUTE, NORMALIZE
from patchlog.streams.server import EmbeddedServer, die_with_parent
from patchlog.streams.settings import Settings

__all__ = ["Supervisor", "WorkerProcess"]

log = structlog.get_logger("patchlog.up")


class WorkerProcess:
    """One stage process with a stable consumer name (its slot)."""

    def __init__(
        self,
        stage: str,
        slot: int,
        url: str,
        metrics_port: int,
        env: dict[str, str],
        log_path: Path | None = None,
    ):
        self.stage = stage
        self.name = f"{stage}-{slot}"
        self.url = url
        self.metrics_port = metrics_port
        self.env = env
        self.log_path = log_path
        """Where the process's output goes (appended); ``None``: the supervisor's."""
        self.process: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self.started = 0.0

    async def start(self) -> None:
        """Spawn the process."""
        env = dict(self.env)
        env["PATCHLOG_REDIS_URL"] = self.url
        if self.metrics_port:
            env["PATCHLOG_METRICS_PORT"] = str(self.metrics_port)
        output = None if self.log_path is None else self.log_path.open("ab")
        try:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "patchlog.ops.cli", "worker", self.stage, "--name", self.name,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                start_new_session=True,  # Ctrl-C reaches the supervisor, which stops us in order
                preexec_fn=die_with_parent,
            )  # fmt: skip
        finally:
            if output is not None:
                output.close()  # the child holds its own descriptor
        self.started = time.monotonic()

    @property
    def alive(self) -> bool:
        """Whether the process runs."""
        return self.process is not None and self.process.returncode is None

    def signal(self, sig: int) -> None:
        """Send ``sig`` if the process runs."""
        if self.alive and self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)

    async def wait(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` s for the process to exit; its status or ``None``."""
        if self.process is None:
            return None
        try:
            return await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            return None


class Supervisor:
    """Runs the pipeline: server (optional) plus N normalize and M execute workers."""

    def __init__(
        self,
        settings: Settings,
        *,
        normalize: int = 1,
        execute: int = 1,
        metrics_base: int = 0,
        worker_log: Path | None = None,
    ) -> None:
        self.settings = settings
        self.server: EmbeddedServer | None = None
        if settings.redis_url is None:
            self.server = EmbeddedServer(
                Path(settings.data_dir),
                host=settings.host,
                port=settings.port,
                fsync=settings.fsync,
                aof_rewrite_min_mb=settings.aof_rewrite_min_mb,
            )
        self.url = settings.redis_url or (self.server.url if self.server else "")
        # The workers get this process's whole effective settings (environment and
        # flags), not just what happens to be in the environment.
        env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
        env.update(settings_env(settings))
        env.pop(ENV_PREFIX + "METRICS_PORT", None)  # each worker gets its own, or none
        self.workers: list[WorkerProcess] = []
        port = metrics_base
        for stage, count in ((NORMALIZE, normalize), (EXECUTE, execute)):
            for slot in range(1, count + 1):
                self.workers.append(
                    WorkerProcess(stage, slot, self.url, port, env, log_path=worker_log)
                )
                port = port + 1 if port else 0
        self._stop = asyncio.Event()
        self.backoff = Backoff(base=0.5, cap=10.0)

    async def start(self) -> None:
        """Start the server (if embedded) and every worker."""
        if self.server is not None:
            await self.server.start()
        for worker in self.workers:
            await worker.start()

    def stop(self) -> None:
        """Ask ``watch`` to return."""
        self._stop.set()

    async def watch(self) -> None:
        """Restart workers that die, until ``stop``."""
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 0.5)
            for worker in self.workers:
                if worker.alive or self._stop.is_set() or worker.process is None:
                    continue
                status = worker.process.returncode
                ran = time.monotonic() - worker.started
                if ran > 60:
                    worker.restarts = 0
                worker.restarts += 1
                delay = self.backoff.compute(worker.restarts)
                log.warning(
                    "worker exited; restarting", worker=worker.name, status=status, delay=delay
                )
                await asyncio.sleep(delay)
                await worker.start()
            process = self.server.process if self.server is not None else None
            if process is not None and process.returncode is not None:
                log.error("the embedded server exited", status=process.returncode)
                self._stop.set()

    async def shutdown(self) -> None:
        """SIGTERM the workers, wait for them (bounded), then stop the server."""
        for worker in self.workers:
            worker.signal(signal.SIGTERM)
        grace = self.settings.shutdown_grace + 2
        for worker in self.workers:
            if await worker.wait(grace) is None:
                log.warning("worker did not stop in time; killing it", worker=worker.name)
                worker.signal(signal.SIGKILL)
                await worker.wait(5)
        if self.server is not None:
            await self.server.stop()
