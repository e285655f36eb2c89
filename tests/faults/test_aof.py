"""F5a-c in small: a kill -9 under everysec, the AOF rolled back to a timestamp, the AOF
torn at random offsets (``tests.faults.aof`` holds the scenarios, at any size)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.aof import AGAIN, f5ab, f5c
from tests.faults.row import Row
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


@pytest.fixture(scope="module", params=KINDS)
async def torn(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Row]:
    """F5c on four cuts: in a command of a commit's MULTI block, between two of its
    commands, in a command outside MULTI, anywhere."""
    kind: str = request.param
    return kind, await f5c(tmp_path_factory.mktemp(f"f5c-{kind}"), kind, offsets=4)


async def test_a_torn_aof_loads_with_every_commit_whole(torn: tuple[str, Row]) -> None:
    """The server starts on each cut AOF, each commit survives whole or not at all, and
    the pipeline then decides every kept submission once."""
    _, row = torn
    first = [v for v in row.violations if AGAIN not in v]
    assert not first, f"{first} {row.figures}"
    assert int(row.figures["offsets_in_multi"]) >= 2


async def test_writes_after_a_torn_load_survive_the_next_restart_whole(
    torn: tuple[str, Row],
) -> None:
    """What the pipeline commits after a torn load is still there, whole, after the next
    restart. Redis 7.0.15 fails this: it cuts a torn MULTI block after its last whole
    command, and the next load queues the writes that follow into that block and runs
    them with it, so half of the torn commit comes back (valkey-io/valkey#4342 fixed it
    in Valkey). On Redis a cut that hits this is reported as an expected failure of the
    server, never as a pass; any other problem fails."""
    kind, row = torn
    if kind == "redis" and row.violations and all(AGAIN in v for v in row.violations):
        pytest.xfail(f"Redis 7.0 reloads half of a torn MULTI block: {row.violations[:2]}")
    row.assert_ok()
