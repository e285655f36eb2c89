"""The per-entry rows of the stage scripts: Python and Lua agree on every position."""

from __future__ import annotations

import re
from importlib import resources

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from patchlog.streams.scripts import CommitRow, ForwardRow

_CONSTANT = re.compile(r"^local ([A-Z][A-Z_]*) = (\d+)\b", re.MULTILINE)
_DOCUMENTED = re.compile(r"(\d+) ``(\w+)``")
ROWS = [("commit", CommitRow), ("forward", ForwardRow)]


def lua_positions(script: str) -> list[tuple[str, int]]:
    """The named position constants a Lua script declares, in order."""
    source = resources.files("patchlog.streams").joinpath("lua", f"{script}.lua").read_text()
    return [(name, int(pos)) for name, pos in _CONSTANT.findall(source)]


@pytest.mark.parametrize(("script", "row"), ROWS)
def test_lua_reads_the_row_positions_of_its_struct(script: str, row: type[msgspec.Struct]) -> None:
    """Each script names every position of its row struct, in the struct's field order."""
    expected = [(name.upper(), i) for i, name in enumerate(row.__struct_fields__, start=1)]
    assert lua_positions(script) == expected


@pytest.mark.parametrize(("script", "row"), ROWS)
def test_row_docstring_lists_the_positions(script: str, row: type[msgspec.Struct]) -> None:
    """The struct's docstring documents the positions Lua reads."""
    documented = [(name, int(pos)) for pos, name in _DOCUMENTED.findall(row.__doc__ or "")]
    expected = [(name, i) for i, name in enumerate(row.__struct_fields__, start=1)]
    assert documented == expected, script


_texts = st.text(max_size=12)
_flat = st.lists(_texts, max_size=6).map(tuple)
commit_rows = st.builds(
    CommitRow,
    entry=_texts,
    kind=st.sampled_from(["c", "r", "n", "x"]),
    head=st.integers(0, 2**53),
    prev=_texts,
    src=_texts,
    digest=_texts,
    outcome=_flat,
    record=_texts,
    revision=_flat,
    hash=_texts,
    lines=st.integers(0, 2**31),
    prevsrc=_texts,
    doc=_texts,
)
forward_rows = st.builds(
    ForwardRow, entry=_texts, kind=st.sampled_from(["f", "r"]), outcome=_flat, record=_texts
)


@given(st.one_of(commit_rows, forward_rows))
def test_a_row_is_a_msgpack_array_in_field_order(row: CommitRow | ForwardRow) -> None:
    """A row reaches the script as a plain array (what cmsgpack unpacks to a Lua table),
    one value per field in declaration order, and decodes back to itself."""
    data = msgspec.msgpack.encode(row)
    plain = msgspec.msgpack.decode(data)
    assert plain == [list(v) if isinstance(v, tuple) else v for v in msgspec.structs.astuple(row)]
    assert msgspec.msgpack.decode(data, type=type(row)) == row


def test_a_forwarded_row_has_empty_rejection_values() -> None:
    """A forwarded entry's row sends an empty outcome and record, as the script expects,
    and the position of its normalized stream in KEYS (2: the first, or only, one)."""
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(ForwardRow(entry="1-0", kind="f"))) == [
        "1-0",
        "f",
        [],
        "",
        2,
    ]
