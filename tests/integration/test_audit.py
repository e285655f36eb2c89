"""Reading the log back: time travel, blame, diff, verify and rebuild on real servers."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from redis.asyncio import Redis

from patchlog.projections.client import Client
from patchlog.projections.history import rev_at_time
from patchlog.projections.rebuild import rebuild, verify
from patchlog.streams.keys import Keys
from patchlog.streams.scripts import Scripts
from patchlog.streams.settings import Settings
from tests.integration.helpers import patchlog, runners

EVERY = 7
EDITS = 60


def random_edit(rng: random.Random, rev: int) -> Any:
    """An edit function making revision ``rev``: every line it writes says ``rev:k``."""

    def fn(lines: list[str]) -> list[str]:
        new = [f"{rev}:{k}" for k in range(rng.randint(1, 3))]
        kind = rng.choice(["insert", "replace", "delete"]) if lines else "insert"
        at = rng.randint(0, len(lines))
        if kind == "insert":
            return [*lines[:at], *new, *lines[at:]]
        at = min(at, len(lines) - 1)
        end = rng.randint(at + 1, min(len(lines), at + 3))
        kept = [*lines[:at], *lines[end:]]
        if kind == "delete" and kept:
            return kept
        return [*lines[:at], *new, *lines[end:]]

    return fn


@pytest.fixture
async def history(
    redis: Redis, settings: Settings, scripts: Scripts
) -> AsyncIterator[tuple[Client, Settings, dict[str, list[list[str]]]]]:
    """Two documents edited 60 times each through the running pipeline, with
    checkpoints every 7 revisions; what each revision should hold, by our own model."""
    settings = msgspec.structs.replace(settings, snapshot_every=EVERY)
    workers = runners(redis, settings, scripts, drain=False)
    tasks = [asyncio.create_task(r.run()) for r in workers]
    client = Client(redis, settings.keys, every=EVERY)
    expected: dict[str, list[list[str]]] = {}
    rng = random.Random(7)
    try:
        for doc in ("alpha", "beta"):
            model: list[list[str]] = [[]]
            for rev in range(1, EDITS + 1):
                fn = random_edit(rng, rev)
                outcome = await client.edit(doc, _recording(fn, model), author=f"a{rev % 3}")
                assert outcome is not None
                assert outcome.rev == rev
            expected[doc] = model
        yield client, settings, expected
    finally:
        for r in workers:
            r.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)


def _recording(fn: Any, model: list[list[str]]) -> Any:
    """``fn``, keeping what it returns in ``model`` (its index is the revision)."""

    def edit(lines: list[str]) -> list[str]:
        new: list[str] = fn(lines)
        model.append(new)
        return new

    return edit


async def test_time_travel_equals_the_replay_and_is_bounded(
    history: tuple[Client, Settings, dict[str, list[list[str]]]], redis: Redis
) -> None:
    """Every revision of random documents equals what it was when made, reached by
    replaying fewer than ``snapshot_every`` revisions; --at finds each revision by its
    commit time; every checkpoint exists and rebuild and verify find nothing."""
    client, settings, expected = history
    for doc, model in expected.items():
        for rev, lines in enumerate(model):
            found = await client.at(doc, rev)
            assert found.lines == lines, (doc, rev)
            assert found.replayed < EVERY
            if rev:
                assert await rev_at_time(redis, settings.keys, doc, found.at) >= rev
                assert await rev_at_time(redis, settings.keys, doc, found.at - 1) < rev
    report = await rebuild(redis, settings.keys, every=EVERY)
    assert (report.differences, report.missing) == ([], [])
    assert (await verify(redis, settings.keys)).ok


async def test_blame_names_the_revision_that_wrote_each_line(
    history: tuple[Client, Settings, dict[str, list[list[str]]]],
) -> None:
    """Each line's blame is the revision its text says wrote it, at every revision."""
    client, _, expected = history
    for doc, model in expected.items():
        for rev in range(1, len(model), 5):
            rows = await client.blame(doc, rev)
            assert [r.text for r in rows] == model[rev]
            assert [r.rev for r in rows] == [int(r.text.split(":")[0]) for r in rows]
            assert all(r.author == f"a{r.rev % 3}" for r in rows)


