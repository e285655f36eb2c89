"""Rebase: carry a patch's line numbers from its base through later revisions.

A rebased op conflicts only when it would overwrite what it did not see (DESIGN,
"Concurrency"): a replace or delete whose range shares a line with a revision's op or
holds a revision's insert strictly inside it; an insert whose position a revision
replaced or deleted on both sides. Two inserts at one position do not conflict: the
rebased patch's lines go after the revision's, so commit order is document order (two
agents appending to one transcript both commit). A patch op identical to the revision's
op (same range, same lines) is dropped as already made. Independent ops commute, except
that same-place inserts follow commit order.

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


def _through(tracked: list[tuple[Splice, Splice]], later: Later) -> list[tuple[Splice, Splice]]:
    """Map ascending (current, original) splices through one revision.

    Raises ``Rejected`` (``conflict``) naming the original op, the line and the revision.
    """
    edits = list(reversed(later.splices))
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
            line = original.start + max(0, r.start - p.start) + 1
            raise Rejected(
                RejectCode.CONFLICT,
                f"{describe(original)}: line {line} of the base was changed by revision "
                f"{later.rev} ({describe(r)}); rule: a rebased op touches no line changed "
                "after its base",
            )
        out.append((Splice(p.start + delta, p.end + delta, p.lines), original))
    return out


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
