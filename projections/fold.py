"""The fold shared by execute and every projection: decide a patch, apply a revision."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from patchlog.projections.diff import ParsedDiff, check_length, verify
from patchlog.projections.patch import Splice, apply, check_bounds, effective, from_ops
from patchlog.projections.rebase import Later, check_base, rebase, rebase_diff
from patchlog.streams.limits import Limits
from patchlog.streams.schema import Revision

__all__ = ["Planned", "base_length", "fold", "fold_revision", "plan"]


class Planned(msgspec.Struct, frozen=True):
    """A patch that changes the document: its splices against the head, and the result."""

    splices: tuple[Splice, ...]
    content: list[str]


def base_length(head_length: int, later: Sequence[Later]) -> int:
    """Line count of the base, from the head's and the revisions after the base."""
    delta = sum(len(s.lines) - (s.end - s.start) for rev in later for s in rev.splices)
    return head_length - delta


def plan(
    content: Sequence[str],
    head: int,
    later: Sequence[Later],
    *,
    base: int,
    splices: tuple[Splice, ...],
    diff: ParsedDiff | None,
    strict: bool,
    limits: Limits,
) -> Planned | None:
    """Decide one patch against a document's head.

    ``content`` is the head revision ``head``; ``later`` holds the revisions
    ``base+1 .. head`` (ascending). Returns ``None`` for a noop (the content would not
    change). Raises ``Rejected`` with ``base_ahead``, ``stale``, ``bounds``,
    ``diff_mismatch``, ``conflict`` or ``too_large``.
    """
    check_base(base, head, strict=strict)
    if len(later) != head - base:
        raise ValueError(f"later holds {len(later)} revisions, expected {head - base}")
    length = base_length(len(content), later)
    if diff is not None:
        check_length(diff, length)
        splices = diff.splices
    check_bounds(splices, length)
    if diff is not None:
        expect = diff.expect
        if later:
            splices, expect = rebase_diff(splices, expect, later)
        verify(expect, content)
    elif later:
        splices = rebase(splices, later)
    changing = effective(content, splices)
    if not changing:
        return None
    new = apply(content, changing, limits)
    if new == content:  # e.g. a line deleted and inserted again: no revision
        return None
    return Planned(changing, new)


def fold(content: Sequence[str], splices: Sequence[Splice]) -> list[str]:
    """The content after one revision (its splices as stored, highest line first): the
    one fold that execute, loading, time travel, blame and rebuild all use."""
    return apply(content, splices)


def fold_revision(content: Sequence[str], revision: Revision) -> list[str]:
    """The content after a revision as stored in the log."""
    return fold(content, from_ops(revision.ops))
