"""Every reason code and log event the pages name exists: an officer, admin or auditor who
looks one up finds it (the two share the dotted form: `store.unavailable` is a reason,
`store.failed` a log event)."""

from __future__ import annotations

import re
from pathlib import Path

from policies.reasons import REASONS

ROOT = Path(__file__).parents[2]
# Log events as the code emits them: log.error("store.failed", ...), maybe on the next line.
EVENT = re.compile(r'\.(?:debug|info|warning|error|exception)\(\s*"([a-z_]+\.[a-z_.]+)"')
EVENTS = {
    event
    for source in (ROOT / "gateway").rglob("*.py")
    for event in EVENT.findall(source.read_text("utf-8"))
}
FAMILIES = sorted({name.partition(".")[0] for name in [*REASONS, *EVENTS]})
# A code as the pages write it: in brackets or backticks, e.g. [sender.personal_domain].
FILE_NAME = re.compile(r"\.(py|toml)$")  # policy.toml, relay.py: files, not codes
MENTION = re.compile(rf"[\[`]((?:{'|'.join(FAMILIES)})\.[a-z_]+)[\]`]")


def test_every_reason_code_and_log_event_named_in_the_docs_exists() -> None:
    unknown = {
        f"{page.relative_to(ROOT)}: {code}"
        for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
        for code in MENTION.findall(page.read_text("utf-8"))
        if code not in REASONS and code not in EVENTS and not FILE_NAME.search(code)
    }
    assert sorted(unknown) == []
    assert {"store.failed", "downstream.unreachable", "gateway.started"} <= EVENTS


def test_the_officer_page_lists_every_refusal_an_officer_can_get() -> None:
    """Each code that refuses or defers mail is explained to officers, in Vietnamese."""
    page = (ROOT / "docs" / "officer" / "index.md").read_text("utf-8")
    missing = [code for code, r in REASONS.items() if r.smtp_code >= 400 and code not in page]
    assert missing == []
