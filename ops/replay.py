"""``patchlog replay``: the public streams as JSON lines, merged in id order.

Each entry becomes one JSON object on one line::

    {"stream":"revisions","id":"1796084322494-0","time":"2026-12-01T00:18:42.494Z",
     "ms":1796084322494,"fields":{"doc":"hello","rev":"1","ops":[...],...}}

The pure part (parsing ``--from``, decoding an entry, rendering a line, filtering) is
separate from ``replay``, the loop that pages through the streams and tails them.

Decoding, for a reader who pipes the lines into ``jq``:

- every field value is the string the server holds (``rev``, ``base``, ``at`` included);
- the fields that are JSON text on the wire (``JSON_FIELDS``: ``ops``, ``meta``,
  ``entry``, ``checks``) are JSON values; one whose text is not JSON (a client's
  malformed ``ops``, which normalize rejects) is kept as text under ``<name>_raw``;
- a value that is not UTF-8 is given as base64 of its bytes under ``<name>_b64``.

So ``.fields.ops`` is always decoded JSON or absent, and a filter such as
``.fields.ops[0].op`` never fails on a damaged entry. A field name that is not UTF-8
has its bad bytes replaced by U+FFFD.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
from collections import deque
from collections.abc import Awaitable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import msgspec

from patchlog.ops.when import TIME_RULE, to_ms
from patchlog.streams.keys import Keys
from patchlog.streams.schema import HealthStatus, OutcomeStatus

if TYPE_CHECKING:  # the CLI imports this module for its option choices: keep it light
    from redis.asyncio import Redis

__all__ = [
    "FROM_RULE",
    "JSON_FIELDS",
    "PAGE",
    "STATUSES",
    "STREAMS",
    "Query",
    "Sink",
    "StreamId",
    "decode_fields",
    "entry_line",
    "entry_object",
    "entry_time",
    "parse_from",
    "parse_id",
    "replay",
    "stream_key",
]

STREAMS = ("patches", "revisions", "outcomes", "dead", "health")
"""The public streams, by short name, in the order entries with equal ids are printed
(a revision before the outcome its commit wrote in the same millisecond)."""

JSON_FIELDS: Mapping[str, frozenset[str]] = {
    "patches": frozenset({"ops", "meta"}),
    "revisions": frozenset({"ops"}),
    "outcomes": frozenset({"entry"}),
    "dead": frozenset({"entry"}),
    "health": frozenset({"checks"}),
}
"""Per stream, the fields whose wire value is JSON text (DESIGN.md, streams/schema.py)."""

STATUSES = tuple(s.value for s in OutcomeStatus) + tuple(s.value for s in HealthStatus)
"""Values of the ``status`` field: an outcome's, and a health result's."""

PAGE = 1000
"""Entries per XRANGE or XREAD call and stream: what is held in memory at once."""

_MAX_PART = 2**64 - 1  # each half of a stream id is an unsigned 64-bit integer
_ID = re.compile(r"([0-9]{1,20})(?:-([0-9]{1,20}))?")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = datetime(1970, 1, 1)  # UTC, spelled Z by entry_time
_LAST_TIME_MS = (datetime(9999, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC) - _EPOCH) // timedelta(
    milliseconds=1
)
_ENCODER = msgspec.json.Encoder()
_WRITE_BYTES = 64 * 1024  # lines gathered before one write to the output

FROM_RULE = f"a stream id (1796084322494-0, or its milliseconds alone), {TIME_RULE}"
"""What ``--from`` accepts, as its usage error states it."""

StreamId = tuple[int, int]
"""A stream entry id as (milliseconds, sequence number): ordered as the server orders."""


def parse_id(text: str) -> StreamId | None:
    """``ms-seq`` (or ``ms`` alone, sequence 0) as a ``StreamId``; ``None`` if ``text``
    is not one or a part exceeds 2^64 - 1."""
    match = _ID.fullmatch(text)
    if match is None:
        return None
    ms, seq = int(match.group(1)), int(match.group(2) or 0)
    return (ms, seq) if ms <= _MAX_PART and seq <= _MAX_PART else None


def parse_from(text: str, now_ms: int) -> StreamId:
    """The first stream id ``--from TEXT`` lets through (see ``FROM_RULE``).

    ``now_ms`` is the current time in milliseconds since the epoch, for relative times
    and ``now``. A time before 1970 is the beginning (``0-0``). Raises ``ValueError``
    naming the rule.
    """
    text = text.strip()
    found = parse_id(text)
    if found is not None:
        return found
    try:
        return (to_ms(text, now_ms), 0)
    except ValueError:
        raise ValueError(f"{text!r} is not a stream id or a time; rule: {FROM_RULE}") from None


def entry_time(ms: int) -> str | None:
    """ISO 8601 UTC with milliseconds (``2026-12-01T08:18:42.494Z``) of an entry id's
    milliseconds; ``None`` past year 9999 (an id a client chose can be that large)."""
    if ms > _LAST_TIME_MS:
        return None
    naive = _NAIVE_EPOCH + timedelta(milliseconds=ms)  # isoformat is much faster than strftime
    return naive.isoformat(timespec="milliseconds") + "Z"


def decode_fields(stream: str, fields: Mapping[bytes, bytes]) -> dict[str, Any]:
    """An entry's fields for JSON, in their order on the wire: strings, the stream's
    ``JSON_FIELDS`` decoded (or ``<name>_raw`` text when they are not JSON), and
    ``<name>_b64`` for a value that is not UTF-8. Never raises on any bytes."""
    json_names = JSON_FIELDS.get(stream, frozenset())
    out: dict[str, Any] = {}
    for raw_name, raw_value in fields.items():
        name = raw_name.decode("utf-8", "replace")
        try:
            text = raw_value.decode("utf-8")
        except UnicodeDecodeError:
            out[f"{name}_b64"] = base64.b64encode(raw_value).decode("ascii")
            continue
        if name not in json_names:
            out[name] = text
            continue
        try:
            out[name] = msgspec.json.decode(raw_value)
        except (msgspec.MsgspecError, RecursionError):  # malformed, out of range, too deep
            out[f"{name}_raw"] = text
    return out


def entry_object(stream: str, entry_id: str, fields: Mapping[bytes, bytes]) -> dict[str, Any]:
    """The JSON object of one entry: ``stream``, ``id``, ``time`` (``entry_time``, or
    ``None``), ``ms`` and ``fields`` (``decode_fields``)."""
    ms = int(entry_id.partition("-")[0])
    return {
        "stream": stream,
        "id": entry_id,
        "time": entry_time(ms),
        "ms": ms,
        "fields": decode_fields(stream, fields),
    }


def entry_line(stream: str, entry_id: str, fields: Mapping[bytes, bytes]) -> bytes:
    """``entry_object`` as one line of compact JSON ending in ``\\n``; JSON text on the
    wire is encoded again, so a client's pretty-printed ``ops`` stays on the line."""
    return _ENCODER.encode(entry_object(stream, entry_id, fields)) + b"\n"


