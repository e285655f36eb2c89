"""Failpoints: rules parse or are refused by name, fire when their rule says, and a
fired one kills the process with SIGKILL after logging the hit."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from patchlog.streams.failpoints import Failpoints


def test_rules_fire_as_written() -> None:
    points = Failpoints("a:nth=3, b:p=1, c:p=0, d:p=0.5:seed=7")
    assert [points.fires("a") for _ in range(5)] == [False, False, True, False, False]
    assert all(points.fires("b") for _ in range(20))
    assert not any(points.fires("c") for _ in range(200))
    assert not points.fires("unarmed")
    again = Failpoints("d:p=0.5:seed=7")
    assert [points.fires("d") for _ in range(50)] == [again.fires("d") for _ in range(50)]


@pytest.mark.parametrize("spec", ["a", "a:p=2", "a:p=x", "a:nth=0", "a:every=3", ":p=1"])
def test_a_bad_rule_is_refused_by_name(spec: str) -> None:
    with pytest.raises(ValueError, match="PATCHLOG_FAILPOINTS"):
        Failpoints(spec)


def test_a_fired_point_logs_and_kills(tmp_path: Path) -> None:
    log = tmp_path / "fired"
    code = (
        "from patchlog.streams.failpoints import failpoint\n"
        "failpoint('x.here'); print('first', flush=True)\n"
        "failpoint('x.here'); print('second', flush=True)\n"
    )
    env = {"PATCHLOG_FAILPOINTS": "x.here:nth=2", "PATCHLOG_FAILPOINTS_LOG": str(log)}
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == -signal.SIGKILL
    assert done.stdout == "first\n"
    name, pid, at = log.read_text().split()
    assert (name, int(pid) > 0, int(at) > 0) == ("x.here", True, True)
