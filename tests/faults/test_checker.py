"""The checker can fail: a clean run built by hand passes, and each broken guarantee of
FAULT-PLAN section 4, planted in that run, fails the row with the figure that counts it
and a violation that names the patch, entry or document."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from typing import Any

import hypothesis
import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from patchlog.streams.keys import EXECUTE, NORMALIZE
from patchlog.streams.schema import DeadLetter
from tests.faults.checker import check
from tests.faults.history import Event, Kind
from tests.faults.row import Row
from tests.faults.snapshot import Applied, Folded, Said, State

BUDGET = 5
"""The stages' delivery budget the checker is given."""
_START_MS = 1_750_000_000_000
_LATENCY_MS = 10
_VERDICT = ("lost", "duplicated", "unexpected", "misreported")
_replace = msgspec.structs.replace
_EXAMPLES = hypothesis.settings(max_examples=60, deadline=None)
_ERRORS = {
    Kind.INFO: "TimeoutError: Timeout reading from socket",
    Kind.FAIL: "OOM command not allowed when used memory > 'maxmemory'.",
}


def _hash(doc: str, rev: int) -> str:
    # Any string works (the checker compares fields); a per-revision digest keeps the
    # state looking like what snapshot.read_state returns.
    return hashlib.sha256(f"{doc}@{rev}".encode()).hexdigest()


@dataclasses.dataclass
class Run:
    """A run's history and what the server recorded, written by hand."""

    events: list[Event] = dataclasses.field(default_factory=list)
    ingress: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)
    outcomes: list[Said] = dataclasses.field(default_factory=list)
    applied: list[Applied] = dataclasses.field(default_factory=list)
    dead: list[DeadLetter] = dataclasses.field(default_factory=list)
    invoked_ms: dict[str, int] = dataclasses.field(default_factory=dict)
    ms: int = _START_MS

    def tick(self) -> int:
        """The next millisecond: every event and stream entry has its own."""
        self.ms += 1
        return self.ms

    def event(self, proc: str, kind: Kind, patch_id: str, doc: str, **more: Any) -> None:
        """Record one client step."""
        ms = self.tick()
        if kind is Kind.INVOKE:
            self.invoked_ms.setdefault(patch_id, ms)
        self.events.append(
            Event(t=ms * 1_000_000, proc=proc, kind=kind, id=patch_id, doc=doc, **more)
        )

    def submit(
        self,
        proc: str,
        patch_id: str,
        doc: str,
        base: int,
        *,
        seq: int = 0,
        reply: Kind = Kind.OK,
        lands: bool = True,
    ) -> str:
        """One attempt, answered by ``reply``; the ingress entry id if the XADD landed."""
        self.event(proc, Kind.INVOKE, patch_id, doc, base=base, seq=seq)
        entry = f"{self.tick()}-0" if lands else ""
        if entry:
            self.ingress[entry] = (patch_id, doc)
        more = {"entry": entry} if reply is Kind.OK else {"error": _ERRORS[reply]}
        self.event(proc, reply, patch_id, doc, base=base, seq=seq, **more)
        return entry

    def retried(self, proc: str, patch_id: str, doc: str, base: int) -> tuple[str, str]:
        """A timed-out XADD that landed all the same, then its acknowledged resubmission."""
        first = self.submit(proc, patch_id, doc, base, reply=Kind.INFO)
        return first, self.submit(proc, patch_id, doc, base)

    def head(self, doc: str) -> int:
        """The document's last revision."""
        return max((a.rev for a in self.applied if a.doc == doc), default=0)

    def revise(self, src: str, patch_id: str, doc: str) -> int:
        """Append a revision (no outcome); its number."""
        rev = self.head(doc) + 1
        at = self.invoked_ms.get(patch_id, self.ms) + _LATENCY_MS
        self.applied.append(Applied(f"{self.tick()}-0", doc, rev, patch_id, src, at))
        return rev

    def commit(self, src: str, patch_id: str, doc: str) -> int:
        """A revision and its committed outcome; its number."""
        rev = self.revise(src, patch_id, doc)
        self.say(src, patch_id, doc, "committed", rev)
        return rev

    def say(self, src: str, patch_id: str, doc: str, status: str, rev: int, code: str = "") -> None:
        """An outcome."""
        message = f"op 1 replace line 1: {code} (head {rev})" if code else ""
        self.outcomes.append(Said(src, patch_id, doc, status, rev, code, message))

    def told(
        self, proc: str, patch_id: str, doc: str, entry: str, status: str, rev: int, code: str = ""
    ) -> None:
        """What the client waiting on ``entry`` was told."""
        self.event(proc, Kind.TOLD, patch_id, doc, entry=entry, status=status, rev=rev, code=code)

    def entry_of(self, patch_id: str) -> str:
        """The acknowledged ingress entry of ``patch_id``."""
        return next(e.entry for e in self.events if e.kind is Kind.OK and e.id == patch_id)

    def state(self) -> State:
        """The server's state at quiesce, every document consistent with the revisions."""
        docs: dict[str, Folded] = {}
        for doc in sorted({a.doc for a in self.applied}):
            rev = self.head(doc)
            digest = _hash(doc, rev)
            docs[doc] = Folded(
                rev=rev,
                hash=digest,
                lines=[f"line {n}" for n in range(1, rev + 1)],
                broken=None,
                head_rev=rev,
                head_hash=digest,
                index=sum(a.doc == doc for a in self.applied),
                projected=digest,
            )
        return State(
            ingress=dict(self.ingress),
            ingress_trimmed=False,
            outcomes=list(self.outcomes),
            applied=list(self.applied),
            docs=docs,
            pending={NORMALIZE: 0, EXECUTE: 0},
            lag={NORMALIZE: 0, EXECUTE: 0},
            dead=list(self.dead),
            max_deliveries=max((d.deliveries for d in self.dead), default=0),
        )


