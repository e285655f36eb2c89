"""One stage process: connect, check the server once, run the stage until told to stop.
The projector (``run_projector``) runs the same way, keeping a folder instead of
consuming a group.

The check (``check_once``, also run by ``patchlog up`` before it starts any worker)
fails at once, naming the URL and where it came from, if the server cannot be reached or
refuses patchlog, and logs one warning if the server's persistence is weaker than
patchlog's own server (AOF on, ``appendfsync always``).

SIGTERM or SIGINT: stop reading, finish and acknowledge the batch in hand, exit 0 within
``shutdown_grace`` seconds; a second signal exits at once (status 130).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import traceback
from collections.abc import Callable
from pathlib import Path

import structlog
from redis.asyncio import Redis

from patchlog.consumers.execute import ExecuteStage
from patchlog.consumers.normalize import NormalizeStage
from patchlog.consumers.partitions import Partitioned
from patchlog.consumers.projector import Projector
from patchlog.consumers.runner import Runner, Stage
from patchlog.ops.config import redact
from patchlog.ops.gcpolicy import collect_every, quiet_gc
from patchlog.ops.health import run_prober
from patchlog.ops.metrics import serve_metrics
from patchlog.ops.partitioning import check_partitions
from patchlog.streams.connection import ServerInfo, check_server, connect, read_persistence
from patchlog.streams.errors import PatchlogError, ServerError, ServerRefused, ServerUnavailable
from patchlog.streams.keys import EXECUTE, NORMALIZE
from patchlog.streams.scripts import load
from patchlog.streams.settings import Settings

__all__ = [
    "PROJECTOR",
    "STAGES",
    "check_once",
    "default_consumer",
    "default_projector_name",
    "describe_url",
    "run_projector",
    "run_worker",
]

STAGES = (NORMALIZE, EXECUTE)
PROJECTOR = "projector"
HEALTH = "health"
"""The worker that keeps a folder of files equal to the documents."""
log = structlog.get_logger("patchlog.worker")
_FULL_GC_EVERY = 30.0  # seconds


def default_consumer(stage: str) -> str:
    """A consumer name for a worker started by hand: stage, host and pid."""
    return f"{stage}-{socket.gethostname()}-{os.getpid()}"


def default_projector_name(folder: str | Path) -> str:
    """A projector's checkpoint name when none is given: host and absolute folder, so
    that each folder has its own position."""
    return f"{socket.gethostname()}:{Path(folder).absolute()}"


def describe_url(url: str, source: str | None) -> str:
    """``url`` (its password hidden) and where it came from, for messages: ``source`` is
    ``--redis-url``, ``PATCHLOG_REDIS_URL``, ``REDIS_URL`` or ``None`` (the embedded
    server's address, from the host and port settings)."""
    where = (
        f"from {source}"
        if source
        else "the embedded server's address: no --redis-url, PATCHLOG_REDIS_URL or REDIS_URL"
    )
    return f"{redact(url)} ({where})"


async def check_once(
    redis: Redis, url: str, source: str | None, *, persistence: bool = True
) -> ServerInfo:
    """Check the server at ``url`` before any work: reachable, recent enough, never
    evicting; with ``persistence``, log one warning if a kill -9 of it or a machine
    crash could lose acknowledged submissions (see ``Persistence.risk``).

    Raises ``ServerError`` (``ServerRefused`` for an unfit server) whose message names
    the URL and ``source`` (as in ``describe_url``).
    """
    where = describe_url(url, source)
    try:
        info = await check_server(redis)
        found = await read_persistence(redis) if persistence else None
    except ServerRefused as err:
        raise ServerRefused(f"{err} (server {where})") from err
    except ServerError as err:
        reason = str(err.__cause__) if isinstance(err.__cause__, ServerUnavailable) else str(err)
        raise ServerError(f"no server at {where}: {reason}") from err
    risk = found.risk() if found is not None else None
    if risk is not None:
        setting, loss = risk
        log.warning(
            "the server's persistence is weaker than patchlog's default "
            "(appendonly yes, appendfsync always)",
            setting=setting,
            loss=loss,
            server=redact(url),
        )
    return info


async def run_worker(
    settings: Settings,
    url: str,
    stage_name: str,
    consumer: str,
    *,
    burst: bool = False,
    source: str | None = None,
    warn: bool = True,
) -> int:
    """Run one stage worker; returns the process exit status (0 after a clean stop).

    ``source`` says where ``url`` came from (for messages); ``warn=False`` skips the
    persistence warning (``patchlog up`` reported it once for all its workers). Raises
    ``ServerError`` naming the URL if the server cannot be used at start; later
    transient failures are retried by the runner, and a ``PatchlogError`` that stops
    it (a permission refused, a key of the wrong type) is raised.
    """
    if stage_name not in STAGES:
        raise ValueError(f"unknown stage {stage_name!r}; choose from {', '.join(STAGES)}")
    # Installed first, so that a signal during start-up still means a clean stop.
    stop = _stop_on_signals()
    redis = connect(settings, url, name=f"patchlog-{consumer}", block_ms=settings.block_ms)
    try:
        info = await check_once(redis, url, source, persistence=warn)
        await check_partitions(redis, settings)
        scripts = load(redis)
        aged = ((settings.keys.outcomes, settings.idempotency_window),)
        service: Runner | Partitioned
        if stage_name == EXECUTE and settings.partitions > 1:
            service = Partitioned(redis, settings, scripts, consumer, drain=burst, aged=aged)
        else:
            stage: Stage
            if stage_name == NORMALIZE:
                stage = NormalizeStage(redis, settings, scripts)
                trims: tuple[str, ...] = ()
            else:
                stage = ExecuteStage(redis, settings, scripts)
                trims = (settings.keys.normalized,)
            # The ingress stream is the clients': kept for a while after it is processed.
            retained: tuple[tuple[str, float], ...] = ()
            if stage_name == NORMALIZE and settings.patches_retention > 0:
                retained = ((settings.keys.patches, settings.patches_retention),)
            service = Runner(
                redis,
                settings,
                scripts,
                stage,
                consumer,
                drain=burst,
                trims=trims,
                aged=aged,
                retained=retained,
            )
        if settings.metrics_port:
            try:
                serve_metrics(settings.metrics_port, settings.http_host)
            except OSError as err:  # the pipeline matters more than its metrics
                log.exception("cannot serve metrics", port=settings.metrics_port, error=str(err))
        structlog.contextvars.bind_contextvars(stage=stage_name, consumer=consumer)
        log.info("connected", server=info.product, version=".".join(map(str, info.version)))
        with quiet_gc():
            collector = asyncio.create_task(collect_every(_FULL_GC_EVERY))
            try:
                task = asyncio.create_task(service.run())
                return await _run_until_stopped(task, stop, settings.shutdown_grace, service.stop)
            finally:
                collector.cancel()
    finally:
        with contextlib.suppress(Exception):
            await redis.aclose()


async def run_projector(
    settings: Settings,
    url: str,
    folder: Path,
    name: str,
    *,
    burst: bool = False,
    source: str | None = None,
    warn: bool = True,
) -> int:
    """Run a projector keeping ``folder`` (checkpoint ``name``); returns the process exit
    status (0 after a clean stop, or with ``burst`` once it has caught up).

    SIGTERM or SIGINT: the round in hand is written (at most ``block_ms`` of waiting
    plus one round), then it exits 0. Raises ``ServerError`` naming the URL if the server
    cannot be used at start, ``FolderError`` if the folder cannot be (another projector
    keeps it, it cannot be written), ``VerifyFailed`` if the log does not fold to the
    hashes it records; transient server failures are retried.
    """
    stop = _stop_on_signals()
    redis = connect(settings, url, name=f"patchlog-{PROJECTOR}", block_ms=settings.block_ms)
    try:
        info = await check_once(redis, url, source, persistence=warn)
        projector = Projector(redis, settings.keys, folder, name, block_ms=settings.block_ms)
        await projector.open()
        try:
            structlog.contextvars.bind_contextvars(stage=PROJECTOR, consumer=name)
            log.info("connected", server=info.product, version=".".join(map(str, info.version)))
            with quiet_gc():
                collector = asyncio.create_task(collect_every(_FULL_GC_EVERY))
                try:
                    task = asyncio.create_task(projector.run(stop, burst=burst))
                    return await _run_until_stopped(task, stop, settings.shutdown_grace)
                finally:
                    collector.cancel()
        finally:
            projector.close()
    finally:
        with contextlib.suppress(Exception):
            await redis.aclose()


def _stop_on_signals() -> asyncio.Event:
    """An event set by the first SIGTERM or SIGINT; a second one exits at once (130)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals > 1:
            os._exit(130)  # a second signal: exit at once; pending entries are claimed later
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    return stop


async def _run_until_stopped(
    task: asyncio.Task[None],
    stop: asyncio.Event,
    grace: float,
    on_stop: Callable[[], None] = lambda: None,
) -> int:
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait([task, stopped], return_when=asyncio.FIRST_COMPLETED)
    on_stop()
    if not task.done():
        done, _ = await asyncio.wait([task], timeout=grace)
        if not done:
            stack = (
                "".join(traceback.format_stack(task.get_stack(limit=20)[-1]))
                if task.get_stack()
                else ""
            )
            log.warning(
                "shutdown grace ran out; cancelling the batch in hand", grace=grace, where=stack
            )
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return 1
    stopped.cancel()
    error = task.exception()
    if isinstance(error, PatchlogError):
        # Expected (a permission refused, a key of the wrong type): the CLI prints it as
        # one line with its documented status; a traceback would bury it.
        raise error
    if error is not None:
        log.error("worker failed", error=f"{type(error).__name__}: {error}", exc_info=error)
        return 1
    return 0


async def run_health(
    settings: Settings, url: str, *, source: str | None = None, warn: bool = True
) -> int:
    """Run the health prober (``ops.health``) until SIGTERM or SIGINT, serving
    ``/healthz`` and ``/readyz`` on ``health_port`` when set; returns the exit status.

    Raises ``ServerError`` naming the URL if the server refuses patchlog at start; an
    unreachable server is what it reports (``failing``), never a reason to stop.
    """
    stop = _stop_on_signals()
    redis = connect(settings, url, name=f"patchlog-{HEALTH}")
    try:
        structlog.contextvars.bind_contextvars(stage=HEALTH)
        try:
            await check_once(redis, url, source, persistence=warn)
        except ServerRefused:
            raise
        except ServerError as err:  # unreachable: that is what the prober reports
            log.warning("server unreachable at start; probing anyway", error=str(err))
        log.info("probing", every=settings.health_interval, port=settings.health_port or None)
        await run_prober(redis, settings, stop, port=settings.health_port)
        return 0
    finally:
        with contextlib.suppress(Exception):
            await redis.aclose()
