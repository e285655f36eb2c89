"""Prometheus endpoints: a worker's own ``/metrics``, and the one scrape target of a
whole pipeline that ``patchlog up --metrics-port`` serves (``PipelineMetrics``).

Why prometheus-client's multiprocess mode rather than a process scraping every worker:
``up`` gives its workers a fresh ``PROMETHEUS_MULTIPROC_DIR``, each worker writes its
counters and histograms to memory-mapped files there, and ``up`` sums the files at
each scrape. So there is one port whatever the number of workers (none to allocate,
relabel or keep in a scrape config), and a counter does not fall back to zero when a
worker is restarted: the dead worker's files are folded into an archive that stays in
the sum, where a scraped worker would start again from zero. The price is a write to a
mapped file per update, which is why the stages count per batch.

The state of the streams and groups is read once per scrape, by ``up`` alone (not by
every worker), with the health prober's own probes (``patchlog status`` shows the same
numbers), each under ``health_probe_timeout``; a part that fails is left out of that
scrape and ``patchlog_probe_success`` says which.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import msgspec
import structlog
from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import MultiProcessCollector
from redis.asyncio import Redis

from patchlog.ops.health import GROUPS, Prober, latest
from patchlog.ops.status import stream_lengths
from patchlog.streams.connection import connect
from patchlog.streams.errors import PatchlogError
from patchlog.streams.schema import HealthStatus
from patchlog.streams.settings import Settings

__all__ = [
    "MULTIPROC_ENV",
    "MetricsPortBusy",
    "PipelineMetrics",
    "WorkerState",
    "serve_metrics",
]

log = structlog.get_logger("patchlog.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""The variable that puts prometheus-client in multiprocess mode (read at its import)."""
_ARCHIVE = "archive"  # in place of a pid in the name of the files dead workers fold into
_REQUEST_TIMEOUT = 5.0  # seconds to read a request and to send the answer
_MAX_HEADER_LINES = 100
# prometheus-client's multiprocess internals carry no type hints.
_Mapped: Any = MmapedDict
_merge: Any = MultiProcessCollector.merge


def serve_metrics(port: int, host: str = "127.0.0.1") -> None:
    """Serve this process's metrics on ``host:port`` from a background thread (a worker
    run alone)."""
    start_http_server(port, addr=host)


class MetricsPortBusy(PatchlogError):
    """The port given for the pipeline's metrics cannot be listened on."""


class WorkerState(msgspec.Struct, frozen=True):
    """What the supervisor tells about one of its processes."""

    stage: str
    running: bool
    exits: int
    """Times it exited since ``up`` started (each followed by a restart)."""


