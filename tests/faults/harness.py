"""The harness of FAULT-PLAN section 3: a server of its own (own port and folder), stage
worker processes kept running like a service manager would (restarted when they exit),
a projector and a prober, the faults (SIGKILL, SIGSTOP, SIGCONT by pid, failpoints, the
server killed and restarted from its AOF), then quiesce and the state for the checker.

Everything waits with a bound; ``close`` stops every process it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from patchlog.ops.config import settings_env
from patchlog.streams.failpoints import BROKEN_ENV, ENV, LOG_ENV
from patchlog.streams.keys import EXECUTE, NORMALIZE
from patchlog.streams.server import EmbeddedServer, free_port
from patchlog.streams.settings import Fsync, Settings
from tests.faults.snapshot import State, read_state, streams_of
from tests.integration.helpers import binary_for

__all__ = ["Harness", "Plan", "Proc", "harness"]

PROJECTOR = "projector"
HEALTH = "health"


def log_count(folder: Path, text: str) -> int:
    """Lines of the logs of a harness's ``folder`` (open or closed) that contain ``text``."""
    return sum(
        path.read_text(errors="replace").count(text) for path in (folder / "logs").glob("*.log")
    )


@dataclasses.dataclass
class Plan:
    """What one run starts."""

    normalize: int = 2
    execute: int = 2
    projector: bool = True
    prober: bool = True
    fsync: Fsync = Fsync.ALWAYS
    failpoints: dict[str, str] = dataclasses.field(default_factory=dict)
    """Stage (``normalize``, ``execute``, ``projector``) -> its PATCHLOG_FAILPOINTS."""
    broken: str = ""
    """PATCHLOG_BROKEN for every stage: a deliberately broken build."""
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Settings over the harness's quick timings."""
    worker_url: str | None = None
    """Where the stages connect (a proxy's URL), instead of the server itself."""


@dataclasses.dataclass
class Proc:
    """One stage process, restarted whenever it exits until the harness closes."""

    name: str
    stage: str
    args: list[str]
    process: asyncio.subprocess.Process | None = None
    exits: list[int] = dataclasses.field(default_factory=list)

    @property
    def pid(self) -> int:
        """The running process's pid; raises ``RuntimeError`` when it is not running."""
        if self.process is None or self.process.returncode is not None:
            raise RuntimeError(f"{self.name} is not running")
        return self.process.pid


