"""``patchlog replay``'s pure part: ``--from``, entry times, decoding fields, the lines."""

from __future__ import annotations

import base64
import json
from typing import Any

import msgspec
import msgspec.inspect as mi
import pytest
from hypothesis import given
from hypothesis import strategies as st

from patchlog.ops.replay import (
    JSON_FIELDS,
    STREAMS,
    Query,
    decode_fields,
    entry_line,
    entry_object,
    entry_time,
    parse_from,
)
from patchlog.streams.codec import encode_event
from patchlog.streams.schema import (
    DeadLetter,
    HealthResult,
    HealthStatus,
    IngressEntry,
    Insert,
    Outcome,
    OutcomeStatus,
    RejectCode,
    Revision,
)

NOW = 1_796_084_322_494  # 2026-12-01T00:18:42.494Z
LAST_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


def wire(fields: dict[str, str]) -> dict[bytes, bytes]:
    """Fields as the server returns them."""
    return {k.encode(): v.encode() for k, v in fields.items()}


@pytest.mark.parametrize(
    ("text", "start"),
    [
        ("1796084322494-0", (NOW, 0)),
        ("1796084322494-17", (NOW, 17)),
        ("1796084322494", (NOW, 0)),
        ("0-0", (0, 0)),
        ("18446744073709551615-18446744073709551615", (2**64 - 1, 2**64 - 1)),
        (" 1796084322494-3 ", (NOW, 3)),
        ("now", (NOW, 0)),
        ("-0s", (NOW, 0)),
        ("-500ms", (NOW - 500, 0)),
        ("-90s", (NOW - 90_000, 0)),
        ("-5m", (NOW - 300_000, 0)),
        ("-2h", (NOW - 7_200_000, 0)),
        ("-7d", (NOW - 7 * 86_400_000, 0)),
        ("-999999999999d", (0, 0)),  # before 1970: the beginning
        ("2026-12-01T00:18:42.494Z", (NOW, 0)),
        ("2026-12-01T01:18:42.494+01:00", (NOW, 0)),
        ("2026-12-01T00:18:42.494", (NOW, 0)),  # no offset: UTC, as replay prints times
        ("2026-12-01", (NOW - (18 * 60 + 42) * 1000 - 494, 0)),  # midnight
        ("1969-07-20T20:17:40Z", (0, 0)),
    ],
)
def test_from_gives_the_first_id_let_through(text: str, start: tuple[int, int]) -> None:
    """Ids, times (ISO 8601 and relative to now) all become the first stream id printed."""
    assert parse_from(text, NOW) == start


@pytest.mark.parametrize(
    "text",
    [
        "",
        "yesterday",
        "5m",
        "+5m",
        "-5",
        "-5y",
        "-1.5h",
        "1-2-3",
        "-1796084322494-0",
        "18446744073709551616-0",  # 2^64: no stream id is that large
        "0-18446744073709551616",
        "2026-13-01",
        "2026-12-01T25:00Z",
    ],
)
def test_bad_from_is_refused_naming_the_rule(text: str) -> None:
    """Anything else is a ValueError quoting the text and stating what is accepted."""
    with pytest.raises(ValueError, match="is not a stream id or a time") as caught:
        parse_from(text, NOW)
    message = str(caught.value)
    assert repr(text.strip()) in message
    for example in ("1796084322494-0", "ISO 8601", "-5m", "UTC"):
        assert example in message


def test_entry_time_is_utc_with_milliseconds() -> None:
    """The time of an id's milliseconds, UTC; none past year 9999 (ids a client chose)."""
    assert entry_time(0) == "1970-01-01T00:00:00.000Z"
    assert entry_time(NOW) == "2026-12-01T00:18:42.494Z"
    assert entry_time(LAST_MS) == "9999-12-31T23:59:59.999Z"
    assert entry_time(LAST_MS + 1) is None
    huge = entry_object("health", f"{2**64 - 1}-0", {})
    assert (huge["time"], huge["ms"]) == (None, 2**64 - 1)


