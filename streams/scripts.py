"""The server-side scripts (Lua, in ``streams/lua``), registered on a client, and the
rows of their per-entry arguments.

Each script is sent once and then called by its sha (EVALSHA); redis-py reloads it
transparently after a server restart (NOSCRIPT). A row is an array-like struct: msgpack
sends it as an array, and the script reads each position through a named constant
declared, in the struct's field order, at the top of its Lua file (a test compares them).
"""

from __future__ import annotations

from importlib import resources
from typing import Literal

import msgspec
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

__all__ = ["CommitKind", "CommitRow", "ForwardKind", "ForwardRow", "Scripts", "load"]

CommitKind = Literal["c", "r", "n", "x"]
"""How execute decided a patch: commit, reject, noop, or a final rejection (the script
checks neither the head nor the id record)."""

ForwardKind = Literal["f", "r"]
"""What normalize does with an ingress entry: forward it, or reject it."""


class CommitRow(msgspec.Struct, array_like=True, frozen=True, kw_only=True):
    """One decided patch for ``commit.lua``, an element of the msgpack array in ARGV[7].

    Positions (Lua, 1-based): 1 ``entry``, 2 ``kind``, 3 ``head``, 4 ``prev``, 5 ``src``,
    6 ``digest``, 7 ``outcome``, 8 ``record``, 9 ``revision``, 10 ``hash``, 11 ``lines``,
    12 ``prevsrc``, 13 ``doc``. Append new fields; never reorder them.
    """

    entry: str
    """Id of the normalized entry, acknowledged with the commit."""
    kind: CommitKind
    head: int
    """Revision the decision was computed on."""
    prev: str
    """Content hash of revision ``head``."""
    src: str
    """Ingress entry id of the patch."""
    digest: str
    """Payload digest of the patch (``streams.codec.payload_digest``)."""
    outcome: tuple[str, ...]
    """Outcome fields ``[name, value, ...]`` without ``at`` (``event_fields``)."""
    record: str
    """The outcome plus digest as JSON (an ``IdRecord``): written to the ingress entry's
    outcome key, and as the id record when the patch takes its id."""
    revision: tuple[str, ...] = ()
    """Revision fields without ``at`` (``event_fields``) for a commit, else empty."""
    hash: str = ""
    """Content hash of the new revision (commit)."""
    lines: int = 0
    """Line count of the new revision (commit)."""
    prevsrc: str = ""
    """Src of the patch that made revision ``head`` ('' for revision 0)."""
    doc: str = ""
    """The document."""


class ForwardRow(msgspec.Struct, array_like=True, frozen=True, kw_only=True):
    """One ingress entry for ``forward.lua``, an element of the msgpack array in ARGV[6];
    a forwarded entry's normalized patch travels apart, as raw bytes in ARGV[6+i].

    Positions (Lua, 1-based): 1 ``entry``, 2 ``kind``, 3 ``outcome``, 4 ``record``,
    5 ``stream``. Append new fields; never reorder them.
    """

    entry: str
    """Id of the ingress entry, acknowledged by the script."""
    kind: ForwardKind
    outcome: tuple[str, ...] = ()
    """Rejection: outcome fields ``[name, value, ...]`` without ``at`` (``event_fields``)."""
    record: str = ""
    """Rejection: the outcome as JSON, for the ingress entry's outcome key."""
    stream: int = 2
    """Forward: the position in KEYS (1-based) of the normalized stream it goes to."""


class Scripts(msgspec.Struct, frozen=True, dict=True):
    """Registered scripts of one client."""

    forward: AsyncScript
    """Normalize: forward or reject, and ack, a batch of ingress entries."""
    commit: AsyncScript
    """Execute: commit, reject or noop, and ack, a batch of normalized patches."""
    claim: AsyncScript
    """Runner: take over the pending entries of a consumer whose lease expired."""
    dead: AsyncScript
    """Runner: move an entry that keeps failing to the dead-letter stream."""
    partition: AsyncScript
    """Execute: membership and the leases of the partitions (``consumers.partitions``)."""


def _source(name: str) -> str:
    return resources.files("patchlog.streams").joinpath("lua", f"{name}.lua").read_text("utf-8")


def _with_common(name: str) -> str:
    """A script after the helpers it shares (fence, ack, clock, outcome keys)."""
    return _source("common") + _source(name)


def load(redis: Redis) -> Scripts:
    """Register every script on ``redis`` (nothing is sent until the first call)."""
    return Scripts(
        forward=redis.register_script(_with_common("forward")),
        commit=redis.register_script(_with_common("commit")),
        claim=redis.register_script(_source("claim")),
        dead=redis.register_script(_with_common("dead")),
        partition=redis.register_script(_source("partition")),
    )
