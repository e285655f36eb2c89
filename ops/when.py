"""Times given on the command line: ISO 8601, milliseconds since the epoch, relative, now."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

import click

__all__ = ["TIME_RULE", "parse_time", "to_ms"]

TIME_RULE = (
    "an ISO 8601 time (2026-12-01T08:00:00Z; UTC when it has no offset), milliseconds "
    "since the epoch, a time relative to now (-90s, -5m, -2h, -7d; units ms, s, m, h, d) "
    "or now"
)
"""What a time option accepts, as its usage error states it."""

_RELATIVE = re.compile(r"-([0-9]{1,12})(ms|s|m|h|d)")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_ms(text: str, now_ms: int | None = None) -> int:
    """Milliseconds since the epoch for ``text`` (see ``TIME_RULE``); ``now_ms`` is now,
    for relative times and ``now`` (default: this machine's clock). A time before 1970
    is 0. Raises ``ValueError`` naming the rule."""
    value = text.strip()
    if value.isdigit():
        return int(value)
    now = int(time.time() * 1000) if now_ms is None else now_ms
    if value == "now":
        return now
    relative = _RELATIVE.fullmatch(value)
    if relative is not None:
        return max(0, now - int(relative.group(1)) * _UNIT_MS[relative.group(2)])
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not a time; rule: {TIME_RULE}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # the times patchlog prints are UTC
    return max(0, (moment - _EPOCH) // timedelta(milliseconds=1))


def parse_time(text: str, option: str, now_ms: int | None = None) -> int:
    """``to_ms`` for a command-line option; raises ``click.BadParameter`` naming it."""
    try:
        return to_ms(text, now_ms)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint=option) from None
