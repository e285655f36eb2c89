"""Documents as files: ``patchlog export`` (the projector worker is ``worker projector``)."""

from __future__ import annotations

import click

__all__ = ["COMMANDS"]

COMMANDS: list[click.Command] = []
