"""The milter front-end: Postfix (``smtpd_milters``) and Sendmail ask the gateway at each stage.

The MTA keeps the SMTP session and the queue; the gateway is asked at MAIL FROM, at each RCPT
TO and at the end of the message, and answers continue, or a refusal with the same reason
code and text as the proxy gives. Each answer comes from the one transaction
(:mod:`gateway.transaction`): this module only translates the milter protocol (version 6, as
Postfix and Sendmail speak it; the wire format is :mod:`kilter.protocol`'s) to and from it.

What the milter is told and uses:

- the client's address (``Connect``) and ``HELO`` name; whether the session is TLS
  (``{tls_version}``);
- the login of an authenticated client (``{auth_authen}``, sent with MAIL FROM): an officer
  submitting mail on port 587 or 465. It is recorded, and lets the officer relay to any
  recipient; the rules judge the message as any other;
- the message as header fields and body chunks, put back together as it was received.

At the end of the message, in this order: the verdict; on acceptance our
``Authentication-Results:`` field is added and any field that forges ours is removed; the
notice is sent; the record is committed; only then does the MTA hear the answer. A record
that cannot be written answers ``451 4.3.0 [store.unavailable]``: the MTA tempfails the
message, so nothing is accepted without a record. A session the MTA aborts (RSET, a client
that goes away) records its open transaction as abandoned.
"""

from __future__ import annotations

import asyncio
import contextlib
from ipaddress import IPv4Address, IPv6Address
from typing import TYPE_CHECKING, Any

from kilter.protocol.buffer import SimpleBuffer
from kilter.protocol.core import FilterProtocol
from kilter.protocol.messages import (
    Abort,
    ActionFlags,
    AddHeader,
    Body,
    ChangeHeader,
    Close,
    Connect,
    Continue,
    EndOfHeaders,
    EndOfMessage,
    EnvelopeFrom,
    EnvelopeRecipient,
    Header,
    Helo,
    Macro,
    Message,
    Negotiate,
    ProtocolFlags,
    ReplyCode,
    Stage,
)

from gateway.logs import get_logger
from gateway.message import forged_headers
from gateway.transaction import Client, Transaction

if TYPE_CHECKING:
    from gateway.judge import Judge
    from gateway.metrics import Metrics
    from gateway.notices import Notifier
    from gateway.replies import Reply
    from gateway.store import AuditLog

__all__ = ["MilterServer"]

_BUFFER = 2 * 1024 * 1024  # one milter packet is at most 64 KB of body (we ask for no more)
_READ = 256 * 1024
# What we ask the MTA to send with each stage (it sends what it knows).
_MACROS = {
    Stage.CONNECT: ["j", "{daemon_name}"],
    Stage.HELO: ["{tls_version}"],
    Stage.ENVELOPE_FROM: ["{auth_authen}", "{auth_type}", "{tls_version}"],
    Stage.END_MESSAGE: ["i"],
}
# What we may do to a message: add our result, remove fields that forge it.
_ACTIONS = ActionFlags.ADD_HEADERS | ActionFlags.CHANGE_HEADERS | ActionFlags.SETSYMLIST
# Header values with their leading space (the message is rebuilt as it was), and no reply to
# each header field or body chunk where the MTA allows it (fewer round trips).
_WANTED = ProtocolFlags.HEADER_LEADING_SPACE | ProtocolFlags.NR_HEADER | ProtocolFlags.NR_BODY


