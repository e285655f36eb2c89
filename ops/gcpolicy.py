"""The garbage-collection policy of patchlog's long-running processes.

A full collection traverses every live container: in an execute worker that is every
cached document, about 20 ms at a thousand documents, and it comes whenever the
allocator asks for it, stalling the pipeline mid-batch. Inside ``quiet_gc`` young
generations stay automatic (they are cheap) and full collections run only when
``collect_every`` says so.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["collect_every", "quiet_gc"]

_NEVER = 1_000_000  # young collections between two automatic full ones: in effect never


@contextmanager
def quiet_gc() -> Iterator[None]:
    """No automatic full collections inside; what exists on entry is frozen (never
    traversed again). Thresholds are restored and everything collected on exit."""
    young, middle, old = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(young, middle, _NEVER)
    try:
        yield
    finally:
        gc.set_threshold(young, middle, old)
        gc.unfreeze()
        gc.collect()


async def collect_every(seconds: float) -> None:
    """Run a full collection every ``seconds`` until cancelled."""
    while True:
        await asyncio.sleep(seconds)
        gc.collect()