def clean() -> Run:
    """Three chained clients of five patches each, each told of its third, and two hot
    clients on one document: four commits (one rebased), a conflict and a noop."""
    run = Run()
    for k in range(1, 6):
        for n in range(3):
            proc, doc, patch_id = f"chain-{n}", f"own-{n}", f"chain-{n}-{k}"
            entry = run.submit(proc, patch_id, doc, k - 1, seq=k)
            rev = run.commit(entry, patch_id, doc)
            if k == 3:
                run.told(proc, patch_id, doc, entry, "committed", rev)
    for proc, patch_id, base in (("hot-0", "hot-0-1", 0), ("hot-1", "hot-1-1", 0)):
        run.commit(run.submit(proc, patch_id, "hot", base), patch_id, "hot")
    run.commit(run.submit("hot-0", "hot-0-2", "hot", 2), "hot-0-2", "hot")
    entry = run.submit("hot-1", "hot-1-2", "hot", 2)
    run.say(entry, "hot-1-2", "hot", "rejected", 3, "conflict")
    run.told("hot-1", "hot-1-2", "hot", entry, "rejected", 3, "conflict")
    entry = run.submit("hot-0", "hot-0-3", "hot", 3)
    run.say(entry, "hot-0-3", "hot", "noop", 3)
    run.told("hot-0", "hot-0-3", "hot", entry, "noop", 3)
    run.commit(run.submit("hot-1", "hot-1-3", "hot", 3), "hot-1-3", "hot")
    return run


def verify(
    run: Run, state: State | None = None, forgivable: Callable[[Event], bool] | None = None
) -> Row:
    """The checker's row for ``run`` (or for ``state`` read from it)."""
    state = state if state is not None else run.state()
    return check("T", run.events, state, max_deliveries=BUDGET, forgivable=forgivable)


