"""redis-py's errors become patchlog's at the boundary, classified in one place."""

from __future__ import annotations

import pytest
from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TryAgainError,
    WatchError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from patchlog.streams.connection import translate
from patchlog.streams.errors import (
    CommandFailed,
    KeyChanged,
    RetryLater,
    ServerRefused,
    ServerUnavailable,
    is_transient,
)


@pytest.mark.parametrize(
    "err",
    [
        OutOfMemoryError("command not allowed when used memory > 'maxmemory'"),
        ReadOnlyError("You can't write against a read only replica."),
        TryAgainError("try again"),
        BusyLoadingError("Redis is loading the dataset in memory"),
        ResponseError("BUSY Redis is busy running a script. You can only call SCRIPT KILL"),
        ResponseError("MISCONF Errors writing to the AOF file: No space left on device"),
        ResponseError(
            "Command # 2 (EVALSHA ab 3) of pipeline caused error: ('BUSY Redis is busy',)"
        ),
        RedisConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused."),
        RedisTimeoutError("Timeout reading from socket"),
        OSError("broken pipe"),
        WatchError("A ConnectionError occurred while watching one or more keys"),
    ],
)
def test_pressure_and_lost_connections_are_transient_not_poison(err: RedisError) -> None:
    """OOM, MISCONF, READONLY, TRYAGAIN, LOADING, BUSY, timeouts and drops are retried,
    never dead-lettered."""
    translated = translate(err)
    assert isinstance(translated, ServerUnavailable)
    assert is_transient(translated)


def test_transient_replies_keep_their_code() -> None:
    """The code redis-py strips (an OOM lease renewal falls back on it) is kept; a lost
    connection has none."""
    assert translate(OutOfMemoryError("command not allowed")).code == "OOM"  # type: ignore[union-attr]
    assert translate(BusyLoadingError("loading")).code == "LOADING"  # type: ignore[union-attr]
    assert translate(ResponseError("BUSY Redis is busy")).code == "BUSY"  # type: ignore[union-attr]
    assert translate(RedisTimeoutError("Timeout")).code == ""  # type: ignore[union-attr]


def test_error_replies_are_permanent_and_keep_their_code() -> None:
    """A script error or BUSYGROUP is a CommandFailed with the reply's code, not transient."""
    script = translate(ResponseError("ERR user_script:1: bad argument"))
    assert isinstance(script, CommandFailed)
    assert (script.code, script.reply) == ("ERR", "ERR user_script:1: bad argument")
    assert not is_transient(script)
    group = translate(ResponseError("BUSYGROUP Consumer Group name already exists"))
    assert isinstance(group, CommandFailed)
    assert group.code == "BUSYGROUP"
    piped = translate(
        ResponseError("Command # 1 (XACK a b) of pipeline caused error: ('WRONGTYPE x',)")
    )
    assert isinstance(piped, CommandFailed)
    assert piped.code == "WRONGTYPE"


def test_bad_credentials_are_refused_not_retried() -> None:
    """A wrong password is a ServerRefused that names credentials, never retried forever."""
    refused = translate(AuthenticationError("invalid username-password pair"))
    assert isinstance(refused, ServerRefused)
    assert "credentials" in str(refused)
    assert not is_transient(refused)


def test_retry_later_is_transient() -> None:
    """A stage's RetryLater signal never counts as a failed delivery."""
    assert is_transient(RetryLater("lost the head race"))


def test_a_transaction_a_watched_key_aborted_is_key_changed_not_a_failure() -> None:
    """EXEC's nil reply is KeyChanged (another writer came first: nothing was written);
    a connection lost while watching stays a transient server error."""
    changed = translate(WatchError("Watched variable changed."))
    assert isinstance(changed, KeyChanged)
    assert not is_transient(changed)
