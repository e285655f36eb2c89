"""D1 of FAULT-PLAN.md: the pipeline's commits against a reference apply written here.

The reference works on the wire JSON ops with plain list slicing (DESIGN "The patch
model"), shares no code with ``projections``, and predicts each patch's outcome:
``committed`` with the exact new content, ``noop``, or ``rejected`` with the codes of the
rules it breaks. ``plan`` draws chains of patches on many documents, each based on the
head the previous one leaves; ``run`` submits them all, drains the real pipeline once
and compares every outcome, revision, head and the log's rebuild with the prediction.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import json
import random
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import msgspec
from redis.asyncio import Redis

from patchlog.projections.load import read_document
from patchlog.projections.rebuild import fold_log
from patchlog.streams.codec import decode_event
from patchlog.streams.keys import EXECUTE, NORMALIZE, Keys
from patchlog.streams.limits import Limits
from patchlog.streams.schema import Outcome
from patchlog.streams.scripts import Scripts
from patchlog.streams.settings import Settings
from tests.faults.row import Row
from tests.integration.helpers import drain

__all__ = [
    "EDGE_LIMITS",
    "MUST_BE_ZERO",
    "Planned",
    "WireOp",
    "chain",
    "entry_fields",
    "entry_size",
    "exact_line",
    "measure",
    "plan",
    "plan_document",
    "predict",
    "reference_apply",
    "reference_bytes",
    "reference_codes",
    "run",
]

MUST_BE_ZERO = (
    "mismatches",
    "script_errors",
    "dead_letters",
    "missing_outcomes",
    "extra_outcomes",
    "pending",
)
"""The figures of a run that are violations unless 0."""

WireOp = dict[str, Any]
"""One op as its JSON object on the wire."""

EDGE_LIMITS = Limits(max_ops=8, max_line_bytes=32, max_patch_bytes=2048, max_doc_lines=64)
"""Limits small enough that random patches reach and cross every one of them often."""

ODD = (
    # Line breaks to str.splitlines but not to patchlog, which splits on LF alone.
    *("\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e"),
    *("\t", " ", "\u00a0", "\ufeff", "\u200b", "\u0301", "\x7f", "\x1b"),
    *("é", "ß", "漢", "🙂", "𝄞", "\U0010ffff", "\ue000", "\ufffd"),
    *('"', "\\", "/", "%", "a", "b", "{", "]"),
)
"""Characters of the drawn lines: multibyte, beyond the BMP, and escapes of JSON and Lua."""


def _span(op: WireOp) -> tuple[int, int]:
    """First and last line a range op names (``to`` defaults to ``from``)."""
    first: int = op["from"]
    last: int = op.get("to", first)
    return first, last


def reference_apply(lines: Sequence[str], ops: Sequence[WireOp]) -> list[str]:
    """``lines`` after valid ``ops``, each applied by list slicing from the highest line
    down; at one line a range goes before an insert, whose lines then come first."""

    def position(op: WireOp) -> tuple[int, int]:
        return (op["at"], 0) if op["op"] == "insert" else (op["from"], 1)

    out = list(lines)
    for op in sorted(ops, key=position, reverse=True):
        if op["op"] == "insert":
            out[op["at"] - 1 : op["at"] - 1] = op["lines"]
        else:
            first, last = _span(op)
            out[first - 1 : last] = op.get("lines", [])
    return out


def reference_bytes(lines: Sequence[str]) -> bytes:
    """A document's bytes: each line, UTF-8, then one LF."""
    return b"".join(line.encode("utf-8") + b"\n" for line in lines)


def _overlap(ops: Sequence[WireOp]) -> bool:
    """Whether two ops are not independent (DESIGN invariant 5): two inserts at one
    position, two ranges sharing a line, or an insert strictly inside a range."""
    ats = [op["at"] for op in ops if op["op"] == "insert"]
    if len(set(ats)) < len(ats):
        return True
    ranges = sorted(_span(op) for op in ops if op["op"] != "insert")
    reach: int | None = None  # the furthest line a range so far reaches
    for first, last in ranges:
        if reach is not None and first <= reach:
            return True
        reach = last if reach is None else max(reach, last)
    # The ranges are disjoint: only the last one starting before an insert can hold it.
    firsts = [first for first, _ in ranges]
    for at in ats:
        k = bisect.bisect_left(firsts, at) - 1
        if k >= 0 and at <= ranges[k][1]:
            return True
    return False


