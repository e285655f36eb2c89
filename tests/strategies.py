"""Hypothesis strategies for documents, ops and patches."""

from __future__ import annotations

from hypothesis import strategies as st

from patchlog.projections.patch import Splice, to_ops
from patchlog.streams.schema import Delete, Insert, Op, Replace

# A small alphabet makes equal lines likely, which is where diffs and rebases get
# interesting; the multibyte and odd characters cover the encoding edges.
_ALPHABET = st.sampled_from(
    ["a", "b", " ", "\t", "é", "漢", "🙂", "\u200b", "\ufeff", "\\", "+", "-", "@"]
)
line = st.text(_ALPHABET, max_size=4)
document = st.lists(line, max_size=30)


@st.composite
def independent_splices(draw: st.DrawFn, length: int, max_ops: int = 6) -> list[Splice]:
    """Pairwise independent splices within bounds of a ``length``-line base, ascending."""
    out: list[Splice] = []
    pos = 0
    last_insert_at = -1
    for _ in range(draw(st.integers(0, max_ops))):
        if pos > length:
            break
        start = draw(st.integers(pos, min(length, pos + 5)))
        kind = draw(st.sampled_from(["insert", "replace", "delete"]))
        if kind == "insert" or start == length:
            if start == last_insert_at:
                continue
            out.append(Splice(start, start, tuple(draw(st.lists(line, min_size=1, max_size=3)))))
            last_insert_at = start
            pos = start
            continue
        end = draw(st.integers(start + 1, min(length, start + 4)))
        lines = tuple(draw(st.lists(line, max_size=4))) if kind == "replace" else ()
        out.append(Splice(start, end, lines))
        pos = end
    return out


def _as_op(s: Splice, explicit_to: bool, as_replace: bool) -> Op:
    if s.start == s.end:
        return Insert(at=s.start + 1, lines=s.lines)
    to = s.end if explicit_to or s.end - s.start > 1 else None
    if s.lines or as_replace:
        return Replace(from_=s.start + 1, to=to, lines=s.lines)
    return Delete(from_=s.start + 1, to=to)


@st.composite
def ops_for(draw: st.DrawFn, splices: list[Splice]) -> list[Op]:
    """Wire ops for splices, in a random order, with random spellings of the same op."""
    ops = [_as_op(s, draw(st.booleans()), draw(st.booleans())) for s in splices]
    return draw(st.permutations(ops))


@st.composite
def doc_and_ops(draw: st.DrawFn) -> tuple[list[str], list[Op]]:
    """A document and a valid, non-empty list of ops against it."""
    doc = draw(document)
    splices = draw(independent_splices(len(doc)).filter(bool))
    return doc, draw(ops_for(splices))


__all__ = ["doc_and_ops", "document", "independent_splices", "line", "ops_for", "to_ops"]
