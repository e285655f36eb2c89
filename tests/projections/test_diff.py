"""Unified diff input: GNU diff/patch agree with patchlog, and mismatches are named."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import assume, given

from patchlog.projections.diff import check_length, parse_diff, render_diff, verify
from patchlog.projections.patch import Splice, apply
from patchlog.streams.content import content_bytes, split_lines
from patchlog.streams.errors import Rejected
from patchlog.streams.limits import Limits
from patchlog.streams.schema import RejectCode
from tests.strategies import document

LIMITS = Limits()
DIFF = shutil.which("diff")
PATCH = shutil.which("patch")
GIT = shutil.which("git")
gnu = pytest.mark.skipif(
    DIFF is None or PATCH is None, reason="GNU diffutils and patch (.ci/run installs them)"
)


def gnu_diff(tmp: Path, old: list[str], new: list[str], *flags: str) -> str:
    (tmp / "old").write_bytes(content_bytes(old))
    (tmp / "new").write_bytes(content_bytes(new))
    done = subprocess.run(
        [str(DIFF), "-u", *flags, "old", "new"], cwd=tmp, capture_output=True, check=False
    )
    assert done.returncode in (0, 1), done.stderr
    return done.stdout.decode("utf-8")


def gnu_patch(tmp: Path, old: list[str], diff: str) -> bytes:
    target = tmp / "target"
    target.write_bytes(content_bytes(old))
    done = subprocess.run(
        [str(PATCH), "--silent", "--force", str(target)],
        input=diff.encode("utf-8"),
        capture_output=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return target.read_bytes()


def through_patchlog(old: list[str], diff: str) -> bytes:
    parsed = parse_diff(diff, LIMITS)
    check_length(parsed, len(old))
    verify(parsed.expect, old)
    return content_bytes(apply(old, parsed.splices))


@gnu
@given(document, document)
def test_gnu_diff_parsed_and_applied_matches_new_and_gnu_patch(
    tmp_path_factory: pytest.TempPathFactory, old: list[str], new: list[str]
) -> None:
    """Ops parsed from `diff -u old new` turn old into new byte for byte, as GNU patch does."""
    assume(old != new)
    tmp = tmp_path_factory.mktemp("diff")
    for flags in ((), ("-U1",), ("-U0",)):
        diff = gnu_diff(tmp, old, new, *flags)
        assert through_patchlog(old, diff) == content_bytes(new)
        assert gnu_patch(tmp, old, diff) == content_bytes(new)


@gnu
@given(document, document)
def test_rendered_diff_round_trips_and_gnu_patch_agrees(
    tmp_path_factory: pytest.TempPathFactory, old: list[str], new: list[str]
) -> None:
    """The diff patchlog prints for a dry run applies to old, by patchlog and by GNU patch."""
    if old == new:
        assert render_diff(old, new, "doc") == ""
        return
    diff = render_diff(old, new, "doc")
    assert through_patchlog(old, diff) == content_bytes(new)
    assert gnu_patch(tmp_path_factory.mktemp("render"), old, diff) == content_bytes(new)


@pytest.mark.skipif(GIT is None, reason="git (.ci/run installs it)")
def test_git_diff_with_headers_and_new_file(tmp_path: Path) -> None:
    """git diff output, new-file diffs included, parses and applies."""
    (tmp_path / "new").write_bytes(b"one\ntwo\n")
    done = subprocess.run(
        [str(GIT), "diff", "--no-index", "/dev/null", "new"],
        cwd=tmp_path,
        capture_output=True,
        check=False,
    )
    diff = done.stdout.decode()
    assert diff.startswith("diff --git")
    assert "new file mode" in diff
    assert through_patchlog([], diff) == b"one\ntwo\n"
    err = pytest.raises(Rejected, through_patchlog, ["x"], diff).value
    assert (err.code, err.message) == (
        RejectCode.DIFF_MISMATCH,
        "diff creates the file: expected a base of 0 lines, found 1; "
        "rule: the diff matches its base",
    )
    (tmp_path / "a").write_bytes(b"l1\nl2\nl3\n")
    (tmp_path / "b").write_bytes(b"l1\nL2\nl3\n")
    git_diff = subprocess.run(
        [str(GIT), "diff", "--no-index", "a", "b"], cwd=tmp_path, capture_output=True, check=False
    ).stdout.decode()
    assert git_diff.startswith("diff --git a/a b/b")
    assert "index " in git_diff
    assert through_patchlog(["l1", "l2", "l3"], git_diff) == b"l1\nL2\nl3\n"


def test_no_newline_at_end_of_file_marker_is_accepted() -> None:
    """`\\ No newline at end of file` lines parse; documents always end lines with LF."""
    diff = "--- a\n+++ b\n@@ -1,2 +1,2 @@\n one\n-two\n\\ No newline at end of file\n+TWO\n"
    assert through_patchlog(["one", "two"], diff) == b"one\nTWO\n"


def test_deleted_file_diff_empties_the_document() -> None:
    """A deleted-file diff removes every line, and only applies to a base of that size."""
    diff = "--- a/x\n+++ /dev/null\n@@ -1,2 +0,0 @@\n-a\n-b\n"
    assert through_patchlog(["a", "b"], diff) == b""
    err = pytest.raises(Rejected, through_patchlog, ["a", "b", "c"], diff).value
    assert (err.code, err.message) == (
        RejectCode.DIFF_MISMATCH,
        "diff deletes the file: expected a base of 2 lines, found 3; "
        "rule: the diff matches its base",
    )


def test_diff_mismatch_names_first_divergent_line() -> None:
    """Context that differs from the base is diff_mismatch: line, expected, found."""
    diff = "--- a\n+++ b\n@@ -2,3 +2,3 @@\n two\n-three\n+THREE\n four\n"
    err = pytest.raises(Rejected, through_patchlog, ["one", "two", "3", "four"], diff).value
    assert (err.code, err.message) == (
        RejectCode.DIFF_MISMATCH,
        "line 3: expected 'three', found '3'; rule: the diff matches its base",
    )
    err = pytest.raises(Rejected, through_patchlog, ["one", "two"], diff).value
    assert (err.code, err.message) == (
        RejectCode.DIFF_MISMATCH,
        "diff hunk 1 (@@ -2,3 +2,3 @@): needs a base of at least 4 lines, found 2; "
        "rule: the diff matches its base",
    )
    insert_only = "@@ -10,0 +11 @@\n+x\n"
    err = pytest.raises(Rejected, through_patchlog, ["one", "two"], insert_only).value
    assert (err.code, err.message) == (
        RejectCode.DIFF_MISMATCH,
        "diff hunk 1 (@@ -10,0 +11 @@): needs a base of at least 10 lines, found 2; "
        "rule: the diff matches its base",
    )


@pytest.mark.parametrize(
    ("diff", "message"),
    [
        ("", "diff: no hunk found; rule: a diff holds a hunk (@@)"),
        ("hello\n", "diff line 1: 'hello' is not a diff header; rule: one unified diff"),
        (
            "--- a\n+++ b\n@@ -1,2 +1,2 @@\n a\n",
            "diff line 4: hunk 1 (@@ -1,2 +1,2 @@) ends after 1 of 2 old and 1 of 2 new "
            "lines; rule: a hunk holds the lines its header counts",
        ),
        (
            "--- a\n+++ b\n@@ -1 +1 @@\n-a\n+b\n--- c\n+++ d\n@@ -1 +1 @@\n-a\n+b\n",
            "diff line 6: a second file; rule: a patch's diff holds one file",
        ),
        (
            "--- a\n+++ b\n@@ -1 +1 @@\n-a\n+b\n@@ -1 +1 @@\n-a\n+b\n",
            "diff line 6: hunk 2 (@@ -1 +1 @@) overlaps or precedes the hunk before; "
            "rule: hunks ascend",
        ),
        (
            "--- a\n+++ b\n@@ -1 +1 @@\n*a\n",
            "diff line 4: hunk 1 (@@ -1 +1 @@): '*a' does not fit the hunk's counts "
            "(0/1 old, 0/1 new); rule: context ' ', removed '-', added '+'",
        ),
        ("Binary files a and b differ\n", "diff line 1: binary diff; rule: documents are text"),
        (
            "--- a\n+++ b\n@@ -1 +1 @@\n-a\n+b\x00\n",
            "diff line 5 (hunk 1 (@@ -1 +1 @@)) contains NUL; rule: a line holds no LF, CR or NUL",
        ),
        (
            "--- a\n+++ b\n@@ -" + "9" * 19 + " +1 @@\n-a\n",
            "diff line 3: '@@ -" + "9" * 19 + " +1 @@' is not a hunk header; rule: @@ -a,b +c,d @@",
        ),
    ],
)
def test_malformed_diffs_are_invalid(diff: str, message: str) -> None:
    """Text that is not one well-formed unified diff is invalid, naming the diff line."""
    err = pytest.raises(Rejected, parse_diff, diff, LIMITS).value
    assert (err.code, err.message) == (RejectCode.INVALID, message)


def test_split_lines_inverts_content_bytes() -> None:
    """Reading a POSIX text file back gives the lines it was written from."""
    for lines in ([], [""], ["a"], ["a", "", "b"]):
        assert split_lines(content_bytes(lines)) == lines


def test_crlf_diff_blank_tail_and_signature_are_accepted() -> None:
    """CRLF diffs, trailing blank lines and a `-- ` signature apply as GNU patch does."""
    crlf = "--- a\r\n+++ b\r\n@@ -1,2 +1,2 @@\r\n a\r\n-b\r\n+B\r\n"
    assert through_patchlog(["a", "b"], crlf) == b"a\nB\n"
    tail = "--- a\n+++ b\n@@ -1 +1 @@\n-a\n+A\n\n\n"
    assert through_patchlog(["a"], tail) == b"A\n"
    signed = "--- a\n+++ b\n@@ -1 +1 @@\n-a\n+A\n-- \n2.39.5\n"
    assert through_patchlog(["a"], signed) == b"A\n"


def test_zero_context_inserts_at_one_position_become_one_op() -> None:
    """-U0 hunks adding at the same position merge into one insert, in diff order."""
    diff = "--- a\n+++ b\n@@ -1,1 +1,2 @@\n a\n+x\n@@ -1,0 +3 @@\n+y\n"
    parsed = parse_diff(diff, LIMITS)
    assert parsed.splices == (Splice(1, 1, ("x", "y")),)
    assert through_patchlog(["a"], diff) == b"a\nx\ny\n"


def test_new_empty_file_and_epoch_headers() -> None:
    """A new empty file has no hunk; `diff -N` epoch headers mark new and deleted files."""
    empty = "diff --git a/e b/e\nnew file mode 100644\nindex 0000000..e69de29\n"
    assert parse_diff(empty, LIMITS).splices == ()
    assert through_patchlog([], empty) == b""
    created = "--- x\t1970-01-01 00:00:00.000000000 +0000\n+++ x\t2026-11-24\n@@ -0,0 +1 @@\n+n\n"
    err = pytest.raises(Rejected, through_patchlog, ["old"], created).value
    assert err.code is RejectCode.DIFF_MISMATCH
    assert through_patchlog([], created) == b"n\n"