def fails(row: Row, *needles: str, violations: int = 1, **figures: int) -> None:
    """``row`` failed with ``violations`` violations, one naming each needle, and the
    verdict figures not given in ``figures`` are 0."""
    assert not row.ok, row.figures
    assert len(row.violations) == violations, row.violations
    for needle in needles:
        assert any(needle in v for v in row.violations), (needle, row.violations)
    for name in _VERDICT:
        assert row.figures[name] == figures.pop(name, 0), (name, row.figures)
    for name, value in figures.items():
        assert row.figures.get(name) == value, (name, row.figures)


def passes(row: Row, **figures: int) -> None:
    """``row`` passed with the verdict figures 0 and ``figures`` as given."""
    row.assert_ok()
    for name in _VERDICT:
        assert row.figures[name] == 0, (name, row.figures)
    for name, value in figures.items():
        assert row.figures.get(name) == value, (name, row.figures)


def reorder(run: Run, n: int, seqs: list[int]) -> None:
    """Chain ``n``'s patch ``seqs[i]`` made its document's revision ``i + 1``: the log,
    the outcomes and what the clients were told all say so."""
    rev_of = {f"chain-{n}-{seq}": rev for rev, seq in enumerate(seqs, start=1)}
    run.applied = [_replace(a, rev=rev_of.get(a.id, a.rev)) for a in run.applied]
    run.outcomes = [_replace(s, rev=rev_of.get(s.id, s.rev)) for s in run.outcomes]
    run.events = [
        _replace(e, rev=rev_of[e.id]) if e.kind is Kind.TOLD and e.id in rev_of else e
        for e in run.events
    ]


# -- the clean run --------------------------------------------------------------------


def test_the_clean_run_passes_with_every_figure_counted() -> None:
    """A run with nothing wrong passes, and its figures count what it did."""
    row = verify(clean())
    row.assert_ok()
    zero = """indeterminate failed lost duplicated unexpected recovered info_events unresolved
        misreported unanswered out_of_order chain_rejected dead max_deliveries replays_answered"""
    assert row.figures == dict.fromkeys(zero.split(), 0) | {
        "attempted": 21,
        "acked": 21,
        "applied": 19,
        "rejected": 1,
        "rejected_conflict": 1,
        "noop": 1,
        "ingress_entries": 21,
        "p50_ms": 10.0,
        "p99_ms": 10.0,
    }


# -- C1: lost ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ingress_kept", "trimmed", "where"),
    [
        (True, False, "in the stream"),
        (False, False, "gone from the stream"),
        (False, True, "trimmed"),
    ],
)
def test_an_acknowledged_entry_without_an_outcome_is_lost(
    ingress_kept: bool, trimmed: bool, where: str
) -> None:
    """An ok'd submission whose entry never got an outcome is lost, wherever its entry is."""
    run = clean()
    src = run.entry_of("chain-1-4")
    run.outcomes = [s for s in run.outcomes if s.src != src]
    if not ingress_kept:
        del run.ingress[src]
    state = run.state()
    state.ingress_trimmed = trimmed
    fails(verify(run, state), f"acknowledged chain-1-4 (entry {src}, {where})", lost=1)


def test_a_loss_the_scenario_allows_is_counted_apart_and_passes() -> None:
    """F5b's window: a forgiven loss is lost_in_window, not lost; any other still fails."""
    run = clean()
    src = run.entry_of("chain-1-4")
    run.outcomes = [s for s in run.outcomes if s.src != src]
    passes(verify(run, forgivable=lambda ok: ok.entry == src), lost_in_window=1)
    row = verify(run, forgivable=lambda ok: ok.id == "hot-0-1")
    fails(row, "chain-1-4", lost=1, lost_in_window=0)


