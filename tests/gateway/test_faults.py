"""Fault injection with exact accounting: for every fault, messages in = delivered (250) +
refused (5xx) + tempfailed (4xx), each transaction is recorded once, and every message a
client saw 250 for is at the downstream. (SIGKILL of the whole gateway: test_workers.py.)"""

from __future__ import annotations

import os
import signal
import smtplib
import sqlite3
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from test_documents_e2e import with_files

from gateway.checks.validation import PoolValidator
from gateway.config import DownstreamConfig
from gateway.store import SqliteStore
from gateway.store.commit import PendingRecord
from tests.support.gateway import CLERK, OFFICIAL, RunningGateway, make_config, message
from tests.support.pki import build_pki, make_pdf, sign_pdf
from tests.support.smtp import Downstream, free_port

SECOND = "ketoan@lamdong.gov.vn"


@dataclass
class Tally:
    sent: int = 0
    replies: Counter[str] | None = None
    accepted: set[str] | None = None


def send_all(gw: RunningGateway, messages: list[tuple[str, bytes]]) -> Tally:
    """Each message in its own session, as a sending MTA would; count the final replies."""
    replies: Counter[str] = Counter()
    accepted: set[str] = set()
    for subject, data in messages:
        try:
            with smtplib.SMTP("127.0.0.1", gw.port, timeout=20) as smtp:
                smtp.ehlo("client.test")
                code, _ = smtp.mail(OFFICIAL)
                if code != 250:
                    replies[f"{code // 100}xx"] += 1
                    continue
                rcpt = [smtp.rcpt(r)[0] for r in (CLERK, SECOND)]
                if 250 not in rcpt:
                    replies[f"{min(rcpt) // 100}xx"] += 1
                    continue
                code, _ = smtp.data(data)
        except smtplib.SMTPServerDisconnected:
            code = 421  # the client keeps the message: a temporary failure
        replies[f"{code // 100}xx"] += 1
        if code == 250:
            accepted.add(subject)
    return Tally(len(messages), replies, accepted)


def subjects_at(downstream: Downstream) -> set[str]:
    return {
        m.data.split(b"\r\nSubject: ", 1)[1].split(b"\r\n", 1)[0].decode()
        for m in downstream.handler.messages
    }


def batch(n: int) -> list[tuple[str, bytes]]:
    """``n`` messages: official ones, and every third from a personal (refused) address."""
    out = []
    for i in range(n):
        subject = f"msg-{i}"
        from_ = "Nguoi dan <nd@gmail.com>" if i % 3 == 2 else f"A <{OFFICIAL}>"
        out.append((subject, message(from_=from_, subject=subject)))
    return out


def check_books(gw: RunningGateway, downstream: Downstream, tally: Tally) -> Counter[str]:
    assert tally.replies is not None and tally.accepted is not None
    assert sum(tally.replies.values()) == tally.sent  # in = 2xx + 5xx + 4xx, exactly
    assert tally.accepted <= subjects_at(downstream)  # no 250 the downstream lacks
    assert len(gw.wait_records(tally.sent)) == tally.sent  # each transaction recorded once
    return tally.replies


class BrokenStore(SqliteStore):
    """Every commit fails, as on a full disk: the writer reports it to each waiting record."""

    def _commit(self, group: list[PendingRecord]) -> None:
        for pending in group:
            pending.error = sqlite3.OperationalError("database or disk is full")


FAULTS: dict[str, Callable[[Downstream], dict[str, Any]]] = {}


def fault(name: str) -> Callable[[Callable[[Downstream], dict[str, Any]]], Any]:
    def register(f: Callable[[Downstream], dict[str, Any]]) -> Any:
        FAULTS[name] = f
        return f

    return register


@fault("downstream 4xx at DATA")
def _(ds: Downstream) -> dict[str, Any]:
    ds.handler.data_reply = "451 4.3.0 queue full"
    return {"want": {"4xx": 4, "5xx": 2}}


@fault("downstream 5xx at DATA")
def _(ds: Downstream) -> dict[str, Any]:
    ds.handler.data_reply = "554 5.7.1 not here"
    return {"want": {"5xx": 6}}


@fault("downstream drops the connection mid-DATA")
def _(ds: Downstream) -> dict[str, Any]:
    ds.handler.drop_on_data = True
    return {"want": {"4xx": 4, "5xx": 2}}


@fault("downstream slower than its timeout")
def _(ds: Downstream) -> dict[str, Any]:
    ds.handler.data_delay = 1.5  # the gateway waits 0.5 s
    return {"want": {"4xx": 4, "5xx": 2}, "timeout": 0.5}


@fault("downstream refuses one of two recipients")
def _(ds: Downstream) -> dict[str, Any]:
    ds.handler.refuse_rcpt[SECOND] = "550 5.1.1 no such user"
    return {"want": {"2xx": 4, "5xx": 2}}


@fault("downstream down")
def _(ds: Downstream) -> dict[str, Any]:
    return {"want": {"4xx": 6}, "port": free_port()}


@fault("decision store unavailable")
def _(ds: Downstream) -> dict[str, Any]:
    return {"want": {"4xx": 6}, "store": BrokenStore, "records": False}


@pytest.mark.parametrize("name", list(FAULTS))
def test_every_message_is_delivered_refused_or_tempfailed(
    start_gateway, downstream: Downstream, tmp_path: Path, name: str
) -> None:
    setup = FAULTS[name](downstream)
    port = setup.get("port", downstream.port)
    ds = DownstreamConfig("smtp", host="127.0.0.1", port=port, timeout=setup.get("timeout", 5))
    config = make_config(tmp_path, port, downstream=ds)
    store = setup.get("store", SqliteStore)(config.store_path)
    gw = start_gateway(config, store=store)
    tally = send_all(gw, batch(6))
    assert tally.replies is not None and tally.accepted is not None
    if setup.get("records", True):
        replies = check_books(gw, downstream, tally)
    else:  # nothing can be recorded: then nothing may be accepted either
        replies = tally.replies
        assert sum(replies.values()) == tally.sent
    assert dict(replies) == setup["want"]
    if name == "downstream refuses one of two recipients":
        assert all(m.rcpt_tos == [CLERK] for m in downstream.handler.messages)


def test_a_killed_validation_worker_costs_one_tempfail(
    start_gateway, downstream: Downstream, tmp_path: Path
) -> None:
    """The validation process dies (OOM killer, a crash in a parser): the document being
    checked gets 451 (its sender retries), the pool is replaced, the next document passes."""
    pki = build_pki()
    validator = PoolValidator(pki.store(), workers=1, timeout=30)
    gw = start_gateway(make_config(tmp_path, downstream.port), validator=validator)

    def signed(n: int) -> tuple[str, bytes]:
        pdf = sign_pdf(make_pdf(f"Cong van so {n}"), pki.person)
        data = with_files((f"cv{n}.pdf", pdf)).replace(
            b"Subject: Cong van", f"Subject: cv-{n}".encode()
        )
        return f"cv-{n}", data

    first = send_all(gw, [signed(1)])
    pool = validator._pool
    assert pool is not None
    for pid in list(pool._processes):  # type: ignore[attr-defined]
        os.kill(pid, signal.SIGKILL)
    rest = send_all(gw, [signed(2), signed(3)])
    total = Tally(3, first.replies + rest.replies, first.accepted | rest.accepted)  # type: ignore[operator]
    replies = check_books(gw, downstream, total)
    assert dict(replies) == {"2xx": 2, "4xx": 1}
    assert total.accepted == {"cv-1", "cv-3"}
