"""Backoff as a small value object: failures in, seconds out."""

from __future__ import annotations

import random

import msgspec

__all__ = ["Backoff"]


class Backoff(msgspec.Struct, frozen=True):
    """Exponential backoff with full jitter: ``uniform(0, min(cap, base * 2**(n-1)))``.

    Full jitter (AWS's name) spreads the retries of many workers that failed together
    over the whole window, so a wait may be close to 0; callers that loop must not rely
    on a minimum wait.
    """

    base: float = 0.05
    cap: float = 2.0

    def compute(self, failures: int) -> float:
        """Seconds to wait after ``failures`` consecutive failures (0 for none)."""
        if failures <= 0:
            return 0.0
        # the exponent stops at 30: 2**30 * base is past any cap, and floats stay finite
        ceiling = min(self.cap, self.base * 2 ** min(failures - 1, 30))
        return random.uniform(0.0, ceiling)  # noqa: S311 - jitter, not crypto
