"""Random patches: valid against the document they are drawn for, and reproducible."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from patchlog.ops.randomops import ops_json, single_op, spread_ops, stale_base
from patchlog.projections.patch import apply, check_bounds, normalize
from patchlog.streams.codec import decode_ingress
from patchlog.streams.limits import Limits
from patchlog.streams.schema import Delete, Insert, Op, Replace

LIMITS = Limits()


@pytest.mark.parametrize("length", [0, 1, 2, 5, 100])
def test_single_ops_stay_within_the_document(length: int) -> None:
    """Every single op, of each kind, is within bounds of the document it was drawn for."""
    rng = random.Random(length)
    kinds: Counter[type] = Counter()
    for _ in range(500):
        op = single_op(rng, length, ["x", "y"])
        check_bounds(normalize([op], LIMITS), length)
        kinds[type(op)] += 1
    assert set(kinds) == ({Insert, Replace, Delete} if length else {Insert})


def test_single_op_kinds_follow_their_weights() -> None:
    """The insert and replace weights set the mix; the rest of the draws are deletes."""
    rng = random.Random(1)
    kinds = Counter(type(single_op(rng, 10, ["x"], insert=0.4, replace=0.3)) for _ in range(10_000))
    assert 3700 < kinds[Insert] < 4300
    assert 2700 < kinds[Replace] < 3300
    assert 2700 < kinds[Delete] < 3300


@pytest.mark.parametrize("length", [3, 4, 100, 100_000])
def test_spread_ops_are_valid_and_keep_the_length(length: int) -> None:
    """An insert, a replace and a delete at distinct lines: valid, and the length stays."""
    rng = random.Random(length)
    doc = [f"line {i}" for i in range(length)]
    for serial in range(200):
        ops = spread_ops(rng, length, serial)
        assert [type(op) for op in ops] == [Insert, Replace, Delete]
        splices = normalize(ops, LIMITS)
        check_bounds(splices, length)
        assert len(apply(doc, splices)) == length


def test_a_seed_reproduces_the_patches() -> None:
    """Two generators with one seed draw the same patches (repeatable demo and bench)."""

    def draw(rng: random.Random) -> tuple[object, ...]:
        return (
            stale_base(rng, 10, share=0.5),
            single_op(rng, 10, ["x"]),
            *spread_ops(rng, 50, 1),
        )

    first, second = random.Random(42), random.Random(42)
    assert [draw(first) for _ in range(50)] == [draw(second) for _ in range(50)]


def test_a_stale_base_stays_between_floor_and_head() -> None:
    """A stale base is 1 to ``behind`` revisions back and never below ``floor``."""
    rng = random.Random(3)
    assert {stale_base(rng, 10, share=0.5) for _ in range(1000)} == {7, 8, 9, 10}
    assert {stale_base(rng, 10, share=0.5, behind=2, floor=9) for _ in range(1000)} == {9, 10}
    assert {stale_base(rng, 1, share=1.0, floor=1) for _ in range(100)} == {1}


def test_no_stale_share_draws_nothing() -> None:
    """With share 0 the head is the base and the generator's state is untouched."""
    rng = random.Random(5)
    state = rng.getstate()
    assert stale_base(rng, 10, share=0.0) == 10
    assert rng.getstate() == state


def test_ops_json_writes_the_wire_format() -> None:
    """``ops_json`` writes compact wire JSON without a null ``to``, and it decodes back."""
    ops: list[Op] = [
        Insert(at=1, lines=("a",)),
        Replace(from_=2, lines=("b",)),
        Delete(from_=3, to=4),
    ]
    text = ops_json(ops)
    assert text == (
        '[{"op":"insert","at":1,"lines":["a"]},{"op":"replace","from":2,"lines":["b"]},'
        '{"op":"delete","from":3,"to":4}]'
    )
    entry = decode_ingress({b"doc": b"d", b"base": b"0", b"ops": text.encode()}, LIMITS)
    assert entry.ops is not None
    assert list(entry.ops) == ops
