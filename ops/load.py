"""The bench's offered load: scenarios, the order of a bench's runs and their rates,
simulated clients and their submissions.

Clients submit with plain pipelined XADDs over one connection (``Appender``), so that
the load generator, which shares the machine with the pipeline it measures, costs as
little CPU as a client can; outcomes are tailed from the outcomes stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import hiredis
import msgspec
from redis.asyncio import Redis

from patchlog.ops.randomops import ops_json, spread_ops, stale_base
from patchlog.projections.diff import render_diff
from patchlog.projections.patch import apply, normalize
from patchlog.streams.schema import Insert
from patchlog.streams.settings import Settings

__all__ = [
    "SCENARIOS",
    "Appender",
    "Load",
    "Pacer",
    "Scenario",
    "offered_rate",
    "plan_runs",
    "seed",
    "tail",
]


class Scenario(msgspec.Struct, frozen=True):
    """A workload: documents, their size, clients, and how patches are written."""

    name: str
    docs: int
    lines: int
    clients: int
    stale: float = 0.0
    """Share of patches based a revision or two behind the head the client saw."""
    diff: bool = False
    """Send unified diffs instead of ops."""
    share: float | None = None
    """Open loop at this share of the pipeline's maximum (``offered_rate``); ``None``:
    closed loop, or the bench's ``--rate``."""


SCENARIOS = {
    "default": Scenario("default", docs=1000, lines=100, clients=20),
    "hot": Scenario("hot", docs=5, lines=100, clients=50, stale=0.3),
    "large": Scenario("large", docs=20, lines=100_000, clients=20),
    "diff": Scenario("diff", docs=1000, lines=100, clients=20, diff=True),
    "light": Scenario("light", docs=1000, lines=100, clients=20, share=0.25),
}


def plan_runs(
    names: Sequence[str], *, baselines: bool, rate: float | None
) -> list[tuple[str, bool]]:
    """The runs of a bench in order, as (scenario, naive): each scenario, and with
    ``baselines`` the naive pipeline right after patchlog's default.

    Raises ``ValueError`` for an unknown scenario, and for one that runs at a share of
    the maximum (``light``) with no maximum to take it from: neither a default run
    before it nor ``rate``.
    """
    for i, name in enumerate(names):
        if name not in SCENARIOS:
            raise ValueError(f"no scenario {name!r} (known: {', '.join(SCENARIOS)})")
        if SCENARIOS[name].share is not None and rate is None and "default" not in names[:i]:
            raise ValueError(
                f"the {name} scenario offers a share of the maximum throughput: run the "
                "default scenario before it (its committed/s is the maximum), or give --rate"
            )
    runs = [(name, False) for name in names]
    if baselines and "default" in names:
        runs.insert(list(names).index("default") + 1, ("default", True))
    return runs


def offered_rate(
    scenario: Scenario, rate: float | None, default: float | None
) -> tuple[float | None, str]:
    """A scenario's open-loop rate (``None``: closed loop) and, for one offered a share
    of the maximum, where the maximum came from: ``default``, the committed/s that the
    default scenario measured earlier in the same bench, if it ran, else ``rate``."""
    if scenario.share is None:
        return rate, ""
    if default is not None:
        maximum, source = default, "the default scenario's committed/s"
    elif rate is not None:
        maximum, source = rate, "--rate"
    else:
        raise ValueError(f"no maximum to offer {scenario.name} a share of")
    basis = f"{scenario.share:.0%} of {maximum:,.0f}/s ({source})"
    return round(maximum * scenario.share), basis


class Pacer:
    """Open loop: the slots to send to at each tick, the slots in turn, so many that
    they average ``rate`` a second (a rate below 200/s sends one every few ticks)."""

    STEP = 0.005
    """Seconds between two ticks."""

    def __init__(self, rate: float, slots: int) -> None:
        self.rate = rate
        self.slots = slots
        self.cursor = 0
        self.owed = 0.0  # patches due and not sent yet (a fraction)

    def tick(self) -> list[int]:
        """The slots to send to now."""
        self.owed += self.rate * self.STEP
        count = int(self.owed)
        self.owed -= count
        picks = [(self.cursor + k) % self.slots for k in range(count)]
        self.cursor = (self.cursor + count) % self.slots
        return picks


