"""The edit loop's pure part: the difference of two contents as ops."""

from __future__ import annotations

from hypothesis import given

from patchlog.projections.edit import difference
from patchlog.projections.patch import apply, normalize
from patchlog.streams.limits import Limits
from tests.strategies import document


@given(document, document)
def test_difference_turns_old_into_new(old: list[str], new: list[str]) -> None:
    """The ops are valid against ``old`` (independent, in bounds) and make ``new``."""
    ops = difference(old, new)
    assert (not ops) == (old == new)
    if ops:
        assert apply(old, normalize(ops, Limits())) == new
