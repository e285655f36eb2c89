"""``patchlog top``: ``patchlog status`` live, redrawn every ``--interval`` seconds, with
rates from successive samples (like ``rq info -i`` or ``celery events``).

A sample is ``gather_status`` (the same reads as ``patchlog status``) plus the
counters that make rates: each group's entries read and lag (``XINFO GROUPS``), and
the entries ever added to the other streams (``XINFO STREAM``'s ``entries-added``, which
trimming does not lower, unlike ``XLEN``). Rates need two samples; the first frame
shows ``-`` for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
from redis.asyncio import Redis
from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from patchlog.ops.groups import group_row
from patchlog.ops.health import GROUPS
from patchlog.ops.status import STREAMS, gather_status
from patchlog.streams.settings import Settings

__all__ = ["Rates", "Sample", "frame", "rates", "render_text", "run_top", "take_sample"]

_COUNTED = ("revisions", "outcomes", "dead", "health")
"""Streams whose rate comes from ``XINFO STREAM`` (the stage streams' from their group).
Its reply carries the first and last entries too: a revision can be up to a patch's size
(``max_patch_bytes``), read once per refresh."""


class Sample(msgspec.Struct, frozen=True):
    """What one refresh read."""

    at: float
    """``time.monotonic()`` when the reads were done (rates divide by its differences)."""
    wall_ms: int
    """The wall clock then, for the age of the health result."""
    status: dict[str, Any]
    """``gather_status``'s answer, as ``patchlog status --json`` prints it."""
    added: dict[str, int]
    """Entries ever added to each stream, where the server told."""
    done: dict[str, int]
    """Entries each group has acknowledged (read minus pending), where known."""


class Rates(msgspec.Struct, frozen=True):
    """Per-second rates between two samples; a missing key means unknown."""

    added: dict[str, float]
    """Entries added per second, by stream."""
    done: dict[str, float]
    """Entries acknowledged per second, by group."""


async def take_sample(redis: Redis, settings: Settings) -> Sample:
    """One sample: ``gather_status`` and the counters, each bounded by
    ``health_probe_timeout``; counters that could not be read are left out."""
    counters = asyncio.wait_for(_counters(redis, settings), settings.health_probe_timeout)
    status, counted = await asyncio.gather(
        gather_status(redis, settings), counters, return_exceptions=True
    )
    if isinstance(status, BaseException):  # gather_status catches its parts' errors itself
        raise status
    added, done = ({}, {}) if isinstance(counted, BaseException) else counted
    return Sample(time.monotonic(), int(time.time() * 1000), status, added, done)


async def _counters(redis: Redis, settings: Settings) -> tuple[dict[str, int], dict[str, int]]:
    keys = settings.keys
    parts = [(group, stream, keys.role_streams(stream)) for group, stream in GROUPS]
    async with redis.pipeline(transaction=False) as pipe:
        for _, _, streams in parts:
            for part in streams:
                pipe.xinfo_groups(part)
        for name in _COUNTED:
            pipe.xinfo_stream(getattr(keys, name))
        replies: list[Any] = await pipe.execute(raise_on_error=False)
    added: dict[str, int] = {}
    done: dict[str, int] = {}
    at = 0
    for group, stream, streams in parts:
        rows = [
            None if isinstance(reply, Exception) else group_row(reply, group)
            for reply in replies[at : at + len(streams)]
        ]
        at += len(streams)
        known = [row for row in rows if row is not None and row.read is not None]
        if len(known) < len(rows):
            continue  # no stream or no group yet, or a count the server cannot tell
        read = sum(row.read or 0 for row in known)
        done[group] = read - sum(row.pending for row in known)
        lags = [row.lag for row in known]
        if all(lag is not None for lag in lags):  # lag is entries-added minus entries-read
            added[stream] = read + sum(lag or 0 for lag in lags)
    for name, reply in zip(_COUNTED, replies[at:], strict=True):
        if isinstance(reply, Exception):
            if "no such key" in str(reply).lower():  # nothing was ever added (or kept)
                added[name] = 0
        elif reply.get("entries-added") is not None:
            added[name] = int(reply["entries-added"])
    return added, done


def rates(previous: Sample | None, current: Sample) -> Rates:
    """Rates between two samples; none from a single one or a counter that went down
    (a stream deleted and made again)."""
    if previous is None or current.at <= previous.at:
        return Rates({}, {})
    span = current.at - previous.at

    def per_second(old: dict[str, int], new: dict[str, int]) -> dict[str, float]:
        return {k: (new[k] - old[k]) / span for k in new.keys() & old.keys() if new[k] >= old[k]}

    return Rates(per_second(previous.added, current.added), per_second(previous.done, current.done))


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else "-"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}s"


