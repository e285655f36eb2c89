"""A load generator for pipeline tests: concurrent submitters on shared documents."""

from __future__ import annotations

import asyncio
import random

from redis.asyncio import Redis

from patchlog.streams.client import Client
from patchlog.streams.log import read_head
from patchlog.streams.settings import Settings


async def submit_load(
    redis: Redis,
    settings: Settings,
    *,
    submitters: int,
    patches: int,
    docs: int,
    seed: int,
    stale: float = 0.2,
    wait: bool = True,
) -> list[str]:
    """Submit ``patches`` patches from ``submitters`` tasks; return every patch id.

    Each patch is based on the head the submitter just read, or (with probability
    ``stale``) a revision or three behind it, so rebases and conflicts happen. With
    ``wait`` each submitter waits for its patch's outcome before the next (closed loop).
    """
    client = Client(redis, settings.keys)
    names = [f"doc-{i}" for i in range(docs)]
    ids: list[str] = []
    quota = patches // submitters

    async def submitter(k: int) -> None:
        rng = random.Random(seed * 1000 + k)
        for n in range(quota):
            doc = rng.choice(names)
            head = await read_head(redis, settings.keys, doc)
            base, length = head.rev, head.lines
            if head.rev > 0 and rng.random() < stale:
                base = max(0, head.rev - rng.randint(1, 3))
                length = min(length, 2)
            text = [f"s{k} p{n}"]
            if length == 0 or rng.random() < 0.5:
                op = {"op": "insert", "at": rng.randint(1, length + 1), "lines": text}
            elif rng.random() < 0.6:
                op = {"op": "replace", "from": rng.randint(1, length), "lines": text}
            else:
                op = {"op": "delete", "from": rng.randint(1, length)}
            patch_id = await client.submit(doc, base, ops=[op], author=f"s{k}")
            ids.append(patch_id)
            if wait:
                await client.wait(patch_id, 60)

    await asyncio.gather(*(submitter(k) for k in range(submitters)))
    return ids
