"""Stream entry fields <-> typed values, at the edge.

``decode_ingress`` reads what any client may have written, so it trusts nothing and turns
every problem into a ``Rejected`` naming the field and the rule. ``event_fields`` (the
one encoder every writer of revisions, outcomes and dead letters uses) and
``decode_event`` handle patchlog's own events, whose flat fields are strings: integers in
decimal, enums by value, anything structured as JSON; ``None`` fields are left out.
"""

from __future__ import annotations

import enum
import hashlib
import re
import types
from collections.abc import Iterable, Mapping, Set
from functools import cache
from typing import Any, TypeVar, Union, get_args, get_origin

import msgspec

from patchlog.streams.errors import CorruptEntry, Rejected
from patchlog.streams.limits import Limits
from patchlog.streams.schema import DeadLetter, IngressEntry, Op, Outcome, RejectCode

__all__ = [
    "CUT",
    "ENTRY_CAP",
    "SERVER_STAMPED",
    "EntryFields",
    "Fields",
    "decode_event",
    "decode_ingress",
    "encode_event",
    "entry_digest",
    "entry_fields",
    "entry_text",
    "event_fields",
    "id_reuse",
    "payload_digest",
    "with_entry",
]

Fields = Mapping[bytes, bytes] | Mapping[str, str] | Iterable[tuple[bytes | str, bytes | str]]
"""A stream entry's fields: a mapping, or the raw (name, value) pairs of the reply."""


class EntryFields(dict[bytes, bytes]):
    """A stream entry's fields as read from the server, with the names it carried more
    than once (a dict keeps one value per name; a raw XADD may repeat a name)."""

    repeated: frozenset[bytes] = frozenset()


def entry_fields(flat: list[bytes]) -> EntryFields:
    """The fields of a flat ``[name, value, ...]`` reply: the last value of a repeated
    name is kept, and the name is listed in ``repeated``."""
    fields = EntryFields()
    repeated = set()
    for k in range(0, len(flat) - 1, 2):
        if flat[k] in fields:
            repeated.add(flat[k])
        fields[flat[k]] = flat[k + 1]
    if repeated:
        fields.repeated = frozenset(repeated)
    return fields


_OPS_DECODER = msgspec.json.Decoder(tuple[Op, ...])
_META_DECODER = msgspec.json.Decoder(dict[str, Any])
_JSON = msgspec.json.Encoder()
_REVISION = re.compile(r"0|[1-9][0-9]{0,15}")
# C0, DEL, C1 and the bidirectional overrides (which make a name read differently).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_PATH_ERROR = re.compile(r"^(.*?)(?: - at `\$(.*)`)?$", re.DOTALL)
_MAX_REVISION = 2**53 - 1
_T = TypeVar("_T", bound=msgspec.Struct)
_V = TypeVar("_V")
_KNOWN = frozenset({"doc", "base", "ops", "diff", "id", "author", "meta"})


def _as_bytes(value: bytes | str) -> bytes:
    # surrogatepass: a lone surrogate in a str becomes bytes that fail UTF-8 decoding
    # later, with a clear rejection, instead of raising here.
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")


def _pairs(fields: Fields) -> Iterable[tuple[bytes | str, bytes | str]]:
    if isinstance(fields, Mapping):
        return fields.items()
    return fields


