"""The progress line ``patchlog up`` prints on a terminal every few seconds.

``patchlog: 812 committed/s, backlog normalize 0 execute 12; rejected conflict 3, bounds 1``

Committed per second comes from the revisions stream's ``entries-added`` counter (one
entry per commit, unaffected by trimming), the backlog from each group's lag plus
pending, the rejections from the outcomes appended since the last line (read up to
``_READ_AT_MOST`` of them, so a line never costs more than one bounded read).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec
from redis.asyncio import Redis

from patchlog.ops.groups import read_groups
from patchlog.streams.errors import PatchlogError
from patchlog.streams.keys import Keys

__all__ = ["Pulse", "PulseSample", "pulse_text"]

_READ_AT_MOST = 10_000
_GROUPS = (("normalize", "patches"), ("execute", "normalized"))


class PulseSample(msgspec.Struct, frozen=True):
    """What one progress line is made of."""

    at: float
    """Seconds, monotonic."""
    committed: int
    """Revisions ever added (``entries-added`` of the revisions stream)."""
    backlog: dict[str, int]
    """Lag plus pending of each stage's group."""
    rejected: dict[str, int]
    """Rejections by code among the outcomes since the previous sample."""
    capped: bool = False
    """More outcomes arrived than were read: ``rejected`` counts only the first ones."""


def pulse_text(previous: PulseSample, current: PulseSample) -> str:
    """The progress line from two successive samples."""
    seconds = max(current.at - previous.at, 1e-9)
    rate = max(0, current.committed - previous.committed) / seconds
    backlog = " ".join(f"{name} {n:,}" for name, n in current.backlog.items())
    shown = f"{rate:,.1f}" if rate < 10 else f"{rate:,.0f}"  # a trickle is not 0
    text = f"patchlog: {shown} committed/s, backlog {backlog}"
    if current.rejected:
        codes = ", ".join(f"{code} {n:,}" for code, n in sorted(current.rejected.items()))
        text += f"; rejected {codes}" + (" (of the first outcomes only)" if current.capped else "")
    return text


class Pulse:
    """Samples a namespace for the progress line (each sample: four bounded reads)."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._after = "$"

    async def sample(self, now: float) -> PulseSample:
        """Read the counters, the backlogs and the outcomes since the last sample."""
        try:
            info: Any = await self.redis.xinfo_stream(self.keys.revisions)
            committed = int(info.get("entries-added") or info.get("length") or 0)
        except PatchlogError:  # no revisions stream yet: nothing committed
            committed = 0
        backlog = {}
        for group, stream in _GROUPS:
            parts = await read_groups(self.redis, self.keys.role_streams(stream), group)
            backlog[group] = sum(part.backlog for part in parts if part is not None)
        rejected: Counter[str] = Counter()
        capped = False
        if self._after == "$":
            newest: Any = await self.redis.xrevrange(self.keys.outcomes, count=1)
            self._after = newest[0][0].decode() if newest else "0-0"
        else:
            rows: Any = await self.redis.xrange(
                self.keys.outcomes, f"({self._after}", "+", count=_READ_AT_MOST
            )
            for entry_id, fields in rows:
                self._after = entry_id.decode()
                if fields.get(b"status") == b"rejected":
                    rejected[(fields.get(b"code") or b"?").decode()] += 1
            capped = len(rows) == _READ_AT_MOST
        return PulseSample(now, committed, backlog, dict(rejected), capped)
