"""Dead letters: list, show, retry and drop the entries a stage gave up on.

A dead letter (``DeadLetter`` in ``Keys.dead``) names its stage, the failed entry's id
in that stage's stream (``src``) and a copy of the entry's fields as text. Retry puts
the very entry back into the stage's stream under a new id and removes the dead letter,
in one script: the entry keeps its fields, so its patch id too, and a patch id that
already has an outcome is answered from its id record, never applied twice.

The copy is the entry itself only when it was not cut and is all text. Otherwise (a cut
copy; execute's entries, which are msgpack) retry takes the entry from the stage's
stream, where it stays until it is trimmed, if it is the one the copy describes
(its text, or for a cut copy its size and digest); failing that it refuses.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from patchlog.consumers.messages import NormalizedPatch, decode_normalized
from patchlog.consumers.runner import parse_id
from patchlog.projections.patch import to_ops
from patchlog.streams.codec import ENTRY_CAP, decode_event, entry_digest, entry_text
from patchlog.streams.errors import CorruptEntry, NotFound, PatchlogError
from patchlog.streams.keys import EXECUTE, NORMALIZE, Keys
from patchlog.streams.schema import DeadLetter, IdRecord

__all__ = [
    "ID_PATTERN",
    "Letter",
    "Refused",
    "Retried",
    "Row",
    "Unretryable",
    "corrupt_row",
    "drop",
    "drop_all",
    "entry_to_retry",
    "identify",
    "iso",
    "letter_json",
    "list_rows",
    "original_of",
    "patch_json",
    "read_letter",
    "retry",
    "retry_all",
    "row_of",
    "shorten",
    "stage_stream",
]

ID_PATTERN = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")
"""A complete stream id, ``<ms>-<seq>``."""
_PAGE = 200
_MAX_FIELDS = 3000
"""Most fields one retry puts back (the script unpacks them onto the Lua stack)."""
_REPLACEMENT = "\ufffd"
_RECORD = msgspec.json.Decoder(IdRecord)


class Unretryable(PatchlogError):
    """A dead letter whose entry cannot be put back as it was; the message says why."""


class Letter(msgspec.Struct, frozen=True, kw_only=True):
    """A dead letter and its id in the dead-letter stream."""

    id: str
    dead: DeadLetter


class Row(msgspec.Struct, frozen=True, kw_only=True):
    """One line of ``patchlog dead list``."""

    id: str
    at: int
    stage: str
    deliveries: int
    error: str
    doc: str | None
    """The failed entry's document, if it says (for execute: its entry is still there)."""
    patch_id: str | None
    """Its patch id, if it says; ``None`` for an ingress entry without ``id``."""
    src: str
    consumer: str
    cut: bool
    """Whether the dead letter holds a cut copy of the entry."""


class Retried(msgspec.Struct, frozen=True, kw_only=True):
    """A dead letter whose entry was put back."""

    id: str
    """The dead letter's id (now removed)."""
    stage: str
    stream: str
    entry: str
    """The entry's new id in ``stream``."""
    doc: str | None
    patch_id: str | None
    decided: IdRecord | None
    """The id record of ``patch_id`` if the id had an outcome before the retry: the
    entry is answered from it (``duplicate`` of a committed patch, ``id_reuse`` for
    another payload), never applied again."""


class Refused(msgspec.Struct, frozen=True, kw_only=True):
    """A dead letter left in place by ``retry_all``, and why."""

    id: str
    reason: str


def stage_stream(keys: Keys, stage: str, stream: str | None = None) -> str:
    """The stream a dead letter of ``stage`` read from ``stream`` is retried into: that
    one (an execute partition), or for a letter that does not say, the stage's first."""
    streams = {NORMALIZE: keys.patches, EXECUTE: keys.normalized_stream(0)}
    if stage not in streams:
        known = ", ".join(streams)
        raise Unretryable(f"stage {stage!r} has no stream to retry into (known: {known})")
    return stream or streams[stage]


def _exact(dead: DeadLetter) -> dict[bytes, bytes] | None:
    """The copy as the entry's bytes, if it is the whole entry: not cut, and all text
    (a U+FFFD may stand for bytes that were not UTF-8)."""
    if dead.entry_bytes is not None or not dead.entry:
        return None
    if any(_REPLACEMENT in k or _REPLACEMENT in v for k, v in dead.entry.items()):
        return None
    return {k.encode(): v.encode() for k, v in dead.entry.items()}


def _describes(dead: DeadLetter, fields: Mapping[bytes, bytes]) -> bool:
    """Whether ``fields`` is the entry the dead letter's copy was made of."""
    if dead.entry_bytes is not None:
        size = sum(len(k) + len(v) for k, v in fields.items())
        return size == dead.entry_bytes and entry_digest(fields) == dead.entry_sha256
    return entry_text(fields) == dead.entry


