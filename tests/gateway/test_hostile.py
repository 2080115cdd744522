"""Hostile and unlucky sessions: what is judged is what is delivered, and every transaction is
recorded, whatever the client does (reviewed defects; each test reproduces one)."""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from pathlib import Path

import pytest

from gateway.message import parse_message, strip_our_headers
from tests.support.gateway import CLERK, OFFICIAL, make_config, message
from tests.support.smtp import Downstream, LoopThread


def raw_session(port: int, lines: list[bytes], *, read_replies: int) -> list[bytes]:
    """Speak SMTP over a plain socket (to send what smtplib would refuse to)."""
    replies: list[bytes] = []
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
        sock.makefile("rb") as f,
    ):
        f.readline()  # greeting
        for line in lines:
            sock.sendall(line)
        for _ in range(read_replies):
            reply = f.readline()
            while reply[3:4] == b"-":
                reply = f.readline()
            replies.append(reply)
    return replies


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        # Bare CR: one header to a naive parser, two after the downstream normalises it.
        ("X-A: a\rFrom: Boss <boss@gmail.com>\r\n", "sender.malformed_identity"),
        # Obsolete space before the colon: still a Reply-To for Postfix and for us.
        ("Reply-To : Boss <boss@gmail.com>\r\n", "sender.personal_domain"),
        # An 8-bit field name, or no colon: readers disagree where the headers end.
        ("X-é: 1\r\nReply-To: Boss <boss@gmail.com>\r\n", "message.malformed_headers"),
        ("not a header\r\nReply-To: Boss <boss@gmail.com>\r\n", "message.malformed_headers"),
    ],
)
def test_header_tricks_cannot_hide_a_sender(
    start_gateway, downstream: Downstream, tmp_path: Path, extra: str, reason: str
) -> None:
    """Lines that a downstream or a client reads differently are judged as they will be read."""
    gw = start_gateway(make_config(tmp_path, downstream.port))
    _, (code, _) = gw.send(message(extra=extra), OFFICIAL, [CLERK])
    assert code == 550
    assert reason in gw.records()[0]["reasons"]
    assert downstream.handler.messages == []


def test_forged_authentication_results_in_any_spelling_are_removed() -> None:
    """Quoted ids and ids behind (nested) comments are still our id (RFC 8601 section 5)."""
    raw = (
        b'Authentication-Results: "gw.lamdong.gov.vn"; congvu=pass\r\n'
        b"Authentication-Results: (a(b)c)gw.lamdong.gov.vn; congvu=pass\r\n"
        b"Authentication-Results: (;) GW.LAMDONG.GOV.VN ; congvu=pass\r\n"
        b"Authentication-Results: gw.lamdong.gov.vn.evil.example; dkim=pass\r\n"
        b"Authentication-Results: xgw.lamdong.gov.vn; dkim=pass\r\n"
        b"From: a@x.gov.vn\r\n\r\nbody\r\n"
    )
    out = strip_our_headers(parse_message(raw), "gw.lamdong.gov.vn")
    assert b"congvu=pass" not in out
    assert b"gw.lamdong.gov.vn.evil.example; dkim=pass" in out
    assert b"xgw.lamdong.gov.vn; dkim=pass" in out


def test_client_vanishing_while_data_is_relayed_still_gets_recorded(
    start_gateway, downstream: Downstream, tmp_path: Path
) -> None:
    """The downstream took the message: the record exists though the client never saw 250."""
    downstream.handler.data_delay = 0.5
    gw = start_gateway(make_config(tmp_path, downstream.port))
    body = message()
    lines = [
        b"EHLO c\r\n",
        f"MAIL FROM:<{OFFICIAL}>\r\n".encode(),
        f"RCPT TO:<{CLERK}>\r\n".encode(),
        b"DATA\r\n",
    ]
    with (
        socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock,
        sock.makefile("rb") as f,
    ):
        f.readline()
        for line in lines:
            sock.sendall(line)
            reply = f.readline()
            while reply[3:4] == b"-":
                reply = f.readline()
        sock.sendall(body + b".\r\n")
        time.sleep(0.1)  # the gateway is now waiting on the slow downstream
    [record] = gw.wait_records(1)
    assert record["verdict"] == "accept"
    assert len(downstream.handler.messages) == 1


def test_rset_then_hang_up_is_recorded(
    start_gateway, downstream: Downstream, tmp_path: Path
) -> None:
    """Pipelined MAIL, RCPT, RSET, then close at once: one transaction, one record."""
    gw = start_gateway(make_config(tmp_path, downstream.port))
    raw_session(
        gw.port,
        [b"EHLO c\r\n" + f"MAIL FROM:<{OFFICIAL}>\r\nRCPT TO:<{CLERK}>\r\n".encode() + b"RSET\r\n"],
        read_replies=4,
    )
    [record] = gw.wait_records(1)
    assert record["verdict"] == "abandoned"


