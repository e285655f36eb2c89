"""Operating the pipeline's data: dead letters and purging."""

from __future__ import annotations

import sys
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
from patchlog.ops.config import redact
from patchlog.ops.dead import (
    ID_PATTERN,
    Refused,
    Retried,
    Unretryable,
    drop,
    drop_all,
    iso,
    letter_json,
    list_rows,
    original_of,
    read_letter,
    retry,
    retry_all,
    shorten,
    stage_stream,
)
from patchlog.ops.purge import DOC_KINDS, purge_all, purge_doc, purge_projector
from patchlog.streams.errors import NotFound

__all__ = ["COMMANDS"]

_JSON = msgspec.json.Encoder()
_ERROR_WIDTH = 60


def _letter_id(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not ID_PATTERN.fullmatch(value):
        raise click.BadParameter(
            f"{value!r} is not a dead letter's id (<ms>-<seq>, as `patchlog dead list` shows)",
            ctx,
            param,
        )
    return value


def _one_of(letter_id: str | None, every: bool, command: str) -> None:
    if (letter_id is None) == (not every):
        raise click.UsageError(f"give a dead letter's ID or --all to {command}")


@click.group()
@global_options
def dead() -> None:
    """Entries a stage gave up on (the dead-letter stream): list, show, retry, drop."""


@dead.command(name="list")
@global_options
@click.option(
    "--limit",
    default=50,
    show_default=True,
    type=click.IntRange(min=0),
    help="Newest dead letters (0: all).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per dead letter.")
@click.pass_context
@handle_errors
def list_cmd(ctx: click.Context, limit: int, as_json: bool) -> None:
    """List dead letters, newest first: id, time, stage, deliveries, the failed entry's
    document and patch id, and the error."""
    settings = settings_of(ctx)
    rows = run(client_call(settings, lambda c: list_rows(c.redis, c.keys, limit or None)))
    if as_json:
        for r in rows:
            click.echo(_JSON.encode({**msgspec.structs.asdict(r), "time": iso(r.at)}).decode())
        return
    width = max([len(r.id) for r in rows] + [15])
    click.echo(
        f"{'id':<{width}}  {'time (UTC)':<19}  {'stage':<9}  {'tries':>5}  "
        f"{'doc':<20}  {'patch id':<24}  error"
    )
    for r in rows:
        click.echo(
            f"{r.id:<{width}}  {iso(r.at)[:19].replace('T', ' ')}  {r.stage:<9}  "
            f"{r.deliveries:>5}  {shorten(r.doc or '-', 20):<20}  "
            f"{shorten(r.patch_id or '-', 24):<24}  {shorten(r.error, _ERROR_WIDTH)}"
        )


@dead.command()
@global_options
@click.argument("letter_id", metavar="ID", callback=_letter_id)
@click.pass_context
@handle_errors
def show(ctx: click.Context, letter_id: str) -> None:
    """Print dead letter ID as JSON: its fields with the entry as an object, whether the
    entry is still in its stage's stream, and why retry would refuse it (null if not)."""
    settings = settings_of(ctx)

    async def go(client: Any) -> dict[str, Any]:
        letter = await read_letter(client.redis, client.keys, letter_id)
        try:
            stream = stage_stream(client.keys, letter.dead.stage, letter.dead.stream)
        except Unretryable:
            original = None
        else:
            original = await original_of(client.redis, stream, letter.dead)
        return letter_json(letter, client.keys, original)

    click.echo(_JSON.encode(run(client_call(settings, go))).decode())


def _retried(r: Retried) -> str:
    said = ", ".join(
        part
        for part in (
            r.stage,
            f"doc {r.doc!r}" if r.doc is not None else "",
            f"id {r.patch_id!r}" if r.patch_id is not None else "",
        )
        if part
    )
    line = f"retried {r.id} ({said}) as {r.entry} in {r.stream}"
    if r.decided is not None:
        line += (
            f"; its id was already decided ({r.decided.status.value}, revision "
            f"{r.decided.rev}): answered from that record, not applied again"
        )
    return line


@dead.command(name="retry")
@global_options
@click.argument("letter_id", metavar="ID", required=False, callback=_letter_id)
@click.option("--all", "every", is_flag=True, help="Every dead letter there is now.")
@click.pass_context
@handle_errors
def retry_cmd(ctx: click.Context, letter_id: str | None, every: bool) -> None:
    """Put a dead letter's entry back into its stage's stream and remove the letter.

    The entry keeps its fields, so its patch id: a patch whose id already has an
    outcome is answered from it (duplicate), never applied twice. An entry whose copy
    was cut or is not text (execute's are msgpack) is taken from its stage's stream
    while it is still there, else refused (status 1), like one of an unknown stage.
    """
    _one_of(letter_id, every, "retry")
    settings = settings_of(ctx)
    if letter_id is not None:
        done = run(client_call(settings, lambda c: retry(c.redis, c.keys, letter_id)))
        click.echo(_retried(done))
        return

    async def go(client: Any) -> tuple[int, int]:
        retried = refused = 0
        async for result in retry_all(client.redis, client.keys):
            if isinstance(result, Refused):
                refused += 1
                click.echo(f"refused {result.id}: {result.reason}")
            else:
                retried += 1
                click.echo(_retried(result))
        return retried, refused

    retried, refused = run(client_call(settings, go))
    click.echo(
        f"{retried} retried, {refused} refused"
        + (f" (left in {settings.keys.dead})" if refused else "")
    )
    sys.exit(1 if refused else 0)


@dead.command(name="drop")
@global_options
@click.argument("letter_id", metavar="ID", required=False, callback=_letter_id)
@click.option("--all", "every", is_flag=True, help="Every dead letter there is now.")
@click.option("--yes", is_flag=True, help="Confirm --all.")
@click.pass_context
@handle_errors
def drop_cmd(ctx: click.Context, letter_id: str | None, every: bool, yes: bool) -> None:
    """Delete dead letter ID, or with --all --yes every dead letter there is now."""
    _one_of(letter_id, every, "drop")
    if every and not yes:
        raise click.UsageError("drop --all deletes every dead letter: add --yes to confirm")
    settings = settings_of(ctx)
    if letter_id is not None:
        run(client_call(settings, lambda c: drop(c.redis, c.keys, letter_id)))
        click.echo(f"dropped {letter_id}")
        return
    count = run(client_call(settings, lambda c: drop_all(c.redis, c.keys)))
    click.echo(f"dropped {count} dead letters from {settings.keys.dead}")


@click.command()
@global_options
@click.option("--doc", help="Remove this document's keys.")
@click.option(
    "--projector", help="Forget a retired projector (its checkpoint; health stops judging it)."
)
@click.option("--all", "everything", is_flag=True, help="Remove every key of the namespace.")
@click.option("--history", is_flag=True, help="With --doc: also its revisions (needs --yes).")
@click.option("--yes", is_flag=True, help="Confirm --all or --history.")
@click.pass_context
@handle_errors
def purge(
    ctx: click.Context,
    doc: str | None,
    projector: str | None,
    everything: bool,
    history: bool,
    yes: bool,
) -> None:
    """Remove a document's keys (--doc), a retired projector's checkpoint (--projector)
    or the whole namespace (--all --yes).

    \b
    --doc DOC removes its head, index, snapshot, checkpoints, strict flag and
    membership of the document set; the revision log keeps its history (rebuild
    --repair would restore the document from it) unless --history --yes, which
    deletes its revisions too. --projector NAME forgets a projector that no longer
    runs (its folder is left alone). --all --yes removes every key named <namespace>:*.
    Stop the pipeline first, or at least every writer of what is purged.
    """
    if [doc is not None, projector is not None, everything].count(True) != 1:
        raise click.UsageError("give one of --doc DOC, --projector NAME or --all")
    if history and doc is None:
        raise click.UsageError("--history goes with --doc")
    if everything and not yes:
        raise click.UsageError("purge --all removes every key of the namespace: add --yes")
    if history and not yes:
        raise click.UsageError("purge --history deletes revisions from the log: add --yes")
    settings = settings_of(ctx)
    where = f"namespace {settings.namespace!r} on {redact(url_of(settings))}"
    if projector is not None:
        known = run(client_call(settings, lambda c: purge_projector(c.redis, c.keys, projector)))
        if not known:
            raise NotFound(f"no projector {projector!r} in {where}")
        click.echo(f"forgot projector {projector!r} in {where}")
        return
    if doc is not None:
        done = run(
            client_call(settings, lambda c: purge_doc(c.redis, c.keys, doc, history=history))
        )
        click.echo(f"purged document {doc!r} in {where}")
        for kind in DOC_KINDS:
            click.echo(f"  {kind:<12} {getattr(done, kind)}")
        if done.revisions is None:
            click.echo(f"  {'revisions':<12} kept in {settings.keys.revisions} (--history --yes)")
        else:
            click.echo(f"  {'revisions':<12} {done.revisions}")
        return
    kinds = run(client_call(settings, lambda c: purge_all(c.redis, settings.namespace)))
    click.echo(f"purged {where}: {sum(kinds.values())} keys")
    for kind, count in sorted(kinds.items()):
        click.echo(f"  {kind:<12} {count}")


COMMANDS: list[click.Command] = [dead, purge]
