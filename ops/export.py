"""``patchlog export``: every document written to a folder, in one pass over the log.

The revisions stream is read in XRANGE pages from its start and every document is
folded in memory (the projector's fold, with its checks: gap-free revisions, chained
hashes, and each final content against its last revision's hash); then each document
is written once, at the path ``projections.paths.path_of`` gives it. With ``until_ms``
the pass stops at the first revision committed after that time, so the folder holds
the documents as they were then (a document created later is not written).

The next page is fetched while the current one is folded. Files are written atomically
(temporary file and rename) but not fsynced: an export is a copy to take, not a state
to resume from, so it leaves no checkpoint (a projector started on the folder catches
up from the start).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
from redis.asyncio import Redis

from patchlog.consumers.projector import (
    DocState,
    Folder,
    FolderError,
    check_contents,
    fold_revisions,
)
from patchlog.projections.paths import path_of
from patchlog.streams.codec import decode_event
from patchlog.streams.content import content_bytes
from patchlog.streams.errors import PatchlogError
from patchlog.streams.keys import Keys
from patchlog.streams.schema import Revision

__all__ = ["PAGE", "ExportSummary", "export_documents"]

PAGE = 5000
"""Revisions per XRANGE: large enough that round trips do not count, small enough that
one reply stays a few MB."""


class ExportSummary(msgspec.Struct, frozen=True, kw_only=True):
    """What an export wrote."""

    documents: int
    revisions: int
    """Revisions folded (all of the log, or those up to ``until_ms``)."""
    seconds: float
    write_seconds: float
    """Of ``seconds``, the time spent writing the files (the rest: reading and folding)."""
    last_id: str
    """The revisions-stream id of the last revision folded ('' for none)."""
    last_at: int
    """Its commit time, ms since the epoch (0 for none)."""


def _decode_page(raw: Any, until_ms: int | None) -> tuple[list[tuple[str, Revision]], bool]:
    """The page's revisions up to ``until_ms``, and whether a later one ended it."""
    out: list[tuple[str, Revision]] = []
    for stream_id, fields in raw:
        revision = decode_event(Revision, fields)
        if until_ms is not None and revision.at > until_ms:
            return out, True
        out.append((stream_id.decode(), revision))
    return out, False


async def export_documents(
    redis: Redis,
    keys: Keys,
    folder: Path,
    *,
    until_ms: int | None = None,
    page: int = PAGE,
    progress: Callable[[int, int], None] | None = None,
) -> ExportSummary:
    """Write every document of ``keys``' namespace into ``folder`` (created if missing),
    as of ``until_ms`` (ms since the epoch) when given, else as the log ends now.

    ``progress(done, total)`` is called after each page (revisions folded, revisions in
    the log). Raises ``VerifyFailed`` if the log does not fold to the hashes it
    records, ``CorruptEntry`` if an entry does not decode, ``FolderError`` if
    ``folder`` is not empty (checked first) or a file cannot be written, ``ServerError``
    if the server fails.
    """
    target = Folder(folder, durable=False)
    if not target.is_empty():
        raise FolderError(f"{folder} is not empty; rule: export writes into a new or empty folder")
    target.create()  # before the pass: a folder that cannot be made fails at once
    try:
        started = time.monotonic()
        with _no_collections():
            states, folded, last = await _fold_log(redis, keys, until_ms, page, progress)
        check_contents(states, states)
        files = {path_of(doc): content_bytes(state.lines) for doc, state in states.items()}
        writing = time.monotonic()
        await asyncio.to_thread(target.write, files)
        written = time.monotonic()
    finally:
        target.close()
    return ExportSummary(
        documents=len(states),
        revisions=folded,
        seconds=written - started,
        write_seconds=written - writing,
        last_id=last[0] if last else "",
        last_at=last[1].at if last else 0,
    )


@contextlib.contextmanager
def _no_collections() -> Iterator[None]:
    """No cyclic garbage collection inside. Every line folded stays alive to the end of
    the pass, so each collection would traverse them all again for nothing: a third of
    the pass's CPU time at 5,000 documents (``gcpolicy.quiet_gc`` still runs the middle
    generation and collects on exit, which costs most of that back)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


async def _fold_log(
    redis: Redis,
    keys: Keys,
    until_ms: int | None,
    page: int,
    progress: Callable[[int, int], None] | None,
) -> tuple[dict[str, DocState], int, tuple[str, Revision] | None]:
    """Every document folded from the log (up to ``until_ms``), the revisions folded,
    and the last of them; the next page is fetched while one is folded."""
    total: int = await redis.xlen(keys.revisions)
    states: dict[str, DocState] = {}
    folded = 0
    last: tuple[str, Revision] | None = None

    def fetch(cursor: str) -> asyncio.Task[Any]:
        return asyncio.ensure_future(redis.xrange(keys.revisions, cursor, "+", count=page))

    ahead: asyncio.Task[Any] | None = fetch("-")
    while ahead is not None:
        raw = await ahead
        ahead = fetch(f"({raw[-1][0].decode()}") if len(raw) == page else None
        batch, ended = _decode_page(raw, until_ms)
        fold_revisions(states, batch)
        folded += len(batch)
        if batch:
            last = batch[-1]
        if progress is not None:
            progress(folded, total)
        if ended:
            break
    if ahead is not None:  # a read ahead that ``until_ms`` made useless
        ahead.cancel()
        with contextlib.suppress(asyncio.CancelledError, PatchlogError):
            await ahead
    return states, folded, last