def test_starttls_inside_a_transaction_is_refused(
    start_gateway, downstream: Downstream, tmp_path: Path
) -> None:
    """STARTTLS after MAIL would orphan the transaction: 503 5.5.1, the transaction goes on."""
    from test_tls_and_audit import self_signed

    cert, key = self_signed(tmp_path)
    gw = start_gateway(make_config(tmp_path, downstream.port, tls_cert=cert, tls_key=key))
    with gw.client() as smtp:
        smtp.mail(OFFICIAL)
        assert smtp.docmd("STARTTLS") == (503, b"5.5.1 Error: MAIL transaction in progress")
        smtp.rcpt(CLERK)
        assert smtp.data(message())[0] == 250
    assert len(downstream.handler.messages) == 1


def test_oversize_data_is_recorded_as_a_refusal_at_once(
    start_gateway, downstream: Downstream, tmp_path: Path
) -> None:
    """aiosmtpd's own 552 for too much data is recorded before the next command."""
    gw = start_gateway(make_config(tmp_path, downstream.port, max_message_size=2000))
    with gw.client() as smtp:
        smtp.mail(OFFICIAL)
        smtp.rcpt(CLERK)
        code, text = smtp.data(message(body="x" * 70 + "\r\n") * 40)
        assert code == 552 and text.startswith(b"5.3.4 [message.too_large] ")
        [record] = gw.records()
        assert text.decode().endswith(f"(ref {record['id']})")
        assert record["reply"] == f"552 {text.decode()}"
        assert record["verdict"] == "reject" and record["reasons"] == ["message.too_large"]
        assert downstream.handler.commands[-1] == "RSET"


def test_non_ascii_address_without_smtputf8_is_refused_and_recorded(
    start_gateway, downstream: Downstream, tmp_path: Path
) -> None:
    """A UTF-8 address without the SMTPUTF8 parameter: 553 5.6.7, not a 451 loop."""
    gw = start_gateway(make_config(tmp_path, downstream.port))
    replies = raw_session(
        gw.port,
        [b"EHLO c\r\n", "MAIL FROM:<văn@lamdong.gov.vn>\r\n".encode(), b"QUIT\r\n"],
        read_replies=3,
    )
    assert replies[1].startswith(b"553 5.6.7 [address.non_ascii]")
    [record] = gw.wait_records(1)
    assert record["reasons"] == ["address.non_ascii"]


def test_refusals_quote_the_decision_id(
    start_gateway, downstream: Downstream, tmp_path: Path
) -> None:
    """An officer quoting a refusal gives the admin the id to look it up."""
    gw = start_gateway(make_config(tmp_path, downstream.port))
    _, (code, text) = gw.send(message(from_="x@gmail.com"), "x@gmail.com", [CLERK])
    assert code == 550
    [record] = gw.records()
    assert text.decode().endswith(f" (ref {record['id']})")


def test_xforward_from_the_proxy_sets_the_real_client(
    start_gateway, downstream: Downstream, tmp_path: Path
) -> None:
    """Behind Postfix (smtpd_proxy_filter) the real client's address decides the relay check."""
    import ipaddress

    loopback = (ipaddress.ip_network("127.0.0.0/8"),)
    gw = start_gateway(
        make_config(tmp_path, downstream.port, trusted_networks=loopback, xforward_hosts=loopback)
    )
    with gw.client() as smtp:
        assert "xforward" in smtp.esmtp_features
        assert (
            smtp.docmd("XFORWARD", "ADDR=203.0.113.7 HELO=mx.example.com NAME=spam.example")[0]
            == 250
        )
        smtp.mail(OFFICIAL)
        code, text = smtp.rcpt("victim@example.com")  # outside: the internet client may not relay
        assert code == 550 and b"[relay.denied]" in text
        smtp.rcpt(CLERK)
        assert smtp.data(message())[0] == 250
    record = gw.wait_records(1)[0]
    assert record["client"]["ip"] == "203.0.113.7" and record["client"]["helo"] == "mx.example.com"
    received = downstream.handler.messages[0].data
    assert b"Received: from mx.example.com ([203.0.113.7])" in received


def test_xforward_from_anyone_else_is_unknown(
    start_gateway, downstream: Downstream, tmp_path: Path
) -> None:
    """Without xforward_hosts, XFORWARD is neither advertised nor obeyed."""
    gw = start_gateway(make_config(tmp_path, downstream.port))
    with gw.client() as smtp:
        assert "xforward" not in smtp.esmtp_features
        assert smtp.docmd("XFORWARD", "ADDR=127.0.0.1")[0] == 500


