"""``patchlog up``: the embedded server (unless a URL is given) and the stage processes
(and a projector when ``projector_dir`` is set), restarted if they die, stopped cleanly
on Ctrl-C.

The server is checked once before any worker starts (``check_once``). An embedded
server that dies is restarted from its AOF with backoff while the workers wait and
reconnect by themselves; after ``SERVER_ATTEMPTS`` failed restarts ``watch`` raises
``ServerError``. A stage whose worker exits ``GIVE_UP_AFTER`` times in a row within
``FAST_EXIT`` seconds of starting is failing at start, not crashing now and then:
``watch`` gives up and returns its exit status instead of restarting it forever.

With ``metrics_port`` the workers write their metrics to a folder of this run and the
supervisor serves their sum and the pipeline's state as one scrape target
(``ops.metrics.PipelineMetrics``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import structlog

from patchlog.consumers.backoff import Backoff
from patchlog.ops.config import ENV_PREFIX, settings_env
from patchlog.ops.metrics import MULTIPROC_ENV, PipelineMetrics, WorkerState
from patchlog.ops.partitioning import check_partitions
from patchlog.ops.pulse import Pulse, PulseSample, pulse_text
from patchlog.ops.worker import HEALTH, PROJECTOR, check_once
from patchlog.streams.connection import ServerInfo, connect
from patchlog.streams.errors import DataDirLocked, PatchlogError, ServerError
from patchlog.streams.keys import EXECUTE, NORMALIZE
from patchlog.streams.server import EmbeddedServer, die_with_parent
from patchlog.streams.settings import Settings

__all__ = ["FAST_EXIT", "GIVE_UP_AFTER", "SERVER_ATTEMPTS", "Supervisor", "WorkerProcess"]

log = structlog.get_logger("patchlog.up")

FAST_EXIT = 5.0
"""Seconds: a worker that exits sooner after its start failed at start."""
GIVE_UP_AFTER = 3
"""Failures at start in a row after which a stage is given up."""
SERVER_ATTEMPTS = 5
"""Restarts of the embedded server tried (with backoff) before ``up`` gives up."""
PROGRESS_EVERY = 10.0
"""Seconds between two progress lines of ``up`` on a terminal."""

_SERVER_STEADY = 60.0  # seconds up after which an embedded server's exits count afresh


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
        args: tuple[str, ...] | None = None,
    ):
        self.stage = stage
        self.name = f"{stage}-{slot}"
        self.args = ("--name", self.name) if args is None else args
        """What follows ``patchlog worker STAGE`` (by default the consumer name)."""
        self.url = url
        self.metrics_port = metrics_port
        self.env = env
        self.log_path = log_path
        """Where the process's output goes (appended); ``None``: the supervisor's."""
        self.process: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self.exits = 0
        """Times it exited since the supervisor started (``restarts`` is for backoff)."""
        self.fast_exits = 0
        """Exits in a row within ``FAST_EXIT`` seconds of starting."""
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
                sys.executable, "-m", "patchlog.ops.cli", "worker", self.stage, *self.args,
                "--supervised",  # the supervisor checked the server and warned once for all
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
    """Runs the pipeline: server (optional) plus N normalize and M execute workers, and
    a projector keeping ``settings.projector_dir`` when it is set."""

    def __init__(
        self,
        settings: Settings,
        *,
        normalize: int = 1,
        execute: int = 1,
        metrics_base: int = 0,
        metrics_port: int = 0,
        worker_log: Path | None = None,
        url_source: str | None = None,
        progress: bool = False,
    ) -> None:
        """``url_source`` says where ``settings.redis_url`` came from (``--redis-url``,
        ``PATCHLOG_REDIS_URL``, ``REDIS_URL``), for messages. ``metrics_port``: serve
        the whole pipeline's metrics there; ``metrics_base``: each stage worker serves
        its own, on consecutive ports from there (one or the other). ``progress``: print
        a progress line every ``PROGRESS_EVERY`` seconds (for a terminal)."""
        if metrics_base and metrics_port:
            raise ValueError("metrics_base and metrics_port exclude each other")
        self.progress = progress
        self._pulse: Pulse | None = None
        self._last_pulse: PulseSample | None = None
        self._next_progress = 0.0
        self.settings = settings
        self.metrics_port = metrics_port
        self.metrics: PipelineMetrics | None = None
        self.metrics_dir: Path | None = None
        self.server_restarts = 0
        self.url_source = url_source
        self.worker_log = worker_log
        self.info: ServerInfo | None = None
        """What ``start`` learned about the server."""
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
        # On a terminal the progress line says how it goes and the workers only what is
        # wrong, unless a level was asked for.
        if progress and ENV_PREFIX + "LOG_LEVEL" not in os.environ:
            env[ENV_PREFIX + "LOG_LEVEL"] = "warning"
        env.pop(MULTIPROC_ENV, None)  # set by start when this supervisor serves the sum
        self._env = env
        if settings.partitions > 1 and execute > settings.partitions:
            log.warning(
                "more execute workers than partitions: the extra ones stand by",
                execute=execute,
                partitions=settings.partitions,
            )
        self.workers: list[WorkerProcess] = []
        port = metrics_base
        for stage, count in ((NORMALIZE, normalize), (EXECUTE, execute)):
            for slot in range(1, count + 1):
                self.workers.append(
                    WorkerProcess(stage, slot, self.url, port, env, log_path=worker_log)
                )
                port = port + 1 if port else 0
        self.workers.append(
            WorkerProcess(HEALTH, 1, self.url, 0, env, log_path=worker_log, args=())
        )
        if settings.projector_dir:
            # Absolute: the folder a worker keeps must not depend on its working folder.
            folder = str(Path(settings.projector_dir).absolute())
            self.workers.append(
                WorkerProcess(
                    PROJECTOR, 1, self.url, 0, env, log_path=worker_log, args=("--dir", folder)
                )
            )
        self._stop = asyncio.Event()
        self.backoff = Backoff(base=0.5, cap=10.0)
        # Sooner for the server: the pipeline waits for it, and a restart from the AOF
        # either works at once or fails the same way each time.
        self.server_backoff = Backoff(base=0.25, cap=5.0)
        self._server_failures = 0
        self._server_started = 0.0

    async def start(self) -> None:
        """Start the server (if embedded), check it once, then start every worker.

        Raises ``DataDirLocked`` if another process uses the data folder, and
        ``ServerError`` naming the URL and its source if the server cannot be started,
        reached or used, and ``MetricsPortBusy`` if ``metrics_port`` cannot be listened
        on; no worker is started then (and an embedded server is stopped).
        """
        if self.metrics_port:
            await self._serve_metrics()
        try:
            if self.server is not None:
                await self.server.start()
                self._server_started = time.monotonic()
        except BaseException:
            await self._close_metrics()
            raise
        try:
            redis = connect(self.settings, self.url, name="patchlog-up")
            try:
                # The warning about a URL server's persistence is logged here, once,
                # not by every worker; the embedded server is configured by us.
                self.info = await check_once(
                    redis, self.url, self.url_source, persistence=self.server is None
                )
                await check_partitions(redis, self.settings)
            finally:
                await redis.aclose()
        except BaseException:
            if self.server is not None:
                await self.server.stop()
            await self._close_metrics()
            raise
        if self.metrics is not None:
            self.metrics.connect(self.url)
        for worker in self.workers:
            await worker.start()

    async def _serve_metrics(self) -> None:
        """Listen on ``metrics_port`` (before anything starts: a port in use fails
        ``up`` at once) and have the workers write their metrics to a fresh folder."""
        self.metrics_dir = Path(tempfile.mkdtemp(prefix="patchlog-metrics-"))
        self.metrics = PipelineMetrics(
            self.settings,
            self.metrics_dir,
            workers=lambda: [WorkerState(w.stage, w.alive, w.exits) for w in self.workers],
            server_restarts=lambda: self.server_restarts,
        )
        try:
            await self.metrics.listen(self.metrics_port, self.settings.http_host)
        except BaseException:
            await self._close_metrics()
            raise
        self._env[MULTIPROC_ENV] = str(self.metrics_dir)
        log.info("serving metrics", port=self.metrics_port, folder=str(self.metrics_dir))

    async def _close_metrics(self) -> None:
        """Stop serving metrics and remove the workers' metric files."""
        if self.metrics is not None:
            await self.metrics.close()
            self.metrics = None
        if self.metrics_dir is not None:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
            self.metrics_dir = None

    def stop(self) -> None:
        """Ask ``watch`` to return."""
        self._stop.set()

    async def _pause(self, seconds: float) -> bool:
        """Sleep ``seconds`` unless stopped meanwhile; whether ``stop`` was called."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)
        return self._stop.is_set()

    async def watch(self) -> int:
        """Restart the embedded server and workers that die, until ``stop``; 0 then.

        Returns a stage's own non-zero exit status when its worker failed at start
        ``GIVE_UP_AFTER`` times in a row (it logs why). Raises ``ServerError`` if the
        embedded server cannot be restarted in ``SERVER_ATTEMPTS`` tries.
        """
        while not await self._pause(0.5):
            await self._progress_line()
            process = self.server.process if self.server is not None else None
            if process is not None and process.returncode is not None:
                await self._restart_server(process.returncode)
            for worker in self.workers:
                if worker.alive or self._stop.is_set() or worker.process is None:
                    continue
                status = worker.process.returncode
                assert status is not None  # not alive: it exited
                worker.exits += 1
                if self.metrics is not None:
                    self.metrics.retire(worker.process.pid)  # its counts stay in the sum
                ran = time.monotonic() - worker.started
                if ran > 60:
                    worker.restarts = 0
                worker.fast_exits = worker.fast_exits + 1 if ran < FAST_EXIT else 0
                if worker.fast_exits >= GIVE_UP_AFTER:
                    output = f"its output is in {self.worker_log}" if self.worker_log else (
                        "its output above says why")  # fmt: skip
                    log.error(
                        f"stage {worker.stage} keeps failing at start: {worker.name} exited "
                        f"{worker.fast_exits} times in a row within {FAST_EXIT:.0f} s of "
                        f"starting, last with status {status}; giving up ({output})",
                        worker=worker.name,
                        status=status,
                    )
                    return status if status > 0 else 1  # a signal's negative status
                worker.restarts += 1
                delay = self.backoff.compute(worker.restarts)
                log.warning(
                    "worker exited; restarting", worker=worker.name, status=status, delay=delay
                )
                if await self._pause(delay):
                    break
                await worker.start()
        return 0

    async def _progress_line(self) -> None:
        """Every ``PROGRESS_EVERY`` seconds with ``progress`` on, one line on stderr:
        committed/s, backlog, rejections by code (``ops.pulse``); never fails ``up``."""
        if not self.progress or time.monotonic() < self._next_progress:
            return
        self._next_progress = time.monotonic() + PROGRESS_EVERY
        try:
            if self._pulse is None:
                redis = connect(self.settings, self.url, name="patchlog-up-progress")
                self._pulse = Pulse(redis, self.settings.keys)
            sample = await asyncio.wait_for(self._pulse.sample(time.monotonic()), 5)
        except (TimeoutError, PatchlogError):
            return  # the server is away; the workers and the prober say so
        if self._last_pulse is not None:
            print(pulse_text(self._last_pulse, sample), file=sys.stderr, flush=True)
        self._last_pulse = sample

    async def _restart_server(self, status: int) -> None:
        """Start the embedded server again from its AOF, with backoff; the workers
        reconnect by themselves. Raises ``ServerError`` after ``SERVER_ATTEMPTS``
        failures in a row (a server that ran ``_SERVER_STEADY`` s starts a new count)."""
        server = self.server
        assert server is not None
        if time.monotonic() - self._server_started > _SERVER_STEADY:
            self._server_failures = 0
        last = f"it exited with status {status}"
        while True:
            self._server_failures += 1
            if self._server_failures > SERVER_ATTEMPTS:
                log_named = str(server.log_path) in last
                raise ServerError(
                    f"the embedded server at {server.url} could not be restarted "
                    f"({SERVER_ATTEMPTS} attempts; last: {last})"
                    + ("" if log_named else f"; its log: {server.log_path}")
                )
            delay = self.server_backoff.compute(self._server_failures)
            log.warning(
                "the embedded server exited; restarting it from its AOF",
                status=status,
                attempt=self._server_failures,
                delay=round(delay, 2),
            )
            if await self._pause(delay):
                return
            try:
                # A restart that timed out may have left a server loading: not two.
                await server.stop(unlock=False)
                await server.start()
            except DataDirLocked:
                raise  # not ours any more: restarting cannot help
            except ServerError as err:
                last = str(err)
                log.warning("the embedded server did not restart", error=last)
                continue
            self._server_started = time.monotonic()
            self.server_restarts += 1
            log.info("the embedded server is back", url=server.url)
            return

    async def shutdown(self) -> None:
        """SIGTERM the workers, wait for them (bounded), then stop the server."""
        if self._pulse is not None:
            with contextlib.suppress(Exception):
                await self._pulse.redis.aclose()
            self._pulse = None
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
        await self._close_metrics()
