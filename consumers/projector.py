"""The projector: a folder of files kept equal to the documents.

It reads ``<ns>:revisions`` from its own position (plain XREAD/XRANGE in pages, no
consumer group: every folder has its own), folds each revision onto its document with
the one fold, and writes each document a round touched once, at the path
``projections.paths.path_of`` gives it. A round is everything read until the reads
come back short (caught up), ``round_revisions`` revisions or ``round_seconds`` seconds.

The order of the writes is what makes the folder trustworthy after any crash:

1. each file: a temporary file beside it, fsync, rename over the old one (a reader sees
   the old content or the new, never a part);
2. fsync of every folder renamed into, and of the parent of every folder created;
3. the folder's checkpoint ``.patchlog-checkpoint`` (the last revisions-stream id whose
   effect is in every file, with that revision's document, number and hash), written
   the same way;
4. the same checkpoint on the server, in ``Keys.projector(name)``, for those who watch.

A restart resumes from the folder's own checkpoint, never from the server's: a folder
copied elsewhere resumes where it was, and an emptied folder (no checkpoint) is caught
up from the start whatever the server says. A checkpoint that the log does not hold
(another server, a flushed one) also means starting over. Files may be ahead of the
checkpoint (a crash between steps 1 and 3); so the content a document is folded onto is
taken from its file only when the file's sha256 is the ``prev`` hash of the revision
about to be applied, and otherwise from the log.

When it resumes, a document whose file is missing (deleted by hand) is written again
at its head; a file edited by hand is put right by its document's next revision (empty
the folder to rebuild it all). Every name in the folder that starts with ``.`` is the
projector's own (documents' paths
never do); one projector at a time keeps a folder (``.patchlog-lock``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import secrets
import socket
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import structlog
from redis.asyncio import Redis

from patchlog.consumers.backoff import Backoff
from patchlog.projections.fold import fold_revision
from patchlog.projections.load import load_content
from patchlog.projections.paths import path_of
from patchlog.streams.codec import decode_event
from patchlog.streams.content import EMPTY_HASH, content_bytes, content_hash, split_lines
from patchlog.streams.errors import PatchlogError, VerifyFailed, is_transient
from patchlog.streams.failpoints import failpoint
from patchlog.streams.keys import Keys
from patchlog.streams.schema import Revision

__all__ = [
    "CHECKPOINT_FILE",
    "LOCK_FILE",
    "START",
    "TEMP_PREFIX",
    "Checkpoint",
    "DocState",
    "Folder",
    "FolderError",
    "Projector",
    "check_contents",
    "fold_revisions",
]

log = structlog.get_logger("patchlog.projector")
_T = TypeVar("_T")

CHECKPOINT_FILE = ".patchlog-checkpoint"
LOCK_FILE = ".patchlog-lock"
TEMP_PREFIX = ".patchlog-tmp-"
START = "0-0"
"""The position before the first revision."""
_WRITERS = 8
"""Files written (and fsynced) at once: a disk commits concurrent fsyncs together."""
_LOADS = 16
"""Documents loaded from the log at once."""


class FolderError(PatchlogError):
    """The folder cannot be used: not a folder, not writable, full, or kept by another
    projector; the message names the path and the reason."""


class DocState(msgspec.Struct):
    """A document as folded so far: revision ``rev``, its hash, its lines."""

    rev: int = 0
    hash: str = EMPTY_HASH
    lines: list[str] = msgspec.field(default_factory=list)
    floor: int = 0
    """Revisions up to this one are already in ``lines`` (loaded at a later head)."""


class Checkpoint(msgspec.Struct, frozen=True, kw_only=True):
    """How far into the revisions stream a folder is written."""

    namespace: str
    id: str = START
    """The last revisions-stream id whose effect is in every file."""
    doc: str = ""
    """That revision's document, number and hash: they tell the log it came from."""
    rev: int = 0
    hash: str = ""
    at: int = 0
    """That revision's commit time (ms since the epoch, server clock)."""


