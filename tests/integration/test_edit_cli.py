"""``patchlog edit`` driven with EDITOR set to a script, the pipeline running."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from patchlog.projections.client import Client
from patchlog.projections.load import read_document
from patchlog.streams.scripts import Scripts
from patchlog.streams.settings import Settings
from tests.integration.helpers import patchlog, runners

# The editor: each call runs the next step listed in STEPS (a JSON file), counting calls
# in CALLS. A step may first commit a competing patch (with the CLI, like another user),
# then sets the file's lines, or leaves the file alone, or fails.
EDITOR = """
import json, os, subprocess, sys
path = sys.argv[1]
steps = json.load(open(os.environ["STEPS"]))
calls = int(open(os.environ["CALLS"]).read() or 0) if os.path.exists(os.environ["CALLS"]) else 0
open(os.environ["CALLS"], "w").write(str(calls + 1))
step = steps[calls]
seen = open(path).read()
open(os.environ["CALLS"] + f".seen{calls}", "w").write(seen)
if step.get("compete"):
    subprocess.run([sys.executable, "-m", "patchlog", "submit", *step["compete"]], check=True,
                   stdout=subprocess.DEVNULL)
if "lines" in step:
    open(path, "w").write("".join(x + "\\n" for x in step["lines"]))
sys.exit(step.get("status", 0))
"""


@pytest.fixture
async def pipeline(redis: Redis, settings: Settings, scripts: Scripts) -> AsyncIterator[Client]:
    workers = runners(redis, settings, scripts, drain=False)
    tasks = [asyncio.create_task(r.run()) for r in workers]
    client = Client(redis, settings.keys)
    outcome = await client.edit("d", lambda _: ["one", "two", "three"])
    assert outcome is not None
    try:
        yield client
    finally:
        for r in workers:
            r.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)


async def edit_with(
    tmp_path: Path, settings: Settings, steps: list[dict[str, Any]]
) -> tuple[int, str, str, list[str]]:
    """Run ``patchlog edit d`` with the scripted editor; (status, out, err, what the
    editor was shown at each call)."""
    assert settings.redis_url is not None
    where = ["--redis-url", settings.redis_url, "--namespace", settings.namespace]
    for step in steps:
        if "compete" in step:
            step["compete"] = [*step["compete"], *where, "--wait"]
    script = tmp_path / "editor.py"
    script.write_text(EDITOR)
    (tmp_path / "steps.json").write_text(json.dumps(steps))
    calls = tmp_path / "calls"
    env = {
        "EDITOR": f"{sys.executable} {script}",
        "STEPS": str(tmp_path / "steps.json"),
        "CALLS": str(calls),
    }
    status, out, err = await patchlog("edit", "d", *where, env=env)
    return status, out, err, shown(calls)


def shown(calls: Path) -> list[str]:
    """What the editor was shown at each of its calls."""
    made = int(calls.read_text()) if calls.exists() else 0
    return [Path(f"{calls}.seen{k}").read_text() for k in range(made)]


def take_kept(err: str) -> str:
    """The content of the file the refused version was kept in (removed after)."""
    kept = Path(err.split("your version is kept in ")[1].split(";", maxsplit=1)[0])
    text = kept.read_text()
    kept.unlink()
    return text


async def test_a_saved_change_commits(
    pipeline: Client, settings: Settings, tmp_path: Path, redis: Redis
) -> None:
    """The editor is shown the head; what it saves is committed; the outcome is printed."""
    status, out, err, seen = await edit_with(
        tmp_path, settings, [{"lines": ["one", "TWO", "three"]}]
    )
    assert status == 0, err
    assert seen == ["one\ntwo\nthree\n"]
    assert json.loads(out)["status"] == "committed"
    assert await read_document(redis, settings.keys, "d") == (2, ["one", "TWO", "three"])


async def test_unchanged_file_or_failed_editor_submits_nothing(
    pipeline: Client, settings: Settings, tmp_path: Path, redis: Redis
) -> None:
    """Saving unchanged submits nothing (status 0); an editor exiting 1 submits nothing
    (status 1, naming the editor's status)."""
    before = await redis.xlen(settings.keys.patches)
    status, _, err, _ = await edit_with(tmp_path, settings, [{}])
    assert (status, err) == (0, "no change: nothing submitted for d\n")
    (tmp_path / "calls").unlink()
    status, _, err, _ = await edit_with(tmp_path, settings, [{"lines": ["x"], "status": 3}])
    assert status == 1
    assert "exited with status 3; nothing was submitted" in err
    assert await redis.xlen(settings.keys.patches) == before


async def test_a_conflict_is_shown_and_the_editor_reopens_with_the_new_head(
    pipeline: Client, settings: Settings, tmp_path: Path, redis: Redis
) -> None:
    """Another user changes line 2 while the editor is open on revision 1; the edit of
    line 2 is a conflict: shown, kept in a file, and the editor reopens on revision 2."""
    competing = ["--doc", "d", "--base", "1", "--ops",
                 '[{"op":"replace","from":2,"lines":["theirs"]}]']  # fmt: skip
    steps: list[dict[str, Any]] = [
        {"compete": competing, "lines": ["one", "mine", "three"]},
        {"lines": ["one", "theirs and mine", "three"]},
    ]
    status, out, err, seen = await edit_with(tmp_path, settings, steps)
    assert status == 0, err
    assert seen == ["one\ntwo\nthree\n", "one\ntheirs\nthree\n"]
    assert "patchlog: conflict: replace 2..2: line 2 of the base was changed by revision 2" in err
    assert take_kept(err) == "one\nmine\nthree\n"
    assert json.loads(out)["rev"] == 3
    assert await read_document(redis, settings.keys, "d") == (
        3,
        ["one", "theirs and mine", "three"],
    )


async def test_dry_run_on_a_stale_base_shows_the_rebased_patch(
    pipeline: Client, settings: Settings
) -> None:
    """``submit --dry-run`` on base 1 after an insert at the top shows the op moved down
    one line, as ops on the head and as a diff of the head; nothing is submitted."""
    assert settings.redis_url is not None
    where = ["--redis-url", settings.redis_url, "--namespace", settings.namespace]
    await pipeline.edit("d", lambda lines: ["zero", *lines])
    ops = '[{"op":"replace","from":3,"lines":["THREE"]}]'
    status, out, err = await patchlog(
        "submit", "--doc", "d", "--base", "1", "--ops", ops, "--dry-run", *where
    )
    assert status == 0, err
    assert out.splitlines()[:2] == [
        "# d: revision 2 -> 3 (not submitted)",
        "# rebased from base 1 onto the head 2; as ops on the head: "
        '[{"op":"replace","from":4,"to":4,"lines":["THREE"]}]',
    ]
    assert "-three\n+THREE\n" in out