def stream_key(keys: Keys, stream: str) -> str:
    """The key of a public stream by its short name (one of ``STREAMS``)."""
    return {
        "patches": keys.patches,
        "revisions": keys.revisions,
        "outcomes": keys.outcomes,
        "dead": keys.dead,
        "health": keys.health,
    }[stream]


class Query(msgspec.Struct, frozen=True, kw_only=True):
    """Which entries ``replay`` prints."""

    streams: tuple[str, ...] = STREAMS
    """Short names, from ``STREAMS``."""
    start: StreamId = (0, 0)
    """The first id printed (inclusive), in every stream."""
    doc: str | None = None
    """Only entries whose ``doc`` field is this."""
    status: str | None = None
    """Only entries whose ``status`` field is this."""
    limit: int | None = None
    """Stop after this many entries (at least 1); ``None``: no limit."""

    def matches(self, fields: Mapping[bytes, bytes]) -> bool:
        """Whether an entry's raw fields pass ``doc`` and ``status``."""
        return (self.doc is None or fields.get(b"doc") == _raw(self.doc)) and (
            self.status is None or fields.get(b"status") == _raw(self.status)
        )


def _raw(text: str) -> bytes:
    # surrogateescape: a name given on the command line in bytes that are not UTF-8
    # (Python decodes argv so) matches those very bytes instead of raising.
    return text.encode("utf-8", "surrogateescape")


class Sink(Protocol):
    """Where lines go: ``sys.stdout.buffer`` (may raise ``BrokenPipeError``)."""

    def write(self, data: bytes, /) -> object: ...

    def flush(self) -> object: ...


class _Cursor:
    """One stream's place in a catch-up pass: the page in hand and where the next starts."""

    def __init__(self, rank: int, stream: str, key: str, after: StreamId, end: StreamId) -> None:
        self.rank = rank  # orders equal ids: the streams' order in STREAMS
        self.stream = stream
        self.key = key
        self.next = "(" + _text(after)
        self.end = _text(end)
        self.page: deque[tuple[StreamId, str, dict[bytes, bytes]]] = deque()
        self.done = False


def _id(raw: bytes) -> tuple[StreamId, str]:
    text = raw.decode("ascii")
    ms, _, seq = text.partition("-")
    return (int(ms), int(seq or 0)), text


def _text(sid: StreamId) -> str:
    return f"{sid[0]}-{sid[1]}"


def _before(start: StreamId) -> StreamId:
    """The id just before ``start`` (``0-0``, which no entry has, before the first)."""
    ms, seq = start
    if seq:
        return (ms, seq - 1)
    return (ms - 1, _MAX_PART) if ms else (0, 0)


_T = TypeVar("_T")


class _Stopped(Exception):
    """``stop`` was set while a call to the server was waiting."""


async def _unless(stop: asyncio.Event, call: Awaitable[_T]) -> _T:
    """The result of ``call``; raises ``_Stopped`` as soon as ``stop`` is set, with the
    call cancelled (it may be a blocking XREAD: Ctrl-C must not wait out its block)."""
    task = asyncio.ensure_future(call)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task.cancelled():
        raise _Stopped
    return task.result()


class _Limit(Exception):
    """``query.limit`` entries are printed."""


