"""patchlog dead: real dead letters, made by the real stages, listed, shown, retried and
dropped through the command line."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from redis.asyncio import Redis

from patchlog.ops.clibase import Exit
from patchlog.ops.dead import retry
from patchlog.projections.load import read_document
from patchlog.streams.codec import decode_event
from patchlog.streams.keys import EXECUTE, NORMALIZE, Keys
from patchlog.streams.schema import DeadLetter, OutcomeStatus, RejectCode
from patchlog.streams.scripts import Scripts
from patchlog.streams.settings import Settings
from tests.integration.helpers import drain, outcomes, own_outcome, patchlog, runners

OPS = '[{"op":"insert","at":1,"lines":["x"]}]'


def where(settings: Settings) -> list[str]:
    """The CLI options naming the test's server and namespace."""
    assert settings.redis_url is not None
    return ["--redis-url", settings.redis_url, "--namespace", settings.namespace]


async def normalize_fails(
    redis: Redis, settings: Settings, scripts: Scripts, *entries: dict[str, str]
) -> list[str]:
    """Submit ``entries`` while a string sits where the normalized stream goes: every
    forward fails (WRONGTYPE) until normalize dead-letters each entry. Their ingress ids.
    The string stays: the test removes the cause."""
    await redis.set(settings.keys.normalized, "in the way")
    ids: list[str] = []
    for fields in entries:
        entry: Any = await redis.xadd(settings.keys.patches, fields)  # type: ignore[arg-type]
        ids.append(entry.decode())
    workers = runners(redis, settings, scripts, execute=0)
    await asyncio.wait_for(asyncio.gather(*(w.run() for w in workers)), 60)
    return ids


async def letters(redis: Redis, settings: Settings) -> dict[str, DeadLetter]:
    """Every dead letter by its id, oldest first."""
    rows: Any = await redis.xrange(settings.keys.dead)
    return {raw.decode(): decode_event(DeadLetter, fields) for raw, fields in rows}


async def revisions(redis: Redis, settings: Settings) -> list[dict[bytes, bytes]]:
    """Every revision entry's fields."""
    rows: Any = await redis.xrange(settings.keys.revisions)
    return [fields for _, fields in rows]


async def test_a_dead_letter_listed_shown_fixed_and_retried_commits(
    redis: Redis, settings: Settings, scripts: Scripts
) -> None:
    """A patch normalize could not forward five times is listed and shown; once the
    cause is gone, retry puts it back (new entry id, same fields) and it commits."""
    sent = {"doc": "d", "base": "0", "ops": OPS, "id": "p1", "author": "ann"}
    (src,) = await normalize_fails(redis, settings, scripts, sent)
    told = await own_outcome(redis, settings, src)
    assert (told.status, told.code) == (OutcomeStatus.REJECTED, RejectCode.INVALID)
    [(letter_id, letter)] = (await letters(redis, settings)).items()
    assert (letter.stage, letter.deliveries, letter.src) == (NORMALIZE, 5, src)

    status, out, err = await patchlog("dead", "list", *where(settings))
    assert status == Exit.OK, err
    header, row = out.splitlines()
    assert header.split()[:3] == ["id", "time", "(UTC)"]
    assert row.split()[0] == letter_id
    assert f" {NORMALIZE} " in row
    assert " 5 " in row
    assert " d " in row
    assert " p1 " in row
    assert "WRONGTYPE" in row

    status, out, err = await patchlog("dead", "list", "--json", *where(settings))
    assert status == Exit.OK, err
    [listed] = [json.loads(line) for line in out.splitlines()]
    assert listed["id"] == letter_id
    assert (listed["stage"], listed["deliveries"], listed["doc"], listed["patch_id"]) == (
        NORMALIZE,
        5,
        "d",
        "p1",
    )
    assert listed["src"] == src
    assert listed["cut"] is False

    status, out, err = await patchlog("dead", "show", letter_id, *where(settings))
    assert status == Exit.OK, err
    shown = json.loads(out)
    assert shown["entry"] == sent  # decoded: an object, not JSON text
    assert (shown["id"], shown["stage"], shown["src"]) == (letter_id, NORMALIZE, src)
    assert (shown["stream"], shown["original"], shown["retry"]) == (
        settings.keys.patches,
        True,
        None,
    )
    assert "WRONGTYPE" in shown["error"]

    await redis.delete(settings.keys.normalized)  # the cause, removed
    status, out, err = await patchlog("dead", "retry", letter_id, *where(settings))
    assert status == Exit.OK, err
    assert out.startswith(f"retried {letter_id} ({NORMALIZE}, doc 'd', id 'p1') as ")
    new = out.split(" as ", 1)[1].split()[0]
    assert new != src
    assert await letters(redis, settings) == {}
    rows: Any = await redis.xrange(settings.keys.patches, new, new)
    assert {k.decode(): v.decode() for k, v in rows[0][1].items()} == sent

    await drain(redis, settings, scripts)
    assert await read_document(redis, settings.keys, "d") == (1, ["x"])
    answer = await own_outcome(redis, settings, new)
    assert (answer.status, answer.rev, answer.id) == (OutcomeStatus.COMMITTED, 1, "p1")

    status, _, err = await patchlog("dead", "retry", letter_id, *where(settings))
    assert status == Exit.NOT_FOUND
    assert letter_id in err
    assert err.count("\n") == 1


