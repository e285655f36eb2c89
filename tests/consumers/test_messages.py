"""The internal normalized entry: versioned, and an unknown version is a clear error."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from redis.asyncio import Redis

from patchlog.consumers.execute import ExecuteStage
from patchlog.consumers.messages import (
    NORMALIZED_VERSION,
    NormalizedPatch,
    decode_normalized,
    encode_normalized,
)
from patchlog.projections.patch import Splice
from patchlog.streams.errors import CorruptEntry
from patchlog.streams.scripts import load
from patchlog.streams.settings import Settings

PATCH = NormalizedPatch(
    id="agent-7:42",
    src="1-0",
    doc="notes/todo.md",
    base=3,
    digest="ab" * 32,
    author="agent-7",
    splices=(Splice(4, 5, ()), Splice(1, 2, ("x",))),
)


def as_array(patch: NormalizedPatch) -> list[Any]:
    """The encoded entry as a plain array, to write other versions of it."""
    decoded: list[Any] = msgspec.msgpack.decode(encode_normalized(patch))
    return decoded


def test_an_entry_carries_its_version_and_round_trips() -> None:
    """A normalized entry is written with the current version and decodes unchanged."""
    assert PATCH.v == NORMALIZED_VERSION
    assert as_array(PATCH)[-1] == NORMALIZED_VERSION
    assert decode_normalized(encode_normalized(PATCH)) == PATCH


def test_an_entry_written_before_the_version_field_reads_as_version_1() -> None:
    """Entries in flight from before the field existed (no trailing version) still decode."""
    old = msgspec.msgpack.encode(as_array(PATCH)[:-1])
    assert decode_normalized(old) == PATCH


@pytest.mark.parametrize("extra", [[], ["a field of the future"]])
def test_an_entry_of_a_newer_version_is_a_clear_error(extra: list[str]) -> None:
    """A newer writer's entry (a rolling upgrade) raises CorruptEntry naming the version
    seen and the version supported, whether or not it has more fields."""
    newer = msgspec.msgpack.encode([*as_array(PATCH)[:-1], NORMALIZED_VERSION + 1, *extra])
    with pytest.raises(CorruptEntry) as info:
        decode_normalized(newer)
    assert str(info.value) == (
        f"normalized entry of version {NORMALIZED_VERSION + 1}; "
        f"this worker reads version {NORMALIZED_VERSION}"
    )


def test_an_entry_that_does_not_decode_names_the_version_it_claims() -> None:
    """A newer layout that no longer decodes here still says which version it is."""
    changed = as_array(PATCH)
    changed[3] = "three"  # base changed type in this imagined version
    changed[-1] = 7
    with pytest.raises(CorruptEntry, match=r"^normalized entry of version 7 does not decode \("):
        decode_normalized(msgspec.msgpack.encode(changed))
    with pytest.raises(CorruptEntry, match=r"version unknown \(not msgpack\) does not decode"):
        decode_normalized(b"\xc1")


async def test_execute_identifies_an_unreadable_entry_by_its_id() -> None:
    """Execute names an entry it cannot read by the entry id, with no ingress entry (for
    its dead letter), instead of raising."""
    redis = Redis()
    stage = ExecuteStage(redis, Settings(), load(redis))
    newer = msgspec.msgpack.encode([*as_array(PATCH)[:-1], NORMALIZED_VERSION + 1])
    assert stage.identify(("5-0", {b"p": newer})) == ("5-0", "", "")
    assert stage.identify(("5-1", {b"p": encode_normalized(PATCH)})) == (
        PATCH.id,
        PATCH.doc,
        PATCH.src,
    )
    await redis.aclose()
