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
import socket
from ipaddress import IPv4Address, IPv6Address
from typing import TYPE_CHECKING, Any

from kilter.protocol.core import FilterProtocol
from kilter.protocol.exceptions import InsufficientSpace
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

__all__ = ["MilterConnection", "MilterServer", "negotiate"]

# One packet from the MTA is at most 64 KB of body (we ask for no more), or one header field
# (Postfix's header_size_limit: 100 KB by default).
_BUFFER = 2 * 1024 * 1024
_READ = 256 * 1024
# Postfix writes the events we do not answer (NR_*) as small packets, one after another, and
# does not turn off Nagle's algorithm: each waits for the ACK of the one before, which the
# kernel delays by up to 40 ms when we have nothing to send back. Measured through Postfix,
# one session: 20 messages a second, 171 with an ACK for every read (Linux's TCP_QUICKACK,
# which the kernel turns off again by itself, so it is set after each read).
_QUICKACK = getattr(socket, "TCP_QUICKACK", None)
_OUT = 256 * 1024  # our answer: a reply line, or our result and the forged fields removed
# What we ask the MTA to send with each stage (it sends what it knows).
_MACROS = {
    Stage.CONNECT: ["j", "{daemon_name}"],
    Stage.HELO: ["{tls_version}"],
    Stage.ENVELOPE_FROM: ["{auth_authen}", "{auth_type}", "{tls_version}"],
    Stage.END_MESSAGE: ["i"],
}
# What we may do to a message: add our result, remove fields that forge it.
_ACTIONS = ActionFlags.ADD_HEADERS | ActionFlags.CHANGE_HEADERS | ActionFlags.SETSYMLIST
# Header values with their leading space (the message is rebuilt as it was). Where the MTA
# allows it (Postfix and Sendmail do), no reply to the stages at which we never refuse, and
# neither the DATA command nor unknown commands sent at all: each reply is a round trip
# that the MTA's SMTP process waits for, for every message.
_WANTED = (
    ProtocolFlags.HEADER_LEADING_SPACE
    | ProtocolFlags.NR_CONNECT
    | ProtocolFlags.NR_HELO
    | ProtocolFlags.NR_HEADER
    | ProtocolFlags.NR_END_OF_HEADERS
    | ProtocolFlags.NR_BODY
    | ProtocolFlags.NO_DATA
    | ProtocolFlags.NO_UNKNOWN
)


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
        """A transaction is open on some MTA connection, or an answer is being made (a
        message's verdict, its record, the reply): closing then would lose the reply after
        the record was written, and the MTA would tempfail a message recorded as decided."""
        return any(s.txn is not None or s.answering for s in self.sessions.values())

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


def negotiate(offer: Negotiate) -> Negotiate:
    """Our answer to the MTA's offer: what we ask of what it offers (protocol version 6)."""
    actions = offer.action_flags & _ACTIONS
    macros = _MACROS if ActionFlags.SETSYMLIST in offer.action_flags else {}
    return Negotiate(6, actions, offer.protocol_flags & _WANTED, macros)


