"""The Python client: submit a patch, wait for the outcome of that submission."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

import msgspec
from redis.asyncio import Redis

from patchlog.streams.connection import check_server
from patchlog.streams.errors import NotDurable, ServerError, Timeout
from patchlog.streams.keys import Keys
from patchlog.streams.schema import IdRecord, Op, Outcome
from patchlog.streams.settings import Durability

__all__ = ["Client", "Submitted"]

_JSON = msgspec.json.Encoder()
_RECORD = msgspec.json.Decoder(IdRecord)


class Submitted(msgspec.Struct, frozen=True):
    """One accepted submission: what waiting for its own outcome needs."""

    id: str
    """The patch id (the idempotency key: give it again to retry harmlessly)."""
    entry: str
    """The ingress entry id XADD returned; its outcome is in ``Keys.entry_outcome``."""


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
    ) -> Submitted:
        """Append a patch to the ingress stream; return its patch id and entry id.

        Without ``id`` a random one is made, so that a retried call stays harmless. In
        strict durability this returns once the server fsynced the entry (WAITAOF), and
        raises ``NotDurable`` (carrying both ids) if it could not confirm that within
        5 s, and ``ServerRefused`` (before submitting anything) on a server without
        WAITAOF.
        """
        if self.durability is Durability.STRICT and not self._fsync_checked:
            (await check_server(self.redis)).require_waitaof()
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
        raw: Any = await self.redis.xadd(self.keys.patches, fields)  # type: ignore[arg-type]
        submitted = Submitted(patch_id, raw.decode() if isinstance(raw, bytes) else str(raw))
        if self.durability is Durability.STRICT:
            await self._confirm_fsync(submitted)
        return submitted

    async def _confirm_fsync(self, submitted: Submitted) -> None:
        """WAITAOF for the entry just appended; the caller must learn the ids either way."""
        where = f"patch {submitted.id} (entry {submitted.entry}) was appended but"
        try:
            local, _ = await self.redis.waitaof(1, 0, 5000)
        except ServerError as err:
            raise NotDurable(
                f"{where} its fsync is unconfirmed: {err}",
                patch_id=submitted.id,
                entry=submitted.entry,
            ) from err
        if int(local) < 1:
            raise NotDurable(
                f"{where} not fsynced within 5 s",
                patch_id=submitted.id,
                entry=submitted.entry,
            )

    async def outcome(self, patch_id: str) -> IdRecord | None:
        """The id record: the outcome of the patch that owns ``patch_id`` (the first
        well-formed one decided under it), or ``None`` if none owns it (yet)."""
        raw = await self.redis.lindex(self.keys.patch_id(patch_id), 0)
        return None if raw is None else _RECORD.decode(raw)

    async def wait(self, submitted: Submitted, timeout: float = 30.0) -> Outcome:
        """Block until this submission has its own outcome; raise ``Timeout`` after
        ``timeout`` s. A resubmission under a known id gets ``duplicate`` or the owner's
        rejection or noop, or ``rejected``/``id_reuse`` for another payload.

        The same single command works from any language:
        ``BLMOVE <ns>:out:<entry> <ns>:out:<entry> LEFT RIGHT <timeout>``.
        """
        key = self.keys.entry_outcome(submitted.entry)
        deadline = time.monotonic() + timeout
        while True:
            # One-second blocking slices keep every call under the client's socket timeout
            # (so ``timeout`` is honoured to about a second).
            left = deadline - time.monotonic()
            if left <= 0:
                raise Timeout(
                    f"no outcome for patch {submitted.id} (entry {submitted.entry}) "
                    f"within {timeout:g} s"
                )
            raw: Any = await self.redis.blmove(key, key, 1, "LEFT", "RIGHT")
            if raw is not None:
                return _RECORD.decode(raw)
