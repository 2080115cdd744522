"""Meta-tests of the one reason table: every code answers consistently and fits SMTP."""

from __future__ import annotations

import re

import pytest

from policies import REASONS, Action, reply_for
from policies.reasons import MAX_REPLY_LINE

CODES = sorted(REASONS)


@pytest.mark.parametrize("code", CODES)
def test_every_reason_is_consistent(code: str) -> None:
    """5xx goes with reject, 4xx with tempfail, 2xx with accept (a recorded note)."""
    reason = REASONS[code]
    assert reason.code == code
    assert re.fullmatch(r"[a-z]+\.[a-z0-9_]+", code)
    expected_class = {Action.REJECT: 5, Action.TEMPFAIL: 4, Action.ACCEPT: 2}[reason.action]
    assert reason.smtp_code // 100 == expected_class
    assert re.fullmatch(rf"{expected_class}\.\d{{1,3}}\.\d{{1,3}}", reason.enhanced)
    for text in (
        reason.explain_vi,
        reason.explain_en,
        reason.fix_vi,
        reason.fix_en,
        reason.reply_vi,
        reason.reply_en,
    ):
        assert text.strip()


@pytest.mark.parametrize("code", CODES)
@pytest.mark.parametrize("help_contact", ["", "Văn phòng UBND huyện, ĐT 0263.3123.456", "x" * 2000])
def test_every_reply_is_printable_ascii_within_the_line_limit(code: str, help_contact: str) -> None:
    """Replies carry the code, Vietnamese without diacritics, English and help, in one line."""
    line = reply_for(code, help_contact).line()
    assert all(" " <= c <= "~" for c in line)
    assert len(line) <= MAX_REPLY_LINE
    assert line.startswith(f"{REASONS[code].smtp_code} {REASONS[code].enhanced} [{code}] ")


def test_policy_reasons_cite_a_directive() -> None:
    """Reasons that enforce a directive cite it (in Vietnamese) for notices and auditors."""
    for code in ("sender.personal_domain", "sender.malformed_identity"):
        assert "Công văn" in REASONS[code].directive
