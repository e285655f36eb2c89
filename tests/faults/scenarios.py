"""The fault scenarios of FAULT-PLAN section 5, each one run: warm-up load, the fault,
heal, more load, quiesce, then the checker on the history and the server's state.

Each returns a ``Row``: the checker's verdict and figures plus the scenario's own (how
often its fault fired: a scenario that injected nothing fails). ``patches`` is how many
acknowledged submissions a run makes at least (the full suite: 10,000).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from patchlog.streams.keys import EXECUTE, NORMALIZE
from tests.faults.checker import check
from tests.faults.clients import Load, Submission
from tests.faults.harness import Harness, Plan, harness
from tests.faults.history import save
from tests.faults.row import Figure, Row
from tests.faults.snapshot import streams_of

__all__ = ["SCENARIOS", "run"]

Fault = Callable[[Harness, Load, int], Awaitable[dict[str, Figure]]]


async def run(
    name: str,
    folder: Path,
    kind: str,
    plan: Plan,
    patches: int,
    fault: Fault,
    *,
    rate: float = 300.0,
    fires: bool = True,
) -> Row:
    """One scenario: the load until a third of ``patches`` is acknowledged, ``fault``,
    the load until all are, quiesce, check. ``fires``: the failpoints of ``plan`` must
    have fired (else the row fails)."""
    async with harness(folder, kind, plan) as h:
        load = Load(h.server.url, h.settings.keys, rate=rate)
        started = time.monotonic()
        load.start()
        try:
            within = 3 * patches / rate + 60
            await load.until_acked(patches // 3, within)
            figures = await fault(h, load, patches)
            await load.until_acked(patches, within)
        finally:
            await load.stop()
        quiet = await h.quiesce()
        state = await h.state()
        save(load.history, folder / "history.jsonl")
        row = check(name, load.history, state, max_deliveries=h.settings.max_deliveries)
        row.figures.update(figures)
        fired = h.fired()
        for point, count in sorted(fired.items()):
            row.figures[f"fired {point}"] = count
        if fires and plan.failpoints:
            row.check(sum(fired.values()) > 0, "no failpoint fired: nothing was injected")
        crashes = h.crashes()
        row.check(not crashes, f"stage processes exited by themselves: {crashes[:5]}")
        row.figures.update(
            quiesce_s=round(quiet, 1), run_s=round(time.monotonic() - started, 1), server=kind
        )
    return row


async def _nothing(h: Harness, load: Load, patches: int) -> dict[str, Figure]:
    """The fault is armed from the start (failpoints): let the load run."""
    return {}


async def _first_apply_after(h: Harness, since_ms: int, within: float = 60.0) -> float:
    """Seconds from ``since_ms`` (wall clock) to the first revision committed after it."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        got: Any = await h.redis.xrange(h.settings.keys.revisions, f"{since_ms + 1}", "+", count=1)
        if got:
            return (int(got[0][0].split(b"-")[0]) - since_ms) / 1000
        await asyncio.sleep(0.02)
    raise TimeoutError(f"no revision committed within {within} s of healing")


# -- F1, F2, F3: processes killed at failpoints ---------------------------------------------


def f1(folder: Path, kind: str, patches: int) -> Awaitable[Row]:
    """kill -9 of normalize workers after a read, before and after the forward script."""
    rule = "p=0.01"
    plan = Plan(
        failpoints={
            NORMALIZE: ",".join(
                f"normalize.{p}:{rule}" for p in ("after_read", "before_forward", "after_forward")
            )
        }
    )
    return run("F1", folder, kind, plan, patches, _nothing)


def f2(folder: Path, kind: str, patches: int) -> Awaitable[Row]:
    """kill -9 of execute workers after a read, before and after a commit script (with
    chunks of 16 a later chunk of the batch is still undecided: mid-batch)."""
    rule = "p=0.01"
    plan = Plan(
        failpoints={
            EXECUTE: ",".join(
                f"execute.{p}:{rule}" for p in ("after_read", "before_commit", "after_commit")
            )
        },
        settings={"commit_chunk": 16},
    )

    async def figures(h: Harness, load: Load, patches: int) -> dict[str, Figure]:
        return {"claimed": h.log_sum("execute-*", "claimed entries of a dead worker", "count")}

    return run("F2", folder, kind, plan, patches, figures)


def f2p(folder: Path, kind: str, patches: int) -> Awaitable[Row]:
    """F2 with the execute stage in 4 partitions over its 2 workers: a worker killed
    mid-batch comes back as the same member and takes its partitions up again, the
    entries in hand re-read from its own pending lists."""
    rule = "p=0.01"
    plan = Plan(
        failpoints={
            EXECUTE: ",".join(
                f"execute.{p}:{rule}" for p in ("after_read", "before_commit", "after_commit")
            )
        },
        settings={"commit_chunk": 16, "partitions": 4},
    )

    async def figures(h: Harness, load: Load, patches: int) -> dict[str, Figure]:
        return {"partitions_taken": h.log_count('"partition taken"')}

    return run("F2p", folder, kind, plan, patches, figures)