class Harness:
    """One run's server, processes and faults."""

    def __init__(self, folder: Path, kind: str, plan: Plan) -> None:
        self.folder = folder
        self.kind = kind
        self.plan = plan
        self.port = free_port()
        self.server = EmbeddedServer(
            folder / "server", port=self.port, binary=binary_for(kind), fsync=plan.fsync
        )
        quick: dict[str, Any] = {
            "redis_url": self.server.url,
            "block_ms": 200,
            "lease_ms": 2000,
            "claim_interval": 0.5,
            "health_interval": 1.0,
            "health_window": 10.0,
            "socket_timeout": 2.0,
            "shutdown_grace": 2.0,
        }
        self.settings = msgspec.convert({**quick, **plan.settings}, Settings)
        self.fired_log = folder / "failpoints.log"
        self.projected = folder / "projected"
        self.procs: list[Proc] = []
        self._keeper: asyncio.Task[None] | None = None
        self._closing = False
        # The harness's own reads ride over a server restart.
        self.redis = Redis.from_url(
            self.server.url,
            socket_timeout=10,
            socket_connect_timeout=2,
            retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), 8),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
        )

    # -- processes ------------------------------------------------------------------------

    def _env(self, stage: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PATCHLOG_")}
        settings = self.settings
        if self.plan.worker_url is not None:
            settings = msgspec.structs.replace(settings, redis_url=self.plan.worker_url)
        env.update(settings_env(settings))
        env["PATCHLOG_LOG_LEVEL"] = os.environ.get("PATCHLOG_FAULTS_LOG_LEVEL", "info")
        env[LOG_ENV] = str(self.fired_log)
        if stage in self.plan.failpoints:
            env[ENV] = self.plan.failpoints[stage]
        if self.plan.broken:
            env[BROKEN_ENV] = self.plan.broken
        return env

    async def _spawn(self, proc: Proc) -> None:
        log = (self.folder / "logs" / f"{proc.name}.log").open("ab")
        try:
            proc.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "patchlog", "worker", *proc.args,
                env=self._env(proc.stage), stdout=log, stderr=log,
            )  # fmt: skip
        finally:
            log.close()

    async def _keep(self) -> None:
        """Restart every process that exits (after 0.3 s, like RestartSec)."""
        while not self._closing:
            for proc in self.procs:
                p = proc.process
                if p is not None and p.returncode is not None:
                    proc.exits.append(p.returncode)
                    proc.process = None
                if proc.process is None and not self._closing:
                    await asyncio.sleep(0.3)
                    await self._spawn(proc)
            await asyncio.sleep(0.1)

    async def start(self) -> None:
        """Start the server, then every process of the plan."""
        (self.folder / "logs").mkdir(parents=True, exist_ok=True)
        await self.server.start()
        for stage, count in ((NORMALIZE, self.plan.normalize), (EXECUTE, self.plan.execute)):
            for i in range(1, count + 1):
                name = f"{stage}-{i}"
                self.procs.append(Proc(name, stage, [stage, "--name", name]))
        if self.plan.projector:
            self.procs.append(Proc(PROJECTOR, PROJECTOR, [PROJECTOR, "--dir", str(self.projected)]))
        if self.plan.prober:
            self.procs.append(Proc(HEALTH, HEALTH, [HEALTH]))
        for proc in self.procs:
            await self._spawn(proc)
        self._keeper = asyncio.create_task(self._keep())
        deadline = time.monotonic() + 30
        for proc in self.procs:
            if proc.stage in (NORMALIZE, EXECUTE):
                while not await self._started(proc):
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{proc.name} did not start within 30 s")
                    await asyncio.sleep(0.1)

    async def _started(self, proc: Proc) -> bool:
        """Whether a stage worker holds its lease (a partitioned execute worker: its
        membership)."""
        keys = self.settings.keys
        if proc.stage == EXECUTE and keys.partitions > 1:
            return await self.redis.zscore(keys.members, proc.name) is not None
        return bool(await self.redis.exists(keys.lease(proc.stage, proc.name)))

    def proc(self, name: str) -> Proc:
        """The process named ``name`` (``execute-1``, ``projector``, ...)."""
        return next(p for p in self.procs if p.name == name)

    def send(self, name: str, sig: signal.Signals) -> None:
        """Send ``sig`` to a running process."""
        os.kill(self.proc(name).pid, sig)

    def fired(self) -> Counter[str]:
        """Failpoints that killed a process, by name."""
        if not self.fired_log.exists():
            return Counter()
        return Counter(line.split()[0] for line in self.fired_log.read_text().splitlines())

    def crashes(self) -> list[tuple[str, int]]:
        """Exits nobody caused: neither a SIGKILL (a failpoint, a scenario) nor a stop."""
        return [
            (p.name, code)
            for p in self.procs
            for code in p.exits
            if code not in (-signal.SIGKILL, -signal.SIGTERM, 0)
        ]

    def log_sum(self, name: str, event: str, field: str) -> int:
        """Sum of ``field`` over the JSON log lines of process ``name`` (a glob:
        ``execute-*``) whose event is ``event``."""
        total = 0
        for path in (self.folder / "logs").glob(f"{name}.log"):
            for line in path.read_bytes().splitlines():
                with contextlib.suppress(msgspec.DecodeError):
                    record = msgspec.json.decode(line)
                    if isinstance(record, dict) and record.get("event") == event:
                        total += int(record.get(field) or 0)
        return total

    def log_count(self, text: str) -> int:
        """Lines of every process's log that contain ``text``."""
        return log_count(self.folder, text)

    # -- the server -----------------------------------------------------------------------

    async def kill_server(self) -> None:
        """SIGKILL the server (it is not restarted until ``restart_server``)."""
        assert self.server.process is not None
        self.server.process.kill()
        await asyncio.wait_for(self.server.process.wait(), 10)

    async def restart_server(self) -> float:
        """Start the server again on its folder (from its AOF); the seconds it took."""
        started = time.monotonic()
        await self.server.start()  # the folder's lock is still this harness's
        return time.monotonic() - started

    def server_signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the server (SIGSTOP, SIGCONT)."""
        assert self.server.process is not None
        os.kill(self.server.process.pid, sig)

    # -- the end --------------------------------------------------------------------------

    async def quiesce(self, within: float = 60.0) -> float:
        """Let every stage finish: all processes running and continued, then wait until
        no entry is undelivered or pending in either group and the projector has
        written the last revision. Returns the seconds it took; raises ``TimeoutError``."""
        for proc in self.procs:
            with contextlib.suppress(RuntimeError, ProcessLookupError):
                os.kill(proc.pid, signal.SIGCONT)
        keys = self.settings.keys
        started = time.monotonic()
        while True:
            busy = []
            for stream, group in streams_of(keys):
                with contextlib.suppress(ResponseError):  # no stream or group yet
                    groups: Any = await self.redis.xinfo_groups(stream)
                    busy += [
                        f"{group}: lag {g.get('lag')} pending {g['pending']}"
                        for g in groups
                        if g["name"].decode() == group and (g["pending"] or g.get("lag"))
                    ]
            if self.plan.projector and not busy:
                last: Any = await self.redis.xrevrange(keys.revisions, count=1)
                mark = self.projected / ".patchlog-checkpoint"
                if last and (not mark.exists() or last[0][0] not in mark.read_bytes()):
                    busy.append("projector behind")
            if not busy:
                return time.monotonic() - started
            if time.monotonic() - started > within:
                raise TimeoutError(f"not quiet after {within} s: {busy}")
            await asyncio.sleep(0.2)

    async def state(self) -> State:
        """The server's state, for the checker."""
        return await read_state(
            self.redis, self.settings.keys, self.projected if self.plan.projector else None
        )

    async def close(self) -> None:
        """Stop every process and the server (bounded)."""
        self._closing = True
        if self._keeper is not None:
            self._keeper.cancel()
            await asyncio.gather(self._keeper, return_exceptions=True)
        for proc in self.procs:
            p = proc.process
            if p is not None and p.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGCONT)
                    p.terminate()
        for proc in self.procs:
            p = proc.process
            if p is not None:
                try:
                    await asyncio.wait_for(p.wait(), 15)
                except TimeoutError:
                    p.kill()
                    await p.wait()
        with contextlib.suppress(Exception):
            await self.redis.aclose()
        with contextlib.suppress(ProcessLookupError, AssertionError):
            self.server_signal(signal.SIGCONT)
        await self.server.stop()


@contextlib.asynccontextmanager
async def harness(folder: Path, kind: str, plan: Plan) -> AsyncIterator[Harness]:
    """A started harness, closed on the way out."""
    h = Harness(folder, kind, plan)
    try:
        await h.start()
        yield h
    finally:
        await h.close()
