"""docs/reference/reasons.md is the reason table as the code has it (generated, never edited)."""

from __future__ import annotations

import runpy
from pathlib import Path

SCRIPT = Path(__file__).parents[2] / "scripts" / "reference.py"


def test_the_reason_page_is_generated_from_the_table() -> None:
    reference = runpy.run_path(str(SCRIPT))
    page = Path(reference["PAGE"]).read_text("utf-8")
    assert page == reference["render"](), "run: .venv/bin/python scripts/reference.py"


def test_every_code_has_its_section() -> None:
    from policies.reasons import REASONS

    page = (Path(__file__).parents[2] / "docs" / "reference" / "reasons.md").read_text("utf-8")
    for code in REASONS:
        assert f"\n### `{code}`\n" in page
