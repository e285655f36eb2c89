"""The integration tests' helpers, the one module they import them from: servers,
stages run in-process, a concurrent load, reading what the stages wrote, patchlog's
commands run as child processes, and documents compared with a folder."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from redis.asyncio import Redis

from patchlog.consumers.execute import ExecuteStage
from patchlog.consumers.normalize import NormalizeStage
from patchlog.consumers.runner import Runner
from patchlog.ops.randomops import single_op, stale_base
from patchlog.projections.load import load_content
from patchlog.projections.paths import doc_of
from patchlog.streams.client import Client
from patchlog.streams.codec import decode_event
from patchlog.streams.content import content_bytes
from patchlog.streams.errors import ServerError
from patchlog.streams.log import read_head, read_heads
from patchlog.streams.schema import IdRecord, Outcome
from patchlog.streams.scripts import Scripts
from patchlog.streams.server import EmbeddedServer, free_port, server_binary
from patchlog.streams.settings import Settings

__all__ = [
    "KINDS",
    "NAMED",
    "Cli",
    "binary_for",
    "by_src",
    "committed",
    "dedicated_server",
    "drain",
    "folder_documents",
    "free_port",
    "live_documents",
    "outcome",
    "outcomes",
    "own_outcome",
    "patchlog",
    "pipeline_load",
    "runners",
    "submit_load",
    "submit_named",
    "until",
]

KINDS = [k for k in os.environ.get("PATCHLOG_TEST_SERVERS", "valkey,redis").split(",") if k]
"""The server kinds the suite runs against."""


def binary_for(kind: str) -> Path:
    """The server binary of a kind; a missing one fails the run (it is no pass)."""
    if kind == "valkey":
        return server_binary()
    found = shutil.which("redis-server")
    if found is None:
        pytest.fail("redis-server is not installed (.ci/run installs Debian's redis-server)")
    return Path(found)


def runners(
    redis: Redis,
    settings: Settings,
    scripts: Scripts,
    *,
    normalize: int = 1,
    execute: int = 1,
    drain: bool = True,
) -> list[Runner]:
    """Runner objects for in-process stage workers with stable names."""
    out = [
        Runner(
            redis, settings, scripts, NormalizeStage(redis, settings, scripts), f"n{i}", drain=drain
        )
        for i in range(normalize)
    ]
    out += [
        Runner(
            redis,
            settings,
            scripts,
            ExecuteStage(redis, settings, scripts),
            f"e{i}",
            drain=drain,
            trims=(settings.keys.normalized,),
        )
        for i in range(execute)
    ]
    return out


async def drain(
    redis: Redis,
    settings: Settings,
    scripts: Scripts,
    *,
    normalize: int = 1,
    execute: int = 1,
    timeout: float = 120.0,
) -> list[Runner]:
    """Run normalize to completion, then execute to completion (bounded by ``timeout``)."""
    first = runners(redis, settings, scripts, normalize=normalize, execute=0)
    await asyncio.wait_for(asyncio.gather(*(r.run() for r in first)), timeout)
    second = runners(redis, settings, scripts, normalize=0, execute=execute)
    await asyncio.wait_for(asyncio.gather(*(r.run() for r in second)), timeout)
    return first + second


async def own_outcome(redis: Redis, settings: Settings, entry: Any, timeout: int = 5) -> IdRecord:
    """The outcome of one ingress entry (the reply of its XADD), waited for with the one
    blocking command any client uses."""
    key = settings.keys.entry_outcome(entry.decode() if isinstance(entry, bytes) else entry)
    raw: Any = await redis.blmove(key, key, timeout, "LEFT", "RIGHT")
    assert raw is not None, f"no outcome in {key} within {timeout} s"
    assert await redis.llen(key) == 1  # one answer, still there for other waiters
    return msgspec.json.decode(raw, type=IdRecord)


@contextlib.asynccontextmanager
async def dedicated_server(folder: Path, kind: str) -> AsyncIterator[EmbeddedServer]:
    """A server of ``kind`` for one test, to reconfigure freely; stopped whatever happens."""
    srv = EmbeddedServer(folder, port=free_port(), binary=binary_for(kind))
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


async def outcomes(redis: Redis, settings: Settings) -> list[Outcome]:
    """Every outcome entry, in stream order."""
    rows: Any = await redis.xrange(settings.keys.outcomes, "-", "+")
    return [decode_event(Outcome, fields) for _, fields in rows]


def by_src(rows: list[Outcome]) -> Counter[str]:
    """How many outcomes each ingress entry got."""
    return Counter(o.src for o in rows)


async def submit_load(
    redis: Redis,
    settings: Settings,
    *,
    submitters: int,
    patches: int,
    docs: int,
    seed: int,
    stale: float = 0.2,
    wait: bool = True,
) -> list[str]:
    """Submit ``patches`` one-op patches from ``submitters`` tasks; return every patch id.

    Each patch is based on the head the submitter just read, or (with probability
    ``stale``) a revision or three behind it, so rebases and conflicts happen. With
    ``wait`` each submitter waits for its patch's outcome before the next (closed loop).
    """
    client = Client(redis, settings.keys)
    names = [f"doc-{i}" for i in range(docs)]
    ids: list[str] = []
    quota = patches // submitters

    async def submitter(k: int) -> None:
        rng = random.Random(seed * 1000 + k)
        for n in range(quota):
            doc = rng.choice(names)
            head = await read_head(redis, settings.keys, doc)
            base = stale_base(rng, head.rev, share=stale)
            # on a stale base, only the first lines, which the older base most likely had
            length = head.lines if base == head.rev else min(head.lines, 2)
            op = single_op(rng, length, [f"s{k} p{n}"], insert=0.5, replace=0.3)
            submitted = await client.submit(doc, base, ops=[op], author=f"s{k}")
            ids.append(submitted.id)
            if wait:
                await client.wait(submitted, 60)

    await asyncio.gather(*(submitter(k) for k in range(submitters)))
    return ids


# -- patchlog's commands as child processes ---------------------------------------------


async def patchlog(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> tuple[int, str, str]:
    """Run ``python -m patchlog ARGS``; (status, stdout, stderr). It must end within
    ``timeout`` seconds (it is killed otherwise)."""
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith("PATCHLOG_") and k != "REDIS_URL"
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "patchlog", *args,
        env={**clean, **(env or {})},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"patchlog {' '.join(args)} still ran after {timeout} s") from None
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


class Cli:
    """``python -m patchlog ARGS`` in the background, output kept in files (a pipe
    nobody reads would fill up and block it)."""

    def __init__(self, folder: Path, *args: str) -> None:
        self.args = args
        self.out = folder / f"cli-{time.monotonic_ns()}.out"
        self.err = self.out.with_suffix(".err")
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> Cli:
        # Only the test's arguments configure it, not the environment it runs in.
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("PATCHLOG_") and k != "REDIS_URL"
        }
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "patchlog", *self.args,
                env=env, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=err,
            )  # fmt: skip
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def stderr(self) -> str:
        return self.err.read_text()

    async def wait(self, timeout: float) -> int:
        """Its exit status, which must come within ``timeout`` seconds."""
        assert self.process is not None
        return await asyncio.wait_for(self.process.wait(), timeout)

    async def stop(self, timeout: float = 30) -> int:
        """SIGTERM, and its exit status (within ``timeout`` seconds)."""
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        return await self.wait(timeout)

    def kill(self) -> None:
        """SIGKILL if it still runs (cleanup after a failed test)."""
        if self.process is not None and self.process.returncode is None:
            self.process.kill()


async def until(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    """Poll ``check`` (server errors count as not yet) until true, for at most ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(ServerError):
            if await check():
                return
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        await asyncio.sleep(0.1)


