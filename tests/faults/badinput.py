"""Bad input B1 to B12 (FAULT-PLAN.md section 6): a catalogue of raw ingress entries as
a client in any language could XADD them, each with the one outcome it must get, and the
functions that run them through the real stages and measure what the plan asks for.

``run_scenario`` runs one group of the catalogue through in-process stages (B12: entries
trimmed while pending); ``garbage_mix`` (B11) runs stage processes under a half-garbage
load. Each returns a ``Row``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import msgspec
import structlog
from redis.asyncio import Redis

from patchlog.consumers.runner import trim_acknowledged
from patchlog.ops.config import settings_env
from patchlog.projections.load import read_document
from patchlog.projections.rebuild import verify
from patchlog.streams.codec import decode_event
from patchlog.streams.connection import connect
from patchlog.streams.content import content_hash
from patchlog.streams.keys import EXECUTE, NORMALIZE
from patchlog.streams.log import read_head
from patchlog.streams.schema import IdRecord, Outcome, OutcomeStatus, RejectCode
from patchlog.streams.scripts import Scripts
from patchlog.streams.settings import Settings
from tests.faults.row import Row
from tests.integration.helpers import drain, outcomes, runners

__all__ = ["SCENARIOS", "Bad", "catalogue", "garbage_mix", "run_scenario"]

Pairs = tuple[tuple[bytes, bytes], ...]
"""An entry's fields in XADD order; a name may repeat, as on the wire."""

INVALID, BOUNDS, OVERLAP = RejectCode.INVALID, RejectCode.BOUNDS, RejectCode.OVERLAP
TOO_LARGE, CONFLICT, ID_REUSE = RejectCode.TOO_LARGE, RejectCode.CONFLICT, RejectCode.ID_REUSE
COMMITTED, DUPLICATE = OutcomeStatus.COMMITTED, OutcomeStatus.DUPLICATE
INSERT = '[{"op":"insert","at":1,"lines":["x"]}]'
OPS_RULE = "rule: ops is a JSON array of op objects"
LINE_RULE = "rule: line numbers are between 1 and "
BASE_RULE = "rule: a decimal integer from 0 to "
TEXT_RULE = "rule: a line holds no LF, CR or NUL"
MEMORY_BOUND = 512 * 1024
"""Server memory a batch of huge rejected entries may leave behind once the ingress
stream is trimmed: each leaves an outcome whose copy of the entry is cut to 8 KiB and
an outcome key of a few hundred bytes. Half of the smallest huge payload (1 MiB + 1):
one copy of any of them kept anywhere (a stream, a key, a client buffer) breaks it."""


@dataclasses.dataclass(frozen=True)
class Bad:
    """One raw ingress entry and the outcome it must get."""

    scenario: str
    """Its row of FAULT-PLAN.md section 6 (``B1`` ... ``B10``)."""
    name: str
    fields: Pairs
    want: RejectCode | OutcomeStatus
    """A code: rejected with it; a status: that status (entries that are not bad)."""
    says: tuple[str, ...] = ()
    """Substrings its rejection message holds: the field or op, the line, the rule."""
    mix: bool = True
    """Small and decided whatever other entries do: drawn into B11's garbage."""


def _bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def raw(*flat: str | bytes) -> Pairs:
    """Fields from ``name, value, name, value, ...``, repeated names kept."""
    out = [_bytes(v) for v in flat]
    return tuple(zip(out[::2], out[1::2], strict=True))


def patch(
    ops: str | bytes | None = INSERT,
    doc: str | bytes = "d",
    base: str | bytes = "0",
    **extra: str | bytes,
) -> Pairs:
    """The fields of a patch with ``ops`` (none if ``None``) plus ``extra``."""
    flat: list[str | bytes] = ["doc", doc, "base", base]
    flat += [] if ops is None else ["ops", ops]
    for name, value in extra.items():
        flat += [name, value]
    return raw(*flat)


def one(op: str) -> str:
    """Ops of one op given as JSON text."""
    return f"[{op}]"


def line(text: str) -> str:
    """Ops inserting one line given as the inside of a JSON string literal."""
    return one(f'{{"op":"insert","at":1,"lines":["{text}"]}}')


Maker = Callable[..., Bad]


def _maker(scenario: str) -> Maker:
    def bad(
        name: str, fields: Pairs, want: RejectCode | OutcomeStatus, *says: str, mix: bool = True
    ) -> Bad:
        return Bad(scenario, name, fields, want, says, mix)

    return bad


