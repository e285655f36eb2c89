"""Export throughput: documents per second written to a folder by ``patchlog export``.

Usage: python benchmarks/export.py [--docs N] [--lines N] [--patches N] [--rounds N]

Starts an embedded server in a temporary folder (AOF ``everysec``: only the seeding is
faster for it) and builds the log through the real pipeline, a normalize and an execute
worker running in this process: ``--docs`` documents of ``--lines`` lines, then
``--patches`` waves of one 3-op patch (an insert, a replace and a delete at random
lines) per document, each on the head. Then it times ``export`` into a new folder: the
in-process pass (``export_documents``: read every revision, fold every document, check
every hash, write every file) over ``--rounds`` runs, and the command itself once
(``patchlog export``, interpreter start-up included); and, for comparison, a projector
catching up from zero into an empty folder (every file fsynced, then its checkpoint).
Prints seconds, documents per second and revisions per second, and how much of an
export was writing the files (on a disk shared with busy neighbours, that part varies
most).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from patchlog.consumers.execute import ExecuteStage
from patchlog.consumers.normalize import NormalizeStage
from patchlog.consumers.projector import Projector
from patchlog.consumers.runner import Runner
from patchlog.ops.config import settings_env
from patchlog.ops.export import ExportSummary, export_documents
from patchlog.ops.logs import configure_logging
from patchlog.ops.randomops import ops_json, spread_ops
from patchlog.streams.connection import connect
from patchlog.streams.log import read_heads
from patchlog.streams.schema import Insert
from patchlog.streams.scripts import load
from patchlog.streams.server import EmbeddedServer, free_port
from patchlog.streams.settings import Fsync, Settings

_CHUNK = 2000  # XADDs per pipeline


def _stages(redis: Redis, settings: Settings) -> list[Runner]:
    """A normalize and an execute runner in this process."""
    scripts = load(redis)
    normalize = NormalizeStage(redis, settings, scripts)
    execute = ExecuteStage(redis, settings, scripts)
    trims = (settings.keys.normalized,)
    return [
        Runner(redis, settings, scripts, normalize, "n"),
        Runner(redis, settings, scripts, execute, "e", trims=trims),
    ]


async def _decided(redis: Redis, settings: Settings, count: int) -> None:
    """Wait until ``count`` patches have their outcome (bounded: 10 minutes)."""
    deadline = time.monotonic() + 600
    while await redis.xlen(settings.keys.outcomes) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the pipeline did not decide {count} patches in time")
        await asyncio.sleep(0.05)


async def _submit(redis: Redis, settings: Settings, entries: list[dict[str, str]]) -> None:
    for start in range(0, len(entries), _CHUNK):
        async with redis.pipeline(transaction=False) as pipe:
            for fields in entries[start : start + _CHUNK]:
                pipe.xadd(settings.keys.patches, fields)  # type: ignore[arg-type]
            await pipe.execute()


async def build_log(
    redis: Redis, settings: Settings, docs: int, lines: int, waves: int, rng: random.Random
) -> None:
    """The documents and their patches, through the pipeline."""
    names = [f"bench/doc-{i:05d}.txt" for i in range(docs)]
    seed = [
        {
            "doc": doc,
            "base": "0",
            "ops": ops_json([Insert(at=1, lines=tuple(f"{doc} line {n}" for n in range(lines)))]),
        }
        for doc in names
    ]
    stages = _stages(redis, settings)
    running = [asyncio.create_task(stage.run()) for stage in stages]
    try:
        await _submit(redis, settings, seed)
        await _decided(redis, settings, docs)
        for wave in range(waves):
            heads = await read_heads(redis, settings.keys, names)
            patches = [
                {
                    "doc": doc,
                    "base": str(heads[doc].rev),
                    "ops": ops_json(spread_ops(rng, heads[doc].lines, wave * docs + i)),
                }
                for i, doc in enumerate(names)
            ]
            await _submit(redis, settings, patches)
            await _decided(redis, settings, docs * (wave + 2))
    finally:
        for stage in stages:
            stage.stop()
        await asyncio.gather(*running)


async def time_export(redis: Redis, settings: Settings, folder: Path) -> ExportSummary:
    """One in-process export into ``folder``."""
    return await export_documents(redis, settings.keys, folder)


async def time_projector(redis: Redis, settings: Settings, folder: Path) -> float:
    """Seconds for a projector to catch up from zero into an empty ``folder``."""
    started = time.perf_counter()
    projector = Projector(redis, settings.keys, folder, "bench", block_ms=100)
    await projector.open()
    try:
        await projector.run(asyncio.Event(), burst=True)
    finally:
        projector.close()
    return time.perf_counter() - started


def _row(label: str, seconds: float, docs: int, revisions: int) -> str:
    return f"{label:<40} {seconds:>8.2f} s {docs / seconds:>12,.0f} {revisions / seconds:>14,.0f}"


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="patchlog-bench-export-") as tmp:
        root = Path(tmp)
        server = EmbeddedServer(root / "server", port=free_port(), fsync=Fsync.EVERYSEC)
        await server.start()
        try:
            settings = Settings(redis_url=server.url, namespace="bench", batch=512)
            redis = connect(settings, server.url, block_ms=settings.block_ms)
            try:
                started = time.perf_counter()
                await build_log(
                    redis, settings, args.docs, args.lines, args.patches, random.Random(2026)
                )
                built = time.perf_counter() - started
                revisions: Any = await redis.xlen(settings.keys.revisions)
                print(
                    f"log: {args.docs:,} documents of {args.lines} lines, {revisions:,} "
                    f"revisions (built through the pipeline in {built:.1f} s)"
                )
                print(f"{'case':<40} {'seconds':>10} {'documents/s':>12} {'revisions/s':>14}")
                runs = [
                    await time_export(redis, settings, root / f"export-{n}")
                    for n in range(args.rounds)
                ]
                docs, revs = runs[0].documents, runs[0].revisions
                seconds = statistics.median(r.seconds for r in runs)
                writing = statistics.median(r.write_seconds for r in runs)
                label = f"export, in process (median of {args.rounds})"
                print(_row(label, seconds, docs, revs))
                print(f"{'  of which writing the files':<40} {writing:>8.2f} s")

                env = {k: v for k, v in os.environ.items() if not k.startswith("PATCHLOG_")}
                env.update(settings_env(settings))
                command = [sys.executable, "-m", "patchlog", "export", str(root / "cli")]
                started = time.perf_counter()
                subprocess.run(command, env=env, check=True, capture_output=True)  # noqa: S603, ASYNC221
                seconds = time.perf_counter() - started
                print(_row("patchlog export (whole command)", seconds, docs, revs))

                seconds = await time_projector(redis, settings, root / "projector")
                print(_row("projector catch-up from zero (fsync)", seconds, docs, revs))
                print(f"target: export of {args.docs:,} documents under 5 s")
            finally:
                await redis.aclose()
        finally:
            await server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--docs", type=int, default=5000, help="documents")
    parser.add_argument("--lines", type=int, default=100, help="lines per document")
    parser.add_argument("--patches", type=int, default=4, help="patches per document")
    parser.add_argument("--rounds", type=int, default=3, help="timed in-process exports")
    args = parser.parse_args()
    configure_logging(json=False, level="warning")  # the stages' per-patch lines cost time
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
