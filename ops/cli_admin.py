"""Operating the pipeline's data: dead letters and purging."""

from __future__ import annotations

import click

__all__ = ["COMMANDS"]

COMMANDS: list[click.Command] = []
