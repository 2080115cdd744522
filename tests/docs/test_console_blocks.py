"""A command shown with a prompt is in a `console` block, so the tests run it: no `$ ` prompt
hides in a `sh`, `text` or unmarked block, where its output would never be checked."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[2]
FENCE = re.compile(r"^( *)(```+)([^\n]*)\n(.*?)^\1\2 *$", re.MULTILINE | re.DOTALL)


def test_prompts_only_in_console_blocks() -> None:
    hidden = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        text = page.read_text("utf-8")
        for block in FENCE.finditer(text):
            if block.group(3).strip() != "console" and re.search(r"^\s*\$ ", block[4], re.M):
                hidden.append(
                    f"{page.relative_to(ROOT)}:{text.count(chr(10), 0, block.start()) + 1}"
                )
    assert hidden == []
