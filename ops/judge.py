"""Judging consumer groups over a window of samples, the way Burrow judges Kafka groups.

No fixed lag threshold: a group is judged by how its backlog (entries not yet delivered
plus delivered but not acknowledged) and its progress (entries acknowledged) move over
the prober's own recent samples:

- the backlog was zero at some point in the window: ``ok`` (it keeps up);
- a backlog and no live consumer: ``failing`` (nobody will work it off), ``degraded``
  while the window has not filled (workers started with the prober may not have taken
  their lease yet: `up` restarted on a backlog is not a failed pipeline);
- a backlog and nothing acknowledged over the window: ``failing`` (stopped or stalled);
- entries acknowledged but the backlog larger at every sample than at the one before:
  ``degraded`` (slower than what arrives; Burrow's "lag increasing in every interval":
  a steady backlog of entries in flight, or one that rises and falls, keeps up);
- otherwise ``ok`` (catching up).

With fewer than two samples, or samples spanning less than ``min_span`` seconds, only
the first two rules are applied: movement over a moment says nothing (a burst that
arrived between two close samples is not a slow consumer), so, like Burrow, the
window has to fill first.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

import msgspec

from patchlog.streams.schema import HealthStatus

__all__ = ["GroupSample", "Verdict", "judge_group", "worst"]

_RANK = {HealthStatus.OK: 0, HealthStatus.DEGRADED: 1, HealthStatus.FAILING: 2}


class GroupSample(msgspec.Struct, frozen=True):
    """One probe of one consumer group."""

    at: float
    """When, in seconds (any monotonic clock shared by the window's samples)."""
    lag: int
    """Entries of the stream not yet delivered to the group."""
    pending: int
    """Entries delivered and not acknowledged."""
    acked: int
    """Entries the group has acknowledged so far (entries read minus pending): its
    progress counter; ``-1`` when the server cannot tell (no ``entries-read``)."""
    consumers: int
    """Live consumers (leases held) of the group."""

    @property
    def backlog(self) -> int:
        """What the group still has to process."""
        return self.lag + self.pending


class Verdict(msgspec.Struct, frozen=True):
    """A status and why."""

    status: HealthStatus
    reason: str


def judge_group(
    name: str,
    window: Sequence[GroupSample],
    min_span: float = 0.0,
    watched: float | None = None,
) -> Verdict:
    """The verdict on group ``name`` from its samples, oldest first (see the module);
    the movement rules need samples spanning ``min_span`` seconds at least, and "no
    live consumer" is failing once the group was ``watched`` for that long (seconds
    since the prober's first sample of it; default: the window's span).

    Raises ``ValueError`` for an empty window.
    """
    if not window:
        raise ValueError(f"{name}: no samples to judge")
    first, last = window[0], window[-1]
    span = last.at - first.at
    if any(s.backlog == 0 for s in window):
        return Verdict(HealthStatus.OK, f"{name}: caught up within the last {span:.0f} s")
    if last.consumers == 0:
        # Workers started beside the prober may not hold their lease yet.
        early = (span if watched is None else watched) < min_span
        return Verdict(
            HealthStatus.DEGRADED if early else HealthStatus.FAILING,
            f"{name}: backlog {last.backlog} and no live consumer{' yet' if early else ''}",
        )
    if len(window) < 2 or span < min_span or first.acked < 0 or last.acked < 0:
        return Verdict(HealthStatus.OK, f"{name}: backlog {last.backlog}, not enough samples")
    done = last.acked - first.acked
    if done <= 0:
        return Verdict(
            HealthStatus.FAILING,
            f"{name}: backlog {last.backlog} and nothing processed in {span:.0f} s (stalled)",
        )
    if all(b.backlog > a.backlog for a, b in itertools.pairwise(window)):
        return Verdict(
            HealthStatus.DEGRADED,
            f"{name}: backlog {first.backlog} -> {last.backlog} in {span:.0f} s while "
            f"processing {done} (slower than arrivals)",
        )
    return Verdict(
        HealthStatus.OK,
        f"{name}: backlog {first.backlog} -> {last.backlog} in {span:.0f} s (catching up)",
    )


def worst(verdicts: Iterable[Verdict]) -> HealthStatus:
    """The worst status of ``verdicts`` (``ok`` for none)."""
    return max((v.status for v in verdicts), key=_RANK.__getitem__, default=HealthStatus.OK)