class Load:
    """Offered load: slots (client, document) with one patch in flight each."""

    def __init__(
        self,
        redis: Redis,
        settings: Settings,
        scenario: Scenario,
        seed: int,
        appender: Appender | None = None,
        *,
        fsynced: bool = False,
    ) -> None:
        self.redis = redis
        self.appender = appender
        self.fsynced = fsynced
        """Strict durability: a submission counts once the server fsynced it (WAITAOF)."""
        self.keys = settings.keys
        self.scenario = scenario
        self.rng = random.Random(seed)
        self.names = [f"bench-{i}" for i in range(scenario.docs)]
        slots = max(scenario.docs, scenario.clients)
        self.slots = [(i % scenario.clients, self.names[i % scenario.docs]) for i in range(slots)]
        self.head: dict[str, int] = dict.fromkeys(self.names, 1)
        self.content: dict[str, list[str]] = {}
        self.sent: dict[str, tuple[float, int]] = {}  # patch id -> (submit time, slot)
        self.latencies: list[float] = []
        self.seen: list[float] = []
        """Seconds from each outcome's ``at`` to the tail reading it."""
        self.counts: dict[str, int] = {}
        self.committed = 0
        self.submitted = 0
        self.measuring = False
        self.serial = 0
        self.pending_content: dict[str, list[str]] = {}  # diff scenario: patch id -> new

    def seed_fields(self, doc: str) -> dict[str, str]:
        if self.scenario.lines > 10_000:  # stays under the 4 MiB patch limit
            lines = [f"L{i}" for i in range(self.scenario.lines)]
        else:
            lines = [f"{doc} line {i} " + "x" * (i % 40) for i in range(self.scenario.lines)]
        self.content[doc] = lines
        return {"doc": doc, "base": "0", "id": f"seed-{doc}", "ops": ops_json(
            [Insert(at=1, lines=tuple(lines))])}  # fmt: skip

    def next_fields(self, slot: int) -> tuple[str, dict[str, str]]:
        """The next patch of ``slot``: its id and the fields of its XADD."""
        _, doc = self.slots[slot]
        self.serial += 1
        ops = spread_ops(self.rng, self.scenario.lines, self.serial)
        # never below revision 1, the seed: the documents exist from there on
        base = stale_base(self.rng, self.head[doc], share=self.scenario.stale, behind=2, floor=1)
        patch_id = f"b{self.serial}"
        fields = {"doc": doc, "base": str(base), "id": patch_id}
        if self.scenario.diff:
            old = self.content[doc]
            new = apply(old, normalize(ops, _LIMITS))
            fields["diff"] = render_diff(old, new, doc)
            self.pending_content[patch_id] = new
        else:
            fields["ops"] = ops_json(ops)
        return patch_id, fields

    async def submit(self, slots: list[int]) -> None:
        """Send the next patch of each slot (one pipelined write; none for no slot)."""
        if not slots:
            return
        batch = [(slot, *self.next_fields(slot)) for slot in slots]
        now = time.perf_counter()
        for slot, patch_id, _ in batch:
            self.sent[patch_id] = (now, slot)
        if self.appender is not None:
            await self.appender.xadd(
                self.keys.patches, [fields for _, _, fields in batch], fsynced=self.fsynced
            )
        else:
            async with self.redis.pipeline(transaction=False) as pipe:
                for _, _, fields in batch:
                    pipe.xadd(self.keys.patches, fields)  # type: ignore[arg-type]
                if self.fsynced:
                    pipe.execute_command("WAITAOF", 1, 0, _FSYNC_MS)
                replies = await pipe.execute()
            if self.fsynced:
                _check_fsynced(replies[-1])
        self.submitted += len(batch) if self.measuring else 0

    def settle(self, fields: dict[bytes, bytes], now: float, wall: float) -> int | None:
        """Record one outcome read at ``now`` (``perf_counter``) and ``wall`` (Unix s);
        return the slot that may send again."""
        patch_id = fields[b"id"].decode()
        sent = self.sent.pop(patch_id, None)
        if sent is None:
            return None
        started, slot = sent
        status = fields[b"status"].decode()
        code = fields.get(b"code", b"").decode()
        doc = fields[b"doc"].decode()
        rev = int(fields[b"rev"])
        self.head[doc] = max(self.head[doc], rev)
        if self.scenario.diff:
            new = self.pending_content.pop(patch_id, None)
            if status == "committed" and new is not None:
                self.content[doc] = new
        if self.measuring:
            key = status + (f":{code}" if code else "")
            self.counts[key] = self.counts.get(key, 0) + 1
            self.latencies.append(now - started)
            at = fields.get(b"at")
            if at is not None:
                self.seen.append(max(0.0, wall - int(at) / 1000))
            if status == "committed":
                self.committed += 1
        return slot


_LIMITS = Settings().limits
_FSYNC_MS = 5000  # how long a strict submission waits for its fsync, as ``Client`` does


