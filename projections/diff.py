"""Unified diffs in and out: ``diff -u`` / ``git diff`` text of one file as splices.

Parsing needs no base: hunk headers give the positions, so a diff becomes splices plus
the base lines it expects (every context and removed line). ``verify`` then checks those
expectations against the base, raising ``diff_mismatch`` at the first divergent line.
``\\ No newline at end of file`` markers are accepted and carry no meaning, because a
patchlog document always ends each line with ``\\n``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence

import msgspec

from patchlog.projections.patch import Splice, check_line
from patchlog.projections.rebase import Expect
from patchlog.streams.errors import Rejected
from patchlog.streams.limits import Limits
from patchlog.streams.schema import RejectCode

__all__ = ["ParsedDiff", "check_length", "parse_diff", "render_diff", "verify"]

_NUM = "([0-9]{1,18})"
_HUNK = re.compile(rf"@@ -{_NUM}(?:,{_NUM})? \+{_NUM}(?:,{_NUM})? @@")
# Lines git and GNU diff print before the first hunk of a file.
_HEADER_PREFIXES = (
    "diff ",
    "index ",
    "--- ",
    "+++ ",
    "new file mode ",
    "deleted file mode ",
    "old mode ",
    "new mode ",
    "similarity index ",
    "dissimilarity index ",
    "rename from ",
    "rename to ",
    "copy from ",
    "copy to ",
)
# `diff -N` marks a missing file with the epoch as its timestamp.
_EPOCH = re.compile(r"\t1970-01-01 00:00:00(\.0+)? \+0000$")
_SHOWN = 60


class ParsedDiff(msgspec.Struct, frozen=True, array_like=True):
    """A diff as splices (highest line first) and the base lines it expects (ascending)."""

    splices: tuple[Splice, ...]
    expect: tuple[Expect, ...]
    base_lines: int | None = None
    """Exact line count the base must have: 0 for a new-file diff, the removed count for
    a deleted-file diff, otherwise unknown (``None``)."""
    needs: int = 0
    """Least line count the base must have for every hunk to fall inside it."""
    needs_hunk: str = ""
    """The hunk that sets ``needs``, for the message."""


def _shown(text: str) -> str:
    return repr(text if len(text) <= _SHOWN else text[:_SHOWN] + "...")


def _invalid(line_no: int, what: str) -> Rejected:
    return Rejected(RejectCode.INVALID, f"diff line {line_no}: {what}")


def _headers(rows: list[str]) -> tuple[int, bool, bool]:
    """Skip the file headers; return the first hunk's row and new-file/deleted-file flags."""
    i = 0
    new_file = deleted_file = False
    while i < len(rows) and not rows[i].startswith("@@"):
        row = rows[i]
        if row.startswith(("Binary files", "GIT binary patch")):
            raise _invalid(i + 1, "binary diff; rule: documents are text")
        if not row.startswith(_HEADER_PREFIXES):
            raise _invalid(i + 1, f"{_shown(row)} is not a diff header; rule: one unified diff")
        epoch = _EPOCH.search(row) is not None
        new_file |= row.startswith(("new file mode ", "--- /dev/null")) or (
            epoch and row.startswith("--- ")
        )
        deleted_file |= row.startswith(("deleted file mode ", "+++ /dev/null")) or (
            epoch and row.startswith("+++ ")
        )
        i += 1
    return i, new_file, deleted_file