def entry_to_retry(
    letter: Letter, stream: str, original: Mapping[bytes, bytes] | None
) -> dict[bytes, bytes]:
    """The fields to put back into ``stream``: the dead letter's copy if it is the whole
    entry, else ``original`` (what ``stream`` holds at the letter's ``src``) if it is the
    entry the copy describes. Raises ``Unretryable`` naming why neither is."""
    dead = letter.dead
    fields = _exact(dead)
    if fields is None:
        if dead.entry_bytes is not None:
            why = (
                f"its entry was cut to {ENTRY_CAP} bytes of JSON ({dead.entry_bytes} bytes "
                "in all), so the copy is not the original"
            )
        elif not dead.entry:
            why = "it holds no copy of its entry"
        else:
            why = (
                "its copy of the entry is not all text (bytes that are not UTF-8 were "
                f"replaced; {EXECUTE} entries are msgpack), so it is not the original"
            )
        if not dead.src:
            raise Unretryable(
                f"dead letter {letter.id}: {why}, and it does not say where in {stream} "
                "the original was"
            )
        where = f"{dead.src} in {stream}"
        if original is None:
            raise Unretryable(
                f"dead letter {letter.id}: {why}, and the original ({where}) is no "
                "longer there (the stream was trimmed past it)"
            )
        if not _describes(dead, original):
            raise Unretryable(
                f"dead letter {letter.id}: {why}, and the entry at {where} is not the "
                "one it recorded"
            )
        fields = dict(original)
    if len(fields) > _MAX_FIELDS:
        raise Unretryable(
            f"dead letter {letter.id}: its entry has {len(fields)} fields; retry puts "
            f"back at most {_MAX_FIELDS}"
        )
    return fields


def _normalized(fields: Mapping[bytes, bytes] | None) -> NormalizedPatch | None:
    if fields is None or b"p" not in fields:
        return None
    try:
        return decode_normalized(fields[b"p"])
    except CorruptEntry:
        return None


def identify(
    dead: DeadLetter, original: Mapping[bytes, bytes] | None
) -> tuple[str | None, str | None]:
    """(document, patch id) of the failed entry as far as it says: ``original`` (the
    entry itself) if given, else the copy; an execute entry says only through
    ``original``. The patch id is ``None`` for an ingress entry without ``id``."""
    if dead.stage == EXECUTE:
        patch = _normalized(original)
        return (patch.doc, patch.id) if patch is not None else (None, None)
    if original is not None:
        doc, patch_id = original.get(b"doc"), original.get(b"id")
        return (
            doc.decode("utf-8", "replace") if doc is not None else None,
            patch_id.decode("utf-8", "replace") if patch_id is not None else None,
        )
    return dead.entry.get("doc"), dead.entry.get("id")


def row_of(letter: Letter, original: Mapping[bytes, bytes] | None) -> Row:
    """The ``list`` row of a dead letter (``original``: its entry, if read)."""
    dead = letter.dead
    doc, patch_id = identify(dead, original)
    return Row(
        id=letter.id,
        at=dead.at,
        stage=dead.stage,
        deliveries=dead.deliveries,
        error=dead.error,
        doc=doc,
        patch_id=patch_id,
        src=dead.src,
        consumer=dead.consumer,
        cut=dead.entry_bytes is not None,
    )


def corrupt_row(letter_id: str, reason: str) -> Row:
    """The ``list`` row of a dead letter that does not decode."""
    return Row(
        id=letter_id,
        at=parse_id(letter_id)[0],
        stage="?",
        deliveries=0,
        error=reason,
        doc=None,
        patch_id=None,
        src="",
        consumer="",
        cut=False,
    )


def shorten(text: str, width: int) -> str:
    """``text`` on one line, at most ``width`` characters (a cut one ends with ``…``)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def iso(ms: int) -> str:
    """Milliseconds since the epoch as ISO 8601 UTC."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def letter_json(
    letter: Letter, keys: Keys, original: Mapping[bytes, bytes] | None
) -> dict[str, Any]:
    """A dead letter as one JSON object for ``show``: its fields (``entry`` an object),
    its id and time, the stream it is retried into, whether its entry is still there
    (for execute, that entry decoded as ``patch``), and why retry would refuse it
    (``retry``; ``null`` when it would not)."""
    out: dict[str, Any] = {"id": letter.id, "time": iso(letter.dead.at)}
    out.update(msgspec.to_builtins(letter.dead))
    refusal: str | None = None
    try:
        stream: str | None = stage_stream(keys, letter.dead.stage, letter.dead.stream)
    except Unretryable as err:
        stream, refusal = None, f"dead letter {letter.id}: {err}"
    out["stream"] = stream
    out["original"] = original is not None
    patch = _normalized(original) if letter.dead.stage == EXECUTE else None
    if patch is not None:
        out["patch"] = patch_json(patch)
    if stream is not None:
        try:
            entry_to_retry(letter, stream, original)
        except Unretryable as err:
            refusal = str(err)
    out["retry"] = refusal
    return out


