"""End to end with a real Postfix calling congvu as its milter, configured from the snippets of
docs/admin/milter.md (only the ports and the store's path changed).

The test plays the client with XCLIENT: the client's address, and LOGIN as Postfix sets it
after SASL authentication on the submission port, so that ``{auth_authen}`` reaches the
milter as it does for an officer's own sending.
"""

from __future__ import annotations

import dataclasses
import smtplib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.activity import ImportSummary, read_activity
from gateway.config import load_config
from tests.gateway.test_postfix_e2e import postfix_dir, start_or_skip
from tests.support.dovecot import DovecotAuth
from tests.support.gateway import CLERK, OFFICIAL, RunningGateway, message
from tests.support.postfix import PostfixDownstream, main_cf, replace_once
from tests.support.postfix import shown as shown_on
from tests.support.smtp import free_port

pytestmark = pytest.mark.postfix
__all__ = ["postfix_dir"]  # the fixture, shared with the proxy layout's test

PAGE = Path(__file__).resolve().parents[2] / "docs" / "admin" / "milter.md"
CLIENT_IP = "203.0.113.7"
OFFICER, PASSWORD = "a.nguyen@dilinh.lamdong.gov.vn", "mat-khau-1"


def shown(marker: str) -> str:
    return shown_on(PAGE, marker)


@dataclass
class MilterLayout:
    postfix: PostfixDownstream
    gateway: RunningGateway | None
    submission: int  # the page's submission service, on a test port

    def session(self, login: str = "") -> smtplib.SMTP:
        """A session with Postfix's smtpd as a client from the Internet, or as an officer
        who logged in (``login``)."""
        smtp = smtplib.SMTP("127.0.0.1", self.postfix.port, timeout=60)
        smtp.ehlo("test.client")
        attributes = f"ADDR={CLIENT_IP} NAME=[UNAVAILABLE] HELO=mx.client.example"
        code, text = smtp.docmd("XCLIENT", attributes + (f" LOGIN={login}" if login else ""))
        assert code == 220, (code, text)
        smtp.ehlo("mx.client.example")
        return smtp


@pytest.fixture
def layout(
    request: pytest.FixtureRequest, start_gateway, tmp_path: Path, postfix_dir: Path
) -> Iterator[MilterLayout]:
    """Postfix with the page's main.cf, congvu with the page's congvu.toml, on test ports
    ("no gateway": Postfix names a port where nothing listens)."""
    broken = getattr(request, "param", "")
    public, milter_port = free_port(), free_port()
    etc = tmp_path / "etc"
    etc.mkdir()
    text = shown("milter-e2e: congvu.toml")
    text = replace_once(text, r'"127\.0\.0\.1:8891"', f'"127.0.0.1:{milter_port}"')
    text = replace_once(text, r'"smtp://127\.0\.0\.1:25"', f'"smtp://127.0.0.1:{public}"')
    (etc / "congvu.toml").write_text(text, encoding="utf-8")
    config = dataclasses.replace(
        load_config(etc / "congvu.toml"), store_path=tmp_path / "decisions.sqlite"
    )
    gateway = None
    if broken != "no gateway":
        gateway = start_gateway(config)
        gateway.loop_thread.run(gateway.gateway.start_milter())
    settings = main_cf(shown("milter-e2e: main.cf"))
    settings["smtpd_milters"] = replace_once(
        settings["smtpd_milters"], r"127\.0\.0\.1:8891$", f"127.0.0.1:{milter_port}"
    )
    settings["smtpd_authorized_xclient_hosts"] = "127.0.0.0/8"  # the test plays the client
    submission, auth_port = free_port(), free_port()
    services = shown("milter-e2e: master.cf")
    services = replace_once(services, r"^submission(?=\s+inet\s)", f"127.0.0.1:{submission}")
    services = replace_once(  # no certificate in the test: no TLS, on loopback only
        services, r"smtpd_tls_security_level=encrypt$", "smtpd_tls_security_level=none"
    )
    services = replace_once(
        services, r"smtpd_sasl_path=private/auth$", f"smtpd_sasl_path=inet:127.0.0.1:{auth_port}"
    )
    # The stock public smtpd stays, on the test's public port, beside the submission entry.
    services = f"127.0.0.1:{public} inet n - n - - smtpd\n{services}"
    dovecot = DovecotAuth(postfix_dir / "dovecot", auth_port, {OFFICER: PASSWORD})
    start_or_skip(dovecot)
    mta = PostfixDownstream(
        postfix_dir,
        public,
        ["lamdong.gov.vn", "dilinh.lamdong.gov.vn"],
        services=services,
        settings=settings,
    )
    try:
        start_or_skip(mta)
        yield MilterLayout(mta, gateway, submission)
        mta.stop()
    finally:
        dovecot.stop()


