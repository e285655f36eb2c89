"""Times given on the command line: ISO 8601, milliseconds since the epoch, or relative."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

import click

__all__ = ["parse_time"]

_RELATIVE = re.compile(r"^-(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_time(text: str, option: str, now_ms: int | None = None) -> int:
    """Milliseconds since the epoch for ``text``: ``2026-11-30T12:00:00Z`` (ISO 8601; no
    zone means UTC), ``1796084322494`` (epoch ms), or ``-5m`` (``ms``, ``s``, ``m``,
    ``h``, ``d`` before ``now_ms``, by default now).

    Raises ``click.BadParameter`` naming ``option`` and the accepted forms.
    """
    value = text.strip()
    if value.isdigit():
        return int(value)
    relative = _RELATIVE.match(value)
    if relative:
        now = int(time.time() * 1000) if now_ms is None else now_ms
        return now - int(float(relative.group(1)) * _UNIT_MS[relative.group(2)])
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is not a time; rule: ISO 8601 (2026-11-30T12:00:00Z), "
            "milliseconds since the epoch, or relative like -5m, -2h, -1d",
            param_hint=option,
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)
