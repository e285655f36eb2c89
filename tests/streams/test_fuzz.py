"""Hostile input never crashes the pure path: every failure is a Rejected with a code."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from patchlog.projections.diff import check_length, parse_diff, verify
from patchlog.projections.patch import apply, check_bounds, effective, normalize
from patchlog.streams.codec import decode_ingress
from patchlog.streams.errors import Rejected
from patchlog.streams.limits import Limits
from patchlog.streams.schema import RejectCode

LIMITS = Limits(max_doc_lines=1000)
DOC = [f"line {i}" for i in range(20)]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
op_like = st.fixed_dictionaries(
    {"op": st.sampled_from(["insert", "replace", "delete", "move", 1])},
    optional={
        "at": json_values | st.integers(-3, 25),
        "from": json_values | st.integers(-3, 25),
        "to": json_values | st.integers(-3, 25),
        "lines": st.lists(st.text(max_size=4), max_size=3) | json_values,
    },
)
field_value = st.binary(max_size=40) | st.text(max_size=40).map(str.encode)


def run_pure_path(fields: dict[bytes, bytes]) -> list[str]:
    entry = decode_ingress(fields, LIMITS)
    if entry.ops is not None:
        splices = normalize(entry.ops, LIMITS)
    else:
        assert entry.diff is not None
        parsed = parse_diff(entry.diff, LIMITS)
        check_length(parsed, len(DOC))
        verify(parsed.expect, DOC)
        splices = parsed.splices
    check_bounds(splices, len(DOC))
    return apply(DOC, effective(DOC, splices), LIMITS)


def outcome(fields: dict[bytes, bytes]) -> Rejected | list[str]:
    """The new content, or the rejection; any other exception fails the test."""
    try:
        return run_pure_path(fields)
    except Rejected as err:
        return err


def assert_well_formed(result: Rejected | list[str]) -> None:
    if isinstance(result, Rejected):
        assert isinstance(result.code, RejectCode)
        assert result.message
    else:
        assert all("\n" not in line and "\r" not in line for line in result)


@given(
    st.dictionaries(st.sampled_from([b"doc", b"base", b"ops", b"diff", b"id", b"x"]), field_value)
)
def test_random_fields_only_ever_reject(fields: dict[bytes, bytes]) -> None:
    """Arbitrary bytes in any field end as a Rejected, never another exception."""
    assert_well_formed(outcome(fields))


@given(st.lists(op_like, max_size=5) | json_values, st.sampled_from([b"0", b"3", b"-1", b"x"]))
def test_random_ops_json_only_ever_reject(ops: object, base: bytes) -> None:
    """Arbitrary JSON in ops (wrong types, huge ints, unknown ops) is rejected, never raised."""
    fields = {b"doc": b"d", b"base": base, b"ops": json.dumps(ops).encode()}
    assert_well_formed(outcome(fields))


diff_rows = st.lists(
    st.one_of(
        st.sampled_from(
            ["--- a", "+++ b", "@@ -1,2 +1,2 @@", "@@ -0,0 +1 @@", "\\ No newline", ""]
        ),
        st.builds(
            lambda t, s: t + s, st.sampled_from([" ", "-", "+", "@@ -", "@"]), st.text(max_size=6)
        ),
    ),
    max_size=12,
)


@given(diff_rows)
def test_random_diffs_only_ever_reject(rows: list[str]) -> None:
    """Arbitrary diff-like text is parsed or rejected, never crashes."""
    assert_well_formed(outcome({b"doc": b"d", b"base": b"1", b"diff": "\n".join(rows).encode()}))


@given(
    st.sampled_from(["ops", "meta"]),
    st.sampled_from([b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\\ud800", b"\xf4\x90\x80\x80"]),
)
def test_invalid_utf8_inside_json_strings_is_invalid(field: str, bad: bytes) -> None:
    """Bad UTF-8 inside a JSON string (a line, an op key, meta) is rejected, not raised."""
    ops = b'[{"op":"insert","at":1,"lines":["' + bad + b'"]}]'
    meta = b'{"k":"' + bad + b'"}'
    entry = {b"doc": b"d", b"base": b"0", b"ops": ops if field == "ops" else b"[]"}
    if field == "meta":
        entry[b"meta"] = meta
    result = outcome(entry)
    assert isinstance(result, Rejected)
    assert result.code is RejectCode.INVALID


@given(st.integers(500, 20_000), st.sampled_from(["ops", "meta"]))
def test_deeply_nested_json_is_invalid(depth: int, field: str) -> None:
    """Deeply nested JSON (a recursion bomb) in ops or meta is rejected, not raised."""
    bomb = b"[" * depth + b"]" * depth
    ops = b'[{"x":' + bomb + b',"op":"delete","from":1}]' if field == "ops" else b"[]"
    entry = {b"doc": b"d", b"base": b"0", b"ops": ops, b"meta": b'{"a":' + bomb + b"}"}
    result = outcome(entry)
    assert isinstance(result, Rejected)
    assert result.code is RejectCode.INVALID


@given(st.integers(4300, 5000))
def test_huge_hunk_numbers_are_rejected(digits: int) -> None:
    """Hunk headers with absurdly long numbers are rejected, not a ValueError."""
    diff = "@@ -" + "0" * digits + "1 +1 @@\n-a\n+b\n"
    result = outcome({b"doc": b"d", b"base": b"1", b"diff": diff.encode()})
    assert isinstance(result, Rejected)


@given(st.text(max_size=8))
def test_str_fields_with_lone_surrogates_are_rejected(doc: str) -> None:
    """Fields given as str (even with lone surrogates) never raise outside Rejected."""
    with pytest.raises(Rejected) as info:
        decode_ingress({"doc": doc + "\ud800", "base": "0", "ops": "[]"}, LIMITS)
    assert info.value.code is RejectCode.INVALID
