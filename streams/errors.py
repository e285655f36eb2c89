"""The one exception hierarchy of patchlog.

::

    PatchlogError
    ├── Rejected              a patch breaks a rule; carries a RejectCode, becomes an outcome
    ├── CorruptEntry          one of patchlog's own stream entries cannot be decoded
    ├── ServerError           the server cannot be started, reached or used
    │   └── ServerRefused     the server is reachable but unfit (version, eviction policy)
    ├── VerifyFailed          the revision log and the live state disagree
    └── Timeout               a bounded wait ran out (waiting for an outcome, draining)

Every class below the root is raised by patchlog code only; exceptions of libraries
(``msgspec.ValidationError``, ``redis.exceptions.*``) are translated at the boundary
where they occur and never escape a stage.
"""

from __future__ import annotations

from patchlog.streams.schema import RejectCode

__all__ = [
    "CorruptEntry",
    "PatchlogError",
    "Rejected",
    "ServerError",
    "ServerRefused",
    "Timeout",
    "VerifyFailed",
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


class VerifyFailed(PatchlogError):
    """Replaying the revision log does not give the live state or the stored hashes."""


class Timeout(PatchlogError):
    """A bounded wait ran out: no outcome in time, or a drain that did not finish."""
