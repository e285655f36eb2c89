"""The patch model: normalization, invariants with their rejection codes, apply."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from patchlog.projections.patch import Splice, apply, check_bounds, effective, normalize, to_ops
from patchlog.streams.errors import Rejected
from patchlog.streams.limits import Limits
from patchlog.streams.schema import Delete, Insert, Op, RejectCode, Replace
from tests.strategies import doc_and_ops

LIMITS = Limits()


def one_at_a_time(doc: list[str], ops: list[Op]) -> list[str]:
    """Reference apply: each op on its own, from the highest line down, by list slicing."""

    def key(op: Op) -> tuple[int, int]:
        if isinstance(op, Insert):
            return (op.at, op.at)
        return (op.from_, (op.to or op.from_) + 1)

    out = list(doc)
    for op in sorted(ops, key=key, reverse=True):
        match op:
            case Insert(at=at, lines=lines):
                out[at - 1 : at - 1] = list(lines)
            case Replace(from_=first, to=to, lines=lines):
                out[first - 1 : (to or first)] = list(lines)
            case Delete(from_=first, to=to):
                del out[first - 1 : (to or first)]
    return out


def normalize_and_apply(ops: list[Op], length: int, limits: Limits) -> list[str]:
    splices = normalize(ops, limits)
    check_bounds(splices, length)
    return apply(["x"] * length, splices, limits)


def rejected(ops: list[Op], length: int = 10, limits: Limits = LIMITS) -> Rejected:
    with pytest.raises(Rejected) as info:
        normalize_and_apply(ops, length, limits)
    return info.value


@given(doc_and_ops())
def test_normalized_apply_equals_one_op_at_a_time(case: tuple[list[str], list[Op]]) -> None:
    """Applying normalized ops equals applying the ops one by one, bottom up."""
    doc, ops = case
    splices = normalize(ops, LIMITS)
    check_bounds(splices, len(doc))
    assert apply(doc, splices) == one_at_a_time(doc, ops)


@given(doc_and_ops(), st.randoms(use_true_random=False))
def test_listing_order_never_changes_the_result(
    case: tuple[list[str], list[Op]], rnd: random.Random
) -> None:
    """The order in which ops are listed changes neither the normal form nor the result."""
    doc, ops = case
    shuffled = list(ops)
    rnd.shuffle(shuffled)
    assert normalize(shuffled, LIMITS) == normalize(ops, LIMITS)
    assert apply(doc, normalize(shuffled, LIMITS)) == apply(doc, normalize(ops, LIMITS))


@given(doc_and_ops())
def test_base_is_never_mutated(case: tuple[list[str], list[Op]]) -> None:
    """Applying builds new content; the base snapshot stays as it was."""
    doc, ops = case
    before = list(doc)
    apply(doc, normalize(ops, LIMITS))
    assert doc == before


@given(doc_and_ops())
def test_normal_form_is_sorted_from_the_highest_line_and_round_trips(
    case: tuple[list[str], list[Op]],
) -> None:
    """Splices come highest line first, and their wire ops normalize to themselves."""
    _, ops = case
    splices = normalize(ops, LIMITS)
    assert list(splices) == sorted(splices, key=lambda s: (s.start, s.end), reverse=True)
    assert normalize(to_ops(splices), LIMITS) == splices


def test_insert_before_a_range_at_the_same_line_goes_first() -> None:
    """An insert at i and a range starting at i are independent; the insert comes first."""
    ops: list[Op] = [Replace(from_=2, lines=("R",)), Insert(at=2, lines=("I",))]
    assert apply(["a", "b", "c"], normalize(ops, LIMITS)) == ["a", "I", "R", "c"]


def test_append_and_insert_into_empty_document() -> None:
    """at = len+1 appends; the empty document takes an insert at 1."""
    assert apply([], normalize([Insert(at=1, lines=("x", "y"))], LIMITS)) == ["x", "y"]
    assert apply(["a"], normalize([Insert(at=2, lines=("b",))], LIMITS)) == ["a", "b"]


def test_replace_with_identical_lines_is_not_effective() -> None:
    """A patch that leaves the content unchanged has no effective splice (a noop)."""
    splices = normalize([Replace(from_=1, to=2, lines=("a", "b"))], LIMITS)
    assert effective(["a", "b", "c"], splices) == ()
    changed = normalize([Replace(from_=1, to=2, lines=("a", "B"))], LIMITS)
    assert effective(["a", "b", "c"], changed) == changed


@pytest.mark.parametrize(
    ("ops", "message"),
    [
        (
            [Insert(at=0, lines=("x",))],
            "ops[0] (insert at 0): at is 0; rule: line numbers are between 1 and 1000001",
        ),
        (
            [Delete(from_=2**53 + 1)],
            f"ops[0] (delete {2**53 + 1}..{2**53 + 1}): from is {2**53 + 1}; "
            "rule: line numbers are between 1 and 1000001",
        ),
        (
            [Replace(from_=5, to=3, lines=())],
            "ops[0] (replace 5..3): to is below from; rule: from <= to",
        ),
        (
            [Delete(from_=9, to=11)],
            "delete 9..11: to 11 is past the end of the base (10 lines); "
            "rule: 1 <= from <= to <= len = 10",
        ),
        (
            [Insert(at=12, lines=("x",))],
            "insert at 12: at 12 is past the end of the base (10 lines); "
            "rule: 1 <= at <= len+1 = 11",
        ),
    ],
)
def test_bounds(ops: list[Op], message: str) -> None:
    """Line numbers outside the document are rejected as bounds, naming op, line, rule."""
    err = rejected(ops)
    assert (err.code, err.message) == (RejectCode.BOUNDS, message)


@pytest.mark.parametrize(
    ("ops", "message"),
    [
        (
            [Delete(from_=3, to=5), Replace(from_=5, lines=("x",))],
            "ops[0] (delete 3..5) and ops[1] (replace 5..5) overlap at line 5; "
            "rule: no line is touched by two ops",
        ),
        (
            [Insert(at=4, lines=("x",)), Delete(from_=1), Insert(at=4, lines=("y",))],
            "ops[0] (insert at 4) and ops[2] (insert at 4) overlap at line 4; "
            "rule: no two inserts at the same position",
        ),
        (
            [Replace(from_=2, to=6, lines=()), Insert(at=4, lines=("x",))],
            "ops[0] (delete 2..6) and ops[1] (insert at 4) overlap at line 4; "
            "rule: no line is touched by two ops",
        ),
    ],
)
def test_overlap(ops: list[Op], message: str) -> None:
    """Ops touching the same line or position are rejected as overlap, naming both."""
    err = rejected(ops)
    assert (err.code, err.message) == (RejectCode.OVERLAP, message)


@pytest.mark.parametrize(
    ("ops", "message"),
    [
        ([], "ops: empty list; rule: a patch has at least one op"),
        (
            [Insert(at=1, lines=())],
            "ops[0] (insert at 1): lines is empty; rule: an insert adds lines",
        ),
        (
            [Replace(from_=1, lines=("ok", "a\rb"))],
            "ops[0] (replace 1..1): lines[1] contains CR; rule: a line holds no LF, CR or NUL",
        ),
        (
            [Insert(at=1, lines=("a\nb",))],
            "ops[0] (insert at 1): lines[0] contains LF; rule: a line holds no LF, CR or NUL",
        ),
        (
            [Insert(at=1, lines=("a\x00",))],
            "ops[0] (insert at 1): lines[0] contains NUL; rule: a line holds no LF, CR or NUL",
        ),
        (
            [Insert(at=1, lines=("\ud800",))],
            "ops[0] (insert at 1): lines[0] is not valid UTF-8 (lone surrogate); "
            "rule: lines are UTF-8 text",
        ),
    ],
)
def test_invalid_ops(ops: list[Op], message: str) -> None:
    """Malformed ops and text that is not a storable line are rejected as invalid."""
    err = rejected(ops)
    assert (err.code, err.message) == (RejectCode.INVALID, message)


def test_too_large() -> None:
    """Each configured limit is a too_large rejection naming the limit."""
    small = Limits(max_ops=2, max_line_bytes=8, max_doc_lines=11)
    three: list[Op] = [Delete(from_=1), Delete(from_=3), Delete(from_=5)]
    err = rejected(three, limits=small)
    assert (err.code, err.message) == (
        RejectCode.TOO_LARGE,
        "ops: 3 ops; rule: at most 2 ops per patch",
    )
    err = rejected([Insert(at=1, lines=("ééééé",))], limits=small)
    assert (err.code, err.message) == (
        RejectCode.TOO_LARGE,
        "ops[0] (insert at 1): lines[0] is 10 bytes; rule: at most 8 bytes per line",
    )
    err = rejected([Insert(at=1, lines=("a", "b"))], limits=small)
    assert (err.code, err.message) == (
        RejectCode.TOO_LARGE,
        "document: the patch makes 12 lines; rule: at most 11 lines per document",
    )


def test_splices_are_the_one_internal_form() -> None:
    """Each wire op maps to the documented half-open splice."""
    ops: list[Op] = [
        Insert(at=7, lines=("i",)),
        Replace(from_=2, to=3, lines=("r",)),
        Delete(from_=5),
    ]
    assert normalize(ops, LIMITS) == (
        Splice(6, 6, ("i",)),
        Splice(4, 5, ()),
        Splice(1, 3, ("r",)),
    )
