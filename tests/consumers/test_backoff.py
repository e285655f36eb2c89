"""Backoff: exponential growth, a cap, and full jitter over the whole window.

The draws are not seeded: each probabilistic check below fails by chance with
probability under 10**-30 (Hoeffding), so a failure is a bug, not bad luck.
"""

from __future__ import annotations

import pytest

from patchlog.consumers.backoff import Backoff

DRAWS = 4000
BACKOFF = Backoff(base=0.05, cap=2.0)


def ceiling(failures: int) -> float:
    """The window after ``failures`` failures, as the docstring defines it."""
    # beyond 2**100 the window is the cap anyway, and 2.0**10_000 would overflow
    return min(BACKOFF.cap, BACKOFF.base * 2.0 ** min(failures - 1, 100))


def draws(failures: int) -> list[float]:
    """``DRAWS`` waits after ``failures`` failures."""
    return [BACKOFF.compute(failures) for _ in range(DRAWS)]


@pytest.mark.parametrize("failures", [0, -1])
def test_no_failures_wait_nothing(failures: int) -> None:
    """Without a failure there is no wait at all."""
    assert BACKOFF.compute(failures) == 0.0


@pytest.mark.parametrize("failures", [1, 2, 3, 5, 6, 7, 12, 40, 10_000])
def test_every_wait_lies_in_the_window(failures: int) -> None:
    """Every draw lies in ``[0, min(cap, base * 2**(n-1))]``."""
    assert all(0.0 <= wait <= ceiling(failures) for wait in draws(failures))


@pytest.mark.parametrize("failures", [1, 3, 8])
def test_the_whole_window_is_used(failures: int) -> None:
    """Full jitter: waits below half the window occur as often as those above it."""
    waits = draws(failures)
    below = sum(wait < ceiling(failures) / 2 for wait in waits)
    assert 0.4 * DRAWS < below < 0.6 * DRAWS
    assert min(waits) < ceiling(failures) / 10
    assert max(waits) > ceiling(failures) * 0.9


def test_the_window_doubles_per_failure() -> None:
    """Each further failure doubles the window until the cap: waits beyond the last
    window occur."""
    for failures in range(2, 6):
        assert ceiling(failures) == 2 * ceiling(failures - 1) < BACKOFF.cap
        assert max(draws(failures)) > ceiling(failures - 1)


def test_the_cap_bounds_long_streaks() -> None:
    """After many failures the window stays at the cap, and waits still spread over it."""
    for failures in (7, 100, 10_000):
        waits = draws(failures)
        assert max(waits) <= BACKOFF.cap
        assert max(waits) > BACKOFF.cap * 0.9
        assert min(waits) < BACKOFF.cap / 10