class _Fixed:
    """A collector of metric families gathered beforehand."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self.families


def _gauge(name: str, doc: str, labels: Sequence[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


class PipelineMetrics:
    """One ``/metrics`` for a whole pipeline: the sum of what the workers write under
    ``folder``, the state of the streams and groups read at each scrape, and what
    ``workers()`` says about the supervisor's processes."""

    def __init__(
        self,
        settings: Settings,
        folder: Path,
        workers: Callable[[], Sequence[WorkerState]] = list,
        server_restarts: Callable[[], int] = lambda: 0,
    ) -> None:
        self.settings = settings
        self.folder = folder
        self.workers = workers
        self.server_restarts = server_restarts
        self.redis: Redis | None = None
        self.prober: Prober | None = None
        self._server: asyncio.Server | None = None
        # Held while files are read for a scrape and while a dead worker's files are
        # folded into the archive, so that no scrape sees them twice or not at all (a
        # counter that dips reads as a reset to Prometheus).
        self._files = threading.Lock()

    async def listen(self, port: int, host: str = "127.0.0.1") -> None:
        """Start answering ``GET /metrics`` on ``host:port``. Raises ``MetricsPortBusy``
        if it cannot listen there."""
        try:
            self._server = await asyncio.start_server(self._handle, host, port)
        except OSError as err:
            raise MetricsPortBusy(
                f"cannot serve metrics on {host}:{port} (--metrics-port or "
                f"PATCHLOG_METRICS_PORT): {err.strerror or err}"
            ) from err

    def connect(self, url: str) -> None:
        """Read the server at ``url`` at each scrape from now on."""
        self.redis = connect(self.settings, url, name="patchlog-metrics")
        self.prober = Prober(self.redis, self.settings)

    async def close(self) -> None:
        """Stop listening and close the connection (the folder is the caller's)."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), _REQUEST_TIMEOUT)
        if self.redis is not None:
            with contextlib.suppress(Exception):
                await self.redis.aclose()

    def retire(self, pid: int) -> None:
        """Fold the files of exited worker ``pid`` into the archive files, which stay in
        the sum: its counts outlive it, and the folder does not grow with restarts."""
        with self._files:
            for path in glob.glob(os.path.join(self.folder, f"*_{pid}.db")):
                kind = os.path.basename(path)[: -len(f"_{pid}.db")]
                if kind in ("counter", "histogram"):  # sums: adding them up is exact
                    archive = _Mapped(os.path.join(self.folder, f"{kind}_{_ARCHIVE}.db"))
                    try:
                        for key, value, _, _ in _Mapped.read_all_values_from_file(path):
                            before, stamp = archive.read_value(key)
                            archive.write_value(key, before + value, stamp)
                    finally:
                        archive.close()
                os.remove(path)  # a gauge of a dead process means nothing (we write none)

    async def render(self) -> bytes:
        """The text exposition of everything, read now."""
        families = await self._probe()
        families += self._supervisor()
        return await asyncio.to_thread(self._exposition, families)

    def _exposition(self, families: list[Metric]) -> bytes:
        with self._files:
            files = glob.glob(os.path.join(self.folder, "*.db"))
            families += _merge(files, accumulate=True)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Fixed(f for f in families if f.samples))  # a part not read
        return generate_latest(registry)

    def _supervisor(self) -> list[Metric]:
        running = _gauge(
            "patchlog_workers_running", "Processes of a stage running under up", ["stage"]
        )
        exits = CounterMetricFamily(
            "patchlog_worker_exits_total",
            "Times a process of a stage exited and was started again by up",
            labels=["stage"],
        )
        by_stage: dict[str, list[int]] = {}
        for worker in self.workers():
            counts = by_stage.setdefault(worker.stage, [0, 0])
            counts[0] += worker.running
            counts[1] += worker.exits
        for stage, (alive, exited) in sorted(by_stage.items()):
            running.add_metric([stage], alive)
            exits.add_metric([stage], exited)
        restarts = CounterMetricFamily(
            "patchlog_server_restarts_total", "Times up restarted the embedded server"
        )
        restarts.add_metric([], self.server_restarts())
        return [running, exits, restarts]

    async def _probe(self) -> list[Metric]:
        """The server, stream, group and health gauges, each part read concurrently
        under ``health_probe_timeout``."""
        redis, prober = self.redis, self.prober
        success = _gauge(
            "patchlog_probe_success",
            "Whether a part of the pipeline's state was read for this scrape (1) or not",
            ["probe"],
        )
        up = _gauge("patchlog_server_up", "Whether the server answered a PING in time")
        if redis is None or prober is None:
            up.add_metric([], 0)
            return [up]
        parts: dict[str, Awaitable[Any]] = {
            "server": _server_part(redis),
            "streams": stream_lengths(redis, self.settings.keys),
            **{f"group:{g}": prober.probe_group(g, stream)() for g, stream in GROUPS},
            "health": latest(redis, self.settings.keys),
        }
        timeout = self.settings.health_probe_timeout
        replies = await asyncio.gather(
            *(asyncio.wait_for(part, timeout) for part in parts.values()),
            return_exceptions=True,
        )
        got: dict[str, Any] = {}
        for name, reply in zip(parts, replies, strict=True):
            ok = not isinstance(reply, BaseException)
            success.add_metric([name], ok)
            if ok:
                got[name] = reply
            elif not isinstance(reply, TimeoutError | PatchlogError):
                log.warning("metrics probe failed", probe=name, error=repr(reply))
        up.add_metric([], "server" in got)
        families: list[Metric] = [up, success]
        if "server" in got:
            families += _server_families(got["server"])
        if "streams" in got:
            length = _gauge("patchlog_stream_length", "Entries in a stream (XLEN)", ["stream"])
            for stream, count in got["streams"].items():
                length.add_metric([stream], count)
            families.append(length)
        families += _group_families({g: got.get(f"group:{g}") for g, _ in GROUPS})
        if "health" in got:
            families += _health_families(got["health"])
        return families

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_REQUEST_TIMEOUT):
                request = (await reader.readline()).decode("latin-1").split()
                for _ in range(_MAX_HEADER_LINES):  # headers: read and ignored
                    if (await reader.readline()).strip() == b"":
                        break
            method = request[0] if request else ""
            path = request[1].split("?")[0] if len(request) >= 2 else ""
            if method not in ("GET", "HEAD"):
                status, kind, body = "405 Method Not Allowed", "text/plain", b"GET only\n"
            elif path != "/metrics":
                status, kind, body = "404 Not Found", "text/plain", b"see /metrics\n"
            else:
                status, kind = "200 OK", CONTENT_TYPE_PLAIN_0_0_4
                body = await self.render()
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + (body if method == "GET" else b"")
            )
            async with asyncio.timeout(_REQUEST_TIMEOUT):
                await writer.drain()
        except (TimeoutError, ConnectionError, UnicodeDecodeError):
            pass
        except Exception:
            log.exception("metrics request failed")
        finally:
            writer.close()


async def _server_part(redis: Redis) -> dict[str, float]:
    start = time.perf_counter()
    await redis.ping()
    ping = time.perf_counter() - start
    memory: Any = await redis.info("memory")
    return {
        "ping": ping,
        "used": float(memory.get("used_memory", 0)),
        "max": float(memory.get("maxmemory", 0)),
        "system": float(memory.get("total_system_memory", 0)),
    }


def _server_families(server: dict[str, float]) -> list[Metric]:
    ping = _gauge("patchlog_server_ping_seconds", "Time the server took to answer a PING")
    ping.add_metric([], server["ping"])
    used = _gauge("patchlog_server_memory_used_bytes", "Server memory in use (used_memory)")
    used.add_metric([], server["used"])
    limit = _gauge("patchlog_server_memory_max_bytes", "The server's maxmemory (0: no limit set)")
    limit.add_metric([], server["max"])
    system = _gauge(
        "patchlog_server_memory_system_bytes",
        "Memory of the server's machine (total_system_memory; 0 when not told)",
    )
    system.add_metric([], server["system"])
    return [ping, used, limit, system]


def _group_families(groups: dict[str, dict[str, Any] | None]) -> list[Metric]:
    labels = ["stage", "stream"]
    lag = _gauge(
        "patchlog_group_lag",
        "Entries of the stream not yet delivered to the stage's group (XINFO GROUPS lag)",
        labels,
    )
    pending = _gauge(
        "patchlog_group_pending",
        "Entries delivered to the stage's group and not yet acknowledged (XPENDING)",
        labels,
    )
    oldest = _gauge(
        "patchlog_group_oldest_pending_age_seconds",
        "Age of the group's oldest pending entry, by its id's time (0: none pending)",
        labels,
    )
    consumers = _gauge(
        "patchlog_group_consumers",
        "Live consumers of the group: workers of the stage holding their lease",
        labels,
    )
    read = _gauge(
        "patchlog_group_entries_read",
        "Entries delivered to the group so far (XINFO GROUPS entries-read)",
        labels,
    )
    for stage, probed in groups.items():
        if probed is None:
            continue
        # The stream's role (patches, normalized), not its key: no namespace in labels.
        key = [stage, str(probed["stream"]).rsplit(":", 1)[-1]]
        lag.add_metric(key, probed["lag"])
        pending.add_metric(key, probed["pending"])
        oldest.add_metric(key, probed["oldest_pending_s"] or 0.0)
        consumers.add_metric(key, probed["consumers"])
        acked = probed["sample"]["acked"]
        if acked >= 0:  # else the server cannot tell (a group created at an id)
            read.add_metric(key, acked + probed["pending"])
    return [lag, pending, oldest, consumers, read]


def _health_families(result: Any) -> list[Metric]:
    status = _gauge(
        "patchlog_health_status",
        "The latest result of the health prober: 1 for its status, 0 for the others",
        ["status"],
    )
    stamp = _gauge(
        "patchlog_health_timestamp_seconds",
        "When the health prober wrote its latest result (Unix time)",
    )
    if result is None:  # no prober has written yet
        return [status, stamp]
    for value in HealthStatus:
        status.add_metric([value.value], result.status is value)
    stamp.add_metric([], result.at / 1000)
    return [status, stamp]