def _text(name: str, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise Rejected(
            RejectCode.INVALID,
            f"{name}: byte {err.start} is not valid UTF-8; rule: fields are UTF-8 text",
        ) from None


def _bounded(name: str, raw: bytes, most: int) -> str:
    value = _text(name, raw)
    if not raw or len(raw) > most:
        raise Rejected(
            RejectCode.INVALID,
            f"{name}: {len(raw)} bytes; rule: between 1 and {most} UTF-8 bytes",
        )
    if _CONTROL.search(value):
        raise Rejected(RejectCode.INVALID, f"{name}: control character; rule: printable text")
    return value


def _doc(raw: bytes) -> str:
    doc = _bounded("doc", raw, 256)
    if doc != doc.strip() or "\\" in doc or any(part in ("", ".", "..") for part in doc.split("/")):
        raise Rejected(
            RejectCode.INVALID,
            f"doc: {doc!r} is not a relative path; rule: '/'-separated names, none empty, "
            "'.' or '..', no backslash, no surrounding spaces",
        )
    return doc


def _validation_message(field: str, err: msgspec.MsgspecError) -> str:
    match = _PATH_ERROR.match(str(err))
    text, path = (match.group(1), match.group(2)) if match else (str(err), None)
    text = text.replace("`", "")
    if text[1:2].islower():  # "Expected ..." reads better lowercased; "JSON ..." does not
        text = text[:1].lower() + text[1:]
    return f"{field}{path or ''}: {text}"


def _json(
    name: str, decoder: msgspec.json.Decoder[_V], seen: dict[str, bytes], rule: str
) -> _V | None:
    if name not in seen:
        return None
    try:
        return decoder.decode(seen[name])
    except msgspec.MsgspecError as err:
        raise Rejected(
            RejectCode.INVALID, f"{_validation_message(name, err)}; rule: {rule}"
        ) from None
    except UnicodeDecodeError as err:
        raise Rejected(
            RejectCode.INVALID,
            f"{name}: byte {err.start} of a JSON string is not valid UTF-8; "
            "rule: fields are UTF-8 text",
        ) from None
    except RecursionError:
        raise Rejected(
            RejectCode.INVALID, f"{name}: JSON nested too deeply; rule: {rule}"
        ) from None


def decode_ingress(fields: Fields, limits: Limits) -> IngressEntry:
    """Decode and check the fields of a ``patchlog:patches`` entry.

    Unknown fields are ignored (forward compatibility). Raises ``Rejected``:
    ``too_large`` when the fields exceed ``limits.max_patch_bytes``; ``invalid`` for a
    missing, repeated, malformed or badly typed field, each message naming the field (and
    for ops the JSON path) and the rule. Line numbers are checked later, by
    ``projections.patch.normalize``.
    """
    seen: dict[str, bytes] = {}
    size = 0
    for twice in sorted(getattr(fields, "repeated", ())):
        name = _as_bytes(twice).decode("utf-8", "replace")
        if name in _KNOWN:
            raise Rejected(RejectCode.INVALID, f"{name}: given twice; rule: each field once")
    for key, value in _pairs(fields):
        name, raw = _as_bytes(key).decode("utf-8", "replace"), _as_bytes(value)
        size += len(name) + len(raw)
        if name in seen and name in _KNOWN:
            raise Rejected(RejectCode.INVALID, f"{name}: given twice; rule: each field once")
        seen[name] = raw
    if size > limits.max_patch_bytes:
        raise Rejected(
            RejectCode.TOO_LARGE,
            f"entry: {size} bytes; rule: at most {limits.max_patch_bytes} bytes per patch",
        )
    for required in ("doc", "base"):
        if required not in seen:
            raise Rejected(
                RejectCode.INVALID, f"{required}: missing; rule: a patch has doc and base"
            )
    doc = _doc(seen["doc"])
    base_text = _text("base", seen["base"])
    if not _REVISION.fullmatch(base_text) or int(base_text) > _MAX_REVISION:
        raise Rejected(
            RejectCode.INVALID,
            f"base: {base_text[:40]!r} is not a revision; rule: a decimal integer from 0 to "
            f"{_MAX_REVISION}, without sign or leading zeros",
        )
    if ("ops" in seen) == ("diff" in seen):
        raise Rejected(
            RejectCode.INVALID,
            "ops/diff: "
            + ("both given" if "ops" in seen else "neither given")
            + "; rule: a patch has exactly one of ops and diff",
        )
    ops = _json("ops", _OPS_DECODER, seen, "ops is a JSON array of op objects")
    diff = _text("diff", seen["diff"]) if "diff" in seen else None
    meta = _json("meta", _META_DECODER, seen, "meta is a JSON object")
    return IngressEntry(
        doc=doc,
        base=int(base_text),
        ops=ops,
        diff=diff,
        id=_bounded("id", seen["id"], 128) if "id" in seen else None,
        author=_bounded("author", seen["author"], 256) if seen.get("author") else None,
        meta=meta,
    )


def entry_text(fields: Fields) -> dict[str, str]:
    """The fields as text, for recording a rejected entry; undecodable bytes are replaced."""
    return {
        _as_bytes(k).decode("utf-8", "replace"): _as_bytes(v).decode("utf-8", "replace")
        for k, v in _pairs(fields)
    }


ENTRY_CAP = 8192
"""Bytes of JSON an outcome's or a dead letter's ``entry`` holds at most: script
arguments and stream entries stay far below the server's ``proto-max-bulk-len`` whatever
a client submitted (a control character takes six bytes in JSON)."""
CUT = "…[cut]"
"""The end of a value shortened to fit ``ENTRY_CAP``."""
_NAME_ROOM = 258  # JSON bytes of one cut field name, quotes included
_VALUE_ROOM = 2050  # JSON bytes of one cut value: a few long fields and every short one fit


def entry_digest(fields: Fields) -> str:
    """sha256 hex of an entry's raw bytes: each name and value in order, as a netstring
    (``<length>:<bytes>,``), so that any language can check a cut entry against its own."""
    digest = hashlib.sha256()
    for key, value in _pairs(fields):
        for raw in (_as_bytes(key), _as_bytes(value)):
            digest.update(b"%d:%s," % (len(raw), raw))
    return digest.hexdigest()


def _fit(text: str, room: int) -> str:
    """``text``, or a prefix of it plus ``CUT``, whose JSON fits in ``room`` bytes."""
    if len(_JSON.encode(text)) <= room:
        return text
    keep = room
    while keep > 0:
        size = len(_JSON.encode(text[:keep] + CUT))
        if size <= room:
            break
        keep = keep * room // size  # at most six bytes a character: a few rounds
    return text[:keep] + CUT


_E = TypeVar("_E", Outcome, DeadLetter)


def with_entry(event: _E, fields: Fields) -> _E:
    """``event`` carrying the submitted ``fields`` as text (``entry_text``), whole if their
    JSON fits ``ENTRY_CAP``; otherwise each name and value is cut (ending with ``CUT``),
    fields that no longer fit are left out, and ``entry_bytes`` and ``entry_sha256`` give
    the whole entry's size and ``entry_digest``."""
    pairs = list(_pairs(fields))  # read three times
    text = entry_text(pairs)
    if len(_JSON.encode(text)) <= ENTRY_CAP:
        return msgspec.structs.replace(event, entry=text)
    kept: dict[str, str] = {}
    size = 2  # the braces
    for name, value in text.items():
        key, cut = _fit(name, _NAME_ROOM), _fit(value, _VALUE_ROOM)
        piece = len(_JSON.encode(key)) + len(_JSON.encode(cut)) + 2  # colon and comma
        if key not in kept and size + piece <= ENTRY_CAP:  # a later short field may fit
            kept[key] = cut
            size += piece
    whole = sum(len(_as_bytes(k)) + len(_as_bytes(v)) for k, v in pairs)
    return msgspec.structs.replace(
        event, entry=kept, entry_bytes=whole, entry_sha256=entry_digest(pairs)
    )


class _Kind(enum.Enum):
    INT = "int"
    STR = "str"
    ENUM = "enum"
    JSON = "json"


@cache
def _layout(cls: type[msgspec.Struct]) -> tuple[tuple[str, str, _Kind, Any, bool], ...]:
    out = []
    for f in msgspec.structs.fields(cls):
        tp = f.type
        if get_origin(tp) in (Union, types.UnionType):
            args = [a for a in get_args(tp) if a is not type(None)]
            tp = args[0] if len(args) == 1 else tp
        if tp is int:
            kind = _Kind.INT
        elif tp is str:
            kind = _Kind.STR
        elif isinstance(tp, type) and issubclass(tp, enum.Enum):
            kind = _Kind.ENUM
        else:
            kind = _Kind.JSON
        required = f.required
        out.append((f.name, f.encode_name, kind, tp, required))
    return tuple(out)


SERVER_STAMPED = frozenset({"at"})
"""Wire fields the scripts stamp from the server clock, appended after the rest: left out
of the fields Python hands them, so that every entry carries one clock's time."""


def event_fields(event: msgspec.Struct, *, omit: Set[str] = frozenset()) -> list[str]:
    """The stream fields of one of patchlog's own events as ``[name, value, ...]``, in
    the struct's field order, without the wire names in ``omit``."""
    flat: list[str] = []
    for name, wire, kind, _tp, _req in _layout(type(event)):
        value = getattr(event, name)
        if value is None or wire in omit:
            continue
        if kind is _Kind.INT:
            text = str(value)
        elif kind is _Kind.STR:
            text = value
        elif kind is _Kind.ENUM:
            text = value.value
        else:
            text = _JSON.encode(value).decode("utf-8")
        flat += (wire, text)
    return flat


def encode_event(event: msgspec.Struct) -> dict[str, str]:
    """``event_fields`` of ``event`` as a mapping (every field, ``at`` included)."""
    flat = event_fields(event)
    return dict(zip(flat[::2], flat[1::2], strict=True))


@cache
def _reader(cls: type[msgspec.Struct]) -> tuple[tuple[str, bytes, _Kind, Any, bool], ...]:
    """``_layout`` with wire names as bytes and a ready decoder for each JSON field."""
    return tuple(
        (name, wire.encode(), kind, msgspec.json.Decoder(tp) if kind is _Kind.JSON else tp, req)
        for name, wire, kind, tp, req in _layout(cls)
    )


def decode_event(cls: type[_T], fields: Fields) -> _T:
    """Decode one of patchlog's own events; raises ``CorruptEntry`` naming the field."""
    raw: Mapping[bytes, bytes | str]
    if isinstance(fields, dict) and all(type(k) is bytes for k in fields):
        raw = fields  # a reply's own dict: read as is (the rebuild path)
    else:
        raw = {_as_bytes(k): _as_bytes(v) for k, v in _pairs(fields)}
    kwargs: dict[str, Any] = {}
    for name, wire, kind, tp, required in _reader(cls):
        value = raw.get(wire)
        if value is None:
            if required:
                raise CorruptEntry(f"{cls.__name__}.{wire.decode()}: missing")
            continue
        if type(value) is not bytes:
            value = _as_bytes(value)
        try:
            if kind is _Kind.INT:
                kwargs[name] = int(value)
            elif kind is _Kind.STR:
                kwargs[name] = value.decode("utf-8")
            elif kind is _Kind.ENUM:
                kwargs[name] = tp(value.decode("utf-8"))
            else:
                kwargs[name] = tp.decode(value)
        except (ValueError, msgspec.MsgspecError) as err:
            raise CorruptEntry(f"{cls.__name__}.{wire.decode()}: {err}") from None
    return cls(**kwargs)


_DIGEST_ENCODER = msgspec.json.Encoder(order="sorted")


def payload_digest(entry: IngressEntry) -> str:
    """sha256 hex identifying what a patch does: doc, base, ops or diff, and author.

    Ops are compared after decoding, so JSON key order and spacing do not matter;
    ``meta`` is left out, so that a retry may carry, say, a new timestamp there.
    """
    canonical = (entry.doc, entry.base, entry.ops, entry.diff, entry.author)
    return hashlib.sha256(_DIGEST_ENCODER.encode(canonical)).hexdigest()


def id_reuse(patch_id: str, first: str) -> Rejected:
    """The ``id_reuse`` rejection for ``patch_id``, first used by ingress entry ``first``."""
    return Rejected(
        RejectCode.ID_REUSE,
        f"id: {patch_id!r} was first used by entry {first} for a different payload; "
        "rule: one id names one payload (doc, base, ops or diff, author)",
    )