def fold_revisions(
    states: dict[str, DocState], revisions: Iterable[tuple[str, Revision]]
) -> set[str]:
    """Fold ``(stream id, revision)`` pairs, in log order, onto ``states`` (a document
    not in it starts empty at revision 0); returns the documents they belong to.

    Each revision must follow its document's state: the next number, and ``prev`` equal
    to the state's hash. Raises ``VerifyFailed`` naming the revision otherwise. Contents
    are not hashed here (``check_contents`` does it once per document).
    """
    touched: set[str] = set()
    for stream_id, revision in revisions:
        doc = revision.doc
        touched.add(doc)
        state = states.get(doc)
        if state is None:
            state = states[doc] = DocState()
        if revision.rev <= state.floor:
            continue
        if revision.rev != state.rev + 1 or revision.prev != state.hash:
            raise VerifyFailed(
                f"{doc!r} revision {revision.rev} ({stream_id}, prev {revision.prev[:12]}) "
                f"does not follow revision {state.rev} ({state.hash[:12]}); rule: a "
                "document's revisions are gap-free and chain their hashes"
            )
        state.lines = fold_revision(state.lines, revision)
        state.rev = revision.rev
        state.hash = revision.hash
    return touched


def check_contents(states: Mapping[str, DocState], docs: Iterable[str]) -> None:
    """Check that each of ``docs`` hashes to its last revision's hash; raises
    ``VerifyFailed`` naming the first that does not."""
    for doc in docs:
        state = states[doc]
        digest = content_hash(state.lines)
        if digest != state.hash:
            raise VerifyFailed(
                f"{doc!r} at revision {state.rev}: the log folds to {digest[:12]}, "
                f"the revision says {state.hash[:12]}"
            )


_CHECKPOINT_ENCODER = msgspec.json.Encoder()
_CHECKPOINT_DECODER = msgspec.json.Decoder(Checkpoint)