@_EXAMPLES
@given(st.data())
def test_any_set_of_missing_outcomes_is_counted_exactly(data: st.DataObject) -> None:
    """Whatever acknowledged entries lose their outcome, each is lost or forgiven, once."""
    run = clean()
    acked = [e.entry for e in run.events if e.kind is Kind.OK]
    gone = data.draw(st.lists(st.sampled_from(acked), unique=True), label="gone")
    forgiven = data.draw(st.sets(st.sampled_from(gone)), label="forgiven") if gone else set()
    run.outcomes = [s for s in run.outcomes if s.src not in gone]
    row = verify(run, forgivable=lambda ok: ok.entry in forgiven)
    lost = set(gone) - forgiven
    assert row.figures["lost"] == len(lost)
    assert row.figures["lost_in_window"] == len(forgiven)
    assert len(row.violations) == len(lost), row.violations
    for src in lost:
        assert sum(f"entry {src}," in v for v in row.violations) == 1, (src, row.violations)
    assert row.ok == (not lost)


# -- C1: duplicated ---------------------------------------------------------------------


def test_an_id_applied_twice_is_duplicated() -> None:
    """A second revision of one patch id is a duplicate (the document's own chain holds)."""
    run = clean()
    run.revise(run.entry_of("hot-0-1"), "hot-0-1", "hot")
    fails(verify(run), "id hot-0-1 applied 2 times", duplicated=1, applied=19)


def test_an_entry_with_two_outcomes_is_duplicated() -> None:
    """One ingress entry answered twice is a duplicate, even when both answers agree."""
    run = clean()
    src = run.entry_of("chain-2-2")
    run.say(src, "chain-2-2", "own-2", "duplicate", 2)
    fails(verify(run), f"ingress entry {src} (chain-2-2): 2 outcomes", duplicated=1)


def test_a_resubmission_rejected_after_its_id_was_applied_is_duplicated() -> None:
    """P2: a retried applied patch answered by a conflict is applied and rejected."""
    run = clean()
    first, again = run.retried("hot-0", "hot-0-4", "hot", 4)
    run.commit(first, "hot-0-4", "hot")
    run.say(again, "hot-0-4", "hot", "rejected", 5, "conflict")
    fails(verify(run), "id hot-0-4 applied and rejected", duplicated=1, recovered=1)
    # The client that waited was told the conflict: that is misreported too.
    run.told("hot-0", "hot-0-4", "hot", again, "rejected", 5, "conflict")
    fails(
        verify(run),
        "hot-0 was told rejected conflict rev 5 for hot-0-4",
        violations=2,
        duplicated=1,
        misreported=1,
    )


def test_another_payload_under_an_applied_id_is_rejected_without_a_violation() -> None:
    """id_reuse answers a different payload; the id's owner stays applied once."""
    run = clean()
    entry = run.submit("hot-1", "hot-0-1", "hot", 4)
    run.say(entry, "hot-0-1", "hot", "rejected", 4, "id_reuse")
    run.told("hot-1", "hot-0-1", "hot", entry, "rejected", 4, "id_reuse")
    passes(verify(run), rejected_id_reuse=1, ingress_entries=22)


# -- C1: unexpected ---------------------------------------------------------------------


_GHOST = "9999999999999-0"


@pytest.mark.parametrize(
    ("plant", "needles"),
    [
        (lambda run: run.revise(_GHOST, "ghost", "hot"), ["of id 'ghost': never attempted"]),
        (
            lambda run: run.say(_GHOST, "ghost", "hot", "rejected", 4, "conflict"),
            ["an outcome for id 'ghost', never attempted"],
        ),
        (
            lambda run: run.ingress.update({_GHOST: ("ghost", "hot")}),
            [f"ingress entry {_GHOST} of id 'ghost': never attempted", "(ghost): no outcome"],
        ),
    ],
    ids=["revision", "outcome", "ingress entry"],
)
def test_a_record_of_an_id_never_attempted_is_unexpected(
    plant: Callable[[Run], object], needles: list[str]
) -> None:
    """A revision, outcome or ingress entry no client asked for is unexpected (an entry
    nobody answered is unanswered too)."""
    run = clean()
    plant(run)
    unanswered = len(needles) - 1
    fails(verify(run), *needles, violations=len(needles), unexpected=1, unanswered=unanswered)