# The tables below are laid out by hand, one entry to a line or two.
# fmt: off
def _b1() -> list[Bad]:
    b = _maker("B1")
    return [
        b("no doc", patch()[1:], INVALID, "doc: missing", "rule: a patch has doc and base"),
        b("no base", patch()[:1] + patch()[2:], INVALID, "base: missing"),
        b("neither ops nor diff", patch(None), INVALID,
          "ops/diff: neither given", "rule: a patch has exactly one of ops and diff"),
        b("no known field", raw("x", "1"), INVALID, "doc: missing"),
        b("ops and diff", patch(diff="@@"), INVALID, "ops/diff: both given"),
        b("empty ops", patch("[]"), INVALID, "ops: empty list", "rule: a patch has at least one"),
        b("empty doc", patch(doc=""), INVALID, "doc: 0 bytes", "rule: between 1 and 256 UTF-8"),
        b("empty base", patch(base=""), INVALID, "base: '' is not a revision", BASE_RULE),
        b("empty ops text", patch(""), INVALID, "ops: ", OPS_RULE),
        b("empty diff", patch(None, diff=""), INVALID, "diff: no hunk found", "rule: a diff"),
        b("empty id", patch(id=""), INVALID, "id: 0 bytes", "rule: between 1 and 128 UTF-8"),
        b("insert without lines", patch(one('{"op":"insert","at":1}')), INVALID,
          "ops[0]: object missing required field lines", OPS_RULE),
        b("insert of no lines", patch(one('{"op":"insert","at":1,"lines":[]}')), INVALID,
          "ops[0].lines: expected array of length >= 1", OPS_RULE),
        b("op without its kind", patch(one('{"at":1,"lines":["x"]}')), INVALID,
          "ops[0]: object missing required field op", OPS_RULE),
        b("unknown op kind", patch(one('{"op":"move","from":1,"to":2}')), INVALID,
          "ops[0].op: invalid value 'move'", OPS_RULE),
        # Ops forbid unknown fields (schema.py: forbid_unknown_fields): a misspelt "to"
        # would otherwise turn a range into its first line without a word.
        b("unknown op field", patch(one('{"op":"delete","from":1,"too":3}')), INVALID,
          "ops[0]: object contains unknown field too", OPS_RULE),
        # Unknown stream fields are ignored (codec.decode_ingress: forward compatibility,
        # a newer client may add fields): the patch commits.
        b("unknown stream fields", patch(doc="b1/unknown", colour="red", trace="t-1"), COMMITTED,
          mix=False),
    ]


def _b2() -> list[Bad]:
    b = _maker("B2")
    typed = [
        ('{"op":"insert","at":"1","lines":["x"]}', "ops[0].at: expected int, got str"),
        ('{"op":"insert","at":true,"lines":["x"]}', "ops[0].at: expected int, got bool"),
        ('{"op":"delete","from":1.0}', "ops[0].from: expected int, got float"),
        ('{"op":"delete","from":1e0}', "ops[0].from: expected int, got float"),
        ('{"op":"insert","at":null,"lines":["x"]}', "ops[0].at: expected int, got null"),
        ('{"op":"replace","from":1,"to":"2","lines":["x"]}', "ops[0].to: expected int | null"),
        ('{"op":"insert","at":1,"lines":null}', "ops[0].lines: expected array, got null"),
        ('{"op":"insert","at":1,"lines":"x"}', "ops[0].lines: expected array, got str"),
        ('{"op":"insert","at":1,"lines":{"0":"x"}}', "ops[0].lines: expected array, got object"),
        ('{"op":"insert","at":1,"lines":[1]}', "ops[0].lines[0]: expected str, got int"),
        ('{"op":"insert","at":1,"lines":[null]}', "ops[0].lines[0]: expected str, got null"),
        ('{"op":true,"at":1,"lines":["x"]}', "ops[0].op: expected str"),
    ]
    return [b(op, patch(one(op)), INVALID, said, OPS_RULE) for op, said in typed] + [
        b("ops a map", patch('{"op":"insert","at":1,"lines":["x"]}'), INVALID,
          "ops: expected array, got object", OPS_RULE),
        b("ops null", patch("null"), INVALID, "ops: expected array, got null", OPS_RULE),
        b("an op a list", patch('[["insert",1,["x"]]]'), INVALID,
          "ops[0]: expected object, got array", OPS_RULE),
        b("an op null", patch("[null]"), INVALID, "ops[0]: expected object, got null", OPS_RULE),
        b("meta a list", patch(meta="[1]"), INVALID,
          "meta: expected object, got array", "rule: meta is a JSON object"),
        b("meta null", patch(meta="null"), INVALID, "meta: expected object, got null"),
        b("meta not JSON", patch(meta="k=v"), INVALID,
          "meta: JSON is malformed", "rule: meta is a JSON object"),
    ] + [
        b(f"base {v}", patch(base=v), INVALID, f"base: '{v}' is not a revision", BASE_RULE)
        for v in ("true", "1.0", "null", "[0]")
    ]