def frame(
    current: Sample, previous: Sample | None, *, where: str, interval: float
) -> RenderableType:
    """One screen: header, server, health, a row per stage, a row per stream, workers."""
    status = current.status
    moved = rates(previous, current)
    clock = time.strftime("%H:%M:%S", time.localtime(current.wall_ms / 1000))
    parts: list[RenderableType] = [
        Text(f"patchlog top  {where}  every {interval:g} s  {clock}", style="bold")
    ]
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    for label, text in _facts(status, current.wall_ms):
        facts.add_row(label, text)
    parts.append(facts)

    stages = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for name in ("stage", "stream", "length", "lag", "pending", "oldest", "consumers"):
        stages.add_column(name, justify="left" if name in ("stage", "stream") else "right")
    stages.add_column("in/s", justify="right")
    stages.add_column("done/s", justify="right")
    groups = status["groups"]
    for group, stream in GROUPS:
        g = groups.get(group, {}) if "error" not in groups else {}
        stages.add_row(
            group,
            stream,
            _count(g.get("length")),
            _count(g.get("lag")),
            _count(g.get("pending")),
            _seconds(g.get("oldest_pending_s")),
            _count(g.get("consumers")),
            _rate(moved.added.get(stream)),
            _rate(moved.done.get(group)),
        )
    parts.append(stages)
    if "error" in groups:
        parts.append(Text(f"groups unreadable: {groups['error']}", style="red"))

    streams = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    streams.add_column("stream")
    streams.add_column("length", justify="right")
    streams.add_column("added/s", justify="right")
    lengths = status["streams"]
    for name in STREAMS:
        length = None if "error" in lengths else lengths.get(name)
        streams.add_row(name, _count(length), _rate(moved.added.get(name)))
    parts.append(streams)
    if "error" in lengths:
        parts.append(Text(f"streams unreadable: {lengths['error']}", style="red"))

    workers = status["workers"]
    if isinstance(workers, list):
        parts.append(Text("workers  " + (", ".join(workers) if workers else "none")))
    return Group(*parts)


def _facts(status: dict[str, Any], now_ms: int) -> list[tuple[str, Text]]:
    out: list[tuple[str, Text]] = []
    server = status["server"]
    if "error" in server:
        out.append(("server", Text(f"unreachable: {server['error']}", style="red")))
    else:
        memory = f"{server['used_memory'] / 2**20:.1f} MiB"
        if server["maxmemory"]:
            memory += f" of {server['maxmemory'] / 2**20:.0f} MiB"
        out.append(
            (
                "server",
                Text(
                    f"{server['product']} {server['version']}, ping {server['ping_ms']:.2f} ms, "
                    f"memory {memory}"
                ),
            )
        )
    persistence = status["persistence"]
    if "error" not in persistence:
        aof = "on" if str(persistence.get("aof_enabled")) == "1" else "off"
        out.append(
            (
                "persistence",
                Text(f"aof {aof}, last write {persistence.get('aof_last_write_status')}"),
            )
        )
    health = status["health"]
    if health is None:
        out.append(("health", Text("no result yet (patchlog up starts a prober)")))
    elif "error" in health:
        out.append(("health", Text(f"unreadable: {health['error']}", style="red")))
    else:
        style = {"ok": "green", "degraded": "yellow"}.get(health["status"], "red")
        age = max(0.0, (now_ms - health["at"]) / 1000)
        text = Text(health["status"], style=f"bold {style}")
        text.append(f", {age:.1f} s ago")
        for reason in health["reasons"]:
            text.append(f"\n{reason}")
        out.append(("health", text))
    return out


def render_text(renderable: RenderableType, width: int) -> str:
    """``renderable`` as plain text (no colours, no escape codes) ``width`` columns wide."""
    out = io.StringIO()
    Console(file=out, width=width, color_system=None, force_terminal=False).print(renderable)
    return "".join(line.rstrip() + "\n" for line in out.getvalue().splitlines())


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that a reader (``watch cat``) never sees half."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        Path(temporary).replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            Path(temporary).unlink()
        raise


async def run_top(
    redis: Redis,
    settings: Settings,
    *,
    where: str,
    interval: float,
    once: bool = False,
    output: Path | None = None,
    width: int | None = None,
    console: Console | None = None,
) -> None:
    """Sample every ``interval`` seconds and draw each frame: on the terminal (full
    screen, until SIGINT or SIGTERM), into ``output`` (replaced each time), or, on
    standard output that is not a terminal, one frame after another. With ``once``, two
    samples ``interval`` apart (so the frame has rates) and one frame."""
    console = console or Console()
    columns = width or (console.width if console.is_terminal else 100)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    draw: Callable[[RenderableType], None]
    live: Live | None = None
    if output is not None:

        def draw(renderable: RenderableType) -> None:
            write_atomically(output, render_text(renderable, columns))

    elif console.is_terminal and not once:
        live = Live(console=console, screen=True, auto_refresh=False)

        def draw(renderable: RenderableType) -> None:
            assert live is not None
            live.update(renderable, refresh=True)

    else:

        def draw(renderable: RenderableType) -> None:
            # A blank line between frames: a log of them reads one at a time.
            console.print(render_text(renderable, columns), soft_wrap=True)

    previous: Sample | None = None
    try:
        if live is not None:
            live.start()
        while not stop.is_set():
            current = await take_sample(redis, settings)
            if not (once and previous is None):
                draw(frame(current, previous, where=where, interval=interval))
                if once:
                    return
            previous = current
            # The next sample is due one interval after this one was taken.
            wait = max(0.0, current.at + interval - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)
    finally:
        if live is not None:
            live.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
