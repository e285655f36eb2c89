"""structlog configured once: JSON lines (msgspec) in production, pretty in a terminal.

Every record reaches stderr as one ``write`` of the whole line. Workers are separate
processes sharing the supervisor's stderr: ``print`` writes the message and its newline
as two writes when stderr is unbuffered (``PYTHONUNBUFFERED``, common in containers), so
another process's record could land between them and glue two records into one line.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import msgspec
import structlog

__all__ = ["LineLogger", "configure_logging"]

_JSON = msgspec.json.Encoder()


def _dumps(event: Any, **_: Any) -> str:
    return _JSON.encode(event).decode()


class LineLogger:
    """A structlog logger writing each record and its newline with one ``os.write``.

    One write keeps a record whole among other processes' records: on a pipe up to
    ``PIPE_BUF`` bytes (4 KiB on Linux) at a time, and on a file opened for appending (a
    worker log). Only a short write (a full pipe, a signal) makes it loop, to finish the
    same record.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def msg(self, message: str) -> None:
        """Write ``message`` and a newline."""
        # backslashreplace, as sys.stderr does: a lone surrogate must not crash a worker
        data = memoryview((message + "\n").encode("utf-8", "backslashreplace"))
        while data:
            data = data[os.write(self.fd, data) :]

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


def configure_logging(*, json: bool | None = None, level: str = "info") -> None:
    """Configure structlog for this process; ``json=None`` picks JSON unless stderr is a tty."""
    if json is None:
        json = not sys.stderr.isatty()
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if json:
        processors += [
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=_dumps),
        ]
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=_factory(),
        cache_logger_on_first_use=True,
    )


def _factory() -> Callable[..., Any]:
    """A ``LineLogger`` on stderr's descriptor, or a text-stream writer without one."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        # A stderr with no descriptor (click's CliRunner, pytest's sys capture) lives in
        # this process alone: one text write per record keeps records whole there.
        return structlog.WriteLoggerFactory(file=sys.stderr)
    # Anything already buffered in sys.stderr goes out first, so that records written
    # straight to the descriptor do not overtake it.
    sys.stderr.flush()
    logger = LineLogger(fd)
    return lambda *_: logger
