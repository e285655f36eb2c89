"""The server-side scripts (Lua, in ``streams/lua``), registered on a client.

Each script is sent once and then called by its sha (EVALSHA); redis-py reloads it
transparently after a server restart (NOSCRIPT).
"""

from __future__ import annotations

from importlib import resources

import msgspec
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

__all__ = ["Scripts", "load"]


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


def _source(name: str) -> str:
    return resources.files("patchlog.streams").joinpath("lua", f"{name}.lua").read_text("utf-8")


def _with_common(name: str) -> str:
    """A script after the helpers it shares (fence, ack, clock, id records)."""
    return _source("common") + _source(name)


def load(redis: Redis) -> Scripts:
    """Register every script on ``redis`` (nothing is sent until the first call)."""
    return Scripts(
        forward=redis.register_script(_with_common("forward")),
        commit=redis.register_script(_with_common("commit")),
        claim=redis.register_script(_source("claim")),
        dead=redis.register_script(_with_common("dead")),
    )
