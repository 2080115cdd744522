"""The real gateway in the tests: test messages and addresses, configurations and policies,
and a running gateway with an SMTP client."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import smtplib
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.config import DownstreamConfig, GatewayConfig
from gateway.record import Record
from gateway.server import Gateway
from tests.support.smtp import LoopThread

__all__ = [
    "CLERK",
    "OFFICIAL",
    "RunningGateway",
    "assert_records_read_back",
    "make_config",
    "message",
    "policy_text",
]

OFFICIAL = "a.nguyen@dilinh.lamdong.gov.vn"
CLERK = "vanthu@lamdong.gov.vn"


def message(
    from_: str = f"Nguyen Van A <{OFFICIAL}>",
    to: str = CLERK,
    subject: str = "Bao cao tuan",
    extra: str = "",
    body: str = "Kinh gui van thu,\r\nBao cao dinh kem.\r\n",
) -> bytes:
    """A small RFC 5322 message with CRLF line ends."""
    head = f"From: {from_}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <t1@test>\r\n"
    head += "Date: Sun, 22 Nov 2026 10:00:00 +0700\r\n" + extra
    return (head + "\r\n" + body).encode()


def make_config(
    tmp_path: Path, downstream_port: int | None, *, trusted: bool = False, **overrides: Any
) -> GatewayConfig:
    """A test configuration: loopback is NOT trusted unless ``trusted`` says so."""
    ds = (
        DownstreamConfig("smtp", host="127.0.0.1", port=downstream_port, timeout=5)
        if downstream_port
        else DownstreamConfig("maildir", maildir=tmp_path / "maildir")
    )
    values: dict[str, Any] = {
        "hostname": "gw.lamdong.gov.vn",
        "local_domains": ("lamdong.gov.vn",),
        "trusted_networks": (ipaddress.ip_network("127.0.0.0/8"),) if trusted else (),
        "downstream": ds,
        "store_path": tmp_path / "decisions.sqlite",
    }
    values.update(overrides)
    return GatewayConfig(**values)


def policy_text(rules: str = "", official: str = '["gov.vn"]', extra: str = "") -> str:
    """A policy file's text; default rules as in the shipped policy."""
    rules = rules or (
        '[[rules]]\nid = "sender-malformed-identity"\nmode = "enforce"\n\n'
        '[[rules]]\nid = "sender-personal-domain"\nmode = "enforce"\n'
    )
    return (
        '[policy]\nname = "test policy"\nhelp_contact = "Văn phòng UBND huyện, ĐT 0263 123"\n\n'
        f"[domains]\nofficial = {official}\n{extra}\n{rules}"
    )


@dataclass
class RunningGateway:
    gateway: Gateway
    port: int
    loop_thread: LoopThread

    def client(self) -> smtplib.SMTP:
        smtp = smtplib.SMTP("127.0.0.1", self.port, timeout=20)
        smtp.ehlo("client.test")
        return smtp

    def send(
        self, data: bytes, mail_from: str, rcpts: list[str]
    ) -> tuple[list[tuple[int, bytes]], tuple[int, bytes]]:
        """MAIL, each RCPT, DATA: the RCPT replies and the final reply (no exceptions)."""
        with self.client() as smtp:
            code, text = smtp.mail(mail_from)
            assert code == 250, (code, text)
            rcpt_replies = [smtp.rcpt(r) for r in rcpts]
            if not any(c == 250 for c, _ in rcpt_replies):
                return rcpt_replies, (0, b"")
            final = smtp.data(data)
            return rcpt_replies, final

    def records(self) -> list[dict[str, Any]]:
        return self.gateway.store.tail(1000)

    def wait_records(self, count: int, timeout: float = 5) -> list[dict[str, Any]]:
        """Records of sessions that ended by QUIT or hang-up are written just after it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            records = self.records()
            if len(records) >= count:
                return records
            time.sleep(0.02)
        raise AssertionError(f"expected {count} records, got {self.records()}")


def assert_records_read_back(path: Path) -> None:
    """Each record in the SQLite store at ``path``, read by :meth:`Record.from_dict`, is
    serialized by :meth:`Record.to_json` to exactly the text stored."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        texts = [text for (text,) in db.execute("SELECT record FROM decisions")]
    for text in texts:
        assert Record.from_dict(json.loads(text)).to_json() == text
