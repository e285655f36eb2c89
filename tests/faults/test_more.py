"""F8 and F15 in small, on the embedded Valkey (``tests.faults.more`` holds F8, F13, F14
and F15, at any size)."""

from __future__ import annotations

from pathlib import Path

from tests.faults.more import f8, f15

PATCHES = 600


async def test_a_full_server_refuses_submissions_definitely_and_the_pipeline_resumes(
    tmp_path: Path,
) -> None:
    """Under maxmemory with noeviction, submissions fail with OOM (never an unknown
    result), nothing is dead-lettered or lost, commits resume once memory is raised, and
    the prober's results show the squeeze."""
    row = await f8(tmp_path, "valkey", PATCHES)
    row.assert_ok()
    assert int(row.figures["oom_fails"]) > 0


async def test_retention_trimming_hard_never_trims_a_pending_entry(tmp_path: Path) -> None:
    """With a one-second retention trimmed without pause while execute is stopped, no
    pending entry of either group loses its body, and every patch gets its outcome."""
    row = await f15(tmp_path, "valkey", PATCHES)
    row.assert_ok()
    assert int(row.figures["ingress_trimmed"]) > 0
    assert int(row.figures["oldest_pending_checks"]) > 0
