"""End to end with a real MTA: mail the gateway accepts reaches a real Postfix downstream.

Needs Debian's postfix and root (scripts/test.sh installs it). Skipped where it cannot run,
except under CI (CONGVU_REQUIRE_POSTFIX=1), where a missing Postfix is a failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import CLERK, OFFICIAL, free_port, make_config, message
from postfix_downstream import PostfixDownstream, PostfixUnavailable

pytestmark = pytest.mark.postfix


@pytest.fixture
def postfix(tmp_path: Path) -> Iterator[PostfixDownstream]:
    mta = PostfixDownstream(
        tmp_path / "postfix", free_port(), ["lamdong.gov.vn", "dilinh.lamdong.gov.vn"]
    )
    try:
        mta.start()
    except PostfixUnavailable as exc:
        if os.environ.get("CONGVU_REQUIRE_POSTFIX"):
            pytest.fail(f"Postfix is required here: {exc}")
        pytest.skip(str(exc))
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
