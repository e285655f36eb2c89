"""Patch core throughput: decode, normalize, check, apply and hash one patch.

Usage: python benchmarks/core.py [--rounds N]

For each document size it times, per patch, the whole pure path a worker runs: decode
the entry's fields, normalize the ops, check bounds, drop no-op splices, apply, and hash
the new content. It prints the median over rounds of the mean time per patch, and the
patches per second that gives. Ops land at random lines, so the cost is typical.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

from patchlog.ops.randomops import ops_json, spread_ops
from patchlog.projections.diff import parse_diff, render_diff, verify
from patchlog.projections.patch import apply, check_bounds, effective, normalize
from patchlog.streams.codec import decode_ingress
from patchlog.streams.content import content_hash
from patchlog.streams.limits import Limits

LIMITS = Limits()


def make_doc(n: int, rnd: random.Random) -> list[str]:
    return [f"line {i} {'x' * rnd.randrange(10, 60)}" for i in range(n)]


def make_entries(n_lines: int, count: int, rnd: random.Random) -> list[dict[bytes, bytes]]:
    """Entries with 3 ops each (insert, replace, delete) at distinct random lines."""
    return [
        {b"doc": b"bench", b"base": b"1", b"ops": ops_json(spread_ops(rnd, n_lines, n)).encode()}
        for n in range(count)
    ]


def ops_path(doc: list[str], entry: dict[bytes, bytes]) -> str:
    patch = decode_ingress(entry, LIMITS)
    assert patch.ops is not None
    splices = normalize(patch.ops, LIMITS)
    check_bounds(splices, len(doc))
    return content_hash(apply(doc, effective(doc, splices), LIMITS))


def diff_path(doc: list[str], entry: dict[bytes, bytes]) -> str:
    patch = decode_ingress(entry, LIMITS)
    assert patch.diff is not None
    parsed = parse_diff(patch.diff, LIMITS)
    verify(parsed.expect, doc)
    check_bounds(parsed.splices, len(doc))
    return content_hash(apply(doc, effective(doc, parsed.splices), LIMITS))


def as_diff(doc: list[str], entry: dict[bytes, bytes]) -> dict[bytes, bytes]:
    """The same patch as a unified diff entry."""
    new = apply(doc, normalize(decode_ingress(entry, LIMITS).ops or (), LIMITS))
    return {b"doc": b"bench", b"base": b"1", b"diff": render_diff(doc, new, "bench").encode()}


def measure(
    fn: Callable[[list[str], dict[bytes, bytes]], str],
    doc: list[str],
    entries: list[dict[bytes, bytes]],
    rounds: int,
) -> float:
    """Median over rounds of the mean seconds per patch."""
    means = []
    for _ in range(rounds):
        started = time.perf_counter()
        for entry in entries:
            fn(doc, entry)
        means.append((time.perf_counter() - started) / len(entries))
    return statistics.median(means)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds per case")
    args = parser.parse_args()
    rnd = random.Random(2026)
    print(f"{'case':<34} {'per patch':>12} {'patches/s':>12} {'target':>10}")
    for n_lines, count, target in ((100, 5000, 20e-6), (100_000, 20, 20e-3)):
        doc = make_doc(n_lines, rnd)
        entries = make_entries(n_lines, count, rnd)
        diffs = [as_diff(doc, entry) for entry in entries]
        for name, fn, batch in (("3-op patch", ops_path, entries), ("diff", diff_path, diffs)):
            per = measure(fn, doc, batch, args.rounds)
            label = f"{name}, {n_lines:,}-line doc"
            goal = f"< {target * 1e6:,.0f} us" if name != "diff" else "-"
            print(f"{label:<34} {per * 1e6:>9,.1f} us {1 / per:>12,.0f} {goal:>10}")


if __name__ == "__main__":
    main()