def test_an_officers_message_is_judged_recorded_with_the_login_and_delivered(
    layout: MilterLayout,
) -> None:
    """Official mail from a logged-in officer reaches the mailbox with congvu's result; the
    record names the client and the login."""
    with layout.session(login="a.nguyen@dilinh.lamdong.gov.vn") as smtp:
        smtp.sendmail(OFFICIAL, [CLERK], message(subject="qua milter"))
    [delivered] = layout.postfix.wait_for_messages(1)
    assert b"Subject: qua milter" in delivered
    assert layout.gateway is not None
    [record] = layout.gateway.wait_records(1)
    assert f"policy.decision={record['id']}".encode() in delivered
    assert b"congvu=pass" in delivered
    assert record["verdict"] == "accept"
    assert record["client"]["ip"] == CLIENT_IP
    assert record["client"]["login"] == "a.nguyen@dilinh.lamdong.gov.vn"
    # Postfix's own log of that submission is mailbox activity for the login (congvu activity)
    summary = ImportSummary()
    lines = layout.postfix.log_path.read_text(errors="replace").splitlines()
    seen = read_activity(lines, summary, local=UTC, now=datetime.now(UTC) + timedelta(days=1))
    assert ("a.nguyen@dilinh.lamdong.gov.vn", "submission") in {(a.login, a.kind) for a in seen}


def test_a_refusal_reaches_the_client_through_postfix(layout: MilterLayout) -> None:
    """Postfix gives the client congvu's reply; nothing is delivered."""
    with (
        layout.session(login="a.nguyen@dilinh.lamdong.gov.vn") as smtp,
        pytest.raises(smtplib.SMTPDataError) as refused,
    ):
        smtp.sendmail("x@gmail.com", [CLERK], message(from_="X <x@gmail.com>"))
    assert refused.value.smtp_code == 550
    assert b"[sender.personal_domain]" in refused.value.smtp_error
    assert layout.gateway is not None
    [record] = layout.gateway.wait_records(1)
    assert f"(ref {record['id']})".encode() in refused.value.smtp_error
    assert layout.postfix.messages() == []


@pytest.mark.parametrize("layout", ["no gateway"], indirect=True)
def test_with_congvu_down_postfix_defers(layout: MilterLayout) -> None:
    """milter_default_action = tempfail: a 4xx, never mail passed unjudged."""
    with layout.session() as smtp, pytest.raises(smtplib.SMTPException) as deferred:
        smtp.sendmail(OFFICIAL, [CLERK], message())
    error = deferred.value
    codes = (
        [code for code, _ in error.recipients.values()]
        if isinstance(error, smtplib.SMTPRecipientsRefused)
        else [getattr(error, "smtp_code", 0)]
    )
    assert all(400 <= code < 500 for code in codes), error
    assert layout.postfix.messages() == []


def test_an_officer_logged_in_on_the_submission_port_is_judged_and_counted(
    layout: MilterLayout,
) -> None:
    """Through the page's submission entry, with a real Dovecot checking the password: the
    message is judged, delivered, and recorded with the login; a personal From is still
    refused; a wrong password sends nothing."""
    with smtplib.SMTP("127.0.0.1", layout.submission, timeout=60) as smtp:
        smtp.ehlo("laptop.dilinh")
        smtp.login(OFFICER, PASSWORD)
        smtp.sendmail(OFFICER, [CLERK], message(subject="tu Outlook"))
        with pytest.raises(smtplib.SMTPDataError) as refused:
            smtp.sendmail(OFFICER, [CLERK], message(from_="A <nguyenvana@gmail.com>"))
    assert refused.value.smtp_code == 550
    assert b"[sender.personal_domain]" in refused.value.smtp_error
    with smtplib.SMTP("127.0.0.1", layout.submission, timeout=60) as smtp:
        smtp.ehlo("laptop.dilinh")
        with pytest.raises(smtplib.SMTPAuthenticationError):
            smtp.login(OFFICER, "wrong")
    # The message, and the refusal notice that tells the officer why the second was refused
    # (sent through Postfix, and judged on the way like any mail).
    delivered = layout.postfix.wait_for_messages(2)
    assert sum(b"Subject: tu Outlook" in m for m in delivered) == 1
    assert layout.gateway is not None
    records = layout.gateway.wait_records(3)
    assert [(r["verdict"], r["client"]["login"]) for r in records if r["client"]["login"]] == [
        ("accept", OFFICER),
        ("reject", OFFICER),
    ]
    refusal = next(r for r in records if r["verdict"] == "reject")
    assert refusal["notice"]["sent"] is True and refusal["notice"]["to"] == OFFICER
