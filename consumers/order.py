"""Whether an earlier entry of a document is still on its way through the pipeline.

A patch whose base revision does not exist yet usually waits for a predecessor that is
being decided right now. When that predecessor is held up instead (a worker died holding
it and its lease has to run out, or a read's reply was lost), the patch must not be
rejected ``base_ahead`` before it: it keeps waiting while an earlier entry for its
document is pending in either consumer group. Entries are delivered to a group in stream
order, so every earlier entry has been delivered: it is either acknowledged (decided) or
in the group's pending list, which is where this looks.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from patchlog.consumers.messages import decode_normalized
from patchlog.consumers.runner import parse_id
from patchlog.streams.errors import CorruptEntry, GroupMissing
from patchlog.streams.keys import EXECUTE, NORMALIZE, Keys

__all__ = ["UNREAD", "PendingByDoc", "earlier_pending", "pending_by_doc"]

_PAGE = 500
_PAGES = 20  # at most 10,000 pending entries looked at per stream: a bounded scan
UNREAD = "(beyond the 10,000 pending entries read)"
"""What ``PendingByDoc.earlier`` answers when it cannot rule an earlier entry out."""


async def _pending(redis: Redis, stream: str, group: str) -> tuple[list[bytes], bool]:
    """Ids pending in ``group``, oldest first, bounded, and whether that is all of them;
    none if the group does not exist (nothing of it can be pending)."""
    out: list[bytes] = []
    low = "-"
    try:
        for _ in range(_PAGES):
            rows: Any = await redis.xpending_range(stream, group, low, "+", _PAGE)
            out += [row["message_id"] for row in rows]
            if len(rows) < _PAGE:
                return out, True
            low = "(" + rows[-1]["message_id"].decode()
    except GroupMissing:
        return [], True
    return out, False


async def _bodies(
    redis: Redis, stream: str, ids: list[bytes]
) -> list[tuple[str, dict[bytes, bytes]]]:
    """(id, fields) of the entries that still exist, in one round trip."""
    if not ids:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for stream_id in ids:
            pipe.xrange(stream, stream_id, stream_id)
        replies: list[Any] = await pipe.execute()
    return [(reply[0][0].decode(), reply[0][1]) for reply in replies if reply]


class PendingByDoc:
    """Both groups' pending entries at one moment, by document: one scan answers every
    waiting patch of a batch (a scan per patch made a backlog of waiting patches cost
    its square in reads)."""

    def __init__(
        self,
        ingress: dict[str, list[tuple[tuple[int, int], str]]],
        internal: dict[str, list[tuple[tuple[int, int], str]]],
        complete: bool = True,
    ) -> None:
        self.complete = complete
        """Whether every pending entry was read (a scan stops at 10,000 per stream)."""
        self.ingress = ingress
        """doc -> (ingress id, same) of each entry pending in normalize, oldest first."""
        self.internal = internal
        """doc -> (the patch's ingress id, normalized entry id) pending in execute."""

    def earlier(self, doc: str, src: str) -> str | None:
        """The id of a pending entry for ``doc`` submitted before ingress id ``src``;
        ``UNREAD`` when none was found but the scan did not read every pending entry
        (so one may still be on its way: the patch keeps waiting, within its bound)."""
        mine = parse_id(src)
        for rows in (self.ingress.get(doc, ()), self.internal.get(doc, ())):
            for submitted, stream_id in rows:
                if submitted < mine:
                    return stream_id
        return None if self.complete else UNREAD


async def pending_by_doc(redis: Redis, keys: Keys, stream: str | None = None) -> PendingByDoc:
    """Read both pending lists (bounded) and the documents of their entries: the ingress
    stream's and that of normalized ``stream`` (default: the first; a document's patches
    all go to one, ``Keys.normalized_of``)."""
    stream = stream or keys.normalized_stream(0)
    ingress: dict[str, list[tuple[tuple[int, int], str]]] = {}
    pending, whole_ingress = await _pending(redis, keys.patches, NORMALIZE)
    for stream_id, fields in await _bodies(redis, keys.patches, pending):
        doc = fields.get(b"doc", b"").decode("utf-8", "replace")
        ingress.setdefault(doc, []).append((parse_id(stream_id), stream_id))
    internal: dict[str, list[tuple[tuple[int, int], str]]] = {}
    pending, whole_internal = await _pending(redis, stream, EXECUTE)
    for stream_id, fields in await _bodies(redis, stream, pending):
        try:
            patch = decode_normalized(fields[b"p"])
        except (KeyError, CorruptEntry):
            continue  # an entry nobody can read is no predecessor to wait for
        internal.setdefault(patch.doc, []).append((parse_id(patch.src), stream_id))
    return PendingByDoc(ingress, internal, whole_ingress and whole_internal)


async def earlier_pending(redis: Redis, keys: Keys, doc: str, src: str) -> str | None:
    """The id of an entry for ``doc`` submitted before this patch (ingress id ``src``)
    that is still pending: in the ingress stream, or in the normalized stream's pending
    list (two normalize workers may forward an earlier patch after a later one, so there
    it is the patch's own ingress id that is compared). ``None`` when there is none."""
    return (await pending_by_doc(redis, keys, keys.normalized_of(doc))).earlier(doc, src)
