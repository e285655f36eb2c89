"""Blame's origin tracking follows the fold line for line."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from patchlog.projections.blame import track
from patchlog.projections.fold import fold
from patchlog.projections.patch import Splice
from tests.strategies import independent_splices


@given(st.data())
def test_each_line_is_traced_to_the_revision_that_wrote_it(data: st.DataObject) -> None:
    """Lines written by revision r say ``r:``; after any sequence of revisions, the
    tracked origin of every line is the revision its text names."""
    lines: list[str] = []
    origins: list[int] = []
    for rev in range(1, data.draw(st.integers(1, 12)) + 1):
        drawn = data.draw(independent_splices(len(lines), max_ops=4))
        splices = tuple(
            Splice(s.start, s.end, tuple(f"{rev}:{k}" for k in range(len(s.lines))))
            for s in reversed(drawn)
        )
        lines = fold(lines, splices)
        origins = track(origins, splices, rev)
        assert origins == [int(text.split(":")[0]) for text in lines]
