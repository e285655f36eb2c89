"""The pure patch model and fold: normalize, apply, rebase, diffs, content hash."""

from projections.content import EMPTY_HASH, content_bytes, content_hash, split_lines
from projections.diff import ParsedDiff, check_length, parse_diff, render_diff, verify
from projections.fold import Planned, base_length, fold, plan
from projections.patch import (
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
from projections.rebase import Expect, Later, check_base, map_expectations, rebase, rebase_diff

__all__ = [
    "EMPTY_HASH",
    "Expect",
    "Later",
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
    "content_bytes",
    "content_hash",
    "describe",
    "effective",
    "fold",
    "from_ops",
    "map_expectations",
    "normalize",
    "parse_diff",
    "plan",
    "rebase",
    "rebase_diff",
    "render_diff",
    "split_lines",
    "to_ops",
    "verify",
]
