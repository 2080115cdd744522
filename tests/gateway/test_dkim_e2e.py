"""The official-domain rule end to end: DKIM keys from a real DNS server on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_dkim import Key

from gateway.checks.dns import DnsResolver, DnsTempError
from tests.support.dns import DnsServer
from tests.support.gateway import CLERK, make_config, message, policy_text
from tests.support.smtp import Downstream

RULE = '[[rules]]\nid = "sender-official-unauthenticated"\nmode = "enforce"\n'
SENDER = "vanthu@lamdong.gov.vn"


@pytest.fixture(scope="module")
def key() -> Key:
    return Key()


@pytest.fixture
def dns_server(key: Key) -> Iterator[DnsServer]:
    server = DnsServer()
    server.txt["s1._domainkey.lamdong.gov.vn"] = key.record
    yield server
    server.close()


@pytest.fixture
def dkim_gateway(
    start_gateway, downstream: Downstream, tmp_path: Path, dns_server: DnsServer
) -> Any:
    """A gateway enforcing the official-domain rule, its DNS on the loopback server."""
    return start_gateway(
        make_config(tmp_path, downstream.port),
        policy_text(RULE),
        resolver=DnsResolver([dns_server.address], timeout=2),
    )


def official_message() -> bytes:
    return message(from_=f"Van thu <{SENDER}>", to=CLERK)


def test_aligned_dkim_pass_is_accepted_and_reported(
    dkim_gateway, downstream: Downstream, key: Key
) -> None:
    """Signed by the From domain's key: accepted, with dkim=pass in Authentication-Results."""
    gw = dkim_gateway
    _, (code, text) = gw.send(key.sign(official_message()), SENDER, [CLERK])
    assert code == 250, text
    got = b" ".join(downstream.handler.messages[0].data.split())
    assert b"dkim=pass header.d=lamdong.gov.vn header.s=s1;" in got
    assert gw.records()[0]["dkim"] == [
        {"domain": "lamdong.gov.vn", "selector": "s1", "result": "pass", "detail": ""}
    ]


def test_forged_official_sender_is_refused(dkim_gateway, downstream: Downstream, key: Key) -> None:
    """No signature, or a signature of another domain: 550 5.7.22, nothing delivered."""
    gw = dkim_gateway
    for data in (official_message(), key.sign(official_message(), domain="example.com")):
        _, (code, text) = gw.send(data, SENDER, [CLERK])
        assert code == 550 and text.startswith(b"5.7.22 [sender.official_unauthenticated]")
    assert downstream.handler.messages == []


def test_trusted_network_needs_no_dkim(
    start_gateway, downstream: Downstream, tmp_path: Path, dns_server: DnsServer
) -> None:
    """The district's own servers (trusted networks) may send unsigned official mail."""
    gw = start_gateway(
        make_config(tmp_path, downstream.port, trusted=True),
        policy_text(RULE),
        resolver=DnsResolver([dns_server.address], timeout=2),
    )
    assert gw.send(official_message(), SENDER, [CLERK])[1][0] == 250


def test_dns_failure_is_a_temporary_refusal(
    start_gateway, downstream: Downstream, tmp_path: Path, dns_server: DnsServer, key: Key
) -> None:
    """SERVFAIL from the real server, or an injected timeout: 451 4.4.3, never 'forged'."""
    dns_server.servfail.add("s1._domainkey.lamdong.gov.vn")
    gw = start_gateway(
        make_config(tmp_path, downstream.port),
        policy_text(RULE),
        resolver=DnsResolver([dns_server.address], timeout=1),
    )
    _, (code, text) = gw.send(key.sign(official_message()), SENDER, [CLERK])
    assert code == 451 and text.startswith(b"4.4.3 [sender.authentication_temperror]")

    class TimingOut:
        async def txt(self, name: str) -> bytes:
            raise DnsTempError(f"{name}: timeout")

    gw2 = start_gateway(
        make_config(tmp_path / "2", downstream.port), policy_text(RULE), resolver=TimingOut()
    )
    _, (code, _) = gw2.send(key.sign(official_message()), SENDER, [CLERK])
    assert code == 451
    assert downstream.handler.messages == []
