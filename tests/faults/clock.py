"""Fault scenario F12 of FAULT-PLAN section 5: clocks.

Two extra clients run under libfaketime, one a day behind and one a day ahead, each
submitting a chain to its own document beside the suite's usual load. Mid-run the
server's clock (libfaketime too, through a timestamp file it reads on every call) jumps
forward an hour, again up to ``JUMPS`` times until a claim is seen: every lease (SET PX)
expires at once, so live workers' entries are claimed by others while they still work on
them. Then the clock steps back to the true time, as NTP would correct it, and the load
runs on.

What must hold: the checker's guarantees (no patch applied twice, none lost, the skewed
clients' chains committed in issue order); ingress ids never go backwards (an entry added
after another was acknowledged has the greater id, across both steps); the skewed
clients' entries carry the server's time, not theirs. Figures: the jump, the spurious
claims and the commits they fenced.

Needs Debian's package ``faketime`` (libfaketime); without it the scenario fails. The
workers run on the true clock: only the server and the two clients are faked.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import dataclasses
import itertools
import os
import signal
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from patchlog.consumers.runner import parse_id
from patchlog.streams.keys import EXECUTE, NORMALIZE, Keys
from patchlog.streams.server import EmbeddedServer
from tests.faults.checker import check
from tests.faults.clients import Load, Submission
from tests.faults.harness import Harness, Plan
from tests.faults.history import Event, Kind, load, save
from tests.faults.row import Figure, Row
from tests.faults.snapshot import Applied, State
from tests.integration.helpers import binary_for

__all__ = ["CLOCK", "PACKAGE", "f12", "ids_backwards", "libfaketime"]

PACKAGE = "faketime"
"""The Debian package that brings libfaketime (through its dependency ``libfaketime``)."""
_LIBRARY_GLOBS = ("/usr/lib/*/faketime/libfaketime.so.1", "/usr/lib/faketime/libfaketime.so.1",
                  "/usr/local/lib/faketime/libfaketime.so.1")  # fmt: skip
JUMP_S = 3600
"""Each forward jump of the server's clock."""
JUMPS = 5
"""Forward jumps at most, until one causes a claim."""
SKEWS = {"skew-behind": "-1d", "skew-ahead": "+1d"}
"""Client -> its libfaketime offset."""
DAY_S = 86_400
RATE = 300.0
"""Submissions per second in all, as in the other scenarios."""
SKEWED_RATE = 25.0
"""Submissions per second of each skewed client (the suite's load makes up the rest)."""
CLAIMED = "claimed entries of a dead worker"
STEP_FAILED = '"event":"worker step failed"'
"""A worker's log line for an error its step did not expect (it goes on after a pause)."""
_MARGIN_NS = 2_000_000
"""Two events of different processes closer than this are not ordered by the check:
their clocks are mapped onto one another, which is exact only to within microseconds."""
_ROOT = Path(__file__).resolve().parents[2]
_JSON = msgspec.json.Encoder()
_CLOCK = msgspec.json.Decoder(dict[str, int])


def libfaketime() -> Path | None:
    """The installed libfaketime, or ``None``."""
    for pattern in _LIBRARY_GLOBS:
        found = sorted(Path("/").glob(pattern.lstrip("/")))
        if found:
            return found[0]
    return None


def _faked(preload: Path, **faketime: str) -> dict[str, str]:
    """The variables that put a process under libfaketime; the monotonic clock stays
    true, so timeouts and backoff keep their length."""
    return {"LD_PRELOAD": str(preload), "FAKETIME_DONT_FAKE_MONOTONIC": "1", **faketime}


async def _probe(binary: Path, env: dict[str, str]) -> str | None:
    """Why ``binary`` cannot run under libfaketime, or ``None`` when it can."""
    proc = await asyncio.create_subprocess_exec(
        str(binary), "--version", env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 5)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        out = b"(no answer within 5 s)"
    if proc.returncode == 0 and b"libfaketime" not in out:
        return None
    # Debian's redis-server is built with jemalloc, whose start-up clock_gettime calls
    # libfaketime cannot serve (wolfcw/libfaketime#130): the server hangs.
    return (
        f"{binary} does not run under libfaketime ({out.decode(errors='replace').strip()[-200:]});"
        " a server built with jemalloc cannot (wolfcw/libfaketime#130)"
    )


