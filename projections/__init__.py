"""The patch model and the fold, and reading state back from the log.

Pure: normalize, apply, rebase, diffs, the fold. With I/O: loading a document (snapshot
plus revisions), rebuild and verify, time travel.
"""

from patchlog.projections.diff import ParsedDiff, check_length, parse_diff, render_diff, verify
from patchlog.projections.fold import Planned, base_length, fold, plan
from patchlog.projections.load import Loaded, later_of, load_content, read_document
from patchlog.projections.patch import (
    Splice,
    apply,
    check_bounds,
    check_line,
    check_lines,
    describe,
    effective,
    from_ops,
    normalize,
    to_ops,
)
from patchlog.projections.rebase import (
    Expect,
    Later,
    check_base,
    map_expectations,
    rebase,
    rebase_diff,
)

__all__ = [
    "Expect",
    "Later",
    "Loaded",
    "ParsedDiff",
    "Planned",
    "Splice",
    "apply",
    "base_length",
    "check_base",
    "check_bounds",
    "check_length",
    "check_line",
    "check_lines",
    "describe",
    "effective",
    "fold",
    "from_ops",
    "later_of",
    "load_content",
    "map_expectations",
    "normalize",
    "parse_diff",
    "plan",
    "read_document",
    "rebase",
    "rebase_diff",
    "render_diff",
    "to_ops",
    "verify",
]
