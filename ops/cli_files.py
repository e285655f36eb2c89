"""Documents as files: ``patchlog export`` (the projector worker is ``worker projector``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from patchlog.ops.clibase import client_call, global_options, handle_errors, run, settings_of
from patchlog.ops.progress import ProgressLine
from patchlog.ops.when import parse_time

__all__ = ["COMMANDS"]


@click.command()
@global_options
@click.argument("folder", metavar="DIR", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--rev-at",
    "rev_at",
    metavar="TIME",
    help="The documents as of TIME: ISO 8601 (no zone means UTC), ms since the epoch, or "
    "relative like -2h.",
)
@click.pass_context
@handle_errors
def export(ctx: click.Context, folder: Path, rev_at: str | None) -> None:
    """Write every document into DIR (new or empty) as a file, in one pass over the
    revision log; with --rev-at, as the documents were at that time.

    \b
    Paths: each '/'-separated part of a name is one path segment; an upper-case
    letter X is written +x, any character but a-z 0-9 - _ . as ~ and the hex of
    its UTF-8 bytes; a part that is a folder of others ends in .d
    (Docs/Intro.md -> +docs.d/+intro.md). Prints documents, revisions and seconds.
    """
    from patchlog.consumers.projector import Folder  # noqa: PLC0415 - keeps --help fast
    from patchlog.ops.export import export_documents  # noqa: PLC0415

    until = parse_time(rev_at, "--rev-at") if rev_at is not None else None
    if not Folder(folder).is_empty():
        raise click.BadParameter(
            f"{folder} is not empty; rule: export writes into a new or empty folder",
            param_hint="DIR",
        )
    settings = settings_of(ctx)
    bar = ProgressLine("export")

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done)

    async def go(client: Any) -> Any:
        return await export_documents(
            client.redis, settings.keys, folder, until_ms=until, progress=progress
        )

    summary = run(client_call(settings, go))
    bar.done()
    click.echo(
        f"exported {summary.documents:,} documents ({summary.revisions:,} revisions"
        + (f", up to {summary.last_id}" if until is not None and summary.last_id else "")
        + f") to {folder} in {summary.seconds:.2f} s"
    )


COMMANDS: list[click.Command] = [export]
