"""The one settings object, passed down explicitly (built from the environment in ``ops``)."""

from __future__ import annotations

import enum
from typing import Annotated

import msgspec

from patchlog.streams.keys import Keys
from patchlog.streams.limits import Limits

__all__ = ["LOG_LEVELS", "MAX_PARTITIONS", "Durability", "Fsync", "Settings"]

LOG_LEVELS = ("debug", "info", "warning", "error")
"""The levels ``PATCHLOG_LOG_LEVEL`` may name (any case): the setting and the logging
set-up, which reads it before the settings are loaded, accept the same ones."""

MAX_PARTITIONS = 1024
"""The most execute partitions ``PATCHLOG_PARTITIONS`` may name."""


class Fsync(enum.StrEnum):
    """``appendfsync`` of the embedded server."""

    EVERYSEC = "everysec"
    """Opt-in: about the last 1-2 s of acknowledged writes can be lost (a machine crash,
    or a kill -9 of the server while a slow fsync postpones its AOF writes)."""
    ALWAYS = "always"
    """The default: a write is on disk before the server replies."""


class Durability(enum.StrEnum):
    """When a submission counts as accepted."""

    NORMAL = "normal"
    """Once XADD returned."""
    STRICT = "strict"
    """Once the server fsynced it (``WAITAOF 1 0``)."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Every knob of patchlog, with defaults; durations in seconds unless named ``_ms``."""

    redis_url: str | None = None
    """Server to use; ``None`` starts the embedded server."""
    namespace: str = "patchlog"
    data_dir: str = ".patchlog"
    """Folder of the embedded server's data (AOF) and logs."""
    host: str = "127.0.0.1"
    port: int = 6390
    """Port of the embedded server."""
    fsync: Fsync = Fsync.ALWAYS
    """``appendfsync`` of the embedded server; ``always`` keeps every acknowledged write
    through a kill -9 of the server and a machine crash."""
    aof_rewrite_min_mb: int = 512
    """The embedded server rewrites its AOF once it is this large and twice its size
    after the last rewrite (``auto-aof-rewrite-min-size``)."""
    durability: Durability = Durability.NORMAL

    socket_timeout: float = 5.0
    """Timeout of every Redis call, on top of any BLOCK time."""
    connect_timeout: float = 2.0
    retries: int = 5
    """Retries of a command after a connection error or timeout (exponential backoff)."""

    partitions: Annotated[int, msgspec.Meta(ge=1, le=MAX_PARTITIONS)] = 1
    """Execute partitions: documents are spread over this many normalized streams by a
    hash of their name, and each partition is read by one execute worker at a time
    (leases, taken over when a worker dies), so that execute workers up to this many add
    capacity. 1: one stream that every execute worker reads. A changed count is refused
    until the pipeline is stopped and drained (``ops.partitioning``)."""
    batch: int = 256
    """Entries a worker reads at once."""
    commit_chunk: int = 64
    """Patches per commit script call; execute decides the next chunk while the server
    commits the previous one."""
    block_ms: int = 1000
    """How long one XREADGROUP waits for new entries."""
    lease_ms: int = 10_000
    """A worker's lease lifetime; it renews every third of it. Entries of a worker whose
    lease expired are claimed by others."""
    claim_interval: float = 2.0
    """How often a worker looks for entries of dead workers."""
    max_deliveries: int = 5
    """Deliveries of one entry before it goes to the dead-letter stream."""
    shutdown_grace: float = 10.0
    """How long a stopping worker may finish the batch in hand."""

    idempotency_window: float = 7 * 24 * 3600.0
    """How long a patch id is remembered (and outcomes kept)."""
    patches_retention: float = 7 * 24 * 3600.0
    """Seconds an ingress entry is kept after every group acknowledged it (the default is
    the idempotency window); 0 keeps everything."""
    outcome_ttl: float = 24 * 3600.0
    """How long the outcome of one submission waits to be read in ``<ns>:out:<entry>``."""
    base_ahead_wait: float = 5.0
    """How long a patch whose base does not exist yet waits for it."""
    base_ahead_pending_wait: float = 30.0
    """How long such a patch keeps waiting while an earlier entry for its document is
    still pending in the pipeline (a worker that died holding it, a lost read); at least
    ``reclaim_seconds`` is used whatever is set here."""
    strict: bool = False
    """Namespace-wide strict mode: any base but the head is ``stale``."""
    snapshot_every: int = 100
    """Revisions of a document between two cached content snapshots and between two
    checkpoints (time travel replays at most this many revisions)."""
    projector_dir: str = ""
    """The folder a projector keeps equal to the documents (``up`` starts none if empty)."""
    health_interval: float = 5.0
    """Seconds between two rounds of the health prober."""
    health_window: float = 60.0
    """Seconds of past samples a consumer group is judged over (like Burrow's window)."""
    health_probe_timeout: float = 2.0
    """Seconds one probe may take; a probe that takes longer makes the round degraded."""
    health_memory_ratio: float = 0.9
    """Share of the server's maxmemory above which health is degraded."""
    health_cap: int = 10_000
    """Results kept in ``patchlog:health`` (approximately)."""
    health_port: int = 0
    """Port of the prober's ``/healthz`` and ``/readyz`` on ``http_host`` (0: none)."""
    dead_cap: int = 100_000

    metrics_port: int = 0
    """Port of /metrics on ``http_host``: for ``up``, the whole pipeline's; for a worker
    run alone, its own; 0 for none."""
    http_host: str = "127.0.0.1"
    """Address ``/metrics``, ``/healthz`` and ``/readyz`` listen on: loopback by default,
    ``0.0.0.0`` where a scraper or a kubelet probes from outside (a pod's IP)."""
    log_level: Annotated[str, msgspec.Meta(pattern=f"(?i)^({'|'.join(LOG_LEVELS)})$")] = "info"
    """Lowest level logged: debug (a line per committed patch), info (a line per batch),
    warning or error."""
    limits: Limits = msgspec.field(default_factory=Limits)

    @property
    def reclaim_seconds(self) -> float:
        """Upper bound on how long an entry can sit with a dead or forgetful worker before
        a live one takes it up: the lease runs out, then a claim scan finds it (or an own
        sweep, for a lost read), with a second of margin for each step."""
        return self.lease_ms / 1000 + 2 * self.claim_interval + 2.0

    @property
    def pending_wait(self) -> float:
        """Seconds a patch whose base is ahead waits at most for an earlier entry of its
        document (``base_ahead_pending_wait``, never below ``reclaim_seconds``)."""
        return max(self.base_ahead_pending_wait, self.reclaim_seconds)

    @property
    def keys(self) -> Keys:
        """Key names in this namespace."""
        return Keys(self.namespace, self.partitions)
