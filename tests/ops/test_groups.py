"""One reading of a group's XINFO GROUPS row for the prober, status, top and pulse."""

from __future__ import annotations

from typing import Any

from patchlog.ops.groups import GroupRow, group_row


def test_a_row_read_with_what_the_server_cannot_tell() -> None:
    """Counters as given; entries-read unknown is 0 for a group that has read nothing
    and unknown (None) otherwise; an unknown lag counts as no backlog."""
    replies: list[dict[str, Any]] = [
        {"name": b"other", "pending": 9},
        {"name": b"execute", "pending": 3, "lag": 7, "entries-read": 40},
    ]
    assert group_row(replies, "execute") == GroupRow(pending=3, lag=7, read=40)
    assert group_row(replies, "normalize") is None
    fresh = {"name": "g", "pending": 0, "lag": None, "entries-read": None,
             "last-delivered-id": b"0-0"}  # fmt: skip
    assert group_row([fresh], "g") == GroupRow(pending=0, lag=None, read=0)
    moved = {**fresh, "pending": 2, "last-delivered-id": b"5-0"}
    row = group_row([moved], "g")
    assert row == GroupRow(pending=2, lag=None, read=None)
    assert row.backlog == 2
    assert GroupRow(pending=3, lag=7, read=40).backlog == 10