class _Hunks:
    """Reads hunks one by one, collecting splices and expected base lines."""

    def __init__(self, rows: list[str], limits: Limits) -> None:
        self.rows = rows
        self.limits = limits
        self.splices: list[Splice] = []
        self.expect: list[Expect] = []
        self.floor = 0  # first base index the next hunk may touch
        self.removed = 0
        self.count = 0
        self.needs = 0
        self.needs_hunk = ""

    def _header(self, i: int) -> tuple[str, int, int, int]:
        """Check hunk header row ``i``; return its name, first base index and counts."""
        match = _HUNK.match(self.rows[i])
        if match is None:
            if self.rows[i].startswith(("diff ", "--- ", "+++ ", "index ")):
                raise _invalid(i + 1, "a second file; rule: a patch's diff holds one file")
            raise _invalid(
                i + 1, f"{_shown(self.rows[i])} is not a hunk header; rule: @@ -a,b +c,d @@"
            )
        self.count += 1
        where = f"hunk {self.count} ({match.group(0)})"
        old_start = int(match.group(1))
        old_len = 1 if match.group(2) is None else int(match.group(2))
        new_len = 1 if match.group(4) is None else int(match.group(4))
        ceiling = self.limits.max_doc_lines
        if old_start + old_len > ceiling + 1 or new_len > ceiling:
            raise Rejected(
                RejectCode.BOUNDS,
                f"diff line {i + 1}: {where} reaches past line {ceiling}; "
                f"rule: at most {ceiling} lines per document",
            )
        if old_len > 0 and old_start == 0:
            raise _invalid(i + 1, f"{where}: old start 0 with old lines; rule: lines count from 1")
        pos = old_start - 1 if old_len > 0 else old_start
        if pos < self.floor:
            raise _invalid(
                i + 1, f"{where} overlaps or precedes the hunk before; rule: hunks ascend"
            )
        if pos + old_len > self.needs:
            self.needs, self.needs_hunk = pos + old_len, where
        return where, pos, old_len, new_len

    def read(self, i: int) -> int:
        """Read the hunk whose header is row ``i``; return the row after it."""
        rows = self.rows
        where, pos, old_len, new_len = self._header(i)
        i += 1
        old_seen = new_seen = 0
        run_start, removed, added = -1, 0, list[str]()
        while old_seen < old_len or new_seen < new_len:
            if i == len(rows):
                raise _invalid(
                    i,
                    f"{where} ends after {old_seen} of {old_len} old and {new_seen} of "
                    f"{new_len} new lines; rule: a hunk holds the lines its header counts",
                )
            row = rows[i]
            tag, body = (row[0], row[1:]) if row else (" ", "")
            if tag == " " and old_seen < old_len and new_seen < new_len:
                self._close(run_start, removed, added)
                run_start, removed, added = -1, 0, []
                self.expect.append(Expect(pos, body))
                pos, old_seen, new_seen = pos + 1, old_seen + 1, new_seen + 1
            elif tag == "-" and old_seen < old_len:
                run_start = pos if run_start < 0 else run_start
                self.expect.append(Expect(pos, body, removed=True))
                pos, old_seen, removed = pos + 1, old_seen + 1, removed + 1
            elif tag == "+" and new_seen < new_len:
                run_start = pos if run_start < 0 else run_start
                check_line(body, f"diff line {i + 1} ({where})", self.limits)
                added.append(body)
                new_seen += 1
            elif tag != "\\":
                raise _invalid(
                    i + 1,
                    f"{where}: {_shown(row)} does not fit the hunk's counts "
                    f"({old_seen}/{old_len} old, {new_seen}/{new_len} new); "
                    "rule: context ' ', removed '-', added '+'",
                )
            i += 1
        self._close(run_start, removed, added)
        self.floor = pos
        while i < len(rows) and rows[i].startswith("\\"):
            i += 1
        return i

    def _close(self, start: int, removed: int, added: list[str]) -> None:
        if start < 0:
            return
        last = self.splices[-1] if self.splices else None
        if last is not None and removed == 0 and last.start == last.end == start:
            # -U0 hunks can add at the position where the hunk before added: one insert,
            # in the diff's order, keeps the patch's ops independent.
            self.splices[-1] = Splice(start, start, last.lines + tuple(added))
            return
        self.splices.append(Splice(start, start + removed, tuple(added)))
        self.removed += removed
        if len(self.splices) > self.limits.max_ops:
            raise Rejected(
                RejectCode.TOO_LARGE,
                f"diff: more than {self.limits.max_ops} changes; "
                f"rule: at most {self.limits.max_ops} ops per patch",
            )