def test_shutdown_lets_an_open_transaction_finish(
    start_gateway, downstream: Downstream, tmp_path: Path, loop_thread: LoopThread
) -> None:
    """On stop, idle sessions get 421; a session mid-transaction completes and is recorded."""
    import asyncio
    import smtplib

    def told_421(smtp: smtplib.SMTP) -> bool:
        try:
            return smtp.noop()[0] == 421
        except smtplib.SMTPServerDisconnected:
            return True

    gw = start_gateway(make_config(tmp_path, downstream.port))
    with gw.client() as idle, gw.client() as busy:
        busy.mail(OFFICIAL)
        busy.rcpt(CLERK)
        stopping = asyncio.run_coroutine_threadsafe(gw.gateway.stop(grace=10), loop_thread.loop)
        time.sleep(0.3)
        assert told_421(idle)
        assert busy.data(message())[0] == 250
        stopping.result(10)
        assert told_421(busy)  # closed at the transaction boundary
    assert len(downstream.handler.messages) == 1


def test_recipients_past_the_limit_get_452(
    start_gateway, downstream: Downstream, tmp_path: Path
) -> None:
    """100 recipients are taken; the 101st is told to come back later (452 4.5.3)."""
    gw = start_gateway(make_config(tmp_path, downstream.port))
    with gw.client() as smtp:
        smtp.mail(OFFICIAL)
        replies = [smtp.rcpt(f"u{i}@lamdong.gov.vn") for i in range(101)]
    assert all(code == 250 for code, _ in replies[:100])
    assert replies[100][0] == 452 and replies[100][1].startswith(
        b"4.5.3 [message.too_many_recipients]"
    )


@pytest.mark.parametrize(
    ("extra", "reply"),
    [
        (
            "Received: from a by b; Sun, 22 Nov 2026 10:00:00 +0700\r\n" * 31,
            b"5.4.6 [message.loop]",
        ),
        ("".join(f"X-Filler-{i}: x\r\n" for i in range(1001)), b"5.3.4 [message.header_too_large]"),
    ],
)
def test_loops_and_header_bloat_are_refused(
    start_gateway, downstream: Downstream, tmp_path: Path, extra: str, reply: bytes
) -> None:
    """31 Received headers is a loop; 1,001 header fields is bloat: refused, not relayed."""
    gw = start_gateway(make_config(tmp_path, downstream.port))
    _, (code, text) = gw.send(message(extra=extra), OFFICIAL, [CLERK])
    assert text.startswith(reply) and code in (552, 554)
    assert downstream.handler.messages == []


def test_a_client_that_keeps_failing_is_disconnected(
    start_gateway, downstream: Downstream, tmp_path: Path
) -> None:
    """Past max_errors error replies the session ends with 421."""
    gw = start_gateway(make_config(tmp_path, downstream.port))
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
        replies = sock.makefile("rb")
        replies.readline()  # greeting
        for _ in range(11):  # one at a time: no pipelined bytes left when the server closes
            sock.sendall(b"RCPT TO:<a@lamdong.gov.vn>\r\n")  # out of order: 503
            assert replies.readline().startswith(b"503 ")
        assert replies.readline().startswith(b"421 4.7.0 Too many errors")
        assert replies.readline() == b""  # closed
    replies.close()


def test_too_many_sessions_from_one_address_are_turned_away(
    start_gateway, downstream: Downstream, tmp_path: Path
) -> None:
    """Per-IP concurrency: the third session from the same address gets 421 at once."""
    from gateway.config import Limits

    gw = start_gateway(make_config(tmp_path, downstream.port, limits=Limits(max_sessions_per_ip=2)))
    first, second = gw.client(), gw.client()
    try:
        with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as third:
            assert third.recv(200).startswith(b"421 4.7.0 Too many connections")
        assert first.noop()[0] == 250 and second.noop()[0] == 250
    finally:
        first.close()
        second.close()


@pytest.mark.parametrize(
    "smuggle",
    [
        b"\n.\n",  # <LF>.<LF>
        b"\r.\r",  # <CR>.<CR>
        b"\r\n.\n",  # <CR><LF>.<LF>
        b"\n.\r\n",  # <LF>.<CR><LF>
        b"\r.\r\n",  # <CR>.<CR><LF>
    ],
    ids=["lf-dot-lf", "cr-dot-cr", "crlf-dot-lf", "lf-dot-crlf", "cr-dot-crlf"],
)
def test_smtp_smuggling_cannot_hide_a_second_message(
    start_gateway, downstream: Downstream, tmp_path: Path, smuggle: bytes
) -> None:
    """SEC Consult's end-of-data variants, pipelined: one message in, one message out, and
    the hidden MAIL/RCPT/DATA never becomes a transaction of its own (inbound or downstream)."""
    gw = start_gateway(make_config(tmp_path, downstream.port))
    hidden = (
        b"MAIL FROM:<x@gmail.com>\r\nRCPT TO:<" + CLERK.encode() + b">\r\nDATA\r\n"
        b"From: x@gmail.com\r\nTo: " + CLERK.encode() + b"\r\nSubject: smuggled\r\n\r\nhi\r\n"
    )
    payload = message() + smuggle + hidden + b".\r\n"
    lines = [
        b"EHLO c\r\n" + f"MAIL FROM:<{OFFICIAL}>\r\nRCPT TO:<{CLERK}>\r\n".encode() + b"DATA\r\n",
        payload + b"QUIT\r\n",
    ]
    raw_session(gw.port, lines, read_replies=5)
    records = gw.wait_records(1)
    assert len(records) == 1  # one transaction, not two
    # Downstream: one MAIL and one DATA from the official sender; the hidden one never became a
    # command (a bare-LF dot line reaches it dot-stuffed, as content, if at all).
    assert "MAIL x@gmail.com" not in downstream.handler.commands
    assert downstream.handler.commands.count("DATA") <= 1
    assert all(m.mail_from == OFFICIAL for m in downstream.handler.messages)


