"""The projector against a real server and a real folder: the folder equals the live
documents byte for byte, through kill -9 and restarts, catching up from nothing, and a
reader never sees a partly written file."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from patchlog.consumers.projector import CHECKPOINT_FILE, TEMP_PREFIX, Projector
from patchlog.ops.config import settings_env
from patchlog.projections.paths import doc_of, path_of
from patchlog.streams.codec import decode_event
from patchlog.streams.connection import connect
from patchlog.streams.log import iter_revisions
from patchlog.streams.schema import Revision
from patchlog.streams.scripts import Scripts
from patchlog.streams.settings import Settings
from tests.integration.helpers import (
    NAMED,
    Cli,
    committed,
    drain,
    folder_documents,
    free_port,
    live_documents,
    patchlog,
    pipeline_load,
    until,
)


def _env(settings: Settings) -> dict[str, str]:
    env = settings_env(settings)
    env["PATCHLOG_JSON_LOGS"] = "1"
    return env


_STARTED: list[asyncio.subprocess.Process] = []


@pytest.fixture(autouse=True)
async def _no_projector_outlives_its_test() -> AsyncIterator[None]:
    yield
    while _STARTED:
        process = _STARTED.pop()
        if process.returncode is None:
            process.kill()
            await asyncio.wait_for(process.wait(), 10)


async def start_projector(
    settings: Settings, folder: Path, *args: str
) -> asyncio.subprocess.Process:
    """``patchlog worker projector --dir folder`` as a child process (its output in
    ``folder``'s sibling log file), killed at the end of the test if it still runs."""
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith("PATCHLOG_") and k != "REDIS_URL"
    }
    log = folder.with_name(folder.name + ".log").open("ab")
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "patchlog", "worker", "projector", "--dir", str(folder),
            "--json-logs", *args,
            env={**clean, **settings_env(settings)},
            stdout=log, stderr=log,
        )  # fmt: skip
    finally:
        log.close()
    _STARTED.append(process)
    return process


async def stop(process: asyncio.subprocess.Process, timeout: float = 10) -> int:
    """SIGTERM, and the exit status (it must come within ``timeout`` s)."""
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(process.wait(), timeout)


async def catch_up_in_process(redis: Redis, settings: Settings, folder: Path) -> Projector:
    """A projector in this process, run until it has caught up (``burst``); returned for
    what it counted."""
    projector = Projector(redis, settings.keys, folder, "t", block_ms=100)
    await projector.open()
    try:
        await projector.run(asyncio.Event(), burst=True)
    finally:
        projector.close()
    return projector


async def last_id(redis: Redis, settings: Settings) -> str:
    """The id of the newest revision."""
    newest: Any = await redis.xrevrange(settings.keys.revisions, "+", "-", count=1)
    return str(newest[0][0].decode())


async def caught_up(redis: Redis, settings: Settings, folder: Path, timeout: float = 60) -> None:
    """Wait until the folder's checkpoint is the newest revision."""
    want = await last_id(redis, settings)
    deadline = time.monotonic() + timeout
    while True:
        if await asyncio.to_thread(position_of, folder) == want:
            return
        assert time.monotonic() < deadline, f"the folder did not reach {want} in {timeout} s"
        await asyncio.sleep(0.05)


def position_of(folder: Path) -> str:
    """The folder's checkpoint id ('' if it has none)."""
    checkpoint = folder / CHECKPOINT_FILE
    return str(json.loads(checkpoint.read_bytes())["id"]) if checkpoint.exists() else ""


async def moved(folder: Path, since: str, timeout: float = 30) -> str:
    """Wait until the folder's checkpoint is past ``since``; the new one."""
    deadline = time.monotonic() + timeout
    while (now := await asyncio.to_thread(position_of, folder)) == since:
        assert time.monotonic() < deadline, f"the projector wrote nothing in {timeout} s"
        await asyncio.sleep(0.02)
    return now


def temporary_files(folder: Path) -> list[Path]:
    """Temporary files left in ``folder``."""
    return list(folder.rglob(f"{TEMP_PREFIX}*"))


async def assert_equal(redis: Redis, settings: Settings, folder: Path) -> None:
    """The folder holds exactly the live documents, byte for byte, and no temporary file."""
    live = await live_documents(redis, settings)
    files = folder_documents(folder)
    assert sorted(files) == sorted(live)
    for doc, data in live.items():
        assert files[doc] == data, doc
    assert not await asyncio.to_thread(temporary_files, folder)


