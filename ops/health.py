"""The health prober: probe the server and every group, judge, append to the log.

Every ``health_interval`` seconds the probes run concurrently, each under its own
timeout; one that times out or fails makes the round ``degraded`` (never hangs it). Groups
are judged over the samples of the last ``health_window`` seconds (``ops.judge``); the
window is seeded from the results already in ``patchlog:health``, so a restarted prober
judges at once. One ``HealthResult`` per round is appended to ``patchlog:health``
(capped at ``health_cap`` entries).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import structlog
from redis.asyncio import Redis

from patchlog.consumers.partitions import worker_of
from patchlog.ops.groups import read_groups
from patchlog.ops.judge import GroupSample, Verdict, judge_group, worst
from patchlog.streams.codec import decode_event, event_fields
from patchlog.streams.errors import CorruptEntry, PatchlogError
from patchlog.streams.keys import Keys
from patchlog.streams.schema import HealthResult, HealthStatus
from patchlog.streams.settings import Settings

__all__ = ["GROUPS", "Prober", "latest", "leased_consumers", "live_workers"]

log = structlog.get_logger("patchlog.health")

GROUPS = (("normalize", "patches"), ("execute", "normalized"))
"""Each stage's group and the ``Keys`` property naming the stream it reads."""

Probe = Callable[[], Awaitable[dict[str, Any]]]


