"""What every ``patchlog`` command shares: options, settings, errors and exit statuses,
the event loop, and a client of the server."""

from __future__ import annotations

import enum
import sys
from collections.abc import Awaitable, Callable, Coroutine
from functools import wraps
from typing import Any, TypeVar

import click
import uvloop

from patchlog.ops.config import load_settings, redis_url_source
from patchlog.ops.logs import configure_logging
from patchlog.streams.errors import (
    CorruptEntry,
    NotFound,
    PatchlogError,
    Rejected,
    ServerError,
    ServerUnavailable,
    Timeout,
    VerifyFailed,
)
from patchlog.streams.settings import Settings

__all__ = [
    "EXIT_MEANINGS",
    "GLOBALS",
    "Exit",
    "client_call",
    "exit_status",
    "global_options",
    "handle_errors",
    "no_document",
    "run",
    "server_folder",
    "settings_of",
    "url_of",
    "url_source",
]

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on uvloop, the event loop of every patchlog process."""
    return uvloop.run(coro)


class Exit(enum.IntEnum):
    """Exit statuses of every ``patchlog`` command (``EXIT_MEANINGS`` says each one)."""

    OK = 0
    NO = 1
    USAGE = 2
    SERVER = 3
    NOT_FOUND = 4
    TIMEOUT = 5
    CORRUPT = 6


EXIT_MEANINGS = {
    Exit.OK: "success",
    Exit.NO: "it worked and the answer is no: a rejected patch, a broken chain (verify), "
    "a difference (rebuild), a benchmark below --min-ratio",
    Exit.USAGE: "a bad flag, argument or PATCHLOG_* value",
    Exit.SERVER: "the server cannot be reached, refuses patchlog, or failed a command",
    Exit.NOT_FOUND: "no such document or revision",
    Exit.TIMEOUT: "a bounded wait ran out (submit --wait)",
    Exit.CORRUPT: "the log does not decode or does not replay to the live state",
}


# Most specific first: the first class an error is an instance of decides its status.
_EXITS: tuple[tuple[type[PatchlogError], Exit], ...] = (
    (NotFound, Exit.NOT_FOUND),
    (Timeout, Exit.TIMEOUT),
    (ServerError, Exit.SERVER),
    (CorruptEntry, Exit.CORRUPT),
    (VerifyFailed, Exit.CORRUPT),
    (Rejected, Exit.NO),
)


def exit_status(err: PatchlogError) -> Exit:
    """The documented exit status for an expected error."""
    return next((code for cls, code in _EXITS if isinstance(err, cls)), Exit.NO)


def settings_of(ctx: click.Context, **overrides: Any) -> Settings:
    given: dict[str, Any] = ctx.find_root().meta.get(GLOBALS, {})
    try:
        return load_settings(overrides={**given, **overrides})
    except ValueError as err:
        raise click.UsageError(str(err)) from None


def url_of(settings: Settings) -> str:
    return settings.redis_url or f"redis://{settings.host}:{settings.port}/0"


def url_source(ctx: click.Context) -> str | None:
    """Where the server URL came from: --redis-url, PATCHLOG_REDIS_URL, REDIS_URL, or
    ``None`` (the embedded server's address)."""
    return redis_url_source(overrides=ctx.find_root().meta.get(GLOBALS, {}))


def handle_errors(fn: Callable[..., T]) -> Callable[..., T]:
    """Turn an expected error into one line on stderr and its documented exit status;
    only a bug prints a traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except PatchlogError as err:
            message = " ".join(str(err).split()) or type(err).__name__
            click.echo(f"patchlog: error: {message}", err=True)
            sys.exit(exit_status(err))

    return wrapper


GLOBALS = "patchlog.globals"


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    """Keep a global option's value; given after the subcommand, it wins."""
    if value is None or param.name is None:
        return
    ctx.find_root().meta.setdefault(GLOBALS, {})[param.name] = value
    if param.name == "json_logs":
        configure_logging(json=value)


_GLOBAL_OPTIONS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (("--redis-url",), {"help": "Use this server instead of the embedded one."}),
    (("--namespace",), {"help": "Key prefix (default patchlog)."}),
    (("--data-dir",), {"type": click.Path(file_okay=False), "help": "Embedded server data."}),
    (("--port",), {"type": int, "help": "Embedded server port (default 6390)."}),
    (("--json-logs/--pretty-logs",), {"default": None, "help": "Log format (default: by tty)."}),
]


def global_options(fn: Callable[..., T]) -> Callable[..., T]:
    """The options every command accepts, before or after the subcommand's name."""
    for decls, kwargs in reversed(_GLOBAL_OPTIONS):
        fn = click.option(*decls, expose_value=False, callback=_remember, **kwargs)(fn)
    return fn


async def client_call(
    settings: Settings, action: Callable[[Any], Awaitable[T]], block: float = 0
) -> T:
    """Run ``action`` with a client of the server. Raises ``ServerError`` naming the URL
    and where it came from if there is no server."""
    from patchlog.ops.worker import describe_url  # noqa: PLC0415
    from patchlog.projections.client import Client  # noqa: PLC0415
    from patchlog.streams.connection import connect  # noqa: PLC0415

    redis = connect(settings, url_of(settings), name="patchlog-cli", block_ms=int(block * 1000))
    try:
        try:
            await redis.ping()
        except ServerUnavailable as err:
            ctx = click.get_current_context(silent=True)
            where = describe_url(url_of(settings), url_source(ctx) if ctx else None)
            hint = "" if settings.redis_url else "; start it with `patchlog up`"
            raise ServerError(f"no server at {where}: {err}{hint}") from None
        return await action(
            Client(redis, settings.keys, settings.durability, every=settings.snapshot_every)
        )
    finally:
        await redis.aclose()


async def server_folder(redis: Any) -> str:
    """The server's data folder (``CONFIG GET dir``), or why it cannot be told."""
    from patchlog.streams.errors import CommandFailed, ServerRefused  # noqa: PLC0415

    try:
        folder = (await redis.config_get("dir")).get("dir")
    except (CommandFailed, ServerRefused):
        return "unknown (CONFIG GET is not allowed)"
    return str(folder)


async def no_document(client: Any, settings: Settings, doc: str) -> NotFound:
    """The error for a document with no revisions, naming where patchlog looked: the
    likeliest cause is another server, namespace or data folder than the user thinks."""
    from patchlog.ops.config import redact  # noqa: PLC0415

    return NotFound(
        f"no document {doc!r} in namespace {settings.namespace!r} on "
        f"{redact(url_of(settings))} (data folder {await server_folder(client.redis)}): "
        "no patch was ever committed to it"
    )
