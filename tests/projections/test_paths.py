"""Document names as file paths: inside the folder, collision-free under case folding,
deterministic, reversible."""

from __future__ import annotations

import posixpath
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from patchlog.projections.paths import DIR_SUFFIX, SEGMENT_MAX, doc_of, path_of

# Characters where file systems disagree: case, dots, the escape characters themselves,
# Windows' forbidden ones, letters that case-fold or normalize to others, surrogates.
_TRICKY = st.sampled_from(
    [
        *'aAbBdDzZ09.-_+~ %:*?"<>|\\\t$',
        *["\u00e9", "\u00c9", "e\u0301", "\u00df", "\u1e9e", "\u017f", "\u212a", "\u0131"],
        *["\u0130", "\ufb01", "\u03a3", "\u03c2", "\u03c3", "\u6f22", "\U0001f642", "\ud800"],
    ]
)
_SEGMENT = st.one_of(
    st.lists(_TRICKY, min_size=1, max_size=12).map("".join),
    st.sampled_from(
        [".", "..", "...", ".d", "x.d", "con", "CON", "nul.txt", "com1", "lpt9.d", "a.", " a "]
    ),
    st.text(min_size=1, max_size=300).filter(lambda s: "/" not in s),
)
names = st.lists(_SEGMENT, min_size=1, max_size=4).map("/".join)
_ALPHABET = set("abcdefghijklmnopqrstuvwxyz0123456789-_.+~/")


def _variants(name: str) -> list[str]:
    """Names a careless mapping would send to the same file as ``name``."""
    return [
        name.upper(),
        name.lower(),
        name.swapcase(),
        name.casefold(),
        unicodedata.normalize("NFC", name),
        unicodedata.normalize("NFD", name),
        unicodedata.normalize("NFKC", name),
        name + "/x",
        name + DIR_SUFFIX,
        name.rsplit("/", 1)[0] if "/" in name else name + ".",
    ]


@given(names)
def test_a_path_never_leaves_the_folder(name: str) -> None:
    """Relative, no empty, ``.``, ``..`` or hidden segment, short segments, and only
    characters every file system takes as they are (no case, no Windows-forbidden ones)."""
    path = path_of(name)
    assert not path.startswith("/")
    assert set(path) <= _ALPHABET
    for segment in path.split("/"):
        assert segment
        assert not segment.startswith(".")
        assert not segment.endswith(".")
        assert len(segment.encode()) <= SEGMENT_MAX
    assert posixpath.normpath(posixpath.join("/root", path)).startswith("/root/")
    assert posixpath.normpath(posixpath.join("/root", path)) == "/root/" + path
    assert path == path.casefold() == unicodedata.normalize("NFKC", path)


@given(names, names)
def test_distinct_names_never_share_a_file_or_folder_under_case_folding(a: str, b: str) -> None:
    """Two names give paths that differ under casefold, and a document's file is never
    the folder of another's."""
    pa, pb = path_of(a).casefold(), path_of(b).casefold()
    if a != b:
        assert pa != pb
    assert not pb.startswith(pa + "/")


@given(names, st.data())
def test_lookalike_names_get_their_own_paths(name: str, data: st.DataObject) -> None:
    """Names that differ only by case, Unicode normal form, a folder suffix or a trailing
    dot keep apart (random pairs seldom hit these)."""
    other = data.draw(st.sampled_from(_variants(name)))
    if other == name or any(not part for part in other.split("/")):
        return
    pa, pb = path_of(name).casefold(), path_of(other).casefold()
    assert pa != pb
    assert not pa.startswith(pb + "/")
    assert not pb.startswith(pa + "/")


@given(names)
def test_the_mapping_is_deterministic_and_reversible(name: str) -> None:
    """The same path every time, and the name back from it (unless a segment was
    shortened, which only very long escaped segments are)."""
    path = path_of(name)
    assert path_of(name) == path
    if "~~" in path:
        with pytest.raises(ValueError, match="not recoverable"):
            doc_of(path)
    else:
        assert doc_of(path) == name


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("doc-0", "doc-0"),
        ("notes_2024.md", "notes_2024.md"),
        ("README.md", "+r+e+a+d+m+e.md"),
        ("readme.md", "readme.md"),
        ("my notes.txt", "my~20notes.txt"),
        ("café", "caf~c3~a9"),
        ("a+b~c", "a~2bb~7ec"),
        (".env", "~2eenv"),
        ("..", "~2e~2e"),
        ("end.", "end~2e"),
        ("con.txt", "co~6e.txt"),
        ("NUL", "+n+u+l"),
        ("notes", "notes"),
        ("notes/today", "notes.d/today"),
        ("x.d", "x~2ed"),
        ("x.d/y.d", "x.d.d/y~2ed"),
        ("Docs/API/v1.md", "+docs.d/+a+p+i.d/v1.md"),
    ],
)
def test_known_paths(name: str, path: str) -> None:
    """The mapping as the module documents it; fixed, so a folder written by one version
    is read by the next."""
    assert path_of(name) == path
    assert doc_of(path) == name


def test_a_long_escaped_segment_is_shortened_with_a_hash() -> None:
    """256 bytes of non-ASCII escape to 768 characters: cut, with a digest of the
    original segment, still within one file name and still distinct."""
    a, b = "é" * 128, "é" * 127 + "è"
    pa, pb = path_of(a), path_of(b)
    assert len(pa) <= SEGMENT_MAX
    assert pa != pb
    assert pa.startswith("~c3~a9")
    assert "~~" in pa
    assert len(path_of(f"{a}/x").split("/")[0]) <= SEGMENT_MAX


@pytest.mark.parametrize("name", ["", "/a", "a/", "a//b"])
def test_an_empty_segment_is_refused(name: str) -> None:
    """No document has one: a clear error naming the field and the rule."""
    with pytest.raises(ValueError, match=r"^doc: .* empty segment; rule: '/'-separated names"):
        path_of(name)


@pytest.mark.parametrize(
    "path",
    ["A", "a/b", "notes.d", "x.d", "+1", "~zz", "~2f", "a~2", ".env", "a~~0f", "x.d/", "~ff"],
)
def test_doc_of_refuses_what_no_name_maps_to(path: str) -> None:
    """A path the mapping never writes (upper case, an unmarked folder, a bad escape, an
    escaped '/', a hidden file, bytes that are not UTF-8) names no document."""
    with pytest.raises(ValueError, match=r"^path: "):
        doc_of(path)