def _b3() -> list[Bad]:
    b = _maker("B3")
    far = [
        b(f"insert at {n}", patch(one(f'{{"op":"insert","at":{n},"lines":["x"]}}')), BOUNDS,
          f"ops[0] (insert at {n}): at is {n}", LINE_RULE)
        for n in (-1, 0, 2**31, 2**53 + 1, 2**63, 2**64)
    ]
    n53, n64 = 2**53 + 1, 2**64
    return [
        *far,
        b("delete from 2^53+1", patch(one(f'{{"op":"delete","from":{n53}}}')), BOUNDS,
          f"ops[0] (delete {n53}..{n53}): from is {n53}", LINE_RULE),
        b("replace to 2^64", patch(one(f'{{"op":"replace","from":1,"to":{n64},"lines":[]}}')),
          BOUNDS, f"ops[0] (replace 1..{n64}): to is {n64}", LINE_RULE),
        b("to below from", patch(one('{"op":"delete","from":3,"to":2}')), BOUNDS,
          "ops[0] (delete 3..2): to is below from", "rule: from <= to"),
        # Past the end shows only at execute, against the base: revision 0, empty.
        b("insert past EOF", patch(one('{"op":"insert","at":2,"lines":["x"]}'), "b3/empty"),
          BOUNDS, "insert at 2: at 2 is past the end of the base (0 lines)",
          "rule: 1 <= at <= len+1 = 1"),
        b("delete past EOF", patch(one('{"op":"delete","from":1}'), "b3/empty"), BOUNDS,
          "delete 1..1: to 1 is past the end of the base (0 lines)",
          "rule: 1 <= from <= to <= len = 0"),
        b("overlapping ranges",
          patch('[{"op":"delete","from":1,"to":3},{"op":"replace","from":3,"lines":["y"]}]'),
          OVERLAP, "ops[0] (delete 1..3) and ops[1] (replace 3..3) overlap at line 3",
          "rule: no line is touched by two ops"),
        b("overlapping, listed unsorted",
          patch('[{"op":"replace","from":5,"lines":["y"]},{"op":"delete","from":2,"to":6}]'),
          OVERLAP, "ops[0] (replace 5..5) and ops[1] (delete 2..6) overlap at line 5",
          "rule: no line is touched by two ops"),
        b("two inserts at one place",
          patch('[{"op":"insert","at":2,"lines":["a"]},{"op":"insert","at":2,"lines":["b"]}]'),
          OVERLAP, "overlap at line 2", "rule: no two inserts at the same position"),
        b("insert inside a delete",
          patch('[{"op":"delete","from":1,"to":3},{"op":"insert","at":2,"lines":["b"]}]'),
          OVERLAP, "ops[0] (delete 1..3) and ops[1] (insert at 2) overlap at line 2"),
        # Independent ops listed unsorted are valid: one snapshot, applied from the top.
        b("five lines", patch('[{"op":"insert","at":1,"lines":["1","2","3","4","5"]}]', "b3/5"),
          COMMITTED, mix=False),
        b("unsorted independent ops", patch('[{"op":"insert","at":6,"lines":["z"]},'
          '{"op":"delete","from":1},{"op":"replace","from":3,"lines":["C"]}]', "b3/5", "1"),
          COMMITTED, mix=False),
    ]


def _b4() -> list[Bad]:
    b = _maker("B4")
    return [
        b(f"base {v!r}", patch(base=v), INVALID, f"base: {v!r} is not a revision", BASE_RULE)
        for v in ("-1", "1.5", "one", "+1", " 1", "01", "1e3", str(2**53), str(2**64), "-9" * 9)
    ] + [
        # Held for base_ahead_wait and a look for an earlier pending entry, then rejected.
        b("base in the future", patch(doc="b4/ahead", base="3"), RejectCode.BASE_AHEAD,
          "base: revision 3 does not exist, the head is 0", "rule: the base is at most the head",
          mix=False),
        b("unknown doc, base 0", patch(doc="b4/new"), COMMITTED, mix=False),
    ]


def _b5() -> list[Bad]:
    b = _maker("B5")
    big = msgspec.json.encode([{"op": "insert", "at": 1, "lines": ["a" * (2**20 + 1)]}])
    sixteen = msgspec.json.encode([{"op": "insert", "at": 1, "lines": ["b" * 65536] * 256}])
    tiny = ",".join(f'{{"op":"delete","from":{i}}}' for i in range(1, 100_001))
    return [
        b("a line of 1 MiB + 1", patch(big), TOO_LARGE,
          "ops[0] (insert at 1): lines[0] is 1048577 bytes", "rule: at most 65536 bytes per line",
          mix=False),
        b("16 MiB", patch(sixteen), TOO_LARGE,
          "entry: 16", "bytes; rule: at most 4194304 bytes per patch", mix=False),
        b("10^5 tiny ops", patch(f"[{tiny}]"), TOO_LARGE,
          "ops: 100000 ops", "rule: at most 10000 ops per patch", mix=False),
    ]


def _b6() -> list[Bad]:
    b = _maker("B6")
    diff = "--- a/d\n+++ b/d\n@@ -0,0 +1 @@\n+"
    utf8 = [
        ("doc", patch(doc=b"d\xff")), ("base", patch(base=b"\xff")), ("id", patch(id=b"\xc3")),
        ("author", patch(author=b"\xe2\x82")), ("diff", patch(None, diff=_bytes(diff) + b"\xff")),
    ]
    return [
        b(f"invalid UTF-8 in {name}", fields, INVALID,
          f"{name}: byte ", "is not valid UTF-8", "rule: fields are UTF-8 text")
        for name, fields in utf8
    ] + [
        b(f"{what} in a line", patch(b'[{"op":"insert","at":1,"lines":["%s"]}]' % text), INVALID,
          "ops: invalid UTF-8", OPS_RULE)
        for what, text in (("invalid UTF-8", b"\xff"), ("overlong UTF-8", b"\xc0\xaf"),
                           ("UTF-8 encoded surrogate", b"\xed\xa0\x80"))
    ] + [
        b("escaped lone high surrogate", patch(line("\\ud800x")), INVALID, "ops: ", OPS_RULE),
        b("escaped lone low surrogate", patch(line("\\udc00")), INVALID,
          "ops: ", "surrogate", OPS_RULE),
        b("escaped lone surrogate in meta", patch(meta='{"k":"\\udfff"}'), INVALID,
          "meta: ", "rule: meta is a JSON object"),
        b("NUL in a line", patch(line("a\\u0000b")), INVALID,
          "ops[0] (insert at 1): lines[0] contains NUL", TEXT_RULE),
        b("CR in a line", patch(line("a\\rb")), INVALID,
          "ops[0] (insert at 1): lines[0] contains CR", TEXT_RULE),
        b("LF in a line", patch(line("a\\nb")), INVALID,
          "ops[0] (insert at 1): lines[0] contains LF", TEXT_RULE),
        b("LF in a replace's second line",
          patch(one('{"op":"replace","from":1,"lines":["a","b\\nc"]}')), INVALID,
          "ops[0] (replace 1..1): lines[1] contains LF", TEXT_RULE),
        b("NUL in a diff line", patch(None, diff=diff + "a\x00\n"), INVALID,
          "diff line 4", "contains NUL", TEXT_RULE),
        b("NUL in doc", patch(doc="d\x00"), INVALID, "doc: control character", "rule: printable"),
        b("LF in id", patch(id="a\nb"), INVALID, "id: control character", "rule: printable"),
        b("BOM before the JSON", patch("\ufeff" + INSERT), INVALID,
          "ops: JSON is malformed", OPS_RULE),
        # U+FEFF inside a line is a character like any other: kept byte for byte.
        b("BOM in a line", patch(line("\ufeffx"), "b6/bom"), COMMITTED, mix=False),
    ]


