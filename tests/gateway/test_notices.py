"""Refusal notices on the wire: RFC 3464 structure, and delivery to the officer end to end."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime
from pathlib import Path

from test_documents_e2e import DOCUMENT_RULES, with_files

from gateway.message import parse_message
from gateway.notices import build_notice
from policies import AddressField, MessageFacts
from policies.notices import NoticeContent
from tests.support.gateway import CLERK, OFFICIAL, make_config, policy_text
from tests.support.smtp import Downstream

WHEN = datetime(2026, 11, 22, 3, tzinfo=UTC)
ORIGINAL = b"From: a@x.gov.vn\r\nTo: vanthu@lamdong.gov.vn\r\nSubject: Bao cao\r\n\r\nbody\r\n"


def notice(mail_from: str = "a@x.gov.vn", raw: bytes = ORIGINAL) -> email.message.Message:
    facts = MessageFacts(
        mail_from=mail_from,
        recipients=(CLERK,),
        client_ip="10.0.0.1",
        client_trusted=True,
        from_fields=(AddressField.parse("From", mail_from),),
        subject="Báo cáo tuần",
    )
    data, message_id = build_notice(
        kind="refusal",
        content=NoticeContent("Thư bị trả lại.\n", "<p>Thư bị trả lại.</p>\n"),
        facts=facts,
        parsed=parse_message(raw),
        reply="550 5.7.1 [document.unsigned] Van ban ... (ref 01X)",
        decision_id="01X",
        hostname="gw.lamdong.gov.vn",
        from_address="MAILER-DAEMON@gw.lamdong.gov.vn",
        when=WHEN,
    )
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert msg["Message-ID"] == message_id
    return msg


def test_notice_is_an_rfc3464_delivery_status_report() -> None:
    """multipart/report with the human part, the machine-readable status and the headers."""
    msg = notice()
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert str(msg["Subject"]) == "Thư bị trả lại / Returned mail: Báo cáo tuần"
    human, status, headers = msg.get_payload()
    assert human.get_content_type() == "multipart/alternative"
    text, html = human.get_payload()
    assert text.get_content() == "Thư bị trả lại.\n" and text.get_content_charset() == "utf-8"
    assert html.get_content_type() == "text/html"
    assert status.get_content_type() == "message/delivery-status"
    per_message, per_recipient = status.get_payload()
    assert per_message["Reporting-MTA"] == "dns; gw.lamdong.gov.vn"
    assert per_recipient["Final-Recipient"] == f"rfc822; {CLERK}"
    assert per_recipient["Action"] == "failed" and per_recipient["Status"] == "5.7.1"
    assert per_recipient["Diagnostic-Code"].startswith("smtp; 550 5.7.1 [document.unsigned]")
    assert headers.get_content_type() == "text/rfc822-headers"
    assert b"Subject: Bao cao" in headers.as_bytes()


def test_utf8_addresses_use_the_rfc6533_types() -> None:
    """An internationalised sender gets message/global-delivery-status and global-headers."""
    msg = notice("văn.thư@x.gov.vn", ORIGINAL.replace(b"a@x.gov.vn", "văn.thư@x.gov.vn".encode()))
    _, status, headers = msg.get_payload()
    assert status.get_content_type() == "message/global-delivery-status"
    assert headers.get_content_type() == "message/global-headers"


def test_refused_officer_gets_the_notice_through_the_downstream(
    start_gateway, downstream: Downstream, tmp_path: Path
) -> None:
    """From the district network, an unsigned document: 550, and the notice reaches the officer."""
    gw = start_gateway(
        make_config(tmp_path, downstream.port, trusted=True), policy_text(DOCUMENT_RULES)
    )
    _, (code, _) = gw.send(with_files(("cv.pdf", b"%PDF-1.7\n%%EOF\n")), OFFICIAL, [CLERK])
    assert code == 550
    [delivered] = downstream.handler.messages
    assert delivered.mail_from == "<>" and delivered.rcpt_tos == [OFFICIAL]  # null sender
    msg = email.message_from_bytes(delivered.data, policy=email.policy.default)
    assert msg.get_content_type() == "multipart/report"
    text = msg.get_payload()[0].get_payload()[0].get_content()
    assert "THƯ BỊ TRẢ LẠI" in text and "cv.pdf" in text and "Căn cứ:" in text
    [record] = gw.records()
    assert record["notice"]["sent"] is True
    assert record["notice"]["message_id"] == msg["Message-ID"]


def test_notices_are_rate_limited_and_never_go_to_outsiders(
    start_gateway, downstream: Downstream, tmp_path: Path
) -> None:
    """One notice an hour here; an external (possibly forged) sender gets none at all."""
    rules = DOCUMENT_RULES
    gw = start_gateway(
        make_config(tmp_path, downstream.port, trusted=True),
        policy_text(rules, extra="[notices]\nrate_per_hour = 1\n"),
    )
    unsigned = with_files(("cv.pdf", b"%PDF-1.7\n%%EOF\n"))
    for _ in range(2):
        assert gw.send(unsigned, OFFICIAL, [CLERK])[1][0] == 550
    first, second = gw.records()
    assert first["notice"]["sent"] is True
    assert second["notice"]["sent"] is False and "rate limit" in second["notice"]["reason"]

    outside = start_gateway(make_config(tmp_path / "o", downstream.port), policy_text(rules))
    assert outside.send(unsigned, OFFICIAL, [CLERK])[1][0] == 550
    [record] = outside.records()
    assert record["notice"]["sent"] is False and "external sender" in record["notice"]["reason"]
    assert len(downstream.handler.messages) == 1  # the one notice from the first gateway


def test_notices_can_go_through_a_separate_relay(
    start_gateway, downstream: Downstream, tmp_path: Path
) -> None:
    """[notices] url: a submission relay for notices (here a Maildir), the downstream for mail."""
    from gateway.config import DownstreamConfig

    config = make_config(
        tmp_path,
        downstream.port,
        trusted=True,
        notice_relay=DownstreamConfig("maildir", maildir=tmp_path / "notices"),
    )
    gw = start_gateway(config, policy_text(DOCUMENT_RULES))
    assert gw.send(with_files(("cv.pdf", b"%PDF-1.7\n%%EOF\n")), OFFICIAL, [CLERK])[1][0] == 550
    assert downstream.handler.messages == []
    [path] = list((tmp_path / "notices" / "new").iterdir())
    assert path.read_bytes().startswith(b"Return-Path: <>\r\nDelivered-To: " + OFFICIAL.encode())


def test_advisory_in_monitor_mode_reaches_the_officer(
    start_gateway, downstream: Downstream, tmp_path: Path
) -> None:
    """Monitor with advisories: the mail is delivered, and the officer is told it will not be."""
    rules = DOCUMENT_RULES.replace(
        'id = "document-signature-required"\n',
        'id = "document-signature-required"\nenforce_from = 2099-01-01\n',
    )
    gw = start_gateway(
        make_config(tmp_path, downstream.port, trusted=True),
        policy_text(rules, extra="[notices]\nadvisory_in_monitor = true\n"),
    )
    assert gw.send(with_files(("cv.pdf", b"%PDF-1.7\n%%EOF\n")), OFFICIAL, [CLERK])[1][0] == 250
    mail, advisory = downstream.handler.messages
    assert mail.rcpt_tos == [CLERK] and advisory.rcpt_tos == [OFFICIAL]
    msg = email.message_from_bytes(advisory.data, policy=email.policy.default)
    assert msg.get_content_type() == "multipart/alternative"  # delivered: not a failure report
    assert "từ ngày 2099-01-01" in msg.get_payload()[0].get_content()
    assert gw.records()[0]["notice"]["kind"] == "advisory"
