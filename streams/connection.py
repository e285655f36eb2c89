"""Connections: redis-py asyncio (hiredis parser) with a timeout on every call, retries
with jittered exponential backoff, errors translated into patchlog's own tree, and a
check that the server is fit for patchlog."""

from __future__ import annotations

import ast
import contextlib
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    BusyLoadingError,
    MasterDownError,
    NoPermissionError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    TryAgainError,
    WatchError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from patchlog.streams.codec import entry_fields
from patchlog.streams.errors import (
    CommandFailed,
    GroupMissing,
    KeyChanged,
    ServerError,
    ServerRefused,
    ServerUnavailable,
)
from patchlog.streams.settings import Settings

__all__ = [
    "PatchlogRedis",
    "Persistence",
    "ServerInfo",
    "check_server",
    "connect",
    "read_persistence",
    "translate",
]

# Error replies that pass by themselves. redis-py maps most to classes (below) and
# strips the code from the text; BUSY (a script running too long) stays a plain reply.
_TRANSIENT_CODES = frozenset(
    {
        "BUSY",
        "LOADING",
        "OOM",
        "MISCONF",  # a failed background save or a full disk: writes resume once fixed
        "TRYAGAIN",
        "MASTERDOWN",
        "READONLY",
        "CLUSTERDOWN",
        "NOSCRIPT",
    }
)
_TRANSIENT_TYPES = (
    RedisTimeoutError,
    BusyLoadingError,
    OutOfMemoryError,
    ReadOnlyError,
    TryAgainError,
    MasterDownError,
    NoScriptError,
)
_CODE_OF = {
    BusyLoadingError: "LOADING",
    OutOfMemoryError: "OOM",
    ReadOnlyError: "READONLY",
    TryAgainError: "TRYAGAIN",
    MasterDownError: "MASTERDOWN",
    NoScriptError: "NOSCRIPT",
}
"""The code redis-py strips from the replies it maps to these classes."""
_PIPELINE_PREFIX = " of pipeline caused error: "


def translate(err: RedisError | OSError) -> ServerError | KeyChanged:
    """patchlog's exception for a redis-py (or socket) error: ``ServerRefused`` for bad
    credentials or missing permissions, ``ServerUnavailable`` for what passes by itself,
    ``KeyChanged`` for a transaction a watched key aborted, ``CommandFailed`` (with the
    reply text) for an error reply."""
    # The reply is the first argument; redis-py adds others to pipeline errors.
    text = str(err.args[0]) if err.args else ""
    if _PIPELINE_PREFIX in text:
        # redis-py rewrites a pipeline's error as "Command # n (...) of pipeline caused
        # error: <repr of the original args>"; the reply is that tuple's first item.
        text = text.split(_PIPELINE_PREFIX, 1)[1]
        with contextlib.suppress(ValueError, SyntaxError):
            original = ast.literal_eval(text)
            if isinstance(original, tuple) and original:
                text = str(original[0])
    # redis-py raises WatchError for EXEC's nil reply, and for a connection lost while
    # watching ("A ConnectionError occurred while watching one or more keys").
    if isinstance(err, WatchError) and "occurred while watching" not in text:
        return KeyChanged(text or "a watched key changed")
    if isinstance(err, AuthenticationError | AuthorizationError | NoPermissionError):
        return ServerRefused(f"the server refused patchlog's credentials: {text}")
    if isinstance(err, (*_TRANSIENT_TYPES, RedisConnectionError, OSError, WatchError)):
        code = next((c for kind, c in _CODE_OF.items() if isinstance(err, kind)), "")
        return ServerUnavailable(f"server unavailable: {text or type(err).__name__}", code)
    if text.startswith("NOGROUP") or " NOGROUP " in text:  # also inside a script's error
        return GroupMissing(f"consumer group missing: {text}")
    if text.split(" ", 1)[0] in _TRANSIENT_CODES:
        return ServerUnavailable(f"server unavailable: {text}", text.split(" ", 1)[0])
    return CommandFailed(text)


