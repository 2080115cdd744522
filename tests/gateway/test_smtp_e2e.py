"""End to end over loopback: smtplib client -> gateway -> real aiosmtpd downstream."""

from __future__ import annotations

import json
import re
import smtplib
from pathlib import Path
from typing import Any

import pytest

from gateway.store import StoreError
from policies.rules import RULES, rule
from tests.support.gateway import CLERK, OFFICIAL, make_config, message, policy_text
from tests.support.smtp import Downstream

ID = re.compile(rb"accepted as ([0-9A-Z]{26})")


def test_clean_official_mail_is_delivered_byte_for_byte_with_our_headers(
    start_gateway, downstream: Downstream, tmp_path: Path
) -> None:
    """Official mail reaches the downstream unchanged, behind our Received and A-R headers."""
    gw = start_gateway(make_config(tmp_path, downstream.port), policy_text())
    data = message()
    rcpts, (code, text) = gw.send(data, OFFICIAL, [CLERK])
    assert rcpts == [(250, b"2.1.5 Recipient ok")]
    assert code == 250 and text.startswith(b"2.0.0 Ok: accepted as ")
    decision_id = ID.search(text).group(1).decode()  # type: ignore[union-attr]

    [got] = downstream.handler.messages
    assert got.mail_from == OFFICIAL and got.rcpt_tos == [CLERK]
    assert got.data.endswith(data)
    head = got.data[: -len(data)].decode()
    assert head.startswith("Received: from client.test ([127.0.0.1]) by gw.lamdong.gov.vn")
    assert f"id {decision_id}" in " ".join(head.split())
    assert "Authentication-Results: gw.lamdong.gov.vn; congvu=pass" in head
    assert f"policy.decision={decision_id}" in head

    [record] = gw.records()
    assert record["id"] == decision_id
    assert record["verdict"] == "accept" and record["reasons"] == []
    assert record["reply"] == f"250 2.0.0 Ok: accepted as {decision_id}"
    assert record["envelope"]["recipients"] == [
        {"address": CLERK, "accepted": True, "reply": "250 2.1.5 Recipient ok", "reason": None}
    ]
    assert record["headers"]["from"][0]["addresses"] == [OFFICIAL]


def test_gmail_sender_is_refused_and_nothing_delivered(
    start_gateway, downstream: Downstream, tmp_path: Path
) -> None:
    """A gmail From to an official mailbox gets 550 5.7.1 [sender.personal_domain]."""
    gw = start_gateway(make_config(tmp_path, downstream.port))
    data = message(from_="Nguyen Van A <nguyenvana@gmail.com>")
    _, (code, text) = gw.send(data, "nguyenvana@gmail.com", [CLERK])
    assert code == 550
    assert text.startswith(b"5.7.1 [sender.personal_domain] Van ban cong vu phai gui tu hop thu")
    assert b"Official mail must be sent from an official mailbox" in text
    assert b"Help: Van phong HDND va UBND huyen" in text
    assert downstream.handler.messages == []
    assert downstream.handler.commands[-1] == "RSET"  # downstream transaction abandoned
    [record] = gw.records()
    assert record["verdict"] == "reject"
    assert record["reasons"] == ["sender.personal_domain"]
    assert record["reply"] == f"550 {text.decode()}"
    finding = next(f for f in record["findings"] if f["id"] == "sender-personal-domain")
    assert "From nguyenvana@gmail.com" in finding["detail"]


def test_monitor_mode_delivers_and_records_would_refuse(
    start_gateway, downstream: Downstream, tmp_path: Path
) -> None:
    """In monitor mode the message is delivered and the record says what would be refused."""
    rules = '[[rules]]\nid = "sender-personal-domain"\nmode = "monitor"\n'
    gw = start_gateway(make_config(tmp_path, downstream.port), policy_text(rules))
    _, (code, _) = gw.send(message(from_="x@yahoo.com.vn"), "x@yahoo.com.vn", [CLERK])
    assert code == 250
    [got] = downstream.handler.messages
    assert b'congvu=neutral reason="monitor: would refuse sender.personal_domain"' in b" ".join(
        got.data.split()
    )
    [record] = gw.records()
    assert record["verdict"] == "accept" and record["mode"] == "monitor"
    assert record["monitor_reasons"] == ["sender.personal_domain"]
    assert record["findings"][0]["outcome"] == "would-reject"


