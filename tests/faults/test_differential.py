"""D1: what the pipeline commits is byte for byte what a reference apply gives, and no
patch the validator accepts fails inside the commit script (on both servers)."""

from __future__ import annotations

import itertools
import json
import random

import hypothesis
import msgspec
from hypothesis import HealthCheck, Phase, given
from hypothesis import strategies as st
from redis.asyncio import Redis

from patchlog.streams.limits import Limits
from patchlog.streams.scripts import Scripts
from patchlog.streams.settings import Settings
from tests.faults.differential import (
    EDGE_LIMITS,
    ODD,
    Planned,
    WireOp,
    chain,
    entry_fields,
    entry_size,
    exact_line,
    measure,
    plan_document,
    run,
)
from tests.strategies import line

_EXAMPLES = hypothesis.settings(
    max_examples=20,
    deadline=None,
    # Shrinking would rerun the pipeline hundreds of times; a failure's row names the
    # patch, its ops and both contents instead.
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    # One namespace serves every example of a test: each example writes new documents.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
_odd_line = st.text(st.sampled_from(ODD), max_size=6)
_documents = st.lists(st.lists(line | _odd_line, max_size=20), min_size=1, max_size=8)
_examples = itertools.count()


def _chains(
    rnd: random.Random, initial: list[list[str]], patches: int, limits: Limits, bad: float
) -> list[list[Planned]]:
    tag = f"h{next(_examples)}"
    return [
        plan_document(rnd, f"{tag}-{d}", lines, patches, limits, bad)
        for d, lines in enumerate(initial)
    ]


@_EXAMPLES
@given(rnd=st.randoms(use_true_random=False), initial=_documents, patches=st.integers(1, 8))
async def test_commits_are_byte_identical_to_the_reference_apply(
    redis: Redis,
    settings: Settings,
    scripts: Scripts,
    rnd: random.Random,
    initial: list[list[str]],
    patches: int,
) -> None:
    """Random valid patches on documents of odd text commit the reference's content:
    each revision's hash, line count and ops, each head, the log's rebuild and reads."""
    chains = _chains(rnd, initial, patches, settings.limits, bad=0.0)
    row = await run(redis, settings, scripts, chains)
    row.assert_ok()
    assert row.figures["rejected"] == 0


@_EXAMPLES
@given(rnd=st.randoms(use_true_random=False), initial=_documents, patches=st.integers(1, 8))
async def test_what_the_validator_accepts_never_fails_in_the_script(
    redis: Redis,
    settings: Settings,
    scripts: Scripts,
    rnd: random.Random,
    initial: list[list[str]],
    patches: int,
) -> None:
    """Under small limits, patches at and past every limit and rule end in exactly the
    outcome the reference predicts: no script error, no dead letter, nothing pending."""
    edge = msgspec.structs.replace(settings, limits=EDGE_LIMITS)
    chains = _chains(rnd, initial, patches, EDGE_LIMITS, bad=0.4)
    row = await run(redis, edge, scripts, chains)
    row.assert_ok()


def _max_ops(length: int) -> list[WireOp]:
    """One op on each line but the last (a replace, a delete or an insert before it, in
    turn) and an append: ``length`` ops against a ``length``-line document."""
    ops: list[WireOp] = []
    for n in range(1, length):
        text = ODD[n % len(ODD)] * (n % 5)
        kind = ("replace", "delete", "insert")[n % 3]
        if kind == "insert":
            ops.append({"op": "insert", "at": n, "lines": [text, ""]})
        elif kind == "replace":
            ops.append({"op": "replace", "from": n, "to": n, "lines": [text]})
        else:
            ops.append({"op": "delete", "from": n})
    return [*ops, {"op": "insert", "at": length + 1, "lines": ["end "]}]


# Characters JSON carries as they are, so that a line's bytes on the wire are its own.
_PLAIN = "".join(c for c in ODD if json.dumps(c, ensure_ascii=False) == f'"{c}"')


def _full_entry(doc: str, n: int, head: int, limits: Limits, extra: int) -> list[WireOp]:
    """An insert of lines of exactly ``max_line_bytes``, and one that pads its entry to
    ``max_patch_bytes`` plus ``extra`` bytes."""
    cap = limits.max_line_bytes
    lines = [
        exact_line(random.Random(k), cap, _PLAIN) for k in range(limits.max_patch_bytes // cap - 1)
    ]
    ops: list[WireOp] = [{"op": "insert", "at": 1, "lines": [*lines, ""]}]
    size = entry_size(entry_fields(doc, n, head, ops, False))
    ops[0]["lines"][-1] = "p" * (limits.max_patch_bytes - size + extra)
    return ops


async def test_patches_at_the_default_limits(
    redis: Redis, settings: Settings, scripts: Scripts
) -> None:
    """At the default limits: 10,000 ops in one patch, lines of exactly 64 KiB, an entry
    of exactly 4 MiB commit as the reference says; one more op, byte or line is
    too_large, and line numbers past the end or near 2**53 are bounds."""
    limits = settings.limits
    length = limits.max_ops
    big = [{"op": "insert", "at": 1, "lines": [f"{n} " for n in range(length)]}]
    many = chain(
        "max-ops",
        [
            big,
            [*_max_ops(length), {"op": "delete", "from": length}],
            _max_ops(length),
            [{"op": "delete", "from": limits.max_doc_lines + 1}],
            [{"op": "insert", "at": 2**53 + 1, "lines": ["x"]}],
        ],
        limits,
    )
    rng = random.Random(7)
    wide = chain(
        "max-bytes",
        [
            _full_entry("max-bytes", 0, 0, limits, 0),
            _full_entry("max-bytes", 1, 1, limits, 1),
            [{"op": "replace", "from": 2, "lines": [exact_line(rng, limits.max_line_bytes + 1)]}],
        ],
        limits,
    )
    predicted = [(p.status, "".join(p.codes)) for p in many + wide]
    assert predicted == [
        ("committed", ""),
        ("rejected", "too_large"),  # max_ops + 1
        ("committed", ""),  # max_ops
        ("rejected", "bounds"),  # past the end, within the line number ceiling
        ("rejected", "bounds"),  # 2**53 + 1
        ("committed", ""),  # lines of max_line_bytes, an entry of max_patch_bytes
        ("rejected", "too_large"),  # max_patch_bytes + 1
        ("rejected", "too_large"),  # max_line_bytes + 1
    ]
    assert entry_size(wide[0].fields) == limits.max_patch_bytes
    row = await run(redis, settings, scripts, [many, wide])
    row.assert_ok()


async def test_measure_reports_a_clean_row(
    redis: Redis, settings: Settings, scripts: Scripts
) -> None:
    """The suite's D1 measurement at a small scale: every must-be-zero figure is 0."""
    row = await measure(redis, settings, scripts, 500)
    row.assert_ok()
    counts = {name: int(row.figures[name]) for name in ("patches", "committed", "rejected")}
    assert counts["patches"] >= 400, row.figures
    assert counts["committed"] > 0, row.figures
    assert counts["rejected"] > 0, row.figures
