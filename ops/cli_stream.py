"""Streams as JSON lines: ``patchlog replay``."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from typing import Any

import click

from patchlog.ops.clibase import client_call, global_options, handle_errors, run, settings_of
from patchlog.ops.replay import FROM_RULE, STATUSES, STREAMS, Query, StreamId, parse_from, replay

__all__ = ["COMMANDS"]

_BLOCK_S = 1.0  # the longest one XREAD of --follow blocks; its call's timeout is that much longer


def _start(ctx: click.Context, param: click.Parameter, value: str | None) -> StreamId:
    if value is None:
        return (0, 0)
    try:
        return parse_from(value, time.time_ns() // 1_000_000)
    except ValueError as err:
        raise click.BadParameter(str(err), ctx, param) from None


@click.command(name="replay")
@global_options
@click.option(
    "--stream",
    "streams",
    multiple=True,
    type=click.Choice(STREAMS),
    help="Only this stream (repeatable; default: all five).",
)
@click.option(
    "--from",
    "start",
    callback=_start,
    metavar="ID|TIME",
    help=f"Start at this entry id or time (default: the beginning): {FROM_RULE}.",
)
@click.option("--doc", help="Only entries whose doc field is this (patches, revisions, outcomes).")
@click.option(
    "--status", type=click.Choice(STATUSES), help="Only entries whose status field is this."
)
@click.option("--limit", type=click.IntRange(min=1), help="Stop after this many entries.")
@click.option("--follow", "-f", is_flag=True, help="Then print new entries as they come.")
@click.pass_context
@handle_errors
def replay_cmd(
    ctx: click.Context,
    streams: tuple[str, ...],
    start: StreamId,
    doc: str | None,
    status: str | None,
    limit: int | None,
    follow: bool,
) -> None:
    """Print stream entries as JSON lines, merged in id order, for jq.

    \b
    One object a line: {"stream", "id", "time" (UTC, from the id), "ms",
    "fields"}. Field values are the strings on the wire, except JSON ones
    (ops, meta, entry, checks), which are decoded; one that is not JSON is
    kept as text under <name>_raw, and a value that is not UTF-8 is base64
    under <name>_b64. With --follow, new entries are printed as they come
    until Ctrl-C or SIGTERM (exit 0).

    \b
    patchlog replay --stream outcomes --status rejected --from -1h | jq .fields.message
    """
    settings = settings_of(ctx)
    query = Query(streams=streams or STREAMS, start=start, doc=doc, status=status, limit=limit)

    async def go(client: Any) -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await replay(
            client.redis,
            client.keys,
            query,
            sys.stdout.buffer,
            follow=follow,
            stop=stop,
            block_ms=int(_BLOCK_S * 1000),
        )

    try:
        run(client_call(settings, go, block=_BLOCK_S if follow else 0))
    except BrokenPipeError:
        # The reader is gone (`| head`): that ends the output, it is no failure. What is
        # still buffered goes nowhere, so that exiting does not raise the error again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(0)


COMMANDS: list[click.Command] = [replay_cmd]
