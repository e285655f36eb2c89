"""The distribution as users install it, and the layering of its packages."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_installs_one_import_package_with_its_scripts_and_types(tmp_path: Path) -> None:
    """The wheel's only top-level import package is patchlog, Lua and py.typed inside."""
    # Built from a copy, so the build leaves nothing behind in the work tree.
    source = tmp_path / "src"
    shutil.copytree(
        ROOT, source, symlinks=True,
        ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "*cache*"),
    )  # fmt: skip
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "-w", str(tmp_path), str(source)],
        check=True, capture_output=True, timeout=240,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("patchlog-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/", 1)[0] for name in names}
    assert {t for t in top if not t.endswith((".dist-info", ".data"))} == {"patchlog"}
    for layer in ("streams", "projections", "consumers", "ops"):
        assert f"patchlog/{layer}/__init__.py" in names
        assert f"patchlog/{layer}/py.typed" in names
    assert "patchlog/py.typed" in names
    assert "patchlog/__main__.py" in names
    lua = {Path(n).name for n in names if n.startswith("patchlog/streams/lua/")}
    assert {"commit.lua", "forward.lua", "common.lua"} <= lua
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "patchlog = patchlog.ops.cli:main" in text


def test_python_m_patchlog_runs_the_cli_and_prints_the_version() -> None:
    """``python -m patchlog --version`` prints the package version."""
    from patchlog import __version__  # noqa: PLC0415

    out = subprocess.run(
        [sys.executable, "-m", "patchlog", "--version"],
        check=True, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.stdout.strip() == f"patchlog {__version__}"


def _check_layers(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "check-layers"), str(root)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_layers_hold_in_this_repository() -> None:
    """No layer imports one above it (ops → consumers → projections → streams)."""
    result = _check_layers(ROOT)
    assert result.returncode == 0, result.stderr


def test_layer_check_fails_on_an_upward_import(tmp_path: Path) -> None:
    """An upward import, in a function or as a -m string, fails the check by name."""
    for layer in ("streams", "projections", "consumers", "ops"):
        (tmp_path / layer).mkdir()
        (tmp_path / layer / "__init__.py").write_text("")
    (tmp_path / "ops" / "ok.py").write_text("from patchlog.streams.keys import Keys\n")
    (tmp_path / "streams" / "bad.py").write_text(
        "def f() -> None:\n    from patchlog.projections.fold import fold\n"
    )
    (tmp_path / "consumers" / "launch.py").write_text('ARGS = ["-m", "patchlog.ops.cli"]\n')
    (tmp_path / "projections" / "parent.py").write_text("from patchlog import consumers\n")
    (tmp_path / "streams" / "relative.py").write_text("from .. import ops\n")
    result = _check_layers(tmp_path)
    assert result.returncode == 1
    assert "streams/bad.py:2: imports patchlog.projections.fold" in result.stderr
    assert "consumers/launch.py:1: imports patchlog.ops.cli" in result.stderr
    assert "projections/parent.py:1: imports patchlog.consumers" in result.stderr
    assert "streams/relative.py:1: imports patchlog.ops" in result.stderr
    assert "ok.py" not in result.stderr