class MilterServer:
    """Serves the milter protocol for one gateway: its judge, store, notices and metrics."""

    def __init__(
        self,
        judge: Judge,
        audit: AuditLog,
        notifier: Notifier | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.judge = judge
        self.audit = audit
        self.notifier = notifier
        self.metrics = metrics
        self.log = get_logger()
        self.sessions: dict[asyncio.Task[Any], _Session] = {}

    def busy(self) -> bool:
        """A transaction is open on some MTA connection."""
        return any(session.txn is not None for session in self.sessions.values())

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One MTA connection: its SMTP sessions, one after another, until it closes."""
        task = asyncio.current_task()
        assert task is not None
        session = self.sessions[task] = _Session(self, writer)
        try:
            await session.run(reader)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:
            self.log.exception("milter.exception")
        finally:
            await session.finish()
            self.sessions.pop(task, None)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()


class _Session:
    """The state of one MTA connection: the client, the macros, the open transaction."""

    def __init__(self, server: MilterServer, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.writer = writer
        self.proto = FilterProtocol(abort_on_unknown=True)
        self.macros: dict[str, str] = {}
        self.ip = "127.0.0.1"
        self.helo = ""
        self.txn: Transaction | None = None
        self.leading_space = False  # header values come with the space after the colon
        self.actions = ActionFlags.NONE  # what the MTA lets us change
        self.parts: list[bytes] = []  # the message so far, as received
        self.size = 0

    async def run(self, reader: asyncio.StreamReader) -> None:
        buffer = SimpleBuffer(_BUFFER)
        while True:
            data = await reader.read(min(_READ, buffer.available))
            if not data:
                return
            buffer[:] = data
            for message in self.proto.read_from(buffer):
                answer = await self.on(message)
                if isinstance(message, Close):
                    return
                if self.proto.needs_response(message):
                    for part in answer or [Continue()]:
                        self.send(part)
                    await self.writer.drain()

    def send(self, message: Message) -> None:
        buffer = SimpleBuffer(64 * 1024)  # our answers are a header field or a reply line
        self.proto.write_to(buffer, message)  # type: ignore[arg-type]
        self.writer.write(buffer[:].tobytes())

    async def on(self, message: Message) -> list[Message] | None:
        """Our answer to ``message`` (None: continue); the last element is the verdict."""
        match message:
            case Negotiate():
                return [self._negotiate(message)]
            case Macro():
                if message.stage == EnvelopeFrom.ident:
                    # Each MAIL FROM says afresh who is logged in: never keep an earlier
                    # session's login (an MTA may reuse the connection for another client).
                    for name in _MACROS[Stage.ENVELOPE_FROM]:
                        self.macros.pop(name, None)
                self.macros.update(message.macros)
            case Connect():
                address = message.address
                if isinstance(address, (IPv4Address, IPv6Address)):
                    self.ip = str(address)
            case Helo():
                self.helo = message.hostname
            case EnvelopeFrom():
                return await self._mail(message)
            case EnvelopeRecipient():
                return self._rcpt(message)
            case Header():
                self._header(message)
            case EndOfHeaders():
                self._add(b"\r\n")  # the blank line between the header and the body
            case Body():
                self._add(bytes(message.content))
            case EndOfMessage():
                self._add(bytes(message.content))
                return await self._end_of_message()
            case Abort():
                await self._abandon()
            case Close():
                await self._abandon()
        return None

    def _negotiate(self, offer: Negotiate) -> Negotiate:
        flags = offer.protocol_flags & _WANTED
        self.leading_space = ProtocolFlags.HEADER_LEADING_SPACE in flags
        self.actions = offer.action_flags & _ACTIONS
        if ActionFlags.CHANGE_HEADERS not in self.actions:
            # Then a forged Authentication-Results naming us would stay in the message.
            self.server.log.warning("milter.cannot_remove_headers", offered=str(offer.action_flags))
        return Negotiate(
            6,
            self.actions,
            flags,
            _MACROS if ActionFlags.SETSYMLIST in offer.action_flags else {},
        )

    # -- the envelope ------------------------------------------------------------------------

    async def _mail(self, message: EnvelopeFrom) -> list[Message] | None:
        await self._abandon()  # a new MAIL FROM ends what was open (Postfix aborts first)
        sender = bytes(message.sender).decode("utf-8", "replace").strip().strip("<>")
        options = [bytes(a).decode("utf-8", "replace").upper() for a in message.arguments]
        client = Client(
            self.ip,
            helo=self.helo,
            tls=bool(self.macros.get("{tls_version}")),
            login=self.macros.get("{auth_authen}", ""),
        )
        txn = Transaction(self.server.judge, client, sender, smtputf8="SMTPUTF8" in options)
        if txn.outcome is not None:  # the sender refused before anything else
            await txn.record_quietly(self.server.audit)
            assert txn.outcome.reply is not None
            return [_reply(txn.outcome.reply)]
        self.txn = txn
        return None

    def _rcpt(self, message: EnvelopeRecipient) -> list[Message] | None:
        txn = self.txn
        if txn is None:  # pragma: no cover - the MTA sends RCPT only after a MAIL we took
            return None
        address = bytes(message.recipient).decode("utf-8", "replace").strip().strip("<>")
        refused = txn.rcpt(address)
        if refused is not None:
            return [_reply(refused)]
        txn.recipient_accepted(address)
        return None

    # -- the message -------------------------------------------------------------------------

    def _header(self, message: Header) -> None:
        value = bytes(message.value)
        if not self.leading_space:  # the MTA took the space after the colon off: put it back
            value = b" " + value
        self._add(message.name.encode("utf-8", "replace") + b":" + value + b"\r\n")

    def _add(self, data: bytes) -> None:
        """Keep ``data`` of the message, up to the size limit (beyond it, only count)."""
        self.size += len(data)
        if self.txn is not None and self.size > self.txn.config.max_message_size:
            self.parts.clear()
        else:
            self.parts.append(data)

    async def _end_of_message(self) -> list[Message]:
        txn = self.txn
        if txn is None:  # pragma: no cover - the MTA sends a message only after a MAIL we took
            return [Continue()]
        raw = b"".join(self.parts)
        answer: list[Message] = []
        try:
            if self.size > txn.config.max_message_size:
                txn.data_refused("message.too_large")
            elif txn.data_limit(raw) is None:
                judgement = await txn.judge(raw)
                for error in judgement.decision.errors:
                    self.server.log.error("check.exception", decision_id=txn.id, traceback=error)
                if txn.outcome is None:
                    answer = self._accept(txn)
                    txn.delivered()  # the MTA queues it: the milter has no downstream
        except Exception:
            self.server.log.exception(
                "milter.exception", stage="end-of-message", decision_id=txn.id
            )
            txn.failed("internal.check_error")
            answer = []
        self.txn = None
        self._reset()
        reply, recorded = await txn.conclude(self.server.audit, self.server.notifier)
        if recorded and txn.end().verdict == "accept":
            return [*answer, Continue()]
        return [_reply(reply)]

    def _accept(self, txn: Transaction) -> list[Message]:
        """Our result added, and the fields that forge it removed (by their place among the
        fields of the same name, counted from 1, as the milter protocol counts)."""
        assert txn.judgement is not None
        parsed = txn.judgement.parsed  # as judged: not parsed a second time
        assert parsed is not None
        edits: list[Message] = []
        for forged in forged_headers(parsed, txn.config.hostname):
            if ActionFlags.CHANGE_HEADERS not in self.actions:
                break
            index = 1 + sum(
                1 for h in parsed.headers if h.lname == forged.lname and h.start < forged.start
            )
            edits.append(ChangeHeader(index, forged.name, b""))
        if ActionFlags.ADD_HEADERS in self.actions:
            name, _, value = txn.authentication_results().partition(":")
            edits.append(AddHeader(name, value.strip().replace("\r\n", "\n").encode("utf-8")))
        return edits

    async def _abandon(self) -> None:
        txn, self.txn = self.txn, None
        self._reset()
        if txn is not None:
            txn.end()
            await txn.record_quietly(self.server.audit)

    def _reset(self) -> None:
        self.parts = []
        self.size = 0

    async def finish(self) -> None:
        """The MTA went away: record what was open."""
        await self._abandon()


def _reply(reply: Reply) -> ReplyCode:
    """A refusal for the MTA to give, code and text as the proxy would give them."""
    return ReplyCode(reply.line().encode("ascii", "replace") + b"\0")
