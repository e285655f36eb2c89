"""The execute stage: decide each normalized patch against its document's head and
commit the decisions in chunks, one script call each (head check, state, revision,
outcome and idempotency record atomically per patch; the entries acknowledged with
them). The next chunk is decided while the server commits the previous one.

Document content is cached in the worker (``consumers.cache``) and advanced
speculatively through a batch; the script's exact compare-and-set on the head
(revision, hash and the patch that made it) catches a stale cache (another worker
committed), and the patches involved are decided again after the cache catches up.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Sequence
from typing import Any

import msgspec
import structlog
from redis.asyncio import Redis

from patchlog.consumers.cache import HISTORY, DocCache
from patchlog.consumers.messages import NormalizedPatch, decode_normalized
from patchlog.consumers.metrics import EXECUTE_HOPS, EXECUTE_STATUSES, StageMetrics
from patchlog.consumers.order import UNREAD, PendingByDoc, pending_by_doc
from patchlog.consumers.runner import SCRIPT_BYTES, Entry, parse_id
from patchlog.projections.fold import plan
from patchlog.projections.load import later_of
from patchlog.projections.patch import to_ops
from patchlog.projections.rebase import Later
from patchlog.streams.codec import SERVER_STAMPED, event_fields, id_reuse, with_entry
from patchlog.streams.content import EMPTY_HASH, content_hash
from patchlog.streams.errors import CorruptEntry, Rejected, RetryLater
from patchlog.streams.failpoints import failpoint
from patchlog.streams.keys import EXECUTE
from patchlog.streams.log import read_strict, revisions_of, write_checkpoints, write_snapshot
from patchlog.streams.schema import IdRecord, Outcome, OutcomeStatus, Revision
from patchlog.streams.scripts import CommitKind, CommitRow, Scripts
from patchlog.streams.settings import Settings

__all__ = ["ExecuteStage"]

log = structlog.get_logger("patchlog.execute")
_JSON = msgspec.json.Encoder()
_MSGPACK = msgspec.msgpack.Encoder()
_ROUNDS = 50
_CONTENDED = 10.0  # seconds of reading heads first after another worker won a race
_TURN_S = 0.05  # seconds of deciding between two turns of the event loop
_WAIT_STEP = 0.01  # seconds between two looks at a patch waiting for its base: a chain of
# patches spread over two workers advances one hand-off per look
_LOOK_STEP = 1.0  # seconds between two scans for an earlier pending entry of its document
_TOLD = {
    "dup": ("duplicate", True),
    "fenced": ("fenced", True),  # claimed by another worker meanwhile: its decision counts
    "cas": ("head moved: deciding again", False),
    "reuse": ("id owned by another patch: rejecting", False),
}
"""A commit result other than 'ok': its log event, and whether it is the patch's last."""


_Item = tuple[Entry, NormalizedPatch]
"""A normalized entry and the patch it carries."""


class _Waiting(msgspec.Struct):
    """A patch whose base does not exist yet, held since ``since`` (monotonic s)."""

    entry: Entry
    since: float
    next_try: float
    earlier: str | None = None
    """An earlier entry of the same document still pending in the pipeline, found when
    ``base_ahead_wait`` ran out: the patch keeps waiting for it (``pending_wait``)."""
    next_look: float = 0.0
    """When to look for such an entry again (monotonic s)."""
    read_at: float = 0.0
    """When it was first read (Unix s): its decide hop runs from there."""


class _Decision(msgspec.Struct):
    entry: Entry
    patch: NormalizedPatch
    kind: CommitKind
    head: int
    head_hash: str
    outcome: Outcome
    revision: Revision | None = None
    new_hash: str = ""
    content: list[str] | None = None
    epoch: int = 0
    """The cached document's epoch the decision was made in."""
    head_src: str = ""
    """Src of the patch that made revision ``head`` (the exact compare-and-set)."""
    called: float = 0.0
    """When its commit script was called (Unix s)."""
    replied: float = 0.0
    """When that call returned (Unix s)."""


