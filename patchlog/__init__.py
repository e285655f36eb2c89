"""patchlog: event-sourced line patches for shared text documents, on Redis Streams.

The repository's folders are its subpackages, layered one way:
``patchlog.ops`` → ``patchlog.consumers`` → ``patchlog.projections`` → ``patchlog.streams``.

``from patchlog import Client`` gives the Python client (submit, wait, edit); it is
imported on first use, so that importing one layer does not load the others.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from patchlog.projections.client import Client

__version__ = "0.1.0"

__all__ = ["Client", "__version__"]


def __getattr__(name: str) -> object:
    if name == "Client":
        from patchlog.projections.client import Client  # noqa: PLC0415

        return Client
    raise AttributeError(f"module 'patchlog' has no attribute {name!r}")