async def every_hash(redis: Redis, settings: Settings) -> dict[str, set[str]]:
    """The hash of every revision of every document."""
    out: dict[str, set[str]] = defaultdict(set)
    async for _, revision in iter_revisions(redis, settings.keys):
        out[revision.doc].add(revision.hash)
    return out


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """The projector's folder (not created: the projector makes it)."""
    return tmp_path / "files"


async def test_the_folder_equals_the_documents_and_readers_never_see_a_part(
    redis: Redis, settings: Settings, scripts: Scripts, folder: Path
) -> None:
    """Under a concurrent load: every file a polling reader reads is the content of some
    revision of its document (never a part of one); afterwards the folder equals the live
    documents byte for byte; SIGTERM stops the projector with status 0."""
    projector = await start_projector(settings, folder)
    reads: list[tuple[str, bytes]] = []
    done = asyncio.Event()

    def scan() -> None:
        for path in folder.rglob("*"):
            if path.name.startswith(".") or not path.is_file():
                continue
            with contextlib.suppress(FileNotFoundError):  # listed, then renamed over
                reads.append((path.relative_to(folder).as_posix(), path.read_bytes()))

    async def reader() -> None:
        while not done.is_set():
            await asyncio.to_thread(scan)
            await asyncio.sleep(0.005)

    polling = asyncio.create_task(reader())
    try:
        await pipeline_load(redis, settings, scripts, patches=1000, docs=30, seed=1)
        await caught_up(redis, settings, folder)
    finally:
        done.set()
        await polling
    await asyncio.to_thread(scan)
    assert await stop(projector) == 0
    await assert_equal(redis, settings, folder)

    hashes = await every_hash(redis, settings)
    assert len(reads) > 100
    for path, data in reads:
        assert hashlib.sha256(data).hexdigest() in hashes[doc_of(path)], (path, data[:80])


async def test_kill_9_mid_run_and_restart_converges(
    redis: Redis, settings: Settings, scripts: Scripts, folder: Path
) -> None:
    """The projector is killed with SIGKILL three times while the load runs, and started
    again each time; it resumes from its checkpoint and ends equal to the documents."""
    rng = random.Random(7)
    projector = await start_projector(settings, folder)
    load = asyncio.create_task(
        pipeline_load(redis, settings, scripts, patches=1600, docs=40, seed=2)
    )
    kills_mid_run = 0
    position = ""
    for _ in range(3):
        # Once it wrote something since its start, at a random moment of its rounds.
        position = await moved(folder, position)
        await asyncio.sleep(rng.uniform(0, 0.3))
        kills_mid_run += not load.done()
        projector.kill()
        await projector.wait()
        projector = await start_projector(settings, folder)
    await load
    assert kills_mid_run >= 2, "the load ended before the projector was killed twice"
    await caught_up(redis, settings, folder)
    assert await stop(projector) == 0
    await assert_equal(redis, settings, folder)


async def test_catch_up_from_zero_into_an_empty_folder(
    redis: Redis, settings: Settings, scripts: Scripts, folder: Path, tmp_path: Path
) -> None:
    """A log written with no projector running is caught up from zero with --burst;
    emptied, the same folder (whose server checkpoint is now ahead of it) is caught up
    from zero again; a copy elsewhere resumes from the checkpoint inside it."""
    await pipeline_load(redis, settings, scripts, patches=800, docs=25, seed=3)
    status, _, err = await patchlog(
        "worker", "projector", "--dir", str(folder), "--burst", env=_env(settings)
    )
    assert status == 0, err
    await assert_equal(redis, settings, folder)
    first = json.loads((folder / CHECKPOINT_FILE).read_bytes())
    assert first["id"] == await last_id(redis, settings)

    await asyncio.to_thread(shutil.rmtree, folder)
    await asyncio.to_thread(folder.mkdir)
    status, _, err = await patchlog(
        "worker", "projector", "--dir", str(folder), "--burst", env=_env(settings)
    )
    assert status == 0, err
    assert "no checkpoint in the folder: catching up from the start" in err
    await assert_equal(redis, settings, folder)

    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    (copy / ".patchlog-lock").unlink()
    await pipeline_load(redis, settings, scripts, patches=160, docs=25, seed=4)
    later: Any = await redis.xrange(settings.keys.revisions, f"({first['id']}", "+")
    status, _, err = await patchlog(
        "worker", "projector", "--dir", str(copy), "--burst", env=_env(settings)
    )
    assert status == 0, err
    stopped = [json.loads(line) for line in err.splitlines() if "projector stopped" in line]
    assert stopped[-1]["revisions"] == len(later)  # only what came after the copy's checkpoint
    await assert_equal(redis, settings, copy)


