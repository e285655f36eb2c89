"""Reading the log back: show, log, diff, blame, ls, verify, rebuild."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import click
import msgspec

from patchlog.ops.clibase import (
    client_call,
    global_options,
    handle_errors,
    no_document,
    run,
    settings_of,
)
from patchlog.ops.progress import ProgressLine
from patchlog.ops.when import parse_time
from patchlog.streams.errors import NotFound
from patchlog.streams.settings import Settings

__all__ = ["COMMANDS"]

T = TypeVar("T")
_JSON = msgspec.json.Encoder()


def _time(ms: int) -> str:
    """Milliseconds since the epoch as ``YYYY-MM-DD HH:MM:SS`` UTC."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def _on_doc(
    settings: Settings, doc: str, read: Callable[[Any], Awaitable[T]]
) -> Callable[[Any], Awaitable[T]]:
    """``read`` with a missing document reported as such (naming the server and folder),
    and a missing revision of an existing one as itself."""

    async def go(client: Any) -> T:
        try:
            return await read(client)
        except NotFound as err:
            if await _exists(client, doc):
                raise  # the document exists; the revision does not
            raise await no_document(client, settings, doc) from err

    return go


async def _exists(client: Any, doc: str) -> bool:
    from patchlog.streams.log import read_head  # noqa: PLC0415

    return (await read_head(client.redis, client.keys, doc)).rev > 0


@click.command()
@global_options
@click.argument("doc")
@click.option("--rev", type=int, help="Show the document at this revision.")
@click.option("--at", "at_time", help="As it was at this time (ISO 8601, epoch ms, or -5m).")
@click.option("--json", "as_json", is_flag=True, help="Content, revision, hash and time as JSON.")
@click.pass_context
@handle_errors
def show(ctx: click.Context, doc: str, rev: int | None, at_time: str | None, as_json: bool) -> None:
    """Print a document at its head, at --rev or --at; status 4 if it does not exist.

    Any revision costs at most PATCHLOG_SNAPSHOT_EVERY revisions replayed from a
    checkpoint, however long the log.
    """
    if rev is not None and at_time is not None:
        raise click.UsageError("give at most one of --rev and --at")
    settings = settings_of(ctx)
    when = parse_time(at_time, "--at") if at_time is not None else None
    found = run(
        client_call(settings, _on_doc(settings, doc, lambda c: c.at(doc, rev, when_ms=when)))
    )
    if as_json:
        click.echo(
            _JSON.encode(
                {
                    "doc": found.doc,
                    "rev": found.rev,
                    "hash": found.hash,
                    "at": found.at,
                    "time": _iso(found.at) if found.at else None,
                    "lines": found.lines,
                }
            ).decode()
        )
        return
    for line in found.lines:
        click.echo(line)


@click.command(name="log")
@global_options
@click.argument("doc")
@click.option("--limit", default=50, show_default=True, help="Newest revisions (0: all).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per revision.")
@click.pass_context
@handle_errors
def log_cmd(ctx: click.Context, doc: str, limit: int, as_json: bool) -> None:
    """List a document's revisions, newest first; status 4 if it does not exist."""
    settings = settings_of(ctx)
    rows = run(
        client_call(settings, _on_doc(settings, doc, lambda c: c.history(doc, limit or None)))
    )
    if as_json:
        for r in rows:
            click.echo(_JSON.encode({**msgspec.structs.asdict(r), "time": _iso(r.at)}).decode())
        return
    click.echo(
        f"{'rev':>6}  {'time (UTC)':<19}  {'author':<12}  {'patch id':<34}  "
        f"{'+':>5} {'-':>5}  lines"
    )
    for r in rows:
        click.echo(
            f"{r.rev:>6}  {_time(r.at)}  {r.author or '-':<12}  {r.id:<34}  "
            f"{'+' + str(r.added):>5} {'-' + str(r.removed):>5}  {r.lines}"
        )


@click.command()
@global_options
@click.argument("doc")
@click.argument("a", type=int)
@click.argument("b", type=int, required=False)
@click.pass_context
@handle_errors
def diff(ctx: click.Context, doc: str, a: int, b: int | None) -> None:
    """Unified diff of DOC from revision A to B (default: the head), for GNU patch."""
    from patchlog.projections.diff import render_diff  # noqa: PLC0415

    settings = settings_of(ctx)

    async def both(client: Any) -> tuple[Any, Any]:
        return await client.at(doc, a), await client.at(doc, b)

    old, new = run(client_call(settings, _on_doc(settings, doc, both)))
    click.echo(render_diff(old.lines, new.lines, doc), nl=False)