class Prober:
    """Probes one namespace; ``round()`` makes one result, ``append`` logs it."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.keys: Keys = settings.keys
        self.samples: dict[str, deque[GroupSample]] = {g: deque() for g, _ in GROUPS}
        self.since: dict[str, float] = {}
        """Group -> time of its first sample this prober holds (its own or seeded)."""
        self.dead_seen: deque[tuple[float, int]] = deque()

    async def seed(self) -> None:
        """Take the samples of recent results from ``patchlog:health`` into the window."""
        rows: Any = await self.redis.xrevrange(self.keys.health, count=200)
        horizon = time.time() - self.settings.health_window
        for _, fields in reversed(rows):
            try:
                result = decode_event(HealthResult, fields)
            except CorruptEntry:
                continue
            if result.at / 1000 < horizon:
                continue
            for group, _ in GROUPS:
                sample = result.checks.get("groups", {}).get(group, {}).get("sample")
                if sample is not None:
                    try:
                        self.samples[group].append(msgspec.convert(sample, GroupSample))
                    except msgspec.ValidationError:
                        continue

    async def round(self) -> HealthResult:
        """Run every probe (each under ``health_probe_timeout``) and judge."""
        probes: dict[str, Probe] = {
            "server": self.probe_server,
            "persistence": self.probe_persistence,
            "dead": self.probe_dead,
            "projectors": self.probe_projectors,
            **{f"group:{g}": self.probe_group(g, stream) for g, stream in GROUPS},
        }
        timeout = self.settings.health_probe_timeout
        results = await asyncio.gather(
            *(asyncio.wait_for(p(), timeout) for p in probes.values()), return_exceptions=True
        )
        checks: dict[str, Any] = {"groups": {}}
        verdicts: list[Verdict] = []
        for name, outcome in zip(probes, results, strict=True):
            if isinstance(outcome, BaseException):
                why = "timed out" if isinstance(outcome, TimeoutError) else str(outcome)
                # An unanswered ping means no work is done at all; another probe failing
                # leaves that open.
                bad = HealthStatus.FAILING if name == "server" else HealthStatus.DEGRADED
                verdicts.append(Verdict(bad, f"{name}: probe {why}"))
                checks[name] = {"error": why or type(outcome).__name__}
                continue
            verdict = outcome.pop("verdict")
            verdicts.append(Verdict(HealthStatus(verdict[0]), verdict[1]))
            if name.startswith("group:"):
                checks["groups"][name.removeprefix("group:")] = outcome
            else:
                checks[name] = outcome
        status = worst(verdicts)
        checks["reasons"] = [v.reason for v in verdicts if v.status is not HealthStatus.OK]
        return HealthResult(status=status, checks=checks, at=int(time.time() * 1000))

    async def append(self, result: HealthResult) -> None:
        """Append ``result`` to ``patchlog:health`` (capped)."""
        flat = event_fields(result)
        await self.redis.xadd(
            self.keys.health,
            dict(zip(flat[::2], flat[1::2], strict=True)),
            maxlen=self.settings.health_cap,
            approximate=True,
        )

    async def probe_server(self) -> dict[str, Any]:
        start = time.perf_counter()
        await self.redis.ping()
        ping_ms = (time.perf_counter() - start) * 1000
        memory: Any = await self.redis.info("memory")
        used, limit = int(memory.get("used_memory", 0)), int(memory.get("maxmemory", 0))
        ratio = used / limit if limit else 0.0
        verdict = (HealthStatus.OK, "server: reachable")
        if limit and ratio >= self.settings.health_memory_ratio:
            verdict = (
                HealthStatus.DEGRADED,
                f"server: memory {used} of {limit} bytes ({ratio:.0%}); rule: below "
                f"{self.settings.health_memory_ratio:.0%} (PATCHLOG_HEALTH_MEMORY_RATIO)",
            )
        return {
            "ping_ms": round(ping_ms, 3),
            "used_memory": used,
            "maxmemory": limit,
            "verdict": verdict,
        }

    async def probe_persistence(self) -> dict[str, Any]:
        info: Any = await self.redis.info("persistence")
        state = {
            k: info.get(k)
            for k in (
                "aof_enabled",
                "aof_last_write_status",
                "aof_last_bgrewrite_status",
                "rdb_last_bgsave_status",
            )
        }
        failed = [k for k, v in state.items() if k.endswith("_status") and v not in (None, "ok")]
        verdict = (
            (HealthStatus.FAILING, f"persistence: {', '.join(failed)} not ok")
            if failed
            else (HealthStatus.OK, "persistence: ok")
        )
        return {**state, "verdict": verdict}

    async def probe_dead(self) -> dict[str, Any]:
        size = int(await self.redis.xlen(self.keys.dead))
        now = time.time()
        self.dead_seen.append((now, size))
        while self.dead_seen and self.dead_seen[0][0] < now - self.settings.health_window:
            self.dead_seen.popleft()
        grew = size - self.dead_seen[0][1]
        verdict = (HealthStatus.OK, f"dead letters: {size}")
        if grew > 0:
            verdict = (
                HealthStatus.DEGRADED,
                f"dead letters: {grew} new in the last {self.settings.health_window:g} s "
                f"({size} in all; see patchlog dead list)",
            )
        return {"length": size, "new": grew, "verdict": verdict}

    async def probe_projectors(self) -> dict[str, Any]:
        """How far behind the newest revision each projector's folder is, in seconds of
        commit time; a projector more than ``health_window`` behind is degraded."""
        newest: Any = await self.redis.xrevrange(self.keys.revisions, count=1)
        head_ms = int(newest[0][0].split(b"-")[0]) if newest else 0
        members: Any = await self.redis.smembers(self.keys.projectors)
        names = sorted(name.decode() for name in members)
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hget(self.keys.projector(name), "id")
            positions: list[Any] = await pipe.execute()
        behind: dict[str, float] = {}
        for name, position in zip(names, positions, strict=True):
            if position is None:  # its checkpoint was deleted: a retired projector
                await self.redis.srem(self.keys.projectors, name)
                continue
            behind[name] = max(0.0, (head_ms - int(position.split(b"-")[0])) / 1000)
        late = {n: b for n, b in behind.items() if b > self.settings.health_window}
        verdict = (HealthStatus.OK, f"projectors: {len(behind)}")
        if late:
            verdict = (
                HealthStatus.DEGRADED,
                "projectors behind: "
                + ", ".join(f"{n} {b:.0f} s" for n, b in sorted(late.items())),
            )
        return {"behind_s": behind, "verdict": verdict}

    def probe_group(self, group: str, stream_attr: str) -> Probe:
        async def probe() -> dict[str, Any]:
            streams = self.keys.role_streams(stream_attr)
            lag = pending = length = 0
            read: int | None = 0
            oldest_age: float | None = None
            live: set[str] = set()
            partitioned = len(streams) > 1
            # Concurrently: one stream's round trips after another would make a round
            # over many partitions outlast the probe timeout.
            parts = await asyncio.gather(
                *(self._probe_stream(stream, group, partitioned) for stream in streams)
            )
            for part in parts:
                length += part["length"]
                lag += part["lag"]
                pending += part["pending"]
                read = None if read is None or part["read"] < 0 else read + part["read"]
                if part["oldest"] is not None:
                    oldest_age = max(oldest_age or 0.0, part["oldest"])
                live |= part["live"]
            sample = GroupSample(
                at=time.time(),
                lag=lag,
                pending=pending,
                acked=read - pending if read is not None else -1,
                consumers=len(live),
            )
            window = self.samples[group]
            window.append(sample)
            since = self.since.setdefault(group, window[0].at)
            while window and window[0].at < sample.at - self.settings.health_window:
                window.popleft()
            verdict = judge_group(
                group, list(window), self.settings.health_window / 2, watched=sample.at - since
            )
            return {
                "stream": getattr(self.keys, stream_attr),
                "partitions": len(streams),
                "length": length,
                "lag": lag,
                "pending": pending,
                "oldest_pending_s": oldest_age,
                "consumers": len(live),
                "sample": msgspec.to_builtins(sample),
                "verdict": (verdict.status.value, verdict.reason),
            }

        return probe

    async def _probe_stream(self, stream: str, group: str, partitioned: bool) -> dict[str, Any]:
        """One stream's part of a group probe: length, lag, pending, entries read (-1:
        the server cannot tell), oldest pending age, and the workers holding a lease
        among its consumers (a partition's consumer ``<worker>:<p>`` counts as its
        worker)."""
        (row,) = await read_groups(self.redis, [stream], group)
        length = int(await self.redis.xlen(stream))
        if row is None:  # no stream or no group yet
            return {"length": length, "lag": length, "pending": 0, "read": -1, "oldest": None,
                    "live": set()}  # fmt: skip
        names = await leased_consumers(self.redis, self.keys, group, stream)
        return {
            "length": length,
            "lag": length if row.lag is None else row.lag,
            "pending": row.pending,
            "read": -1 if row.read is None else row.read,
            "oldest": await self._oldest_pending_age(stream, group, row.pending),
            "live": {worker_of(name) if partitioned else name for name in names},
        }

    async def _oldest_pending_age(self, stream: str, group: str, pending: int) -> float | None:
        if pending == 0:
            return None
        summary: Any = await self.redis.xpending(stream, group)
        if summary["min"] is None:
            return None
        ms = int(summary["min"].decode().split("-")[0])
        return max(0.0, round(time.time() - ms / 1000, 3))


async def leased_consumers(redis: Redis, keys: Keys, group: str, stream: str) -> list[str]:
    """The consumers of ``group`` on ``stream`` whose lease is alive, in the group's
    order; none if the stream or the group does not exist. Read from the group rather
    than by a SCAN for lease keys, whose cost grows with every key (an id record per
    patch)."""
    try:
        consumers: Any = await redis.xinfo_consumers(stream, group)
    except PatchlogError:
        return []
    names = [c["name"].decode() for c in consumers]
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.exists(keys.lease(group, name))
        alive = await pipe.execute()
    return [name for name, up in zip(names, alive, strict=True) if up]


async def live_workers(redis: Redis, keys: Keys) -> list[str]:
    """Every consumer holding a lease, as ``<group>:<consumer>``, sorted: the stage
    workers of ``keys``' layout that are alive now."""
    return sorted(
        [
            f"{group}:{name}"
            for group, _ in GROUPS
            for stream in keys.group_streams(group)
            for name in await leased_consumers(redis, keys, group, stream)
        ]
    )