def test_a_data_section_past_its_deadline_gets_421_and_is_recorded(
    start_gateway, downstream: Downstream, tmp_path: Path
) -> None:
    """Slowloris in DATA: bytes keep trickling in, but the whole section has a deadline."""
    from gateway.config import Limits

    gw = start_gateway(make_config(tmp_path, downstream.port, limits=Limits(data_timeout=1.0)))
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        f = sock.makefile("rb")
        f.readline()
        sock.sendall(f"HELO c\r\nMAIL FROM:<{OFFICIAL}>\r\nRCPT TO:<{CLERK}>\r\nDATA\r\n".encode())
        assert [f.readline()[:3] for _ in range(4)] == [b"250", b"250", b"250", b"354"]
        started = time.monotonic()
        for _ in range(40):  # a header line every 0.1 s, until the gateway speaks
            with contextlib.suppress(OSError):
                sock.sendall(b"X-Drip: a\r\n")
            if select.select([sock], [], [], 0.1)[0]:
                break
        assert f.readline().startswith(b"421 4.4.2 Timeout exceeded")
        assert time.monotonic() - started < 3
    [record] = gw.wait_records(1)
    assert record["verdict"] == "abandoned"
    assert downstream.handler.messages == []


def test_an_idle_session_gets_421_after_the_command_timeout(
    start_gateway, downstream: Downstream, tmp_path: Path
) -> None:
    gw = start_gateway(make_config(tmp_path, downstream.port, timeout=0.5))
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
        f = sock.makefile("rb")
        assert f.readline().startswith(b"220 ")
        assert f.readline().startswith(b"421 4.4.2 Timeout exceeded")
        assert f.readline() == b""  # and the connection is closed


def test_a_client_talking_before_the_greeting_is_turned_away(
    start_gateway, downstream: Downstream, tmp_path: Path
) -> None:
    """Spamware pipelines blindly; with greet_pause it gets 554 instead of a greeting. A client
    that waits for the greeting is served as usual."""
    from gateway.config import Limits

    gw = start_gateway(make_config(tmp_path, downstream.port, limits=Limits(greet_pause=0.3)))
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
        sock.sendall(b"EHLO spam\r\nMAIL FROM:<x@gmail.com>\r\n")
        f = sock.makefile("rb")
        assert f.readline().startswith(b"554 5.5.1 Protocol error: talking before the greeting")
        assert f.readline() == b""
    _, (code, _) = gw.send(message(), OFFICIAL, [CLERK])
    assert code == 250
    metrics = gw.gateway.metrics.closed.labels("early_talker")._value.get()
    assert metrics == 1


def test_commands_pipelined_after_the_data_are_answered(
    start_gateway, downstream: Downstream, tmp_path: Path
) -> None:
    """The bulk DATA reader reads nothing past <CRLF>.<CRLF>: a second transaction and QUIT
    sent in the same packet are both served (RFC 2920)."""
    gw = start_gateway(make_config(tmp_path, downstream.port))
    txn = f"MAIL FROM:<{OFFICIAL}>\r\nRCPT TO:<{CLERK}>\r\nDATA\r\n".encode()
    first = [b"EHLO c\r\n" + txn]
    rest = message() + b".\r\n" + txn
    replies = raw_session(gw.port, [*first, rest, message() + b".\r\nQUIT\r\n"], read_replies=10)
    assert [r[:3] for r in replies] == [
        *(b"250", b"250", b"250", b"354", b"250"),  # EHLO, MAIL, RCPT, DATA, end of data
        *(b"250", b"250", b"354", b"250", b"221"),
    ]
    assert len(downstream.handler.messages) == 2


