"""Configurable size limits of the patch model (DESIGN invariant 7)."""

from __future__ import annotations

import msgspec

__all__ = ["MAX_LINE_NUMBER", "Limits"]

MAX_LINE_NUMBER = 2**31
"""Hard ceiling on every line count and number, far below 2**53 so that Lua's doubles
represent them exactly whatever the configured limits say."""


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """Limits a patch must respect; exceeding one is a ``too_large`` rejection.

    Raises ``ValueError`` on construction if a limit is not positive or ``max_doc_lines``
    is above ``MAX_LINE_NUMBER``.
    """

    max_ops: int = 10_000
    """Ops per patch (after a diff is turned into ops)."""
    max_line_bytes: int = 64 * 1024
    """UTF-8 bytes per line, line break excluded."""
    max_patch_bytes: int = 4 * 1024 * 1024
    """Bytes of all fields of one ingress entry together."""
    max_doc_lines: int = 1_000_000
    """Lines per document after the patch is applied."""

    def __post_init__(self) -> None:
        for name in ("max_ops", "max_line_bytes", "max_patch_bytes", "max_doc_lines"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_doc_lines > MAX_LINE_NUMBER:
            raise ValueError(
                f"max_doc_lines must be at most {MAX_LINE_NUMBER}, got {self.max_doc_lines}"
            )