async def latest(redis: Redis, keys: Keys) -> HealthResult | None:
    """The newest result in ``patchlog:health``, or ``None`` if there is none."""
    rows: Any = await redis.xrevrange(keys.health, count=1)
    return decode_event(HealthResult, rows[0][1]) if rows else None


_STATUS_CODE = {HealthStatus.OK: 0, HealthStatus.DEGRADED: 1, HealthStatus.FAILING: 2}


def exit_code(result: HealthResult | None, now_ms: int, interval: float) -> int:
    """0, 1 or 2 for ok, degraded, failing; 2 when there is no result younger than three
    prober intervals (a stopped prober must not read as healthy)."""
    if result is None or now_ms - result.at > 3 * interval * 1000:
        return 2
    return _STATUS_CODE[result.status]


def http_answer(
    path: str, result: HealthResult | None, now_ms: int, interval: float
) -> tuple[int, str]:
    """The HTTP status and body for ``path``: ``/healthz`` is 200 unless failing (or no
    recent result), ``/readyz`` 200 only when ok; anything else 404."""
    code = exit_code(result, now_ms, interval)
    status = (
        "stale"
        if result is None or (code == 2 and result.status is not HealthStatus.FAILING)
        else result.status.value
    )
    if path == "/healthz":
        return (200 if code < 2 else 503), status + "\n"
    if path == "/readyz":
        return (200 if code == 0 else 503), status + "\n"
    return 404, "not found\n"


