"""Refusal notices, the pure half: who gets one, and what it says (golden text)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import pytest

from policies import AddressField, ConfigError, MessageFacts, evaluate, load_policy, parse_policy
from policies.model import Attachment, DkimResult, DocumentEvidence, SignatureCheck
from policies.notices import notice_kind, render_notice

DATA = Path(__file__).parent.parent / "data"
NOW = datetime(2026, 11, 22, 3, tzinfo=UTC)
POLICY = load_policy(DATA / "policies" / "notices.toml")

UNSIGNED = DocumentEvidence(
    Attachment("cong-van-123.pdf", "application/pdf", "application/pdf", 2048, "ab" * 32),
    (SignatureCheck("pdf", "none", "unsigned", "no signature"),),
)
FACTS = MessageFacts(
    mail_from="a.nguyen@dilinh.lamdong.gov.vn",
    recipients=("vanthu@lamdong.gov.vn",),
    client_ip="10.20.1.5",
    client_trusted=True,
    from_fields=(AddressField.parse("From", "Nguyễn Văn A <a.nguyen@dilinh.lamdong.gov.vn>"),),
    subject="Báo cáo tuần 47",
    documents=(UNSIGNED,),
)


def test_golden_vietnamese_refusal_text() -> None:
    """The officer reads which message, why (the district's citation), how to fix, whom to call."""
    decision = evaluate(FACTS, POLICY, NOW)
    content = render_notice(
        FACTS,
        decision,
        POLICY,
        kind="refusal",
        decision_id="01M8270000000000000000000",
        date="Sun, 22 Nov 2026 10:00:00 +0700",
    )
    golden = (DATA / "notices" / "unsigned-refusal.txt").read_text("utf-8")
    assert content.text == golden
    assert "Công văn số 1234/UBND-VP" in content.html and "<ol>" in content.html
    assert "&lt;" not in golden  # the text part is not HTML-escaped


@pytest.mark.parametrize(
    ("change", "why_not"),
    [
        ({}, ""),
        ({"mail_from": ""}, "null sender"),
        ({"auto_submitted": "auto-replied"}, "auto-submitted"),
        ({"content_type": "multipart/report"}, "a report"),
        ({"list_id": "<canbo.lamdong.gov.vn>"}, "mailing list"),
        ({"precedence": "bulk"}, "mailing list"),
        ({"client_trusted": False}, "external sender"),
        # An official From proven by aligned DKIM is internal even from outside.
        ({"client_trusted": False, "dkim": (DkimResult("lamdong.gov.vn", "s1", "pass"),)}, ""),
        (
            {"client_trusted": False, "dkim": (DkimResult("lamdong.gov.vn", "s1", "fail"),)},
            "external sender",
        ),
        # DKIM-valid official From, but the envelope sender (who would get it) is elsewhere.
        (
            {
                "client_trusted": False,
                "mail_from": "victim@example.com",
                "dkim": (DkimResult("lamdong.gov.vn", "s1", "pass"),),
            },
            "external sender",
        ),
    ],
)
def test_who_gets_a_notice(change: dict[str, object], why_not: str) -> None:
    """Only internal senders, never to bounces, robots or lists (no backscatter)."""
    facts = dataclasses.replace(FACTS, **change)  # type: ignore[arg-type]
    kind, reason = notice_kind(facts, evaluate(facts, POLICY, NOW), POLICY)
    if why_not:
        assert kind == "" and why_not in reason
    else:
        assert (kind, reason) == ("refusal", "")


def test_advisory_in_monitor_mode_names_the_start_date() -> None:
    """Monitor with advisories on: 'this will be refused from <date>' instead of a refusal."""
    text = (DATA / "policies" / "notices.toml").read_text("utf-8")
    text = text.replace(
        'id = "document-signature-required"',
        'id = "document-signature-required"\nenforce_from = 2027-01-01',
    )
    text += "\n[notices]\nadvisory_in_monitor = true\n"
    policy = parse_policy(text, "advisory.toml")
    decision = evaluate(FACTS, policy, NOW)
    assert notice_kind(FACTS, decision, policy) == ("advisory", "")
    content = render_notice(FACTS, decision, policy, kind="advisory", decision_id="X", date="")
    assert content.text.startswith(
        "THÔNG BÁO NHẮC NHỞ: thư sau đây đã được chuyển, nhưng từ ngày 2027-01-01"
    )
    quiet = parse_policy(
        text.replace("advisory_in_monitor = true", "advisory_in_monitor = false"), "quiet.toml"
    )
    assert notice_kind(FACTS, evaluate(FACTS, quiet, NOW), quiet)[0] == ""


def test_templates_are_validated_when_the_policy_is_read(tmp_path: Path) -> None:
    """A district's broken template is refused at load, naming the file, not at first use."""
    folder = tmp_path / "mau"
    folder.mkdir()
    (folder / "notice.txt.j2").write_text("Xin chào {{ subjct }}\n", "utf-8")
    (folder / "notice.html.j2").write_text("<p>{{ subject }}</p>\n", "utf-8")
    policy = tmp_path / "p.toml"
    policy.write_text(
        '[domains]\nofficial = ["lamdong.gov.vn"]\n[notices]\ntemplates = "mau"\n'
        '[[rules]]\nid = "document-signature-required"\n',
        "utf-8",
    )
    with pytest.raises(ConfigError, match=r"notice\.txt\.j2.*subjct"):
        load_policy(policy)
    (folder / "notice.txt.j2").write_text("{{ subject + 1 }}\n", "utf-8")  # not a Jinja error
    with pytest.raises(ConfigError, match=r"notice\.txt\.j2.*TypeError"):
        load_policy(policy)
    (folder / "notice.txt.j2").write_text("Xin chào {{ subject }}\n", "utf-8")
    assert load_policy(policy).notices.text_template == "Xin chào {{ subject }}\n"