async def test_retrying_a_patch_that_committed_since_answers_duplicate(
    redis: Redis, settings: Settings, scripts: Scripts
) -> None:
    """The submitter sent its patch again (same id) and it committed; retrying the dead
    letter of the first attempt is answered duplicate and makes no second revision."""
    sent = {"doc": "d", "base": "0", "ops": OPS, "id": "p2"}
    await normalize_fails(redis, settings, scripts, sent)
    await redis.delete(settings.keys.normalized)
    again: Any = await redis.xadd(settings.keys.patches, sent)  # type: ignore[arg-type]
    await drain(redis, settings, scripts)
    assert (await own_outcome(redis, settings, again)).status is OutcomeStatus.COMMITTED

    status, out, err = await patchlog("dead", "retry", "--all", *where(settings))
    assert status == Exit.OK, err
    lines = out.splitlines()
    assert lines[-1] == "1 retried, 0 refused"
    assert "its id was already decided (committed, revision 1): answered from that record" in out
    new = lines[0].split(" as ", 1)[1].split()[0]

    await drain(redis, settings, scripts)
    answer = await own_outcome(redis, settings, new)
    assert (answer.status, answer.rev, answer.id) == (OutcomeStatus.DUPLICATE, 1, "p2")
    assert len(await revisions(redis, settings)) == 1
    assert await read_document(redis, settings.keys, "d") == (1, ["x"])
    assert await letters(redis, settings) == {}


async def test_execute_dead_letters_are_retried_from_their_stream_while_it_holds_them(
    redis: Redis, settings: Settings, scripts: Scripts
) -> None:
    """Execute's entries are msgpack, so a dead letter's copy is not the entry: retry
    takes the entry from the normalized stream while it is there, and refuses, naming
    why, once it is not."""
    for patch_id in ("c1", "c2"):  # a damaged id record: the commit script refuses
        await redis.rpush(settings.keys.patch_id(patch_id), "{not json")
    for patch_id, doc in (("c1", "d1"), ("c2", "d2")):
        await redis.xadd(
            settings.keys.patches, {"doc": doc, "base": "0", "ops": OPS, "id": patch_id}
        )
    await drain(redis, settings, scripts, timeout=60)
    found = await letters(redis, settings)
    assert [d.stage for d in found.values()] == [EXECUTE, EXECUTE]
    by_doc: dict[str, str] = {}

    status, out, err = await patchlog("dead", "list", "--json", *where(settings))
    assert status == Exit.OK, err
    for line in out.splitlines():
        row = json.loads(line)
        by_doc[row["doc"]] = row["id"]
        assert row["patch_id"] == {"d1": "c1", "d2": "c2"}[row["doc"]]
    assert sorted(by_doc) == ["d1", "d2"]

    status, out, err = await patchlog("dead", "show", by_doc["d1"], *where(settings))
    assert status == Exit.OK, err
    shown = json.loads(out)
    assert (shown["stream"], shown["original"], shown["retry"]) == (
        settings.keys.normalized,
        True,
        None,
    )
    assert (shown["patch"]["id"], shown["patch"]["doc"], shown["patch"]["ops"]) == (
        "c1",
        "d1",
        json.loads(OPS),
    )

    # The second one's entry is trimmed from the normalized stream, as it would be.
    gone = found[by_doc["d2"]].src
    assert await redis.xdel(settings.keys.normalized, gone) == 1
    status, out, err = await patchlog("dead", "show", by_doc["d2"], *where(settings))
    assert status == Exit.OK, err
    trimmed = "no longer there (the stream was trimmed past it)"
    assert json.loads(out)["retry"].endswith(trimmed)
    status, _, err = await patchlog("dead", "retry", by_doc["d2"], *where(settings))
    assert status == Exit.NO
    assert f"dead letter {by_doc['d2']}: its copy of the entry is not all text" in err
    assert f"the original ({gone} in {settings.keys.normalized}) is no longer there" in err

    for patch_id in ("c1", "c2"):
        await redis.delete(settings.keys.patch_id(patch_id))  # the cause, removed
    status, out, err = await patchlog("dead", "retry", "--all", *where(settings))
    assert status == Exit.NO, err
    assert f"retried {by_doc['d1']} ({EXECUTE}, doc 'd1', id 'c1') as " in out
    assert f"in {settings.keys.normalized}" in out
    assert f"refused {by_doc['d2']}: " in out
    assert out.splitlines()[-1] == f"1 retried, 1 refused (left in {settings.keys.dead})"
    assert list(await letters(redis, settings)) == [by_doc["d2"]]

    await drain(redis, settings, scripts)
    assert await read_document(redis, settings.keys, "d1") == (1, ["x"])
    assert await read_document(redis, settings.keys, "d2") == (0, [])
    committed = [o for o in await outcomes(redis, settings) if o.id == "c1"]
    assert [o.status for o in committed] == [OutcomeStatus.REJECTED, OutcomeStatus.COMMITTED]


