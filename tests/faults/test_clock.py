"""F12 in small (``tests.faults.clock`` holds the scenario, at any size): clients whose
clocks are a day off, and the server's clock jumped an hour ahead mid-run, then back.
The scenario runs on Valkey only: Debian's redis-server, built with jemalloc, does not
run under libfaketime. The claim race the jump provokes is pinned down on both servers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from patchlog.streams.keys import EXECUTE
from patchlog.streams.scripts import Scripts
from patchlog.streams.settings import Settings
from tests.faults.clock import JUMP_S, f12, ids_backwards
from tests.faults.history import Event, Kind

PATCHES = 900


async def test_clock_jumps_and_skewed_clients_apply_every_patch_once(tmp_path: Path) -> None:
    """The jump expires every lease: live workers' entries are claimed while they work
    on them, and each patch is still applied once; ids never go backwards; clients a day
    behind or ahead commit their chains in order, with entries on the server's time."""
    row = await f12(tmp_path, "valkey", PATCHES)
    row.assert_ok()
    assert int(row.figures["spurious_claims"]) > 0
    assert int(row.figures["jump_s"]) >= JUMP_S
    assert row.figures["behind_skew_s"] == -86_400
    assert row.figures["ahead_skew_s"] == 86_400
    assert int(row.figures["behind_applied"]) > 0
    assert int(row.figures["ahead_applied"]) > 0


def _step(t_ms: int, proc: str, kind: Kind, patch: str, entry: str = "") -> Event:
    return Event(t=t_ms * 1_000_000, proc=proc, kind=kind, id=patch, doc="d", entry=entry)


def test_an_id_lower_than_one_acknowledged_before_is_caught() -> None:
    """An entry sent after another was acknowledged must get a greater id; one sent
    before that acknowledgment may get either."""
    events = [
        _step(0, "a", Kind.INVOKE, "a-1"),
        _step(1, "b", Kind.INVOKE, "b-1"),  # in flight with a-1: unordered
        _step(2, "a", Kind.OK, "a-1", "1000-3"),
        _step(3, "b", Kind.OK, "b-1", "1000-2"),
        _step(10, "c", Kind.INVOKE, "c-1"),
        _step(11, "c", Kind.OK, "c-1", "999-9"),  # after a-1's answer, yet lower
        _step(20, "a", Kind.INVOKE, "a-2"),
        _step(21, "a", Kind.OK, "a-2", "1000-4"),
    ]
    found = ids_backwards(events)
    assert len(found) == 1
    assert "c got entry 999-9 for c-1, after 1000-3 was" in found[0]


async def test_a_claim_on_a_worker_whose_lease_came_back_answers_in_three_parts(
    redis: Redis, settings: Settings, scripts: Scripts
) -> None:
    """A clock jump expires every lease; a worker that saw one gone and claims just
    after its owner renewed it must get the claim script's usual three-part answer
    (nothing claimed, the owner kept), which its claim loop unpacks: a shorter one fails
    the worker's whole step (seen in F12 as "worker step failed": not enough values)."""
    keys = settings.keys
    stream, lease = keys.normalized, keys.lease(EXECUTE, "victim")
    await redis.xgroup_create(stream, EXECUTE, id="0", mkstream=True)
    await redis.xadd(stream, {"p": b"x"})
    await redis.xreadgroup(EXECUTE, "victim", {stream: ">"}, count=10)
    await redis.set(lease, b"{}", px=60_000)  # renewed between the look and the claim
    reply: Any = await scripts.claim(keys=[stream, lease], args=[EXECUTE, "victim", "me", 10])
    assert len(reply) == 3, f"the claim script answered {reply!r}, not (claimed, removed, gone)"
    claimed, removed, gone = reply
    assert (claimed, removed, gone) == ([], 0, [])
    held: Any = await redis.xpending_range(stream, EXECUTE, "-", "+", 10, consumername="victim")
    assert len(held) == 1
