"""Every Redis key, stream, group and consumer name patchlog uses, in one place.

All keys start with the namespace (default ``patchlog``). The keys one commit touches
(document state, index, idempotency record, the entry's outcome, revisions, outcomes,
the normalized stream) are all namespace keys, so a namespace written as a hash tag
(``{patchlog}``) puts them in one Redis Cluster slot without any change to the
per-document layout.
"""

from __future__ import annotations

import zlib

import msgspec

__all__ = ["EXECUTE", "NORMALIZE", "Keys", "partition_of"]

NORMALIZE = "normalize"
"""Consumer group (and stage name) reading the ingress stream."""
EXECUTE = "execute"
"""Consumer group (and stage name) reading the normalized stream."""


def partition_of(doc: str, partitions: int) -> int:
    """The execute partition of ``doc``, in ``range(partitions)``: CRC-32 of its UTF-8
    name, so every process (and every version) routes a document alike."""
    return zlib.crc32(doc.encode("utf-8", "surrogatepass")) % partitions


class Keys(msgspec.Struct, frozen=True):
    """Key names under one namespace."""

    namespace: str = "patchlog"
    partitions: int = 1
    """Execute partitions (``PATCHLOG_PARTITIONS``): how many normalized streams."""

    @property
    def patches(self) -> str:
        """Ingress stream: clients XADD patches here (public)."""
        return f"{self.namespace}:patches"

    @property
    def normalized(self) -> str:
        """Internal stream from normalize to execute (msgpack payloads)."""
        return f"{self.namespace}:normalized"

    @property
    def normalized_streams(self) -> tuple[str, ...]:
        """Every normalized stream: ``normalized`` alone with one partition, else one per
        partition, ``<ns>:normalized:<p>``, each read by the one worker owning it."""
        return tuple(self.normalized_stream(p) for p in range(self.partitions))

    def normalized_stream(self, partition: int) -> str:
        """The normalized stream of one partition (``normalized`` itself with one)."""
        return self.normalized if self.partitions <= 1 else f"{self.normalized}:{partition}"

    def normalized_of(self, doc: str) -> str:
        """The normalized stream that carries ``doc``'s patches."""
        return self.normalized_stream(partition_of(doc, self.partitions))

    def group_streams(self, group: str) -> tuple[str, ...]:
        """The streams consumer group ``group`` reads (``NORMALIZE`` or ``EXECUTE``)."""
        return self.normalized_streams if group == EXECUTE else (self.patches,)

    def role_streams(self, role: str) -> tuple[str, ...]:
        """The streams behind a stream's role, a property name of this class
        (``patches``, ``normalized``, ``revisions``...): the partitions for ``normalized``."""
        return self.normalized_streams if role == "normalized" else (getattr(self, role),)

    def partition_lease(self, partition: int) -> str:
        """Who owns an execute partition (a worker's name, with a TTL)."""
        return f"{self.namespace}:partition:{partition}"

    @property
    def layout(self) -> str:
        """Hash: the partition count the pipeline on this namespace runs with
        (``partitions``) and when a worker last started with it (``at``, server ms); a
        worker started with another count is refused while the recorded layout still
        has work or workers (``ops.partitioning``)."""
        return f"{self.namespace}:partitions"

    @property
    def members(self) -> str:
        """Sorted set of the live execute workers (score: when each one's membership
        expires, Unix ms): each takes its share of the partitions."""
        return f"{self.namespace}:members:execute"

    @property
    def revisions(self) -> str:
        """Every applied patch, all documents (public, the truth, never trimmed)."""
        return f"{self.namespace}:revisions"

    @property
    def outcomes(self) -> str:
        """Exactly one outcome per submitted patch (public, trimmed by age)."""
        return f"{self.namespace}:outcomes"

    @property
    def dead(self) -> str:
        """Entries that failed a stage too many times (public, capped)."""
        return f"{self.namespace}:dead"

    @property
    def health(self) -> str:
        """Health probe results (public, capped)."""
        return f"{self.namespace}:health"

    @property
    def strict(self) -> str:
        """Hash of document name (or ``*`` for all) to ``1`` for strict mode."""
        return f"{self.namespace}:strict"

    @property
    def docs(self) -> str:
        """Set of every document name that has a revision."""
        return f"{self.namespace}:docs"

    @property
    def projectors(self) -> str:
        """Set of the names of the projectors that published a checkpoint (``projector``):
        the prober reads them from here, not by scanning the keyspace."""
        return f"{self.namespace}:projectors"

    def doc(self, doc: str) -> str:
        """Hash with a document's head: ``rev``, ``hash``, ``lines``."""
        return f"{self.namespace}:doc:{doc}"

    def index(self, doc: str) -> str:
        """List of a document's revision stream ids; element ``r - 1`` is revision ``r``."""
        return f"{self.namespace}:idx:{doc}"

    def snapshot(self, doc: str) -> str:
        """A cached copy of a document's content at some revision (msgpack)."""
        return f"{self.namespace}:snap:{doc}"

    def checkpoints(self, doc: str) -> str:
        """Hash of revision number to a document's content at that revision (msgpack
        ``Snapshot``), every ``snapshot_every`` revisions: time travel starts there."""
        return f"{self.namespace}:snaps:{doc}"

    def projector(self, name: str) -> str:
        """Hash holding a projector's checkpoint: how far into the revisions stream the
        folder it keeps is written."""
        return f"{self.namespace}:projector:{name}"

    def patch_id(self, patch_id: str) -> str:
        """List holding the outcome of the patch that owns the id (the first well-formed
        entry decided under it): the idempotency record a replay is answered from."""
        return f"{self.namespace}:id:{patch_id}"

    def entry_outcome(self, entry: str) -> str:
        """List holding the outcome of one ingress entry (by the stream id XADD returned),
        written once, with a TTL: a client waits for its own submission's outcome with
        ``BLMOVE key key LEFT RIGHT timeout``."""
        return f"{self.namespace}:out:{entry}"

    def lease(self, group: str, consumer: str) -> str:
        """A worker's lease (heartbeat) on the entries it holds; expires when it dies."""
        return f"{self.namespace}:lease:{group}:{consumer}"
