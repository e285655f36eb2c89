"""``patchlog bench``'s tables: the figures of each run, then where its latency went."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from patchlog.ops.benchhops import HOPS

if TYPE_CHECKING:
    from patchlog.ops.bench import BenchResult

__all__ = ["HOP_TITLES", "report"]

HOP_TITLES = {
    "ingress_wait": "ingress wait",
    "normalize": "normalize",
    "normalized_wait": "normalized wait",
    "decide": "decide",
    "commit": "commit script",
    "outcome_seen": "outcome seen",
}
"""Column titles of the hops, by the label ``patchlog_hop_seconds`` gives them."""


def report(
    console: Any,
    results: list[BenchResult],
    base: dict[str, float],
    ratio: float | None,
    workers: tuple[int, int, int],
) -> None:
    """Print the figures table, the hop table and the lines under them; ``workers``:
    normalize workers, execute workers, execute partitions."""
    _figures(console, results, workers)
    if any(r.hops_ms for r in results):
        _hops(console, results)
    if ratio is not None:
        console.print(f"default: {ratio:.1f}x the naive pipeline under the same load")
    if base:
        console.print(
            f"alone on a server: raw ceiling {base['raw_ceiling_per_s']:,.0f} entries/s; naive "
            f"pipeline draining a backlog {base['naive_alone_per_s']:,.0f} patches/s"
        )
    for r in results:
        # Durability costs throughput: a figure means little without the policy it ran with.
        console.print(
            f"{r.scenario}: appendfsync {r.appendfsync or 'unknown'} (as the server said), "
            f"durability {r.durability}; server memory {r.server_memory_bytes / 2**20:,.0f} "
            f"MiB, {r.memory_per_million_revisions / 2**30:.2f} GiB per million revisions"
            + (f"; offered {r.rate_basis}" if r.rate_basis else "")
        )


def _figures(console: Any, results: list[BenchResult], workers: tuple[int, int, int]) -> None:
    from rich.table import Table  # noqa: PLC0415 - only the bench needs rich

    table = Table(
        title=f"patchlog bench ({workers[0]} normalize, {workers[1]} execute"
        + (f" in {workers[2]} partitions" if workers[2] > 1 else "")
        + "); "
        "CPU in microseconds per committed patch, summed over a stage's workers"
    )
    columns = ("scenario", "mode", "committed/s", "p50 ms", "p99 ms", "max ms", "normalize us",
               "execute us", "server us", "client us", "server ceiling/s", "rejected",
               "retries")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column == "scenario" else "right")
    for r in results:
        cpu = r.cpu_us_per_patch
        summed: dict[str, float] = {}
        for name, value in cpu.items():  # several workers of a stage: their sum
            summed[name.split("-")[0]] = summed.get(name.split("-")[0], 0.0) + value
        stage = {name: f"{value:.1f}" for name, value in summed.items()}
        if "naive" in stage:  # one process does both stages' work
            stage["execute"] = f"{stage['naive']} (both)"
        table.add_row(
            r.scenario, r.mode, f"{r.committed_per_s:,.0f}", f"{r.latency_ms['p50']:.1f}",
            f"{r.latency_ms['p99']:.1f}", f"{r.latency_ms['max']:.1f}",
            stage.get("normalize", "-"), stage.get("execute", "-"), stage["server"],
            stage["bench"], f"{r.server_ceiling_per_s:,.0f}",
            f"{1 - r.outcomes.get('committed', 0) / max(1, sum(r.outcomes.values())):.1%}",
            "-" if r.commit_retries_per_patch is None else f"{r.commit_retries_per_patch:.2f}",
        )  # fmt: skip
    console.print(table)


def _hops(console: Any, results: list[BenchResult]) -> None:
    from rich.table import Table  # noqa: PLC0415

    table = Table(
        title="where the latency went, per hop: mean / p50 / p99 ms (the stages' p50 and p99 "
        "interpolated in their histogram buckets)"
    )
    table.add_column("scenario", justify="left")
    for _, hop in HOPS:
        table.add_column(HOP_TITLES.get(hop, hop), justify="right")
    table.add_column("sum of means", justify="right")
    table.add_column("submit to outcome", justify="right")
    for r in results:
        if not r.hops_ms:
            continue
        cells = []
        for _, hop in HOPS:
            fig = r.hops_ms.get(hop)
            cells.append(
                "-" if not fig else f"{fig['mean']:.1f} / {fig['p50']:.1f} / {fig['p99']:.1f}"
            )
        summed = sum(fig["mean"] for fig in r.hops_ms.values())
        lat = r.latency_ms
        table.add_row(
            r.scenario, *cells, f"{summed:.1f}",
            f"{lat['mean']:.1f} / {lat['p50']:.1f} / {lat['p99']:.1f}",
        )  # fmt: skip
    console.print(table)
