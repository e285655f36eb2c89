"""Watching the pipeline run: health and status."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click
import msgspec

from patchlog.ops.clibase import (
    client_call,
    global_options,
    handle_errors,
    run,
    settings_of,
    url_of,
)

__all__ = ["COMMANDS"]


@click.command()
@global_options
@click.option("--json", "as_json", is_flag=True, help="The whole result as JSON.")
@click.pass_context
@handle_errors
def health(ctx: click.Context, as_json: bool) -> None:
    """Print the latest health result; exit 0 ok, 1 degraded, 2 failing (or no result
    younger than three prober intervals): usable as a liveness or readiness probe."""
    from patchlog.ops.health import exit_code, latest  # noqa: PLC0415

    settings = settings_of(ctx)
    result = run(client_call(settings, lambda c: latest(c.redis, settings.keys)))
    now = int(time.time() * 1000)
    code = exit_code(result, now, settings.health_interval)
    if as_json:
        click.echo(msgspec.json.encode(result).decode() if result else "null")
    elif result is None:
        click.echo("no health result yet: is the prober running? (patchlog up starts one)")
    else:
        age = (now - result.at) / 1000
        stale = (
            " (stale: the prober has not written for a while)"
            if code == 2 and result.status.value != "failing"
            else ""
        )
        click.echo(f"{result.status.value}{stale}, {age:.1f} s ago")
        for reason in result.checks.get("reasons", []):
            click.echo(f"  {reason}")
        groups: dict[str, Any] = result.checks.get("groups", {})
        for name, g in groups.items():
            if "lag" in g:
                click.echo(
                    f"  {name}: lag {g['lag']}, pending {g['pending']}, consumers {g['consumers']}"
                )
    sys.exit(code)


@click.command()
@global_options
@click.option("--json", "as_json", is_flag=True, help="Everything as one JSON object.")
@click.pass_context
@handle_errors
def status(ctx: click.Context, as_json: bool) -> None:
    """One screen: server, persistence, streams, groups (lag, pending, oldest pending,
    consumers), live workers and the latest health result."""
    from patchlog.ops.status import gather_status, render_status  # noqa: PLC0415

    settings = settings_of(ctx)
    found = run(client_call(settings, lambda c: gather_status(c.redis, settings)))
    if as_json:
        click.echo(msgspec.json.encode(found).decode())
    else:
        click.echo(render_status(found), nl=False)


@click.command()
@global_options
@click.option(
    "--interval", default=2.0, show_default=True, type=click.FloatRange(min=0.1),
    help="Seconds between two samples.",
)  # fmt: skip
@click.option(
    "--once", is_flag=True,
    help="Draw one frame and exit (two samples --interval apart, so it has rates).",
)  # fmt: skip
@click.option(
    "--output", type=click.Path(dir_okay=False, path_type=Path),
    help="Write frames to this file as plain text (replaced each time), not the terminal.",
)  # fmt: skip
@click.option("--width", type=click.IntRange(40, 1000), help="Columns (default: the terminal's).")
@click.pass_context
@handle_errors
def top(
    ctx: click.Context, interval: float, once: bool, output: Path | None, width: int | None
) -> None:
    """`patchlog status` live: redrawn every --interval seconds until Ctrl-C, with a row
    per stage (lag, pending, oldest pending, consumers, entries in and done per second)
    and per stream (length, added per second), the workers and the latest health."""
    from patchlog.ops.config import redact  # noqa: PLC0415
    from patchlog.ops.top import run_top  # noqa: PLC0415

    settings = settings_of(ctx)
    where = f"{settings.namespace} on {redact(url_of(settings))}"
    run(
        client_call(
            settings,
            lambda c: run_top(
                c.redis, settings, where=where, interval=interval, once=once, output=output,
                width=width,
            ),
        )
    )  # fmt: skip


COMMANDS: list[click.Command] = [health, status, top]
