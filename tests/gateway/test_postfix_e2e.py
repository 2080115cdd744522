"""End to end with a real MTA: mail the gateway accepts reaches a real Postfix downstream, and
the before-queue layout of docs/admin/postfix.md runs from the page's own snippets.

Needs Debian's postfix and root (scripts/test.sh installs it). Skipped where it cannot run,
except under CI (CONGVU_REQUIRE_POSTFIX=1), where a missing Postfix is a failure.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import smtplib
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.config import load_config
from tests.support.dovecot import DovecotAuth, DovecotUnavailable
from tests.support.gateway import CLERK, OFFICIAL, RunningGateway, make_config, message
from tests.support.postfix import PostfixDownstream, PostfixUnavailable, main_cf, replace_once
from tests.support.postfix import shown as shown_on
from tests.support.smtp import free_port

pytestmark = pytest.mark.postfix


@pytest.fixture
def postfix_dir() -> Iterator[Path]:
    """A folder for a private Postfix, outside pytest's tmp_path: its delivery agent runs as
    nobody and must reach the Maildir, but every pytest session (another one running at the
    same time, too) sets /tmp/pytest-of-USER back to mode 0700."""
    folder = Path(tempfile.mkdtemp(prefix="congvu-postfix-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def start_or_skip(mta: PostfixDownstream | DovecotAuth) -> None:
    """Start Postfix (or Dovecot for its logins); skip the test where it cannot run, fail
    where CI requires it."""
    try:
        mta.start()
    except (PostfixUnavailable, DovecotUnavailable) as exc:
        if os.environ.get("CONGVU_REQUIRE_POSTFIX"):
            pytest.fail(f"Postfix is required here: {exc}")
        pytest.skip(str(exc))


@pytest.fixture
def postfix(postfix_dir: Path) -> Iterator[PostfixDownstream]:
    mta = PostfixDownstream(postfix_dir, free_port(), ["lamdong.gov.vn", "dilinh.lamdong.gov.vn"])
    start_or_skip(mta)
    yield mta
    mta.stop()


def test_accepted_mail_reaches_postfix_and_refused_mail_does_not(
    start_gateway, postfix: PostfixDownstream, tmp_path: Path
) -> None:
    """Official mail is delivered into Postfix's Maildir with our headers; gmail mail is not."""
    gw = start_gateway(make_config(tmp_path, postfix.port))
    _, (code, text) = gw.send(message(subject="qua Postfix"), OFFICIAL, [CLERK])
    assert code == 250, text
    decision_id = text.decode().rsplit(" ", 1)[1]
    _, (code, _) = gw.send(message(from_="x@gmail.com", subject="tu gmail"), "x@gmail.com", [CLERK])
    assert code == 550

    [delivered] = postfix.wait_for_messages(1)
    assert b"Subject: qua Postfix" in delivered
    assert f"policy.decision={decision_id}".encode() in delivered
    assert b"tu gmail" not in b"".join(postfix.messages())


def test_postfix_refusing_a_recipient_reaches_the_client(
    start_gateway, postfix: PostfixDownstream, tmp_path: Path
) -> None:
    """Postfix's own 5xx for a recipient it will not take is passed back for that recipient."""
    # Trusted client: the gateway's relay check passes, so Postfix's answer is what we see.
    gw = start_gateway(make_config(tmp_path, postfix.port, trusted=True))
    rcpts, (code, _) = gw.send(message(), OFFICIAL, ["someone@example.com", CLERK])
    assert rcpts[0][0] == 554 and b"Relay access denied" in rcpts[0][1]
    assert rcpts[1][0] == 250 and code == 250
    [delivered] = postfix.wait_for_messages(1)
    assert b"Delivered-To: " + CLERK.encode() in delivered


# --- The layout of docs/admin/postfix.md, run from the page itself -------------------------
#
# The master.cf and main.cf lines and the congvu.toml shown on that page are read from it, so
# what the mail admin copies is what runs here: Postfix's public smtpd with the gateway as its
# smtpd_proxy_filter, the gateway delivering to Postfix's re-injection smtpd. Only the ports
# and the store's path are the test's own. The Internet client is played with Postfix's
# XCLIENT, which the test allows on the public smtpd (a test-only main.cf line).

PAGE = Path(__file__).resolve().parents[2] / "docs" / "admin" / "postfix.md"
POLICY = Path(__file__).resolve().parents[2] / "examples" / "policy.toml"
CLIENT_IP, CLIENT_HELO = "203.0.113.7", "mx.client.example"


