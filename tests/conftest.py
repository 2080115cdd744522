"""Shared test harness: real SMTP servers on loopback, each in its own event-loop thread.

- ``downstream``: a real aiosmtpd server that records what it received (and can refuse a
  recipient or a message, or drop the connection mid-DATA, for failure injection).
- ``start_gateway``: the real gateway (``gateway.server.Gateway``) on a free port.
Clients are Python's smtplib: a real SMTP client over TCP.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import smtplib
import sqlite3
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiosmtpd.smtp import SMTP

from gateway.config import DownstreamConfig, GatewayConfig
from gateway.record import Record
from gateway.server import Gateway
from gateway.store import DecisionStore, SqliteStore
from policies import Policy, load_policy, parse_policy

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


class LoopThread:
    """An asyncio event loop running in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.run(cancel_all())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes


@dataclass
class RecordingHandler:
    """aiosmtpd handler for the downstream: records messages; knobs inject failures."""

    messages: list[Received] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    refuse_rcpt: dict[str, str] = field(default_factory=dict)
    data_reply: str | None = None
    drop_on_data: bool = False
    data_delay: float = 0.0
    quits: int = 0  # sessions ended politely

    async def handle_QUIT(self, server: Any, session: Any, envelope: Any) -> str:
        self.quits += 1
        return "221 2.0.0 Bye"

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        self.commands.append(f"MAIL {address}")
        envelope.mail_from = address
        return "250 2.1.0 Ok"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        self.commands.append(f"RCPT {address}")
        if address in self.refuse_rcpt:
            return self.refuse_rcpt[address]
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_RSET(self, server: Any, session: Any, envelope: Any) -> str:
        self.commands.append("RSET")
        return "250 2.0.0 Ok"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.commands.append("DATA")
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        if self.drop_on_data:
            server.transport.close()
            return "421 4.3.0 gone"
        if self.data_reply:
            return self.data_reply
        self.messages.append(
            Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
        )
        return "250 2.0.0 Ok: queued as DS1"


@dataclass
class Downstream:
    handler: RecordingHandler
    port: int


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    """`congvu` commands configure structlog globally; each test starts from the defaults."""
    yield
    structlog.reset_defaults()


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


@pytest.fixture
def downstream(loop_thread: LoopThread) -> Iterator[Downstream]:
    """A real aiosmtpd server on loopback that records what it is sent."""
    handler = RecordingHandler()

    async def start() -> asyncio.Server:
        return await loop_thread.loop.create_server(
            lambda: SMTP(
                handler, hostname="downstream.test", decode_data=False, enable_SMTPUTF8=True
            ),
            host="127.0.0.1",
            port=0,
        )

    server = loop_thread.run(start())
    yield Downstream(handler, server.sockets[0].getsockname()[1])

    async def stop() -> None:  # in the loop's own thread: asyncio objects are not thread-safe
        server.close()

    loop_thread.run(stop())


PG_BASE = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """The PostgreSQL test server (127.0.0.1:5432, database ``test``), in a schema of its own
    for each test, dropped afterwards. No server: skipped, or failed where
    ``CONGVU_REQUIRE_POSTGRES`` is set (CI must not pass by skipping)."""
    import os
    import secrets

    import psycopg

    schema = f"congvu_test_{secrets.token_hex(4)}"
    try:
        admin = psycopg.connect(PG_BASE, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        if os.environ.get("CONGVU_REQUIRE_POSTGRES"):
            pytest.fail(f"PostgreSQL is required here: {exc}")
        pytest.skip(f"no PostgreSQL on 127.0.0.1:5432: {exc}")
    admin.execute(f"CREATE SCHEMA {schema}")
    yield f"{PG_BASE}?options=-csearch_path%3D{schema}"
    admin.execute(f"DROP SCHEMA {schema} CASCADE")
    admin.close()


def free_port() -> int:
    """A TCP port nothing listens on, below the ephemeral range.

    A port the kernel hands out for binding port 0 comes from the range it also uses for the
    local end of outgoing connections: between this call and the gateway's bind, one of the
    many client or downstream connections of the suite could take it (seen: a worker that
    "could not start"). Ports under ``ip_local_port_range`` are never taken that way.
    """
    import random
    import socket

    low = 32768
    with contextlib.suppress(OSError, ValueError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(200):
        port = random.randrange(max(1024, low - 12000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # pragma: no cover - a crowded machine: any free port
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


@pytest.fixture
def start_gateway(
    loop_thread: LoopThread, tmp_path: Path
) -> Iterator[Callable[..., RunningGateway]]:
    """Start a real gateway: ``start_gateway(config=..., policy=..., store=..., relay=...)``.

    Afterwards every record a gateway wrote to its SQLite store is read back: the record's
    reader and serializer must give the stored text again (the text the chain hash covers).
    """
    started: list[Gateway] = []
    stores: list[Path] = []

    def start(
        config: GatewayConfig | None = None,
        policy: Policy | str | None = None,
        store: DecisionStore | None = None,
        **kwargs: Any,
    ) -> RunningGateway:
        config = config or make_config(tmp_path, None)
        if isinstance(policy, str):
            policy = parse_policy(policy, "test-policy.toml")
        if store is None:
            store = SqliteStore(config.store_path)
            stores.append(config.store_path)
        gw = Gateway.from_config(
            config, policy or load_policy(config.policy_file), store=store, **kwargs
        )
        port = loop_thread.run(gw.start(port=0))
        started.append(gw)
        return RunningGateway(gw, port, loop_thread)

    yield start
    for gw in started:
        loop_thread.run(gw.stop(grace=2))
    for path in stores:
        assert_records_read_back(path)


def assert_records_read_back(path: Path) -> None:
    """Each record in the SQLite store at ``path``, read by :meth:`Record.from_dict`, is
    serialized by :meth:`Record.to_json` to exactly the text stored."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        texts = [text for (text,) in db.execute("SELECT record FROM decisions")]
    for text in texts:
        assert Record.from_dict(json.loads(text)).to_json() == text
