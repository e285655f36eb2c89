"""One scenario's result: its verdict, the violations that decided it, and its figures,
printed as one row of the suite's table (``python -m tests.faults.run``)."""

from __future__ import annotations

import dataclasses

Figure = int | float | str


@dataclasses.dataclass
class Row:
    """A scenario's verdict and figures; ``ok`` is true iff ``violations`` is empty."""

    scenario: str
    """Its id in FAULT-PLAN.md (``F2``, ``B7``, ``D1``)."""
    figures: dict[str, Figure] = dataclasses.field(default_factory=dict)
    """Named figures: counts, seconds (``_s``), milliseconds (``_ms``)."""
    violations: list[str] = dataclasses.field(default_factory=list)
    """What broke a guarantee, one sentence each (empty: the scenario passed)."""

    @property
    def ok(self) -> bool:
        """True iff no guarantee was broken."""
        return not self.violations

    def check(self, holds: bool, violation: str) -> None:
        """Record ``violation`` unless ``holds``."""
        if not holds:
            self.violations.append(violation)

    def assert_ok(self) -> None:
        """Raise AssertionError listing every violation (for pytest)."""
        assert self.ok, f"{self.scenario}: " + "; ".join(self.violations) + f" {self.figures}"