def test_a_14_mb_message_arrives_byte_for_byte(
    start_gateway, downstream: Downstream, tmp_path: Path
) -> None:
    """Large bodies are spooled to disk while they arrive and relayed unchanged."""
    gw = start_gateway(make_config(tmp_path, downstream.port))
    line = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo" * 2 + "\r\n"
    body = ".leading dot\r\n" + line * (1_400_000 // len(line))
    _, (code, _) = gw.send(message(body=body), OFFICIAL, [CLERK])
    assert code == 250
    [got] = downstream.handler.messages
    assert got.data.endswith(message(body=body).split(b"\r\n\r\n", 1)[1])


@pytest.mark.parametrize(
    ("extra", "body", "verdict"),
    [
        # dkimpy cannot even parse this header section (found by bench/fuzz.py): the message
        # is refused for its headers, not tempfailed for ever as a crashed check.
        (
            "DKIM-Signature: v=1; a=rsa-sha256; d=lamdong.gov.vn; s=s1; b=AA; bh=AA\r\n"
            "KeoTmSAESJz0sIdTD84QW4KWvBel9U62oAjwA/ujsf2Shzw8mf\r\n",
            "x\r\n",
            "reject",
        ),
        # A charset name with a NUL in it (also from the fuzzer): refused for the NUL, and the
        # body still read (as UTF-8) for the printed-contact advisory.
        (
            'MIME-Version: 1.0\r\nContent-Type: text/plain; charset="utf\\x00-8"\r\n',
            "Lien he: a.nguyen@gmail.com\r\n",
            "reject",
        ),
        # Mixed RFC 2231 continuations make the standard library's MIME parser raise
        # (TypeError in decode_params): refused for its headers, not a crashed check.
        (
            'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="B"; '
            'name*0="a"; name*="b"\r\n',
            "--B\r\nContent-Type: application/pdf\r\n\r\n%PDF-1.4\r\n--B--\r\n",
            "reject",
        ),
    ],
    ids=["dkim-unparsable-header", "nul-in-charset", "rfc2231-mixed-continuations"],
)
def test_fuzzer_findings_are_judged_not_crashed(
    start_gateway, downstream: Downstream, tmp_path: Path, extra: str, body: str, verdict: str
) -> None:
    gw = start_gateway(make_config(tmp_path, downstream.port))
    gw.send(message(extra=extra.replace("\\x00", "\x00"), body=body), OFFICIAL, [CLERK])
    [record] = gw.records()
    assert record["verdict"] == verdict
    assert record["reasons"] == ["message.malformed_headers"]
    if "charset" in extra:
        notes = [f["reason"] for f in record["findings"] if f["outcome"] == "note"]
        assert notes == ["advisory.public_contact_in_body"]


@pytest.mark.parametrize(
    "line",
    [
        b"MAIL FROM:<" + OFFICIAL.encode() + b">\rRSET\r\n",
        b"MAIL FROM:<a\r\nRSET@dilinh.lamdong.gov.vn>\r\n",
        b"MAIL FROM:<" + OFFICIAL.encode() + b"> SIZE=10\rDATA\r\n",
        b"MAIL FROM:<" + OFFICIAL.encode() + b">\r\nRCPT TO:<" + CLERK.encode() + b">\rRSET\r\n",
        b"MAIL FROM:<" + OFFICIAL.encode() + b">\r\nRCPT TO:<x\x00@lamdong.gov.vn>\r\n",
    ],
    ids=["cr-after-mail", "crlf-in-address", "cr-in-option", "cr-after-rcpt", "nul-in-rcpt"],
)
def test_no_cr_lf_or_nul_reaches_a_command_sent_downstream(
    start_gateway, downstream: Downstream, tmp_path: Path, line: bytes
) -> None:
    """A bare CR (or a NUL) in a command must not become a second command downstream: such
    commands are refused here, and nothing sent downstream carries CR, LF or NUL."""
    gw = start_gateway(make_config(tmp_path, downstream.port))
    replies = raw_session(gw.port, [b"EHLO c\r\n", line, b"QUIT\r\n"], read_replies=3)
    assert all(r[:1] in (b"2", b"5") for r in replies)  # refused, never a crashed check (451)
    assert all(not set(c) & {"\r", "\n", "\x00"} for c in downstream.handler.commands)
    assert "RSET" not in downstream.handler.commands and "DATA" not in downstream.handler.commands


@pytest.mark.parametrize(
    ("lines", "want"),
    [
        # IndexError inside the standard library's parser, called by aiosmtpd:
        ([b"MAIL FROM:<\r\n"], b"553 5.1.3 Error: malformed address"),
        ([b"MAIL FROM:<a@\r\n"], b"553 5.1.3 Error: malformed address"),
        # aiosmtpd quotes an unknown command back as it came: shown with "?"
        ([b"NO\x00OP\r\n"], b'500 5.5.2 Error: command "NO?OP" not recognized'),
        ([b"NOOP\rRSET x\r\n"], b'500 5.5.2 Error: command "NOOP?RSET" not recognized'),
    ],
    ids=["unterminated-angle", "empty-domain", "nul-echoed", "bare-cr-command"],
)
def test_malformed_commands_get_a_syntax_reply_not_a_crash(
    start_gateway, downstream: Downstream, tmp_path: Path, lines: list[bytes], want: bytes
) -> None:
    """Found by bench/fuzz.py: each is a 5xx syntax reply, printable, never 451 and never an
    smtp.exception in the log."""
    gw = start_gateway(make_config(tmp_path, downstream.port))
    [_, reply] = raw_session(gw.port, [b"EHLO c\r\n", *lines], read_replies=2)
    assert reply.startswith(want), reply
    assert all(32 <= b < 127 for b in reply.rstrip(b"\r\n"))


def test_starttls_inside_tls_is_refused_and_no_auth_is_advertised(
    start_gateway, downstream: Downstream, tmp_path: Path
) -> None:
    from test_tls_and_audit import self_signed

    cert, key = self_signed(tmp_path)
    gw = start_gateway(make_config(tmp_path, downstream.port, tls_cert=cert, tls_key=key))
    with gw.client() as smtp:
        smtp.starttls()
        code, features = smtp.ehlo("client.test")
        assert code == 250 and b"AUTH" not in features and b"STARTTLS" not in features
        assert smtp.docmd("STARTTLS") == (554, b"5.5.1 Error: TLS already active")
        assert smtp.noop()[0] == 250


def test_hostile_content_is_judged_in_bounded_time(
    start_gateway, downstream: Downstream, tmp_path: Path
) -> None:
    """Found by bench/fuzz.py: 256 KB of text without a separator took minutes in the
    printed-address scan (a quadratic regex, GIL held: the whole gateway stalled); a damaged
    deflate stream in a zip crashed the archive reader (now: unreadable, refused)."""
    import base64
    import io
    import zipfile

    gw = start_gateway(make_config(tmp_path, downstream.port))
    text = base64.encodebytes(b"a" * 256 * 1024).decode().replace("\n", "\r\n")
    long_run = message(
        extra="MIME-Version: 1.0\r\nContent-Type: text/plain\r\n"
        "Content-Transfer-Encoding: base64\r\n",
        body=text,
    )
    started = time.monotonic()
    _, (code, _) = gw.send(long_run, OFFICIAL, [CLERK])
    assert code == 250 and time.monotonic() - started < 20  # minutes before the fix

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("cong-van.pdf", b"%PDF-1.4\n" + b"x" * 5000)
    damaged = bytearray(buf.getvalue())
    start = damaged.index(b"cong-van.pdf") + len("cong-van.pdf")
    damaged[start : start + 4] = b"\xff\xff\xff\xff"  # the first compressed bytes
    _, (code, text_reply) = gw.send(with_zip(bytes(damaged)), OFFICIAL, [CLERK])
    assert code == 550 and b"[document.unreadable]" in text_reply


def with_zip(archive: bytes) -> bytes:
    """A message with a note and ``archive`` attached as hs.zip."""
    import base64

    encoded = base64.encodebytes(archive).decode().replace("\n", "\r\n")
    return message(
        extra='MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="B"\r\n',
        body="--B\r\nContent-Type: text/plain\r\n\r\nxem tep\r\n--B\r\n"
        'Content-Type: application/zip; name="hs.zip"\r\n'
        f"Content-Transfer-Encoding: base64\r\n\r\n{encoded}--B--\r\n",
    )


def test_a_zip_member_without_a_name_is_judged_not_crashed_on(
    start_gateway, downstream: Downstream, tmp_path: Path
) -> None:
    """Found by bench/fuzz.py (seed 2): a zip member with an empty name made the standard
    library's ZipInfo.is_dir() raise, so the check crashed and the mail got 451 for ever. The
    member is a file like any other: here an unsigned PDF, refused as one."""
    import io
    import zipfile

    gw = start_gateway(make_config(tmp_path, downstream.port))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(zipfile.ZipInfo(""), b"%PDF-1.4\n" + b"x" * 2000 + b"\n%%EOF\n")
    _, (code, text_reply) = gw.send(with_zip(buf.getvalue()), OFFICIAL, [CLERK])
    assert code == 550 and b"[internal.check_error]" not in text_reply
    [record] = gw.records()
    assert "internal.check_error" not in record["reasons"] and record["verdict"] == "reject"


def test_commands_injected_before_the_tls_handshake_are_discarded(
    start_gateway, downstream: Downstream, tmp_path: Path
) -> None:
    """CVE-2011-0411 style: "STARTTLS\\r\\nMAIL FROM:..." in one plaintext packet. The MAIL
    must not be run inside the TLS session (an attacker on the path could add commands)."""
    import ssl

    from test_tls_and_audit import self_signed

    cert, key = self_signed(tmp_path)
    gw = start_gateway(make_config(tmp_path, downstream.port, tls_cert=cert, tls_key=key))
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        plain = sock.makefile("rb")
        plain.readline()
        sock.sendall(b"EHLO c\r\n")
        while plain.readline()[3:4] == b"-":
            pass
        sock.sendall(f"STARTTLS\r\nMAIL FROM:<{OFFICIAL}>\r\n".encode())
        assert plain.readline().startswith(b"220 ")
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        with context.wrap_socket(sock) as tls:
            replies = tls.makefile("rb")
            tls.sendall(f"EHLO c\r\nRCPT TO:<{CLERK}>\r\n".encode())
            assert replies.readline() == b"250-gw.lamdong.gov.vn\r\n"  # not a MAIL reply
            while (line := replies.readline())[3:4] == b"-":
                pass
            assert line.startswith(b"250 ")
            assert replies.readline().startswith(b"503 5.5.1 Error: need MAIL command")
    assert "MAIL " + OFFICIAL not in downstream.handler.commands


class LenientDownstream:
    """A deliberately sloppy SMTP server (as some old MTAs are): any LF ends a line, and a line
    "." (however it ends) ends the data. It counts what it takes for commands and messages."""

    def __init__(self) -> None:
        self.commands: list[bytes] = []
        self.messages: list[bytes] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.sock.accept()
                threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as f:
            conn.sendall(b"220 lenient ESMTP\r\n")
            data: list[bytes] | None = None
            for raw in f:
                line = raw.rstrip(b"\r\n")
                if data is not None:
                    if line == b".":
                        self.messages.append(b"\n".join(data))
                        data = None
                        conn.sendall(b"250 2.0.0 queued\r\n")
                    else:
                        data.append(line[1:] if line.startswith(b".") else line)
                    continue
                self.commands.append(line)
                verb = line[:4].upper()
                if verb == b"EHLO":
                    conn.sendall(b"250-lenient\r\n250 8BITMIME\r\n")
                elif verb == b"DATA":
                    data = []
                    conn.sendall(b"354 go ahead\r\n")
                elif verb == b"QUIT":
                    conn.sendall(b"221 bye\r\n")
                    return
                else:
                    conn.sendall(b"250 2.0.0 ok\r\n")


@pytest.mark.parametrize(
    "smuggle",
    [b"\n.\n", b"\r.\r", b"\r\n.\n", b"\n.\r\n", b"\r.\r\n"],
    ids=["lf-dot-lf", "cr-dot-cr", "crlf-dot-lf", "lf-dot-crlf", "cr-dot-crlf"],
)
def test_smuggling_cannot_reach_a_lenient_downstream(
    start_gateway, tmp_path: Path, smuggle: bytes
) -> None:
    """What the gateway relays is normalised to CRLF and dot-stuffed: even a downstream that
    takes a bare LF for a line end sees one message and one MAIL, never the hidden one."""
    from gateway.config import DownstreamConfig

    lenient = LenientDownstream()
    ds = DownstreamConfig("smtp", host="127.0.0.1", port=lenient.port, timeout=5)
    gw = start_gateway(make_config(tmp_path, lenient.port, downstream=ds))
    hidden = (
        b"MAIL FROM:<x@gmail.com>"
        + smuggle[-1:]
        + b"RCPT TO:<"
        + CLERK.encode()
        + b">"
        + smuggle[-1:]
        + b"DATA"
        + smuggle[-1:]
        + b"From: x@gmail.com"
        + smuggle[-1:]
        + smuggle[-1:]
        + b"smuggled"
        + smuggle
    )
    _, (code, _) = gw.send(message(body="Kinh gui.\r\n") + smuggle + hidden, OFFICIAL, [CLERK])
    gw.send(message(subject="second"), OFFICIAL, [CLERK])  # the session is still in step
    mails = [c for c in lenient.commands if c.upper().startswith(b"MAIL")]
    assert mails == [b"MAIL FROM:<" + OFFICIAL.encode() + b"> BODY=8BITMIME"] * (1 + (code == 250))
    assert len(lenient.messages) == 1 + (code == 250)


def test_the_real_client_is_passed_on_with_xforward(start_gateway, tmp_path: Path) -> None:
    """[downstream] xforward = true: the downstream (here a second gateway, which accepts
    XFORWARD from loopback as Postfix's re-injection smtpd would) records the client that
    reached the first one, not 127.0.0.1, even when that client came through a proxy."""
    import ipaddress

    from gateway.config import DownstreamConfig

    loopback = (ipaddress.ip_network("127.0.0.0/8"),)
    inner = start_gateway(make_config(tmp_path / "b", None, xforward_hosts=loopback))
    ds = DownstreamConfig("smtp", host="127.0.0.1", port=inner.port, timeout=5, xforward=True)
    outer = start_gateway(
        make_config(tmp_path / "a", inner.port, downstream=ds, xforward_hosts=loopback)
    )
    with outer.client() as smtp:
        # The outer gateway's own proxy (Postfix) names the real client, with a hostile HELO.
        assert smtp.docmd("XFORWARD", "ADDR=203.0.113.9 HELO=mx.example+0D+0AMAIL")[0] == 250
        smtp.mail(OFFICIAL)
        smtp.rcpt(CLERK)
        assert smtp.data(message())[0] == 250
    [record] = inner.wait_records(1)
    assert record["client"]["ip"] == "203.0.113.9"
    assert record["client"]["helo"] == "mx.exampleMAIL"  # CR/LF dropped, never a new command
    assert outer.records()[0]["client"]["ip"] == "203.0.113.9"


def test_failed_tls_handshakes_do_not_keep_session_slots(
    start_gateway, downstream: Downstream, tmp_path: Path
) -> None:
    """Found in review: a client that starts TLS and then hangs up (or speaks no TLS) must not
    hold its slot: three such clients, then a fourth connection from the same address is
    served with the per-address limit at two."""
    from test_tls_and_audit import self_signed

    from gateway.config import Limits

    cert, key = self_signed(tmp_path)
    config = make_config(
        tmp_path, downstream.port, tls_cert=cert, tls_key=key, limits=Limits(max_sessions_per_ip=2)
    )
    gw = start_gateway(config)
    for junk in (b"", b"not tls\r\n", b"\x16\x03\x01\x00\x05hello"):
        with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
            f = sock.makefile("rb")
            f.readline()
            sock.sendall(b"EHLO c\r\n")
            while f.readline()[3:4] == b"-":
                pass
            sock.sendall(b"STARTTLS\r\n")
            assert f.readline().startswith(b"220 ")
            sock.sendall(junk)
    deadline = time.monotonic() + 5
    while len(gw.gateway.handler.protocols) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(gw.gateway.handler.protocols) == 0
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
        assert sock.makefile("rb").readline().startswith(b"220 ")


def test_a_spool_that_cannot_be_written_ends_the_session(
    start_gateway, downstream: Downstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found in review: disk full while a large body is spooled. The rest of the body must
    never be read as commands (it could carry a whole second transaction): 421, hang up."""
    import errno
    import tempfile

    import gateway.dataread

    class FullDisk(tempfile.SpooledTemporaryFile):  # type: ignore[type-arg]
        def rollover(self) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(gateway.dataread.tempfile, "SpooledTemporaryFile", FullDisk)
    gw = start_gateway(make_config(tmp_path, downstream.port))
    smuggled = (
        b"x.\r\nRSET\r\nMAIL FROM:<"
        + OFFICIAL.encode()
        + b">\r\nRCPT TO:<"
        + CLERK.encode()
        + b">\r\nDATA\r\n"
        + message(subject="smuggled")
        + b".\r\n"
    )
    body = message(body=("b" * 70 + "\r\n") * 2000) + smuggled  # 140 KB: spooled to disk
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        f = sock.makefile("rb")
        f.readline()
        sock.sendall(f"HELO c\r\nMAIL FROM:<{OFFICIAL}>\r\nRCPT TO:<{CLERK}>\r\nDATA\r\n".encode())
        assert [f.readline()[:3] for _ in range(4)] == [b"250", b"250", b"250", b"354"]
        with contextlib.suppress(OSError):
            sock.sendall(body)
        assert f.readline().startswith(b"421 4.3.1")
        assert f.readline() == b""
    [record] = gw.wait_records(1)
    assert record["verdict"] == "abandoned"
    assert downstream.handler.messages == []
    assert "DATA" not in downstream.handler.commands


def test_nothing_pipelined_behind_a_final_421_reaches_the_downstream(
    start_gateway, downstream: Downstream, tmp_path: Path
) -> None:
    """Found in review: after "421 Too many errors" the connection is closing, but a client
    may have pipelined a whole transaction behind the errors; none of it may be relayed."""
    from gateway.config import Limits

    gw = start_gateway(make_config(tmp_path, downstream.port, limits=Limits(max_errors=2)))
    burst = (
        b"EHLO c\r\n"
        + b"BOGUS\r\n" * 3
        + (
            f"MAIL FROM:<{OFFICIAL}>\r\nRCPT TO:<{CLERK}>\r\nDATA\r\n".encode()
            + message()
            + b".\r\n"
        )
    )
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
        f = sock.makefile("rb")
        f.readline()
        sock.sendall(burst)
        replies = []
        while line := f.readline():
            replies.append(line)
    assert any(r.startswith(b"421 4.7.0 Too many errors") for r in replies)
    assert not any(r.startswith(b"354") for r in replies)
    time.sleep(0.3)
    assert downstream.handler.commands == [] and downstream.handler.messages == []
