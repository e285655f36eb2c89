"""Logging: every record is one whole line, even with several processes on one stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict

import pytest

from patchlog.ops.logs import LineLogger

PROCESSES = 8
RECORDS = 300

# Each child waits for a byte on stdin, so that all of them log at the same moment.
CHILD = f"""
import sys
import structlog
from patchlog.ops.logs import configure_logging

configure_logging(json=True)
log = structlog.get_logger()
worker = int(sys.argv[1])
sys.stdin.buffer.read(1)
for n in range({RECORDS}):
    log.info("record", worker=worker, n=n, stage="execute", payload=str(worker) * (500 + n * 7))
"""


def test_concurrent_processes_never_glue_records() -> None:
    """Records of processes sharing one stderr pipe arrive as whole lines, one record each."""
    read_fd, write_fd = os.pipe()
    # Unbuffered stderr is where print() split a record from its newline.
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(w)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=write_fd,
            env=env,
        )
        for w in range(PROCESSES)
    ]
    os.close(write_fd)
    for child in children:
        assert child.stdin is not None
        child.stdin.write(b"go")
        child.stdin.close()
    with os.fdopen(read_fd, "rb") as pipe:
        output = pipe.read().decode()
    assert [child.wait(timeout=60) for child in children] == [0] * PROCESSES
    seen: dict[int, list[int]] = defaultdict(list)
    for line in output.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            pytest.fail(f"not one JSON record: {line[:120]!r}…{line[-120:]!r}")
        assert {"event", "worker", "n", "stage", "payload", "level", "timestamp"} <= set(record)
        assert record["payload"] == str(record["worker"]) * (500 + record["n"] * 7)
        seen[record["worker"]].append(record["n"])
    assert seen == {w: list(range(RECORDS)) for w in range(PROCESSES)}


def test_a_short_write_is_finished(monkeypatch: pytest.MonkeyPatch) -> None:
    """When the kernel takes only part of a record, the rest follows, in order."""
    read_fd, write_fd = os.pipe()
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, data[:100]))
    LineLogger(write_fd).info("é" * 1000)
    monkeypatch.undo()
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        assert pipe.read().decode() == "é" * 1000 + "\n"


# A library's records next to patchlog's own, with a bound context, at each level.
LIBRARY = """
import logging, sys
import structlog
from patchlog.ops.logs import configure_logging

configure_logging(json=sys.argv[1] == "json")
structlog.contextvars.bind_contextvars(stage="execute", consumer="e1")
logging.getLogger("redis.asyncio.connection").warning("lost %s", "connection", extra={"n": 3})
logging.getLogger("asyncio").debug("a debug line")
try:
    raise KeyError("k")
except KeyError:
    logging.getLogger("asyncio").exception("task failed")
structlog.get_logger("patchlog.execute").debug("committed", id="p1", rev=2)
structlog.get_logger("patchlog.execute").info("batch", committed=1, thing=object())
"""


def run_child(mode: str, level: str | None = None) -> list[str]:
    """The child's stderr lines; ``level`` goes in PATCHLOG_LOG_LEVEL."""
    env = {k: v for k, v in os.environ.items() if k != "PATCHLOG_LOG_LEVEL"}
    if level is not None:
        env["PATCHLOG_LOG_LEVEL"] = level
    done = subprocess.run(
        [sys.executable, "-c", LIBRARY, mode],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    return done.stderr.splitlines()


def test_library_records_are_rendered_like_patchlogs_own() -> None:
    """redis's and asyncio's records are JSON lines with the bound stage and worker,
    the library's name, its extra fields and the traceback; info hides debug."""
    lines = [json.loads(line) for line in run_child("json")]
    by_event = {line["event"]: line for line in lines}
    assert set(by_event) == {"lost connection", "task failed", "batch"}
    lost = by_event["lost connection"]
    assert lost["logger"] == "redis.asyncio.connection"
    assert (lost["level"], lost["n"], lost["stage"], lost["consumer"]) == (
        "warning",
        3,
        "execute",
        "e1",
    )
    assert "timestamp" in lost
    failed = by_event["task failed"]
    assert failed["level"] == "error"
    assert "KeyError: 'k'" in failed["exception"]
    assert by_event["batch"]["thing"].startswith("<object object")  # never a crash


def test_level_comes_from_patchlog_log_level() -> None:
    """debug shows every line, of libraries too; warning hides info; a bad name says
    so on one line and keeps info."""
    events = [json.loads(line)["event"] for line in run_child("json", "debug")]
    assert events == ["lost connection", "a debug line", "task failed", "committed", "batch"]
    events = [json.loads(line)["event"] for line in run_child("json", "WARNING")]
    assert events == ["lost connection", "task failed"]
    lines = [json.loads(line) for line in run_child("json", "loud")]
    assert lines[0]["level"] == "warning"
    assert "PATCHLOG_LOG_LEVEL='loud' is not a level" in lines[0]["event"]
    assert [line["event"] for line in lines[1:]] == ["lost connection", "task failed", "batch"]


def test_console_lines_are_for_people() -> None:
    """Without JSON: one readable line per record, the level and the fields as key=value,
    the library's name in brackets."""
    lines = run_child("console")
    lost = next(line for line in lines if "lost connection" in line)
    assert "[warning" in lost
    assert "[redis.asyncio.connection]" in lost
    assert "consumer=e1" in lost
    assert "stage=execute" in lost
    assert not lost.startswith("{")