def _b7() -> list[Bad]:
    b = _maker("B7")
    deep = 100_000
    noise = [random.Random(k).randbytes(16) for k in range(8)]
    packed = msgspec.msgpack.encode([{"op": "insert", "at": 1, "lines": ["x"]}])
    return [
        b("random bytes", patch(random.Random(7).randbytes(64)), INVALID, "ops: ", OPS_RULE),
        b("random bytes, every field", raw(*noise), INVALID, "doc: missing"),
        b("ops as msgpack", patch(packed), INVALID, "ops: JSON is malformed", OPS_RULE),
        b("msgpack 10^5 deep", patch(b"\x91" * deep), INVALID, "ops: JSON is malformed", OPS_RULE),
        b("[ 10^5 deep", patch("[" * deep), INVALID, "ops[0]: expected object, got array"),
        # The op's kind comes last: the decoder walks a value nested 10^5 deep to find it
        # and stops at Python's recursion limit (a RecursionError inside the worker).
        b("10^5 deep before the op's kind",
          patch('[{"x":' + "[" * deep + "]" * deep + ',"op":"insert","at":1,"lines":["x"]}]'),
          INVALID, "ops: JSON nested too deeply", OPS_RULE),
        b("meta 10^5 deep", patch(meta='{"k":' + "[" * deep), INVALID,
          "meta: JSON nested too deeply", "rule: meta is a JSON object"),
        b("a diff of noise", patch(None, diff="hello\x7f"), INVALID,
          "diff line 1:", "is not a diff header", "rule: one unified diff"),
    ]


def _b8() -> list[Bad]:
    b = _maker("B8")
    twice = "rule: each field once"
    return [
        # The server keeps every pair of an XADD, repeated names included: which value a
        # reader sees is up to its client library, so such an entry has no one meaning.
        b("doc twice", raw("doc", "b8/a", "base", "0", "ops", INSERT, "doc", "b8/b"), INVALID,
          "doc: given twice", twice, mix=False),
        b("base twice", raw("doc", "b8/c", "base", "0", "ops", INSERT, "base", "1"), INVALID,
          "base: given twice", twice, mix=False),
        b("ops twice", raw("doc", "b8/c", "base", "0", "ops", INSERT, "ops", line("y")),
          INVALID, "ops: given twice", twice, mix=False),
        # An unknown field is ignored (B1), repeated or not, whatever its bytes.
        b("unknown field twice", raw("doc", "b8/n", "base", "0", "ops", INSERT,
          "note", "a", "note", "b"), COMMITTED, mix=False),
        b("binary unknown fields", (*patch(doc="b8/x"), (b"\xff\xfe", b"\x00"),
          (b"trace", b"\x80" * 300)), COMMITTED, mix=False),
        b("DOC in capitals", raw("DOC", "d", "base", "0", "ops", INSERT), INVALID, "doc: missing"),
        b("a space after doc", raw("doc ", "d", "base", "0", "ops", INSERT), INVALID,
          "doc: missing"),
    ]


def _b9() -> list[Bad]:
    b = _maker("B9")
    reuse = ("id: 'b9-key' was first used by entry", "rule: one id names one payload")
    return [
        b("first use", patch(doc="b9/d", id="b9-key"), COMMITTED),
        b("other ops", patch(line("y"), "b9/d", id="b9-key"), ID_REUSE, *reuse),
        b("other doc", patch(doc="b9/other", id="b9-key"), ID_REUSE, *reuse),
        b("other base", patch(doc="b9/d", base="1", id="b9-key"), ID_REUSE, *reuse),
        b("other author", patch(doc="b9/d", id="b9-key", author="eve"), ID_REUSE, *reuse),
        # meta is not part of the payload (codec.payload_digest): a retry may change it.
        b("same payload, other meta", patch(doc="b9/d", id="b9-key", meta="{}"), DUPLICATE),
        b("same payload", patch(doc="b9/d", id="b9-key"), DUPLICATE),
    ]


