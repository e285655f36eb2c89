"""patchlog purge: a document's keys, its revisions on request, or a whole namespace,
and never a key of another document or namespace, however their names begin."""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec
import pytest
from redis.asyncio import Redis

from patchlog.ops import purge
from patchlog.ops.clibase import Exit
from patchlog.projections.load import read_document
from patchlog.streams.client import Client
from patchlog.streams.scripts import Scripts
from patchlog.streams.settings import Settings
from tests.integration.helpers import drain, patchlog

DOCS = ("a", "ab", "a/b")
"""A document, and two whose names start with its name."""


def where(settings: Settings) -> list[str]:
    """The CLI options naming the test's server and namespace."""
    assert settings.redis_url is not None
    return ["--redis-url", settings.redis_url, "--namespace", settings.namespace]


async def write(redis: Redis, settings: Settings, scripts: Scripts, docs: tuple[str, ...]) -> None:
    """Three revisions of each document through the pipeline (with a checkpoint and a
    snapshot every two), and each one strict."""
    client = Client(redis, settings.keys)
    for rev in range(3):
        for doc in docs:
            await client.submit(doc, rev, ops=[{"op": "insert", "at": 1, "lines": [f"{doc}{rev}"]}])
    await drain(redis, settings, scripts)
    for doc in docs:
        assert (await read_document(redis, settings.keys, doc))[0] == 3
        await redis.hset(settings.keys.strict, doc, "1")


async def keys_of(redis: Redis, namespace: str) -> set[bytes]:
    """Every key named ``<namespace>:...``, matched here by prefix, not by a pattern."""
    prefix = namespace.encode() + b":"
    return {key async for key in redis.scan_iter(count=1000) if key.startswith(prefix)}


async def logged(redis: Redis, settings: Settings) -> Counter[str]:
    """Revisions in the log per document."""
    rows: Any = await redis.xrange(settings.keys.revisions)
    return Counter(fields[b"doc"].decode() for _, fields in rows)


@pytest.fixture
def every2(settings: Settings) -> Settings:
    """The test's settings with a checkpoint and a snapshot every two revisions."""
    return msgspec.structs.replace(settings, snapshot_every=2)


async def test_purge_doc_removes_its_keys_only_and_its_history_on_request(
    redis: Redis, every2: Settings, scripts: Scripts
) -> None:
    """purge --doc a removes a's head, index, snapshot, checkpoints, strict flag and
    member of the document set, nothing of ab or a/b, and keeps a's revisions; --history
    is refused without --yes, and with it removes exactly that document's revisions."""
    settings, keys = every2, every2.keys
    await write(redis, settings, scripts, DOCS)
    before = await keys_of(redis, settings.namespace)
    own = {k.encode() for k in purge.doc_keys(keys, "a").values()}
    assert own <= before  # every kind exists, so each count below is 1

    status, out, err = await patchlog("purge", "--doc", "a", *where(settings))
    assert status == Exit.OK, err
    lines = out.splitlines()
    assert lines[0].startswith(f"purged document 'a' in namespace {settings.namespace!r} on ")
    assert [line.split() for line in lines[1:]] == [
        ["head", "1"],
        ["index", "1"],
        ["snapshot", "1"],
        ["checkpoints", "1"],
        ["strict", "1"],
        ["listed", "1"],
        ["revisions", "kept", "in", keys.revisions, "(--history", "--yes)"],
    ]
    assert await keys_of(redis, settings.namespace) == before - own
    assert set(await redis.hkeys(keys.strict)) == {b"ab", b"a/b"}
    assert await redis.smembers(keys.docs) == {b"ab", b"a/b"}
    assert await logged(redis, settings) == {"a": 3, "ab": 3, "a/b": 3}
    assert await read_document(redis, keys, "ab") == (3, ["ab2", "ab1", "ab0"])
    assert await read_document(redis, keys, "a/b") == (3, ["a/b2", "a/b1", "a/b0"])

    status, _, err = await patchlog("purge", "--doc", "ab", "--history", *where(settings))
    assert status == Exit.USAGE
    assert "--yes" in err
    assert await logged(redis, settings) == {"a": 3, "ab": 3, "a/b": 3}

    status, out, err = await patchlog("purge", "--doc", "a", "--history", "--yes", *where(settings))
    assert status == Exit.OK, err
    assert out.splitlines()[-1].split() == ["revisions", "3"]
    assert await logged(redis, settings) == {"ab": 3, "a/b": 3}
    assert await keys_of(redis, settings.namespace) == before - own


async def test_history_is_found_across_pages_of_the_log(
    redis: Redis, settings: Settings, scripts: Scripts, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With pages of two entries, every revision of the document is found and deleted
    (the paging of a long log), and no other document's."""
    await write(redis, settings, scripts, DOCS)
    monkeypatch.setattr(purge, "_PAGE", 2)
    done = await purge.purge_doc(redis, settings.keys, "ab", history=True)
    assert done.revisions == 3
    assert (done.head, done.index, done.strict, done.listed) == (1, 1, 1, 1)
    assert await logged(redis, settings) == {"a": 3, "a/b": 3}
    again = await purge.purge_doc(redis, settings.keys, "ab", history=True)
    assert msgspec.structs.asdict(again) == {
        "doc": "ab",
        **dict.fromkeys(purge.DOC_KINDS, 0),
        "revisions": 0,
    }


async def test_purge_all_removes_its_namespace_and_nothing_else(
    redis: Redis, settings: Settings, scripts: Scripts
) -> None:
    """purge --all is refused without --yes; with it, it leaves no key of its namespace
    and every key of namespaces that share its prefix (ns2) or that its name as a
    pattern would match (ns* would glob ns and ns2)."""
    namespaces = [settings.namespace, settings.namespace + "2", settings.namespace + "*"]
    each = [msgspec.structs.replace(settings, namespace=ns) for ns in namespaces]
    for one in each:
        await write(redis, one, scripts, ("a", "b"))
    ours, *others = [await keys_of(redis, ns) for ns in namespaces]
    assert all(others)

    status, _, err = await patchlog("purge", "--all", *where(settings))
    assert status == Exit.USAGE
    assert "--yes" in err
    assert await keys_of(redis, settings.namespace) == ours

    status, out, err = await patchlog("purge", "--all", "--yes", *where(each[2]))
    assert status == Exit.OK, err
    assert await keys_of(redis, namespaces[2]) == set()
    assert await keys_of(redis, namespaces[0]) == ours
    assert await keys_of(redis, namespaces[1]) == others[0]

    status, out, err = await patchlog("purge", "--all", "--yes", *where(settings))
    assert status == Exit.OK, err
    assert await keys_of(redis, settings.namespace) == set()
    assert await keys_of(redis, namespaces[1]) == others[0]
    kinds = Counter(purge.kind_of(settings.namespace, key) for key in ours)
    first, *counts = out.splitlines()
    assert first.endswith(f": {len(ours)} keys")
    assert {k: int(n) for k, n in (line.split() for line in counts)} == kinds
    assert {"doc", "idx", "id", "revisions", "patches", "strict", "docs"} <= set(kinds)
