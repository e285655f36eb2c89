"""CPU cost per patch of the stages' hop histograms (``patchlog_hop_seconds``).

Usage: python benchmarks/hops.py [--multiprocess] [--rounds N]

Times, per batch size, what each stage does for its hops once a batch is decided:
normalize's ``_hops`` (ingress wait and normalize, per batch) and execute's
``_observe_hops`` (normalized wait, decide and commit, per commit call), on batches of
entry ids as the server makes them. It prints the median over rounds of the process
CPU time per patch. ``--multiprocess`` writes to memory-mapped files, as under
``patchlog up --metrics-port``; without it, to the process's own registry, as a worker
serving its own ``/metrics`` (``patchlog bench``) does.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial

_SIZES = (1, 16, 64, 256)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--multiprocess", action="store_true")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    if args.multiprocess:  # read by prometheus-client when it is first imported
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="patchlog-hops-")
    from redis.asyncio import Redis  # noqa: PLC0415 - after the variable is set

    from patchlog.consumers.execute import ExecuteStage  # noqa: PLC0415
    from patchlog.consumers.normalize import NormalizeStage  # noqa: PLC0415
    from patchlog.streams.scripts import load  # noqa: PLC0415
    from patchlog.streams.settings import Settings  # noqa: PLC0415

    redis = Redis()  # never connected: nothing here talks to a server
    settings = Settings()
    normalize = NormalizeStage(redis, settings, load(redis))
    execute = ExecuteStage(redis, settings, load(redis))
    mode = "multiprocess" if args.multiprocess else "own registry"
    print(f"hop histograms, CPU per patch ({mode}), median of {args.rounds} rounds")
    for size in _SIZES:
        now = time.time()
        # Ids a few ms old, several per ms, as a busy stream has them.
        ids = [f"{int(now * 1000) - (i % 7)}-{i}" for i in range(size)]
        entries: list[tuple[str, dict[bytes, bytes]]] = [(i, {}) for i in ids]
        results = [b"f"] * size
        timed = [(i, now) for i in ids]
        steps = (
            ("normalize", partial(normalize._hops, entries, results, now, now + 0.002)),
            ("execute", partial(execute._observe_hops, timed, now + 0.001, now + 0.003)),
        )
        for name, step in steps:
            per_patch = _time(step, size, args.rounds)
            print(f"batch {size:>3}  {name:<9} {per_patch:6.2f} us")
    sys.stdout.flush()


def _time(step: Callable[[], None], size: int, rounds: int) -> float:
    """Median over ``rounds`` of the process CPU microseconds per patch of ``step``."""
    calls = max(200, 20_000 // size)
    results = []
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(calls):
            step()
        results.append((time.process_time() - started) / calls / size * 1e6)
    return statistics.median(results)


if __name__ == "__main__":
    main()