async def outcome(
    redis: Redis, patch_id: str, namespace: str = Settings().namespace
) -> dict[str, str] | None:
    """The outcome fields of ``patch_id`` in the outcomes stream of ``namespace`` (by
    default `up`'s), if there is one."""
    rows: Any = await redis.xrange(Settings(namespace=namespace).keys.outcomes)
    for _, fields in rows:
        decoded = {k.decode(): v.decode() for k, v in fields.items()}
        if decoded.get("id") == patch_id:
            return decoded
    return None


async def committed(
    redis: Redis, patch_id: str, timeout: float = 60, namespace: str = Settings().namespace
) -> None:
    """Wait (bounded) until ``patch_id`` has its outcome, and check it committed."""

    async def has_outcome() -> bool:
        return await outcome(redis, patch_id, namespace) is not None

    await until(has_outcome, timeout, f"an outcome for {patch_id}")
    assert (await outcome(redis, patch_id, namespace) or {})["status"] == "committed"


# -- documents in a folder and on the server ---------------------------------------------

# Names that a careless mapping would put in one file: case, a document that is also the
# folder of others, a trailing .d, non-ASCII, spaces and the escape characters.
NAMED = [
    "notes",
    "notes/today.md",
    "Notes/Today.md",
    "NOTES/today.md",
    "notes/today.md.d",
    "Café/menu",
    "cafe\u0301/menu",
    "a b/c~d+e",
    ".env",
    "con.txt",
]


async def live_documents(redis: Redis, settings: Settings) -> dict[str, bytes]:
    """Every document at its head, as the bytes of its file."""
    names: Any = await redis.smembers(settings.keys.docs)
    out = {}
    for raw in names:
        doc = raw.decode()
        out[doc] = content_bytes((await load_content(redis, settings.keys, doc)).lines)
    return out


def folder_documents(folder: Path) -> dict[str, bytes]:
    """Every document file in ``folder`` by its document name (patchlog's own dotted
    files left out)."""
    out = {}
    for path in folder.rglob("*"):
        if path.is_file() and not path.name.startswith("."):
            out[doc_of(path.relative_to(folder).as_posix())] = path.read_bytes()
    return out


async def submit_named(redis: Redis, settings: Settings, tag: int, revisions: int = 3) -> None:
    """A few revisions of each of ``NAMED`` (a pipeline must be running)."""
    client = Client(redis, settings.keys)
    for n in range(revisions):
        heads = await read_heads(redis, settings.keys, NAMED)
        submitted = [
            await client.submit(
                doc, heads[doc].rev, ops=[{"op": "insert", "at": 1, "lines": [f"{doc} {tag}/{n}"]}]
            )
            for doc in NAMED
        ]
        for one in submitted:
            outcome = await client.wait(one, 30)
            assert outcome.status == "committed", outcome


async def pipeline_load(
    redis: Redis, settings: Settings, scripts: Scripts, *, patches: int, docs: int, seed: int
) -> None:
    """A closed-loop load through in-process stage workers, plus the tricky names."""
    workers = runners(redis, settings, scripts, drain=False)
    tasks = [asyncio.create_task(r.run()) for r in workers]
    try:
        await submit_named(redis, settings, seed)
        await submit_load(redis, settings, submitters=8, patches=patches, docs=docs, seed=seed)
    finally:
        for r in workers:
            r.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
