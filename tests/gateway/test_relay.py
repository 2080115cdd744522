"""The downstream client on its own: replies passed back as given, stale sessions recovered."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP

from gateway import replies
from gateway.config import DownstreamConfig
from gateway.relay import (
    ConnectionCache,
    DownstreamError,
    DownstreamReply,
    DownstreamWatch,
    MaildirDownstream,
    SmtpDownstream,
    probe,
)
from tests.support.smtp import RecordingHandler, free_port


async def start_downstream(handler: RecordingHandler) -> tuple[asyncio.Server, set[SMTP], int]:
    protocols: set[SMTP] = set()

    def factory() -> SMTP:
        protocol = SMTP(handler, hostname="ds.test", decode_data=False, enable_SMTPUTF8=True)
        protocols.add(protocol)
        return protocol

    server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0)
    return server, protocols, server.sockets[0].getsockname()[1]


async def test_a_stale_idle_connection_is_reopened_for_the_next_transaction() -> None:
    """If the downstream dropped an idle session, the next MAIL reconnects instead of failing."""
    handler = RecordingHandler()
    server, protocols, port = await start_downstream(handler)
    session = SmtpDownstream(DownstreamConfig("smtp", host="127.0.0.1", port=port, timeout=5))
    try:
        assert (await session.mail("a@x.gov.vn", size=None, smtputf8=False)).ok
        await session.rset()
        for protocol in protocols:  # the downstream times the idle session out
            assert protocol.transport is not None
            protocol.transport.close()
        await asyncio.sleep(0.05)
        assert (await session.mail("b@x.gov.vn", size=None, smtputf8=False)).ok
        assert (await session.rcpt("vanthu@lamdong.gov.vn")).ok
        assert (await session.data(b"Subject: t\r\n\r\nbody")).ok  # CRLF added at the end
    finally:
        await session.close()
        server.close()
    assert handler.messages[0].data == b"Subject: t\r\n\r\nbody\r\n"
    assert handler.commands.count("MAIL b@x.gov.vn") == 1


async def deliver(session: SmtpDownstream, sender: str, *recipients: str) -> None:
    assert (await session.mail(sender, size=None, smtputf8=False)).ok
    for rcpt in recipients:
        assert (await session.rcpt(rcpt)).ok
    assert (await session.data(f"Subject: from {sender}\r\n\r\nbody\r\n".encode())).ok


@contextlib.asynccontextmanager
async def cached_downstream(
    idle: float = 2.0,
) -> AsyncIterator[tuple[RecordingHandler, set[SMTP], DownstreamConfig, ConnectionCache]]:
    """A real downstream, its configuration and a connection cache (closed at the end)."""
    handler = RecordingHandler()
    server, protocols, port = await start_downstream(handler)
    cache = ConnectionCache(idle)
    try:
        config = DownstreamConfig("smtp", host="127.0.0.1", port=port, timeout=5)
        yield handler, protocols, config, cache
    finally:
        await cache.close()
        server.close()


async def test_the_next_client_session_reuses_an_idle_downstream_connection() -> None:
    """Like Postfix's connection cache: a session that ended cleanly leaves its connection for
    the next one, which skips connect, greeting and EHLO; at shutdown the cache says QUIT."""
    async with cached_downstream() as (handler, protocols, config, cache):
        for n in range(3):
            session = SmtpDownstream(config, cache)
            await deliver(session, f"a{n}@x.gov.vn", "vanthu@lamdong.gov.vn")
            await session.close()
        assert len(protocols) == 1 and handler.quits == 0
        assert [m.mail_from for m in handler.messages] == [f"a{n}@x.gov.vn" for n in range(3)]
        await cache.close()
        assert handler.quits == 1


async def test_a_connection_with_a_transaction_open_is_never_handed_on() -> None:
    """A session that ends mid-transaction (its client vanished after RCPT) QUITs: the next
    client must not inherit its sender and recipients."""
    async with cached_downstream() as (handler, protocols, config, cache):
        first = SmtpDownstream(config, cache)
        assert (await first.mail("a@x.gov.vn", size=None, smtputf8=False)).ok
        assert (await first.rcpt("secret@lamdong.gov.vn")).ok
        await first.close()
        assert handler.quits == 1
        second = SmtpDownstream(config, cache)
        await deliver(second, "b@x.gov.vn", "vanthu@lamdong.gov.vn")
        await second.close()
        assert len(protocols) == 2
        assert handler.messages[0].rcpt_tos == ["vanthu@lamdong.gov.vn"]
        # An abandoned transaction, once RSET, is clean again.
        third = SmtpDownstream(config, cache)
        assert (await third.mail("c@x.gov.vn", size=None, smtputf8=False)).ok
        await third.rset()
        await third.close()
        await deliver(SmtpDownstream(config, cache), "d@x.gov.vn", "vanthu@lamdong.gov.vn")
        assert len(protocols) == 2


async def test_idle_connections_are_closed_after_the_cache_time_and_zero_disables_it() -> None:
    async with cached_downstream(0.2) as (handler, protocols, config, cache):
        session = SmtpDownstream(config, cache)
        await deliver(session, "a@x.gov.vn", "vanthu@lamdong.gov.vn")
        await session.close()
        await asyncio.sleep(0.5)
        assert handler.quits == 1  # expired: QUIT, not a silent drop
        await deliver(SmtpDownstream(config, cache), "b@x.gov.vn", "vanthu@lamdong.gov.vn")
        assert len(protocols) == 2
        never = ConnectionCache(0)
        for sender in ("c@x.gov.vn", "d@x.gov.vn"):
            session = SmtpDownstream(config, never)
            await deliver(session, sender, "vanthu@lamdong.gov.vn")
            await session.close()
        assert len(protocols) == 4 and handler.quits == 3


@pytest.mark.parametrize("noticed", [True, False])
async def test_a_cached_connection_the_downstream_dropped_costs_the_client_nothing(
    noticed: bool,
) -> None:
    """The downstream closed a cached connection (restart, its own idle timeout): whether the
    close was already seen or the MAIL runs into it, the message goes over a new one."""
    async with cached_downstream() as (handler, protocols, config, cache):
        session = SmtpDownstream(config, cache)
        await deliver(session, "a@x.gov.vn", "vanthu@lamdong.gov.vn")
        await session.close()
        for protocol in protocols:
            assert protocol.transport is not None
            protocol.transport.close()
        if noticed:
            await asyncio.sleep(0.05)
        await deliver(SmtpDownstream(config, cache), "b@x.gov.vn", "vanthu@lamdong.gov.vn")
        assert [m.mail_from for m in handler.messages] == ["a@x.gov.vn", "b@x.gov.vn"]
        assert len(protocols) == 2


async def test_unreachable_downstream_is_a_temporary_error() -> None:
    """Nobody listening: DownstreamError('downstream.unavailable'), never a reply or a crash."""
    session = SmtpDownstream(
        DownstreamConfig("smtp", host="127.0.0.1", port=free_port(), timeout=2)
    )
    with pytest.raises(DownstreamError) as info:
        await session.mail("a@x.gov.vn", size=None, smtputf8=False)
    assert info.value.reason == "downstream.unavailable"


@pytest.mark.parametrize(
    ("code", "message", "line"),
    [
        (550, "5.1.1 <x@y>: no such user", "550 5.1.1 <x@y>: no such user"),
        (451, "try\nlater", "451 4.0.0 try later"),
        (554, "bad\x00\x1b[31m", "554 5.0.0 bad[31m"),
    ],
)
def test_downstream_replies_are_cleaned_to_one_printable_line(
    code: int, message: str, line: str
) -> None:
    """Multi-line or control-laden downstream text reaches the client as one safe line."""
    assert replies.downstream(DownstreamReply.of(code, message), stage="DATA").line() == line


async def test_maildir_delivery_writes_one_copy_per_recipient(tmp_path: Path) -> None:
    """The embedded default behaves like an MDA: Return-Path and Delivered-To per copy."""
    box = MaildirDownstream(tmp_path / "md")
    await box.mail("a@x.gov.vn", size=None, smtputf8=False)
    await box.rcpt("one@lamdong.gov.vn")
    await box.rcpt("two@lamdong.gov.vn")
    reply = await box.data(b"Subject: t\r\n\r\nbody\r\n")
    assert reply.ok
    files = sorted((tmp_path / "md" / "new").iterdir())
    assert len(files) == 2
    contents = sorted(f.read_bytes() for f in files)
    assert contents[0].startswith(b"Return-Path: <a@x.gov.vn>\r\nDelivered-To: one@lamdong.gov.vn")


async def test_replies_injected_before_the_downstream_tls_handshake_are_discarded(
    tmp_path: Path,
) -> None:
    """STARTTLS injection towards the downstream (the other side of CVE-2011-0411): someone on
    the path appends replies to the downstream's "220 go ahead". They must be dropped, not read
    as the first replies inside TLS, which would pair every later command with the wrong
    answer (a refused recipient taken as accepted)."""
    import ssl

    from test_tls_and_audit import self_signed

    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    seen: list[tuple[bool, bytes]] = []

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 ds.test ESMTP\r\n")
        tls = False
        while line := await reader.readline():
            command = line.strip().upper()
            seen.append((tls, command.split(b":")[0]))
            if command.startswith(b"EHLO"):
                writer.write(
                    b"250-ds.test\r\n" + (b"250 8BITMIME\r\n" if tls else b"250 STARTTLS\r\n")
                )
            elif command == b"STARTTLS":
                writer.write(b"220 2.0.0 go ahead\r\n250 2.1.0 injected\r\n250 2.1.5 injected\r\n")
                await writer.drain()
                await writer.start_tls(context)
                tls = True
            elif command.startswith(b"MAIL"):
                writer.write(b"250 2.1.0 sender ok\r\n")
            elif command.startswith(b"RCPT"):
                writer.write(b"550 5.1.1 no such user\r\n")
            else:
                writer.write(b"221 2.0.0 bye\r\n")
                break
        writer.close()

    server = await asyncio.start_server(session, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    config = DownstreamConfig(
        "smtp", host="127.0.0.1", port=port, timeout=5, starttls="opportunistic"
    )
    relay = SmtpDownstream(config)
    try:
        mail = await relay.mail("a@x.gov.vn", size=None, smtputf8=False)
        rcpt = await relay.rcpt("nobody@lamdong.gov.vn")
    finally:
        await relay.close()
        server.close()
    assert (mail.code, mail.text) == (250, "2.1.0 sender ok")
    assert rcpt.code == 550  # not the injected 250
    commands = [(tls, c) for tls, c in seen if c.startswith((b"MAIL", b"RCPT"))]
    assert commands == [(True, b"MAIL FROM"), (True, b"RCPT TO")]  # inside TLS


async def test_the_downstream_watch_sees_a_downstream_go_and_come_back() -> None:
    """/health's view of the downstream: unknown before the first check, unreachable (why)
    while nothing answers, ok once it greets; the probe leaves no transaction behind."""
    handler = RecordingHandler()
    port = free_port()
    watch = DownstreamWatch(DownstreamConfig("smtp", host="127.0.0.1", port=port, timeout=5))
    assert watch.health() == "unknown"
    assert await watch.check() is not None
    assert watch.health().startswith(f"unreachable: smtp://127.0.0.1:{port}: ")
    server = await asyncio.get_running_loop().create_server(
        lambda: SMTP(handler, hostname="ds.test"), "127.0.0.1", port
    )
    try:
        assert await watch.check() is None
        assert watch.health() == "ok"
        assert handler.messages == []
    finally:
        server.close()


async def test_the_maildir_probe_makes_a_maildir_delivery_can_use(tmp_path: Path) -> None:
    """Probing a Maildir that does not exist yet makes it whole (cur, new, tmp): a bare folder
    would make every later delivery fail."""
    box = tmp_path / "var" / "maildir"
    assert await probe(DownstreamConfig("maildir", maildir=box)) is None
    assert sorted(p.name for p in box.iterdir()) == ["cur", "new", "tmp"]
    session = MaildirDownstream(box)
    await session.mail("a@lamdong.gov.vn", size=None, smtputf8=False)
    await session.rcpt("b@lamdong.gov.vn")
    assert (await session.data(b"Subject: x\r\n\r\nbody\r\n")).code == 250
    (box / "tmp").chmod(0o500)
    try:
        if os.geteuid() != 0:  # root may write anywhere
            assert await probe(DownstreamConfig("maildir", maildir=box)) is not None
    finally:
        (box / "tmp").chmod(0o700)