async def test_diff_applied_with_gnu_patch_gives_the_later_revision(
    history: tuple[Client, Settings, dict[str, list[list[str]]]], tmp_path: Path
) -> None:
    """``patchlog diff DOC A B`` applied by GNU patch to revision A gives B byte for byte."""
    _, settings, expected = history
    assert settings.redis_url is not None
    where = ["--redis-url", settings.redis_url, "--namespace", settings.namespace]
    model = expected["alpha"]
    for a, b in ((0, 9), (13, 14), (20, 60), (44, 31)):
        status, out, err = await patchlog("diff", "alpha", str(a), str(b), *where)
        assert status == 0, err
        target = tmp_path / f"alpha-{a}-{b}"
        target.write_text("".join(x + "\n" for x in model[a]))
        done = subprocess.run(
            ["patch", "-s", str(target)],
            input=out.encode(),
            capture_output=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert target.read_bytes() == "".join(x + "\n" for x in model[b]).encode()


async def test_show_json_log_json_and_ls(
    history: tuple[Client, Settings, dict[str, list[list[str]]]],
) -> None:
    """``show --json`` carries content, revision, hash and time together; ``log --json``
    one object per revision; ``ls`` lists both documents with their heads."""
    _, settings, expected = history
    assert settings.redis_url is not None
    where = ["--redis-url", settings.redis_url, "--namespace", settings.namespace]
    status, out, _ = await patchlog("show", "beta", "--rev", "12", "--json", *where)
    shown = json.loads(out)
    assert (status, shown["rev"], shown["lines"]) == (0, 12, expected["beta"][12])
    assert len(shown["hash"]) == 64
    assert shown["time"].startswith("20")
    status, out, _ = await patchlog("log", "beta", "--json", "--limit", "0", *where)
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["rev"] for r in rows] == list(range(EDITS, 0, -1))
    assert rows[-1]["added"] == len(expected["beta"][1])
    status, out, _ = await patchlog("ls", *where)
    assert out.splitlines()[0].split()[:3] == ["document", "rev", "lines"]
    assert [line.split()[:3] for line in out.splitlines()[1:]] == [
        ["alpha", str(EDITS), str(len(expected["alpha"][-1]))],
        ["beta", str(EDITS), str(len(expected["beta"][-1]))],
    ]
    status, out, _ = await patchlog("ls", "al", "--json", *where)
    assert [json.loads(line)["doc"] for line in out.splitlines()] == ["alpha"]


async def test_verify_names_exactly_the_altered_revision_and_rebuild_repairs_a_head(
    history: tuple[Client, Settings, dict[str, list[list[str]]]], redis: Redis
) -> None:
    """In a copy of the log with one revision's ops altered, verify names that revision
    and no other; a head altered live is named by rebuild and fixed by --repair."""
    _, settings, _ = history
    assert settings.redis_url is not None
    copy = Keys(settings.namespace + "-copy")
    rows: Any = await redis.xrange(settings.keys.revisions)
    altered = None
    for stream_id, fields in rows:
        entry = dict(fields)
        if altered is None and fields[b"doc"] == b"beta" and fields[b"rev"] == b"23":
            entry[b"ops"] = b'[{"op":"insert","at":1,"lines":["tampered"]}]'
            altered = stream_id
        await redis.xadd(copy.revisions, entry, id=stream_id)
    assert altered is not None
    report = await verify(redis, copy)
    assert [(d.doc, d.message.split(":")[0]) for d in report.differences] == [
        ("beta", f"'beta' revision 23 ({altered.decode()})")
    ]

    where = ["--redis-url", settings.redis_url, "--namespace", settings.namespace]
    await redis.hset(settings.keys.doc("alpha"), "hash", "0" * 64)
    status, out, _ = await patchlog("rebuild", *where)
    assert status == 1
    assert "DIFFERS 'alpha': live head is revision 60 (000000000000" in out
    status, out, _ = await patchlog("rebuild", "--repair", *where)
    assert (status, out.count("REPAIRED 'alpha'")) == (0, 1)
    status, out, err = await patchlog("rebuild", *where)
    assert status == 0, out + err
    assert out.endswith("the log reproduces the live state\n")