@click.command()
@global_options
@click.argument("doc")
@click.option("--rev", type=int, help="Blame the document at this revision.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_context
@handle_errors
def blame(ctx: click.Context, doc: str, rev: int | None, as_json: bool) -> None:
    """Each line with the revision, author, patch id and time that last changed it."""
    settings = settings_of(ctx)
    rows = run(client_call(settings, _on_doc(settings, doc, lambda c: c.blame(doc, rev))))
    if as_json:
        for r in rows:
            click.echo(_JSON.encode({**msgspec.structs.asdict(r), "time": _iso(r.at)}).decode())
        return
    width = len(str(len(rows)))
    for r in rows:
        click.echo(
            f"r{r.rev:<5} {r.id[:12]:<12} ({r.author or '-':<10} {_time(r.at)} "
            f"{r.line:>{width}}) {r.text}"
        )


@click.command()
@global_options
@click.argument("prefix", default="")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per document.")
@click.pass_context
@handle_errors
def ls(ctx: click.Context, prefix: str, as_json: bool) -> None:
    """List documents (whose names start with PREFIX): head revision, lines, last change."""
    settings = settings_of(ctx)
    rows = run(client_call(settings, lambda c: c.documents(prefix)))
    if as_json:
        for r in rows:
            click.echo(_JSON.encode({**msgspec.structs.asdict(r), "time": _iso(r.at)}).decode())
        return
    width = max([len(r.doc) for r in rows] + [8])
    click.echo(f"{'document':<{width}}  {'rev':>7}  {'lines':>7}  last change (UTC)")
    for r in rows:
        click.echo(f"{r.doc:<{width}}  {r.rev:>7}  {r.lines:>7}  {_time(r.at)}")


@click.command()
@global_options
@click.pass_context
@handle_errors
def verify(ctx: click.Context) -> None:
    """Check every document's revision chain: gap-free, each prev the previous hash,
    each revision's ops giving its hash. Names the first broken revision of each
    document; exit 1 if any."""
    from patchlog.projections.rebuild import verify as check  # noqa: PLC0415

    settings = settings_of(ctx)
    bar = ProgressLine("verify")

    async def go(client: Any) -> Any:
        bar.total = int(await client.redis.xlen(settings.keys.revisions))
        return await check(client.redis, settings.keys, bar.update)

    report = run(client_call(settings, go))
    bar.done()
    for d in report.differences:
        click.echo(f"BROKEN {d.message}")
    click.echo(
        f"{report.documents} documents, {report.revisions} revisions: "
        + ("every chain holds" if report.ok else f"{len(report.differences)} broken documents")
    )
    sys.exit(0 if report.ok else 1)


@click.command()
@global_options
@click.option("--repair", is_flag=True, help="Rewrite what differs from the log.")
@click.pass_context
@handle_errors
def rebuild(ctx: click.Context, repair: bool) -> None:
    """Rebuild every document from the revision log and compare heads, hashes,
    snapshots and checkpoints; exit 1 on a difference (not repaired). Run --repair with
    the pipeline stopped, or rerun it: a head that changes during the pass is left."""
    from patchlog.projections.rebuild import rebuild as fold_all  # noqa: PLC0415

    settings = settings_of(ctx)
    bar = ProgressLine("rebuild")

    async def go(client: Any) -> Any:
        bar.total = int(await client.redis.xlen(settings.keys.revisions))
        return await fold_all(
            client.redis,
            settings.keys,
            every=settings.snapshot_every,
            repair=repair,
            progress=bar.update,
        )

    report = run(client_call(settings, go))
    bar.done()
    for d in report.differences:
        click.echo(f"{'REPAIRED' if d.repaired else 'DIFFERS'} {d.message}")
    left = [d for d in report.differences if not d.repaired]
    missing = len(report.missing)
    note = f"; {missing} checkpoints {'written' if repair else 'missing (--repair writes them)'}"
    click.echo(
        f"{report.documents} documents, {report.revisions} revisions: "
        + (f"{len(left)} differences" if left else "the log reproduces the live state")
        + (note if missing else "")
    )
    sys.exit(1 if left else 0)


COMMANDS: list[click.Command] = [show, log_cmd, diff, blame, ls, verify, rebuild]
