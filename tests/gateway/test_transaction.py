"""One transaction path: the proxy over real SMTP and the offline front-end (``congvu check``,
the fuzzer) give the same replies and the same record for the same envelope and message."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from gateway.checks.dns import make_resolver
from gateway.checks.validation import make_validator
from gateway.config import Limits
from gateway.judge import Judge
from gateway.transaction import Client, run_offline
from policies import parse_policy
from tests.support.gateway import CLERK, OFFICIAL, make_config, message, policy_text
from tests.support.smtp import Downstream

_REF = re.compile(r" \(ref [^)]*\)|accepted as \S+")

# (envelope sender, recipients, message): each reaches a different end of the transaction.
CASES = {
    "accepted": (OFFICIAL, [CLERK], message()),
    "personal sender": ("x@gmail.com", [CLERK], message(from_="X <x@gmail.com>")),
    "sender syntax": ("no-at-sign", [CLERK], message()),
    "relay denied": (OFFICIAL, ["someone@example.com"], message()),
    "some recipients refused": (OFFICIAL, ["a@example.com", CLERK, "b@lamdong.gov.vn"], message()),
    "too many recipients": (OFFICIAL, [f"u{n}@lamdong.gov.vn" for n in range(4)], message()),
    "too large": (OFFICIAL, [CLERK], message(body="x" * 60 + "\r\n") * 40),
    "line too long": (OFFICIAL, [CLERK], message(body="y" * 1200 + "\r\n")),
}


def _same(record: dict[str, Any]) -> dict[str, Any]:
    """What must agree between front-ends: all but ids, times and measured durations."""
    return {
        "verdict": record["verdict"],
        "reasons": record["reasons"],
        "reply": _REF.sub("", record["reply"]),
        "recipients": [
            {**r, "reply": _REF.sub("", r["reply"])} for r in record["envelope"]["recipients"]
        ],
        "findings": record["findings"],
        "headers": record["headers"],
        "authenticated": record["authenticated"],
    }


@pytest.mark.parametrize("case", CASES)
def test_proxy_and_offline_front_ends_agree(
    case: str, start_gateway, downstream: Downstream, tmp_path: Path
) -> None:
    """The proxy and ``congvu check``'s path end each kind of transaction the same way."""
    sender, rcpts, raw = CASES[case]
    config = make_config(
        tmp_path,
        downstream.port,
        max_message_size=2048,
        limits=dataclasses.replace(Limits(), max_recipients=3),
    )
    policy = parse_policy(policy_text(), "test-policy.toml")
    gw = start_gateway(config, policy)
    with gw.client() as smtp:
        code, _ = smtp.mail(sender)
        if code == 250 and 250 in [smtp.rcpt(r)[0] for r in rcpts]:
            smtp.data(raw) if len(raw) <= 2048 else _send_oversize(smtp, raw)
    [proxied] = gw.wait_records(1)

    validator = make_validator(config, policy, processes=False)
    judge = Judge(config, policy, validator=validator, resolver=make_resolver(config))
    try:
        txn = asyncio.run(
            run_offline(judge, Client("127.0.0.1", "client.test"), sender, rcpts, raw)
        )
    finally:
        validator.close()
    assert _same(txn.record().to_dict()) == _same(proxied)


def _send_oversize(smtp: Any, raw: bytes) -> None:
    # smtplib would refuse to send more than the SIZE the server announced: talk DATA by hand.
    smtp.putcmd("data")
    assert smtp.getreply()[0] == 354
    smtp.send(raw.replace(b"\r\n.", b"\r\n..") + b".\r\n")
    smtp.getreply()


def test_a_transaction_ends_once_and_is_recorded_as_it_ended() -> None:
    """The first ending stands: a refusal is not turned into a delivery afterwards."""
    config = make_config(Path("/nonexistent"), None)
    policy = parse_policy(policy_text(), "test-policy.toml")
    judge = Judge(config, policy, validator=None, resolver=None)  # type: ignore[arg-type]
    from gateway.transaction import Transaction

    txn = Transaction(judge, Client("192.0.2.1"), OFFICIAL)
    assert txn.rcpt(CLERK) is None
    txn.recipient_accepted(CLERK)
    refused = txn.data_refused("message.too_large")
    assert txn.delivered().line() == refused.line()
    record = txn.record().to_dict()
    assert (record["verdict"], record["reasons"]) == ("reject", ["message.too_large"])
    assert record["reply"].startswith("552 5.3.4 [message.too_large]")
    assert record["reply"].endswith(f"(ref {txn.id})")


def test_an_abandoned_transaction_never_answers_250_afterwards() -> None:
    """Once a transaction ended without an answer, no later step can make it say 250."""
    config = make_config(Path("/nonexistent"), None)
    policy = parse_policy(policy_text(), "test-policy.toml")
    judge = Judge(config, policy, validator=None, resolver=None)  # type: ignore[arg-type]
    from gateway.transaction import Transaction

    txn = Transaction(judge, Client("192.0.2.1"), OFFICIAL)
    assert txn.end().verdict == "abandoned"
    with pytest.raises(RuntimeError, match="already ended"):
        txn.delivered()
    assert txn.record().to_dict()["verdict"] == "abandoned"