def shown(marker: str) -> str:
    return shown_on(PAGE, marker)


@dataclass
class Layout:
    """Postfix in front, the gateway as its proxy filter, Postfix's re-injection smtpd behind."""

    postfix: PostfixDownstream
    gateway: RunningGateway | None
    public_limit: int  # the public smtpd's message_size_limit, as the page sets it

    def session(self, client_ip: str = CLIENT_IP) -> smtplib.SMTP:
        """An SMTP session with Postfix's public smtpd, as if from ``client_ip``."""
        smtp = smtplib.SMTP("127.0.0.1", self.postfix.port, timeout=60)
        smtp.ehlo("test.client")
        code, text = smtp.docmd(
            "XCLIENT", f"ADDR={client_ip} NAME=[UNAVAILABLE] HELO={CLIENT_HELO}"
        )
        assert code == 220, (code, text)
        smtp.ehlo(CLIENT_HELO)
        return smtp


@pytest.fixture
def layout(
    request: pytest.FixtureRequest, start_gateway, tmp_path: Path, postfix_dir: Path
) -> Iterator[Layout]:
    """The page's layout on test ports. Parametrized indirectly, "no gateway" leaves congvu
    out (Postfix's filter then points at a port where nothing listens) and "no re-injection"
    points congvu at a port where nothing listens instead of the 10025 smtpd."""
    broken = getattr(request, "param", "")
    reinjection, public = free_port(), free_port()
    delivers_to = free_port() if broken == "no re-injection" else reinjection
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "congvu.toml").write_text(
        replace_once(
            shown("file: congvu.toml"),
            r'"smtp://127\.0\.0\.1:10025"',
            f'"smtp://127.0.0.1:{delivers_to}"',
        ),
        encoding="utf-8",
    )
    (etc / "policy.toml").write_text(POLICY.read_text("utf-8"), encoding="utf-8")
    config = dataclasses.replace(
        load_config(etc / "congvu.toml"), store_path=tmp_path / "decisions.sqlite"
    )
    gateway = None if broken == "no gateway" else start_gateway(config)
    services = shown("postfix-e2e: master.cf")
    services = replace_once(services, r"^smtp(?=\s+inet\s)", f"127.0.0.1:{public}")
    services = replace_once(
        services,
        r"smtpd_proxy_filter=127\.0\.0\.1:2525$",
        f"smtpd_proxy_filter=127.0.0.1:{gateway.port if gateway else free_port()}",
    )
    services = replace_once(services, r"^127\.0\.0\.1:10025(?=\s)", f"127.0.0.1:{reinjection}")
    [public_limit] = re.findall(r"-o message_size_limit=(\d+)", services)
    settings = main_cf(shown("postfix-e2e: main.cf"))
    settings["smtpd_authorized_xclient_hosts"] = "127.0.0.0/8"  # the test plays the client
    mta = PostfixDownstream(
        postfix_dir,
        public,
        ["lamdong.gov.vn", "dilinh.lamdong.gov.vn", "example.com"],
        services=services,
        settings=settings,
    )
    start_or_skip(mta)
    yield Layout(mta, gateway, int(public_limit))
    mta.stop()


def sized(size: int) -> bytes:
    """An official message of exactly ``size`` bytes (lines of 78 bytes, as base64 has)."""
    head = message(subject=f"{size} bytes", body="")
    lines, rest = divmod(size - len(head), 78)
    if rest == 1:  # a last line needs its CRLF
        lines, rest = lines - 1, rest + 78
    return head + (b"x" * 76 + b"\r\n") * lines + (b"y" * (rest - 2) + b"\r\n" if rest else b"")


def test_page_layout_delivers_official_mail_naming_the_real_client(layout: Layout) -> None:
    """Mail the gateway accepts is queued by the re-injection smtpd; the record and the
    gateway's Received: name the Internet client, and so does the re-injection smtpd's log."""
    with layout.session() as smtp:
        smtp.mail(OFFICIAL)
        assert smtp.rcpt(CLERK)[0] == 250
        code, text = smtp.data(message(subject="qua Postfix"))
    assert code == 250, text
    assert text.startswith(b"2.0.0 Ok: accepted as "), text
    decision_id = text.decode().rsplit(" ", 1)[1]
    [delivered] = layout.postfix.wait_for_messages(1)
    assert layout.gateway is not None
    [record] = [r for r in layout.gateway.wait_records(1) if r["id"] == decision_id]
    assert record["client"] == {"helo": CLIENT_HELO, "ip": CLIENT_IP, "login": "", "tls": False}
    unfolded = re.sub(rb"\r?\n[ \t]+", b" ", delivered)
    assert (
        f"Received: from {CLIENT_HELO} ([{CLIENT_IP}]) by mail.lamdong.gov.vn".encode() in unfolded
    )
    assert f"policy.decision={decision_id}".encode() in delivered
    # [downstream] xforward = true: Postfix logs the real client as orig_client. Its
    # restrictions and its Received: still see the gateway (127.0.0.1): XFORWARD only changes
    # what is logged, so permit_mynetworks let the message in.
    assert f"orig_client=unknown[{CLIENT_IP}]" in layout.postfix.maillog()
    assert b"Received: from mail.lamdong.gov.vn (unknown [127.0.0.1])" in delivered


