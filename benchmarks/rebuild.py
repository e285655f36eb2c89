"""Rebuild throughput: revisions folded per second in one pass over the log.

Usage: python benchmarks/rebuild.py [--docs N] [--revisions N] [--lines N] [--rounds N]

Starts an embedded server in a temporary folder, writes a valid log straight into it
(every document starts with ``--lines`` lines, then each revision makes 3 ops: an insert,
a replace and a delete at random lines, so the documents keep their length; revisions of
the documents interleaved as a busy pipeline would write them; heads, indexes and the
document set to match), then times, over ``--rounds`` runs, the fold of the whole log
(``fold_log``: read, decode, fold, hash and check the chain of every revision), ``verify``
and ``rebuild`` (which also compares every head, snapshot and checkpoint). Prints the
median of each in revisions per second.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path

from redis.asyncio import Redis

from patchlog.ops.randomops import spread_ops
from patchlog.projections.fold import fold
from patchlog.projections.patch import normalize, to_ops
from patchlog.projections.rebuild import fold_log, rebuild, verify
from patchlog.streams.codec import event_fields
from patchlog.streams.content import EMPTY_HASH, content_hash
from patchlog.streams.keys import Keys
from patchlog.streams.limits import Limits
from patchlog.streams.schema import Insert, Op, Revision
from patchlog.streams.server import EmbeddedServer, free_port
from patchlog.streams.settings import Fsync

LIMITS = Limits()
KEYS = Keys("bench")


async def write_log(redis: Redis, docs: int, revisions: int, lines: int) -> int:
    """A valid log of ``docs`` documents with ``revisions`` revisions each (the first
    writes the ``lines`` starting lines); the number of revisions written."""
    rng = random.Random(1)
    contents: dict[str, tuple[list[str], str]] = {f"doc-{d}": ([], EMPTY_HASH) for d in range(docs)}
    ids: dict[str, list[str]] = {name: [] for name in contents}
    written = 0
    for rev in range(1, revisions + 1):
        async with redis.pipeline(transaction=False) as pipe:
            for name, (content, prev) in contents.items():
                ops: list[Op]
                if rev == 1:
                    ops = [Insert(at=1, lines=tuple(f"line {i} of {name}" for i in range(lines)))]
                else:
                    ops = spread_ops(rng, len(content), rev)
                splices = normalize(ops, LIMITS)
                new = fold(content, splices)
                digest = content_hash(new)
                revision = Revision(
                    doc=name,
                    rev=rev,
                    id=f"{name}-{rev}",
                    base=rev - 1,
                    ops=to_ops(splices),
                    lines=len(new),
                    hash=digest,
                    prev=prev,
                    src=f"{rev}-0",
                    at=rev,
                )
                fields = event_fields(revision)
                pipe.xadd(KEYS.revisions, dict(zip(fields[::2], fields[1::2], strict=True)))
                contents[name] = (new, digest)
            stream_ids = await pipe.execute()
        for name, stream_id in zip(contents, stream_ids, strict=True):
            ids[name].append(stream_id.decode())
        written += len(contents)
    async with redis.pipeline(transaction=False) as pipe:
        for name, (content, digest) in contents.items():
            pipe.rpush(KEYS.index(name), *ids[name])
            pipe.hset(
                KEYS.doc(name),
                mapping={"rev": revisions, "hash": digest, "lines": len(content), "src": "x"},
            )
            pipe.sadd(KEYS.docs, name)
        await pipe.execute()
    return written


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--revisions", type=int, default=100, help="per document")
    parser.add_argument("--lines", type=int, default=100, help="lines per document")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedServer(Path(tmp), port=free_port(), fsync=Fsync.EVERYSEC)
        await server.start()
        redis = Redis.from_url(server.url, socket_timeout=60)
        try:
            t0 = time.perf_counter()
            total = await write_log(redis, args.docs, args.revisions, args.lines)
            print(
                f"log: {total:,} revisions of {args.docs:,} documents, {args.lines} lines, "
                f"3 ops each (written in {time.perf_counter() - t0:.1f} s)"
            )
            for name, run in (
                ("fold_log", lambda: fold_log(redis, KEYS)),
                ("verify", lambda: verify(redis, KEYS)),
                ("rebuild", lambda: rebuild(redis, KEYS, every=100)),
            ):
                times = []
                for _ in range(args.rounds):
                    start = time.perf_counter()
                    await run()
                    times.append(time.perf_counter() - start)
                median = statistics.median(times)
                print(
                    f"{name:<9} median {median:6.2f} s   {total / median:>10,.0f} revisions/s"
                    f"   (runs: {', '.join(f'{t:.2f}' for t in times)} s)"
                )
        finally:
            await redis.aclose()
            await server.stop()


if __name__ == "__main__":
    asyncio.run(main())