def _b10() -> list[Bad]:
    b = _maker("B10")
    race = "b10/race"
    return [
        b("three lines", patch('[{"op":"insert","at":1,"lines":["l1","l2","l3"]}]', race),
          COMMITTED),
        b("delete 2..3", patch(one('{"op":"delete","from":2,"to":3}'), race, "1"), COMMITTED),
        # Each is valid at normalize; the revision before it moved the end of the document.
        b("replace a deleted line", patch(one('{"op":"replace","from":3,"lines":["n"]}'), race,
          "1"), CONFLICT,
          "replace 3..3: line 3 of the base was changed by revision 2 (delete 2..3)",
          "rule: a rebased replace or delete conflicts"),
        b("delete past the new end", patch(one('{"op":"delete","from":2}'), race, "2"), BOUNDS,
          "delete 2..2: to 2 is past the end of the base (1 lines)",
          "rule: 1 <= from <= to <= len = 1"),
        b("insert past the old end", patch(one('{"op":"insert","at":5,"lines":["t"]}'), race,
          "1"), BOUNDS, "insert at 5: at 5 is past the end of the base"),
    ]
# fmt: on


@functools.cache
def catalogue() -> tuple[Bad, ...]:
    """Every entry of B1 to B10, in submission order within each scenario; B9's and
    B10's depend on the entries before them, so none is drawn into B11's mix."""
    tables = (_b1, _b2, _b3, _b4, _b5, _b6, _b7, _b8)
    ordered = [dataclasses.replace(b, mix=False) for b in _b9() + _b10()]
    return tuple([b for table in tables for b in table()] + ordered)


EXPECTED_DOCS: dict[str, tuple[int, list[str]]] = {
    "b1/unknown": (1, ["x"]),
    "b3/empty": (0, []),
    "b3/5": (2, ["2", "C", "4", "5", "z"]),
    "b4/ahead": (0, []),
    "b4/new": (1, ["x"]),
    "b6/bom": (1, ["\ufeffx"]),
    "b8/a": (0, []),
    "b8/b": (0, []),
    "b8/c": (0, []),
    "b8/n": (1, ["x"]),
    "b8/x": (1, ["x"]),
    "b9/d": (1, ["x"]),
    "b9/other": (0, []),
    "b10/race": (2, ["l1"]),
}
"""Each document the catalogue names: its head revision and content once every entry is
decided (a rejection writes nothing, and no rejected op is applied in part)."""
SCENARIOS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9", "B10", "B12")


async def xadd(redis: Redis, settings: Settings, fields: Pairs) -> str:
    """XADD ``fields`` as they are, repeated names included; the entry id."""
    flat = [part for pair in fields for part in pair]
    # A raw command: redis-py's xadd takes a mapping, which cannot repeat a name.
    command = redis.execute_command("XADD", settings.keys.patches, "*", *flat)  # type: ignore[no-untyped-call]
    entry: Any = await command
    return str(entry.decode())


async def run_scenario(redis: Redis, settings: Settings, scripts: Scripts, scenario: str) -> Row:
    """Submit ``scenario``'s entries and then a good patch, drain both stages, and check
    every entry's one outcome, the acknowledgements, the dead letters and the documents."""
    if scenario == "B12":
        return await nil_bodies(redis, settings, scripts)
    row = Row(scenario)
    entries = [b for b in catalogue() if b.scenario == scenario]
    after = Bad(scenario, "a good patch after", patch(doc=f"{scenario}/after"), COMMITTED)
    sent: list[tuple[Bad, str]] = []
    if scenario == "B5":  # groups, scripts and connections exist before the baseline
        warm = Bad(scenario, "a good patch before", patch(doc="b5/before"), COMMITTED)
        sent.append((warm, await xadd(redis, settings, warm.fields)))
        await drain(redis, settings, scripts, timeout=60)
        before = await used_memory(redis)
    sent += [(b, await xadd(redis, settings, b.fields)) for b in [*entries, after]]
    started = time.monotonic()
    try:
        await drain(redis, settings, scripts, timeout=60)
    except TimeoutError:
        row.check(False, "the stages did not drain within 60 s")
        return row
    row.figures["drain_s"] = round(time.monotonic() - started, 2)
    await check_outcomes(redis, settings, row, sent)
    await check_quiet(redis, settings, row)
    docs = {d.decode("utf-8", "replace") for b in entries for n, d in b.fields if n == b"doc"}
    await check_documents(redis, settings, row, sorted(docs))
    if scenario == "B5":
        big = [src for b, src in sent if b in entries]
        await memory_after_trim(redis, settings, row, before, big)
    return row


async def check_outcomes(
    redis: Redis, settings: Settings, row: Row, sent: Sequence[tuple[Bad, str]]
) -> None:
    """Each entry has exactly one outcome, the expected one, and its own outcome key
    (what its submitter waits on) says the same; no outcome names another entry."""
    found: dict[str, list[Outcome]] = {}
    for o in await outcomes(redis, settings):
        found.setdefault(o.src, []).append(o)
    tally: Counter[str] = Counter()
    for bad, src in sent:
        what = f"{bad.scenario} {bad.name!r} ({src})"
        got = found.get(src, [])
        if len(got) != 1:
            row.check(False, f"{what}: {len(got)} outcomes, expected exactly one")
            continue
        o = got[0]
        tally[f"rejected_{o.code.value}" if o.code else o.status.value] += 1
        code = bad.want if isinstance(bad.want, RejectCode) else None
        status = OutcomeStatus.REJECTED if code else bad.want
        row.check(
            (o.status, o.code) == (status, code),
            f"{what}: {o.status.value}/{o.code and o.code.value} ({o.message!r}), "
            f"expected {status.value}/{code and code.value}",
        )
        row.check(o.code is None or o.entry is not None, f"{what}: no copy of the entry")
        lacking = [s for s in bad.says if s not in (o.message or "")]
        row.check(not lacking, f"{what}: message {o.message!r} lacks {lacking}")
        told: Any = await redis.lindex(settings.keys.entry_outcome(src), 0)
        mine = None if told is None else msgspec.json.decode(told, type=IdRecord)
        row.check(
            mine is not None and (mine.status, mine.code) == (o.status, o.code),
            f"{what}: its outcome key says {mine and (mine.status, mine.code)}",
        )
    srcs = {src for _, src in sent}
    stray = sorted(src for src in found if src not in srcs)
    row.check(not stray, f"outcomes of entries never submitted: {stray}")
    row.figures.update(sorted(tally.items()))
    row.figures["entries"] = len(sent)


