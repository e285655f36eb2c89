"""The Python client: submit a patch, wait for its outcome."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

import msgspec
from redis.asyncio import Redis

from patchlog.streams.connection import check_server
from patchlog.streams.errors import ServerError, ServerRefused, Timeout
from patchlog.streams.keys import Keys
from patchlog.streams.schema import IdRecord, Op, Outcome
from patchlog.streams.settings import Durability

__all__ = ["Client"]

_JSON = msgspec.json.Encoder()
_RECORD = msgspec.json.Decoder(IdRecord)


class Client:
    """Submits patches to one namespace; async throughout, one Redis client shared."""

    def __init__(
        self, redis: Redis, keys: Keys, durability: Durability = Durability.NORMAL
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.durability = durability
        self._fsync_checked = False

    async def submit(
        self,
        doc: str,
        base: int,
        *,
        ops: Sequence[Op] | Sequence[dict[str, Any]] | None = None,
        diff: str | None = None,
        id: str | None = None,
        author: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> str:
        """Append a patch to the ingress stream; return its patch id.

        Without ``id`` a random one is made, so that a retried call stays harmless. In
        strict durability this returns once the server fsynced the entry (WAITAOF), and
        raises ``ServerError`` if it could not confirm that within 5 s, and
        ``ServerRefused`` (before submitting anything) on a server without WAITAOF.
        """
        if self.durability is Durability.STRICT and not self._fsync_checked:
            info = await check_server(self.redis)
            if info.product == "redis" and info.version < (7, 2, 0):
                raise ServerRefused(
                    "strict durability needs WAITAOF (Redis 7.2 or later, or Valkey); "
                    f"this server is Redis {'.'.join(map(str, info.version))}"
                )
            self._fsync_checked = True
        patch_id = id or uuid.uuid4().hex
        fields: dict[str, str | bytes] = {"doc": doc, "base": str(base), "id": patch_id}
        if ops is not None:
            fields["ops"] = _JSON.encode(list(ops))
        if diff is not None:
            fields["diff"] = diff
        if author is not None:
            fields["author"] = author
        if meta is not None:
            fields["meta"] = _JSON.encode(meta)
        await self.redis.xadd(self.keys.patches, fields)  # type: ignore[arg-type]
        if self.durability is Durability.STRICT:
            local, _ = await self.redis.waitaof(1, 0, 5000)
            if int(local) < 1:
                raise ServerError(f"patch {patch_id} was not fsynced within 5 s")
        return patch_id

    async def outcome(self, patch_id: str) -> IdRecord | None:
        """The latest outcome of a patch id, or ``None`` if it has none (yet)."""
        raw = await self.redis.lindex(self.keys.patch_id(patch_id), 0)
        return None if raw is None else _RECORD.decode(raw)

    async def wait(self, patch_id: str, timeout: float = 30.0) -> Outcome:
        """Block until the patch id has an outcome; raise ``Timeout`` after ``timeout`` s.

        The same single command works from any language:
        ``BLMOVE <ns>:id:<id> <ns>:id:<id> LEFT RIGHT <timeout>``.
        """
        key = self.keys.patch_id(patch_id)
        deadline = time.monotonic() + timeout
        while True:
            # One-second blocking slices keep every call under the client's socket timeout
            # (so ``timeout`` is honoured to about a second).
            left = deadline - time.monotonic()
            if left <= 0:
                raise Timeout(f"no outcome for patch {patch_id} within {timeout:g} s")
            raw: Any = await self.redis.blmove(key, key, 1, "LEFT", "RIGHT")
            if raw is not None:
                return _RECORD.decode(raw)
