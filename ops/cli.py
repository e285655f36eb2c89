"""The ``patchlog`` command line."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import click
import msgspec

from patchlog import __version__
from patchlog.ops import cli_admin, cli_audit, cli_files, cli_ops, cli_stream
from patchlog.ops.clibase import (
    EXIT_MEANINGS,
    GLOBALS,
    Exit,
    client_call,
    global_options,
    handle_errors,
    run,
    settings_of,
    url_of,
    url_source,
)
from patchlog.ops.config import env_help
from patchlog.ops.logs import configure_logging
from patchlog.streams.failpoints import ENV as FAILPOINTS_ENV
from patchlog.streams.failpoints import Failpoints

__all__ = ["main"]

_ENV_TEXT = "\n".join(f"  {name} (default {default})" for name, default in env_help())
_EXIT_TEXT = "\n".join(f"  {code.value}  {meaning}" for code, meaning in EXIT_MEANINGS.items())


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=(
        "Options above (--redis-url, --namespace, --data-dir, --port, --json-logs) may\n"
        "also follow the command's name.\n\n"
        f"\b\nExit status:\n{_EXIT_TEXT}\n\n"
        f"\b\nEnvironment (flags override):\n{_ENV_TEXT}"
    ),
)
@global_options
@click.version_option(__version__, prog_name="patchlog", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """patchlog: line patches to shared text documents, on Redis Streams.

    Every patch is validated, ordered, applied exactly once, numbered and kept in a
    revision log; the documents are a projection of that log.
    """
    given = ctx.meta.get(GLOBALS, {})
    if "json_logs" not in given:
        configure_logging(json=None)


@cli.command()
@global_options
@click.option("--normalize", "n_normalize", default=1, show_default=True, help="Normalize workers.")
@click.option("--execute", "n_execute", default=1, show_default=True, help="Execute workers.")
@click.option("--fsync", type=click.Choice(["everysec", "always"]), help="Embedded appendfsync.")
@click.option(
    "--metrics-port", type=int, default=None,
    help="Serve every worker's metrics and the streams' state on this one port, as "
    "PATCHLOG_HTTP_HOST:PORT/metrics (default PATCHLOG_METRICS_PORT; 0: none).",
)  # fmt: skip
@click.option(
    "--dir", "folder", type=click.Path(file_okay=False),
    help="Also run a projector keeping this folder equal to the documents "
    "(default PATCHLOG_PROJECTOR_DIR; none if empty).",
)  # fmt: skip
@click.pass_context
@handle_errors
def up(
    ctx: click.Context,
    n_normalize: int,
    n_execute: int,
    fsync: str | None,
    metrics_port: int | None,
    folder: str | None,
) -> None:
    """Run the pipeline: the server (embedded unless a URL is set) and the stage workers.

    The server is checked before any worker starts; an embedded server that dies is
    restarted from its AOF. With --dir, a projector keeps that folder's files equal to
    the documents. Ctrl-C stops everything cleanly.
    """
    from patchlog.ops.metrics import MetricsPortBusy  # noqa: PLC0415
    from patchlog.ops.supervisor import Supervisor  # noqa: PLC0415 - keeps `patchlog --help` fast

    settings = settings_of(ctx, fsync=fsync, projector_dir=folder)
    source = url_source(ctx)
    kept = Path(settings.projector_dir).absolute()
    metrics = settings.metrics_port if metrics_port is None else metrics_port

    async def main() -> int:
        supervisor = Supervisor(
            settings,
            normalize=n_normalize,
            execute=n_execute,
            metrics_port=metrics,
            url_source=source,
            progress=sys.stderr.isatty(),
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, supervisor.stop)
        try:
            await supervisor.start()
        except MetricsPortBusy as err:
            raise click.BadParameter(str(err), param_hint="--metrics-port") from None
        where = (
            f"embedded server {supervisor.url} (data in {supervisor.server.data_dir})"
            if supervisor.server
            else f"server {settings.redis_url}"
        )
        click.echo(f"patchlog up: {where}")
        click.echo(f"  workers: {n_normalize} normalize, {n_execute} execute")
        if settings.projector_dir:
            click.echo(f"  projector: keeps {kept}")
        if metrics:
            click.echo(
                f"  metrics: http://{settings.http_host}:{metrics}/metrics (the whole pipeline)"
            )
        click.echo(
            f"  submit: redis-cli -p {settings.port} XADD {settings.keys.patches} '*' doc hello "
            'base 0 ops \'[{"op":"insert","at":1,"lines":["hi"]}]\''
        )
        click.echo("  Ctrl-C stops everything.")
        try:
            return await supervisor.watch()
        finally:
            click.echo("stopping...")
            await supervisor.shutdown()

    sys.exit(run(main()))


@cli.command()
@global_options
@click.argument("stage", type=click.Choice(["normalize", "execute", "projector", "health"]))
@click.option(
    "--name",
    help="Consumer name (stable per worker slot; default stage-host-pid); for a projector, "
    "its checkpoint's name (default host:folder).",
)
@click.option(
    "--dir", "folder", type=click.Path(file_okay=False),
    help="The folder a projector keeps equal to the documents (default PATCHLOG_PROJECTOR_DIR).",
)  # fmt: skip
@click.option(
    "--burst", is_flag=True,
    help="Drain the stream and the pending list (a projector: catch up), then exit.",
)  # fmt: skip
@click.option(
    "--supervised", is_flag=True, hidden=True, help="Started by `patchlog up`, which checked"
    " the server and logged any warning about it once.",
)  # fmt: skip
@click.pass_context
@handle_errors
def worker(
    ctx: click.Context,
    stage: str,
    name: str | None,
    folder: str | None,
    burst: bool,
    supervised: bool,
) -> None:
    """Run one stage worker (for systemd, Kubernetes, or scaling by hand), or a
    projector: `patchlog worker projector --dir PATH` keeps the files in PATH equal to
    the documents, resuming from the checkpoint in the folder after a restart, or the
    health prober: `patchlog worker health` appends a result to patchlog:health every
    PATCHLOG_HEALTH_INTERVAL seconds (and serves /healthz, /readyz on
    PATCHLOG_HEALTH_PORT).

    It checks the server first and exits at once (status 3) if it cannot use it.
    """
    from patchlog.ops.worker import (  # noqa: PLC0415
        HEALTH,
        PROJECTOR,
        default_consumer,
        default_projector_name,
        run_health,
        run_projector,
        run_worker,
    )

    if stage == HEALTH:
        settings = settings_of(ctx)
        sys.exit(
            run(run_health(settings, url_of(settings), source=url_source(ctx), warn=not supervised))
        )
    if folder is not None and stage != PROJECTOR:
        raise click.UsageError(f"--dir: only a projector keeps a folder, not {stage}")
    try:  # armed by the fault suite only; a typo there must not pass as "never fired"
        Failpoints(os.environ.get(FAILPOINTS_ENV, ""))
    except ValueError as err:
        raise click.UsageError(str(err)) from None
    settings = settings_of(ctx, projector_dir=folder)
    url = url_of(settings)
    if stage == PROJECTOR:
        if not settings.projector_dir:
            raise click.UsageError(
                "--dir: missing; rule: a projector needs the folder it keeps "
                "(--dir or PATCHLOG_PROJECTOR_DIR)"
            )
        where = Path(settings.projector_dir)
        status = run(
            run_projector(
                settings,
                url,
                where,
                name or default_projector_name(where),
                burst=burst,
                source=url_source(ctx),
                warn=not supervised,
            )
        )
        sys.exit(status)
    status = run(
        run_worker(
            settings,
            url,
            stage,
            name or default_consumer(stage),
            burst=burst,
            source=url_source(ctx),
            warn=not supervised,
        )
    )
    sys.exit(status)


@cli.command()
@global_options
@click.option("--fsync", type=click.Choice(["everysec", "always"]), help="appendfsync.")
@click.pass_context
@handle_errors
def server(ctx: click.Context, fsync: str | None) -> None:
    """Run the embedded server alone, until Ctrl-C (it locks its data folder)."""
    from patchlog.streams.server import EmbeddedServer  # noqa: PLC0415

    settings = settings_of(ctx, fsync=fsync)

    async def main() -> None:
        srv = EmbeddedServer(
            Path(settings.data_dir),
            host=settings.host,
            port=settings.port,
            fsync=settings.fsync,
            aof_rewrite_min_mb=settings.aof_rewrite_min_mb,
        )
        await srv.start()
        click.echo(f"server {srv.url}, data in {srv.data_dir}; Ctrl-C stops it")
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        waiter = asyncio.create_task(stop.wait())
        assert srv.process is not None
        died = asyncio.create_task(srv.process.wait())
        await asyncio.wait([waiter, died], return_when=asyncio.FIRST_COMPLETED)
        await srv.stop()

    run(main())


@cli.command()
@global_options
@click.option("--doc", required=True, help="Document name.")
@click.option("--base", required=True, type=int, help="Revision the line numbers refer to.")
@click.option(
    "--ops", "ops_json", help='Ops as JSON, e.g. \'[{"op":"insert","at":1,"lines":["x"]}]\'.'
)
@click.option(
    "--diff", "diff_file", type=click.File("r"), help="Unified diff file ('-' for stdin)."
)
@click.option("--id", "patch_id", help="Idempotency key (default: a random one).")
@click.option("--author", help="Who submits it.")
@click.option("--wait", is_flag=True, help="Wait for the outcome and print it.")
@click.option("--timeout", default=30.0, show_default=True, help="Seconds --wait waits.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Decide against the head (rebasing an older base); print the diff; submit nothing.",
)
@click.pass_context
@handle_errors
def submit(
    ctx: click.Context,
    doc: str,
    base: int,
    ops_json: str | None,
    diff_file: Any,
    patch_id: str | None,
    author: str | None,
    wait: bool,
    timeout: float,
    dry_run: bool,
) -> None:
    """Submit a patch; with --wait print its outcome (exit 1 when rejected).

    \b
    A patch on an older base is rebased onto the head. It is a conflict only when
    it would overwrite what it did not see:
    - a replace or delete whose lines a later revision changed, or inside whose
      range a later revision inserted;
    - an insert whose lines on both sides a later revision replaced or deleted.
    Inserts at the same place both commit, in commit order; edits of adjacent
    lines both commit; a diff's context lines only have to match its base; a
    change a later revision already made is a noop. --dry-run shows the patch
    rebased onto the head, as ops and as a diff.
    """
    if (ops_json is None) == (diff_file is None):
        raise click.UsageError("give exactly one of --ops and --diff")
    diff = diff_file.read() if diff_file is not None else None
    settings = settings_of(ctx)
    if dry_run:
        from patchlog.ops.dryrun import dry_run as check  # noqa: PLC0415

        text, ok = run(
            client_call(settings, lambda c: check(c, settings, doc, base, ops_json, diff))
        )
        click.echo(text, nl=False)
        sys.exit(0 if ok else 1)
    try:
        ops = json.loads(ops_json) if ops_json is not None else None
    except json.JSONDecodeError as err:
        raise click.UsageError(f"--ops is not JSON: {err}") from None

    async def go(client: Any) -> Any:
        submitted = await client.submit(doc, base, ops=ops, diff=diff, id=patch_id, author=author)
        if not wait:
            return submitted, None
        return submitted, await client.wait(submitted, timeout)  # this submission's own

    submitted, outcome = run(client_call(settings, go, block=1.5))
    if outcome is None:
        click.echo(msgspec.json.encode(submitted).decode())  # the entry id is what to wait on
        return
    click.echo(msgspec.json.encode(outcome).decode())
    sys.exit(1 if outcome.status == "rejected" else 0)


@cli.command()
@global_options
@click.argument("doc")
@click.option("--author", help="Who makes the edit.")
@click.option(
    "--reopens",
    default=3,
    show_default=True,
    type=click.IntRange(0, 100),
    help="Times the editor reopens after a conflict.",
)
@click.option("--timeout", default=30.0, show_default=True, help="Seconds to wait for an outcome.")
@click.pass_context
@handle_errors
def edit(ctx: click.Context, doc: str, author: str | None, reopens: int, timeout: float) -> None:
    """Edit DOC's head in $VISUAL or $EDITOR (default vi); submit the change on save.

    The difference is submitted on the revision you opened, and the outcome printed
    as submit --wait prints it. A file saved unchanged submits nothing. A conflict
    (someone changed a line you changed) is shown, your version is kept in a file,
    and the editor reopens with the new head. Exit 0 when committed or unchanged, 1
    when rejected or the editor failed.
    """
    import os  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    from patchlog.ops.editor import Session, editor_command, outcome_json  # noqa: PLC0415

    settings = settings_of(ctx)
    command = editor_command(dict(os.environ))

    async def go(client: Any) -> Any:
        with tempfile.TemporaryDirectory(prefix="patchlog-edit-") as folder:
            session = Session(
                client,
                doc,
                command=command,
                folder=Path(folder),
                author=author,
                timeout=timeout,
                say=lambda text: click.echo(text, err=True),
            )
            return await session.run(reopens)

    outcome = run(client_call(settings, go, block=1.5))
    if outcome is None:
        click.echo(f"no change: nothing submitted for {doc}", err=True)
        return
    click.echo(outcome_json(outcome))
    sys.exit(1 if outcome.status == "rejected" else 0)


@cli.command()
@global_options
@click.option("--patches", default=3000, show_default=True, help="Patches to submit.")
@click.option("--agents", default=8, show_default=True, help="Concurrent simulated agents.")
@click.option("--docs", "n_docs", default=20, show_default=True, help="Documents.")
@click.option("--keep", is_flag=True, help="Keep the temporary data folder.")
@click.pass_context
@handle_errors
def demo(ctx: click.Context, patches: int, agents: int, n_docs: int, keep: bool) -> None:
    """Run a pipeline on a fresh embedded server, let agents patch documents, check it."""
    from patchlog.ops.demo import run_demo  # noqa: PLC0415

    settings = settings_of(ctx)
    sys.exit(run(run_demo(settings, patches=patches, agents=agents, docs=n_docs, keep=keep)))


@cli.command()
@global_options
@click.option(
    "--scenario",
    "scenarios",
    multiple=True,
    type=click.Choice(["default", "hot", "large", "diff", "light"]),
    help="Workload (repeatable; default: default). light: open loop at a quarter of the "
    "default scenario's committed/s in this run (run default before it), else of --rate.",
)
@click.option("--seconds", default=10.0, show_default=True, help="Measured seconds per scenario.")
@click.option("--rate", type=float, help="Open loop at this many patches/s (default: closed loop).")
@click.option("--normalize", "n_normalize", default=1, show_default=True, help="Normalize workers.")
@click.option("--execute", "n_execute", default=1, show_default=True, help="Execute workers.")
@click.option("--partitions", type=click.IntRange(1, 1024),
              help="Execute partitions (default PATCHLOG_PARTITIONS, else 1).")  # fmt: skip
@click.option("--baselines/--no-baselines", default=True, show_default=True, help="Raw and naive.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default="bench.json",
              show_default=True, help="Write the figures here.")  # fmt: skip
@click.option("--min-ratio", type=float, help="Exit 1 below this multiple of the naive pipeline.")
@click.pass_context
@handle_errors
def bench(
    ctx: click.Context,
    scenarios: tuple[str, ...],
    seconds: float,
    rate: float | None,
    n_normalize: int,
    n_execute: int,
    partitions: int | None,
    baselines: bool,
    json_out: str,
    min_ratio: float | None,
) -> None:
    """Measure the pipeline on a fresh embedded server (or --redis-url) beside baselines."""
    from patchlog.ops.bench import run_bench  # noqa: PLC0415
    from patchlog.ops.load import plan_runs  # noqa: PLC0415

    settings = settings_of(ctx)
    names = list(scenarios) or ["default"]
    try:
        plan_runs(names, baselines=baselines, rate=rate)
    except ValueError as err:
        raise click.UsageError(str(err)) from None
    status = run(
        run_bench(
            names,
            seconds=seconds,
            rate=rate,
            url=settings.redis_url,
            normalize_workers=n_normalize,
            execute_workers=n_execute,
            baselines=baselines,
            out=Path(json_out) if json_out else None,
            min_ratio=min_ratio,
            fsync=settings.fsync,
            durability=settings.durability,
            partitions=partitions or settings.partitions,
        )
    )
    sys.exit(status)


# The other commands live in their own modules, one per area.
for _command in (
    *cli_audit.COMMANDS,
    *cli_stream.COMMANDS,
    *cli_files.COMMANDS,
    *cli_admin.COMMANDS,
    *cli_ops.COMMANDS,
):
    cli.add_command(_command)


def main() -> None:
    """Console script entry point. A usage error (a bad flag, argument or PATCHLOG_*
    value) is one line on stderr and status 2, like every other expected error."""
    try:
        status = cli.main(prog_name="patchlog", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as err:  # `patchlog` alone: the help
        err.show()
        sys.exit(err.exit_code)
    except click.ClickException as err:
        ctx = getattr(err, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        click.echo(f"patchlog: error: {err.format_message()}{hint}", err=True)
        sys.exit(err.exit_code)
    except click.Abort:  # Ctrl-C or end of input at a prompt
        click.echo("patchlog: aborted", err=True)
        sys.exit(Exit.NO)
    sys.exit(status if isinstance(status, int) else Exit.OK)


if __name__ == "__main__":
    main()