class _Replay:
    def __init__(
        self, redis: Redis, keys: Keys, query: Query, out: Sink, stop: asyncio.Event, page: int
    ) -> None:
        self.redis = redis
        self.query = query
        self.out = out
        self.stop = stop
        self.page = page
        self.streams = [s for s in STREAMS if s in query.streams]  # each once, in rank order
        self.keys = [stream_key(keys, s) for s in self.streams]
        # Per stream, the last id printed or passed over: the next pass reads after it.
        self.tails = [_before(query.start)] * len(self.streams)
        self.printed = 0
        self.lines: list[bytes] = []  # written together: one write per line is slow
        self.size = 0

    def emit(self, stream: str, entry_id: str, fields: dict[bytes, bytes]) -> None:
        """Print one entry if it matches; raises ``_Limit`` once the limit is reached."""
        if self.query.matches(fields):
            line = entry_line(stream, entry_id, fields)
            self.lines.append(line)
            self.size += len(line)
            self.printed += 1
            if self.size >= _WRITE_BYTES:
                self.write()
        if self.query.limit is not None and self.printed >= self.query.limit:
            raise _Limit

    def write(self) -> None:
        self.out.write(b"".join(self.lines))
        self.lines.clear()
        self.size = 0

    def flush(self) -> None:
        """Write and flush what is printed so far: before every wait on the server."""
        self.write()
        self.out.flush()

    async def catch_up(self) -> None:
        """Every entry after the tails up to each stream's last id when the pass starts,
        merged in id order; the tails move to those ids."""
        # The last ids bound the pass: a busy pipeline cannot keep a replay without
        # --follow running forever, and what is appended meanwhile is the next pass's.
        self.flush()
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in self.keys:
                pipe.xrevrange(key, "+", "-", count=1)
            lasts = await _unless(self.stop, pipe.execute())
        cursors: list[_Cursor] = []
        for rank, last in enumerate(lasts):
            if last and (end := _id(last[0][0])[0]) > self.tails[rank]:
                stream, key = self.streams[rank], self.keys[rank]
                cursors.append(_Cursor(rank, stream, key, self.tails[rank], end))
                self.tails[rank] = end
        while cursors:
            empty = [c for c in cursors if not c.page and not c.done]
            if empty:
                await self.fill(empty)
                cursors = [c for c in cursors if c.page]  # an empty page is the last
                continue
            first = min(cursors, key=lambda c: (c.page[0][0], c.rank))
            _, text, fields = first.page.popleft()
            if not first.page and first.done:
                cursors.remove(first)
            if self.stop.is_set():
                raise _Stopped
            self.emit(first.stream, text, fields)

    async def fill(self, cursors: list[_Cursor]) -> None:
        """The next page of each of ``cursors``, in one round trip."""
        self.flush()
        async with self.redis.pipeline(transaction=False) as pipe:
            for c in cursors:
                pipe.xrange(c.key, c.next, c.end, count=self.page)
            replies = await _unless(self.stop, pipe.execute())
        for c, reply in zip(cursors, replies, strict=True):
            for raw_id, fields in reply:
                sid, text = _id(raw_id)
                c.page.append((sid, text, fields))
            if reply:
                c.next = "(" + c.page[-1][1]
            c.done = len(reply) < self.page or c.next == "(" + c.end

    async def follow(self, block_ms: int) -> None:
        """After the backlog, a pass whenever something was appended, until ``stop``."""
        while not self.stop.is_set():
            self.flush()
            # Only a wake-up: a blocked XREAD on several streams returns as soon as one
            # has an entry (Redis 7.0 returns only that stream's), so the pass reads and
            # merges what every stream holds by then.
            wanted: dict[Any, Any] = {
                key: _text(tail) for key, tail in zip(self.keys, self.tails, strict=True)
            }
            if await _unless(self.stop, self.redis.xread(wanted, count=1, block=block_ms)):
                await self.catch_up()


async def replay(
    redis: Redis,
    keys: Keys,
    query: Query,
    out: Sink,
    *,
    follow: bool = False,
    stop: asyncio.Event | None = None,
    page: int = PAGE,
    block_ms: int = 1000,
) -> int:
    """Write the entries ``query`` selects to ``out`` as ``entry_line``s; return how
    many.

    First every entry already in the streams (up to each stream's last id when this
    started), merged in id order across streams (equal ids in ``STREAMS`` order), read
    with XRANGE, ``page`` entries per stream at a time; with ``follow``, then, each time
    a blocking XREAD of at most ``block_ms`` sees a new entry, everything appended since,
    merged the same way, until ``stop`` is set. ``out`` is flushed before every call to
    the server and at the end, so no line waits behind one. Ends early at
    ``query.limit`` entries or when ``stop`` is set. Raises ``ServerError`` (from the
    client) and ``BrokenPipeError`` (from ``out``).
    """
    run = _Replay(redis, keys, query, out, stop or asyncio.Event(), page)
    with contextlib.suppress(_Stopped, _Limit):
        await run.catch_up()
        if follow:
            await run.follow(block_ms)
    run.flush()
    return run.printed