def f3(folder: Path, kind: str, patches: int) -> Awaitable[Row]:
    """kill -9 of the projector between writing files and moving its checkpoint."""
    plan = Plan(failpoints={"projector": "projector.after_write:p=0.05"})
    return run("F3", folder, kind, plan, patches, _nothing)


# -- F4, F6, F7: the server killed, stopped, paused ------------------------------------------


async def _pel(h: Harness) -> dict[str, list[tuple[bytes, bytes, int]]]:
    keys = h.settings.keys
    out: dict[str, list[tuple[bytes, bytes, int]]] = {}
    for stream, group in streams_of(keys):
        rows: Any = await h.redis.xpending_range(stream, group, "-", "+", 100_000)
        out[group] = sorted(
            out.get(group, [])
            + [(r["message_id"], r["consumer"], int(r["times_delivered"])) for r in rows]
        )
    return out


async def _f4_fault(h: Harness, load: Load, patches: int) -> dict[str, Figure]:
    """Twice: freeze the stages, note every pending entry and its delivery count, kill -9
    the server, restart it from its AOF, compare, let the stages go on."""
    restarts: list[float] = []
    pel_entries = 0
    stages = [p for p in h.procs if p.stage in (NORMALIZE, EXECUTE)]
    for _ in range(2):
        for p in stages:
            h.send(p.name, signal.SIGSTOP)
        await asyncio.sleep(0.3)
        before = await _pel(h)
        await h.kill_server()
        restarts.append(await h.restart_server())
        after = await _pel(h)
        if after != before:
            raise AssertionError(f"pending entries changed over the restart: {before} {after}")
        pel_entries += sum(len(v) for v in before.values())
        for p in stages:
            h.send(p.name, signal.SIGCONT)
        await load.until_acked(load.acked + patches // 6, 3 * patches / load.rate + 60)
    return {
        "server_kills": len(restarts),
        "restart_s": round(max(restarts), 2),
        "pel_entries_compared": pel_entries,
    }


def f4(folder: Path, kind: str, patches: int) -> Awaitable[Row]:
    """kill -9 of the server under ``appendfsync always``, restarted from its AOF."""
    return run("F4", folder, kind, Plan(), patches, _f4_fault)


async def _f6_fault(h: Harness, load: Load, patches: int) -> dict[str, Figure]:
    """SIGSTOP the server for twice the clients' socket timeout, then SIGCONT."""
    stopped = 2 * load.socket_timeout + 0.5
    h.server_signal(signal.SIGSTOP)
    await asyncio.sleep(stopped)
    h.server_signal(signal.SIGCONT)
    healed = time.time_ns() // 1_000_000
    return {"stopped_s": stopped, "recovery_s": round(await _first_apply_after(h, healed), 2)}


def f6(folder: Path, kind: str, patches: int) -> Awaitable[Row]:
    """The server stopped (SIGSTOP) longer than every client's timeout."""
    return run("F6", folder, kind, Plan(), patches, _f6_fault)


async def _f7_fault(h: Harness, load: Load, patches: int) -> dict[str, Figure]:
    """CLIENT PAUSE 3000 WRITE (scripts wait; reads go on), then ALL."""
    paused = time.time_ns() // 1_000_000
    await h.redis.client_pause(3000, all=False)
    await asyncio.sleep(3.5)
    await h.redis.client_pause(1000, all=True)
    await asyncio.sleep(1.5)
    return {"resumed_s": round(await _first_apply_after(h, paused + 4500), 2)}


def f7(folder: Path, kind: str, patches: int) -> Awaitable[Row]:
    """Writes paused on the server, then everything."""
    return run("F7", folder, kind, Plan(), patches, _f7_fault)


# -- F9, F10: a zombie worker, a poison patch ------------------------------------------------


async def _f9_fault(h: Harness, load: Load, patches: int) -> dict[str, Figure]:
    """SIGSTOP execute-1 while it holds entries; once they are claimed, SIGCONT it."""
    keys = h.settings.keys
    for _ in range(200):  # catch it with entries in hand
        h.send("execute-1", signal.SIGSTOP)
        held: Any = await h.redis.xpending_range(
            keys.normalized, EXECUTE, "-", "+", 1000, consumername="execute-1"
        )
        if held:
            break
        h.send("execute-1", signal.SIGCONT)
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("execute-1 never held an entry")
    stopped = time.monotonic()
    while True:
        left: Any = await h.redis.xpending_range(
            keys.normalized, EXECUTE, "-", "+", 1000, consumername="execute-1"
        )
        if not left:
            break
        if time.monotonic() - stopped > 60:
            raise AssertionError("the stopped worker's entries were never claimed")
        await asyncio.sleep(0.1)
    claimed_s = time.monotonic() - stopped
    h.send("execute-1", signal.SIGCONT)
    await asyncio.sleep(3)  # the zombie wakes, commits what it had decided, is fenced
    return {
        "held": len(held),
        "claim_s": round(claimed_s, 1),
        "zombie_fenced": h.log_sum("execute-1", "batch", "fenced"),
    }


def f9(folder: Path, kind: str, patches: int) -> Awaitable[Row]:
    """A zombie execute worker: stopped holding entries, claimed from, continued."""
    return run("F9", folder, kind, Plan(), patches, _f9_fault)


async def _f10_fault(h: Harness, load: Load, patches: int) -> dict[str, Figure]:
    """A poison patch: valid for normalize, but its id record is damaged, so that every
    commit script carrying it fails before its first write."""
    keys = h.settings.keys
    poison = Submission("poison-1", "hot-0", 0, b'[{"op":"insert","at":1,"lines":["poison"]}]')
    await h.redis.set(keys.patch_id(poison.id), "not a list")
    sent = time.time_ns() // 1_000_000
    client = load.client(own_retries=False)
    try:
        entry = await load.submit(client, "poison", poison)
        start = time.monotonic()
        while not await h.redis.xlen(keys.dead):
            if time.monotonic() - start > 60:
                raise AssertionError("the poison patch was never dead-lettered")
            await asyncio.sleep(0.1)
        dead_s = time.monotonic() - start
        await load.told(client, "poison", poison, entry)
    finally:
        await client.aclose()
    after: Any = await h.redis.xrange(keys.revisions, f"{sent}", "+")
    same_doc = sum(1 for _, f in after if f[b"doc"] == b"hot-0")
    if not same_doc:
        raise AssertionError("no patch of the poisoned document committed after it")
    return {"dead_s": round(dead_s, 1), "same_doc_commits_after": same_doc}


async def f10(folder: Path, kind: str, patches: int) -> Row:
    """A poison patch goes to patchlog:dead after its deliveries; the others flow."""
    row = await run("F10", folder, kind, Plan(), patches, _f10_fault)
    row.check(row.figures.get("dead") == 1, f"{row.figures.get('dead')} dead letters, not 1")
    return row


# -- F11: the same patch again and again ----------------------------------------------------


async def _f11_fault(h: Harness, load: Load, patches: int) -> dict[str, Figure]:
    """Each of 20 patches: 5 times one after another, 5 at once from two clients, 5 more
    after a kill -9 and restart of the server; then its id once with another payload.
    Every submission waits for its own outcome."""
    a, b = load.client(own_retries=False), load.client(own_retries=True)
    sent: list[tuple[Submission, str, str]] = []  # (patch, entry, client)

    def patch(j: int, text: str) -> Submission:
        ops = f'[{{"op":"insert","at":1,"lines":["{text}"]}}]'.encode()
        return Submission(f"dup-{j}", f"dup-{j % 4}", 0, ops)

    subs = [patch(j, f"dup {j}") for j in range(20)]
    try:
        for s in subs:
            sent += [(s, await load.submit(a, "dup-a", s), "dup-a") for _ in range(5)]
            procs = ["dup-a", "dup-b", "dup-a", "dup-b", "dup-b"]
            clients = [a, b, a, b, b]
            got = await asyncio.gather(
                *(load.submit(c, p, s) for c, p in zip(clients, procs, strict=True))
            )
            sent += [(s, entry, p) for entry, p in zip(got, procs, strict=True)]
        await h.kill_server()
        await h.restart_server()
        for s in subs:
            sent += [(s, await load.submit(b, "dup-b", s), "dup-b") for _ in range(5)]
        reused = [patch(j, f"another payload {j}") for j in range(20)]
        for s in reused:
            sent.append((s, await load.submit(a, "dup-reuse", s), "dup-reuse"))
        await asyncio.gather(*(load.told(a, p, s, e) for s, e, p in sent if e))
    finally:
        await a.aclose()
        await b.aclose()
    told = [e for e in load.history if e.kind.value == "told" and e.proc.startswith("dup-")]
    return {
        "dup_submissions": len(sent),
        "dup_told": len(told),
        "dup_told_duplicate": sum(e.status == "duplicate" for e in told),
        "reuse_told_id_reuse": sum(e.code == "id_reuse" for e in told if e.proc == "dup-reuse"),
    }


async def f11(folder: Path, kind: str, patches: int) -> Row:
    """Duplicate submissions, sequential and concurrent, across a server restart, and an
    id reused with another payload: each patch applied once, each replay answered."""
    row = await run("F11", folder, kind, Plan(), patches, _f11_fault)
    told, sent = row.figures.get("dup_told"), row.figures.get("dup_submissions")
    row.check(told == sent, f"{told} of {sent} duplicate submissions were told an outcome")
    # 15 submissions of each of 20 patches: the first committed, 14 replays.
    row.check(row.figures.get("dup_told_duplicate") == 280, "not every replay was a duplicate")
    row.check(row.figures.get("reuse_told_id_reuse") == 20, "a reused id was not id_reuse")
    return row


SCENARIOS: dict[str, Callable[[Path, str, int], Awaitable[Row]]] = {
    "F1": f1,
    "F2": f2,
    "F2p": f2p,
    "F3": f3,
    "F4": f4,
    "F6": f6,
    "F7": f7,
    "F9": f9,
    "F10": f10,
    "F11": f11,
}
"""Scenario id -> its run(folder, server kind, patches)."""
