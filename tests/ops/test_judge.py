"""Groups judged over a window like Burrow: by movement, not by thresholds."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from patchlog.ops.judge import GroupSample, Verdict, judge_group, worst
from patchlog.streams.schema import HealthStatus

OK, DEGRADED, FAILING = HealthStatus.OK, HealthStatus.DEGRADED, HealthStatus.FAILING


def window(*rows: tuple[int, int, int], consumers: int = 1) -> list[GroupSample]:
    """Samples 5 s apart from (lag, pending, acked)."""
    return [
        GroupSample(at=5.0 * i, lag=lag, pending=pending, acked=acked, consumers=consumers)
        for i, (lag, pending, acked) in enumerate(rows)
    ]


def test_each_rule() -> None:
    """Caught up, no consumer, stalled, slow and catching up, each with its reason."""
    assert judge_group("g", window((900, 10, 0), (0, 0, 910), (50, 5, 915))).status is OK
    assert judge_group("g", window((10, 0, 0), (12, 0, 0), consumers=0)) == Verdict(
        FAILING, "g: backlog 12 and no live consumer"
    )
    # ... but only once the group was watched for min_span: workers may still be starting.
    unattended = window((10, 0, 0), (12, 0, 0), consumers=0)
    assert judge_group("g", unattended, min_span=6) == Verdict(
        DEGRADED, "g: backlog 12 and no live consumer yet"
    )
    assert judge_group("g", unattended, min_span=5).status is FAILING
    assert judge_group("g", unattended[:1], min_span=6).status is DEGRADED
    # A window shorter than the probe interval holds one sample: watched time decides.
    assert judge_group("g", unattended[:1], min_span=6, watched=6).status is FAILING
    stalled = judge_group("g", window((100, 64, 500), (150, 64, 500), (200, 64, 500)))
    assert stalled == Verdict(FAILING, "g: backlog 264 and nothing processed in 10 s (stalled)")
    slow = judge_group("g", window((100, 64, 500), (180, 64, 900), (260, 64, 1300)))
    assert slow.status is DEGRADED
    assert slow.reason.startswith("g: backlog 164 -> 324 in 10 s while processing 800")
    assert judge_group("g", window((300, 64, 0), (100, 64, 400))).status is OK
    assert judge_group("g", window((300, 64, 0))).status is OK  # one sample: no judgement
    # A window that has not filled yet: no judgement by movement either.
    assert judge_group("g", window((100, 64, 500), (150, 64, 500)), min_span=6).status is OK
    assert judge_group("g", window((100, 64, 500), (150, 64, 500)), min_span=5).status is FAILING


def test_a_steady_backlog_in_flight_keeps_up() -> None:
    """Entries always in flight (a backlog that stays, or rises and falls) while
    entries are processed is ok: only a backlog growing at every sample is slow."""
    assert judge_group("g", window((49, 0, 0), (49, 0, 700), (49, 0, 1400))).status is OK
    assert judge_group("g", window((40, 9, 0), (90, 9, 500), (60, 9, 1000))).status is OK
    grows = window((40, 9, 0), (90, 9, 500), (120, 9, 1000))
    assert judge_group("g", grows).status is DEGRADED


def test_a_high_but_shrinking_backlog_is_not_a_problem() -> None:
    """No fixed threshold: a backlog of a million that shrinks is ok."""
    verdict = judge_group("g", window((1_000_000, 256, 0), (900_000, 256, 100_000)))
    assert verdict.status is OK


@given(
    st.lists(
        st.tuples(st.integers(0, 1000), st.integers(0, 100), st.integers(0, 10_000)),
        min_size=2,
        max_size=12,
    ).map(lambda rows: sorted(rows, key=lambda r: r[2]))
)
def test_progress_and_backlog_decide(rows: list[tuple[int, int, int]]) -> None:
    """Whatever the samples: zero backlog anywhere is ok; otherwise no progress is
    failing, and progress with a backlog growing at every sample is degraded."""
    samples = window(*rows)
    verdict = judge_group("g", samples)
    backlogs = [lag + pending for lag, pending, _ in rows]
    if 0 in backlogs:
        assert verdict.status is OK
    elif rows[-1][2] == rows[0][2]:
        assert verdict.status is FAILING
    elif all(b > a for a, b in itertools.pairwise(backlogs)):
        assert verdict.status is DEGRADED
    else:
        assert verdict.status is OK


def test_worst_of() -> None:
    assert worst([]) is OK
    assert worst([Verdict(OK, ""), Verdict(FAILING, ""), Verdict(DEGRADED, "")]) is FAILING