# -- C1: misreported --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patch_id", "status", "code", "rev"),
    [
        ("chain-0-3", "committed", "", 4),  # applied at 3, told 4
        ("hot-0-2", "rejected", "conflict", 3),  # applied, told rejected
        ("hot-0-2", "noop", "", 3),  # applied, told it changed nothing
        ("hot-1-2", "committed", "", 3),  # rejected, told committed
        ("hot-0-3", "duplicate", "", 3),  # a noop, told a duplicate of a revision
    ],
)
def test_a_client_told_what_the_log_contradicts_is_misreported(
    patch_id: str, status: str, code: str, rev: int
) -> None:
    """Told committed at another revision, rejected or noop for an applied id, or
    committed for one never applied."""
    run = clean()
    proc, doc = patch_id.rsplit("-", 1)[0], run.ingress[run.entry_of(patch_id)][1]
    run.told(proc, patch_id, doc, run.entry_of(patch_id), status, rev, code)
    fails(verify(run), f"{proc} was told {status}", f"rev {rev} for {patch_id}", misreported=1)


def test_a_committed_outcome_at_the_wrong_revision_is_misreported() -> None:
    """The outcomes stream says committed at a revision that is not the patch's."""
    run = clean()
    run.outcomes = [_replace(s, rev=3) if s.id == "chain-2-2" else s for s in run.outcomes]
    fails(verify(run), "outcome committed rev 3 for chain-2-2", misreported=1)


@_EXAMPLES
@given(st.data())
def test_any_set_of_wrong_revisions_told_is_counted_exactly(data: st.DataObject) -> None:
    """Whatever committed answers are off by some revisions, each is misreported once."""
    run = clean()
    told = [e.id for e in run.events if e.kind is Kind.TOLD and e.status == "committed"]
    wrong = data.draw(st.sets(st.sampled_from(told)), label="wrong")
    shift = data.draw(st.integers(1, 3), label="shift")
    run.events = [
        _replace(e, rev=e.rev + shift) if e.kind is Kind.TOLD and e.id in wrong else e
        for e in run.events
    ]
    row = verify(run)
    assert row.figures["misreported"] == len(wrong)
    assert row.ok == (not wrong)
    for patch_id in wrong:
        assert any(f"for {patch_id};" in v for v in row.violations), row.violations


# -- C1: what is counted without being a violation --------------------------------------


def test_a_timed_out_submission_with_an_outcome_is_recovered() -> None:
    """A timeout whose XADD landed, then the acknowledged resubmission answered duplicate."""
    run = clean()
    first, again = run.retried("hot-0", "hot-0-4", "hot", 4)
    run.commit(first, "hot-0-4", "hot")
    run.say(again, "hot-0-4", "hot", "duplicate", 5)
    run.told("hot-0", "hot-0-4", "hot", again, "duplicate", 5)
    passes(
        verify(run),
        recovered=1,
        indeterminate=1,
        info_events=1,
        unresolved=0,
        replays_answered=1,
        attempted=22,
        acked=22,
        applied=20,
        ingress_entries=23,
    )


def test_a_timed_out_submission_never_retried_but_answered_is_recovered() -> None:
    """The load stopped after a timeout, yet the entry had landed and was decided."""
    run = clean()
    entry = run.submit("hot-0", "hot-0-4", "hot", 4, reply=Kind.INFO)
    run.commit(entry, "hot-0-4", "hot")
    passes(verify(run), recovered=1, unresolved=0, attempted=22, acked=21, applied=20)


