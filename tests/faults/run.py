"""Run the whole fault and bad-input suite and print its table of figures.

    .venv/bin/python -m tests.faults.run                     # everything, 10,000 patches each
    .venv/bin/python -m tests.faults.run --only F2,F4,B7     # some of it
    .venv/bin/python -m tests.faults.run --patches 2000 --server redis --json out.json

Each scenario runs on a server of its own in a folder under ``--folder`` (kept: the
history, every process's log and the server's data, for a look after a failure). Exit
status 0 when every scenario holds, 1 otherwise; the table says which broke what.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from patchlog.streams.connection import connect
from patchlog.streams.scripts import load
from patchlog.streams.server import EmbeddedServer, free_port
from patchlog.streams.settings import Settings
from tests.faults import aof, badinput, clock, differential, more, scenarios
from tests.faults.row import Row
from tests.integration.helpers import binary_for

Scenario = Callable[[Path, str, int], Awaitable[Row]]

_MAIN = ("attempted", "acked", "applied", "rejected", "lost", "duplicated", "unexpected",
         "misreported", "indeterminate", "recovered")  # fmt: skip
_SHOWN = {*_MAIN, "server", "run_s"}
_QUIET = {"failed", "noop", "info_events", "unresolved", "unanswered", "out_of_order",
          "chain_rejected", "dead", "max_deliveries", "replays_answered", "quiesce_s",
          "pending_left", "dead_letters", "crashes"}  # fmt: skip
"""The checker's counts left out of a row while they are zero."""


async def _on_server(
    folder: Path, kind: str, work: Callable[..., Awaitable[Row]], *args: object
) -> Row:
    """Run ``work(redis, settings, scripts, *args)`` against a server of its own."""
    server = EmbeddedServer(folder / "server", port=free_port(), binary=binary_for(kind))
    await server.start()
    try:
        settings = Settings(
            redis_url=server.url,
            namespace=f"t{uuid.uuid4().hex[:8]}",
            block_ms=100,
            lease_ms=1500,
            claim_interval=0.2,
            base_ahead_wait=0.5,
        )
        redis = connect(settings, server.url, block_ms=2000)
        try:
            row = await work(redis, settings, load(redis), *args)
        finally:
            await redis.aclose()
        row.figures["server"] = kind
        return row
    finally:
        await server.stop()


def _bad(name: str) -> Scenario:
    async def scenario(folder: Path, kind: str, patches: int) -> Row:
        return await _on_server(folder, kind, badinput.run_scenario, name)

    return scenario


async def _b11(folder: Path, kind: str, patches: int) -> Row:
    server = EmbeddedServer(folder / "server", port=free_port(), binary=binary_for(kind))
    await server.start()
    try:
        settings = Settings(redis_url=server.url, namespace="b11", block_ms=100)
        row = await badinput.garbage_mix(settings, 10.0, folder)
        row.figures["server"] = kind
        return row
    finally:
        await server.stop()


async def _d1(folder: Path, kind: str, patches: int) -> Row:
    return await _on_server(folder, kind, differential.measure, patches)


async def _f5a(folder: Path, kind: str, patches: int) -> Row:
    return await aof.f5a(folder, kind, 20.0)


async def _f5b(folder: Path, kind: str, patches: int) -> Row:
    return await aof.f5b(folder, kind, 20.0)


async def _f5c(folder: Path, kind: str, patches: int) -> Row:
    return await aof.f5c(folder, kind, 40)


def suite() -> dict[str, Scenario]:
    """Every scenario of the suite, by id, in the order the plan lists them."""
    out: dict[str, Scenario] = {}
    out.update({k: v for k, v in scenarios.SCENARIOS.items() if k in ("F1", "F2", "F3", "F4")})
    out.update({"F5a": _f5a, "F5b": _f5b, "F5c": _f5c})
    every: dict[str, Scenario] = {**scenarios.SCENARIOS, **more.MORE, **clock.CLOCK}
    out.update(
        {
            k: every[k]
            for k in sorted(
                every, key=lambda k: (int(k[1:].rstrip("abcdefghijklmnopqrstuvwxyz")), k)
            )
            if k not in out
        }
    )
    out.update({name: _bad(name) for name in badinput.SCENARIOS})
    out["B11"] = _b11
    out["D1"] = _d1
    return dict(sorted(out.items(), key=lambda kv: (kv[0][0] != "F", kv[0][0], _number(kv[0]))))


def _number(name: str) -> float:
    digits = "".join(c for c in name[1:] if c.isdigit())
    return float(digits or 0) + (0.5 if name[-1].isalpha() and name[-1] != name[0] else 0)


def table(rows: list[Row]) -> str:
    """The rows as a Markdown table: the checker's counts, then each scenario's own."""
    head = ["scenario", "verdict", *_MAIN, "its own figures", "s"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for row in rows:
        own = ", ".join(
            f"{k} {v}"
            for k, v in row.figures.items()
            if k not in _SHOWN and not (k in _QUIET and v in (0, ""))
        )
        cells = [
            row.scenario,
            "ok" if row.ok else "**FAIL**",
            *(str(row.figures.get(k, "")) for k in _MAIN),
            own,
            str(row.figures.get("run_s", "")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults.run", description=__doc__)
    parser.add_argument("--patches", type=int, default=10_000, help="per scenario")
    parser.add_argument("--server", choices=["valkey", "redis"], default="valkey")
    parser.add_argument("--only", default="", help="comma-separated ids (F2,B7,D1)")
    parser.add_argument("--folder", type=Path, default=None, help="where runs are kept")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    every = suite()
    wanted = [n.strip() for n in args.only.split(",") if n.strip()] or list(every)
    unknown = [n for n in wanted if n not in every]
    if unknown:
        parser.error(f"--only: unknown {', '.join(unknown)}; known: {', '.join(every)}")
    folder = args.folder or Path(tempfile.mkdtemp(prefix="patchlog-faults-"))
    rows: list[Row] = []
    for name in wanted:
        started = time.monotonic()
        print(f"== {name} ({args.server}, {args.patches} patches)", file=sys.stderr, flush=True)
        try:
            row = await every[name](folder / name, args.server, args.patches)
        except Exception as err:  # noqa: BLE001 - a scenario that blew up is a failed row
            row = Row(name, violations=[f"the scenario raised {type(err).__name__}: {err}"])
        row.scenario = name
        row.figures.setdefault("run_s", round(time.monotonic() - started, 1))
        rows.append(row)
        verdict = "ok" if row.ok else "FAIL: " + "; ".join(row.violations[:3])
        print(f"   {verdict} ({row.figures['run_s']} s)", file=sys.stderr, flush=True)
    print(table(rows))
    print(f"\nruns kept in {folder}", file=sys.stderr)
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                [{"scenario": r.scenario, "ok": r.ok, "figures": r.figures,
                  "violations": r.violations} for r in rows],
                indent=1,
            )
        )  # fmt: skip
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
