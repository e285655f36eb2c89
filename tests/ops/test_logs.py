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
