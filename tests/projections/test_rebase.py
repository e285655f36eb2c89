"""Rebase: commuting independent patches, conflicts, already-made ops, base checks."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from patchlog.projections.diff import parse_diff, verify
from patchlog.projections.patch import Splice, apply, normalize, to_ops
from patchlog.projections.rebase import (
    Expect,
    Later,
    check_base,
    map_expectations,
    rebase,
    rebase_diff,
)
from patchlog.streams.errors import Rejected
from patchlog.streams.limits import Limits
from patchlog.streams.schema import Delete, Insert, Op, RejectCode, Replace
from tests.strategies import document, independent_splices, line

LIMITS = Limits()


def desc(splices: list[Splice]) -> tuple[Splice, ...]:
    return tuple(sorted(splices, key=lambda s: (s.start, s.end), reverse=True))


@st.composite
def two_independent_patches(
    draw: st.DrawFn,
) -> tuple[list[str], tuple[Splice, ...], tuple[Splice, ...]]:
    """A base and two patches on it whose ops are pairwise independent (maybe shared)."""
    doc = draw(document)
    every = draw(independent_splices(len(doc), max_ops=8))
    assume(len(every) >= 2)
    in_a = draw(st.lists(st.booleans(), min_size=len(every), max_size=len(every)))
    a = [s for s, pick in zip(every, in_a, strict=True) if pick]
    b = [s for s, pick in zip(every, in_a, strict=True) if not pick]
    assume(a and b)
    if draw(st.booleans()):
        b.append(draw(st.sampled_from(a)))  # the same op made by both
    return doc, desc(a), desc(b)


@given(two_independent_patches())
def test_independent_patches_commute(
    case: tuple[list[str], tuple[Splice, ...], tuple[Splice, ...]],
) -> None:
    """For non-conflicting A and B on one base, A then rebased B equals B then rebased A."""
    doc, a, b = case
    a_then_b = apply(apply(doc, a), rebase(b, [Later(rev=1, splices=a)]))
    b_then_a = apply(apply(doc, b), rebase(a, [Later(rev=1, splices=b)]))
    assert a_then_b == b_then_a


@st.composite
def conflicting_patches(
    draw: st.DrawFn,
) -> tuple[list[str], tuple[Splice, ...], tuple[Splice, ...]]:
    """A base, a revision A, and a patch B with one op touching an op of A."""
    doc = draw(document)
    a = draw(independent_splices(len(doc)).filter(bool))
    r = draw(st.sampled_from(a))
    new = tuple(draw(st.lists(line, min_size=1, max_size=3)))
    if r.start == r.end:
        # Only a range around an insert collides with it; an insert at the same
        # position is ordered after it instead.
        assume(0 < r.start < len(doc))
        options = [Splice(r.start - 1, r.start + 1, new)]
    else:
        k = draw(st.integers(r.start, r.end - 1))
        options = [Splice(k, k + 1, new), Splice(r.start, r.end, new)]
        if r.start + 1 < r.end:
            options.append(Splice(k + 1, k + 1, new) if k + 1 < r.end else Splice(k, k, new))
    p = draw(st.sampled_from(options))
    assume(p != r and not (p.start == p.end == r.start and r.start != r.end))
    others = draw(independent_splices(len(doc)))
    b = [p]
    for s in others:
        try:
            normalize_splices([*b, s])
        except Rejected:
            continue
        b.append(s)
    # Not the change of a run of touching ops of A: that one is already made.
    mine = [run for run in joined(desc(b)) if run.start <= p.start and p.end <= run.end]
    assume(not set(mine) & joined(desc(a)))
    return doc, desc(a), desc(b)


def joined(splices: tuple[Splice, ...]) -> set[Splice]:
    """Each run of touching ops (end of one = start of the next) of descending
    ``splices`` as one splice."""
    out: set[Splice] = set()
    run: list[Splice] = []
    for s in [*reversed(splices), None]:
        if run and (s is None or run[-1].end != s.start):
            out.add(Splice(run[0].start, run[-1].end, tuple(x for r in run for x in r.lines)))
            run = []
        if s is not None:
            run.append(s)
    return out


def normalize_splices(splices: list[Splice]) -> None:
    normalize(to_ops(splices), LIMITS)


@given(conflicting_patches())
def test_a_conflicting_patch_is_rejected_whole(
    case: tuple[list[str], tuple[Splice, ...], tuple[Splice, ...]],
) -> None:
    """A patch touching a line changed after its base is a conflict; nothing of it applies."""
    doc, a, b = case
    head = apply(doc, a)
    snapshot = list(head)
    with pytest.raises(Rejected) as info:
        rebase(b, [Later(rev=7, splices=a)])
    assert info.value.code is RejectCode.CONFLICT
    assert "revision 7 " in info.value.message
    assert head == snapshot


def test_conflict_message_names_op_line_and_revision() -> None:
    """The conflict message names the patch's op, the base line and the revision."""
    revision = normalize([Replace(from_=5, to=6, lines=("x",))], LIMITS)
    patch = normalize([Delete(from_=4, to=5)], LIMITS)
    later = [Later(rev=3, splices=()), Later(rev=4, splices=revision)]
    err = pytest.raises(Rejected, rebase, patch, later).value
    assert (err.code, err.message) == (
        RejectCode.CONFLICT,
        "delete 4..5: line 5 of the base was changed by revision 4 (replace 5..6); "
        "rule: a rebased replace or delete conflicts only with a later change to one of "
        "its lines or an insert strictly inside its range",
    )
    inside = normalize([Insert(at=3, lines=("x",))], LIMITS)
    err = pytest.raises(Rejected, rebase, patch_of(Delete(from_=2, to=3)), [Later(5, inside)]).value
    assert err.message.startswith(
        "delete 2..3: revision 5 inserted lines after line 2 of the base, inside its range "
        "(insert at 3)"
    )
    around = normalize([Replace(from_=2, to=3, lines=("y",))], LIMITS)
    err = pytest.raises(
        Rejected, rebase, patch_of(Insert(at=3, lines=("z",))), [Later(6, around)]
    ).value
    assert err.message == (
        "insert at 3: lines 2 and 3 of the base around it were changed by revision 6 "
        "(replace 2..3); rule: a rebased insert conflicts only when the lines on both "
        "sides of it were replaced or deleted"
    )