async def check_quiet(redis: Redis, settings: Settings, row: Row) -> None:
    """Nothing pending in either group, nothing dead-lettered."""
    keys = settings.keys
    left = 0
    for stream, group in ((keys.patches, NORMALIZE), (keys.normalized, EXECUTE)):
        if await redis.exists(stream):
            left += int((await redis.xpending(stream, group))["pending"])
    dead = int(await redis.xlen(keys.dead))
    row.figures.update(pending_left=left, dead_letters=dead)
    row.check(left == 0, f"{left} entries still pending")
    row.check(dead == 0, f"{dead} dead letters (bad input is rejected, not dead-lettered)")


async def check_documents(redis: Redis, settings: Settings, row: Row, docs: list[str]) -> None:
    """The documents hold exactly what the committed patches made (head, revision index
    and hash agree), and the revision log verifies."""
    for doc in sorted(set(docs) & set(EXPECTED_DOCS)):
        rev, lines = EXPECTED_DOCS[doc]
        got = await read_document(redis, settings.keys, doc)
        head = await read_head(redis, settings.keys, doc)
        index = int(await redis.llen(settings.keys.index(doc)))
        row.check(
            got == (rev, lines) and index == rev and head.hash == content_hash(lines),
            f"{doc}: revision {got[0]} {got[1]!r}, index {index}, expected {rev} {lines!r}",
        )
    report = await verify(redis, settings.keys)
    row.check(report.ok, f"the revision log does not verify: {report.differences}")


async def used_memory(redis: Redis) -> int:
    """The server's ``used_memory`` in bytes."""
    info: Any = await redis.info("memory")
    return int(info["used_memory"])


