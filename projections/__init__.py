"""The pure patch model and fold: normalize, apply, rebase, diffs, content hash."""

from projections.content import EMPTY_HASH, content_bytes, content_hash, split_lines
from projections.diff import ParsedDiff, check_length, parse_diff, render_diff, verify
from projections.patch import (
    Splice,
    apply,
    check_bounds,
    check_line,
    check_lines,
    describe,
    effective,
    normalize,
    to_ops,
)
from projections.rebase import Expect, Later, check_base, map_expectations, rebase, rebase_diff

__all__ = [
    "EMPTY_HASH",
    "Expect",
    "Later",
    "ParsedDiff",
    "Splice",
    "apply",
    "check_base",
    "check_bounds",
    "check_length",
    "check_line",
    "check_lines",
    "content_bytes",
    "content_hash",
    "describe",
    "effective",
    "map_expectations",
    "normalize",
    "parse_diff",
    "rebase",
    "rebase_diff",
    "render_diff",
    "split_lines",
    "to_ops",
    "verify",
]
