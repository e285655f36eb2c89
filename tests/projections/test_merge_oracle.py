"""Rebase against ``git merge-file`` as an independent oracle, and against a reference merge.

Patch A is committed on a base, then patch B, made on the same base, is rebased onto A.
git sees only the three texts and infers each side's edits; patchlog knows them. The
two agree on what the edits were only when the inference is unambiguous, so the base
lines and every inserted line are distinct (each base line ``b<i>:``, each of A's new
lines ``a<k>:``, each of B's ``c<k>:``, followed by random text): then the longest common
subsequence of the base and either side is exactly the base lines that side kept.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from hypothesis import assume, event, given, settings
from hypothesis import strategies as st

from patchlog.projections.diff import parse_diff
from patchlog.projections.fold import plan
from patchlog.projections.patch import Splice, apply
from patchlog.projections.rebase import Later, rebase
from patchlog.streams.errors import Rejected
from patchlog.streams.limits import Limits
from patchlog.streams.schema import RejectCode
from tests.strategies import independent_splices, line

LIMITS = Limits()
Case = tuple[list[str], tuple[Splice, ...], tuple[Splice, ...]]


def _desc(splices: Sequence[Splice]) -> tuple[Splice, ...]:
    return tuple(sorted(splices, key=lambda s: (s.start, s.end), reverse=True))


def _collide(x: Splice, y: Splice) -> bool:
    """Whether two ops of one patch would not be independent (normalize rejects those)."""
    same_insert = x.start == x.end == y.start == y.end
    return same_insert or (x.start < y.end and y.start < x.end)


@st.composite
def _edits(draw: st.DrawFn, length: int, tag: str) -> list[Splice]:
    """Independent splices on a ``length``-line base whose new lines are all distinct."""
    out = []
    for k, s in enumerate(draw(independent_splices(length, max_ops=4))):
        lines = tuple(f"{tag}{k}.{n}:{draw(line)}" for n in range(len(s.lines)))
        out.append(Splice(s.start, s.end, lines))
    return out


@st.composite
def two_edit_sets(draw: st.DrawFn) -> Case:
    """A base of distinct lines and two patches A and B on it, drawn independently (so
    they may collide); B sometimes also makes one of A's ops exactly."""
    size = draw(st.integers(0, 24))
    base = [f"b{i}:{draw(line)}" for i in range(size)]
    a = draw(_edits(size, "a"))
    b = draw(_edits(size, "c"))
    share: bool = draw(st.booleans())
    if a and share:
        shared = draw(st.sampled_from(a))
        if not any(_collide(shared, s) for s in b):
            b.append(shared)
    return base, _desc(a), _desc(b)


def _text(lines: Sequence[str]) -> str:
    return "".join(x + "\n" for x in lines)


def _lines(text: str) -> list[str]:
    return text.split("\n")[:-1] if text else []


def _git_merge(
    base: list[str], ours: list[str], theirs: list[str], *, union: bool
) -> tuple[int, list[str]]:
    """``git merge-file -p ours base theirs``: the number of conflicts and the merge."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = [Path(tmp, name) for name in ("ours", "base", "theirs")]
        for path, content in zip(paths, (ours, base, theirs), strict=True):
            path.write_text(_text(content), encoding="utf-8")
        flags = ["--union"] if union else []
        done = subprocess.run(
            ["git", "merge-file", "-p", "-q", *flags, *map(str, paths)],
            capture_output=True,
            timeout=30,
            check=False,
        )
    assert 0 <= done.returncode < 128, done.stderr
    return done.returncode, _lines(done.stdout.decode("utf-8"))


def _gnu_diff(base: list[str], new: list[str]) -> str:
    """``diff -u`` of two contents, as a user would submit it."""
    with tempfile.TemporaryDirectory() as tmp:
        old, changed = Path(tmp, "old"), Path(tmp, "new")
        old.write_text(_text(base), encoding="utf-8")
        changed.write_text(_text(new), encoding="utf-8")
        done = subprocess.run(
            ["diff", "-u", str(old), str(changed)], capture_output=True, timeout=30, check=False
        )
    assert done.returncode in (0, 1), done.stderr
    return done.stdout.decode("utf-8")


def _reference_merge(
    base: list[str], first: Sequence[Splice], second: Sequence[Splice]
) -> list[str]:
    """Both patches' ops applied at once; at one insert position ``first``'s lines come
    before ``second``'s, and a change both make is made once: an op both make, or a run
    of touching ops of ``second`` that makes what a run of ``first``'s makes."""
    made = {_joined(run) for run in _runs(first)}
    second = [s for run in _runs(second) if _joined(run) not in made for s in run]
    inserts: dict[int, list[str]] = {}
    ranges: set[Splice] = set()
    seen: set[Splice] = set()
    for s in (*first, *second):
        if s in seen:
            continue
        seen.add(s)
        if s.start == s.end:
            inserts.setdefault(s.start, []).extend(s.lines)
        else:
            ranges.add(s)
    merged = [*ranges, *(Splice(at, at, tuple(lines)) for at, lines in inserts.items())]
    return apply(base, _desc(merged))


