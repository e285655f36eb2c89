"""structlog configured once: JSON lines (msgspec) in production, readable in a terminal.

Every record reaches stderr as one ``write`` of the whole line. Workers are separate
processes sharing the supervisor's stderr: ``print`` writes the message and its newline
as two writes when stderr is unbuffered (``PYTHONUNBUFFERED``, common in containers), so
another process's record could land between them and glue two records into one line.

Records of the standard ``logging`` module (redis, asyncio, any library) go through the
same processors and renderer, so a worker's output is one format whichever code logged.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import msgspec
import structlog

from patchlog.streams.settings import LOG_LEVELS

__all__ = ["LEVEL_ENV", "LineLogger", "configure_logging", "log_level"]

LEVEL_ENV = "PATCHLOG_LOG_LEVEL"
"""The variable naming the level when ``configure_logging`` is given none."""

# enc_hook=str: a library's record may carry an object msgspec cannot encode, and a log
# line must never raise.
_JSON = msgspec.json.Encoder(enc_hook=str)
_LEVELS = {name.upper(): logging.getLevelNamesMapping()[name.upper()] for name in LOG_LEVELS}


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


class _LibraryHandler(logging.Handler):
    """Hands a standard-library record, already rendered by structlog's
    ``ProcessorFormatter``, to the same writer as structlog's own records."""

    def __init__(self, write: Callable[[str], None], formatter: logging.Formatter) -> None:
        super().__init__()
        self.write = write
        self.setFormatter(formatter)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.write(self.format(record))
        except Exception:  # noqa: BLE001 - logging's contract: report, never raise
            self.handleError(record)


def log_level(level: str | None = None) -> tuple[int, str | None]:
    """The numeric level for ``level`` (default: ``PATCHLOG_LOG_LEVEL``, else info), and
    why the default was used instead of what was given, if it was not a level name."""
    given = level if level is not None else os.environ.get(LEVEL_ENV, "")
    name = given.strip().upper() or "INFO"
    if name in _LEVELS:
        return _LEVELS[name], None
    where = LEVEL_ENV if level is None else "log level"
    return (
        logging.INFO,
        f"{where}={given!r} is not a level ({', '.join(LOG_LEVELS)}); using info",
    )


def configure_logging(*, json: bool | None = None, level: str | None = None) -> None:
    """Configure structlog and the ``logging`` root for this process.

    ``json=None`` picks JSON unless stderr is a tty (then colours and aligned columns);
    ``level=None`` takes ``PATCHLOG_LOG_LEVEL`` (default info). Calling it again
    replaces the configuration (the CLI does when ``--json-logs`` is given).
    """
    if json is None:
        json = not sys.stderr.isatty()
    number, complaint = log_level(level)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any
    if json:
        last: list[Any] = [structlog.processors.format_exc_info]
        renderer = structlog.processors.JSONRenderer(serializer=_dumps)
    else:
        last = []
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    write = _writer()
    structlog.configure(
        processors=[*shared, *last, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(number),
        logger_factory=lambda *_: write,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            *shared,
            structlog.stdlib.add_logger_name,  # which library: redis, asyncio, …
            structlog.stdlib.ExtraAdder(),
        ],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *last, renderer],
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _LibraryHandler)]:
        root.removeHandler(old)
    root.addHandler(_LibraryHandler(write.msg, formatter))
    root.setLevel(number)
    if complaint is not None:
        structlog.get_logger("patchlog.logs").warning(complaint)


def _writer() -> Any:
    """A ``LineLogger`` on stderr's descriptor, or a text-stream writer without one."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        # A stderr with no descriptor (click's CliRunner, pytest's sys capture) lives in
        # this process alone: one text write per record keeps records whole there.
        return structlog.WriteLogger(file=sys.stderr)
    # Anything already buffered in sys.stderr goes out first, so that records written
    # straight to the descriptor do not overtake it.
    sys.stderr.flush()
    return LineLogger(fd)