def patch_json(patch: NormalizedPatch) -> dict[str, Any]:
    """A normalized patch as JSON: its fields, its splices as wire ops (``diff`` says
    whether they came from a unified diff)."""
    splices = patch.diff.splices if patch.diff is not None else patch.splices
    return {
        "id": patch.id,
        "src": patch.src,
        "doc": patch.doc,
        "base": patch.base,
        "author": patch.author,
        "digest": patch.digest,
        "ops": msgspec.to_builtins(to_ops(splices)),
        "diff": patch.diff is not None,
        "v": patch.v,
    }


# -- I/O -------------------------------------------------------------------------------


def _letter(raw_id: bytes | str, fields: Mapping[bytes, bytes]) -> Letter:
    """Decode one dead-letter entry; raises ``CorruptEntry`` naming it."""
    entry_id = raw_id.decode() if isinstance(raw_id, bytes) else raw_id
    try:
        return Letter(id=entry_id, dead=decode_event(DeadLetter, fields))
    except CorruptEntry as err:
        raise CorruptEntry(f"dead letter {entry_id} does not decode: {err}") from None


async def read_letter(redis: Redis, keys: Keys, letter_id: str) -> Letter:
    """The dead letter ``letter_id``; raises ``NotFound`` naming it, ``CorruptEntry``."""
    rows: Any = await redis.xrange(keys.dead, letter_id, letter_id)
    if not rows:
        raise NotFound(f"no dead letter {letter_id} in {keys.dead}")
    return _letter(rows[0][0], rows[0][1])


async def original_of(redis: Redis, stream: str, dead: DeadLetter) -> dict[bytes, bytes] | None:
    """The failed entry as ``stream`` still holds it at the letter's ``src``, if it does."""
    if not ID_PATTERN.fullmatch(dead.src):
        return None
    rows: Any = await redis.xrange(stream, dead.src, dead.src)
    return dict(rows[0][1]) if rows else None


async def _originals(
    redis: Redis, keys: Keys, letters: list[Letter]
) -> list[dict[bytes, bytes] | None]:
    """``original_of`` the execute letters, in one round trip; ``None`` for the others
    (their copy says what a row shows)."""
    wanted = [
        i
        for i, letter in enumerate(letters)
        if letter.dead.stage == EXECUTE and ID_PATTERN.fullmatch(letter.dead.src)
    ]
    out: list[dict[bytes, bytes] | None] = [None] * len(letters)
    if not wanted:
        return out
    async with redis.pipeline(transaction=False) as pipe:
        for i in wanted:
            stream = stage_stream(keys, EXECUTE, letters[i].dead.stream)
            pipe.xrange(stream, letters[i].dead.src, letters[i].dead.src)
        replies: list[Any] = await pipe.execute()
    for i, rows in zip(wanted, replies, strict=True):
        out[i] = dict(rows[0][1]) if rows else None
    return out


