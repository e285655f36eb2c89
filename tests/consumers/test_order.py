"""The answer to "is an earlier entry of this document still on its way?" from one scan
of the pending lists (pure: the scan's rows are given)."""

from __future__ import annotations

from patchlog.consumers.order import UNREAD, PendingByDoc


def _scan(complete: bool = True) -> PendingByDoc:
    return PendingByDoc(
        ingress={"a": [((5, 0), "5-0")]},
        internal={"b": [((3, 0), "9-0")]},  # forwarded late: its ingress id counts
        complete=complete,
    )


def test_only_an_entry_submitted_before_the_patch_is_its_predecessor() -> None:
    scan = _scan()
    assert scan.earlier("a", "6-0") == "5-0"
    assert scan.earlier("a", "5-0") is None  # itself
    assert scan.earlier("a", "4-9") is None  # submitted after it
    assert scan.earlier("b", "4-0") == "9-0"
    assert scan.earlier("c", "9-0") is None


def test_a_scan_that_stopped_short_never_rules_a_predecessor_out() -> None:
    """Past 10,000 pending entries a predecessor may sit unread: the patch waits (within
    its bound) instead of being rejected base_ahead ahead of it."""
    scan = _scan(complete=False)
    assert scan.earlier("a", "6-0") == "5-0"
    assert scan.earlier("c", "9-0") == UNREAD