async def test_a_cut_dead_letter_is_retried_only_from_its_verified_original(
    redis: Redis, settings: Settings, scripts: Scripts
) -> None:
    """A dead letter holds a cut copy of a large entry: retry puts back the original
    from the ingress stream (same size and digest), and refuses once it is gone."""
    long_line = "y" * 9000  # over the 8 KiB a dead letter keeps
    ops = json.dumps([{"op": "insert", "at": 1, "lines": [long_line]}])
    big = [{"doc": doc, "base": "0", "ops": ops} for doc in ("big1", "big2")]
    srcs = await normalize_fails(redis, settings, scripts, *big)
    found = await letters(redis, settings)
    ids = {d.src: i for i, d in found.items()}
    assert all(d.entry_bytes is not None for d in found.values())
    await redis.delete(settings.keys.normalized)
    assert await redis.xdel(settings.keys.patches, srcs[1]) == 1

    status, _, err = await patchlog("dead", "retry", ids[srcs[1]], *where(settings))
    assert status == Exit.NO
    assert "its entry was cut to 8192 bytes of JSON" in err
    assert "no longer there" in err
    status, out, err = await patchlog("dead", "retry", ids[srcs[0]], *where(settings))
    assert status == Exit.OK, err
    assert out.startswith(f"retried {ids[srcs[0]]} ({NORMALIZE}, doc 'big1') as ")

    await drain(redis, settings, scripts)
    assert await read_document(redis, settings.keys, "big1") == (1, [long_line])
    assert list(await letters(redis, settings)) == [ids[srcs[1]]]


async def test_drop_one_and_drop_all_which_needs_yes(
    redis: Redis, settings: Settings, scripts: Scripts
) -> None:
    """drop ID deletes one; a missing one is status 4; --all without --yes is status 2
    naming the flag and deletes nothing; --all --yes deletes every one."""
    await normalize_fails(
        redis,
        settings,
        scripts,
        *({"doc": f"d{i}", "base": "0", "ops": OPS} for i in range(3)),
    )
    first, *rest = await letters(redis, settings)

    status, out, err = await patchlog("dead", "drop", first, *where(settings))
    assert (status, out) == (Exit.OK, f"dropped {first}\n"), err
    status, _, err = await patchlog("dead", "drop", first, *where(settings))
    assert status == Exit.NOT_FOUND
    assert f"no dead letter {first} in {settings.keys.dead}" in err

    status, _, err = await patchlog("dead", "drop", "--all", *where(settings))
    assert status == Exit.USAGE
    assert "--yes" in err
    assert list(await letters(redis, settings)) == rest
    status, _, err = await patchlog("dead", "drop", *where(settings))
    assert status == Exit.USAGE
    status, _, err = await patchlog("dead", "show", "nonsense", *where(settings))
    assert status == Exit.USAGE

    status, out, err = await patchlog("dead", "drop", "--all", "--yes", *where(settings))
    assert (status, out) == (Exit.OK, f"dropped 2 dead letters from {settings.keys.dead}\n"), err
    assert await letters(redis, settings) == {}


async def test_an_execute_dead_letter_goes_back_to_its_documents_stream_after_a_new_count(
    redis: Redis, settings: Settings, scripts: Scripts
) -> None:
    """A letter read from ``normalized`` before the partition count went from 1 to 2 is
    retried into the stream its document is read from now, not one nobody reads."""
    await redis.rpush(settings.keys.patch_id("c1"), "{not json")  # the commit refuses
    await redis.xadd(settings.keys.patches, {"doc": "d1", "base": "0", "ops": OPS, "id": "c1"})
    await drain(redis, settings, scripts, timeout=60)
    (letter_id,) = await letters(redis, settings)
    await redis.delete(settings.keys.patch_id("c1"))
    two = Keys(settings.namespace, 2)
    retried = await retry(redis, two, letter_id)
    assert retried.stream == two.normalized_of("d1") != settings.keys.normalized
    entries: Any = await redis.xrange(retried.stream)
    assert [e.decode() for e, _ in entries] == [retried.entry]
