"""A progress line on stderr for long passes over the log (rebuild, verify, export)."""

from __future__ import annotations

import sys
import time

__all__ = ["ProgressLine"]


class ProgressLine:
    """``rebuild: 120,000 of 400,000 revisions (30%), 95,000/s`` rewritten in place on a
    terminal (at most 4 times a second), one line every 10 s otherwise (logs stay short).
    """

    def __init__(self, what: str, unit: str = "revisions", total: int = 0) -> None:
        self.what = what
        self.unit = unit
        self.total = total
        self._tty = sys.stderr.isatty()
        self._start = time.monotonic()
        self._last = 0.0
        self._shown = False
        self._count = 0

    def update(self, count: int) -> None:
        """``count`` done so far; printed when the last line is old enough."""
        self._count = count
        now = time.monotonic()
        if now - self._last < (0.25 if self._tty else 10.0):
            return
        self._last = now
        self._write(self._text(now))

    def done(self) -> None:
        """Finish the line (a terminal's is ended; nothing is printed for a short run)."""
        if self._shown:
            self._write(self._text(time.monotonic()))
            if self._tty:
                sys.stderr.write("\n")

    def _text(self, now: float) -> str:
        rate = self._count / max(now - self._start, 1e-9)
        of = ""
        if self.total:
            of = f" of {self.total:,} ({min(100, 100 * self._count // self.total)}%)"
        return f"{self.what}: {self._count:,}{of} {self.unit}, {rate:,.0f}/s"

    def _write(self, text: str) -> None:
        if not self._shown and time.monotonic() - self._start < 1.0:
            return  # a pass shorter than a second prints nothing
        self._shown = True
        sys.stderr.write(("\r" + text + "\033[K") if self._tty else text + "\n")
        sys.stderr.flush()