class _FakedServer(EmbeddedServer):
    """The harness's server, started under the libfaketime variables ``env`` (its
    restarts too)."""

    def __init__(self, *args: Any, env: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.env = env

    def command(self) -> list[str]:
        """``env`` sets the variables for the server alone (it execs, keeping the pid)."""
        return ["env", *(f"{k}={v}" for k, v in self.env.items()), *super().command()]


class ClockHarness(Harness):
    """The harness, with a server whose clock the scenario sets."""

    def __init__(self, folder: Path, kind: str, plan: Plan, preload: Path) -> None:
        super().__init__(folder, kind, plan)
        folder.mkdir(parents=True, exist_ok=True)
        self.clock_file = folder / "server-clock"
        self.offsets: list[tuple[int, int]] = []
        """(wall clock ns when set, offset s) of every clock setting, in order."""
        self.set_clock(0)
        env = _faked(preload, FAKETIME_TIMESTAMP_FILE=str(self.clock_file), FAKETIME_NO_CACHE="1")
        self.server = _FakedServer(
            folder / "server", port=self.port, binary=binary_for(kind), fsync=plan.fsync, env=env
        )

    def _env(self, stage: str) -> dict[str, str]:
        # The workers keep the true clock, whatever the suite itself runs under.
        env = super()._env(stage)
        return {k: v for k, v in env.items() if k != "LD_PRELOAD" and not k.startswith("FAKETIME")}

    def set_clock(self, offset_s: int) -> None:
        """Set the server's clock ``offset_s`` ahead of the true one (from its next call)."""
        temp = self.clock_file.with_suffix(".new")
        temp.write_text(f"{offset_s:+d}\n")
        temp.replace(self.clock_file)  # never a half-written offset
        self.offsets.append((time.time_ns(), offset_s))

    async def server_ms(self) -> int:
        """The server's clock (TIME), ms."""
        s, us = await self.redis.time()
        return int(s) * 1000 + int(us) // 1000

    def claims(self) -> int:
        """Entries claimed from a worker whose lease had expired, both stages."""
        return sum(self.log_sum(f"{stage}-*", CLAIMED, "count") for stage in (NORMALIZE, EXECUTE))


# -- the skewed clients ---------------------------------------------------------------------


@dataclasses.dataclass
class _Skewed:
    """A client process under libfaketime and the history it leaves."""

    proc: str
    offset: str
    out: Path
    process: asyncio.subprocess.Process | None = None

    @property
    def clock(self) -> Path:
        """Its clock reading, taken as it ended."""
        return self.out.with_suffix(".clock")


async def _spawn(c: _Skewed, h: ClockHarness, preload: Path, within: float) -> None:
    """Start the client and wait (bounded) until its first submission is acknowledged."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PATCHLOG_", "FAKETIME"))}
    env.update(_faked(preload, FAKETIME=c.offset))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_ROOT), env.get("PYTHONPATH")]))
    with (h.folder / "logs" / f"{c.proc}.log").open("ab") as log:
        c.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.faults.clock", "client", "--url", h.server.url,
            "--namespace", h.settings.keys.namespace, "--proc", c.proc, "--out", str(c.out),
            "--within", str(within), "--rate", str(SKEWED_RATE),
            cwd=_ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=log,
        )  # fmt: skip
    assert c.process.stdout is not None
    line = await asyncio.wait_for(c.process.stdout.readline(), 30)
    if line != b"started\n":
        raise RuntimeError(f"{c.proc} did not start (see its log): {line!r}")


async def _finish(clients: Sequence[_Skewed], within: float = 40.0) -> None:
    """Stop the clients (SIGTERM: each ends its submission in hand); wait (bounded),
    else kill them."""
    for c in clients:
        if c.process is not None and c.process.returncode is None:
            c.process.terminate()
    for c in clients:
        if c.process is None:
            continue
        try:
            await asyncio.wait_for(c.process.wait(), within)
        except TimeoutError:
            c.process.kill()
            await c.process.wait()


def _merged(c: _Skewed) -> tuple[list[Event], int]:
    """The client's history on the harness's clock, and its clock's skew (ns): each
    clock's offset from the monotonic clock, which libfaketime leaves alone and which
    is one clock for every process of the machine."""
    theirs = _CLOCK.decode(c.clock.read_bytes())
    skew = (theirs["wall"] - theirs["mono"]) - (time.time_ns() - time.monotonic_ns())
    events = [msgspec.structs.replace(e, t=e.t - skew) for e in load(c.out)]
    return events, skew


async def _client(args: argparse.Namespace) -> Load:
    """A chained client (its k-th patch on base k - 1) on the document named after it,
    until SIGTERM or ``--within`` seconds; returns it, its history in hand."""
    client = Load(args.url, Keys(args.namespace), chained=0, hot=0, rate=args.rate)

    def stop() -> None:
        client.stopped_at = time.monotonic()
        client.stopping.set()

    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop)
    redis = client.client(own_retries=args.proc.endswith("ahead"))
    waits: list[asyncio.Task[None]] = []
    deadline = time.monotonic() + args.within
    try:
        k = 0
        while not client.stopping.is_set() and time.monotonic() < deadline:
            k += 1
            ops = _JSON.encode([{"op": "insert", "at": k, "lines": [f"{args.proc} line {k}"]}])
            s = Submission(f"{args.proc}-{k}", f"own-{args.proc}", k - 1, ops, seq=k)
            entry = await client.submit(redis, args.proc, s)
            if not entry:
                break
            if k == 1:
                sys.stdout.write("started\n")
                sys.stdout.flush()
            if k % client.told_every == 0:
                waits.append(asyncio.create_task(client.told(redis, args.proc, s, entry)))
            await asyncio.sleep(1 / args.rate)
    finally:
        await asyncio.gather(*waits, return_exceptions=True)
        await redis.aclose()
    return client


# -- the fault ------------------------------------------------------------------------------


async def _claimed(h: ClockHarness, before: int, polls: int) -> bool:
    """Whether a claim is logged within ``polls`` looks, 0.1 s apart."""
    for _ in range(polls):
        if h.claims() > before:
            return True
        await asyncio.sleep(0.1)
    return h.claims() > before


async def _jump(h: ClockHarness) -> dict[str, Figure]:
    """Jump the server's clock forward until a jump causes a claim (``JUMPS`` at most),
    then step it back to the true time."""
    before_ms = await h.server_ms()
    claims_before = h.claims()
    jumps = 0
    # A lease outlives a jump by at most one renewal (a third of lease_ms); a claim sweep
    # runs every claim_interval: each jump waits for a few of both.
    polls = round((3 * h.settings.claim_interval + h.settings.lease_ms / 1000) / 0.1)
    for jumps in range(1, JUMPS + 1):
        h.set_clock(jumps * JUMP_S)
        if await _claimed(h, claims_before, polls):
            break
    jumped_ms = await h.server_ms()
    await asyncio.sleep(1.0)  # let the claimers and their victims commit on the jumped clock
    h.set_clock(0)
    # libfaketime takes the new offset up at one of the server's next calls, not always
    # the very next one (seen once: the first read after the step was still ahead).
    back_ms = await h.server_ms()
    for _ in range(50):
        if back_ms < jumped_ms:
            break
        await asyncio.sleep(0.1)
        back_ms = await h.server_ms()
    return {
        "claims_before_jump": claims_before,
        "jumps": jumps,
        "jump_s": round((jumped_ms - before_ms) / 1000),
        "step_back_s": round((back_ms - jumped_ms) / 1000),
    }


# -- checks ---------------------------------------------------------------------------------


def ids_backwards(events: Sequence[Event]) -> list[str]:
    """Acknowledged entries whose id is not above that of every entry acknowledged
    before their submission was sent (by any client): ids that went backwards."""
    sent: dict[tuple[str, str], int] = {}
    oks: list[tuple[int, int, tuple[int, int], Event]] = []  # (ok t, invoke t, id, event)
    for e in sorted(events, key=lambda e: e.t):
        if e.kind is Kind.INVOKE:
            sent[e.proc, e.id] = e.t
        elif e.kind is Kind.OK:
            oks.append((e.t, sent.get((e.proc, e.id), e.t), parse_id(e.entry), e))
    oks.sort(key=lambda o: o[0])
    times = [o[0] for o in oks]
    highest: list[tuple[int, int]] = []  # highest id among the first i acknowledged
    for o in oks:
        highest.append(max(o[2], highest[-1]) if highest else o[2])
    out = []
    for _, invoked, stream_id, e in oks:
        i = bisect.bisect_left(times, invoked - _MARGIN_NS)
        if i and stream_id <= highest[i - 1]:
            ms, seq = highest[i - 1]
            out.append(f"{e.proc} got entry {e.entry} for {e.id}, after {ms}-{seq} was")
    return out


def _real_ms(at: int, offsets: Sequence[tuple[int, int]]) -> int:
    """A server-clock time on the true clock: less the offset that was in effect then
    (the one that puts it inside the period it was set for; offsets are hours apart)."""
    ends = [t for t, _ in offsets[1:]] + [2**63]
    for (start, offset), end in zip(offsets, ends, strict=True):
        real = at - offset * 1000
        if start // 1_000_000 - 1000 <= real <= end // 1_000_000 + 1000:
            return real
    return at


def _latencies(
    row: Row, events: Sequence[Event], h: ClockHarness, applied: Sequence[Applied]
) -> None:
    """Submit-to-applied latency on the true clock (the checker's own is an hour off for
    every revision committed while the server's clock was ahead)."""
    first: dict[str, int] = {}
    for e in events:
        if e.kind is Kind.INVOKE:
            first.setdefault(e.id, e.t)
    ms = sorted(_real_ms(a.at, h.offsets) - first[a.id] / 1e6 for a in applied if a.id in first)
    if len(ms) > 1:
        cuts = statistics.quantiles(ms, n=100, method="inclusive")
        row.figures.update(p50_ms=round(cuts[49], 1), p99_ms=round(cuts[98], 1))


# -- the scenario ---------------------------------------------------------------------------


async def f12(folder: Path, kind: str, patches: int) -> Row:
    """Skewed clients and a server clock jumped forward, then back, mid-run."""
    preload = libfaketime()
    if preload is None:
        row = Row("F12", {"server": kind})
        row.violations.append(
            f"libfaketime is not installed: F12 needs Debian's package {PACKAGE!r} "
            f"(apt-get install -y {PACKAGE})"
        )
        return row
    problem = await _probe(binary_for(kind), _faked(preload, FAKETIME="+0"))
    if problem is not None:
        return Row("F12", {"server": kind}, [problem])
    h = ClockHarness(folder, kind, Plan(), preload)
    clients = [_Skewed(proc, offset, folder / f"{proc}.jsonl") for proc, offset in SKEWS.items()]
    try:
        await h.start()
        return await _scenario(h, clients, preload, patches)
    finally:
        await _finish(clients)
        await h.close()


async def _scenario(h: ClockHarness, clients: list[_Skewed], preload: Path, patches: int) -> Row:
    start_ms = await h.server_ms()
    load = Load(h.server.url, h.settings.keys, rate=RATE - len(clients) * SKEWED_RATE)
    within = 3 * patches / load.rate + 60
    started = time.monotonic()
    load.start()
    try:
        for c in clients:
            await _spawn(c, h, preload, 2 * within)
        await load.until_acked(patches // 3, within)
        figures = await _jump(h)
        await load.until_acked(patches, within)
    finally:
        await load.stop()
        await _finish(clients)
    quiet = await h.quiesce()
    state = await h.state()
    events = list(load.history)
    skews: dict[str, int] = {}
    for c in clients:
        code = None if c.process is None else c.process.returncode
        if code != 0:
            raise RuntimeError(f"{c.proc} exited with {code} (see its log in {h.folder})")
        theirs, skews[c.proc] = _merged(c)
        events += theirs
    events.sort(key=lambda e: e.t)
    save(events, h.folder / "history.jsonl")
    row = check("F12", events, state, max_deliveries=h.settings.max_deliveries)
    row.figures.update(figures)
    _latencies(row, events, h, state.applied)
    _clock_checks(row, h, figures, events, state)
    _skew_checks(row, clients, skews, events, state, start_ms)
    row.figures.update(
        quiesce_s=round(quiet, 1), run_s=round(time.monotonic() - started, 1), server=h.kind
    )
    return row


def _clock_checks(
    row: Row, h: ClockHarness, figures: dict[str, Figure], events: Sequence[Event], state: State
) -> None:
    """The jump's own checks and figures: it happened, it caused claims, nothing else
    failed, ids never went backwards."""
    claims = h.claims() - int(figures["claims_before_jump"])
    row.figures["spurious_claims"] = claims
    row.figures["fenced"] = sum(
        h.log_sum(f"{s}-*", "batch", "fenced") for s in (NORMALIZE, EXECUTE)
    )
    # Forward by every jump (and the time the jumps took), back by as much (less the
    # second it ran ahead after the last one).
    ahead = int(figures["jumps"]) * JUMP_S
    row.check(int(figures["jump_s"]) >= ahead, f"the server's clock jumped {figures['jump_s']} s")
    row.check(
        int(figures["step_back_s"]) <= 10 - ahead,
        f"the server's clock stepped {figures['step_back_s']} s back, not {ahead}",
    )
    row.check(claims > 0, "the clock jump caused no claim")
    exits = [(p.name, p.exits) for p in h.procs if p.exits]
    row.check(not exits, f"stage processes exited (none was stopped): {exits}")
    failed = h.log_count(STEP_FAILED)
    row.figures["steps_failed"] = failed
    row.check(not failed, f"a stage's step failed {failed} times (an unexpected error, logged)")
    stepped_back = h.offsets[-1][0]
    after = sum(1 for e in events if e.kind is Kind.OK and e.t > stepped_back)
    row.figures["acked_after_step_back"] = after
    row.check(after > 0, "no submission was acknowledged after the clock stepped back")
    # The server's own time went back (each revision's 'at'); its ids must not have.
    ats = [a.at for a in state.applied]
    row.figures["revision_at_back"] = sum(1 for a, b in itertools.pairwise(ats) if b < a)
    backwards = ids_backwards(events)
    row.figures["ids_backwards"] = len(backwards)
    row.violations += backwards[:5]


def _skew_checks(
    row: Row,
    clients: Sequence[_Skewed],
    skews: dict[str, int],
    events: Sequence[Event],
    state: State,
    start_ms: int,
) -> None:
    """The skewed clients: their clocks a day off, their chains applied, their entries
    on the server's time (at most every jump ahead of its start)."""
    highest_ms = start_ms + (JUMPS * JUMP_S + 600) * 1000
    for c in clients:
        name = c.proc.removeprefix("skew-")
        skew_s = round(skews[c.proc] / 1e9)
        expected = DAY_S if c.offset.startswith("+") else -DAY_S
        row.figures[f"{name}_skew_s"] = skew_s
        row.check(abs(skew_s - expected) < 60, f"{c.proc}'s clock is {skew_s} s off, not a day")
        ok = [e for e in events if e.proc == c.proc and e.kind is Kind.OK]
        mine = [a for a in state.applied if a.doc == f"own-{c.proc}"]
        row.figures[f"{name}_applied"] = len(mine)
        row.check(bool(mine), f"nothing of {c.proc} was applied")
        off = [e.entry for e in ok if not start_ms - 1000 <= parse_id(e.entry)[0] <= highest_ms]
        row.check(not off, f"{c.proc}'s entries off the server's clock: {off[:3]}")


CLOCK = {"F12": f12}
"""Scenario id -> its run(folder, server kind, patches)."""


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m tests.faults.clock client ...``: one skewed client (run under
    libfaketime by the scenario)."""
    parser = argparse.ArgumentParser(prog="python -m tests.faults.clock")
    parser.add_argument("role", choices=["client"])
    for name in ("--url", "--namespace", "--proc", "--out"):
        parser.add_argument(name, required=True)
    parser.add_argument("--within", type=float, required=True)
    parser.add_argument("--rate", type=float, required=True)
    args = parser.parse_args(argv)
    client = asyncio.run(_client(args))
    out = Path(args.out)
    save(client.history, out)
    clock = {"wall": time.time_ns(), "mono": time.monotonic_ns()}
    out.with_suffix(".clock").write_bytes(_JSON.encode(clock))


if __name__ == "__main__":
    main()
