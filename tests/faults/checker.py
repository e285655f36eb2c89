"""The checker of FAULT-PLAN section 4: from a run's history and the server's state at
quiesce, count what happened to every submission and find every broken guarantee.

Pure: no server, no clock. A scenario reads the state (``snapshot.read_state``), calls
``check`` and adds its own fault figures to the row it returns.

- C1 outcome accounting: attempted, acknowledged, indeterminate, failed; applied and
  rejected (by code); **lost** (acknowledged, no outcome), **duplicated** (applied twice,
  or applied and rejected, or one entry with two outcomes), **unexpected** (an entry,
  outcome or revision of an id never attempted), **recovered** (indeterminate, yet it
  has an outcome), **misreported** (a client told something the log contradicts).
- C2 revision chains: gap-free, each ``prev`` the hash before, each hash its content's.
- C3 content: the live head, the index and the projection agree with the fold.
- C4 queues at quiesce: nothing pending or undelivered, delivery counts within budget.
- C5 session order: a client's chain on its own document commits in issue order.
"""

from __future__ import annotations

import itertools
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence

from tests.faults.history import Event, Kind
from tests.faults.row import Row
from tests.faults.snapshot import State

__all__ = ["check"]

_KEPT_APART = {"duplicate"}  # outcomes that answer a replay, not decide a patch


def _percentile(values: Sequence[float], share: float) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(share * 100) - 1]


