"""Decoding ingress entries at the edge, and patchlog's own events both ways."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from patchlog.streams.codec import (
    CUT,
    ENTRY_CAP,
    SERVER_STAMPED,
    decode_event,
    decode_ingress,
    encode_event,
    entry_digest,
    entry_text,
    event_fields,
    id_reuse,
    payload_digest,
    with_entry,
)
from patchlog.streams.errors import CorruptEntry, Rejected
from patchlog.streams.limits import Limits
from patchlog.streams.schema import (
    DeadLetter,
    Delete,
    IdRecord,
    Insert,
    Outcome,
    OutcomeStatus,
    RejectCode,
    Replace,
    Revision,
    ingress_json_schema,
)

LIMITS = Limits()
OPS = b'[{"op":"replace","from":2,"lines":["x"]},{"op":"delete","from":4,"to":5}]'


def fields(**overrides: bytes | None) -> dict[bytes, bytes]:
    out = {b"doc": b"notes/todo.md", b"base": b"3", b"ops": OPS}
    for key, value in overrides.items():
        if value is None:
            out.pop(key.encode(), None)
        else:
            out[key.encode()] = value
    return out


def rejected(entry: object, limits: Limits = LIMITS) -> tuple[RejectCode, str]:
    with pytest.raises(Rejected) as info:
        decode_ingress(entry, limits)  # type: ignore[arg-type]
    return info.value.code, info.value.message


def test_a_valid_entry_decodes_to_typed_values() -> None:
    """A well-formed entry becomes an IngressEntry; unknown fields are ignored."""
    entry = decode_ingress(
        fields(id=b"agent-7:42", author=b"agent-7", meta=b'{"run":1}', extra=b"future"), LIMITS
    )
    assert entry.doc == "notes/todo.md"
    assert entry.base == 3
    assert entry.ops == (Replace(from_=2, lines=("x",)), Delete(from_=4, to=5))
    assert (entry.id, entry.author, entry.meta) == ("agent-7:42", "agent-7", {"run": 1})


def test_str_fields_and_raw_pairs_are_accepted() -> None:
    """Fields may come decoded (str) or as the raw (name, value) pairs of a reply."""
    entry = decode_ingress({"doc": "d", "base": "0", "diff": "@@ -0,0 +1 @@\n+x\n"}, LIMITS)
    assert entry.diff == "@@ -0,0 +1 @@\n+x\n"
    assert decode_ingress(list(fields().items()), LIMITS).base == 3


@pytest.mark.parametrize(
    ("entry", "code", "message"),
    [
        (fields(doc=None), RejectCode.INVALID, "doc: missing; rule: a patch has doc and base"),
        (fields(base=None), RejectCode.INVALID, "base: missing; rule: a patch has doc and base"),
        (
            fields(base=b"-1"),
            RejectCode.INVALID,
            "base: '-1' is not a revision; rule: a decimal integer from 0 to "
            "9007199254740991, without sign or leading zeros",
        ),
        (
            fields(base=b"1.0"),
            RejectCode.INVALID,
            "base: '1.0' is not a revision; rule: a decimal integer from 0 to "
            "9007199254740991, without sign or leading zeros",
        ),
        (
            fields(ops=None),
            RejectCode.INVALID,
            "ops/diff: neither given; rule: a patch has exactly one of ops and diff",
        ),
        (
            fields(diff=b"@@"),
            RejectCode.INVALID,
            "ops/diff: both given; rule: a patch has exactly one of ops and diff",
        ),
        (
            fields(ops=b'[{"op":"insert","at":"1","lines":["a"]}]'),
            RejectCode.INVALID,
            "ops[0].at: expected int, got str; rule: ops is a JSON array of op objects",
        ),
        (
            fields(ops=b'[{"op":"delete","from":true}]'),
            RejectCode.INVALID,
            "ops[0].from: expected int, got bool; rule: ops is a JSON array of op objects",
        ),
        (
            fields(ops=b'[{"op":"delete","from":1.0}]'),
            RejectCode.INVALID,
            "ops[0].from: expected int, got float; rule: ops is a JSON array of op objects",
        ),
        (
            fields(ops=b'[{"op":"delete","from":1,"line":3}]'),
            RejectCode.INVALID,
            "ops[0]: object contains unknown field line; rule: ops is a JSON array of op objects",
        ),
        (
            fields(ops=b'[{"op":"move","from":1}]'),
            RejectCode.INVALID,
            "ops[0].op: invalid value 'move'; rule: ops is a JSON array of op objects",
        ),
        (
            fields(ops=b'[{"from":1}]'),
            RejectCode.INVALID,
            "ops[0]: object missing required field op; rule: ops is a JSON array of op objects",
        ),
        (
            fields(ops=b"[{"),
            RejectCode.INVALID,
            "ops: input data was truncated; rule: ops is a JSON array of op objects",
        ),
        (
            fields(ops=b"null"),
            RejectCode.INVALID,
            "ops: expected array, got null; rule: ops is a JSON array of op objects",
        ),
        (
            fields(meta=b"[1]"),
            RejectCode.INVALID,
            "meta: expected object, got array; rule: meta is a JSON object",
        ),
        (
            fields(doc=b"caf\xe9"),
            RejectCode.INVALID,
            "doc: byte 3 is not valid UTF-8; rule: fields are UTF-8 text",
        ),
        (
            fields(doc=b"a/../b"),
            RejectCode.INVALID,
            "doc: 'a/../b' is not a relative path; rule: '/'-separated names, none empty, "
            "'.' or '..', no backslash, no surrounding spaces",
        ),
        (
            fields(doc=b"a\tb"),
            RejectCode.INVALID,
            "doc: control character; rule: printable text",
        ),
        (
            fields(id=b"x" * 129),
            RejectCode.INVALID,
            "id: 129 bytes; rule: between 1 and 128 UTF-8 bytes",
        ),
        (
            [(b"doc", b"a"), (b"base", b"0"), (b"doc", b"b"), (b"ops", OPS)],
            RejectCode.INVALID,
            "doc: given twice; rule: each field once",
        ),
        (
            fields(ops=b"[" + b'{"op":"delete","from":1},' * 200_000 + b"]"),
            RejectCode.TOO_LARGE,
            "entry: 5000026 bytes; rule: at most 4194304 bytes per patch",
        ),
    ],
)
def test_bad_entries_are_rejected_naming_field_and_rule(
    entry: object, code: RejectCode, message: str
) -> None:
    """Every malformed field is a rejection with its code; the message names the field."""
    assert rejected(entry) == (code, message)


def test_line_numbers_past_2_53_are_carried_exactly_to_the_bounds_check() -> None:
    """Huge JSON integers decode exactly (no float rounding) so bounds can reject them."""
    entry = decode_ingress(fields(ops=b'[{"op":"delete","from":9007199254740993}]'), LIMITS)
    assert entry.ops == (Delete(from_=2**53 + 1),)


def test_entry_text_keeps_undecodable_bytes_visible() -> None:
    """A rejected entry is recorded as text even when its bytes are not UTF-8."""
    assert entry_text({b"doc": b"\xff"}) == {"doc": "\ufffd"}


_REJECTED = Outcome(id="p", doc="d", status=OutcomeStatus.REJECTED, rev=0)


@given(
    st.dictionaries(
        st.binary(max_size=300) | st.text(max_size=300).map(str.encode),
        st.binary(max_size=5000) | st.text("\x01\u00e9\U0001f600ab", max_size=5000).map(str.encode),
        max_size=12,
    )
)
def test_an_outcome_carries_at_most_the_cap_of_its_entry(raw: dict[bytes, bytes]) -> None:
    """Whatever was submitted, an outcome's entry is at most ENTRY_CAP bytes of JSON: the
    whole entry when it fits, else values cut with the marker, the size and the digest."""
    outcome = with_entry(_REJECTED, raw)
    assert outcome.entry is not None
    assert len(msgspec.json.encode(outcome.entry)) <= ENTRY_CAP
    if len(msgspec.json.encode(entry_text(raw))) <= ENTRY_CAP:
        assert (outcome.entry, outcome.entry_bytes, outcome.entry_sha256) == (
            entry_text(raw),
            None,
            None,
        )
    else:
        assert outcome.entry_bytes == sum(len(k) + len(v) for k, v in raw.items())
        assert outcome.entry_sha256 == entry_digest(raw)
        text = entry_text(raw)
        for name, value in outcome.entry.items():
            assert name in text or name.endswith(CUT)
            assert value in text.values() or value.endswith(CUT)


def test_a_cut_entry_keeps_the_short_fields_and_marks_the_long_one() -> None:
    """The fields that identify a patch stay whole next to one cut field; a dead letter
    is cut the same way."""
    raw = {b"doc": b"d", b"ops": b"\x01" * 100_000, b"id": b"p"}
    outcome = with_entry(_REJECTED, raw)
    assert outcome.entry is not None
    assert (outcome.entry["doc"], outcome.entry["id"]) == ("d", "p")
    assert outcome.entry["ops"] == "\x01" * (len(outcome.entry["ops"]) - len(CUT)) + CUT
    assert outcome.entry_bytes == 100_010
    dead = DeadLetter(stage="normalize", error="E", deliveries=5, entry={}, at=1)
    assert with_entry(dead, raw).entry == outcome.entry


def test_the_entry_digest_is_of_netstrings_in_field_order() -> None:
    """The digest any language recomputes: ``<len>:<bytes>,`` of each name and value."""
    expected = hashlib.sha256(b"3:doc,1:d,4:base,1:0,").hexdigest()
    assert entry_digest([(b"doc", b"d"), (b"base", b"0")]) == expected
    assert entry_digest({"doc": "d", "base": "0"}) == expected


def as_script_writes(flat: list[str], at: int) -> list[tuple[str, str]]:
    """The (name, value) pairs a script appends: the fields Python sent, then ``at``."""
    return [*zip(flat[::2], flat[1::2], strict=True), ("at", str(at))]


_texts = st.text(max_size=20)
_entries = st.dictionaries(_texts, _texts, max_size=4)
revisions = st.builds(
    Revision,
    doc=st.text(min_size=1),
    rev=st.integers(1, 2**53),
    id=st.text(min_size=1),
    base=st.integers(0, 2**53),
    ops=st.lists(
        st.one_of(
            st.builds(Insert, at=st.integers(1), lines=st.lists(st.text(), min_size=1).map(tuple)),
            st.builds(
                Replace,
                from_=st.integers(1),
                to=st.none() | st.integers(1),
                lines=st.lists(st.text()).map(tuple),
            ),
            st.builds(Delete, from_=st.integers(1), to=st.none() | st.integers(1)),
        ),
        max_size=3,
    ).map(tuple),
    lines=st.integers(0),
    hash=_texts,
    prev=_texts,
    author=_texts,
    src=_texts,
    at=st.integers(0, 2**53),
)
outcomes = st.builds(
    Outcome,
    id=st.text(min_size=1),
    doc=_texts,
    status=st.sampled_from(OutcomeStatus),
    rev=st.integers(0, 2**53),
    code=st.none() | st.sampled_from(RejectCode),
    message=st.none() | _texts,
    src=_texts,
    entry=st.none() | _entries,
    entry_bytes=st.none() | st.integers(0, 2**53),
    entry_sha256=st.none() | _texts,
    at=st.integers(0, 2**53),
)
dead_letters = st.builds(
    DeadLetter,
    stage=_texts,
    error=_texts,
    deliveries=st.integers(1, 1000),
    entry=_entries,
    entry_bytes=st.none() | st.integers(0, 2**53),
    entry_sha256=st.none() | _texts,
    at=st.integers(0, 2**53),
    src=_texts,
    consumer=_texts,
)


@given(st.one_of(revisions, outcomes, dead_letters))
def test_events_written_by_the_scripts_round_trip(event: Revision | Outcome | DeadLetter) -> None:
    """Fields from the production encoder, 'at' left to the script and appended last as
    the scripts do, decode to the same revision, outcome or dead letter."""
    flat = event_fields(event, omit=SERVER_STAMPED)
    assert "at" not in flat[::2]
    assert decode_event(type(event), as_script_writes(flat, event.at)) == event
    assert decode_event(type(event), encode_event(event)) == event


@given(revisions)
def test_revision_fields_keep_the_wire_order(revision: Revision) -> None:
    """A revision's fields are written in DESIGN.md's order, every one present."""
    flat = event_fields(revision, omit=SERVER_STAMPED)
    assert flat[::2] == [
        "doc", "rev", "id", "base", "ops", "lines", "hash", "prev", "author", "src"
    ]  # fmt: skip


def test_event_fields_are_the_wire_bytes_of_a_rejection_and_a_dead_letter() -> None:
    """Exact fields, in order, of what production writes (the wire format is public)."""
    outcome = Outcome(
        id="p1",
        doc="d",
        status=OutcomeStatus.REJECTED,
        rev=3,
        code=RejectCode.BOUNDS,
        message="op 1 (delete 9): line 9; rule: 1 <= from <= to <= 4",
        src="1-0",
        entry={"doc": "d", "base": "3"},
        at=17,
    )
    assert event_fields(outcome, omit=SERVER_STAMPED) == [
        "id", "p1",
        "doc", "d",
        "status", "rejected",
        "rev", "3",
        "code", "bounds",
        "message", "op 1 (delete 9): line 9; rule: 1 <= from <= to <= 4",
        "src", "1-0",
        "entry", '{"doc":"d","base":"3"}',
    ]  # fmt: skip
    dead = DeadLetter(
        stage="execute", error="E: x", deliveries=5, entry={"p": "?"}, at=9, src="2-0", consumer="w"
    )
    assert event_fields(dead, omit=SERVER_STAMPED) == [
        "stage", "execute",
        "error", "E: x",
        "deliveries", "5",
        "entry", '{"p":"?"}',
        "src", "2-0",
        "consumer", "w",
    ]  # fmt: skip
    revision = Revision(
        doc="d",
        rev=2,
        id="p1",
        base=1,
        ops=(Delete(from_=2, to=2), Insert(at=1, lines=("a",))),
        lines=1,
        hash="h2",
        prev="h1",
        src="1-0",
    )
    assert event_fields(revision) == [
        "doc", "d",
        "rev", "2",
        "id", "p1",
        "base", "1",
        "ops", '[{"op":"delete","from":2,"to":2},{"op":"insert","at":1,"lines":["a"]}]',
        "lines", "1",
        "hash", "h2",
        "prev", "h1",
        "author", "",
        "src", "1-0",
        "at", "0",
    ]  # fmt: skip


@given(outcomes, st.text(max_size=64))
def test_id_records_round_trip_as_json(outcome: Outcome, digest: str) -> None:
    """An id record (an outcome plus its digest) decodes from its JSON unchanged, and a
    record written without a digest reads as one with none."""
    fields = msgspec.structs.asdict(outcome)
    record = IdRecord(**fields, digest=digest)
    assert msgspec.json.decode(msgspec.json.encode(record), type=IdRecord) == record
    bare = msgspec.json.decode(msgspec.json.encode(outcome), type=IdRecord)
    assert bare == IdRecord(**fields)


def test_outcome_fields_use_wire_names_and_leave_out_none() -> None:
    """Outcomes encode enums by value and omit absent fields."""
    outcome = Outcome(id="p1", doc="d", status=OutcomeStatus.COMMITTED, rev=4, src="1-1", at=5)
    encoded = encode_event(outcome)
    assert encoded == {
        "id": "p1",
        "doc": "d",
        "status": "committed",
        "rev": "4",
        "src": "1-1",
        "at": "5",
    }
    assert decode_event(Outcome, encoded) == outcome
    with pytest.raises(CorruptEntry, match=r"Outcome.rev: "):
        decode_event(Outcome, {**encoded, "rev": "four"})


# Keywords a client's validator enforces; everything else (title, description, default,
# examples) is prose or annotation, which msgspec releases are free to word differently.
_ANNOTATIONS = frozenset({"title", "description", "default", "examples", "$comment", "$id"})


def schema_contract(schema: object, defs: dict[str, object] | None = None) -> object:
    """The part of a JSON Schema a validator checks: $refs inlined, annotations dropped."""
    if defs is None and isinstance(schema, dict):
        defs = schema.get("$defs", {})
    if isinstance(schema, list):
        return [schema_contract(item, defs) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        target = defs[schema["$ref"].rsplit("/", 1)[-1]] if defs else {}
        rest = {k: v for k, v in schema.items() if k != "$ref"}
        return schema_contract({**target, **rest} if isinstance(target, dict) else rest, defs)
    out: dict[str, object] = {}
    for key, value in schema.items():
        if key in _ANNOTATIONS or key in {"$defs", "$schema"}:
            continue
        if key == "properties" and isinstance(value, dict):
            # Property names are data, not keywords: a field called "title" stays.
            out[key] = {name: schema_contract(sub, defs) for name, sub in value.items()}
        elif key == "required" and isinstance(value, list):
            out[key] = sorted(value)
        else:
            out[key] = schema_contract(value, defs)
    return out


def committed_schema() -> dict[str, object]:
    """schema/ingress.schema.json as committed."""
    path = Path(__file__).resolve().parents[2] / "schema" / "ingress.schema.json"
    loaded: dict[str, object] = json.loads(path.read_text())
    return loaded


def test_committed_json_schema_is_up_to_date() -> None:
    """schema/ingress.schema.json validates what the wire structs accept (scripts/gen-schema)."""
    generated = json.loads(json.dumps(ingress_json_schema()))
    assert schema_contract(committed_schema()) == schema_contract(generated)


def test_schema_contract_sees_a_changed_type_or_bound_but_not_prose() -> None:
    """The drift check fails on a changed type, bound or required field, not on wording."""
    committed = committed_schema()
    base = schema_contract(committed)
    reworded = json.loads(json.dumps(committed).replace("Revision the line", "Revision that"))
    assert reworded != committed
    assert schema_contract(reworded) == base
    defs = committed["$defs"]
    assert isinstance(defs, dict)

    def mutated(change: str) -> object:
        copy = json.loads(json.dumps(committed))
        entry = copy["$defs"]["IngressEntry"]
        if change == "type":
            entry["properties"]["base"]["type"] = "string"
        elif change == "bound":
            entry["properties"]["doc"]["maxLength"] = 512
        elif change == "required":
            entry["required"] = [*entry["required"], "author"]
        elif change == "op bound":
            copy["$defs"]["Insert"]["properties"]["at"]["minimum"] = 0
        return schema_contract(copy)

    for change in ("type", "bound", "required", "op bound"):
        assert mutated(change) != base, change


def test_payload_digest_ignores_json_spelling_and_meta_but_not_the_change() -> None:
    """The same patch spelled differently digests equal; another change does not."""
    spaced = b'[ {"lines":["x"], "from":2, "op":"replace"}, {"to":5,"op":"delete","from":4} ]'
    one = decode_ingress(fields(meta=b'{"try":1}'), LIMITS)
    same = decode_ingress(fields(ops=spaced, meta=b'{"try":2}'), LIMITS)
    other = decode_ingress(fields(base=b"4"), LIMITS)
    assert payload_digest(one) == payload_digest(same)
    assert payload_digest(one) != payload_digest(other)


def test_id_reuse_rejection_names_id_first_entry_and_rule() -> None:
    """Reusing a patch id for a different payload is id_reuse, naming the first entry."""
    err = id_reuse("agent-7:42", "1700000000000-0")
    assert (err.code, err.message) == (
        RejectCode.ID_REUSE,
        "id: 'agent-7:42' was first used by entry 1700000000000-0 for a different payload; "
        "rule: one id names one payload (doc, base, ops or diff, author)",
    )
