"""F5a and F5b in small: a kill -9 under everysec, the AOF rolled back to a timestamp
(``tests.faults.aof`` holds the scenarios, at any size)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.aof import f5ab
from tests.integration.helpers import KINDS


@pytest.mark.parametrize("kind", KINDS)
async def test_kill_9_under_everysec_then_a_rollback_keep_a_clean_prefix(
    tmp_path: Path, kind: str
) -> None:
    """kill -9 under everysec loses no acknowledged patch unless the server postponed a
    write; the AOF cut 1 and 2 s before the kill is a clean prefix whose lost tail,
    sent again, applies once."""
    a, b = await f5ab(tmp_path, kind, seconds=3.0)
    a.assert_ok()
    b.assert_ok()
    assert int(b.figures["k2_lost"]) > 0  # the cut did remove acknowledged patches