def patch_of(*ops: Op) -> tuple[Splice, ...]:
    return normalize(list(ops), LIMITS)


def test_two_inserts_at_one_position_both_commit_in_commit_order() -> None:
    """Two appends from one base both apply: the rebased one goes after the revision's."""
    base = ["first"]
    revision = normalize([Insert(at=2, lines=("x",))], LIMITS)
    patch = normalize([Insert(at=2, lines=("y1", "y2"))], LIMITS)
    head = apply(base, revision)
    assert apply(head, rebase(patch, [Later(rev=9, splices=revision)])) == [
        "first", "x", "y1", "y2",
    ]  # fmt: skip
    again = rebase(revision, [Later(rev=9, splices=revision)])
    assert again == ()  # the very same insert, already made, is a noop


@given(document, st.data())
def test_same_place_inserts_follow_commit_order(doc: list[str], data: st.DataObject) -> None:
    """Inserts at one position by a revision and a patch both land, revision first, and
    the patch's other independent ops apply as if alone."""
    at = data.draw(st.integers(0, len(doc)))
    mine = tuple(data.draw(st.lists(line, min_size=1, max_size=3)))
    theirs = tuple(data.draw(st.lists(line, min_size=1, max_size=3)))
    assume(mine != theirs)
    revision = (Splice(at, at, theirs),)
    moved = rebase((Splice(at, at, mine),), [Later(rev=2, splices=revision)])
    assert apply(apply(doc, revision), moved) == [*doc[:at], *theirs, *mine, *doc[at:]]


def test_change_already_made_is_dropped_not_a_conflict() -> None:
    """An op that a later revision already made, line for line, is dropped (noop)."""
    revision = normalize([Replace(from_=2, lines=("B",)), Insert(at=1, lines=("0",))], LIMITS)
    same = normalize([Replace(from_=2, lines=("B",))], LIMITS)
    assert rebase(same, [Later(rev=2, splices=revision)]) == ()
    mixed = normalize([Replace(from_=2, lines=("B",)), Delete(from_=3)], LIMITS)
    assert rebase(mixed, [Later(rev=2, splices=revision)]) == (Splice(3, 4, ()),)


