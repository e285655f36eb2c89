"""Random patches for the demo, the bench and the tests' load: seeded and pure.

Every function draws only from the ``random.Random`` it is given, so a seed reproduces a
run, and returns ops within the bounds of a document of the given length. Conflicts and
rebases come from the base (``stale_base``), never from invalid ops.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from patchlog.streams.schema import Delete, Insert, Op, Replace

__all__ = ["ops_json", "single_op", "spread_ops", "stale_base"]

_JSON = msgspec.json.Encoder()


def single_op(
    rng: random.Random,
    length: int,
    lines: Sequence[str],
    *,
    insert: float = 0.5,
    replace: float = 0.3,
) -> Op:
    """One op on a ``length``-line document: with probability ``insert`` (always when the
    document is empty) ``lines`` inserted at a random position, else with probability
    ``replace`` one random line replaced by ``lines``, else one random line deleted."""
    roll = rng.random()
    if length == 0 or roll < insert:
        return Insert(at=rng.randint(1, length + 1), lines=tuple(lines))
    line = rng.randint(1, length)
    if roll < insert + replace:
        return Replace(from_=line, lines=tuple(lines))
    return Delete(from_=line)


def spread_ops(rng: random.Random, length: int, serial: int) -> list[Op]:
    """An insert, a replace and a delete at three distinct random lines of a
    ``length``-line document (``length >= 3``), ascending; the document keeps its
    length, and the new lines name ``serial``."""
    a, b, c = sorted(rng.sample(range(1, length + 1), 3))
    return [
        Insert(at=a, lines=(f"inserted {serial}",)),
        Replace(from_=b, lines=(f"replaced {serial}",)),
        Delete(from_=c),
    ]


def stale_base(
    rng: random.Random, head: int, *, share: float, behind: int = 3, floor: int = 0
) -> int:
    """``head``, or with probability ``share`` (when ``head > floor``) a base 1 to
    ``behind`` revisions older but not below ``floor``: the pipeline then rebases the
    patch, or rejects it as a conflict when it touches lines changed since."""
    if share > 0 and head > floor and rng.random() < share:
        return max(floor, head - rng.randint(1, behind))
    return head


def ops_json(ops: Iterable[Op]) -> str:
    """The wire JSON of an ``ops`` field for a raw XADD, an unset ``to`` left out as a
    client writes it (the naive baseline reads a ``to`` key as given)."""
    return _JSON.encode([_wire(op) for op in ops]).decode()


def _wire(op: Op) -> dict[str, Any]:
    fields: dict[str, Any] = msgspec.to_builtins(op)
    if fields.get("to", 0) is None:
        del fields["to"]
    return fields