def _runs(splices: Sequence[Splice]) -> list[list[Splice]]:
    """Maximal runs of touching splices (one's end is the next one's start), ascending."""
    out: list[list[Splice]] = []
    for s in sorted(splices, key=lambda x: (x.start, x.end)):
        if out and out[-1][-1].end == s.start:
            out[-1].append(s)
        else:
            out.append([s])
    return out


def _joined(run: list[Splice]) -> Splice:
    return Splice(run[0].start, run[-1].end, tuple(x for s in run for x in s.lines))


def _touching(a: Sequence[Splice], b: Sequence[Splice]) -> list[tuple[Splice, Splice]]:
    """Pairs of A's and B's ops that overlap or touch (git merges such hunks into one)."""
    return [(x, y) for x in a for y in b if x != y and x.start <= y.end and y.start <= x.end]


def _decide(
    head: list[str], a: tuple[Splice, ...], b: tuple[Splice, ...], diff: str | None
) -> list[str]:
    """B, made on the base, decided against head = base + A: the resulting content."""
    parsed = parse_diff(diff, LIMITS) if diff is not None else None
    planned = plan(
        head,
        1,
        [Later(rev=1, splices=a)],
        base=0,
        splices=b,
        diff=parsed,
        strict=False,
        limits=LIMITS,
    )
    return head if planned is None else planned.content


def _check_against_git(case: Case, *, as_diff: bool) -> None:
    base, a, b = case
    ours, theirs = apply(base, a), apply(base, b)
    assume(not as_diff or b)  # an empty diff is not a patch
    diff = _gnu_diff(base, theirs) if as_diff else None
    b_as_sent = parse_diff(diff, LIMITS).splices if diff is not None else b
    conflicts, merged = _git_merge(base, ours, theirs, union=False)
    outcome: list[str] | Rejected
    try:
        outcome = _decide(ours, a, b, diff)
    except Rejected as err:
        outcome = err
    if isinstance(outcome, Rejected):
        event("patchlog: conflict")
        assert outcome.code is RejectCode.CONFLICT, outcome.message
        # patchlog rejects only edits that really overlap: git conflicts on them too.
        assert conflicts > 0, f"git merged cleanly what patchlog rejected: {outcome.message}"
        return
    content = outcome
    # Committed: the content is both patches' edits, A's lines first at a shared place.
    assert content == _reference_merge(base, a, b_as_sent)
    if conflicts == 0:
        event("git: clean")
        assert content == merged, "patchlog's content differs from git's clean merge"
        return
    event("git: conflict, patchlog commits")
    touching = _touching(a, b_as_sent)
    # What git rejects and patchlog commits is only adjacency or inserts at one place.
    assert touching, "git conflicted on edits that do not even touch"
    if len(touching) == 1 and all(s.start == s.end for s in touching[0]):
        event("same-place inserts")
        assert content == _git_merge(base, ours, theirs, union=True)[1]


@settings(max_examples=300, deadline=None)
@given(two_edit_sets())
def test_rebase_agrees_with_git_merge_file_for_ops(case: Case) -> None:
    """B as ops: where git merges cleanly B commits with git's content; where B is
    rejected git conflicts too; a lone same-place insert equals git's ``--union``."""
    _check_against_git(case, as_diff=False)


@settings(max_examples=300, deadline=None)
@given(two_edit_sets())
def test_rebase_agrees_with_git_merge_file_for_diff_u(case: Case) -> None:
    """The same with B submitted as GNU ``diff -u`` output (three context lines, which
    never count as touched at rebase)."""
    _check_against_git(case, as_diff=True)


@given(two_edit_sets())
def test_both_orders_give_both_edits_with_commit_order_at_a_shared_place(case: Case) -> None:
    """Whenever B rebases onto A and A onto B, both orders apply every edit of both;
    they give the same content except at a position where both insert, where the patch
    committed first has its lines first."""
    base, a, b = case
    try:
        a_then_b = apply(apply(base, a), rebase(b, [Later(rev=1, splices=a)]))
        b_then_a = apply(apply(base, b), rebase(a, [Later(rev=1, splices=b)]))
    except Rejected:
        return
    assert a_then_b == _reference_merge(base, a, b)
    assert b_then_a == _reference_merge(base, b, a)
    shared_place = {s.start for s in a if s.start == s.end} & {
        s.start for s in b if s.start == s.end
    }
    if not shared_place:
        assert a_then_b == b_then_a