async def memory_after_trim(
    redis: Redis, settings: Settings, row: Row, before: int, srcs: list[str]
) -> None:
    """Server memory once the huge entries are decided and trimmed from the ingress
    stream (what every group acknowledged, past a retention of 0) stays within
    ``MEMORY_BOUND`` of ``before``."""
    row.figures["mem_delta_handled_kib"] = (await used_memory(redis) - before) // 1024
    await trim_acknowledged(redis, settings.keys.patches, older_than=0.0)
    kept = [s for s in srcs if await redis.xrange(settings.keys.patches, s, s)]
    row.check(not kept, f"acknowledged entries not trimmed: {kept}")
    delta = await used_memory(redis) - before
    deadline = time.monotonic() + 5.0  # client buffers shrink in the server's cron
    while delta > MEMORY_BOUND and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        delta = min(delta, await used_memory(redis) - before)
    row.figures.update(mem_delta_trimmed_kib=delta // 1024, mem_bound_kib=MEMORY_BOUND // 1024)
    row.check(delta <= MEMORY_BOUND, f"{delta} bytes left after trimming, over {MEMORY_BOUND}")


LOST_BY_TRIM = "pending entries lost by trim"
"""The runner's log event for pending entries whose body is gone (``Runner._bodies``)."""


async def drain_logged(
    redis: Redis, settings: Settings, scripts: Scripts, timeout: float = 60.0
) -> list[MutableMapping[str, Any]]:
    """``drain``, returning what the workers logged (every level, whatever logging
    configuration an earlier test left cached)."""
    capture = structlog.testing.LogCapture()
    for normalize, execute in ((1, 0), (0, 1)):
        workers = runners(redis, settings, scripts, normalize=normalize, execute=execute)
        for w in workers:
            w.log = structlog.wrap_logger(None, processors=[capture]).bind(consumer=w.consumer)
        await asyncio.wait_for(asyncio.gather(*(w.run() for w in workers)), timeout)
    return capture.entries


async def nil_bodies(redis: Redis, settings: Settings, scripts: Scripts) -> Row:
    """B12: entries pending in a group whose bodies are gone. One of normalize's own
    (``n0``, the in-process worker's name) removed by XDEL, one of a normalize worker
    that died holding it (no lease: it is claimed), and one of execute's (``e0``) trimmed
    from the normalized stream. Each must be logged as lost by trim and acknowledged,
    with no dead letter and no outcome blaming the submitted fields, and a good patch
    after them must commit."""
    row = Row("B12")
    keys = settings.keys
    fwd = await xadd(redis, settings, patch(doc="b12/execute"))
    await drain(redis, settings, scripts, execute=0, timeout=60)
    await redis.xgroup_create(keys.normalized, EXECUTE, id="0")
    got: Any = await redis.xreadgroup(EXECUTE, "e0", {keys.normalized: ">"}, count=1)
    normalized = got[0][1][0][0].decode()
    own = await xadd(redis, settings, patch(doc="b12/own"))
    ghost = await xadd(redis, settings, patch(doc="b12/ghost"))
    await redis.xreadgroup(NORMALIZE, "n0", {keys.patches: ">"}, count=1)
    await redis.xreadgroup(NORMALIZE, "b12-dead", {keys.patches: ">"}, count=1)
    await redis.xdel(keys.patches, own)
    await redis.xtrim(keys.patches, maxlen=0)  # the dead worker's, and the acknowledged
    await redis.xtrim(keys.normalized, maxlen=0)
    after = await xadd(redis, settings, patch(doc="b12/after"))
    try:
        logs = await drain_logged(redis, settings, scripts)
    except TimeoutError:
        row.check(False, "the stages did not drain within 60 s")
        return row
    logged = {e for line in logs if line.get("event") == LOST_BY_TRIM for e in line["entries"]}
    lost = {
        own: "normalize's own (XDEL)",
        ghost: "a dead normalize worker's (XTRIM)",
        normalized: "execute's own (XTRIM of the normalized stream)",
    }
    for entry, whose in lost.items():
        row.check(entry in logged, f"{whose} pending entry {entry} was not logged as lost by trim")
    told = await outcomes(redis, settings)
    mine = {own: "own", ghost: "ghost", fwd: "forwarded"}
    misreported = [o for o in told if o.src in mine and "trim" not in (o.message or "")]
    for o in misreported:
        row.check(
            False,
            f"lost entry {o.src} ({mine[o.src]}) told {o.status.value}/"
            f"{o.code and o.code.value}: {o.message!r}",
        )
    stray = [o for o in told if o.src not in {*mine, after}]
    for o in stray:
        row.check(
            False, f"an outcome for no submitted entry: id {o.id!r} src {o.src!r}: {o.message!r}"
        )
    final = [o for o in told if o.src == after]
    row.check(
        [o.status for o in final] == [OutcomeStatus.COMMITTED],
        f"the good patch after them: {[o.status.value for o in final]}",
    )
    await check_quiet(redis, settings, row)
    row.figures.update(
        lost_by_trim=len(lost),
        logged=len(logged & set(lost)),
        misreported=len(misreported),
        unexpected=len(stray),
    )
    return row


WORKERS = ((NORMALIZE, "n1"), (EXECUTE, "e1"))


async def start_worker(settings: Settings, stage: str, name: str, folder: Path) -> Any:
    """``patchlog worker <stage> --name <name>`` as a process with ``settings``, its log in
    ``folder/<name>.log`` (warnings and errors only)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PATCHLOG_")}
    env.update(settings_env(settings), PATCHLOG_LOG_LEVEL="warning")
    argv = [sys.executable, "-m", "patchlog", "worker", stage, "--name", name]
    with (folder / f"{name}.log").open("wb") as log:
        return await asyncio.create_subprocess_exec(*argv, env=env, stdout=log, stderr=log)


def cpu_s(pid: int) -> float:
    """CPU seconds (user and system) a live process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def group_state(redis: Redis, stream: str, group: str) -> tuple[int, int, int]:
    """(entries acknowledged, lag, pending) of ``group``; lag counts what it has not read."""
    for g in await redis.xinfo_groups(stream):
        if g["name"].decode() == group:
            pending = int(g["pending"])
            lag = g["lag"]
            return int(g["entries-read"] or 0) - pending, -1 if lag is None else int(lag), pending
    return 0, -1, 0


def peak_rss_mib(pid: int) -> float:
    """The peak resident set size of a live process (``VmHWM``), in MiB."""
    for text in Path(f"/proc/{pid}/status").read_text().splitlines():
        if text.startswith("VmHWM:"):
            return round(int(text.split()[1]) / 1024, 1)
    return 0.0


async def load_phase(
    redis: Redis,
    settings: Settings,
    seconds: float,
    garbage: float,
    seed: int,
    sent: list[tuple[str, Bad | None]],
) -> float:
    """Keep normalize's backlog above four batches for ``seconds``, a share ``garbage`` of
    the entries drawn from the catalogue's mix, the rest good patches each to a new
    document; append (entry id, its catalogue entry or ``None``) to ``sent``. Returns
    normalize's throughput over the phase, entries acknowledged per second."""
    rng = random.Random(seed)
    pool = [b for b in catalogue() if b.mix]
    stream, low, chunk = settings.keys.patches, 4 * settings.batch, 2 * settings.batch
    first, _, _ = await group_state(redis, stream, NORMALIZE)
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        _, lag, _ = await group_state(redis, stream, NORMALIZE)
        if 0 <= lag >= low:
            await asyncio.sleep(0.005)
            continue
        picks = [rng.choice(pool) if rng.random() < garbage else None for _ in range(chunk)]
        async with redis.pipeline(transaction=False) as pipe:
            for n, bad in enumerate(picks):
                fields = bad.fields if bad else patch(doc=f"mix/{seed}-{len(sent) + n}")
                pipe.xadd(stream, dict(fields))  # the mix repeats no name
            ids = await pipe.execute()
        sent += [(i.decode(), bad) for i, bad in zip(ids, picks, strict=True)]
    last, _, _ = await group_state(redis, stream, NORMALIZE)
    return (last - first) / (time.monotonic() - started)


async def settled(
    redis: Redis, settings: Settings, timeout: float, *, groups: Sequence[tuple[str, str]]
) -> bool:
    """Wait (at most ``timeout`` s) until ``groups`` read and acknowledged everything."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = [await group_state(redis, s, g) for s, g in groups]
        if all(lag == 0 and pending == 0 for _, lag, pending in states):
            return True
        await asyncio.sleep(0.05)
    return False


async def all_outcomes(redis: Redis, settings: Settings) -> dict[str, list[Outcome]]:
    """Every outcome by ingress entry, read in pages."""
    found: dict[str, list[Outcome]] = {}
    start = "-"
    while True:
        page: Any = await redis.xrange(settings.keys.outcomes, start, "+", count=5000)
        for _, fields in page:
            o = decode_event(Outcome, fields)
            found.setdefault(o.src, []).append(o)
        if len(page) < 5000:
            return found
        start = "(" + page[-1][0].decode()


async def garbage_mix(settings: Settings, seconds: float, folder: Path) -> Row:
    """B11: stage processes under full load, half of it with clean patches, half with
    50% garbage from the catalogue: normalize's throughput in each, the rejections by
    code, each stage's peak RSS, and crashes. Every entry gets exactly one outcome (good
    patches committed, garbage rejected with its code), nothing stays pending, nothing
    is dead-lettered, and both processes are still running at the end."""
    row = Row("B11")
    assert settings.redis_url is not None
    redis = connect(settings, settings.redis_url, name="patchlog-badinput", block_ms=2000)
    keys = settings.keys
    procs = [await start_worker(settings, stage, name, folder) for stage, name in WORKERS]
    try:
        deadline = time.monotonic() + 30
        for stage, name in WORKERS:  # started: group created and lease held
            while not await redis.exists(keys.lease(stage, name)):
                if time.monotonic() > deadline:
                    row.check(False, f"worker {name} did not take its lease within 30 s")
                    return row
                await asyncio.sleep(0.05)
        clean: list[tuple[str, Bad | None]] = []
        dirty: list[tuple[str, Bad | None]] = []
        rate_clean = await load_phase(redis, settings, seconds / 2, 0.0, 1, clean)
        await settled(redis, settings, 30, groups=[(keys.patches, NORMALIZE)])
        rate_dirty = await load_phase(redis, settings, seconds / 2, 0.5, 2, dirty)
        started = time.monotonic()
        done = await settled(
            redis, settings, 60, groups=[(keys.patches, NORMALIZE), (keys.normalized, EXECUTE)]
        )
        row.check(done, "the stages did not catch up within 60 s of the load's end")
        row.figures.update(
            normalize_per_s_clean=round(rate_clean),
            normalize_per_s_garbage=round(rate_dirty),
            tail_s=round(time.monotonic() - started, 2),
        )
        crashes = sum(p.returncode is not None for p in procs)
        for (stage, _), proc in zip(WORKERS, procs, strict=True):
            if proc.returncode is None:
                row.figures[f"peak_rss_{stage}_mib"] = peak_rss_mib(proc.pid)
                row.figures[f"cpu_{stage}_s"] = round(cpu_s(proc.pid), 2)
        row.figures["crashes"] = crashes
        row.check(crashes == 0, f"{crashes} stage processes exited under the load")
        mix_outcomes(row, await all_outcomes(redis, settings), clean + dirty, len(clean))
        await check_quiet(redis, settings, row)
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.terminate()
        for proc in procs:
            try:
                await asyncio.wait_for(proc.wait(), settings.shutdown_grace + 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        await redis.aclose()
    failed = sum((folder / f"{n}.log").read_text().count("worker step failed") for _, n in WORKERS)
    row.figures["step_failures"] = failed
    row.check(failed == 0, f"{failed} worker steps failed (see {folder})")
    return row


def mix_outcomes(
    row: Row, found: dict[str, list[Outcome]], sent: list[tuple[str, Bad | None]], clean: int
) -> None:
    """Check B11's outcomes: one per entry, good committed, garbage rejected by its code."""
    codes: Counter[str] = Counter()
    wrong: list[str] = []
    for src, bad in sent:
        got = found.get(src, [])
        o = got[0] if len(got) == 1 else None
        if bad is None:
            ok = o is not None and o.status is OutcomeStatus.COMMITTED
        else:
            ok = o is not None and o.code is bad.want
            codes[o.code.value if o is not None and o.code else "none"] += 1
        if not ok:
            wrong.append(
                f"{src} ({bad.name if bad else 'good'}): "
                f"{[(x.status.value, x.code and x.code.value) for x in got]}"
            )
    good = sum(1 for _, bad in sent if bad is None)
    size = sum(len(k) + len(v) for _, bad in sent if bad for k, v in bad.fields)
    row.figures.update(entries=len(sent), clean_entries=clean, good=good)
    row.figures.update(garbage=len(sent) - good, garbage_mib=round(size / 2**20, 1))
    row.figures["wrong"] = len(wrong)
    row.figures.update({f"rejected_{c}": n for c, n in sorted(codes.items())})
    row.check(good > 0 and good < len(sent), "the load sent no good patch or no garbage")
    row.check(not wrong, f"{len(wrong)} entries without their one right outcome: {wrong[:5]}")
    stray = len(set(found) - {src for src, _ in sent})
    row.check(stray == 0, f"{stray} outcomes of entries never submitted")
