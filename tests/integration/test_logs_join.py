"""The logs of real worker processes, as an operator greps them: every line is one JSON
record, and the lines of one patch in both stages join on its patch id (and its ingress
entry id, ``src``), with the document, the revision, the stage and the worker on each."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from redis.asyncio import Redis

from patchlog.ops.config import settings_env
from patchlog.ops.logs import LEVEL_ENV
from patchlog.streams.client import Client
from patchlog.streams.settings import Settings
from tests.integration.helpers import patchlog


def insert(n: int) -> list[dict[str, Any]]:
    """An insert of its own line (equal inserts on one base would be noops)."""
    return [{"op": "insert", "at": 1, "lines": [f"x{n}"]}]


def records(stderr: str) -> list[dict[str, Any]]:
    """Every line of a worker's stderr as a JSON object; anything else fails the test."""
    out = []
    for line in stderr.splitlines():
        record = json.loads(line)  # a line that is not one JSON record fails here
        assert isinstance(record, dict), line
        assert {"event", "level", "timestamp"} <= set(record), line
        out.append(record)
    return out


async def test_one_patchs_lines_join_across_both_stages(redis: Redis, settings: Settings) -> None:
    """Committed, rejected in either stage and duplicate patches: each submission has
    exactly one line per stage it reached, joined by id and src, carrying doc, base,
    rev, stage and worker; each batch has one info line counting its outcomes."""
    client = Client(redis, settings.keys)
    committed = [await client.submit(f"d{n % 2}", 0, ops=insert(n), id=f"c{n}") for n in range(8)]
    again = await client.submit("d0", 0, ops=insert(0), id="c0")  # the same payload: duplicate
    far = await client.submit("d1", 0, ops=[{"op": "delete", "from": 90}], id="far")
    bad: Any = await redis.xadd(
        settings.keys.patches, {"doc": "d0", "base": "0", "ops": "[{", "id": "bad"}
    )
    env = {**settings_env(settings), LEVEL_ENV: "debug"}
    status, _, normalize_err = await patchlog(
        "worker", "normalize", "--burst", "--name", "norm-1", env=env
    )
    assert status == 0, normalize_err
    status, _, execute_err = await patchlog(
        "worker", "execute", "--burst", "--name", "exec-1", env=env
    )
    assert status == 0, execute_err

    lines: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    batches: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for stage, stderr in (("normalize", normalize_err), ("execute", execute_err)):
        for record in records(stderr):
            if record["event"] == "batch":
                batches[stage].append(record)
            elif "src" in record:
                lines[record["src"]][stage].append(record)

    revisions: Any = await redis.xrange(settings.keys.revisions, "-", "+")
    rev_of = {f[b"id"].decode(): int(f[b"rev"]) for _, f in revisions}
    worker = {"normalize": "norm-1", "execute": "exec-1"}

    def joined(src: str, patch_id: str, doc: str) -> dict[str, dict[str, Any]]:
        """The one line per stage of the submission ``src``, checked for what every
        such line carries."""
        found = {}
        for stage, mine in lines[src].items():
            assert len(mine) == 1, mine
            line = mine[0]
            assert (line["id"], line["doc"]) == (patch_id, doc), line
            assert (line["stage"], line["consumer"]) == (stage, worker[stage]), line
            found[stage] = line
        return found

    for submitted in committed:
        doc = f"d{int(submitted.id[1:]) % 2}"
        both = joined(submitted.entry, submitted.id, doc)
        assert both["normalize"]["event"] == "forwarded"
        assert both["normalize"]["level"] == "debug"
        assert both["normalize"]["base"] == 0
        assert both["execute"]["event"] == "committed"
        assert both["execute"]["level"] == "debug"
        assert both["execute"]["base"] == 0
        assert both["execute"]["rev"] == rev_of[submitted.id]

    both = joined(again.entry, "c0", "d0")
    assert (both["normalize"]["event"], both["execute"]["event"]) == ("forwarded", "duplicate")
    assert both["execute"]["rev"] == rev_of["c0"]

    both = joined(far.entry, "far", "d1")
    assert both["normalize"]["event"] == "forwarded"
    assert (both["execute"]["event"], both["execute"]["code"]) == ("rejected", "bounds")
    assert both["execute"]["rev"] == 4  # the head it was checked against

    only = joined(bad.decode(), "bad", "d0")
    assert set(only) == {"normalize"}  # it never reached execute
    assert (only["normalize"]["event"], only["normalize"]["code"]) == ("rejected", "invalid")
    assert only["normalize"]["level"] == "info"
    assert "JSON" in only["normalize"]["message"] or "json" in only["normalize"]["message"]

    def total(stage: str, what: str) -> int:
        return sum(b.get(what, 0) for b in batches[stage])

    for stage in ("normalize", "execute"):
        for batch in batches[stage]:
            assert batch["level"] == "info"
            assert (batch["stage"], batch["consumer"]) == (stage, worker[stage])
            assert batch["seconds"] >= 0
    assert (total("normalize", "forwarded"), total("normalize", "rejected")) == (10, 1)
    assert total("normalize", "entries") == 11
    assert (total("execute", "committed"), total("execute", "rejected")) == (8, 1)
    assert total("execute", "duplicate") == 1
