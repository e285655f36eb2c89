"""``patchlog export`` against a real server: the folder equals the live documents, and
with --rev-at the documents as they were at that time."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from patchlog.ops.clibase import Exit
from patchlog.ops.config import settings_env
from patchlog.ops.export import export_documents
from patchlog.projections.history import at_revision, rev_at_time
from patchlog.streams.content import content_bytes
from patchlog.streams.scripts import Scripts
from patchlog.streams.settings import Settings
from tests.integration.helpers import folder_documents, live_documents, patchlog, pipeline_load

_SUMMARY = re.compile(r"^exported ([\d,]+) documents \(([\d,]+) revisions.*\) to .+ in [\d.]+ s$")


def _count(text: str) -> int:
    return int(text.replace(",", ""))


async def documents_at(redis: Redis, settings: Settings, until_ms: int) -> dict[str, bytes]:
    """Every document as time travel gives it at ``until_ms`` (a binary search of each
    document's revisions by commit time, not export's pass over the whole log);
    documents with no revision by then left out."""
    names: Any = await redis.smembers(settings.keys.docs)
    out = {}
    for raw in names:
        doc = raw.decode()
        rev = await rev_at_time(redis, settings.keys, doc, until_ms)
        if rev:
            found = await at_revision(redis, settings.keys, doc, rev)
            out[doc] = content_bytes(found.lines)
    return out


async def test_export_equals_the_live_documents(
    redis: Redis, settings: Settings, scripts: Scripts, tmp_path: Path
) -> None:
    """Every document, byte for byte, at the path the mapping gives it; the summary
    counts them and every revision of the log."""
    await pipeline_load(redis, settings, scripts, patches=800, docs=40, seed=11)
    folder = tmp_path / "export"
    status, out, err = await patchlog("export", str(folder), env=settings_env(settings))
    assert status == 0, err
    live = await live_documents(redis, settings)
    assert folder_documents(folder) == live
    summary = _SUMMARY.match(out.strip())
    assert summary, out
    assert _count(summary.group(1)) == len(live)
    assert _count(summary.group(2)) == await redis.xlen(settings.keys.revisions)


async def test_rev_at_gives_the_documents_as_of_that_time(
    redis: Redis, settings: Settings, scripts: Scripts, tmp_path: Path
) -> None:
    """--rev-at in epoch ms and in ISO 8601: the documents as time travel gives them at
    the last revision committed by then; documents created later are left out."""
    await pipeline_load(redis, settings, scripts, patches=400, docs=20, seed=12)
    rows: Any = await redis.xrange(settings.keys.revisions)
    middle = int(rows[len(rows) // 2][1][b"at"])
    end_of_first = int(rows[-1][1][b"at"])
    await asyncio.sleep(0.01)  # the next load commits strictly later
    await pipeline_load(redis, settings, scripts, patches=400, docs=30, seed=13)

    for n, until in enumerate([middle, end_of_first]):
        folder = tmp_path / f"at-{n}"
        status, out, err = await patchlog(
            "export", str(folder), "--rev-at", str(until), env=settings_env(settings)
        )
        assert status == 0, err
        want = await documents_at(redis, settings, until)
        assert folder_documents(folder) == want
        assert want != await live_documents(redis, settings)
        summary = _SUMMARY.match(out.strip())
        assert summary, out
        assert _count(summary.group(1)) == len(want)

    iso = (
        (datetime.fromtimestamp(middle // 1000, UTC) + timedelta(milliseconds=middle % 1000))
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )
    folder = tmp_path / "iso"
    status, _, err = await patchlog(
        "export", str(folder), "--rev-at", iso, env=settings_env(settings)
    )
    assert status == 0, err
    assert folder_documents(folder) == await documents_at(redis, settings, middle)


async def test_export_in_process_counts_and_an_empty_log(
    redis: Redis, settings: Settings, scripts: Scripts, tmp_path: Path
) -> None:
    """Pages smaller than the log give the same folder; an empty namespace exports no
    document; progress is reported up to the whole log."""
    await pipeline_load(redis, settings, scripts, patches=300, docs=15, seed=14)
    seen: list[tuple[int, int]] = []
    summary = await export_documents(
        redis, settings.keys, tmp_path / "a", page=7, progress=lambda d, t: seen.append((d, t))
    )
    total = await redis.xlen(settings.keys.revisions)
    assert summary.revisions == total
    assert seen[-1] == (total, total)
    assert len(seen) > total // 7
    assert folder_documents(tmp_path / "a") == await live_documents(redis, settings)

    empty = settings.keys.__class__(settings.namespace + "-empty")
    nothing = await export_documents(redis, empty, tmp_path / "b")
    assert (nothing.documents, nothing.revisions, nothing.last_id) == (0, 0, "")


async def test_bad_arguments_are_usage_errors(settings: Settings, tmp_path: Path) -> None:
    """A folder that is not empty, or a time that is not one, is status 2 in one line,
    before anything is read."""
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x\n")
    status, _, err = await patchlog("export", str(tmp_path / "full"), env=settings_env(settings))
    assert status == Exit.USAGE
    assert "is not empty; rule: export writes into a new or empty folder" in err
    assert (tmp_path / "full" / "x").read_text() == "x\n"
    status, _, err = await patchlog(
        "export", str(tmp_path / "new"), "--rev-at", "yesterday", env=settings_env(settings)
    )
    assert status == Exit.USAGE
    assert "--rev-at" in err
    assert "Traceback" not in err
    assert not (tmp_path / "new").exists()