def test_page_layout_refusals_reach_the_client_through_postfix(layout: Layout) -> None:
    """A personal sender is refused at the end of DATA and a stranger's relay attempt at RCPT,
    both with the gateway's reply; nothing reaches the mailboxes; an internal client relays."""
    with layout.session() as smtp:
        smtp.mail("nguyenvana@gmail.com")
        assert smtp.rcpt(CLERK)[0] == 250
        code, text = smtp.data(message(from_="nguyenvana@gmail.com", subject="tu gmail"))
        assert code == 550 and b"[sender.personal_domain]" in text, text
        smtp.rset()
        smtp.mail(OFFICIAL)
        code, text = smtp.rcpt("someone@example.com")
        assert code == 550 and b"[relay.denied]" in text, text
    with layout.session(client_ip="10.20.1.5") as smtp:  # in the page's trusted_networks
        smtp.mail(OFFICIAL)
        assert smtp.rcpt("someone@example.com")[0] == 250
        code, text = smtp.data(message(to="someone@example.com", subject="ra ngoai"))
        assert code == 250, text
    [delivered] = layout.postfix.wait_for_messages(1)
    assert b"Subject: ra ngoai" in delivered
    log = layout.postfix.maillog()
    assert "proxy-reject: END-OF-MESSAGE: 550 5.7.1 [sender.personal_domain]" in log


def test_page_layout_size_limit_is_the_public_smtpd_s(layout: Layout) -> None:
    """A message of the public limit passes the gateway and the queue despite the headers added
    on the way; a larger one is refused by Postfix on port 25 before the gateway sees it."""
    with layout.session() as smtp:
        smtp.mail(OFFICIAL)
        smtp.rcpt(CLERK)
        code, text = smtp.data(sized(layout.public_limit))
        assert code == 250, text
    layout.postfix.wait_for_messages(1)
    assert layout.gateway is not None
    [record] = layout.gateway.wait_records(1)
    assert record["size"] > layout.public_limit  # Postfix's Received: came on top
    with layout.session() as smtp:
        smtp.mail(OFFICIAL)
        smtp.rcpt(CLERK)
        code, text = smtp.data(sized(layout.public_limit + 78))
        assert code == 552, text
    # congvu had the envelope (Postfix opens the filter session at RCPT), not the message.
    assert [r["verdict"] for r in layout.gateway.wait_records(2)] == ["accept", "abandoned"]
    assert len(layout.postfix.messages()) == 1


@pytest.mark.parametrize("layout", ["no gateway"], indirect=True)
def test_page_layout_with_the_gateway_down_defers(layout: Layout) -> None:
    """With nothing on the filter's port Postfix answers the RCPT with 451 4.3.0: senders retry."""
    with layout.session() as smtp:
        smtp.mail(OFFICIAL)
        code, text = smtp.rcpt(CLERK)
    assert (code, text) == (451, b"4.3.0 Error: queue file write error")
    assert "connect to proxy filter" in layout.postfix.maillog()
    # No transcript of each failed session to the postmaster (notify_classes=resource):
    # in an outage those were thousands of mails.
    time.sleep(1)
    assert "double-bounce" not in layout.postfix.maillog()


@pytest.mark.parametrize("layout", ["no re-injection"], indirect=True)
def test_page_layout_with_the_reinjection_smtpd_down_defers(layout: Layout) -> None:
    """With the 10025 smtpd unreachable, congvu's 451 for MAIL reaches the sender at RCPT."""
    with layout.session() as smtp:
        smtp.mail(OFFICIAL)
        code, text = smtp.rcpt(CLERK)
    assert code == 451 and text.startswith(b"4.4.1 [downstream.unavailable] "), (code, text)
