"""Reading the log back: show, log, verify (and the audit commands beside them)."""

from __future__ import annotations

import sys
from typing import Any

import click

from patchlog.ops.clibase import (
    client_call,
    global_options,
    handle_errors,
    no_document,
    run,
    settings_of,
)
from patchlog.streams.errors import NotFound

__all__ = ["COMMANDS"]


@click.command()
@global_options
@click.argument("doc")
@click.option("--rev", type=int, help="Show the document at this revision.")
@click.pass_context
@handle_errors
def show(ctx: click.Context, doc: str, rev: int | None) -> None:
    """Print a document (at its head, or at --rev); status 4 if it does not exist."""
    from patchlog.projections.history import content_at  # noqa: PLC0415
    from patchlog.streams.log import read_head  # noqa: PLC0415

    settings = settings_of(ctx)

    async def show_doc(client: Any) -> tuple[int, list[str]]:
        try:
            return await content_at(client.redis, settings.keys, doc, rev)
        except NotFound as err:
            if (await read_head(client.redis, settings.keys, doc)).rev:
                raise  # the document exists; the revision does not
            raise await no_document(client, settings, doc) from err

    _, lines = run(client_call(settings, show_doc))
    for line in lines:
        click.echo(line)


@click.command(name="log")
@global_options
@click.argument("doc")
@click.option("--limit", default=50, show_default=True, help="Newest revisions to list.")
@click.pass_context
@handle_errors
def log_cmd(ctx: click.Context, doc: str, limit: int) -> None:
    """List a document's revisions, newest first; status 4 if it does not exist."""
    from patchlog.projections.history import revision_log  # noqa: PLC0415

    settings = settings_of(ctx)

    async def rows(client: Any) -> list[str]:
        try:
            return await revision_log(client.redis, settings.keys, doc, limit)
        except NotFound as err:
            raise await no_document(client, settings, doc) from err

    for row in run(client_call(settings, rows)):
        click.echo(row)


@click.command()
@global_options
@click.pass_context
@handle_errors
def verify(ctx: click.Context) -> None:
    """Rebuild every document from the revision log and compare with the live heads."""
    from patchlog.projections.rebuild import verify as check  # noqa: PLC0415

    settings = settings_of(ctx)
    report = run(client_call(settings, lambda c: check(c.redis, settings.keys)))
    for problem in report.problems:
        click.echo(f"MISMATCH {problem}")
    click.echo(
        f"{report.documents} documents, {report.revisions} revisions: "
        + ("the log reproduces the live state" if report.ok else f"{len(report.problems)} problems")
    )
    sys.exit(0 if report.ok else 1)


COMMANDS: list[click.Command] = [show, log_cmd, verify]