def _check_fsynced(reply: Any) -> None:
    """Raise ``OSError`` unless a ``WAITAOF 1 0`` reply confirms the local fsync."""
    if not reply or int(reply[0]) < 1:
        raise OSError(f"submissions not fsynced within {_FSYNC_MS} ms (WAITAOF said {reply})")


async def tail(redis: Redis, stream: str, start: str, load: Load, stop: asyncio.Event,
               resend: asyncio.Queue[list[int]]) -> None:  # fmt: skip
    """Settle every outcome from ``start`` on until ``stop``; queue the freed slots."""
    cursor = start
    while not stop.is_set():
        reply: Any = await redis.xread({stream: cursor}, count=2000, block=100)
        if not reply:
            continue
        now, wall = time.perf_counter(), time.time()
        entries = reply[0][1]
        cursor = entries[-1][0]
        ready = [s for _, f in entries if (s := load.settle(f, now, wall)) is not None]
        if ready:
            await resend.put(ready)


async def seed(
    redis: Redis,
    settings: Settings,
    load: Load,
    *,
    alive: Callable[[], bool] = lambda: True,
    timeout: float = 300,
) -> None:
    """Create every document of the scenario through the pipeline, and wait for it.

    Raises ``TimeoutError`` after ``timeout`` seconds, ``RuntimeError`` as soon as
    ``alive()`` says a worker of the pipeline has exited.
    """
    async with redis.pipeline(transaction=False) as pipe:
        for doc in load.names:
            pipe.xadd(settings.keys.patches, load.seed_fields(doc))  # type: ignore[arg-type]
        await pipe.execute()
    deadline = time.monotonic() + timeout
    while True:
        async with redis.pipeline(transaction=False) as pipe:
            for doc in load.names:
                pipe.hget(settings.keys.doc(doc), "rev")
            revs = await pipe.execute()
        if all(r is not None for r in revs):
            return
        if not alive():
            raise RuntimeError("a worker of the pipeline exited while seeding")
        if time.monotonic() > deadline:
            raise TimeoutError("seeding the documents did not finish")
        await asyncio.sleep(0.1)


class Appender:
    """Pipelined XADDs over one plain connection to a ``redis://`` URL (no TLS), with a
    timeout on every exchange."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "redis":
            raise ValueError(f"{url}: the bench's clients speak plain redis:// only")
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 6379
        self.username = urllib.parse.unquote(parts.username or "")
        self.password = urllib.parse.unquote(parts.password or "")
        self.timeout = timeout
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.parser = hiredis.Reader()

    async def open(self) -> None:
        """Connect (and AUTH if the URL carries a password)."""
        self.reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), self.timeout
        )
        if self.password:
            auth = [self.username, self.password] if self.username else [self.password]
            await self._exchange(_command(b"AUTH", *(a.encode() for a in auth)), 1)

    async def close(self) -> None:
        """Close the connection."""
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(self.writer.wait_closed(), self.timeout)

    async def xadd(
        self, stream: str, batch: Sequence[Mapping[str, str]], *, fsynced: bool = False
    ) -> None:
        """Append every entry of ``batch`` to ``stream`` and, with ``fsynced``, wait for
        the server's fsync of them (``WAITAOF 1 0``); raises ``OSError`` on an error
        reply or an fsync not confirmed in time, ``TimeoutError``."""
        key = stream.encode()
        out = []
        for fields in batch:
            args = [b"XADD", key, b"*"]
            for name, value in fields.items():
                args += [name.encode(), value.encode()]
            out.append(_command(*args))
        if fsynced:
            out.append(_command(b"WAITAOF", b"1", b"0", b"%d" % _FSYNC_MS))
        last = await self._exchange(b"".join(out), len(out))
        if fsynced:
            _check_fsynced(last)

    async def _exchange(self, data: bytes, replies: int) -> Any:
        """Send ``data``, read ``replies`` replies; the last one."""
        if self.reader is None or self.writer is None:
            raise OSError("the appender is not open")
        self.writer.write(data)
        await asyncio.wait_for(self.writer.drain(), self.timeout)
        got = 0
        reply: Any = None
        while got < replies:
            reply = self.parser.gets()
            if reply is False:
                chunk = await asyncio.wait_for(self.reader.read(1 << 16), self.timeout)
                if not chunk:
                    raise OSError("the server closed the connection")
                self.parser.feed(chunk)
                continue
            if isinstance(reply, hiredis.ReplyError):
                raise OSError(f"the server refused a command: {reply}")
            got += 1
        return reply


def _command(*args: bytes) -> bytes:
    """One command in the Redis protocol (RESP)."""
    parts = [b"*%d\r\n" % len(args)]
    parts.extend(b"$%d\r\n%s\r\n" % (len(arg), arg) for arg in args)
    return b"".join(parts)
