"""The CI subset of the fault suite (FAULT-PLAN section 5): F1, F2, F4, F6, F9, F10,
F11, each with a smaller load than the full suite (``python -m tests.faults.run``), and
the suite's proof that its checker catches a broken build.

The faults run on the embedded Valkey; F4, the one that leans most on the server's own
persistence, also on Debian's Redis.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.harness import Plan
from tests.faults.scenarios import SCENARIOS, _nothing, run

PATCHES = 1200
"""Acknowledged submissions per scenario here (the full suite makes 10,000)."""


@pytest.mark.parametrize("name", ["F1", "F2", "F6", "F9", "F10", "F11"])
async def test_scenario_holds(name: str, tmp_path: Path) -> None:
    row = await SCENARIOS[name](tmp_path, "valkey", PATCHES)
    row.assert_ok()
    assert int(row.figures["ingress_entries"]) >= PATCHES


async def test_partitioned_execute_killed_mid_batch_holds(tmp_path: Path) -> None:
    """F2 with the execute stage in partitions: every partition held, killed workers
    take theirs up again, and the checker finds every patch decided exactly once."""
    row = await SCENARIOS["F2p"](tmp_path, "valkey", PATCHES)
    row.assert_ok()
    assert sum(int(v) for k, v in row.figures.items() if k.startswith("fired ")) > 0
    assert int(row.figures["partitions_taken"]) >= 4


@pytest.mark.parametrize("kind", ["valkey", "redis"])
async def test_server_kill_9_holds(kind: str, tmp_path: Path) -> None:
    row = await SCENARIOS["F4"](tmp_path, kind, PATCHES)
    row.assert_ok()
    assert int(row.figures["pel_entries_compared"]) > 0  # the freeze caught work in hand


async def test_the_checker_catches_a_broken_build(tmp_path: Path) -> None:
    """Stages that acknowledge what they read before working on it (PATCHLOG_BROKEN):
    execute's commit finds its entries no longer pending and drops them, so patches end
    with no outcome. The checker must fail the run and count them lost."""
    row = await run("broken", tmp_path, "valkey", Plan(broken="ack_before_work"), 300, _nothing)
    assert not row.ok
    assert int(row.figures["lost"]) > 0
    assert any("no outcome" in v for v in row.violations)
