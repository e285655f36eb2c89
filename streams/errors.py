"""The one exception hierarchy of patchlog.

::

    PatchlogError
    ├── Rejected              a patch breaks a rule; carries a RejectCode, becomes an outcome
    ├── CorruptEntry          one of patchlog's own stream entries cannot be decoded
    ├── ServerError           the server cannot be started, reached or used
    │   ├── ServerRefused     reachable but unfit (version, eviction policy, credentials)
    │   ├── DataDirLocked     the embedded server's data folder is in use by another process
    │   ├── ServerUnavailable transient: connection lost, timeout, OOM, BUSY, LOADING, failover
    │   │   └── GroupMissing  a consumer group is gone (NOGROUP): the runner recreates it
    │   ├── CommandFailed     the server answered one command with an error reply
    │   └── NotDurable        a submission was appended but its fsync was not confirmed
    ├── VerifyFailed          the revision log and the live state disagree
    ├── NotFound              a document or revision that does not exist
    ├── Timeout               a bounded wait ran out (waiting for an outcome, draining)
    ├── KeyChanged            a transaction was not run: a key it watched changed
    ├── RetryLater            control-flow signal: try these entries again later, no failure
    └── EditorFailed          (ops.editor) `patchlog edit`'s editor failed: nothing is sent

Every class below the root is raised by patchlog code only; exceptions of libraries are
translated at the boundary where they occur and never escape a stage:
``msgspec.ValidationError`` where an entry is decoded (``streams.codec``), and every
``redis.exceptions.*`` inside the client that ``streams.connection.connect`` returns.
Whether an error passes by itself is decided in one place, ``is_transient``.
"""

from __future__ import annotations

from patchlog.streams.schema import RejectCode

__all__ = [
    "CommandFailed",
    "CorruptEntry",
    "DataDirLocked",
    "GroupMissing",
    "KeyChanged",
    "NotDurable",
    "NotFound",
    "PatchlogError",
    "Rejected",
    "RetryLater",
    "ServerError",
    "ServerRefused",
    "ServerUnavailable",
    "Timeout",
    "VerifyFailed",
    "is_transient",
]


class PatchlogError(Exception):
    """Root of every exception patchlog raises on purpose."""


class Rejected(PatchlogError):
    """A patch breaks a rule of the patch model.

    Not a failure of patchlog: the stage records it as a ``rejected`` outcome with
    ``code`` and ``message`` and goes on. ``message`` names the op (or field), the line
    and the rule, so that a client can fix its patch without reading patchlog's code.
    """

    def __init__(self, code: RejectCode, message: str) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message


class CorruptEntry(PatchlogError):
    """An entry patchlog wrote itself (a revision, an outcome) does not decode.

    Not a client's mistake: the log was written by another version or damaged.
    """


class ServerError(PatchlogError):
    """The server cannot be started, reached or used; the message says what to do."""


class ServerRefused(ServerError):
    """The server answers but patchlog refuses to run on it (too old, may evict keys)."""


class DataDirLocked(ServerError):
    """Another process runs an embedded server on this data folder (it holds the folder's
    lock); two servers on one folder would merge their logs on the next restart."""

    def __init__(self, message: str, *, folder: str, pid: int | None) -> None:
        super().__init__(message)
        self.folder = folder
        self.pid = pid


class ServerUnavailable(ServerError):
    """A failure that passes by itself: the connection dropped or timed out (after the
    client's own retries), or the server is loading, out of memory, busy with a script,
    read-only or failing over. Retried with backoff; never a reason to dead-letter."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code
        """The server's error code (``OOM``, ``LOADING``, ``BUSY``, ...), ``""`` for a lost
        or timed-out connection."""


class GroupMissing(ServerUnavailable):
    """A stream's consumer group does not exist (``NOGROUP``): the server restarted
    without its data, failed over, or was flushed. Transient for a stage: the runner
    creates the group again (from id 0) and goes on."""


class CommandFailed(ServerError):
    """The server answered one command with an error reply (``reply``, its text, starting
    with the error code such as ``WRONGTYPE`` or ``NOGROUP``); retrying the same command
    gives the same answer."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply

    @property
    def code(self) -> str:
        """The reply's error code, its first word (``ERR``, ``BUSYGROUP``, ...)."""
        return self.reply.split(" ", 1)[0]


class NotDurable(ServerError):
    """Strict durability: the patch was appended (``entry`` is its ingress entry id) but
    the server did not confirm its fsync (WAITAOF). It may still be applied: retry with
    the same ``patch_id``, which makes a second submission harmless, or wait for the
    outcome of ``entry``."""

    def __init__(self, message: str, *, patch_id: str, entry: str) -> None:
        super().__init__(message)
        self.patch_id = patch_id
        self.entry = entry


class VerifyFailed(PatchlogError):
    """Replaying the revision log does not give the live state or the stored hashes."""


class NotFound(PatchlogError):
    """A document or a revision asked for does not exist (a reader's mistake, not a
    failure); the message names what exists."""


class Timeout(PatchlogError):
    """A bounded wait ran out: no outcome in time, or a drain that did not finish."""


class KeyChanged(PatchlogError):
    """A ``MULTI``/``EXEC`` was not run because a key it ``WATCH``ed changed: another
    writer got there first. Nothing was written; the caller reads again or gives way."""


class RetryLater(PatchlogError):
    """Control-flow signal from a stage: nothing is wrong with the entries, try them
    again later (for example a batch that lost the head race to other workers too
    often). Never counted as a failed delivery."""


def is_transient(err: BaseException) -> bool:
    """Whether ``err`` will likely pass by itself, so the work is retried rather than
    counted as a failed delivery (the one place that decides it)."""
    return isinstance(err, ServerUnavailable | RetryLater)
