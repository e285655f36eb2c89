"""Rebase: carry a patch's line numbers from its base through later revisions.

A rebased op conflicts only when it would overwrite what it did not see (DESIGN,
"Concurrency"): a replace or delete whose range shares a line with a revision's op or
holds a revision's insert strictly inside it; an insert whose position a revision
replaced or deleted on both sides. Two inserts at one position do not conflict: the
rebased patch's lines go after the revision's, so commit order is document order (two
agents appending to one transcript both commit). A patch op identical to the revision's
op (same range, same lines) is dropped as already made, and so is a run of touching ops
that makes exactly the change of a run of the revision's (however each side split it).
Independent ops commute, except that same-place inserts follow commit order.

A diff's context lines are checked against its base; at rebase they do not count as
touched: a context line a revision changed is no longer expected at the head.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from patchlog.projections.patch import Splice, describe
from patchlog.streams.errors import Rejected
from patchlog.streams.schema import RejectCode

__all__ = ["Expect", "Later", "check_base", "map_expectations", "rebase", "rebase_diff"]


class Later(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One revision after a patch's base: its number and splices as applied."""

    rev: int
    splices: tuple[Splice, ...]
    """Highest line first, as stored in the revision."""


class Expect(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A line the base must hold for a diff to apply: ``base[line] == text`` (0-based)."""

    line: int
    text: str
    removed: bool = False
    """A line the diff removes (inside one of its splices), not a context line."""


def check_base(base: int, head: int, *, strict: bool) -> None:
    """Check a patch's base against the document head.

    Raises ``Rejected``: ``stale`` if ``strict`` and the base is behind the head;
    ``base_ahead`` if the base is ahead (the caller waits before deciding that).
    """
    if base > head:
        raise Rejected(
            RejectCode.BASE_AHEAD,
            f"base: revision {base} does not exist, the head is {head}; "
            "rule: the base is at most the head",
        )
    if strict and base != head:
        raise Rejected(
            RejectCode.STALE,
            f"base: revision {base} is behind the head {head}; "
            "rule: in strict mode every patch is based on the head",
        )


def _touches(p: Splice, r: Splice) -> bool:
    """Whether revision op ``r`` and patch op ``p`` collide: their ranges share a line,
    or one's insert falls strictly inside the other's range. Inserts at one position
    (and an insert at either edge of a range) do not collide."""
    return r.start < p.end and p.start < r.end


_RANGE_RULE = (
    "rule: a rebased replace or delete conflicts only with a later change to one of its "
    "lines or an insert strictly inside its range"
)


def _conflict(original: Splice, p: Splice, r: Splice, rev: int) -> str:
    """The conflict message: the patch's op, the base line concerned, the revision."""
    where = f"{describe(original)}: "
    if p.start == p.end:
        return (
            f"{where}lines {original.start} and {original.start + 1} of the base around it "
            f"were changed by revision {rev} ({describe(r)}); rule: a rebased insert "
            "conflicts only when the lines on both sides of it were replaced or deleted"
        )
    if r.start == r.end:
        line = original.start + r.start - p.start
        return (
            f"{where}revision {rev} inserted lines after line {line} of the base, inside its "
            f"range ({describe(r)}); {_RANGE_RULE}"
        )
    line = original.start + max(0, r.start - p.start) + 1
    changed = f"line {line} of the base was changed by revision {rev} ({describe(r)})"
    return f"{where}{changed}; {_RANGE_RULE}"


def _through(tracked: list[tuple[Splice, Splice]], later: Later) -> list[tuple[Splice, Splice]]:
    """Map ascending (current, original) splices through one revision.

    Raises ``Rejected`` (``conflict``) naming the original op, the line and the revision.
    """
    edits = list(reversed(later.splices))
    tracked = _drop_made_runs(tracked, edits)
    out: list[tuple[Splice, Splice]] = []
    delta = 0
    j = 0
    for p, original in tracked:
        made = False
        while j < len(edits) and edits[j].end <= p.start and not _touches(p, edits[j]):
            r = edits[j]
            delta += len(r.lines) - (r.end - r.start)
            j += 1
            # A revision's insert at this op's own position comes first (commit order),
            # unless it is this very insert, already made.
            made = made or r == p
        if made:
            continue
        if j < len(edits) and _touches(p, edits[j]):
            r = edits[j]
            if r == p:
                delta += len(r.lines) - (r.end - r.start)
                j += 1
                continue
            raise Rejected(RejectCode.CONFLICT, _conflict(original, p, r, later.rev))
        out.append((Splice(p.start + delta, p.end + delta, p.lines), original))
    return out


def _runs(splices: Sequence[Splice]) -> list[tuple[int, int, Splice]]:
    """Maximal runs of ascending splices that touch end to start: ``(first, past_last,
    the run as one splice)``. A diff's hunk is such a run, however its ops are split."""
    out: list[tuple[int, int, Splice]] = []
    i = 0
    while i < len(splices):
        j = i + 1
        while j < len(splices) and splices[j - 1].end == splices[j].start:
            j += 1
        lines = tuple(x for s in splices[i:j] for x in s.lines)
        out.append((i, j, Splice(splices[i].start, splices[j - 1].end, lines)))
        i = j
    return out


def _drop_made_runs(
    tracked: list[tuple[Splice, Splice]], edits: Sequence[Splice]
) -> list[tuple[Splice, Splice]]:
    """``tracked`` without its runs that make exactly the change of one of the revision's
    runs (already made, however either side split it into ops)."""
    made = {run for _, _, run in _runs(edits)}
    current = [p for p, _ in tracked]
    keep: list[tuple[Splice, Splice]] = []
    for i, j, run in _runs(current):
        if run not in made:
            keep += tracked[i:j]
    return keep


def rebase(splices: Sequence[Splice], later: Sequence[Later]) -> tuple[Splice, ...]:
    """Carry normalized ``splices`` through ``later`` revisions (ascending ``rev``).

    Returns the splices against the last revision, highest line first; ops already made
    by a revision (same range, same lines) are left out, so an empty result is a
    ``noop``. Raises ``Rejected`` (``conflict``) naming the op, the line and the
    revision. Time is linear in the number of splices plus the ops of ``later``.
    """
    return tuple(s for s, _ in reversed(_carry(splices, later)))


def _carry(splices: Sequence[Splice], later: Sequence[Later]) -> list[tuple[Splice, Splice]]:
    """(current, original) pairs, ascending, of ``splices`` carried through ``later``."""
    tracked = [(s, s) for s in reversed(splices)]
    for rev in later:
        tracked = _through(tracked, rev)
    return tracked


def map_expectations(expect: Sequence[Expect], later: Sequence[Later]) -> tuple[Expect, ...]:
    """Carry a diff's expected context lines through ``later`` revisions.

    Context does not count as touched at rebase (as in ``git merge-file``): a line a
    revision changed is left out, the others move to their line at the head. ``expect``
    is ascending by line; never raises.
    """
    out: list[Expect] = []
    for e in expect:
        line = _carry_line(e.line, later)
        if line is not None:
            out.append(Expect(line, e.text, e.removed))
    return tuple(out)


def _carry_line(line: int, later: Sequence[Later]) -> int | None:
    """Where base line ``line`` (0-based) is after ``later``, or ``None`` if one of them
    replaced or deleted it."""
    for rev in later:
        shift = 0
        for r in rev.splices:  # each op wholly below the line shifts it
            if r.start <= line < r.end:
                return None
            if r.end <= line:
                shift += len(r.lines) - (r.end - r.start)
        line += shift
    return line


def rebase_diff(
    splices: Sequence[Splice], expect: Sequence[Expect], later: Sequence[Later]
) -> tuple[tuple[Splice, ...], tuple[Expect, ...]]:
    """Rebase a parsed diff: its splices as ``rebase`` does, and its expectations along.

    A removed line goes with its splice: dropped when a revision already made that
    splice, carried by the splice's shift otherwise. Context lines are carried by
    ``map_expectations``. Raises ``Rejected`` (``conflict``) for an op first, then for
    context.
    """
    tracked = _carry(splices, later)
    moved = {original: current for current, original in tracked}
    ascending = list(reversed(splices))
    carried: list[Expect] = []
    context: list[Expect] = []
    k = 0
    for e in expect:
        if not e.removed:
            context.append(e)
            continue
        while ascending[k].end <= e.line:
            k += 1
        home = ascending[k]
        if home in moved:
            carried.append(Expect(moved[home].start + e.line - home.start, e.text, removed=True))
    carried.extend(map_expectations(context, later))
    carried.sort(key=lambda e: e.line)
    return tuple(s for s, _ in reversed(tracked)), tuple(carried)