def check(  # noqa: PLR0912 - one pass per rule, kept together to read as the plan
    scenario: str,
    events: Sequence[Event],
    state: State,
    *,
    max_deliveries: int,
    forgivable: Callable[[Event], bool] | None = None,
) -> Row:
    """Check a run. ``max_deliveries``: the stages' budget (a dead letter may show one
    more). ``forgivable(ok_event)``: an acknowledged submission whose loss the scenario
    allows (F5b's window); such losses are counted as ``lost_in_window``, not ``lost``."""
    row = Row(scenario)
    invoked: dict[str, Event] = {}
    acked: dict[str, Event] = {}  # entry id -> its ok event
    outcome_of_id: set[str] = set()
    kinds: dict[str, set[Kind]] = defaultdict(set)
    for e in events:
        kinds[e.id].add(e.kind)
        if e.kind is Kind.INVOKE:
            invoked.setdefault(e.id, e)
        elif e.kind is Kind.OK:
            acked[e.entry] = e
    attempted = set(invoked)
    acked_ids = {e.id for e in acked.values()}
    # An attempt whose result its client could not know (a timeout, a lost connection),
    # whether or not a later attempt of the same id was acknowledged.
    indeterminate = {i for i, k in kinds.items() if Kind.INFO in k}
    failed = {i for i, k in kinds.items() if k & {Kind.OK, Kind.INFO} == set() and Kind.FAIL in k}

    by_src: dict[str, list[str]] = defaultdict(list)
    deciding: dict[str, list[tuple[str, str, int, str]]] = defaultdict(list)
    reused: Counter[str] = Counter()  # id_reuse answers: other payloads, counted apart
    for said in state.outcomes:
        by_src[said.src].append(said.status)
        outcome_of_id.add(said.id)
        if said.code == "id_reuse":
            reused[said.id] += 1
        elif said.status not in _KEPT_APART:
            deciding[said.id].append((said.status, said.code, said.rev, said.doc))
    # A replay of a rejected or noop patch gets the same answer again: the patch's own
    # outcome is its first one.
    owner = {patch_id: decided[0] for patch_id, decided in deciding.items()}
    applied: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for a in state.applied:
        applied[a.id].append((a.doc, a.rev))

    # C1: every entry one outcome, every acknowledged submission an outcome.
    lost = forgiven = unanswered = duplicated = unexpected = misreported = 0
    for src, (patch_id, _doc) in state.ingress.items():
        count = len(by_src.get(src, ()))
        if patch_id not in attempted:
            unexpected += 1
            row.violations.append(f"ingress entry {src} of id {patch_id!r}: never attempted")
        if count == 0 and src not in acked:
            unanswered += 1
            row.violations.append(f"ingress entry {src} ({patch_id}): no outcome")
        if count > 1:
            duplicated += 1
            row.violations.append(f"ingress entry {src} ({patch_id}): {count} outcomes")
    for src, ok in acked.items():
        if by_src.get(src):
            continue
        if forgivable is not None and forgivable(ok):
            forgiven += 1
            continue
        lost += 1
        where = "in the stream" if src in state.ingress else "gone from the stream"
        if src not in state.ingress and state.ingress_trimmed:
            where = "trimmed"
        row.violations.append(f"acknowledged {ok.id} (entry {src}, {where}): no outcome")
    for patch_id, revs in applied.items():
        if patch_id not in attempted:
            unexpected += 1
            row.violations.append(f"revision {revs[0]} of id {patch_id!r}: never attempted")
        if len(revs) > 1:
            duplicated += 1
            row.violations.append(f"id {patch_id} applied {len(revs)} times: {revs}")
        contradicting = [d[:2] for d in deciding.get(patch_id, []) if d[0] != "committed"]
        if contradicting:  # a rejection or a noop of a patch that made a revision
            duplicated += 1
            what = " and ".join(sorted({status for status, _ in contradicting}))
            row.violations.append(f"id {patch_id} applied and {what}: {contradicting}")
    for patch_id in outcome_of_id - attempted:
        unexpected += 1
        row.violations.append(f"an outcome for id {patch_id!r}, never attempted")

    # What each client was told, and each committed outcome, against the log.
    for e in events:
        if e.kind is not Kind.TOLD:
            continue
        revs = applied.get(e.id, [])
        if e.status in ("committed", "duplicate"):
            right = (e.doc, e.rev) in revs
        elif e.status == "rejected" and e.code == "id_reuse":
            right = True  # this payload was not applied; the id's owner may have been
        else:
            right = not revs
        if not right:
            misreported += 1
            row.violations.append(
                f"{e.proc} was told {e.status} {e.code} rev {e.rev} for {e.id}; the log: {revs}"
            )
    for patch_id, decided in deciding.items():
        revs = applied.get(patch_id, [])
        committed = [(doc, rev) for status, _code, rev, doc in decided if status == "committed"]
        for where, rev in committed:
            if (where, rev) not in revs:
                misreported += 1
                row.violations.append(f"outcome committed rev {rev} for {patch_id}: log {revs}")
        if len(committed) > 1:  # a replay must learn "duplicate", not the owner's answer
            misreported += 1
            row.violations.append(f"{len(committed)} committed outcomes for {patch_id}")

    # C2, C3: chains, heads, index, projection.
    for name, doc in sorted(state.docs.items()):
        if doc.broken is not None:
            row.violations.append(f"chain: {doc.broken}")
        if (doc.head_rev, doc.head_hash) != (doc.rev, doc.hash):
            row.violations.append(
                f"{name!r}: head rev {doc.head_rev} {doc.head_hash[:12]}, "
                f"log rev {doc.rev} {doc.hash[:12]}"
            )
        if doc.index != doc.rev:
            row.violations.append(f"{name!r}: index of {doc.index}, log of {doc.rev}")
        if doc.projected is not None and doc.projected != doc.hash:
            row.violations.append(f"{name!r}: the projected file is not revision {doc.rev}")

    # C4: queues at quiesce.
    for group, count in sorted(state.pending.items()):
        row.check(count == 0, f"group {group}: {count} entries still pending")
    for group, count in sorted(state.lag.items()):
        row.check(count == 0, f"group {group}: {count} entries never delivered")
    row.check(
        state.max_deliveries <= max_deliveries + 1,
        f"a dead letter delivered {state.max_deliveries} times (budget {max_deliveries})",
    )
    for dead in state.dead:
        row.check(
            bool(dead.src) and dead.deliveries > 0 and bool(dead.error),
            f"dead letter without its entry id, deliveries or reason: {dead}",
        )

    # C5: chains commit in issue order.
    seq_of = {e.id: e.seq for e in invoked.values() if e.seq}
    order: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for a in state.applied:
        if a.id in seq_of:
            order[a.doc].append((a.rev, seq_of[a.id]))
    out_of_order = 0
    for name, pairs in sorted(order.items()):
        seqs = [s for _, s in sorted(pairs)]
        if any(b <= a for a, b in itertools.pairwise(seqs)):
            out_of_order += 1
            row.violations.append(f"{name!r}: chain applied out of order: {seqs[:20]}")

    # A chain has one writer and each base is its predecessor's revision: a rejection
    # means the chain lost a link (its predecessor lost or undecided in time).
    broken_links = [
        said for said in state.outcomes if said.status == "rejected" and said.id in seq_of
    ]
    for said in broken_links[:3]:
        row.violations.append(f"chained {said.id} rejected {said.code}: {said.message}")

    latencies = [
        a.at - invoked[a.id].t / 1e6 for a in state.applied if a.id in invoked and a.at > 0
    ]
    codes = Counter(code for status, code, _, _ in owner.values() if status == "rejected")
    codes.update({"id_reuse": sum(reused.values())} if reused else {})
    row.figures.update(
        attempted=len(attempted),
        acked=len(acked_ids),
        indeterminate=len(indeterminate),
        failed=len(failed),
        applied=len(applied),
        rejected=sum(codes.values()),
        noop=sum(1 for status, _, _, _ in owner.values() if status == "noop"),
        lost=lost,
        duplicated=duplicated,
        unexpected=unexpected,
        recovered=len(indeterminate & outcome_of_id),
        info_events=sum(1 for e in events if e.kind is Kind.INFO),
        unresolved=len({i for i in indeterminate if Kind.OK not in kinds[i]} - outcome_of_id),
        misreported=misreported,
        unanswered=unanswered,
        out_of_order=out_of_order,
        chain_rejected=len(broken_links),
        dead=len(state.dead),
        max_deliveries=state.max_deliveries,
        ingress_entries=len(state.ingress),
        replays_answered=sum(s == "duplicate" for sts in by_src.values() for s in sts),
        p50_ms=round(_percentile(latencies, 0.5), 1),
        p99_ms=round(_percentile(latencies, 0.99), 1),
    )
    if forgivable is not None:
        row.figures["lost_in_window"] = forgiven
    for code, count in sorted(codes.items()):
        row.figures[f"rejected_{code}"] = count
    return row