async def test_files_ahead_of_the_checkpoint_are_trusted_only_by_hash(
    redis: Redis, settings: Settings, scripts: Scripts, folder: Path
) -> None:
    """A crash between the files and the checkpoint leaves files ahead of it: resuming
    from an older checkpoint over such files, a damaged file and a missing one, the
    projector takes each document from its file only when the file hashes to the
    revision before the next one, else from the log, and ends equal."""
    await pipeline_load(redis, settings, scripts, patches=400, docs=10, seed=5)
    await catch_up_in_process(redis, settings, folder)
    old = (folder / CHECKPOINT_FILE).read_bytes()
    # Its checkpoint is published, and it is listed where health finds it.
    published: Any = await redis.hget(settings.keys.projector("t"), "id")
    assert published.decode() == json.loads(old)["id"]
    assert await redis.smembers(settings.keys.projectors) == {b"t"}

    await pipeline_load(redis, settings, scripts, patches=400, docs=10, seed=6)
    await catch_up_in_process(redis, settings, folder)
    await assert_equal(redis, settings, folder)

    (folder / CHECKPOINT_FILE).write_bytes(old)  # the files are ahead of it now
    later: Any = await redis.xrange(settings.keys.revisions, f"({json.loads(old)['id']}", "+")
    touched = sorted({decode_event(Revision, fields).doc for _, fields in later})
    (folder / path_of(touched[0])).write_bytes(b"damaged\n")
    (folder / path_of(touched[1])).unlink()
    projector = await catch_up_in_process(redis, settings, folder)
    assert projector.applied == len(later)
    await assert_equal(redis, settings, folder)

    # A file deleted by hand, no revision to come: written again when it resumes.
    (folder / path_of(NAMED[1])).unlink()
    projector = await catch_up_in_process(redis, settings, folder)
    assert projector.applied == 0
    await assert_equal(redis, settings, folder)


async def test_one_projector_per_folder(
    redis: Redis, settings: Settings, scripts: Scripts, folder: Path
) -> None:
    """A second projector on a kept folder exits at once, naming the holder's pid; one
    without a folder is a usage error."""
    await drain(redis, settings, scripts)
    first = await start_projector(settings, folder)
    try:
        deadline = time.monotonic() + 30
        while not (folder / CHECKPOINT_FILE).exists() and not (folder / ".patchlog-lock").exists():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        status, _, err = await patchlog(
            "worker", "projector", "--dir", str(folder), "--burst", env=_env(settings)
        )
        assert status == 1
        assert f"is kept by another projector (pid {first.pid})" in err
        assert "Traceback" not in err
    finally:
        assert await stop(first) == 0
    status, _, err = await patchlog("worker", "projector", env=_env(settings))
    assert status == 2
    assert "--dir: missing" in err


async def test_up_runs_a_projector_and_restarts_it(
    tmp_path: Path, clis: Callable[..., Awaitable[Cli]]
) -> None:
    """`up --dir` starts a projector beside the stages: the folder follows the documents,
    and after a kill -9 of the projector `up` starts it again and it catches up."""
    port, folder = free_port(), tmp_path / "files"
    up = await clis(
        "up", "--data-dir", str(tmp_path / "data"), "--port", str(port), "--dir", str(folder)
    )
    settings = Settings(redis_url=f"redis://127.0.0.1:{port}/0", retries=0)
    redis = connect(settings, f"redis://127.0.0.1:{port}/0")
    try:
        await until(redis.ping, 30, "the embedded server answering")
        ops = json.dumps([{"op": "insert", "at": 1, "lines": ["hello"]}])
        await redis.xadd(
            settings.keys.patches, {"doc": "Hello", "base": "0", "id": "p1", "ops": ops}
        )
        await committed(redis, "p1")
        await caught_up(redis, settings, folder)
        assert (folder / "+hello").read_bytes() == b"hello\n"

        pid = int((folder / ".patchlog-lock").read_text())
        os.kill(pid, signal.SIGKILL)
        await redis.xadd(settings.keys.patches, {"doc": "a/b", "base": "0", "id": "p2", "ops": ops})
        await committed(redis, "p2")
        await caught_up(redis, settings, folder)
        await assert_equal(redis, settings, folder)
        assert int((folder / ".patchlog-lock").read_text()) != pid
        assert "worker exited; restarting" in up.stderr
    finally:
        await redis.aclose()
    assert await up.stop() == 0, up.stderr