@given(st.integers(0, LAST_MS))
def test_a_printed_time_given_to_from_starts_at_that_millisecond(ms: int) -> None:
    """What replay prints as ``time`` is a valid ``--from`` meaning that very millisecond."""
    text = entry_time(ms)
    assert text is not None
    assert parse_from(text, NOW) == (ms, 0)


def test_json_fields_are_the_schemas_structured_fields() -> None:
    """``JSON_FIELDS`` is exactly the fields each stream's schema carries as JSON text:
    everything that is not an integer, a string or an enum."""
    schemas: dict[str, type[msgspec.Struct]] = {
        "patches": IngressEntry,
        "revisions": Revision,
        "outcomes": Outcome,
        "dead": DeadLetter,
        "health": HealthResult,
    }
    assert tuple(schemas) == STREAMS

    def scalar(info: mi.Type) -> bool:
        if isinstance(info, mi.Metadata):  # Annotated[...]: constraints and descriptions
            return scalar(info.type)
        if isinstance(info, mi.UnionType):
            return all(scalar(t) for t in info.types if not isinstance(t, mi.NoneType))
        return isinstance(info, mi.IntType | mi.StrType | mi.EnumType)

    for stream, schema in schemas.items():
        info = mi.type_info(schema)
        assert isinstance(info, mi.StructType)
        structured = {f.encode_name for f in info.fields if not scalar(f.type)}
        assert JSON_FIELDS[stream] == structured, stream


def test_each_streams_json_fields_are_decoded_and_the_rest_are_strings() -> None:
    """Events as the pipeline writes them: JSON fields become JSON values, every other
    field (numbers included) stays the string on the wire."""
    revision = Revision(
        doc="d", rev=3, id="p", base=2, ops=(Insert(1, ("a", "b")),), lines=2,
        hash="h", prev="g", src="1-0", at=NOW,
    )  # fmt: skip
    fields = decode_fields("revisions", wire(encode_event(revision)))
    assert fields["ops"] == [{"op": "insert", "at": 1, "lines": ["a", "b"]}]
    assert (fields["rev"], fields["base"], fields["lines"], fields["at"]) == (
        "3",
        "2",
        "2",
        str(NOW),
    )
    assert list(fields) == list(encode_event(revision))  # the wire's order

    outcome = Outcome(
        id="p", doc="d", status=OutcomeStatus.REJECTED, rev=0, code=RejectCode.INVALID,
        message="m", entry={"doc": "d", "ops": "[1,"}, at=NOW,
    )  # fmt: skip
    fields = decode_fields("outcomes", wire(encode_event(outcome)))
    assert fields["entry"] == {"doc": "d", "ops": "[1,"}  # the entry's own fields are text
    assert (fields["status"], fields["code"], fields["rev"]) == ("rejected", "invalid", "0")

    dead = DeadLetter(stage="normalize", error="boom", deliveries=5, entry={"x": "y"}, at=NOW)
    assert decode_fields("dead", wire(encode_event(dead)))["entry"] == {"x": "y"}

    health = HealthResult(status=HealthStatus.OK, checks={"lag": {"execute": 0}}, at=NOW)
    assert decode_fields("health", wire(encode_event(health)))["checks"] == {"lag": {"execute": 0}}

    patch = wire({"doc": "d", "base": "0", "ops": "[]", "meta": '{"run": 7}', "entry": "{}"})
    assert decode_fields("patches", patch) == {
        "doc": "d", "base": "0", "ops": [], "meta": {"run": 7}, "entry": "{}",
    }  # fmt: skip
    # A name is JSON only in the stream whose schema says so.
    assert decode_fields("outcomes", wire({"ops": "[]"})) == {"ops": "[]"}


