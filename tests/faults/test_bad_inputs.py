"""Bad input B1 to B12 (FAULT-PLAN.md section 6) through the real stages, on both servers."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from redis.asyncio import Redis

from patchlog.streams.schema import RejectCode
from patchlog.streams.scripts import Scripts
from patchlog.streams.settings import Settings
from tests.faults.badinput import SCENARIOS, catalogue, garbage_mix, run_scenario


def test_the_catalogue_covers_every_scenario_and_names_what_it_checks() -> None:
    """Every scenario of B1 to B10 has entries, and every rejection names what it checks."""
    entries = catalogue()
    assert {b.scenario for b in entries} == set(SCENARIOS) - {"B12"}
    assert all(b.says for b in entries if isinstance(b.want, RejectCode))
    assert len({(b.scenario, b.name) for b in entries}) == len(entries)


@pytest.mark.parametrize("scenario", SCENARIOS)
async def test_each_bad_entry_gets_its_one_outcome_and_the_stages_go_on(
    redis: Redis, settings: Settings, scripts: Scripts, scenario: str
) -> None:
    """Each entry of the scenario gets exactly one outcome, with its code and a message
    naming the field and the rule; all are acknowledged, none is dead-lettered, the
    documents hold only what committed, and a good patch after them commits."""
    row = await run_scenario(redis, settings, scripts, scenario)
    row.assert_ok()


async def test_a_half_garbage_load_keeps_good_patches_flowing(
    settings: Settings, tmp_path: Path
) -> None:
    """Stage processes at full load, then at 50% garbage: every good patch commits, every
    bad one is rejected with its code, nothing is left pending or dead-lettered, and
    neither process exits."""
    production = msgspec.structs.replace(settings, batch=256, commit_chunk=64)
    row = await garbage_mix(production, 3.0, tmp_path)
    row.assert_ok()
