"""An execute worker over partitions: with ``partitions`` > 1 the normalized stream is
one stream per partition (a document's patches all go to one, by a hash of its name),
and each partition is read by one worker at a time, so that each document is decided
by one worker and a second worker adds capacity instead of catching up on the other's
revisions.

Membership and ownership live on the server (``streams/lua/partition.lua``): live
workers, sorted by name, share the partitions round robin; a partition's lease names
the worker reading it and expires ``lease_ms`` after that worker stops renewing it. A
worker that joins takes the partitions that prefer it once their holder hands them over
(at its next round: it stops reading, then releases); a worker that dies loses them
when its leases run out. Two workers may read one partition for a moment (a holder
slow to see that its lease ran out): the commit script's compare-and-set and fencing
keep that correct, as they do with one stream read by many.

Each partition held is an ordinary ``Runner`` over its stream, as consumer
``<worker>:<partition>`` with a lease of its own, so that a partition handed over
leaves its pending entries to the next holder's claim at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import structlog
from redis.asyncio import Redis

from patchlog.consumers.execute import ExecuteStage
from patchlog.consumers.runner import Runner
from patchlog.streams.errors import ServerError, ServerUnavailable, is_transient
from patchlog.streams.scripts import Scripts
from patchlog.streams.settings import Settings

__all__ = ["Partitioned", "consumer_name", "worker_of"]

log = structlog.get_logger("patchlog.partitions")

_WANTED_STEP = 0.5
"""Seconds between two rounds while a partition preferring this worker is still held by
another (it hands it over at its own next round)."""
_ROUND_S = 1.0
"""Seconds between two rounds at most (a third of the lease if that is shorter): how
soon a holder sees a new member and hands its share over."""
_SETTLE_S = 0.5
"""Seconds a starting worker is a member before it takes anything, so that workers
started together (``up``, a deployment) split the partitions at once instead of the
first one taking them all and handing half over, with a cold cache, a round later."""


def consumer_name(worker: str, partition: int) -> str:
    """The consumer name a worker reads a partition as."""
    return f"{worker}:{partition}"


def worker_of(consumer: str) -> str:
    """The worker behind a partition's consumer name (``consumer_name``'s inverse)."""
    return consumer.rpartition(":")[0]


class Partitioned:
    """Runs one ``Runner`` per partition this worker holds, and keeps the set right.

    ``drain``: take every free partition (not only the ones preferring this worker,
    and without becoming a member others hand partitions to), drain each, release it
    as soon as it is drained, and return; partitions other workers hold are theirs.
    """

    def __init__(
        self,
        redis: Redis,
        settings: Settings,
        scripts: Scripts,
        worker: str,
        *,
        drain: bool = False,
        aged: Sequence[tuple[str, float]] = (),
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.scripts = scripts
        self.worker = worker
        self.drain = drain
        self.aged = tuple(aged)
        self.keys = settings.keys
        self.runners: dict[int, tuple[Runner, asyncio.Task[None]]] = {}
        self._drained: set[int] = set()  # draining: partitions done and released
        self._handing: set[int] = set()  # partitions being handed over right now
        self._stop_by: float | None = None  # loop time by which stopping must be done
        self._stopping = asyncio.Event()
        self.log = log.bind(consumer=worker)

    def stop(self) -> None:
        """Stop every runner after its batch in hand, hand the partitions over, return
        (within 0.8 of ``shutdown_grace``, so that leaving runs before the worker's own
        grace is over, even if a hand-over was under way)."""
        if self._stop_by is None:
            loop = asyncio.get_running_loop()
            self._stop_by = loop.time() + 0.8 * self.settings.shutdown_grace
        for runner, _ in self.runners.values():  # all wind down together, hand-over or not
            runner.stop()
        self._stopping.set()

    async def run(self) -> None:
        """Hold this worker's share of the partitions until ``stop()`` (or, draining,
        until the partitions it took are drained). Raises what a runner raised."""
        interval = min(self.settings.lease_ms / 3000, _ROUND_S)
        try:
            if not self.drain:
                await self._join(min(_SETTLE_S, interval))
            while not self._stopping.is_set():
                wanted = await self._round(interval)
                await self._settle_done()
                if self.drain and wanted is not None and not self.runners:
                    return  # drained what it took (nothing, if every partition is held)
                await self._wait(_WANTED_STEP if wanted else interval)
        finally:
            await self._stop_all()

    async def _join(self, settle: float) -> None:
        try:
            await self.scripts.partition(keys=self._keys(), args=self._args("join"))
        except ServerError as err:
            await self._keep_on(err)
            return
        await self._wait(settle)

    async def _round(self, interval: float) -> bool | None:
        """One round: renew, take, give up; whether a partition waits to be handed over
        (``None``: the round failed, nothing is known)."""
        args = self._args("any", *sorted(self._drained)) if self.drain else self._args("round")
        try:
            reply: Any = await self.scripts.partition(keys=self._keys(), args=args)
        except ServerError as err:
            await self._keep_on(err)
            return None
        held, extra, wanted = (set(map(int, part)) for part in reply)
        for p in sorted(set(self.runners) - held):  # its lease ran out and another took it
            self.log.warning("partition lost", partition=p)
            self.runners[p][0].stop()
        for p in sorted(held - extra - set(self.runners)):
            self._start(p)
        if extra:
            await self._hand_over(sorted(extra), interval)
        self.log.debug("partitions", held=sorted(held), handed_over=sorted(extra))
        return bool(wanted)

    async def _keep_on(self, err: ServerError) -> None:
        """A round failed: keep reading what it holds. Out of memory the server refuses
        the script (it may write), so the leases are only extended, as a worker's own
        lease is, so that live workers do not lose their partitions while memory is short."""
        if isinstance(err, ServerUnavailable) and err.code == "OOM":
            with contextlib.suppress(ServerError):
                async with self.redis.pipeline(transaction=False) as pipe:
                    for p in {*self.runners, *self._handing}:
                        pipe.pexpire(self.keys.partition_lease(p), self.settings.lease_ms)
                    await pipe.execute()
        if not is_transient(err):
            raise err
        self.log.warning("partition round failed", error=f"{type(err).__name__}: {err}")

    def _keys(self) -> list[str]:
        return [self.keys.members] + [
            self.keys.partition_lease(p) for p in range(self.keys.partitions)
        ]

    def _args(self, op: str, *extra: int) -> list[str | int]:
        return [self.worker, self.settings.lease_ms, op, *extra]

    def _start(self, p: int) -> None:
        stream = self.keys.normalized_stream(p)
        stage = ExecuteStage(self.redis, self.settings, self.scripts, stream)
        runner = Runner(
            self.redis,
            self.settings,
            self.scripts,
            stage,
            consumer_name(self.worker, p),
            drain=self.drain,
            trims=(stream,),
            aged=self.aged,
        )
        task = asyncio.create_task(runner.run(), name=f"execute partition {p}")
        self.runners[p] = (runner, task)
        self.log.info("partition taken", partition=p, stream=stream)

    async def _hand_over(self, parts: Sequence[int], interval: float) -> None:
        """Stop reading ``parts`` (each finishes its batch in hand; all at once, while the
        membership and the leases kept are renewed, so a slow batch costs no lease),
        then release them, so that the members they prefer take them at their next round."""
        self._handing.update(parts)
        renewing = asyncio.create_task(self._renew_every(interval))
        try:
            # A renewal that fails for good ends the wait: its error is raised.
            await self._stop_runners(parts, self.settings.shutdown_grace, watch=renewing)
        finally:
            self._handing.clear()
            renewing.cancel()
            await asyncio.gather(renewing, return_exceptions=True)
        await self._release(parts)
        self.log.info("partitions handed over", partitions=list(parts))

    async def _renew_every(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.scripts.partition(keys=self._keys(), args=self._args("renew"))
            except ServerError as err:
                await self._keep_on(err)

    async def _release(self, parts: Sequence[int]) -> None:
        try:
            await self.scripts.partition(keys=self._keys(), args=self._args("release", *parts))
        except ServerError as err:  # a live holder renews it: the next round hands it over
            self.log.warning("partition release failed", partitions=list(parts), error=str(err))

    async def _stop_runners(
        self, parts: Sequence[int], grace: float, watch: asyncio.Task[None] | None = None
    ) -> None:
        """Stop the runners of ``parts`` together, within ``grace`` seconds in all (then
        cancelled: their entries stay pending for the next holder's claim), or until
        ``watch`` ends. Raises what a runner or ``watch`` raised meanwhile."""
        stopping = [self.runners.pop(p) for p in parts if p in self.runners]
        for runner, _ in stopping:
            runner.stop()
        loop = asyncio.get_running_loop()
        until = loop.time() + grace
        pending: set[asyncio.Task[None]] = {task for _, task in stopping}
        ended: list[asyncio.Task[None]] = []
        try:
            while pending and not (watch is not None and watch.done()):
                # A stop() meanwhile shortens the wait to its own deadline.
                by = until if self._stop_by is None else min(until, self._stop_by)
                left = by - loop.time()
                if left <= 0:
                    break
                waits: set[asyncio.Future[Any]] = set(pending)
                if watch is not None:
                    waits.add(watch)
                stop = None
                if not self._stopping.is_set():
                    stop = asyncio.create_task(self._stopping.wait())
                    waits.add(stop)
                try:
                    done, _ = await asyncio.wait(
                        waits, timeout=left, return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    if stop is not None:
                        stop.cancel()
                ended += [t for t in pending if t in done]
                pending -= done
        finally:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for task in [*ended, *([watch] if watch is not None and watch.done() else [])]:
            error = None if task.cancelled() else task.exception()
            if error is not None:
                raise error

    async def _settle_done(self) -> None:
        """Raise what a finished runner raised; forget one that stopped after losing its
        lease (retaken if held again); draining, release each partition drained."""
        done: list[int] = []
        for p, (_, task) in list(self.runners.items()):
            if not task.done():
                continue
            error = None if task.cancelled() else task.exception()
            if error is not None:
                raise error
            self.runners.pop(p)
            done.append(p)
        if self.drain and done:
            self._drained.update(done)
            await self._release(done)

    async def _wait(self, seconds: float) -> None:
        tasks = [t for _, t in self.runners.values() if not t.done()]
        stopping = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait([stopping, *tasks], timeout=seconds, return_when="FIRST_COMPLETED")
        finally:
            stopping.cancel()

    async def _stop_all(self) -> None:
        try:  # within the worker's own grace, so that leaving still runs
            await self._stop_runners(list(self.runners), self.settings.shutdown_grace * 0.8)
        finally:
            try:
                await self.scripts.partition(keys=self._keys(), args=self._args("leave"))
            except ServerError as err:  # they run out by themselves within lease_ms
                self.log.warning("leaving the partitions failed", error=str(err))
