"""The downstream client on its own: replies passed back as given, stale sessions recovered."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP
from conftest import RecordingHandler, free_port

from gateway.config import DownstreamConfig
from gateway.relay import DownstreamError, DownstreamReply, MaildirDownstream, SmtpDownstream


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
        (554, "bad\x00\x1b[31m", "554 4.0.0 bad[31m"),
    ],
)
def test_downstream_replies_are_cleaned_to_one_printable_line(
    code: int, message: str, line: str
) -> None:
    """Multi-line or control-laden downstream text reaches the client as one safe line."""
    assert DownstreamReply.of(code, message).line("4.0.0") == line


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