@pytest.mark.parametrize(
    "text",
    ["[1,", "", "NaN", "1e400", "[" * 5000 + "]" * 5000, "{'op': 'insert'}", "[1] [2]"],
)
def test_json_field_that_is_not_json_is_kept_as_raw_text(text: str) -> None:
    """Malformed, out of range or too deeply nested: the text under ``<name>_raw``, so
    ``.fields.ops`` is always decoded JSON or absent."""
    assert decode_fields("patches", wire({"doc": "d", "ops": text})) == {
        "doc": "d",
        "ops_raw": text,
    }


def test_bytes_that_are_not_utf8_are_base64() -> None:
    """A value that is not UTF-8 is base64 of its bytes under ``<name>_b64``; a name that
    is not UTF-8 gets U+FFFD."""
    raw = {b"doc": b"d\xff", b"ops": b'["\xc3"]', b"\xfeid": b"p", b"diff": b"\xed\xa0\x80"}
    fields = decode_fields("patches", raw)
    assert fields == {
        "doc_b64": base64.b64encode(b"d\xff").decode(),
        "ops_b64": base64.b64encode(b'["\xc3"]').decode(),
        "\ufffdid": "p",
        "diff_b64": base64.b64encode(b"\xed\xa0\x80").decode(),  # a surrogate is not UTF-8
    }
    assert base64.b64decode(fields["doc_b64"]) == b"d\xff"


@given(
    st.sampled_from(STREAMS),
    st.dictionaries(
        st.sampled_from([b"doc", b"ops", b"meta", b"entry", b"checks", b"status"]) | st.binary(),
        st.binary() | st.text().map(str.encode) | st.sampled_from([b"[]", b'{"a":[1,2.5,null]}']),
    ),
)
def test_any_entry_is_one_line_of_json(stream: str, raw: dict[bytes, bytes]) -> None:
    """Whatever bytes an entry holds, its line is one JSON object on one line."""
    line = entry_line(stream, "1-0", raw)
    assert line.endswith(b"\n")
    assert b"\n" not in line[:-1]
    parsed: dict[str, Any] = json.loads(line)
    assert (parsed["stream"], parsed["id"], parsed["ms"]) == (stream, "1-0", 1)
    assert parsed["time"] == "1970-01-01T00:00:00.001Z"
    assert len(parsed["fields"]) <= len(raw)


def test_pretty_printed_json_stays_on_its_line() -> None:
    """A client's ops with line breaks inside are encoded again, compactly."""
    ops = '[\n  {"op": "insert",\n   "at": 1, "lines": ["a\\nb"]}\n]'
    line = entry_line("patches", f"{NOW}-2", wire({"doc": "d", "base": "0", "ops": ops}))
    assert line.count(b"\n") == 1
    assert json.loads(line) == {
        "stream": "patches",
        "id": f"{NOW}-2",
        "time": "2026-12-01T00:18:42.494Z",
        "ms": NOW,
        "fields": {"doc": "d", "base": "0", "ops": [{"op": "insert", "at": 1, "lines": ["a\nb"]}]},
    }


def test_query_matches_doc_and_status_exactly() -> None:
    """``--doc`` and ``--status`` compare the raw field; an entry without it is left out."""
    committed = wire({"doc": "a/b", "status": "committed"})
    assert Query().matches(committed)
    assert Query(doc="a/b").matches(committed)
    assert not Query(doc="a").matches(committed)
    assert Query(doc="a/b", status="committed").matches(committed)
    assert not Query(doc="a/b", status="rejected").matches(committed)
    assert not Query(status="ok").matches(wire({"doc": "a/b"}))
    assert not Query(doc="a/b").matches(wire({"status": "ok"}))
    assert Query(doc="é").matches(wire({"doc": "é"}))
    # A name given in bytes that are not UTF-8 (argv decodes them with surrogateescape).
    assert Query(doc=b"d\xff".decode("utf-8", "surrogateescape")).matches({b"doc": b"d\xff"})