class _TranslatingPipeline(Pipeline):
    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        try:
            return await super().execute(raise_on_error)
        except (RedisError, OSError) as err:
            raise translate(err) from err

    # WATCH and the reads between it and MULTI run at once, outside ``execute``.
    async def immediate_execute_command(self, *args: Any, **options: Any) -> Any:
        try:
            return await super().immediate_execute_command(*args, **options)  # type: ignore[no-untyped-call]
        except (RedisError, OSError) as err:
            raise translate(err) from err


class _TranslatingScript(AsyncScript):
    async def __call__(self, keys: Any = None, args: Any = None, client: Any = None) -> Any:
        try:
            return await super().__call__(keys, args, client)
        except NoScriptError as err:  # still missing after the reload
            raise translate(err) from err


def _parse_read(response: Any, **_: Any) -> list[list[Any]]:
    """XREAD(GROUP)'s reply as ``[[stream, [(id, fields or None), ...]], ...]``: the
    fields an ``EntryFields`` (its ``repeated`` names), ``None`` for a deleted body,
    whichever protocol the connection speaks."""
    if response is None:
        return []
    # RESP3 answers a map of stream to entries, RESP2 a list of pairs.
    streams = response.items() if isinstance(response, dict) else response
    return [
        [stream, [(eid, None if flat is None else entry_fields(flat)) for eid, flat in entries]]
        for stream, entries in streams
    ]


def _parse_claim(response: Any, **options: Any) -> Any:
    """XCLAIM's reply: ids with JUSTID, else ``[(id, EntryFields), ...]``."""
    if options.get("parse_justid"):
        return response
    return [(eid, None if flat is None else entry_fields(flat)) for eid, flat in response or []]


class PatchlogRedis(Redis):
    """redis-py's asyncio client whose commands and pipelines raise patchlog's errors
    (``translate``) instead of ``redis.exceptions.*``, so nothing above ``streams``
    handles a library's exception."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # redis-py's reading keeps one value of a field name an entry repeats and turns a
        # body trimmed away while pending into {}; these keep both facts.
        self.set_response_callback("XREADGROUP", _parse_read)
        self.set_response_callback("XREAD", _parse_read)
        self.set_response_callback("XCLAIM", _parse_claim)

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        try:
            return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        except NoScriptError:
            # Raised as is so that a registered script (EVALSHA) loads itself again
            # after a server restart; the reload's own errors are translated.
            if str(args[0]).upper() == "EVALSHA":
                raise
            raise translate(NoScriptError()) from None
        except (RedisError, OSError) as err:
            raise translate(err) from err

    # redis-py annotates the asyncio client's scripts as the sync ``Script``.
    def register_script(self, script: Any) -> AsyncScript:  # type: ignore[override]
        return _TranslatingScript(self, script)

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        return _TranslatingPipeline(
            self.connection_pool, self.response_callbacks, transaction, shard_hint
        )


def connect(
    settings: Settings, url: str, *, name: str = "patchlog", block_ms: int = 0
) -> PatchlogRedis:
    """A client for ``url``. Every call times out after ``settings.socket_timeout``
    seconds plus ``block_ms`` (for the blocking reads made on this client); its errors
    are patchlog's (``translate``)."""
    return PatchlogRedis.from_url(  # type: ignore[return-value]  # from_url builds cls
        url,
        socket_timeout=settings.socket_timeout + block_ms / 1000,
        socket_connect_timeout=settings.connect_timeout,
        retry=Retry(ExponentialWithJitterBackoff(base=0.01, cap=1.0), settings.retries),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        health_check_interval=30,
        client_name=name,
    )


class ServerInfo(msgspec.Struct, frozen=True):
    """What patchlog learned about its server."""

    product: str
    """``valkey`` or ``redis``."""
    version: tuple[int, int, int]
    policy: str

    def require_waitaof(self) -> None:
        """Raise ``ServerRefused`` unless the server has ``WAITAOF`` (strict durability
        needs it: Redis 7.2 or later, or Valkey)."""
        if self.product == "redis" and self.version < (7, 2, 0):
            raise ServerRefused(
                "strict durability needs WAITAOF (Redis 7.2 or later, or Valkey); "
                f"this server is Redis {'.'.join(map(str, self.version))}"
            )


