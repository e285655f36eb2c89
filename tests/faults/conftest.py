"""The suite runs against the same real servers as the integration tests."""

from tests.integration.conftest import redis, scripts, server, settings

__all__ = ["redis", "scripts", "server", "settings"]