def test_enforce_from_in_the_future_acts_as_monitor(
    start_gateway, downstream: Downstream, tmp_path: Path
) -> None:
    """A rule set to enforce from a later date only monitors until then."""
    rules = (
        '[[rules]]\nid = "sender-personal-domain"\nmode = "enforce"\nenforce_from = 2999-01-01\n'
    )
    gw = start_gateway(make_config(tmp_path, downstream.port), policy_text(rules))
    _, (code, _) = gw.send(message(from_="x@gmail.com"), "x@gmail.com", [CLERK])
    assert code == 250
    assert gw.records()[0]["monitor_reasons"] == ["sender.personal_domain"]


def test_downstream_down_answers_451_and_records_no_delivery(start_gateway, tmp_path: Path) -> None:
    """With the downstream unreachable the client gets 451 4.4.1 at MAIL; nothing is accepted."""
    from tests.support.smtp import free_port

    gw = start_gateway(make_config(tmp_path, free_port()))
    with gw.client() as smtp:
        code, text = smtp.mail(OFFICIAL)
    assert code == 451 and text.startswith(b"4.4.1 [downstream.unavailable]")
    [record] = gw.records()
    assert record["verdict"] == "tempfail" and record["reasons"] == ["downstream.unavailable"]


def test_downstream_refusing_one_recipient_refuses_only_that_one(
    start_gateway, downstream: Downstream, tmp_path: Path
) -> None:
    """The downstream's 550 for one RCPT reaches the client for that recipient only."""
    downstream.handler.refuse_rcpt["nobody@lamdong.gov.vn"] = (
        "550 5.1.1 <nobody@lamdong.gov.vn>: no such user"
    )
    gw = start_gateway(make_config(tmp_path, downstream.port))
    rcpts, (code, _) = gw.send(message(), OFFICIAL, ["nobody@lamdong.gov.vn", CLERK])
    assert rcpts == [
        (550, b"5.1.1 <nobody@lamdong.gov.vn>: no such user"),
        (250, b"2.1.5 Recipient ok"),
    ]
    assert code == 250
    [got] = downstream.handler.messages
    assert got.rcpt_tos == [CLERK]
    [record] = gw.records()
    assert [
        (r["address"], r["accepted"], r["reason"]) for r in record["envelope"]["recipients"]
    ] == [
        ("nobody@lamdong.gov.vn", False, "downstream.refused"),
        (CLERK, True, None),
    ]


def test_open_relay_attempt_is_refused_before_the_downstream_sees_it(
    start_gateway, downstream: Downstream, tmp_path: Path
) -> None:
    """A recipient outside the local domains, from an untrusted client: 550 5.7.1 relay denied."""
    gw = start_gateway(make_config(tmp_path, downstream.port))
    with gw.client() as smtp:
        smtp.mail(OFFICIAL)
        code, text = smtp.rcpt("someone@example.com")
    assert code == 550 and text.startswith(b"5.7.1 [relay.denied]")
    assert "RCPT someone@example.com" not in downstream.handler.commands
    [record] = gw.wait_records(1)
    assert record["verdict"] == "reject" and record["reasons"] == ["relay.denied"]


def test_trusted_network_may_relay_outbound(
    start_gateway, downstream: Downstream, tmp_path: Path
) -> None:
    """A client in trusted_networks may send to any domain (outbound through the downstream)."""
    gw = start_gateway(make_config(tmp_path, downstream.port, trusted=True))
    _, (code, _) = gw.send(message(to="partner@example.com"), OFFICIAL, ["partner@example.com"])
    assert code == 250
    assert downstream.handler.messages[0].rcpt_tos == ["partner@example.com"]


@pytest.fixture
def raising_rule():
    """A rule with a bug in it, registered for one test."""

    @rule("test-raises")
    def test_raises(facts, ctx):  # type: ignore[no-untyped-def]
        """A rule that always raises."""
        raise RuntimeError("secret internal detail")

    yield '[[rules]]\nid = "test-raises"\nmode = "enforce"\n'
    del RULES["test-raises"]