class Folder:
    """The files of one folder, written atomically (and with ``durable``, fsynced)."""

    def __init__(self, root: Path, *, durable: bool = True, threads: int = _WRITERS) -> None:
        self.root = root
        self.durable = durable
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="patchlog-write")
        self._known_dirs: set[Path] = set()
        self._lock_fd: int | None = None

    def create(self) -> None:
        """Create the folder (and its parents) if missing; raises ``FolderError``."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise FolderError(f"cannot create folder {self.root}: {err.strerror}") from None
        if not self.root.is_dir():
            raise FolderError(f"{self.root} is not a folder")

    def lock(self) -> None:
        """Take the folder for this process until ``close``; raises ``FolderError``
        naming the holder's pid if another process keeps it."""
        path = self.root / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as err:
            raise FolderError(f"cannot open {path}: {err.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise FolderError(
                f"{self.root} is kept by another projector (pid {holder}); one projector per folder"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def clean(self) -> int:
        """Remove temporary files a killed writer left behind; how many."""
        removed = 0
        for folder, _, files in os.walk(self.root):
            for name in files:
                if name.startswith(TEMP_PREFIX):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(folder, name))
                        removed += 1
        return removed

    def close(self) -> None:
        """Release the lock and the writer threads."""
        self._pool.shutdown(wait=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def is_empty(self) -> bool:
        """Whether the folder holds nothing (a missing folder is empty); raises
        ``FolderError`` if it cannot be listed (not a folder, no permission)."""
        try:
            with os.scandir(self.root) as entries:
                return next(entries, None) is None
        except FileNotFoundError:
            return True
        except NotADirectoryError:
            raise FolderError(f"{self.root} is not a folder") from None
        except OSError as err:
            raise FolderError(f"cannot list {self.root}: {err.strerror}") from None

    def read(self, path: str) -> bytes | None:
        """The bytes of the file at ``path`` (relative), ``None`` if there is none."""
        try:
            return (self.root / path).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        except OSError as err:
            raise FolderError(f"cannot read {self.root / path}: {err.strerror}") from None

    def read_checkpoint(self) -> Checkpoint | None:
        """The folder's checkpoint, ``None`` if it has none that decodes."""
        data = self.read(CHECKPOINT_FILE)
        if data is None:
            return None
        try:
            return _CHECKPOINT_DECODER.decode(data)
        except msgspec.DecodeError:
            log.warning("the folder's checkpoint does not decode", folder=str(self.root))
            return None

    def write(self, files: Mapping[str, bytes], checkpoint: Checkpoint | None = None) -> None:
        """Write every file (relative path to bytes) atomically, then with ``durable``
        fsync the folders they went into, then write ``checkpoint``. Raises
        ``FolderError`` if one cannot be written (the checkpoint is not written then)."""
        try:
            changed = _all(self._pool.submit(self._write_one, item) for item in files.items())
            dirs = {folder for folders in changed for folder in folders}
            if self.durable:
                _all(self._pool.submit(_fsync_dir, folder) for folder in dirs)
            failpoint("projector.after_write")
            if checkpoint is not None:
                data = _CHECKPOINT_ENCODER.encode(checkpoint)
                self._write_one((CHECKPOINT_FILE, data))
                if self.durable:
                    _fsync_dir(self.root)
        except OSError as err:
            where = err.filename or self.root
            raise FolderError(f"cannot write {where}: {err.strerror}") from None

    def _write_one(self, item: tuple[str, bytes]) -> list[Path]:
        """Write one file atomically; the folders whose entries changed."""
        path, data = item
        target = self.root / path
        parent = target.parent
        changed = [parent, *self._make_dirs(parent)]
        temp = parent / f"{TEMP_PREFIX}{secrets.token_hex(8)}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if self.durable:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        os.close(fd)
        os.replace(temp, target)
        return changed

    def _make_dirs(self, folder: Path) -> list[Path]:
        """Create ``folder`` and missing parents; the parents of those created."""
        if folder in self._known_dirs:
            return []
        missing = []
        probe = folder
        while not probe.is_dir():
            missing.append(probe)
            probe = probe.parent
        for new in reversed(missing):
            new.mkdir(exist_ok=True)  # another writer thread may have made it meanwhile
        self._known_dirs.add(folder)
        return [new.parent for new in missing]


def _all(futures: Iterable[Future[_T]]) -> list[_T]:
    """The results of every future, once all are done (none is left running behind a
    failure: a late rename could put back an older content); raises the first error."""
    started = list(futures)
    wait(started)
    return [future.result() for future in started]


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _now_ms() -> int:
    return int(time.time() * 1000)


class Projector:
    """Keeps ``folder`` equal to the documents of ``keys``' namespace."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        folder: Path,
        name: str,
        *,
        block_ms: int = 1000,
        page: int = 1000,
        round_revisions: int = 100_000,
        round_seconds: float = 2.0,
        cache_docs: int = 10_000,
        durable: bool = True,
    ) -> None:
        """``redis`` must allow a call to take ``block_ms`` (``connect(block_ms=...)``).
        ``cache_docs`` documents' contents stay in memory between rounds (the least
        recently written go first; they are read back from their files)."""
        self.redis = redis
        self.keys = keys
        self.folder = Folder(folder.absolute(), durable=durable)
        self.name = name
        self.block_ms = block_ms
        self.page = page
        self.round_revisions = round_revisions
        self.round_seconds = round_seconds
        self.cache_docs = cache_docs
        self.states: OrderedDict[str, DocState] = OrderedDict()
        self.position = Checkpoint(namespace=keys.namespace)
        self.applied = 0
        """Revisions folded and written since start."""
        self._published = True
        self.backoff = Backoff(base=0.1, cap=5.0)

    async def open(self) -> None:
        """Create and lock the folder, remove leftover temporary files, find where to
        resume, and (when resuming) write again the documents whose file is missing.
        Raises ``FolderError``, ``ServerError`` if the log cannot be read, and
        ``VerifyFailed`` if a document does not load."""
        self.folder.create()
        self.folder.lock()
        removed = self.folder.clean()
        self.position = await self._resume()
        restored = await self._restore_missing() if self.position.id != START else 0
        log.info(
            "projector ready",
            folder=str(self.folder.root),
            name=self.name,
            resume=self.position.id,
            temporary_files_removed=removed,
            missing_files_restored=restored,
        )

    def close(self) -> None:
        """Release the folder."""
        self.folder.close()

    async def _resume(self) -> Checkpoint:
        """The folder's checkpoint if the log holds it, else the start."""
        start = Checkpoint(namespace=self.keys.namespace)
        found = self.folder.read_checkpoint()
        server: Any = await self.redis.hget(self.keys.projector(self.name), "id")
        where = {"folder": str(self.folder.root), "server_checkpoint": server and server.decode()}
        if found is None:
            log.info("no checkpoint in the folder: catching up from the start", **where)
            return start
        if found.namespace != self.keys.namespace:
            log.warning(
                "the folder was written for another namespace: catching up from the start",
                namespace=found.namespace,
                **where,
            )
            return start
        if found.id == START:
            return start
        reply: Any = await self.redis.xrange(self.keys.revisions, found.id, found.id)
        logged = decode_event(Revision, reply[0][1]) if reply else None
        if logged is None or (logged.doc, logged.rev, logged.hash) != (
            found.doc,
            found.rev,
            found.hash,
        ):
            log.warning(
                "the folder's checkpoint is not in this log: catching up from the start",
                checkpoint=found.id,
                **where,
            )
            return start
        return found

    async def run(self, stop: asyncio.Event, *, burst: bool = False) -> None:
        """Write rounds until ``stop`` is set (with ``burst``: until a read finds nothing
        new). Transient server errors are retried with backoff; any other error is
        raised (``FolderError``, ``VerifyFailed``, ``CorruptEntry``, ...)."""
        failures = 0
        while not stop.is_set():
            try:
                if not self._published:
                    await self._publish()
                applied = await self.step(stop, block=not burst)
            except PatchlogError as err:
                if not is_transient(err):
                    raise
                failures += 1
                delay = self.backoff.compute(failures)
                log.warning("server unavailable; retrying", error=str(err), delay=round(delay, 2))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                continue
            failures = 0
            if burst and applied == 0:
                break
        log.info("projector stopped", revisions=self.applied, position=self.position.id)

    async def step(self, stop: asyncio.Event | None = None, *, block: bool = True) -> int:
        """One round: read, fold and write what the log holds after the position (with
        ``block``, waiting up to ``block_ms`` for something); how many revisions."""
        started = time.monotonic()
        cursor = self.position.id
        touched: set[str] = set()
        last: Revision | None = None
        count = 0
        try:
            while True:
                page = await self._page(cursor, block=block and count == 0)
                if not page:
                    break
                await self._prepare(page)
                touched |= fold_revisions(self.states, page)
                count += len(page)
                cursor, last = page[-1]
                if (
                    len(page) < self.page
                    or count >= self.round_revisions
                    or time.monotonic() - started >= self.round_seconds
                    or (stop is not None and stop.is_set())
                ):
                    break
            if last is None:
                return 0
            check_contents(self.states, touched)
            files = {path_of(doc): content_bytes(self.states[doc].lines) for doc in touched}
            checkpoint = Checkpoint(
                namespace=self.keys.namespace,
                id=cursor,
                doc=last.doc,
                rev=last.rev,
                hash=last.hash,
                at=last.at,
            )
            await asyncio.to_thread(self.folder.write, files, checkpoint)
        except BaseException:
            # Contents may be ahead of their files now: take them from the files (by
            # hash) or the log again.
            self.states.clear()
            raise
        self.position = checkpoint
        self.applied += count
        self._published = False
        self._evict(touched)
        log.debug("round written", revisions=count, documents=len(files), position=cursor)
        await self._publish()
        return count

    async def _page(self, cursor: str, *, block: bool) -> list[tuple[str, Revision]]:
        stream = self.keys.revisions
        raw: Any
        if block:
            reply: Any = await self.redis.xread(
                {stream: cursor}, count=self.page, block=self.block_ms
            )
            raw = reply[0][1] if reply else []
        else:
            raw = await self.redis.xrange(stream, f"({cursor}", "+", count=self.page)
        return [(sid.decode(), decode_event(Revision, fields)) for sid, fields in raw]

    async def _prepare(self, page: Sequence[tuple[str, Revision]]) -> None:
        """Bring every document of ``page`` not folded up to its first revision there
        to the content just before it: empty for revision 1, else its file when the
        file hashes to that revision's ``prev``, else the log (at its head)."""
        first: dict[str, Revision] = {}
        for _, revision in page:
            first.setdefault(revision.doc, revision)
        wanted = []
        for doc, revision in first.items():
            state = self.states.get(doc)
            if state is not None and (
                revision.rev <= state.floor
                or (state.rev == revision.rev - 1 and state.hash == revision.prev)
            ):
                continue
            if revision.rev == 1:
                self.states[doc] = DocState()
            else:
                wanted.append(revision)
        if not wanted:
            return
        found = await asyncio.to_thread(self._from_files, wanted)
        self.states.update(found)
        missing = [r.doc for r in wanted if r.doc not in found]
        await self._load_heads(missing)
        if missing:
            log.info("documents loaded from the log", documents=len(missing))

    async def _load_heads(self, docs: Sequence[str]) -> None:
        """Load ``docs`` at their heads from the log (the revisions up to there are in
        them: the fold skips those)."""
        for start in range(0, len(docs), _LOADS):
            chunk = docs[start : start + _LOADS]
            loaded = await asyncio.gather(
                *(load_content(self.redis, self.keys, doc) for doc in chunk)
            )
            for doc, content in zip(chunk, loaded, strict=True):
                self.states[doc] = DocState(
                    content.rev, content.hash, content.lines, floor=content.rev
                )

    async def _restore_missing(self) -> int:
        """Write, at their heads, the documents whose file is missing from a folder
        resumed from its checkpoint (deleted by hand, or created since); how many. A
        file ahead of the checkpoint is as good as one at it."""
        members: Any = await self.redis.smembers(self.keys.docs)
        names = sorted(m.decode() for m in members)

        def absent() -> list[str]:
            return [doc for doc in names if not (self.folder.root / path_of(doc)).is_file()]

        missing = await asyncio.to_thread(absent)
        for start in range(0, len(missing), self.cache_docs):
            chunk = missing[start : start + self.cache_docs]
            await self._load_heads(chunk)
            files = {path_of(doc): content_bytes(self.states[doc].lines) for doc in chunk}
            await asyncio.to_thread(self.folder.write, files)
            self._evict(chunk)
        return len(missing)

    def _from_files(self, wanted: Sequence[Revision]) -> dict[str, DocState]:
        out = {}
        for revision in wanted:
            data = self.folder.read(path_of(revision.doc))
            if data is not None and hashlib.sha256(data).hexdigest() == revision.prev:
                out[revision.doc] = DocState(revision.rev - 1, revision.prev, split_lines(data))
        return out

    def _evict(self, touched: Iterable[str]) -> None:
        for doc in touched:
            self.states.move_to_end(doc)
        while len(self.states) > self.cache_docs:
            self.states.popitem(last=False)

    async def _publish(self) -> None:
        """The position, on the server, for those who watch the projector."""
        cp = self.position
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(
                self.keys.projector(self.name),
                mapping={
                    "id": cp.id,
                    "doc": cp.doc,
                    "rev": cp.rev,
                    "hash": cp.hash,
                    "at": cp.at,
                    "folder": str(self.folder.root),
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                    "written": _now_ms(),
                },
            )
            pipe.sadd(self.keys.projectors, self.name)
            await pipe.execute()
        self._published = True