@pytest.mark.parametrize(
    ("reply", "figures"),
    [
        (Kind.INFO, {"unresolved": 1, "indeterminate": 1, "recovered": 0}),
        (Kind.FAIL, {"failed": 1}),
    ],
    ids=["timeout", "refused"],
)
def test_a_submission_that_never_landed_is_counted_not_owed(
    reply: Kind, figures: dict[str, int]
) -> None:
    """A timeout with no entry is unresolved, a definite error (OOM) failed: counted, and
    no outcome is owed."""
    run = clean()
    run.submit("hot-0", "hot-0-4", "hot", 4, reply=reply, lands=False)
    passes(verify(run), attempted=22, acked=21, **figures)


def test_a_resent_xadd_the_client_never_saw_is_answered_as_a_replay() -> None:
    """redis-py resent an XADD: two entries, one acknowledged, the other a duplicate."""
    run = clean()
    run.event("hot-0", Kind.INVOKE, "hot-0-4", "hot", base=4)
    first, again = f"{run.tick()}-0", f"{run.tick()}-0"
    run.ingress.update({first: ("hot-0-4", "hot"), again: ("hot-0-4", "hot")})
    run.event("hot-0", Kind.OK, "hot-0-4", "hot", base=4, entry=again)
    run.commit(first, "hot-0-4", "hot")
    run.say(again, "hot-0-4", "hot", "duplicate", 5)
    passes(verify(run), replays_answered=1, ingress_entries=23, acked=22, unanswered=0)


# -- C2, C3: chains, heads, index, projection -------------------------------------------


@pytest.mark.parametrize(
    ("doc", "change", "needle"),
    [
        ("own-1", {"broken": "rev 3: prev is not the hash of rev 2"}, "chain: rev 3: prev"),
        ("own-2", {"head_rev": 4}, "'own-2': head rev 4"),
        (
            "own-2",
            {"head_hash": _hash("own-2", 4)},
            f"'own-2': head rev 5 {_hash('own-2', 4)[:12]}",
        ),
        ("hot", {"index": 3}, "'hot': index of 3, log of 4"),
        ("hot", {"projected": _hash("hot", 3)}, "'hot': the projected file is not revision 4"),
    ],
)
def test_a_document_at_odds_with_its_log_fails(
    doc: str, change: dict[str, Any], needle: str
) -> None:
    """A broken chain, or a head, index or projected file other than the fold, fails."""
    run = clean()
    state = run.state()
    state.docs[doc] = _replace(state.docs[doc], **change)
    fails(verify(run, state), needle)


def test_a_document_without_a_projector_is_not_judged_on_one() -> None:
    """No projector (projected None) is not a mismatch."""
    run = clean()
    state = run.state()
    state.docs = {name: _replace(doc, projected=None) for name, doc in state.docs.items()}
    passes(verify(run, state))


# -- C4: queues at quiesce --------------------------------------------------------------


@pytest.mark.parametrize(
    ("queue", "group", "needle"),
    [
        ("pending", NORMALIZE, f"group {NORMALIZE}: 2 entries still pending"),
        ("pending", EXECUTE, f"group {EXECUTE}: 2 entries still pending"),
        ("lag", EXECUTE, f"group {EXECUTE}: 2 entries never delivered"),
    ],
)
def test_entries_left_in_a_group_at_quiesce_fail(queue: str, group: str, needle: str) -> None:
    """Pending or undelivered entries once the run has quiesced fail the row."""
    run = clean()
    state = run.state()
    getattr(state, queue)[group] = 2
    fails(verify(run, state), needle)


def _poisoned(deliveries: int, src: str = "1750000009999-0", error: str = "boom") -> Run:
    """The clean run and a patch that failed execute ``deliveries`` times, dead-lettered."""
    run = clean()
    entry = run.submit("hot-0", "hot-0-4", "hot", 4)
    run.say(entry, "hot-0-4", "hot", "rejected", 4, "invalid")
    run.dead.append(
        DeadLetter(
            stage=EXECUTE, error=error, deliveries=deliveries, entry={}, at=run.tick(), src=src
        )
    )
    return run