def test_a_check_that_raises_answers_451_without_leaking(
    start_gateway, downstream: Downstream, tmp_path: Path, raising_rule: str
) -> None:
    """A bug in a rule is a 451 4.3.0 (never a pass), and the client sees no exception text."""
    gw = start_gateway(make_config(tmp_path, downstream.port), policy_text(raising_rule))
    _, (code, text) = gw.send(message(), OFFICIAL, [CLERK])
    assert code == 451 and text.startswith(b"4.3.0 [internal.check_error]")
    assert b"secret" not in text and b"RuntimeError" not in text
    assert downstream.handler.messages == []
    [record] = gw.records()
    assert record["verdict"] == "tempfail" and record["reasons"] == ["internal.check_error"]


def test_an_exception_in_a_hook_answers_451_not_aiosmtpd_500(
    start_gateway, downstream: Downstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aiosmtpd's default exception reply (500 with the exception text) is overridden."""
    gw = start_gateway(make_config(tmp_path, downstream.port))

    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("internal path /etc/secret")

    monkeypatch.setattr("gateway.transaction.recipient_refusal", broken)
    with gw.client() as smtp:
        assert smtp.mail(OFFICIAL)[0] == 250
        code, text = smtp.rcpt(CLERK)
    assert code == 451 and text.startswith(b"4.3.0 ")
    assert b"secret" not in text


@pytest.mark.parametrize(
    ("data_reply", "code", "verdict"),
    [
        ("554 5.7.1 spam detected downstream", 554, "reject"),
        ("452 4.3.1 insufficient storage", 452, "tempfail"),
    ],
)
def test_downstream_refusal_at_data_is_passed_back(
    start_gateway, downstream: Downstream, tmp_path: Path, data_reply: str, code: int, verdict: str
) -> None:
    """The downstream's 4xx/5xx after DATA is the client's reply: never 250 then drop."""
    downstream.handler.data_reply = data_reply
    gw = start_gateway(make_config(tmp_path, downstream.port))
    _, (got_code, text) = gw.send(message(), OFFICIAL, [CLERK])
    assert (got_code, text.decode()) == (code, data_reply[4:])
    [record] = gw.records()
    assert record["verdict"] == verdict


def test_downstream_lost_mid_transaction_answers_451(
    start_gateway, downstream: Downstream, tmp_path: Path
) -> None:
    """A connection dropped by the downstream at RCPT is a 451 4.4.2 [downstream.lost]."""
    downstream.handler.drop_on_rcpt = True
    gw = start_gateway(make_config(tmp_path, downstream.port))
    [(code, text)], _ = gw.send(message(), OFFICIAL, [CLERK])
    assert code == 451 and text.startswith(b"4.4.2 [downstream.lost]")


def test_no_answer_to_the_whole_message_is_unconfirmed(
    start_gateway, downstream: Downstream, tmp_path: Path
) -> None:
    """A downstream that takes the whole message and answers nothing may have kept it: 451,
    not 250, and the reason tells the officer and the auditor that a copy may exist."""
    downstream.handler.drop_on_data = True
    gw = start_gateway(make_config(tmp_path, downstream.port))
    _, (code, text) = gw.send(message(), OFFICIAL, [CLERK])
    assert code == 451 and text.startswith(b"4.4.2 [downstream.unconfirmed]")
    [record] = gw.records()
    assert (record["verdict"], record["reasons"]) == ("tempfail", ["downstream.unconfirmed"])


def test_the_start_up_self_test_reports_a_broken_check(
    start_gateway, downstream: Downstream, tmp_path: Path, raising_rule: str
) -> None:
    """Before the first client the gateway judges a built-in message: a check that raises is
    logged at start (where the admin looks), not found by the first officer's 451."""
    from structlog.testing import capture_logs

    healthy = start_gateway(make_config(tmp_path, downstream.port))
    broken = start_gateway(make_config(tmp_path, downstream.port), policy_text(raising_rule))
    with capture_logs() as logs:
        assert healthy.loop_thread.run(healthy.gateway.warm_up()) is True
        assert logs == []
        assert broken.loop_thread.run(broken.gateway.warm_up()) is False
    [event] = logs
    assert event["event"] == "gateway.self_test_failed" and event["log_level"] == "error"
    assert "secret internal detail" in event["traceback"]
    assert downstream.handler.messages == [] and broken.records() == []


def test_store_failure_answers_4xx_never_250(
    start_gateway, downstream: Downstream, tmp_path: Path
) -> None:
    """No decision record, no 250: a failing store turns the reply into 451 4.3.0."""

    class BrokenStore:
        def write(self, record: dict[str, Any]) -> None:
            raise StoreError("disk full")

        async def write_async(self, record: dict[str, Any], text: str | None = None) -> None:
            raise StoreError("disk full")

        def tail(self, limit: int) -> list[dict[str, Any]]:
            return []

        def close(self) -> None:
            pass

        def describe(self) -> str:
            return "a broken store"

    gw = start_gateway(make_config(tmp_path, downstream.port), store=BrokenStore())
    _, (code, text) = gw.send(message(), OFFICIAL, [CLERK])
    assert code == 451 and text.startswith(b"4.3.0 [store.unavailable]")


def test_forged_authentication_results_with_our_id_are_removed(
    start_gateway, downstream: Downstream, tmp_path: Path
) -> None:
    """Incoming A-R headers claiming our authserv-id are stripped; others are kept."""
    gw = start_gateway(make_config(tmp_path, downstream.port))
    forged = (
        "Authentication-Results: GW.lamdong.gov.vn; congvu=pass\r\n policy.decision=FORGED\r\n"
        "Authentication-Results: mx.example.com; dkim=pass header.d=example.com\r\n"
        "X-Congvu-Decision: FORGED\r\n"
    )
    data = message(extra=forged)
    _, (code, _) = gw.send(data, OFFICIAL, [CLERK])
    assert code == 250
    got = downstream.handler.messages[0].data
    assert b"FORGED" not in got
    assert b"Authentication-Results: mx.example.com; dkim=pass header.d=example.com\r\n" in got


def test_pipelined_and_sequential_transactions_share_one_downstream_session(
    start_gateway, downstream: Downstream, tmp_path: Path
) -> None:
    """Two messages in one session: each is judged and recorded on its own."""
    gw = start_gateway(make_config(tmp_path, downstream.port))
    with gw.client() as smtp:
        smtp.sendmail(OFFICIAL, [CLERK], message())
        with pytest.raises(smtplib.SMTPDataError):
            smtp.sendmail("x@gmail.com", [CLERK], message(from_="x@gmail.com"))
        smtp.sendmail(OFFICIAL, [CLERK], message(subject="third"))
    assert len(downstream.handler.messages) == 2
    verdicts = [r["verdict"] for r in gw.wait_records(3)]
    assert verdicts == ["accept", "reject", "accept"]


def test_rset_after_rcpt_records_an_abandoned_transaction(
    start_gateway, downstream: Downstream, tmp_path: Path
) -> None:
    """A transaction the client abandons is still recorded (exactly one record)."""
    gw = start_gateway(make_config(tmp_path, downstream.port))
    with gw.client() as smtp:
        smtp.mail(OFFICIAL)
        smtp.rcpt(CLERK)
        assert smtp.rset() == (250, b"2.0.0 Ok")
    [record] = gw.wait_records(1)
    assert record["verdict"] == "abandoned"
    assert downstream.handler.messages == []


def test_ehlo_advertises_the_extensions_and_replies_carry_enhanced_codes(
    start_gateway, downstream: Downstream, tmp_path: Path
) -> None:
    """EHLO lists SIZE, 8BITMIME, SMTPUTF8, ENHANCEDSTATUSCODES and PIPELINING (no cert: no TLS)."""
    gw = start_gateway(make_config(tmp_path, downstream.port, max_message_size=1_000_000))
    with gw.client() as smtp:
        assert smtp.esmtp_features.keys() >= {
            "size",
            "8bitmime",
            "smtputf8",
            "enhancedstatuscodes",
            "pipelining",
        }
        assert smtp.esmtp_features["size"] == "1000000"
        assert "starttls" not in smtp.esmtp_features
        assert smtp.noop() == (250, b"2.0.0 OK")
        assert smtp.docmd("BOGUS") == (500, b'5.5.2 Error: command "BOGUS" not recognized')
        assert smtp.docmd("RCPT TO:<a@b.c>")[0:1] == (503,)


def test_embedded_default_delivers_into_a_maildir(start_gateway, tmp_path: Path) -> None:
    """With no downstream configured, accepted mail lands in the Maildir."""
    gw = start_gateway(make_config(tmp_path, None))
    _, (code, _) = gw.send(message(), OFFICIAL, [CLERK])
    assert code == 250
    [path] = list((tmp_path / "maildir" / "new").iterdir())
    content = path.read_bytes()
    assert content.startswith(f"Return-Path: <{OFFICIAL}>\r\nDelivered-To: {CLERK}\r\n".encode())
    assert content.endswith(message())


def test_smtputf8_mail_passes_through_with_utf8_addresses(
    start_gateway, downstream: Downstream, tmp_path: Path
) -> None:
    """An internationalised (SMTPUTF8) address and UTF-8 headers reach the downstream intact."""
    gw = start_gateway(make_config(tmp_path, downstream.port))
    rcpt = "văn.thư@lamdong.gov.vn"
    data = message(from_="Văn thư <vanthu@dilinh.lamdong.gov.vn>", to=rcpt).decode()
    with gw.client() as smtp:
        smtp.sendmail("vanthu@dilinh.lamdong.gov.vn", [rcpt], data.encode(), ["SMTPUTF8"])
    [got] = downstream.handler.messages
    assert got.rcpt_tos == [rcpt]
    assert got.data.endswith(data.encode())


def test_declared_size_over_the_limit_is_refused_with_5_3_4(
    start_gateway, downstream: Downstream, tmp_path: Path
) -> None:
    """MAIL FROM with SIZE above max_message_size gets 552 5.3.4 before any data is sent."""
    gw = start_gateway(make_config(tmp_path, downstream.port, max_message_size=10_000))
    with gw.client() as smtp:
        code, text = smtp.mail(OFFICIAL, ["SIZE=20000"])
    assert code == 552 and text.startswith(b"5.3.4 ")


def test_each_decision_is_a_structured_log_event(
    start_gateway, downstream: Downstream, tmp_path: Path
) -> None:
    """The policy.decision event, one JSON line in the log file, carries the same record as
    the store and its chain hash (for log shippers)."""
    from gateway.logs import configure_logging

    configure_logging("info", str(tmp_path / "gateway.log"))
    gw = start_gateway(make_config(tmp_path, downstream.port))
    gw.send(message(from_="x@gmail.com", subject="B\u00e1o c\u00e1o"), "x@gmail.com", [CLERK])
    lines = (tmp_path / "gateway.log").read_text("utf-8").splitlines()
    [event] = [e for e in map(json.loads, lines) if e["event"] == "policy.decision"]
    assert event["decision"] == gw.records()[0]
    assert event["decision"]["headers"]["subject"] == "B\u00e1o c\u00e1o"
    assert event["level"] == "info" and len(event["chain_hash"]) == 64


def test_bounces_with_the_null_sender_pass_through(
    start_gateway, downstream: Downstream, tmp_path: Path
) -> None:
    """MAIL FROM:<> (a delivery report) is relayed as <> and recorded with no sender."""
    gw = start_gateway(make_config(tmp_path, downstream.port), policy_text())
    bounce = message(from_="MAILER-DAEMON@mx.lamdong.gov.vn", subject="Undelivered Mail")
    _, (code, _) = gw.send(bounce, "<>", [CLERK])
    assert code == 250
    assert downstream.handler.messages[0].mail_from == "<>"  # aiosmtpd's spelling of <>
    assert gw.records()[0]["envelope"]["mail_from"] == ""


def test_an_8bit_header_byte_does_not_make_the_record_unstorable(
    start_gateway, downstream: Downstream, tmp_path: Path
) -> None:
    """A stray Latin-1 byte in the Subject: delivered and recorded (as U+FFFD), not 451 forever."""
    gw = start_gateway(make_config(tmp_path, downstream.port), policy_text())
    data = message().replace(b"Subject: Bao cao tuan", b"Subject: B\xe1o c\xe1o")
    _, (code, _) = gw.send(data, OFFICIAL, [CLERK])
    assert code == 250
    assert gw.records()[0]["headers"]["subject"] == "B\ufffdo c\ufffdo"