def test_rebase_through_several_revisions_shifts_lines() -> None:
    """Line numbers are carried through every revision between base and head."""
    base = ["a", "b", "c", "d"]
    r1 = normalize([Insert(at=1, lines=("x", "y"))], LIMITS)
    r2 = normalize([Delete(from_=3)], LIMITS)  # deletes "a" in r1's numbering
    head = apply(apply(base, r1), r2)
    patch = normalize([Replace(from_=4, lines=("D",))], LIMITS)
    moved = rebase(patch, [Later(rev=1, splices=r1), Later(rev=2, splices=r2)])
    assert apply(head, moved) == ["x", "y", "b", "c", "D"]


def test_stale_and_base_ahead() -> None:
    """Strict mode rejects any base but the head; a base ahead of the head is base_ahead."""
    check_base(4, 4, strict=True)
    check_base(3, 4, strict=False)
    err = pytest.raises(Rejected, check_base, 3, 4, strict=True).value
    assert (err.code, err.message) == (
        RejectCode.STALE,
        "base: revision 3 is behind the head 4; "
        "rule: in strict mode every patch is based on the head",
    )
    err = pytest.raises(Rejected, check_base, 6, 4, strict=False).value
    assert (err.code, err.message) == (
        RejectCode.BASE_AHEAD,
        "base: revision 6 does not exist, the head is 4; rule: the base is at most the head",
    )


def test_diff_rebases_with_its_context() -> None:
    """A diff on an old base applies after untouched edits; a context line changed in
    between no longer counts (as in git merge-file): the edit next to it commits."""
    base = ["a", "b", "c", "d", "e", "f", "g", "h"]
    diff = "--- x\n+++ x\n@@ -5,3 +5,3 @@\n e\n-f\n+F\n g\n"
    parsed = parse_diff(diff, LIMITS)
    far = [Later(rev=1, splices=normalize([Insert(at=1, lines=("0",))], LIMITS))]
    head = apply(base, far[0].splices)
    expect = map_expectations(parsed.expect, far)
    assert expect[0] == Expect(5, "e")
    verify(expect, head)
    assert apply(head, rebase(parsed.splices, far)) == ["0", "a", "b", "c", "d", "e", "F", "g", "h"]
    near = [Later(rev=2, splices=normalize([Replace(from_=7, lines=("G",))], LIMITS))]
    head = apply(base, near[0].splices)
    splices, expect = rebase_diff(parsed.splices, parsed.expect, near)
    assert [e.text for e in expect] == ["e", "f"]  # "g" was changed: no longer expected
    verify(expect, head)
    assert apply(head, splices) == ["a", "b", "c", "d", "e", "F", "G", "h"]
    removed = [Later(rev=3, splices=normalize([Replace(from_=6, lines=("X",))], LIMITS))]
    err = pytest.raises(Rejected, rebase_diff, parsed.splices, parsed.expect, removed).value
    assert err.code is RejectCode.CONFLICT  # the line the diff removes was changed


def test_same_diff_twice_is_a_noop_not_a_conflict() -> None:
    """A diff whose change a later revision already made is dropped whole (noop)."""
    diff = "--- x\n+++ x\n@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n"
    parsed = parse_diff(diff, LIMITS)
    made = [Later(rev=1, splices=parsed.splices)]
    assert rebase_diff(parsed.splices, parsed.expect, made) == (
        (),
        (Expect(0, "a"), Expect(2, "c")),
    )


def test_rebased_diff_carries_removed_lines_with_their_op() -> None:
    """Removed lines move with their op; context moves through the revision."""
    base = ["a", "b", "c", "d"]
    parsed = parse_diff("--- x\n+++ x\n@@ -3,2 +3,1 @@\n c\n-d\n", LIMITS)
    later = [Later(rev=1, splices=normalize([Insert(at=1, lines=("0", "1"))], LIMITS))]
    head = apply(base, later[0].splices)
    splices, expect = rebase_diff(parsed.splices, parsed.expect, later)
    assert expect == (Expect(4, "c"), Expect(5, "d", removed=True))
    verify(expect, head)
    assert apply(head, splices) == ["0", "1", "a", "b", "c"]
