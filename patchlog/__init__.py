"""patchlog: event-sourced line patches for shared text documents, on Redis Streams.

The repository's folders are its subpackages, layered one way:
``patchlog.ops`` → ``patchlog.consumers`` → ``patchlog.projections`` → ``patchlog.streams``.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