def _outcome(
    patch: NormalizedPatch, status: OutcomeStatus, rev: int, err: Rejected | None = None
) -> Outcome:
    return Outcome(
        id=patch.id,
        doc=patch.doc,
        status=status,
        rev=rev,
        code=None if err is None else err.code,
        message=None if err is None else err.message,
        src=patch.src,
    )


class ExecuteStage:
    """Consumer group ``execute`` on one normalized stream (the only one, or a partition
    this worker owns)."""

    name = EXECUTE

    def __init__(
        self, redis: Redis, settings: Settings, scripts: Scripts, stream: str | None = None
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.scripts = scripts
        self.keys = settings.keys
        self.stream = stream or self.keys.normalized_stream(0)
        self.docs = DocCache(redis, self.keys)
        self._checkpoints: list[tuple[str, int, list[str]]] = []
        self._contended_until = 0.0
        self.waiting: dict[str, _Waiting] = {}
        self._strict: dict[str, bool] = {}
        self.counts: dict[str, int] = {}
        self.cas_retries = 0
        self.metrics = StageMetrics(EXECUTE, EXECUTE_STATUSES, EXECUTE_HOPS)
        self._read_at = 0.0  # when the batch in hand was read (Unix s)
        self._owned: set[str] = set()  # ids of this batch found owned by an earlier patch
        self._pending: tuple[float, PendingByDoc] | None = None  # (good until, the scan)
        self._told: dict[str, int] = {}  # this batch's decisions by outcome, for its log line

    # -- runner protocol ---------------------------------------------------------------

    def identify(self, entry: Entry) -> tuple[str, str, str]:
        """(patch id, doc, ingress entry id) of a normalized entry, or (the entry id, '',
        '') if it cannot be read (damaged, or written by another version)."""
        try:
            patch = decode_normalized(entry[1][b"p"])
        except (KeyError, CorruptEntry):
            return entry[0], "", ""
        return patch.id, patch.doc, patch.src

    def held(self) -> set[str]:
        """Entries whose base revision does not exist yet (they wait, bounded)."""
        return set(self.waiting)

    def due(self) -> list[Entry]:
        """Waiting entries to decide again: their base may exist now, or time is up."""
        now = time.monotonic()
        out = []
        for waiting in self.waiting.values():
            if waiting.next_try <= now:
                waiting.next_try = now + _WAIT_STEP
                out.append(waiting.entry)
        return out

    async def handle(self, consumer: str, entries: Sequence[Entry]) -> None:
        """Decide and commit a batch of normalized patches."""
        started = time.perf_counter()
        self._read_at = time.time()  # the runner hands a batch over as soon as it read it
        self._told = {}
        items = [(entry, decode_normalized(entry[1][b"p"])) for entry in entries]
        self._owned = set()
        touched = {patch.doc for _, patch in items}
        try:
            await self._decide(consumer, items)
        except BaseException:
            # The cache advanced speculatively and the commit did not confirm it.
            for doc in touched:
                self.docs.drop(doc)
            raise
        held = sum(1 for entry in entries if entry[0] in self.waiting)
        # A batch that only looked again at patches waiting for their base is debug: it
        # comes every few ms while one waits.
        (log.info if self._told else log.debug)(
            "batch", entries=len(entries), **self._told, held=held,
            seconds=round(time.perf_counter() - started, 6),
        )  # fmt: skip

    # -- deciding ----------------------------------------------------------------------

    async def _decide(self, consumer: str, items: list[_Item]) -> None:
        finals: list[_Decision] = []
        for _ in range(_ROUNDS):
            await self._prepare(items)
            retry, finals, later = await self._round(consumer, items, finals)
            if not retry and not finals and not later:
                return
            items = retry + later
        raise RetryLater(f"{len(items)} patches lost the head race {_ROUNDS} times")

    async def _prepare(self, items: Sequence[_Item]) -> None:
        """Have every document of ``items`` cached at its head as far as known."""
        docs = [p.doc for _, p in items]
        self._strict = await read_strict(self.redis, self.keys, docs, self.settings.strict)
        if time.monotonic() < self._contended_until:
            # Other workers commit to these documents too: read their heads before
            # deciding rather than lose the race at commit time.
            check = docs
        else:
            check = [
                p.doc for _, p in items if p.doc in self.docs and p.base > self.docs[p.doc].rev
            ]
        await self.docs.ensure(docs, check)
        await self._look_for_earlier(items)
        # Replays and reused ids are not looked up first (a round trip per batch): the
        # script answers them, and a document whose chain they broke is decided again on
        # a fresh copy. Ids known owned from a previous round are.
        await self._ensure_history(items)

    async def _round(
        self,
        consumer: str,
        items: list[_Item],
        carried: list[_Decision],
    ) -> tuple[list[_Item], list[_Decision], list[_Item]]:
        """Decide ``items`` in chunks, each decided while the previous chunk's commit runs
        on the server. Returns (patches to decide again, final rejections to commit,
        patches left for the next round); once a commit reports a lost race or a reused
        id, no new chunk is started, so that a document's patches keep their order."""
        retry: list[_Item] = []
        finals: list[_Decision] = []
        later: list[_Item] = []
        ids: set[str] = set()
        inflight: tuple[asyncio.Future[list[tuple[str, str]]], list[_Decision]] | None = None
        chunk, pos = carried, 0
        chunk_size = max(1, self.settings.commit_chunk)
        broken = False  # a commit undid speculative state: decide nothing more this round
        turn = time.monotonic()
        try:
            while True:
                weight = sum(len(d.entry[1].get(b"p", b"")) for d in chunk)
                while (
                    not broken
                    and pos < len(items)
                    and len(chunk) < chunk_size
                    and weight < SCRIPT_BYTES
                ):
                    entry, patch = items[pos]
                    pos += 1
                    weight += len(entry[1].get(b"p", b""))
                    if patch.id in ids or patch.doc not in self.docs:
                        # A second patch of an id waits for the first one's fate; a
                        # document dropped from the cache this round is loaded next round.
                        later.append((entry, patch))
                        continue
                    ids.add(patch.id)
                    decision = self._plan(entry, patch, self._owned)
                    if decision is not None:
                        chunk.append(decision)
                    if pos % 16 == 0 or time.monotonic() - turn > _TURN_S:
                        await asyncio.sleep(0)  # the commit in flight and the lease run
                        turn = time.monotonic()
                if inflight is not None:
                    sent = inflight[1]
                    results = await inflight[0]
                    inflight = None
                    more, final, lost = await self._receive(sent, results)
                    retry += more
                    finals += final
                    broken = broken or lost
                if chunk:
                    inflight = (asyncio.ensure_future(self._send(consumer, chunk)), chunk)
                    chunk = []
                    await asyncio.sleep(0)  # send it now; the next chunk is decided meanwhile
                elif inflight is None:
                    break
        finally:
            if inflight is not None:
                inflight[0].cancel()
                await asyncio.gather(inflight[0], return_exceptions=True)
        return retry, finals, later + items[pos:]

    async def _send(self, consumer: str, decisions: list[_Decision]) -> list[tuple[str, str]]:
        await self._attach_entries(decisions)
        return await self._commit(consumer, decisions)

    async def _receive(
        self, decisions: list[_Decision], results: list[tuple[str, str]]
    ) -> tuple[list[_Item], list[_Decision], bool]:
        """Apply a commit's results; return the patches to decide again, final
        rejections, and whether any document was rolled back."""
        retry: list[_Item] = []
        finals: list[_Decision] = []
        stale: set[str] = set()
        tally: dict[str, int] = {}
        timed: list[tuple[str, float]] = []  # (entry id, read time) of final decisions
        for decision, (status, rev) in zip(decisions, results, strict=True):
            self.counts[status] = self.counts.get(status, 0) + 1
            if status == "ok":
                held = self.waiting.pop(decision.entry[0], None)
                timed.append((decision.entry[0], self._read_at if held is None else held.read_at))
                if decision.content is not None:
                    if (decision.head + 1) % self.settings.snapshot_every == 0:
                        self._checkpoints.append(
                            (decision.patch.doc, decision.head + 1, decision.content)
                        )
                    self.docs.confirm(
                        decision.patch.doc,
                        decision.epoch,
                        decision.head + 1,
                        decision.new_hash,
                        decision.content,
                        decision.patch.src,
                    )
                what = decision.outcome.status.value
                tally[what] = tally.get(what, 0) + 1
                self.metrics.decided(decision.outcome, behind=decision.patch.base < decision.head)
                continue
            if status == "cas" or decision.kind == "c":
                # Its speculative state is not what the server has: roll it back. A
                # noop or rejection answered otherwise moved nothing.
                stale.add(decision.patch.doc)
            if status == "cas":
                retry.append((decision.entry, decision.patch))
                self._contended_until = time.monotonic() + _CONTENDED
            elif status == "reuse":
                self._owned.add(decision.patch.id)
                finals.append(self._reuse(decision, rev))
            else:  # 'dup' or 'fenced': decided here, or by the entry's new owner
                held = self.waiting.pop(decision.entry[0], None)
                if status == "dup":
                    timed.append(
                        (decision.entry[0], self._read_at if held is None else held.read_at)
                    )
                what = "duplicate" if status == "dup" else status
                tally[what] = tally.get(what, 0) + 1
                self.metrics.outcome(what, None, decision.patch.src)
        for what, count in tally.items():
            self.counts[what] = self.counts.get(what, 0) + count
        self.metrics.flush(time.time_ns() // 1_000_000)
        if timed:  # one commit call answered them all
            self._observe_hops(timed, decisions[0].called, decisions[0].replied)
        for doc in stale:
            self.docs.rollback(doc)
        confirmed = {d.patch.doc for d in decisions} - stale
        await self._snapshots(confirmed)
        self.cas_retries += len(retry)
        self.metrics.retried(len(retry))
        return retry, finals, bool(stale)

    def _observe_hops(self, timed: list[tuple[str, float]], called: float, replied: float) -> None:
        """The hops of patches decided for good: (normalized entry id, read time) each,
        committed by one call from ``called`` to ``replied`` (Unix s)."""
        self.metrics.hop(
            "normalized_wait", [max(0.0, r - int(e[: e.find("-")]) / 1000) for e, r in timed]
        )
        first = timed[0][1]
        if all(r == first for _, r in timed):  # read by one handle call: the usual case
            self.metrics.hop_all("decide", max(0.0, called - first), len(timed))
        else:  # some were held for their base since an earlier call
            for read, count in Counter(r for _, r in timed).items():
                self.metrics.hop_all("decide", max(0.0, called - read), count)
        self.metrics.hop_all("commit", replied - called, len(timed))

    async def _look_for_earlier(self, items: Sequence[_Item]) -> None:
        """For patches whose base is still ahead after ``base_ahead_wait``: is an earlier
        entry of their document still pending (held by a dead worker, or read and lost)?
        Looked up at most once a second per patch; rare, so plain reads are fine."""
        now = time.monotonic()
        for entry, patch in items:
            waiting = self.waiting.get(entry[0])
            if (
                waiting is None
                or now < waiting.next_look
                or now - waiting.since < self.settings.base_ahead_wait
                or patch.doc not in self.docs
                or patch.base <= self.docs[patch.doc].rev
            ):
                continue
            if self._pending is None or now >= self._pending[0]:
                # One scan answers every waiting patch for a second: the looks are once a
                # second per patch anyway, and patches that began to wait at other times
                # would otherwise each scan every pending entry on their own tick.
                scan = await pending_by_doc(self.redis, self.keys, self.stream)
                self._pending = (now + _LOOK_STEP, scan)
            found = self._pending[1].earlier(patch.doc, patch.src)
            # Only a look that worked counts: a failed one must not let _plan reject.
            waiting.next_look = now + _LOOK_STEP
            if found is not None and found != waiting.earlier:
                log.info(
                    "base ahead: waiting, pending entries beyond the scan's bound"
                    if found == UNREAD
                    else "base ahead: waiting for an earlier pending entry",
                    id=patch.id, doc=patch.doc, base=patch.base, src=patch.src, earlier=found,
                )  # fmt: skip
            waiting.earlier = found

    async def _ensure_history(self, items: Sequence[_Item]) -> None:
        """Fetch from the log the revisions a patch's rebase needs that the cache lacks."""
        for _, patch in items:
            doc = self.docs[patch.doc]
            if patch.base >= doc.rev:
                continue
            first_cached = doc.history[0].rev if doc.history else doc.rev + 1
            if patch.base + 1 < first_cached:
                older = await revisions_of(
                    self.redis, self.keys, patch.doc, patch.base + 1, first_cached - 1
                )
                merged = [later_of(r) for r in older] + list(doc.history)
                doc.history = deque(merged, maxlen=max(HISTORY, len(merged)))

    def _plan(self, entry: Entry, patch: NormalizedPatch, owned: set[str]) -> _Decision | None:
        doc = self.docs[patch.doc]
        if patch.id in owned:  # the script answers from the id's record
            outcome = _outcome(patch, OutcomeStatus.DUPLICATE, doc.rev)
            return _Decision(
                entry, patch, "n", doc.rev, doc.hash, outcome, epoch=doc.epoch, head_src=doc.src
            )
        if patch.base > doc.rev:
            now = time.monotonic()
            waiting = self.waiting.setdefault(
                entry[0], _Waiting(entry, now, now + _WAIT_STEP, read_at=self._read_at)
            )
            waited = now - waiting.since
            if waited < self.settings.base_ahead_wait or (
                # Not looked for an earlier entry of the document yet (the next round
                # does), or one is still in the pipeline: wait, to decide in order.
                waiting.next_look == 0.0
                or (waiting.earlier is not None and waited < self.settings.pending_wait)
            ):
                return None
        later: list[Later] = []
        if patch.base < doc.rev:  # the newest revisions are last: walk back to the base
            for h in reversed(doc.history):
                if h.rev <= patch.base:
                    break
                later.append(h)
            later.reverse()
        try:
            planned = plan(
                doc.lines,
                doc.rev,
                later,
                base=patch.base,
                splices=patch.splices,
                diff=patch.diff,
                strict=self._strict.get(patch.doc, self.settings.strict),
                limits=self.settings.limits,
            )
        except Rejected as err:
            outcome = _outcome(patch, OutcomeStatus.REJECTED, doc.rev, err)
            return _Decision(
                entry, patch, "r", doc.rev, doc.hash, outcome, epoch=doc.epoch, head_src=doc.src
            )
        if planned is None:
            outcome = _outcome(patch, OutcomeStatus.NOOP, doc.rev)
            return _Decision(
                entry, patch, "n", doc.rev, doc.hash, outcome, epoch=doc.epoch, head_src=doc.src
            )
        rev = doc.rev + 1
        digest = content_hash(planned.content)
        revision = Revision(
            doc=patch.doc,
            rev=rev,
            id=patch.id,
            base=patch.base,
            ops=to_ops(planned.splices),
            lines=len(planned.content),
            hash=digest,
            prev=doc.hash,
            author=patch.author,
            src=patch.src,
        )
        decision = _Decision(
            entry,
            patch,
            "c",
            doc.rev,
            doc.hash,
            _outcome(patch, OutcomeStatus.COMMITTED, rev),
            revision,
            digest,
            planned.content,
            doc.epoch,
            doc.src,
        )
        doc.advance(
            rev, digest, planned.content, Later(rev=rev, splices=planned.splices), patch.src
        )
        return decision

    def _reuse(self, decision: _Decision, first_src: str) -> _Decision:
        err = id_reuse(decision.patch.id, first_src)
        cached = self.docs.get(decision.patch.doc)
        head = cached.confirmed_rev if cached is not None else decision.head  # the known head
        outcome = _outcome(decision.patch, OutcomeStatus.REJECTED, head, err)
        return _Decision(decision.entry, decision.patch, "x", head, decision.head_hash, outcome)

    async def _attach_entries(self, decisions: Sequence[_Decision]) -> None:
        """Rejections carry the submitted fields: read them from the ingress stream."""
        rejected = [d for d in decisions if d.outcome.status is OutcomeStatus.REJECTED]
        if not rejected:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for d in rejected:
                pipe.xrange(self.keys.patches, d.patch.src, d.patch.src)
            replies = await pipe.execute()
        for d, reply in zip(rejected, replies, strict=True):
            if reply:
                d.outcome = with_entry(d.outcome, reply[0][1])

    async def _commit(self, consumer: str, decisions: Sequence[_Decision]) -> list[tuple[str, str]]:
        keys = [self.stream, self.keys.revisions, self.keys.outcomes, self.keys.docs]
        now_ms = time.time_ns() // 1_000_000  # the record's time; the streams use the server's
        batch: list[CommitRow] = []
        for d in decisions:
            keys += [self.keys.doc(d.patch.doc), self.keys.index(d.patch.doc)]
            keys += [self.keys.patch_id(d.patch.id), self.keys.entry_outcome(d.patch.src)]
            # The entry goes to the outcomes stream only.
            bare = msgspec.structs.replace(
                d.outcome, entry=None, entry_bytes=None, entry_sha256=None, at=now_ms
            )
            record = IdRecord(**msgspec.structs.asdict(bare), digest=d.patch.digest)
            revision = [] if d.revision is None else event_fields(d.revision, omit=SERVER_STAMPED)
            batch.append(
                CommitRow(
                    entry=d.entry[0],
                    kind=d.kind,
                    head=d.head,
                    prev=d.head_hash,
                    src=d.patch.src,
                    digest=d.patch.digest,
                    outcome=tuple(event_fields(d.outcome, omit=SERVER_STAMPED)),
                    record=_JSON.encode(record).decode(),
                    revision=tuple(revision),
                    hash=d.new_hash,
                    lines=len(d.content or ()),
                    prevsrc=d.head_src,
                    doc=d.patch.doc,
                )
            )
        ids = sorted({d.entry[0] for d in decisions}, key=parse_id)
        args: list[str | bytes | int] = [
            self.name,
            consumer,
            int(self.settings.idempotency_window * 1000),
            EMPTY_HASH,
            ids[0],
            ids[-1],
            _MSGPACK.encode(batch),
            int(self.settings.outcome_ttl * 1000),
        ]
        failpoint("execute.before_commit")
        called = time.time()
        reply: Any = await self.scripts.commit(keys=keys, args=args)
        replied = time.time()
        failpoint("execute.after_commit")
        out = [(reply[i].decode(), reply[i + 1].decode()) for i in range(0, len(reply), 2)]
        for d, (status, rev) in zip(decisions, out, strict=True):
            d.called, d.replied = called, replied
            self._log_decided(d, status, rev)
        return out

    def _log_decided(self, d: _Decision, status: str, rev: str) -> None:
        """One debug line per patch and commit result; final ones are counted for the
        batch's line."""
        event, final = _TOLD.get(status, (status, True))
        line: dict[str, Any] = {"rev": d.outcome.rev}
        if status == "ok":
            event = d.outcome.status.value
            if d.outcome.code is not None:
                line["code"] = d.outcome.code.value
        elif status == "dup":
            line["rev"] = int(rev)  # the revision that applied the patch id
        elif status == "reuse":
            line["owner"] = rev  # the ingress entry of the patch that owns the id
        if final:
            self._told[event] = self._told.get(event, 0) + 1
        log.debug(
            event, id=d.patch.id, doc=d.patch.doc, base=d.patch.base, **line,
            src=d.patch.src, entry=d.entry[0],
        )  # fmt: skip

    async def _snapshots(self, confirmed: set[str]) -> None:
        """Snapshot documents whose confirmed content is ``snapshot_every`` revisions past
        their last snapshot (never speculative content: a chunk may be in flight)."""
        every = self.settings.snapshot_every
        # Committed revisions at multiples of ``every``: time travel starts there.
        await write_checkpoints(self.redis, self.keys, self._checkpoints)
        self._checkpoints.clear()
        for name in confirmed:
            doc = self.docs.get(name)
            if doc is not None and doc.confirmed_rev - doc.snapshot_rev >= every:
                await write_snapshot(
                    self.redis, self.keys, name, doc.confirmed_rev, doc.confirmed_lines
                )
                doc.snapshot_rev = doc.confirmed_rev
