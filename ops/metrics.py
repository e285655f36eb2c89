"""The /metrics endpoint of a worker process."""

from __future__ import annotations

from prometheus_client import start_http_server

__all__ = ["serve_metrics"]


def serve_metrics(port: int, host: str = "127.0.0.1") -> None:
    """Serve Prometheus metrics on ``host:port`` from a background thread."""
    start_http_server(port, addr=host)