def test_a_dead_letter_past_the_budget_fails() -> None:
    """The budget plus the one delivery that found it spent is fine; one more fails."""
    passes(verify(_poisoned(BUDGET + 1)), dead=1, max_deliveries=BUDGET + 1, rejected_invalid=1)
    row = verify(_poisoned(BUDGET + 2))
    fails(row, f"delivered {BUDGET + 2} times (budget {BUDGET})", max_deliveries=BUDGET + 2)


@pytest.mark.parametrize(("src", "error"), [("", "boom"), ("1750000009999-0", "")])
def test_a_dead_letter_without_its_entry_or_reason_fails(src: str, error: str) -> None:
    """Every dead letter names its entry and why it was given up on."""
    fails(verify(_poisoned(BUDGET, src, error)), "dead letter without its entry id")


# -- C5: chains in issue order ----------------------------------------------------------


def test_a_chain_applied_out_of_order_fails() -> None:
    """Seq 2 committed before seq 1 on its document: out of order."""
    run = clean()
    reorder(run, 0, [2, 1, 3, 4, 5])
    fails(verify(run), "'own-0': chain applied out of order: [2, 1, 3, 4, 5]", out_of_order=1)


@_EXAMPLES
@given(st.permutations(range(1, 6)))
def test_any_order_but_issue_order_fails(seqs: list[int]) -> None:
    """Any permutation of a chain's revisions passes iff it is the issue order."""
    run = clean()
    reorder(run, 1, list(seqs))
    row = verify(run)
    in_order = list(seqs) == sorted(seqs)
    assert row.ok == in_order, row.violations
    assert row.figures["out_of_order"] == (0 if in_order else 1)
    assert row.figures["misreported"] == 0


def test_a_chained_patch_rejected_fails() -> None:
    """A chain's patch rejected means the chain lost a link."""
    run = clean()
    src = run.entry_of("chain-1-5")
    run.applied = [a for a in run.applied if a.id != "chain-1-5"]
    run.outcomes = [s for s in run.outcomes if s.src != src]
    run.say(src, "chain-1-5", "own-1", "rejected", 4, "base_ahead")
    fails(
        verify(run),
        "chained chain-1-5 rejected base_ahead",
        chain_rejected=1,
        rejected_base_ahead=1,
        applied=18,
    )


# -- outcomes the checker lets through --------------------------------------------------


def test_a_noop_outcome_for_an_applied_id_fails() -> None:
    """An id answered noop (no revision, by definition) that also made a revision."""
    run = clean()
    run.events = [e for e in run.events if not (e.kind is Kind.TOLD and e.id == "hot-0-3")]
    run.revise(run.entry_of("hot-0-3"), "hot-0-3", "hot")
    row = verify(run)
    assert not row.ok, row.figures
    assert any("hot-0-3" in v for v in row.violations), row.violations
    assert sum(int(row.figures[n]) for n in ("duplicated", "misreported")) == 1, row.figures


@pytest.mark.parametrize(
    ("status", "code", "figures"),
    [
        ("rejected", "conflict", {"rejected": 2, "rejected_conflict": 2, "noop": 1}),
        ("noop", "", {"rejected": 1, "noop": 2}),
    ],
    ids=["rejection", "noop"],
)
def test_a_replayed_rejection_or_noop_counts_its_patch_once(
    status: str, code: str, figures: dict[str, int]
) -> None:
    """commit.lua answers a replay of a rejection or noop with that same outcome: one
    patch decided, counted once, as a replayed commit (``duplicate``) is."""
    run = clean()
    first, again = run.retried("hot-1", "hot-1-4", "hot", 4)
    run.say(first, "hot-1-4", "hot", status, 4, code)
    run.say(again, "hot-1-4", "hot", status, 4, code)
    passes(verify(run), recovered=1, attempted=22, applied=19, **figures)
