"""The two baselines ``patchlog bench`` runs beside patchlog, on the same server.

- raw ceiling: the same kind of stream entries written, read and acknowledged by one
  pipelined client that does no processing at all;
- naive pipeline: what a user would write first: one entry at a time, the document as
  a JSON list in one key, WATCH/MULTI/EXEC per patch (state, revision, outcome, ack).
  ``naive_consumer`` runs it as its own process under the bench's offered load
  (``python -m patchlog.ops.baselines URL NAMESPACE``), exactly where patchlog's workers run;
  ``naive_pipeline`` times it alone, draining a prepared backlog.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import sys
import time
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError, WatchError

from patchlog.ops.randomops import ops_json, spread_ops
from patchlog.streams.keys import Keys
from patchlog.streams.settings import Settings

__all__ = ["naive_consumer", "naive_pipeline", "raw_ceiling"]

_GROUP = "naive"


async def raw_ceiling(redis: Redis, prefix: str, count: int, lines: int = 100) -> float:
    """Entries per second written (pipelined), read in batches and acknowledged."""
    stream = f"{prefix}:raw"
    rng = random.Random(3)
    payloads = [ops_json(spread_ops(rng, lines, n)) for n in range(count)]
    await redis.xgroup_create(stream, "g", id="0", mkstream=True)
    started = time.perf_counter()
    for start in range(0, count, 1000):
        async with redis.pipeline(transaction=False) as pipe:
            for n in range(start, min(count, start + 1000)):
                pipe.xadd(stream, {"doc": f"d{n % 1000}", "base": "1", "ops": payloads[n]})
            await pipe.execute()
    done = 0
    while done < count:
        reply: Any = await redis.xreadgroup("g", "c", {stream: ">"}, count=1000)
        ids = [eid for eid, _ in reply[0][1]]
        await redis.xack(stream, "g", *ids)
        done += len(ids)
    elapsed = time.perf_counter() - started
    await redis.delete(stream)
    return count / elapsed


def _apply(doc: list[str], ops: list[dict[str, Any]]) -> list[str]:
    out = list(doc)
    for op in sorted(ops, key=lambda o: o.get("at", o.get("from", 0)), reverse=True):
        if op["op"] == "insert":
            out[op["at"] - 1 : op["at"] - 1] = op["lines"]
        elif op["op"] == "replace":
            out[op["from"] - 1 : op.get("to", op["from"])] = op["lines"]
        else:
            del out[op["from"] - 1 : op.get("to", op["from"])]
    return out


def plain_client(url: str) -> Redis:
    """The client a user's first program has: redis-py with timeouts, raising redis-py's
    own errors (the naive pipeline retries on its ``WatchError``), unlike patchlog's."""
    return Redis.from_url(url, socket_timeout=10.0, socket_connect_timeout=2.0)


async def naive_pipeline(
    url: str, prefix: str, count: int, docs: int = 1000, lines: int = 100
) -> float:
    """Patches per second through the naive consumer (pre-filled, then drained)."""
    redis = plain_client(url)
    try:
        return await _drain_naive(redis, prefix, count, docs, lines)
    finally:
        await redis.aclose()


async def _drain_naive(redis: Redis, prefix: str, count: int, docs: int, lines: int) -> float:
    keys = Keys(prefix)
    rng = random.Random(5)
    seed = json.dumps([f"line {i}" for i in range(lines)])
    async with redis.pipeline(transaction=False) as pipe:
        for d in range(docs):
            pipe.hset(keys.doc(str(d)), mapping={"rev": 1, "content": seed})
        for n in range(count):
            ops = ops_json(spread_ops(rng, lines, n))
            pipe.xadd(keys.patches, {"doc": str(n % docs), "ops": ops})
        await pipe.execute()
    await redis.xgroup_create(keys.patches, _GROUP, id="0")
    started = time.perf_counter()
    for _ in range(count):
        reply: Any = await redis.xreadgroup(_GROUP, "c", {keys.patches: ">"}, count=1)
        entry_id, fields = reply[0][1][0]
        await _naive_one(redis, keys, entry_id, fields)
    elapsed = time.perf_counter() - started
    stale = [keys.patches, keys.revisions, keys.outcomes] + [keys.doc(str(d)) for d in range(docs)]
    await redis.delete(*stale)
    return count / elapsed


async def _naive_one(redis: Redis, keys: Keys, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
    doc = fields[b"doc"].decode()
    ops = json.loads(fields[b"ops"])
    key = keys.doc(doc)
    while True:
        async with redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(key)
                rev, raw = await pipe.hmget(key, ["rev", "content"])
                new = _apply(json.loads(raw) if raw else [], ops)
                head = int(rev or 0) + 1
                pipe.multi()  # type: ignore[no-untyped-call]
                pipe.hset(key, mapping={"rev": head, "content": json.dumps(new)})
                pipe.xadd(keys.revisions, {"doc": doc, "rev": head, "ops": fields[b"ops"]})
                pipe.xadd(
                    keys.outcomes,
                    {"id": fields.get(b"id", entry_id), "doc": doc, "status": "committed",
                     "rev": head, "src": entry_id},
                )  # fmt: skip
                pipe.xack(keys.patches, _GROUP, entry_id)
                await pipe.execute()
            except WatchError:
                continue
            return


async def naive_consumer(redis: Redis, keys: Keys, stop: asyncio.Event) -> None:
    """The naive pipeline on ``keys.patches`` until ``stop``: read one entry, commit it
    with WATCH/MULTI/EXEC, and write its outcome where patchlog writes outcomes."""
    try:
        await redis.xgroup_create(keys.patches, _GROUP, id="0", mkstream=True)
    except ResponseError as err:
        if "BUSYGROUP" not in str(err):
            raise
    while not stop.is_set():
        reply: Any = await redis.xreadgroup(_GROUP, "c", {keys.patches: ">"}, count=1, block=100)
        for _, entries in reply or []:
            for entry_id, fields in entries:
                await _naive_one(redis, keys, entry_id, fields)


async def _main(url: str, namespace: str) -> None:
    settings = Settings(namespace=namespace)
    redis = plain_client(url)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await naive_consumer(redis, settings.keys, stop)
    finally:
        await redis.aclose()


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1], sys.argv[2]))
