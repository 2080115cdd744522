"""docs/design/layout.md names every module of gateway/ and policies/, and only paths that
exist: a newcomer reading it finds each module, and a module added or moved fails here until
the page says where it lives."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[2]
PAGE = (ROOT / "docs" / "design" / "layout.md").read_text("utf-8")


def _named_paths() -> set[str]:
    """Every path named in the page's table: the row's path, and the files named in its text
    (a bare ``x.py`` in a folder's row belongs to that folder)."""
    named = set()
    for row in re.findall(r"^\| `([^`]+)`[^|]*\| (.*) \|$", PAGE, re.MULTILINE):
        folder, text = row
        for path in folder.split("`, `"):
            named.add(path.rstrip("/"))
        for name in re.findall(r"`([\w/.]+\.py)`", text):
            named.add(name if "/" in name else f"{folder.rstrip('/')}/{name}")
    return named


def test_every_module_is_named() -> None:
    """Each module of the two packages (``__init__`` aside) is on the page."""
    named = _named_paths()
    modules = {
        p.relative_to(ROOT).as_posix()
        for package in ("gateway", "policies")
        for p in (ROOT / package).rglob("*.py")
        if p.name != "__init__.py"
    }
    missing = sorted(m for m in modules if m not in named)
    assert not missing, f"not named in docs/design/layout.md: {missing}"


def test_every_named_path_exists() -> None:
    """Nothing on the page is a module that was moved or removed."""
    gone = sorted(p for p in _named_paths() if not (ROOT / p).exists())
    assert not gone, f"named in docs/design/layout.md but not in the repository: {gone}"