def _version(text: str) -> tuple[int, int, int]:
    parts = [int(p) for p in text.split(".")[:3] if p.isdigit()]
    while len(parts) < 3:
        parts.append(0)
    return parts[0], parts[1], parts[2]


async def check_server(redis: Redis) -> ServerInfo:
    """Check that the server is Redis >= 7.0 or Valkey >= 7.2 and never evicts keys.

    Raises ``ServerRefused`` naming the problem and the fix, ``ServerError`` if the
    server cannot be reached.
    """
    try:
        info = await redis.info("server")
        memory = await redis.info("memory")
    except ServerUnavailable as err:
        raise ServerError(f"cannot reach the server: {err}") from err
    if "valkey_version" in info:
        product, version = "valkey", _version(str(info["valkey_version"]))
        if version < (7, 2, 0):
            raise ServerRefused(f"Valkey {info['valkey_version']} is too old: 7.2 or later")
    else:
        product, version = "redis", _version(str(info.get("redis_version", "0")))
        if version < (7, 0, 0):
            raise ServerRefused(f"Redis {info.get('redis_version')} is too old: 7.0 or later")
    policy = str(memory.get("maxmemory_policy", ""))
    if not policy:
        try:
            policy = str((await redis.config_get("maxmemory-policy"))["maxmemory-policy"])
        except (CommandFailed, KeyError):
            policy = "unknown"
    if policy != "noeviction":
        raise ServerRefused(
            f"maxmemory-policy is {policy!r}: the server could evict patchlog's keys "
            "(revisions, idempotency records); set it to noeviction"
        )
    return ServerInfo(product, version, policy)


class Persistence(msgspec.Struct, frozen=True):
    """The server's AOF settings, as far as patchlog could read them."""

    appendonly: bool | None
    """Whether the AOF is on; ``None`` if it could not be read."""
    appendfsync: str | None
    """``always``, ``everysec`` or ``no``; ``None`` if it could not be read."""
    error: str | None = None
    """Why ``CONFIG GET`` failed (disabled, renamed, not permitted), if it did."""

    def risk(self) -> tuple[str, str] | None:
        """``(setting, what it can lose)`` if this is weaker than patchlog's own server
        (AOF on, ``appendfsync always``); ``None`` if it is not."""
        if self.appendonly is False:
            return (
                "appendonly no",
                "a kill -9 of the server or a machine crash loses everything written since "
                "its last RDB snapshot (everything, if it takes none), acknowledged "
                "submissions and outcomes included",
            )
        if self.appendfsync == "everysec":
            return (
                "appendfsync everysec",
                "a machine crash, or a kill -9 of the server while its disk is slow, can "
                "lose about the last 1-2 s of acknowledged submissions and outcomes",
            )
        if self.appendfsync == "no":
            return (
                "appendfsync no",
                "a machine crash loses what the operating system has not written to disk "
                "yet (typically up to the last 30 s of acknowledged submissions and outcomes)",
            )
        if self.appendonly is None or self.appendfsync is None:
            return (
                "appendonly/appendfsync unknown",
                f"CONFIG GET failed ({self.error}), so patchlog cannot tell what a kill -9 "
                "of the server or a machine crash would lose",
            )
        return None


async def read_persistence(redis: Redis) -> Persistence:
    """The server's ``appendonly`` and ``appendfsync`` (``CONFIG GET``). Where CONFIG is
    disabled or not permitted, ``appendonly`` comes from ``INFO persistence`` and what
    cannot be read is ``None``.

    Raises ``ServerUnavailable`` if the server cannot be reached.
    """
    try:
        config = await redis.config_get("appendonly", "appendfsync")
    except (CommandFailed, ServerRefused) as err:
        failure = str(err)
    else:
        only, fsync = config.get("appendonly"), config.get("appendfsync")
        return Persistence(None if only is None else only == "yes", fsync)
    try:
        info = await redis.info("persistence")
    except (CommandFailed, ServerRefused):
        return Persistence(None, None, failure)
    enabled = info.get("aof_enabled")
    return Persistence(None if enabled is None else bool(int(enabled)), None, failure)
