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

import structlog

from consumers.execute import ExecuteStage
from consumers.normalize import NormalizeStage
from consumers.runner import Runner, Stage
from ops.metrics import serve_metrics
from streams.connection import check_server, connect
from streams.errors import ServerError
from streams.keys import EXECUTE, NORMALIZE
from streams.scripts import load
from streams.settings import Settings

__all__ = ["STAGES", "default_consumer", "run_worker"]

STAGES = (NORMALIZE, EXECUTE)
log = structlog.get_logger("patchlog.worker")


def default_consumer(stage: str) -> str:
    """A consumer name for a worker started by hand: stage, host and pid."""
    return f"{stage}-{socket.gethostname()}-{os.getpid()}"


async def run_worker(
    settings: Settings, url: str, stage_name: str, consumer: str, *, burst: bool = False
) -> int:
    """Run one stage worker; returns the process exit status."""
    if stage_name not in STAGES:
        raise ValueError(f"unknown stage {stage_name!r}; choose from {', '.join(STAGES)}")
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
        runner = Runner(redis, settings, scripts, stage, consumer, drain=burst, trims=trims)
        if settings.metrics_port:
            serve_metrics(settings.metrics_port)
        structlog.contextvars.bind_contextvars(stage=stage_name, consumer=consumer)
        log.info("connected", server=info.product, version=".".join(map(str, info.version)))
        return await _run_until_signalled(runner, settings.shutdown_grace)
    except ServerError as err:
        log.error("server unusable", error=str(err))
        return 2
    finally:
        with contextlib.suppress(Exception):
            await redis.aclose()


async def _run_until_signalled(runner: Runner, grace: float) -> int:
    loop = asyncio.get_running_loop()
    signals = 0
    stopped_at: asyncio.Future[None] = loop.create_future()

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals > 1:
            os._exit(130)  # a second signal: exit at once, pending entries are claimed later
        runner.stop()
        if not stopped_at.done():
            stopped_at.set_result(None)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    task = asyncio.create_task(runner.run())
    await asyncio.wait([task, stopped_at], return_when=asyncio.FIRST_COMPLETED)
    if not task.done():
        try:
            await asyncio.wait_for(asyncio.shield(task), grace)
        except TimeoutError:
            log.warning("shutdown grace ran out; cancelling the batch in hand", grace=grace)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return 1
    task.result()
    return 0