class MilterConnection:
    """The wire side of one MTA connection: reads the MTA's packets, hands each event to
    :meth:`on`, and sends the answer where one is due, in one write. What the events mean is
    the subclass's (:class:`_Session`: the gateway's transaction; bench/chain.py: nothing)."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.proto = FilterProtocol(abort_on_unknown=True)
        self.answering = False  # from an event's arrival to its answer's sending

    async def on(self, message: Message) -> list[Message] | None:
        """The answer to ``message`` (None: continue); the last element is the verdict."""
        raise NotImplementedError

    async def run(self, reader: asyncio.StreamReader) -> None:
        """Until the MTA closes the connection (or says Close)."""
        buffer, out = _Buffer(_BUFFER), _Buffer(_OUT)
        sock = self.writer.get_extra_info("socket")
        while True:
            data = await reader.read(min(_READ, buffer.available))
            if not data:
                return
            if _QUICKACK is not None and sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
            buffer[:] = data
            for message in self.proto.read_from(buffer):
                self.answering = True
                answer = await self.on(message)
                if isinstance(message, Close):
                    return
                if self.proto.needs_response(message):
                    for part in answer or [Continue()]:
                        self.proto.write_to(out, part)  # type: ignore[arg-type]
                    self.writer.write(bytes(out[:]))  # the answer and its edits: one write
                    del out[:]
                    await self.writer.drain()
                self.answering = False


class _Session(MilterConnection):
    """One MTA connection to the gateway: the client, the macros, the open transaction."""

    def __init__(self, server: MilterServer, writer: asyncio.StreamWriter) -> None:
        super().__init__(writer)
        self.server = server
        self.macros: dict[str, str] = {}
        self.ip = "127.0.0.1"
        self.helo = ""
        self.txn: Transaction | None = None
        self.leading_space = False  # header values come with the space after the colon
        self.actions = ActionFlags.NONE  # what the MTA lets us change
        self.parts: list[bytes] = []  # the message so far, as received
        self.size = 0

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
        answer = negotiate(offer)
        self.leading_space = ProtocolFlags.HEADER_LEADING_SPACE in answer.protocol_flags
        self.actions = answer.action_flags
        if ActionFlags.CHANGE_HEADERS not in self.actions:
            # Then a forged Authentication-Results naming us would stay in the message.
            self.server.log.warning("milter.cannot_remove_headers", offered=str(offer.action_flags))
        return answer

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


class _Buffer:
    """kilter's ``FixedSizeBuffer`` read from the front, as the protocol reads it: taking a
    packet off moves an offset, where kilter's ``SimpleBuffer`` moves everything after it
    (for each packet, the size of the buffer). It starts small and grows up to ``capacity``
    (a fresh 2 MB for every connection would cost more than the rest of a short session);
    what is left is moved to the front only when new data would not fit behind it."""

    __slots__ = ("buffer", "capacity", "end", "start")

    def __init__(self, capacity: int, initial: int = 16 * 1024) -> None:
        self.capacity = capacity
        self.buffer = bytearray(min(initial, capacity))
        self.start = self.end = 0  # the data is buffer[start:end]

    def __len__(self) -> int:
        return self.capacity

    @property
    def filled(self) -> int:
        return self.end - self.start

    @property
    def available(self) -> int:
        return self.capacity - self.filled

    def __getitem__(self, items: slice) -> memoryview:
        first, last, _ = items.indices(self.filled)
        return memoryview(self.buffer)[self.start + first : self.start + max(first, last)]

    def __delitem__(self, items: slice) -> None:
        first, last, step = items.indices(self.filled)
        if step != 1 or (first != 0 and last != self.filled):
            raise ValueError("buffer __delitem__: only a head or a tail may be deleted")
        if first == 0 and last >= self.filled:
            self.start = self.end = 0
        elif first == 0:
            self.start += last
        else:
            self.end = self.start + first

    def __setitem__(self, items: slice, data: bytes) -> None:
        if items.start not in (None, self.filled) or items.step not in (None, 1):
            raise ValueError("buffer __setitem__: only appends")
        self.get_free(len(data))[:] = data

    def get_free(self, size: int) -> memoryview:
        if size > self.available:
            raise InsufficientSpace
        if self.end + size > len(self.buffer):
            # Move what is left to the front, of a larger buffer if need be: a new one, for a
            # message may still hold a view of the old (kilter's views are released, but a
            # resize under a view would raise).
            filled = self.filled
            if filled + size > len(self.buffer):
                grown = bytearray(min(self.capacity, max(2 * len(self.buffer), filled + size)))
            else:
                grown = self.buffer
            grown[:filled] = self.buffer[self.start : self.end]
            self.buffer, self.start, self.end = grown, 0, filled
        self.end += size
        return memoryview(self.buffer)[self.end - size : self.end]


def _reply(reply: Reply) -> ReplyCode:
    """A refusal for the MTA to give, code and text as the proxy would give them."""
    return ReplyCode(reply.line().encode("ascii", "replace") + b"\0")
