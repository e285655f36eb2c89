"""Removing data: one document's keys (and on request its revisions), a retired
projector's checkpoint, or every key of a namespace.

A document's keys are its head, index, snapshot and checkpoints, its field in the
strict hash and its member of the document set. Its revisions stay in the revision log
unless asked for: the log is the truth, and ``rebuild --repair`` would bring the
document back from it. A namespace is every key named ``<namespace>:…``: a namespace
that another one starts with (``patchlog`` and ``patchlog2``) loses nothing of the other.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import msgspec
from redis.asyncio import Redis

from patchlog.streams.errors import ServerError
from patchlog.streams.keys import Keys

__all__ = [
    "DOC_KINDS",
    "DocPurge",
    "delete_revisions",
    "doc_keys",
    "kind_of",
    "namespace_pattern",
    "purge_all",
    "purge_doc",
    "purge_projector",
]

DOC_KINDS = ("head", "index", "snapshot", "checkpoints", "strict", "listed")
"""What ``purge_doc`` counts, in the order it reports them."""
_PAGE = 1000
"""Entries per XRANGE page, keys per SCAN call and per UNLINK."""
_GLOB = re.compile(r"([*?\[\]\\])")


class DocPurge(msgspec.Struct, frozen=True, kw_only=True):
    """What ``purge_doc`` removed: 1 or 0 for each of ``DOC_KINDS``, and the revisions
    deleted from the log (``None``: the log was left alone)."""

    doc: str
    head: int
    index: int
    snapshot: int
    checkpoints: int
    strict: int
    listed: int
    revisions: int | None


def doc_keys(keys: Keys, doc: str) -> dict[str, str]:
    """The keys of ``doc`` that are its alone, by kind (``head``, ``index``,
    ``snapshot``, ``checkpoints``)."""
    return {
        "head": keys.doc(doc),
        "index": keys.index(doc),
        "snapshot": keys.snapshot(doc),
        "checkpoints": keys.checkpoints(doc),
    }


async def purge_projector(redis: Redis, keys: Keys, name: str) -> bool:
    """Forget projector ``name`` (its checkpoint and its place in the projector set), so
    health stops judging a folder nobody keeps any more; whether it was known. Its
    folder is left alone: a projector started on it again catches up from the start."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.delete(keys.projector(name))
        pipe.srem(keys.projectors, name)
        deleted, removed = await pipe.execute()
    return bool(deleted or removed)


def namespace_pattern(namespace: str) -> str:
    """The SCAN pattern of every key of ``namespace`` and no other: ``<namespace>:*``,
    with the namespace's own glob characters escaped."""
    return _GLOB.sub(r"\\\1", namespace) + ":*"


def kind_of(namespace: str, key: bytes) -> str | None:
    """What a key of ``namespace`` holds, named by its first segment after the prefix
    (``doc``, ``idx``, ``id``, ``out``, ``revisions``, ...); ``None`` for a key outside it."""
    prefix = namespace.encode() + b":"
    if not key.startswith(prefix):
        return None
    rest = key[len(prefix) :]
    return rest.split(b":", 1)[0].decode("utf-8", "replace")


async def purge_doc(redis: Redis, keys: Keys, doc: str, *, history: bool) -> DocPurge:
    """Remove ``doc``'s keys in one transaction; with ``history``, then also its entries
    of the revision log (``delete_revisions``)."""
    own = doc_keys(keys, doc)
    async with redis.pipeline(transaction=True) as pipe:
        for key in own.values():
            pipe.delete(key)
        pipe.srem(keys.docs, doc)
        # '*' in the strict hash is the whole namespace's flag, not a document's.
        if doc != "*":
            pipe.hdel(keys.strict, doc)
        replies: list[Any] = await pipe.execute()
    counts = dict(zip([*own, "listed", "strict"], (int(r) for r in replies), strict=False))
    revisions = await delete_revisions(redis, keys, doc) if history else None
    return DocPurge(
        doc=doc,
        head=counts["head"],
        index=counts["index"],
        snapshot=counts["snapshot"],
        checkpoints=counts["checkpoints"],
        strict=counts.get("strict", 0),
        listed=counts["listed"],
        revisions=revisions,
    )


async def delete_revisions(redis: Redis, keys: Keys, doc: str) -> int:
    """Delete ``doc``'s entries from the revision log (XDEL), found by reading the log
    in pages up to its newest entry at the start; the count deleted."""
    newest: Any = await redis.xrevrange(keys.revisions, "+", "-", count=1)
    if not newest:
        return 0
    last = newest[0][0]
    total: Any = await redis.xlen(keys.revisions)
    wanted = doc.encode()
    deleted = 0
    low: bytes | str = "-"
    for _ in range(int(total) // _PAGE + 2):  # up to ``last`` the log only shrinks
        rows: Any = await redis.xrange(keys.revisions, low, last, count=_PAGE)
        mine = [entry_id for entry_id, fields in rows if fields.get(b"doc") == wanted]
        if mine:
            deleted += int(await redis.xdel(keys.revisions, *mine))
        if len(rows) < _PAGE:
            break
        low = b"(" + rows[-1][0]
    return deleted


async def purge_all(redis: Redis, namespace: str) -> Counter[str]:
    """Remove every key of ``namespace`` (SCAN in pages of 1000, UNLINK per page); the
    count removed of each kind (``kind_of``)."""
    removed: Counter[str] = Counter()
    size: Any = await redis.dbsize()
    # A full SCAN takes about (table buckets / COUNT) calls; the table has at most a
    # few times as many buckets as keys. The bound only stops a server that never ends.
    rounds = 16 * (int(size) // _PAGE + 1) + 1000
    pattern = namespace_pattern(namespace)
    cursor = 0
    for _ in range(rounds):
        reply: Any = await redis.scan(cursor, match=pattern, count=_PAGE)
        cursor = int(reply[0])
        found: list[bytes] = reply[1]
        # SCAN's pattern already matched; the prefix is checked again before deleting.
        page = [key for key in found if kind_of(namespace, key) is not None]
        if page:
            kinds = [kind_of(namespace, key) or "" for key in page]
            gone: Any = await _unlink_each(redis, page)
            removed.update(kind for kind, n in zip(kinds, gone, strict=True) if n)
        if cursor == 0:
            return removed
    raise ServerError(f"SCAN of {pattern!r} did not finish in {rounds} calls")


async def _unlink_each(redis: Redis, page: list[bytes]) -> list[int]:
    """UNLINK each key of ``page`` in one round trip; 1 for a key that was there."""
    async with redis.pipeline(transaction=False) as pipe:
        for key in page:
            pipe.unlink(key)
        return [int(n) for n in await pipe.execute()]
