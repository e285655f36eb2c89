"""Failpoints: named places in the stages where a test makes the process kill itself.

``PATCHLOG_FAILPOINTS`` arms them, a comma-separated list of ``name:rule``:

- ``execute.after_commit:p=0.02``: SIGKILL at each hit with probability 0.02;
- ``normalize.before_forward:nth=3``: SIGKILL at the third hit only;
- ``execute.before_commit:p=0.1:seed=7``: a seeded draw, for a reproducible run.

A process with the variable unset pays one dictionary lookup per hit. Before it dies the
process appends ``name pid time_ns`` to ``PATCHLOG_FAILPOINTS_LOG`` (when set), so that
a suite can count the kills it caused and prove the fault fired.

Names (see each call site): ``{stage}.after_read`` (entries delivered, nothing done),
``normalize.before_forward`` / ``normalize.after_forward`` (around the script that
forwards and acknowledges), ``execute.before_commit`` / ``execute.after_commit`` (around
one chunk's commit script: a later chunk of the batch is still undecided),
``{stage}.after_claim`` (entries of a dead worker claimed, not yet worked),
``projector.after_write`` (a document file written, the checkpoint not yet moved).

``PATCHLOG_BROKEN=ack_before_work`` is a deliberately broken build for the fault suite's
own test: stages acknowledge what they read before working on it, so that the suite's
checker must report the patches this loses.
"""

from __future__ import annotations

import os
import random
import signal
import time

__all__ = ["BROKEN_ENV", "ENV", "LOG_ENV", "Failpoints", "broken", "failpoint"]

ENV = "PATCHLOG_FAILPOINTS"
LOG_ENV = "PATCHLOG_FAILPOINTS_LOG"
BROKEN_ENV = "PATCHLOG_BROKEN"


class Failpoints:
    """Parsed ``PATCHLOG_FAILPOINTS``: which points are armed and when they fire."""

    def __init__(self, spec: str) -> None:
        """Raises ``ValueError`` naming the rule that does not parse."""
        self.chance: dict[str, float] = {}
        self.nth: dict[str, int] = {}
        self.hits: dict[str, int] = {}
        self.draw: dict[str, random.Random] = {}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            name, *rules = item.split(":")
            if not name or not rules:
                raise ValueError(f"{ENV}: {item!r} is not name:p=P or name:nth=N")
            seed: int | None = None
            for rule in rules:
                key, _, value = rule.partition("=")
                if key == "p" and _number(value, float, 0.0, 1.0):
                    self.chance[name] = float(value)
                elif key == "nth" and _number(value, int, 1, None):
                    self.nth[name] = int(value)
                elif key == "seed" and _number(value, int, None, None):
                    seed = int(value)
                else:
                    raise ValueError(
                        f"{ENV}: {item!r}: {rule!r} is not p=P (0 to 1), nth=N (1 or more) "
                        "or seed=S"
                    )
            self.draw[name] = random.Random(seed)  # noqa: S311 - a fault schedule, not a secret

    def fires(self, name: str) -> bool:
        """Whether this hit of ``name`` is the one that kills."""
        if name not in self.draw:
            return False
        self.hits[name] = self.hits.get(name, 0) + 1
        if name in self.nth:
            return self.hits[name] == self.nth[name]
        return self.draw[name].random() < self.chance.get(name, 0.0)


def _number(
    text: str, kind: type[int] | type[float], low: float | None, high: float | None
) -> bool:
    """Whether ``text`` is a ``kind`` within [low, high] (None: unbounded)."""
    try:
        value = kind(text)
    except ValueError:
        return False
    return (low is None or value >= low) and (high is None or value <= high)


_armed: list[Failpoints | None] = []  # parsed once per process, on the first hit


def _points() -> Failpoints | None:
    if not _armed:
        spec = os.environ.get(ENV, "")
        _armed.append(Failpoints(spec) if spec else None)
    return _armed[0]


def failpoint(name: str) -> None:
    """SIGKILL this process here if ``PATCHLOG_FAILPOINTS`` arms ``name`` and its rule
    fires; otherwise return at once."""
    points = _points()
    if points is None or not points.fires(name):
        return
    where = os.environ.get(LOG_ENV)
    if where:
        line = f"{name} {os.getpid()} {time.time_ns()}\n".encode()
        fd = os.open(where, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)  # one write under O_APPEND: lines of processes never mix
        finally:
            os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)


def broken(flaw: str) -> bool:
    """Whether ``PATCHLOG_BROKEN`` names ``flaw``: a deliberately broken build, for the
    fault suite's test that its checker can fail."""
    return flaw in os.environ.get(BROKEN_ENV, "").split(",")
