"""Prometheus metrics of a worker process, served on /metrics when a port is set."""

from __future__ import annotations

from prometheus_client import Counter, start_http_server

__all__ = ["OUTCOMES", "PROCESSED", "serve_metrics"]

PROCESSED = Counter("patchlog_entries_processed_total", "Stream entries a stage decided", ["stage"])
OUTCOMES = Counter("patchlog_outcomes_total", "Outcomes recorded", ["stage", "status"])


def serve_metrics(port: int, host: str = "127.0.0.1") -> None:
    """Serve /metrics on ``host:port`` from a background thread."""
    start_http_server(port, addr=host)
