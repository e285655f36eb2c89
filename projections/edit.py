"""The edit loop: read a document, change its lines, submit the difference, retry races.

``Client.edit`` (``projections.client``) serves programs (many agents'
read-modify-write in one call) and ``patchlog edit`` serves people; both go through
``edit`` here.
"""

from __future__ import annotations

import asyncio
import difflib
import inspect
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from patchlog.projections.load import load_content
from patchlog.projections.patch import Splice, to_ops
from patchlog.streams.client import Client as _StreamsClient
from patchlog.streams.schema import Op, Outcome, OutcomeStatus, RejectCode

__all__ = ["Attempt", "EditFn", "difference", "edit", "lost_race"]

EditFn = Callable[[list[str]], list[str] | Awaitable[list[str]]]
"""Given a document's lines at its head, the lines it should have (sync or async)."""

Attempt = Callable[[int, Outcome], None]
"""Called after each lost race with the attempt number (1-based) and its outcome."""

# Races retry with full jitter (a random pause up to an exponentially growing cap), so
# that many writers of one line spread out instead of colliding again in lockstep.
_FIRST_PAUSE = 0.005
_MAX_PAUSE = 0.5


def difference(old: Sequence[str], new: Sequence[str]) -> tuple[Op, ...]:
    """Ops that turn ``old`` into ``new`` (line numbers of ``old``); empty if equal."""
    matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
    splices = [
        Splice(i1, i2, tuple(new[j1:j2]))
        for tag, i1, i2, j1, j2 in reversed(matcher.get_opcodes())
        if tag != "equal"
    ]
    return to_ops(splices)


def lost_race(outcome: Outcome) -> bool:
    """Whether an edit's outcome means another writer got there first: a ``conflict``,
    ``stale`` (strict documents), or a ``noop`` (a revision after the base already made
    the very change, so this read-modify-write did not happen)."""
    if outcome.status is OutcomeStatus.NOOP:
        return True
    return outcome.status is OutcomeStatus.REJECTED and outcome.code in (
        RejectCode.CONFLICT,
        RejectCode.STALE,
    )


async def edit(
    client: _StreamsClient,
    doc: str,
    fn: EditFn,
    *,
    retries: int = 10,
    author: str | None = None,
    meta: dict[str, Any] | None = None,
    timeout: float = 30.0,
    on_retry: Attempt | None = None,
) -> Outcome | None:
    """Read ``doc`` at its head, submit ``fn(lines)`` as ops on that head, wait for the
    outcome; after a lost race (``lost_race``) read the new head and call ``fn`` again,
    at most ``retries`` more times, with a jittered pause between tries.

    Returns the last outcome (``committed``, a rejection, or after ``retries`` lost races
    the last ``conflict``/``noop``), or ``None`` when ``fn`` left the lines as they were
    (nothing is submitted). Raises ``ValueError`` for a negative ``retries``, ``TypeError``
    if ``fn`` returns anything but a list of str, ``Timeout``
    when an outcome takes longer than ``timeout`` s, and ``ServerError``/``VerifyFailed``
    from reading the document.
    """
    if retries < 0:
        raise ValueError(f"retries: {retries} is negative; rule: retries >= 0")
    pause = _FIRST_PAUSE
    attempt = 0
    loaded = None
    while True:
        attempt += 1
        loaded = await load_content(client.redis, client.keys, doc, known=loaded)
        wanted = fn(list(loaded.lines))
        new = await wanted if inspect.isawaitable(wanted) else wanted
        _check_lines(new)
        ops = difference(loaded.lines, new)
        if not ops:
            return None
        submitted = await client.submit(doc, loaded.rev, ops=ops, author=author, meta=meta)
        outcome = await client.wait(submitted, timeout)
        if not lost_race(outcome) or attempt > retries:
            return outcome
        if on_retry is not None:
            on_retry(attempt, outcome)
        await asyncio.sleep(random.uniform(0, pause))  # noqa: S311 (jitter, not secrets)
        pause = min(_MAX_PAUSE, pause * 2)


def _check_lines(new: object) -> None:
    """An edit function must return a list of strings (the caller's mistake, a TypeError)."""
    if not isinstance(new, list) or not all(isinstance(x, str) for x in new):
        raise TypeError(
            f"the edit function returned {type(new).__name__}; rule: it returns the new "
            "lines as a list of str"
        )