async def list_rows(redis: Redis, keys: Keys, limit: int | None) -> list[Row]:
    """Dead letters newest first, at most ``limit`` (``None``: all), read in pages."""
    out: list[Row] = []
    high = "+"
    total: Any = await redis.xlen(keys.dead)
    for _ in range(int(total) // _PAGE + 2):  # below ``high`` the stream only shrinks
        want = _PAGE if limit is None else min(_PAGE, limit - len(out))
        if want <= 0:
            break
        rows: Any = await redis.xrevrange(keys.dead, high, "-", count=want)
        page: list[Letter | Row] = []
        for raw_id, fields in rows:
            try:
                page.append(_letter(raw_id, fields))
            except CorruptEntry as err:
                page.append(corrupt_row(raw_id.decode(), str(err)))
        letters = [item for item in page if isinstance(item, Letter)]
        originals = dict(
            zip((x.id for x in letters), await _originals(redis, keys, letters), strict=True)
        )
        out += [
            row_of(item, originals[item.id]) if isinstance(item, Letter) else item for item in page
        ]
        if len(rows) < want:
            break
        high = "(" + rows[-1][0].decode()
    return out


def _script(redis: Redis) -> AsyncScript:
    source = resources.files("patchlog.streams").joinpath("lua", "retry_dead.lua")
    return redis.register_script(source.read_text("utf-8"))


async def _decided(redis: Redis, keys: Keys, patch_id: str | None) -> IdRecord | None:
    """The id record of ``patch_id``, if the id already has an outcome."""
    if patch_id is None:
        return None
    raw: Any = await redis.lindex(keys.patch_id(patch_id), 0)
    if raw is None:
        return None
    try:
        return _RECORD.decode(raw)
    except msgspec.MsgspecError:
        return None  # damaged: the commit script refuses it, as for any entry


def _read_now(keys: Keys, letter: Letter, stream: str, doc: str | None) -> str:
    """Where an execute letter read from ``stream`` goes back: its document's stream
    now (the one it was read from unless the partition count changed since), else that
    stream if execute still reads it. Raises ``Unretryable`` when neither holds."""
    if letter.dead.stage != EXECUTE:
        return stream
    if doc is not None:
        return keys.normalized_of(doc)
    if stream not in keys.normalized_streams:
        raise Unretryable(
            f"dead letter {letter.id}: {stream} is not read with {keys.partitions} "
            "partitions, and the letter does not say its document"
        )
    return stream


async def _retry_one(redis: Redis, keys: Keys, script: AsyncScript, letter: Letter) -> Retried:
    try:
        stream = stage_stream(keys, letter.dead.stage, letter.dead.stream)
    except Unretryable as err:
        raise Unretryable(f"dead letter {letter.id}: {err}") from None
    # The original entry is read only for a letter that does not hold its entry whole.
    original = (
        None if _exact(letter.dead) is not None else await original_of(redis, stream, letter.dead)
    )
    fields = entry_to_retry(letter, stream, original)
    doc, patch_id = identify(letter.dead, fields)
    stream = _read_now(keys, letter, stream, doc)
    decided = await _decided(redis, keys, patch_id)  # before: not the retried entry's own
    flat: list[bytes | str] = [letter.id]
    for name, value in fields.items():
        flat += (name, value)
    new_id: Any = await script(keys=[keys.dead, stream], args=flat)
    if new_id is None:
        raise NotFound(f"no dead letter {letter.id} in {keys.dead} (retried or dropped meanwhile)")
    return Retried(
        id=letter.id,
        stage=letter.dead.stage,
        stream=stream,
        entry=new_id.decode() if isinstance(new_id, bytes) else str(new_id),
        doc=doc,
        patch_id=patch_id,
        decided=decided,
    )


async def retry(redis: Redis, keys: Keys, letter_id: str) -> Retried:
    """Put dead letter ``letter_id``'s entry back into its stage's stream and remove the
    letter, atomically. Raises ``NotFound``, ``Unretryable``, ``CorruptEntry``."""
    letter = await read_letter(redis, keys, letter_id)
    return await _retry_one(redis, keys, _script(redis), letter)


async def retry_all(redis: Redis, keys: Keys) -> AsyncIterator[Retried | Refused]:
    """``retry`` every dead letter there is now, oldest first, yielding each result as
    it is done; one that cannot be put back stays, yielded as ``Refused`` with the
    reason. Letters added meanwhile are left for another run."""
    newest: Any = await redis.xrevrange(keys.dead, "+", "-", count=1)
    if not newest:
        return
    last = newest[0][0].decode()
    total: Any = await redis.xlen(keys.dead)
    script = _script(redis)
    low = "-"
    for _ in range(int(total) // _PAGE + 2):  # up to ``last`` the stream only shrinks
        rows: Any = await redis.xrange(keys.dead, low, last, count=_PAGE)
        for raw_id, fields in rows:
            entry_id = raw_id.decode()
            try:
                yield await _retry_one(redis, keys, script, _letter(entry_id, fields))
            except (Unretryable, CorruptEntry) as err:
                yield Refused(id=entry_id, reason=str(err))
            except NotFound:
                continue  # dropped or retried by another process meanwhile
        if len(rows) < _PAGE:
            return
        low = "(" + rows[-1][0].decode()


async def drop(redis: Redis, keys: Keys, letter_id: str) -> None:
    """Delete dead letter ``letter_id``; raises ``NotFound`` naming it."""
    removed: Any = await redis.xdel(keys.dead, letter_id)
    if not removed:
        raise NotFound(f"no dead letter {letter_id} in {keys.dead}")


async def drop_all(redis: Redis, keys: Keys) -> int:
    """Delete every dead letter there is now (those added meanwhile stay); the count."""
    newest: Any = await redis.xrevrange(keys.dead, "+", "-", count=1)
    if not newest:
        return 0
    ms, seq = parse_id(newest[0][0].decode())
    above = f"{ms}-{seq + 1}" if seq < 2**64 - 1 else f"{ms + 1}-0"
    removed: Any = await redis.xtrim(keys.dead, minid=above, approximate=False)
    return int(removed)