def _trailer(rows: list[str], i: int) -> bool:
    """Whether rows from ``i`` on are only blank lines or a ``-- `` mail signature."""
    if rows[i] == "-- ":
        return True
    return all(not row.strip() for row in rows[i:])


def parse_diff(text: str, limits: Limits) -> ParsedDiff:
    """Parse the unified diff of one file into splices and expectations.

    CRLF line ends are read as LF (documents never hold CR). Raises ``Rejected``:
    ``invalid`` for text that is not a unified diff of one file (naming the diff's line
    and the rule), ``bounds`` for a hunk past ``limits.max_doc_lines``, ``too_large`` for
    more changes than ``limits.max_ops`` or a line over ``limits.max_line_bytes``.
    """
    rows = [row[:-1] if row.endswith("\r") else row for row in text.split("\n")]
    if rows and rows[-1] == "":
        rows.pop()
    i, new_file, deleted_file = _headers(rows)
    if i == len(rows) and not new_file:
        raise Rejected(RejectCode.INVALID, "diff: no hunk found; rule: a diff holds a hunk (@@)")
    hunks = _Hunks(rows, limits)
    while i < len(rows):
        if hunks.count and _trailer(rows, i):
            break
        i = hunks.read(i)
    if not hunks.splices and hunks.count:
        raise Rejected(
            RejectCode.INVALID, "diff: hunks change nothing; rule: a patch changes lines"
        )
    base_lines = 0 if new_file else hunks.removed if deleted_file else None
    return ParsedDiff(
        tuple(reversed(hunks.splices)),
        tuple(hunks.expect),
        base_lines,
        hunks.needs,
        hunks.needs_hunk,
    )


def check_length(parsed: ParsedDiff, base_len: int) -> None:
    """Check a diff against the length of its base.

    Raises ``Rejected`` (``diff_mismatch``) if a new-file diff has a non-empty base, a
    deleted-file diff does not remove every line of the base, or a hunk lies past the
    base's end.
    """
    if parsed.base_lines is not None and parsed.base_lines != base_len:
        kind = "creates the file" if parsed.base_lines == 0 else "deletes the file"
        raise Rejected(
            RejectCode.DIFF_MISMATCH,
            f"diff {kind}: expected a base of {parsed.base_lines} lines, found {base_len}; "
            "rule: the diff matches its base",
        )
    if parsed.needs > base_len:
        raise Rejected(
            RejectCode.DIFF_MISMATCH,
            f"diff {parsed.needs_hunk}: needs a base of at least {parsed.needs} lines, "
            f"found {base_len}; rule: the diff matches its base",
        )


def verify(expect: Sequence[Expect], content: Sequence[str]) -> None:
    """Check that ``content`` holds every expected line (``ParsedDiff.expect``, or those
    expectations carried to the head by ``rebase.map_expectations``).

    Raises ``Rejected`` (``diff_mismatch``) naming the first divergent line, expected
    against found.
    """
    for e in expect:
        if e.line >= len(content):
            raise Rejected(
                RejectCode.DIFF_MISMATCH,
                f"line {e.line + 1}: expected {_shown(e.text)}, found the end of the base "
                f"({len(content)} lines); rule: the diff matches its base",
            )
        if content[e.line] != e.text:
            raise Rejected(
                RejectCode.DIFF_MISMATCH,
                f"line {e.line + 1}: expected {_shown(e.text)}, "
                f"found {_shown(content[e.line])}; rule: the diff matches its base",
            )


def render_diff(old: Sequence[str], new: Sequence[str], name: str, context: int = 3) -> str:
    """The ``diff -u`` text turning ``old`` into ``new``, with ``a/name`` and ``b/name``."""
    rows = difflib.unified_diff(
        list(old), list(new), f"a/{name}", f"b/{name}", n=context, lineterm=""
    )
    return "".join(row + "\n" for row in rows)