async def serve_http(
    port: int, answer: Callable[[str], tuple[int, str]], host: str = "127.0.0.1"
) -> asyncio.Server:
    """A minimal HTTP/1.0 server on ``host:port`` for liveness and readiness probes
    (each request read within 5 s; one answer, then the connection closes)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            parts = line.decode("latin-1").split()
            path = parts[1].split("?")[0] if len(parts) >= 2 else "/"
            code, body = answer(path) if parts[:1] in (["GET"], ["HEAD"]) else (405, "GET only\n")
            reason = {
                200: "OK",
                404: "Not Found",
                405: "Method Not Allowed",
                503: "Service Unavailable",
            }[code]
            payload = body.encode()
            writer.write(
                f"HTTP/1.0 {code} {reason}\r\nContent-Type: text/plain\r\n"
                f"Content-Length: {len(payload)}\r\n\r\n".encode()
                + (payload if parts[:1] == ["GET"] else b"")
            )
            await asyncio.wait_for(writer.drain(), 5)
        except (TimeoutError, ConnectionError, UnicodeDecodeError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port)


async def run_prober(
    redis: Redis, settings: Settings, stop: asyncio.Event, *, port: int = 0, rounds: int = 0
) -> None:
    """Probe every ``health_interval`` seconds until ``stop`` is set (or ``rounds``
    rounds, when not 0), serving ``/healthz`` and ``/readyz`` on ``http_host:port``
    when ``port`` is not 0."""
    prober = Prober(redis, settings)
    with contextlib.suppress(TimeoutError, PatchlogError):  # else judged as samples arrive
        await asyncio.wait_for(prober.seed(), settings.health_probe_timeout)
    last: list[HealthResult] = []

    def answer(path: str) -> tuple[int, str]:
        return http_answer(
            path, last[-1] if last else None, int(time.time() * 1000), settings.health_interval
        )

    server = await serve_http(port, answer, settings.http_host) if port else None
    done = 0
    try:
        while not stop.is_set():
            result = await prober.round()
            last[:] = [result]
            log.info("health", status=result.status.value, reasons=result.checks["reasons"])
            with contextlib.suppress(TimeoutError, PatchlogError):  # served over HTTP anyway
                await asyncio.wait_for(prober.append(result), settings.health_probe_timeout)
            done += 1
            if rounds and done >= rounds:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), settings.health_interval)
    finally:
        if server is not None:
            server.close()
