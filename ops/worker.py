"""One stage process: connect, check the server, run the stage until told to stop.

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

import structlog

from patchlog.consumers.execute import ExecuteStage
from patchlog.consumers.normalize import NormalizeStage
from patchlog.consumers.runner import Runner, Stage
from patchlog.ops.gcpolicy import collect_every, quiet_gc
from patchlog.ops.metrics import serve_metrics
from patchlog.streams.connection import check_server, connect
from patchlog.streams.errors import ServerError
from patchlog.streams.keys import EXECUTE, NORMALIZE
from patchlog.streams.scripts import load
from patchlog.streams.settings import Settings

__all__ = ["STAGES", "default_consumer", "run_worker"]

STAGES = (NORMALIZE, EXECUTE)
log = structlog.get_logger("patchlog.worker")
_FULL_GC_EVERY = 30.0  # seconds


def default_consumer(stage: str) -> str:
    """A consumer name for a worker started by hand: stage, host and pid."""
    return f"{stage}-{socket.gethostname()}-{os.getpid()}"


async def run_worker(
    settings: Settings, url: str, stage_name: str, consumer: str, *, burst: bool = False
) -> int:
    """Run one stage worker; returns the process exit status (0 after a clean stop)."""
    if stage_name not in STAGES:
        raise ValueError(f"unknown stage {stage_name!r}; choose from {', '.join(STAGES)}")
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals > 1:
            os._exit(130)  # a second signal: exit at once; pending entries are claimed later
        stop.set()

    # Installed first, so that a signal during start-up still means a clean stop.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    redis = connect(settings, url, name=f"patchlog-{consumer}", block_ms=settings.block_ms)
    try:
        info = await check_server(redis)
        scripts = load(redis)
        stage: Stage
        if stage_name == NORMALIZE:
            stage = NormalizeStage(redis, settings, scripts)
            trims: tuple[str, ...] = ()
        else:
            stage = ExecuteStage(redis, settings, scripts)
            trims = (settings.keys.normalized,)
        aged = ((settings.keys.outcomes, settings.idempotency_window),)
        runner = Runner(
            redis, settings, scripts, stage, consumer, drain=burst, trims=trims, aged=aged
        )
        if settings.metrics_port:
            try:
                serve_metrics(settings.metrics_port)
            except OSError as err:  # the pipeline matters more than its metrics
                log.exception("cannot serve metrics", port=settings.metrics_port, error=str(err))
        structlog.contextvars.bind_contextvars(stage=stage_name, consumer=consumer)
        log.info("connected", server=info.product, version=".".join(map(str, info.version)))
        with quiet_gc():
            collector = asyncio.create_task(collect_every(_FULL_GC_EVERY))
            try:
                return await _run_until_stopped(runner, stop, settings.shutdown_grace)
            finally:
                collector.cancel()
    except ServerError as err:
        log.exception("server unusable", error=str(err))
        return 2
    finally:
        with contextlib.suppress(Exception):
            await redis.aclose()


async def _run_until_stopped(runner: Runner, stop: asyncio.Event, grace: float) -> int:
    task = asyncio.create_task(runner.run())
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait([task, stopped], return_when=asyncio.FIRST_COMPLETED)
    runner.stop()
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
    if error is not None:
        log.error("worker failed", error=f"{type(error).__name__}: {error}", exc_info=error)
        return 1
    return 0