def reference_codes(
    length: int, ops: Sequence[WireOp], limits: Limits, size: int
) -> frozenset[str]:
    """The rejection codes of every rule ``ops`` break against a ``length``-line base,
    for an entry of ``size`` bytes; empty if the patch is to be applied."""
    codes: set[str] = set()
    if size > limits.max_patch_bytes or len(ops) > limits.max_ops:
        codes.add("too_large")
    for op in ops:
        lines = op.get("lines", [])
        if op["op"] == "insert":
            if not lines:
                codes.add("invalid")
            if not 1 <= op["at"] <= length + 1:
                codes.add("bounds")
        elif not 1 <= _span(op)[0] <= _span(op)[1] <= length:
            codes.add("bounds")
        if any(len(line.encode("utf-8")) > limits.max_line_bytes for line in lines):
            codes.add("too_large")
    if _overlap(ops):
        codes.add("overlap")
    if not codes and len(reference_apply(["?"] * length, ops)) > limits.max_doc_lines:
        codes.add("too_large")
    return frozenset(codes)


@dataclasses.dataclass(frozen=True)
class Planned:
    """One patch to submit and the outcome the reference predicts for it."""

    doc: str
    fields: dict[str, str]
    """The ingress entry, as sent."""
    ops: list[WireOp]
    status: str
    """``committed``, ``noop`` or ``rejected``."""
    codes: frozenset[str]
    """A rejection's possible codes: those of every rule the patch breaks."""
    rev: int
    """The revision a commit makes; else the head it leaves."""
    before: tuple[str, ...]
    after: tuple[str, ...]


def entry_size(fields: dict[str, str]) -> int:
    """Bytes of an entry's names and values, as the patch size limit counts them."""
    return sum(len(k.encode("utf-8")) + len(v.encode("utf-8")) for k, v in fields.items())


def _line(rng: random.Random, cap: int) -> str:
    if rng.random() < 0.15:
        return ""
    text = "".join(rng.choice(ODD) for _ in range(rng.randint(1, 6)))
    if rng.random() < 0.15:
        text += " " * rng.randint(1, 2)
    while len(text.encode("utf-8")) > cap:
        text = text[:-1]
    return text


def exact_line(rng: random.Random, size: int, chars: Sequence[str] = ODD) -> str:
    """A line of exactly ``size`` UTF-8 bytes: a random run of ``chars`` repeated,
    padded with spaces."""
    chunk = "".join(rng.choice(chars) for _ in range(rng.randint(1, 4)))
    text = chunk * (size // len(chunk.encode("utf-8")))
    return text + " " * (size - len(text.encode("utf-8")))


def _lines(rng: random.Random, low: int, high: int, cap: int) -> list[str]:
    return [_line(rng, cap) for _ in range(rng.randint(low, high))]


def _ops(rng: random.Random, content: Sequence[str], limits: Limits) -> list[WireOp]:
    """Pairwise independent ops within bounds, from the top down, listed in random order."""
    n, cap = len(content), limits.max_line_bytes
    ops: list[WireOp] = []
    pos, last_insert = 1, 0
    for _ in range(rng.randint(1, min(limits.max_ops, 8))):
        if pos > n + 1:
            break
        start = rng.randint(pos, min(n + 1, pos + 4))
        kind = rng.choice(("insert", "replace", "delete"))
        if kind == "insert" or start == n + 1:
            if start != last_insert:
                ops.append({"op": "insert", "at": start, "lines": _lines(rng, 1, 3, cap)})
                last_insert = pos = start
            continue
        end = rng.randint(start, min(n, start + 3))
        op: WireOp = {"op": kind, "from": start}
        if end != start or rng.random() < 0.5:
            op["to"] = end
        if kind == "replace":
            # Some replaces rewrite what is there: a noop, or dropped from the revision.
            same = rng.random() < 0.2
            op["lines"] = list(content[start - 1 : end]) if same else _lines(rng, 0, 4, cap)
        ops.append(op)
        pos = end + 1
    rng.shuffle(ops)
    return ops


def _break_or_reach(rng: random.Random, ops: list[WireOp], n: int, limits: Limits) -> None:
    """Break one rule in ``ops``, or take them to a limit, in place."""
    room, cap = limits.max_doc_lines - n, limits.max_line_bytes
    carrying = [op for op in ops if op.get("lines")]
    wide = [op for op in ops if op["op"] != "insert" and _span(op)[1] > _span(op)[0]]
    match rng.randrange(11):
        case 0:  # past the end
            ops.append({"op": "insert", "at": n + 2, "lines": ["past"]})
        case 1:
            ops.append({"op": "delete", "from": max(1, n), "to": n + 1})
        case 2:  # below the first line
            ops.append(
                rng.choice([{"op": "delete", "from": 0}, {"op": "insert", "at": 0, "lines": ["x"]}])
            )
        case 3:  # to below from
            ops.append({"op": "replace", "from": min(n, 2) + 1, "to": min(n, 2), "lines": []})
        case 4:  # the same op twice
            ops.append(dict(rng.choice(ops)))
        case 5 if wide:  # an insert strictly inside a range
            ops.append({"op": "insert", "at": rng.choice(wide)["from"] + 1, "lines": ["in"]})
        case 6:  # a line one byte too long
            ops.append({"op": "insert", "at": n + 1, "lines": [exact_line(rng, cap + 1)]})
        case 7:  # an insert without lines
            ops.append({"op": "insert", "at": rng.randint(1, n + 1), "lines": []})
        case 8:  # one op too many
            ops.extend({"op": "delete", "from": k + 1} for k in range(limits.max_ops))
        case 9 if 0 <= room < 200:  # the document filled up to its limit, or one past it
            ops[:] = [{"op": "insert", "at": n + 1, "lines": ["+"] * (room + rng.randint(0, 1))}]
        case _ if carrying:  # a line of exactly the limit
            lines = rng.choice(carrying)["lines"]
            lines[rng.randrange(len(lines))] = exact_line(rng, cap)
        case _:
            ops.append({"op": "insert", "at": n + 1, "lines": [exact_line(rng, cap)]})


def entry_fields(
    doc: str, n: int, head: int, ops: Sequence[WireOp], escaped: bool
) -> dict[str, str]:
    """The ingress entry of a document's ``n``-th patch, on base ``head``; its ops as
    compact JSON, with everything beyond ASCII escaped or not."""
    text = json.dumps(ops, ensure_ascii=escaped, separators=(",", ":"))
    return {"doc": doc, "base": str(head), "id": f"{doc}/{n}", "ops": text}


def predict(
    doc: str,
    n: int,
    rev: int,
    content: tuple[str, ...],
    ops: list[WireOp],
    limits: Limits,
    escaped: bool = False,
) -> Planned:
    """The document's ``n``-th patch, based on its head ``rev`` holding ``content``, with
    the reference's outcome."""
    fields = entry_fields(doc, n, rev, ops, escaped)
    codes = reference_codes(len(content), ops, limits, entry_size(fields))
    after = content if codes else tuple(reference_apply(content, ops))
    status = "rejected" if codes else "noop" if after == content else "committed"
    return Planned(doc, fields, ops, status, codes, rev + (status == "committed"), content, after)


def chain(doc: str, patches: Sequence[list[WireOp]], limits: Limits) -> list[Planned]:
    """Given patches on a new document, each based on the head the previous ones leave."""
    out: list[Planned] = []
    for n, ops in enumerate(patches):
        rev, content = (out[-1].rev, out[-1].after) if out else (0, ())
        out.append(predict(doc, n, rev, content, ops, limits))
    return out


def plan_document(
    rng: random.Random,
    doc: str,
    initial: Sequence[str],
    patches: int,
    limits: Limits,
    bad: float = 0.0,
) -> list[Planned]:
    """A chain of patches on a new document: ``initial`` as one insert (if any lines),
    then ``patches`` random ones, each based on the head the previous ones leave. With
    probability ``bad`` a patch breaks a rule or is taken to a limit."""
    out: list[Planned] = []
    for n in range(patches + 1):
        rev, content = (out[-1].rev, out[-1].after) if out else (0, ())
        if n == 0:
            if not initial:
                continue
            ops: list[WireOp] = [{"op": "insert", "at": 1, "lines": list(initial)}]
        else:
            ops = _ops(rng, content, limits)
            if rng.random() < bad:
                _break_or_reach(rng, ops, len(content), limits)
        out.append(predict(doc, n, rev, content, ops, limits, rng.random() < 0.5))
    return out


def plan(
    rng: random.Random,
    tag: str,
    documents: int,
    patches: int,
    limits: Limits,
    bad: float = 0.0,
) -> list[list[Planned]]:
    """Chains on ``documents`` new documents named after ``tag``, with random initial
    content and ``patches`` patches each."""
    return [
        plan_document(
            rng,
            f"{tag}-{d}",
            _lines(rng, 0, min(30, limits.max_doc_lines), limits.max_line_bytes),
            patches,
            limits,
            bad,
        )
        for d in range(documents)
    ]


def _sha(lines: Sequence[str]) -> str:
    return hashlib.sha256(reference_bytes(lines)).hexdigest()


def _interleaved(chains: list[list[Planned]]) -> list[Planned]:
    """Every chain's first patch, then every second one, and so on."""
    longest = max(map(len, chains), default=0)
    return [chain[n] for n in range(longest) for chain in chains if n < len(chain)]


async def _submit(
    redis: Redis, settings: Settings, chains: list[list[Planned]]
) -> dict[str, Planned]:
    """XADD every patch, each chain in order; the plans by ingress entry id."""
    order = _interleaved(chains)
    by_src: dict[str, Planned] = {}
    for first in range(0, len(order), 500):
        chunk = order[first : first + 500]
        async with redis.pipeline(transaction=False) as pipe:
            for p in chunk:
                pipe.xadd(settings.keys.patches, p.fields)  # type: ignore[arg-type]
            replies: list[bytes] = await pipe.execute()
        by_src.update((raw.decode(), p) for raw, p in zip(replies, chunk, strict=True))
    return by_src


def _name(p: Planned, src: str) -> str:
    return f"{p.doc} patch {p.fields['id']} (entry {src}, base {p.fields['base']}, ops {p.ops})"


def _check_outcomes(by_src: dict[str, Planned], found: Sequence[Outcome]) -> list[str]:
    """Each outcome against its patch's prediction."""
    wrong = []
    for o in found:
        p = by_src.get(o.src)
        if p is None:
            continue
        status, code = o.status.value, None if o.code is None else o.code.value
        rev = p.rev if status == "rejected" else o.rev  # a rejection's rev is not predicted
        if (status, rev) != (p.status, p.rev) or (status == "rejected") != (code in p.codes):
            wrong.append(
                f"{_name(p, o.src)}: the reference says {p.status} {sorted(p.codes)} at "
                f"revision {p.rev}, the pipeline {status} {code} at {o.rev} ({o.message})"
            )
    return wrong


def _check_revisions(by_src: dict[str, Planned], raw: Sequence[Any]) -> list[str]:
    """Each revision against the commit the reference predicts: its src, hash, line count
    and prev hash, and its stored ops applied by the reference to the base."""
    revisions = {(f[b"doc"].decode(), int(f[b"rev"])): f for _, f in raw}
    wrong = []
    for src, p in by_src.items():
        if p.status != "committed":
            continue
        f = revisions.pop((p.doc, p.rev), None)
        if f is None:
            wrong.append(f"{_name(p, src)}: no revision {p.rev} in the log")
            continue
        replayed = tuple(reference_apply(p.before, json.loads(f[b"ops"])))
        got = (f[b"src"].decode(), f[b"hash"].decode(), int(f[b"lines"]), f[b"prev"].decode())
        want = (src, _sha(p.after), len(p.after), _sha(p.before))
        if got != want or replayed != p.after:
            wrong.append(
                f"{_name(p, src)}: revision {p.rev} has (src, hash, lines, prev) {got} and "
                f"its ops give {replayed!r}; the reference {want} and {p.after!r}"
            )
    wrong += [f"{doc!r} revision {rev}: not a commit of the reference" for doc, rev in revisions]
    return wrong


async def _check_documents(redis: Redis, keys: Keys, chains: list[list[Planned]]) -> list[str]:
    """Each document's head, its rebuild from the log and its read, against the
    reference's final content."""
    rebuilt = await fold_log(redis, keys)
    wrong = []
    for last in (chain[-1] for chain in chains if chain):
        want = reference_bytes(last.after)
        raw: Any = await redis.hmget(keys.doc(last.doc), "rev", "hash", "lines")
        head = (int(raw[0] or 0), (raw[1] or b"").decode() or _sha(()), int(raw[2] or 0))
        if head != (last.rev, _sha(last.after), len(last.after)):
            wrong.append(
                f"{last.doc}: head (rev, hash, lines) {head}; reference revision "
                f"{last.rev}, {_sha(last.after)}, {len(last.after)} lines"
            )
        doc = rebuilt.get(last.doc)
        folded = b"" if doc is None else reference_bytes(doc.lines)
        if folded != want or (doc is not None and doc.broken is not None):
            wrong.append(
                f"{last.doc}: the log rebuilds to {folded!r} ({doc and doc.broken}); "
                f"reference {want!r}"
            )
        rev, lines = await read_document(redis, keys, last.doc)
        if (rev, reference_bytes(lines)) != (last.rev, want):
            wrong.append(
                f"{last.doc}: read gives revision {rev}, {lines!r}; reference "
                f"revision {last.rev}, {list(last.after)!r}"
            )
    return wrong


async def _tail(redis: Redis, stream: str) -> str:
    """The id of a stream's newest entry (``0-0`` if none)."""
    newest: Any = await redis.xrevrange(stream, count=1)
    return newest[0][0].decode() if newest else "0-0"


async def run(
    redis: Redis, settings: Settings, scripts: Scripts, chains: list[list[Planned]]
) -> Row:
    """Submit ``chains``, drain the pipeline once (one normalize, one execute worker) and
    compare everything it wrote with the reference's prediction.

    The row's figures count the pipeline's outcomes (by status, rejections by code),
    disagreements with the reference (``mismatches``), failed deliveries in either stage
    (``script_errors``: a script that raised, or any other error), dead letters,
    patches without or with more than one outcome, and entries left pending."""
    row = Row("D1")
    keys = settings.keys
    # The namespace may hold earlier runs: only what is written from here on is this one's.
    streams = (keys.outcomes, keys.revisions, keys.dead)
    tails = [await _tail(redis, stream) for stream in streams]
    by_src = await _submit(redis, settings, chains)
    started = time.monotonic()
    workers = await drain(redis, settings, scripts, timeout=60 + len(by_src) / 50)
    row.figures["drain_s"] = round(time.monotonic() - started, 2)
    written: list[Any] = [
        await redis.xrange(s, f"({t}", "+") for s, t in zip(streams, tails, strict=True)
    ]
    found = [decode_event(Outcome, fields) for _, fields in written[0]]
    told = Counter(o.src for o in found)
    wrong = _check_outcomes(by_src, found) + _check_revisions(by_src, written[1])
    wrong += await _check_documents(redis, keys, chains)
    pending = 0
    for stream, group in ((keys.patches, NORMALIZE), (keys.normalized, EXECUTE)):
        info: Any = await redis.xpending(stream, group)
        pending += int(info["pending"])
    mine = [o for o in found if o.src in by_src]
    statuses = Counter(o.status.value for o in mine)
    row.figures.update(
        patches=len(by_src),
        committed=statuses["committed"],
        noop=statuses["noop"],
        rejected=statuses["rejected"],
        **{
            f"rejected_{code}": n
            for code, n in sorted(Counter(o.code for o in mine if o.code).items())
        },
        mismatches=len(wrong),
        script_errors=sum(w.lease.info.failed for w in workers),
        dead_letters=len(written[2]),
        missing_outcomes=sum(1 for src in by_src if src not in told),
        extra_outcomes=sum(n - (src in by_src) for src, n in told.items()),
        pending=pending,
    )
    for name in MUST_BE_ZERO:
        row.check(row.figures[name] == 0, f"{name} = {row.figures[name]}, must be 0")
    row.violations += wrong[:5]
    return row


async def measure(
    redis: Redis, settings: Settings, scripts: Scripts, patches: int, *, seed: int | None = None
) -> Row:
    """D1 at scale: about ``patches`` random patches, 50 per document, under
    ``EDGE_LIMITS`` (every limit reached and crossed), one in six breaking a rule or
    taken to a limit; seeded (a random seed unless given), the seed among the figures."""
    if seed is None:
        seed = random.SystemRandom().randrange(2**32)
    documents = max(1, patches // 50)
    rng = random.Random(seed)
    chains = plan(rng, f"m{seed}", documents, patches // documents - 1, EDGE_LIMITS, bad=1 / 6)
    edge = msgspec.structs.replace(settings, limits=EDGE_LIMITS)
    row = await run(redis, edge, scripts, chains)
    row.figures["seed"] = seed
    return row
