"""The SMTP side: aiosmtpd hooks that proxy each transaction to the downstream in real time.

Per client session: EHLO/HELO is answered locally; MAIL FROM opens (or reuses) the downstream
session and forwards the sender; each RCPT TO passes the built-in relay check, then goes to
the downstream, whose answer reaches the client for that recipient only; DATA is judged, and
then either refused (the downstream transaction is reset) or sent on, the client hearing 250
only after the downstream did. Exactly one decision record is written per transaction, before
the final reply; a transaction that ends without DATA (RSET, QUIT, disconnect, a DATA that
aiosmtpd refused for size) is recorded too.

Each hook's work runs as a task shielded from cancellation and serialised per session: a
client that disconnects mid-DATA cancels aiosmtpd's reader, not our delivery-and-record step,
so a message the downstream took is always recorded (the client, having seen no 250, retries:
a duplicate at worst, never a loss).

aiosmtpd's stock error reply ("500 Error: (ValueError) ...") would show internals to the
client; :meth:`GatewayHandler.handle_exception` answers ``451 4.3.0`` instead and logs the
traceback. :class:`GatewaySMTP` adds RFC 3463 enhanced status codes to aiosmtpd's own replies,
since we advertise ENHANCEDSTATUSCODES.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, AnyStr, TypeVar
from urllib.parse import unquote

from aiosmtpd.smtp import MISSING, SMTP, TLSSetupException, syntax

from gateway.audit import AuditLog, StoreError
from gateway.dataread import READ_LIMIT, read_data
from gateway.engine import Engine, Judgement, RecipientOutcome, accept_reply
from gateway.ids import new_decision_id
from gateway.logs import get_logger
from gateway.message import auth_methods, strip_our_headers, trace_headers
from gateway.metrics import Metrics
from gateway.notices import Notifier
from gateway.record import build_record
from gateway.relay import DownstreamError, DownstreamReply, DownstreamSession, Relay
from policies import Action

__all__ = ["GatewayHandler", "GatewaySMTP", "add_enhanced_code"]

_HAS_ENHANCED = re.compile(r"^[245]\d\d[ -][245]\.\d{1,3}\.\d{1,3}(\s|$)")
_REPLY = re.compile(r"^([245])(\d\d)([ -])(.*)$", re.DOTALL)
_DEFAULT_ENHANCED = {
    "500": "5.5.2",
    "501": "5.5.4",
    "502": "5.5.1",
    "503": "5.5.1",
    "504": "5.5.4",
    "530": "5.7.0",
    "552": "5.3.4",
    "554": "5.0.0",
    "555": "5.5.4",
    "421": "4.4.2",
}


def add_enhanced_code(status: str) -> str:
    """Insert an RFC 3463 code into a 2xx/4xx/5xx reply that lacks one (3xx have none)."""
    if _HAS_ENHANCED.match(status):
        return status
    m = _REPLY.match(status)
    if not m:
        return status
    klass, rest, sep, text = m.groups()
    code = klass + rest
    enhanced = _DEFAULT_ENHANCED.get(code, f"{klass}.0.0")
    return f"{code}{sep}{enhanced} {text}"


T = TypeVar("T")
# <dot-atom@domain> and what follows (the parameters), as aiosmtpd's _getaddr returns them.
_SIMPLE_PATH = re.compile(
    r"[ \t]*<([A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*)"
    r">[ \t]*(?![(\s])(.*)",  # a comment or other white space after it: aiosmtpd's parser
    re.DOTALL,
)
_SHUTDOWN_REPLY = b"421 4.3.2 Service shutting down, try again later"
_XFORWARD_ATTRS = ("NAME", "ADDR", "PORT", "PROTO", "HELO", "IDENT", "SOURCE")


class GatewaySMTP(SMTP):
    """aiosmtpd's protocol with enhanced status codes, XFORWARD, and transaction safety."""

    line_length_limit = READ_LIMIT  # the stream's buffer limit; DATA lines: dataread.MAX_LINE
    _in_ehlo = False
    _greeted = False  # set just before the 220 greeting is sent
    _early_talker = False
    _in_command = True  # from a command's arrival to its final reply (and before the greeting)
    _shutdown_requested = False
    _errors = 0
    state: _SessionState | None = None

    def _reset_timeout(self, duration: float | None = None) -> None:
        # aiosmtpd calls this as each command line arrives, just before handling it.
        self._in_command = True
        super()._reset_timeout(duration)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Register the session (for shutdown), or turn it away when there are too many."""
        first = self.transport is None  # STARTTLS calls this again on the same object
        super().connection_made(transport)
        handler = self.event_handler
        if not isinstance(handler, GatewayHandler):
            return
        if first and handler.too_many(self):
            self.say_and_close(b"421 4.7.0 Too many connections, try again later", "sessions")
            return
        handler.protocols.add(self)
        if handler.metrics is not None:
            handler.metrics.refresh()

    def data_received(self, data: bytes) -> None:
        """Note a client that talks before our greeting (RFC 5321 4.3.1: it must wait)."""
        if not self._greeted:
            self._early_talker = True
        super().data_received(data)

    async def _handle_client(self) -> None:
        """Wait ``limits.greet_pause``; a client that spoke meanwhile gets 554 and is closed.

        Spam engines pipeline blindly without waiting for the greeting; real MTAs never do.
        """
        handler = self.event_handler
        assert isinstance(handler, GatewayHandler)
        if handler.engine.config.limits.greet_pause:
            await asyncio.sleep(handler.engine.config.limits.greet_pause)
        if self._early_talker:
            handler.log.warning("smtp.early_talker", client_ip=_peer_ip(self))
            self.say_and_close(
                b"554 5.5.1 Protocol error: talking before the greeting", "early_talker"
            )
            return
        self._greeted = True
        await super()._handle_client()

    def connection_lost(self, error: Exception | None) -> None:
        """Close the downstream session and record any unfinished transaction."""
        super().connection_lost(error)
        handler = self.event_handler
        if isinstance(handler, GatewayHandler):
            handler.protocols.discard(self)
            if handler.metrics is not None:
                handler.metrics.refresh()
            handler.schedule_disconnect(self)

    async def smtp_EHLO(self, hostname: str) -> None:
        """EHLO replies carry keywords, not enhanced codes (RFC 2034 section 3)."""
        self._in_ehlo = True
        try:
            await super().smtp_EHLO(hostname)
        finally:
            self._in_ehlo = False

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's address parser, which raises on some malformed input (``MAIL FROM:<``:
        IndexError in the standard library): that is a syntax error, not a gateway fault.

        The common ``<local@domain>`` (a dot-atom and a plain domain) is taken by a regular
        expression: the standard library's parser costs a tenth of a 4 KB message's CPU.
        """
        simple = _SIMPLE_PATH.match(arg)
        if simple is not None:
            return simple.group(1), simple.group(2)
        try:
            return super()._getaddr(arg)
        except (IndexError, ValueError, TypeError, AttributeError):
            return None, None

    async def smtp_STARTTLS(self, arg: str) -> None:
        """Refuse STARTTLS inside a transaction (RFC 3207: state before TLS is discarded) and
        once TLS is up (a second handshake inside the first is nobody's protocol)."""
        if self.state is not None and self.state.txn is not None:
            await self.push("503 5.5.1 Error: MAIL transaction in progress")
            return
        if self._tls_protocol is not None:
            await self.push("554 5.5.1 Error: TLS already active")
            return
        try:
            await super().smtp_STARTTLS(arg)
        except TLSSetupException as exc:
            # The client gave up during the handshake (or spoke no TLS): its problem, not a
            # gateway fault. Nothing can be said to it in clear text any more: hang up. The
            # TCP transport now belongs to the TLS layer, which will not report the loss: do
            # it here, as aiosmtpd does, or the session would hold its slot for ever.
            handler = self.event_handler
            if isinstance(handler, GatewayHandler):
                handler.log.info("smtp.tls_failed", client_ip=_peer_ip(self))
            if self.transport is not None:
                self.transport.close()
            self.connection_lost(exc)
            return
        # The TLS handshake re-runs connection_made (marking a command in progress) but no
        # greeting follows: the session is between commands again.
        self._in_command = False

    async def smtp_XFORWARD(self, arg: str) -> None:
        """Postfix's XFORWARD: the real client's address and name, from a trusted proxy only."""
        handler = self.event_handler
        if not isinstance(handler, GatewayHandler) or not handler.may_xforward(self):
            await self.push('500 5.5.2 Error: command "XFORWARD" not recognized')
            return
        await self.push(handler.xforward(self, arg or ""))

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        """aiosmtpd's DATA with a bulk reader (see :mod:`gateway.dataread`) and a deadline.

        The whole DATA section must arrive within ``limits.data_timeout`` (a client trickling
        bytes cannot hold a session for ever); a message over the size limit or with a line
        too long is read to its end, then refused and recorded like any other refusal.
        """
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        handler = self.event_handler
        assert isinstance(handler, GatewayHandler)
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        self._reset_timeout(handler.engine.config.limits.data_timeout)
        try:
            data = await read_data(self._reader, max_size=self.data_size_limit)
        except asyncio.IncompleteReadError:
            return  # the client went away mid-DATA: connection_lost records it
        except OSError:
            # The spool could not be written (disk full): the rest of the body must never be
            # read as commands. Say 421 and hang up; connection_lost records the transaction.
            handler.log.error("smtp.spool_failed", exc_info=True)
            self.say_and_close(b"421 4.3.1 Insufficient system storage, closing", "spool")
            return
        self._reset_timeout()
        if data.problem:
            await self.push(await handler.data_refused(self, data.problem))
        else:
            self.envelope.content = self.envelope.original_content = data.content
            status = await self._call_handler_hook("DATA")
            await self.push("250 OK" if status is MISSING else status)
        self._set_post_data_state()  # type: ignore[no-untyped-call]

    async def _call_handler_hook(self, command: str, *args: Any) -> Any:
        """No MAIL, RCPT or DATA work once the connection is closing (after a final 421, the
        commands a client pipelined behind it must not reach the downstream)."""
        if command in ("MAIL", "RCPT", "DATA") and (
            self.transport is None or self.transport.is_closing()
        ):
            return "421 4.3.2 Connection closing"
        return await super()._call_handler_hook(command, *args)

    def _timeout_cb(self) -> None:
        """A session idle past the command timeout, or a DATA past its deadline: say why."""
        self.say_and_close(b"421 4.4.2 Timeout exceeded, closing connection", "timeout")

    async def push(self, status: AnyStr) -> None:
        """Send a reply, adding an enhanced status code after EHLO when it has none.

        Control characters (aiosmtpd quotes an unknown command back as it came, bare CR and
        NUL included) are shown as "?"; nothing is written to a connection already closed
        (a pipelined burst can outlive a 421).
        """
        if self.transport is None or self.transport.is_closing():
            # Yield, so that connection_lost runs and stops aiosmtpd's command loop, which
            # would otherwise work through everything still buffered (up to 128 KB of lines).
            await asyncio.sleep(0)
            return
        if isinstance(status, str):
            if not status.isprintable():
                status = "".join(c if c.isprintable() else "?" for c in status)
            if not self._in_ehlo and self.session is not None and self.session.extended_smtp:
                status_text = add_enhanced_code(status)
            else:
                status_text = status
            if status_text[:1] in ("4", "5") and status_text[3:4] in (" ", ""):
                self._errors += 1
            await super().push(status_text)
            if status_text[3:4] in (" ", ""):  # a final reply line (not 354, not "250-")
                self._in_command = status_text.startswith("354")
                if self._shutdown_requested:
                    self.shut_idle()
                handler = self.event_handler
                if (
                    isinstance(handler, GatewayHandler)
                    and self._errors > handler.engine.config.limits.max_errors
                    and self.transport is not None
                ):
                    # A client that keeps failing is probing or broken: stop listening to it.
                    self.say_and_close(b"421 4.7.0 Too many errors, closing", "errors")
            return
        await super().push(status)

    def shut_idle(self) -> bool:
        """Between transactions, say 421 and close (True); else do so at the next boundary."""
        self._shutdown_requested = True
        state = self.state
        busy = state is not None and (state.txn is not None or state.busy)
        if busy or self._in_command:
            return False
        self.say_and_close(_SHUTDOWN_REPLY, "shutdown")
        return True

    def say_and_close(self, line: bytes, why: str) -> None:
        """Write a last reply, unasked (RFC 5321 allows 421 at any time), and hang up."""
        if self.transport is None:
            return
        handler = self.event_handler
        if isinstance(handler, GatewayHandler) and handler.metrics is not None:
            handler.metrics.closed.labels(why).inc()
        with contextlib.suppress(Exception):  # the client may be gone already
            self._writer.write(line + b"\r\n")
        self.transport.close()


@dataclass
class _Transaction:
    id: str
    when: datetime
    started: float
    mail_from: str
    smtputf8: bool = False
    recipients: list[RecipientOutcome] = field(default_factory=list)


@dataclass
class _SessionState:
    downstream: DownstreamSession
    txn: _Transaction | None = None
    closed: bool = False
    xforward: dict[str, str] = field(default_factory=dict)
    # The session's work (see GatewayHandler._guard): what waits, and the task that runs it.
    work: deque[tuple[Callable[[], Awaitable[Any]], asyncio.Future[Any]]] = field(
        default_factory=deque
    )
    running: bool = False
    runner: asyncio.Task[None] | None = None
    wake: asyncio.Future[None] | None = None

    @property
    def busy(self) -> bool:
        """Work under way or waiting (a DATA being judged, relayed, recorded)."""
        return self.running or bool(self.work)


class GatewayHandler:
    """aiosmtpd handler: relay check, real-time downstream proxying, judging, recording."""

    def __init__(
        self,
        engine: Engine,
        relay: Relay,
        audit: AuditLog,
        notifier: Notifier | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.metrics = metrics
        self.engine = engine
        self.relay = relay
        self.audit = audit
        self.notifier = notifier
        self.log = get_logger()
        self.protocols: set[GatewaySMTP] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- session bookkeeping -------------------------------------------------------------

    def _state(self, server: GatewaySMTP) -> _SessionState:
        # Kept on the protocol object, not aiosmtpd's session: STARTTLS replaces the session.
        if server.state is None:
            server.state = _SessionState(self.relay.session())
        return server.state

    async def _guard(self, server: GatewaySMTP, work: Callable[[], Awaitable[T]]) -> T:
        """Run ``work`` in the session's own task, after the session's earlier work.

        A client that hangs up makes aiosmtpd cancel the coroutine handling it. That must not
        cut a downstream exchange in half (the next reply would answer the wrong command) or
        lose a record: so the work runs elsewhere, to its end, and only the wait for it is
        cancelled. One task per session rather than one per command (a task and a shield for
        each cost more event-loop passes than the rest of a 4 KB message's handling).
        """
        state = self._state(server)
        done: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        state.work.append((work, done))
        if state.runner is None or state.runner.done():
            state.runner = asyncio.ensure_future(self._run_session(state))
            self._tasks.add(state.runner)
            state.runner.add_done_callback(self._tasks.discard)
        elif state.wake is not None and not state.wake.done():
            state.wake.set_result(None)
        return await done

    async def _run_session(self, state: _SessionState) -> None:
        """The session's task: its work in order, each to the end; it ends with the session."""
        loop = asyncio.get_running_loop()
        while True:
            while state.work:
                work, done = state.work.popleft()
                state.running = True
                try:
                    result = await work()
                except asyncio.CancelledError:  # the gateway itself is being torn down
                    for _, waiting in (*state.work, (work, done)):
                        waiting.cancel()
                    state.work.clear()
                    raise
                except Exception as exc:  # handed to the command's handler (451, logged there)
                    if done.done():  # nobody waits: the client went away meanwhile
                        self.log.error("smtp.exception", exc_info=exc)
                    else:
                        done.set_exception(exc)
                else:
                    if not done.done():
                        done.set_result(result)
                finally:
                    state.running = False
            if state.closed:
                return
            state.wake = loop.create_future()
            try:
                await state.wake
            finally:
                state.wake = None

    def _client(self, server: GatewaySMTP) -> tuple[str, str, bool]:
        """Client IP, HELO name and TLS, as forwarded by a trusted proxy where it did."""
        session = server.session
        helo = (session.host_name if session is not None else "") or ""
        forwarded = server.state.xforward if server.state is not None else {}
        ip = forwarded.get("ADDR", _peer_ip(server))
        helo = forwarded.get("HELO", helo)
        return ip, helo, session is not None and session.ssl is not None

    def may_xforward(self, server: GatewaySMTP) -> bool:
        """XFORWARD is accepted only from the configured proxy hosts."""
        return self.engine.config.may_xforward(_peer_ip(server))

    def xforward(self, server: GatewaySMTP, arg: str) -> str:
        """Store XFORWARD attributes (xtext-decoded) for the next transaction."""
        state = self._state(server)
        if state.txn is not None:
            return "503 5.5.1 Error: MAIL transaction in progress"
        pairs = [item.partition("=") for item in arg.split()]
        if not pairs or any(
            not sep or name.upper() not in _XFORWARD_ATTRS for name, sep, _ in pairs
        ):
            return "501 5.5.4 Syntax: XFORWARD attribute=value..."
        for name, _, value in pairs:
            decoded = unquote(value.replace("+", "%"))  # xtext: +HH is a hex-escaped byte
            if decoded in ("[UNAVAILABLE]", "[TEMPUNAVAIL]"):
                state.xforward.pop(name.upper(), None)
                continue
            if name.upper() == "ADDR":
                decoded = decoded.removeprefix("IPv6:")
            state.xforward[name.upper()] = "".join(c for c in decoded if " " < c < "\x7f")
        return "250 2.0.0 Ok"

    async def _write(
        self,
        server: GatewaySMTP,
        txn: _Transaction,
        *,
        verdict: str,
        reasons: list[str],
        reply: str,
        judgement: Judgement | None = None,
        notice: dict[str, Any] | None = None,
    ) -> None:
        ip, helo, tls = self._client(server)
        record = build_record(
            decision_id=txn.id,
            when=txn.when,
            client_ip=ip,
            helo=helo,
            tls=tls,
            mail_from=txn.mail_from,
            recipients=txn.recipients,
            judgement=judgement,
            verdict=verdict,
            reasons=reasons,
            reply=reply,
            policy=self.engine.policy,
            processing_ms=(time.perf_counter() - txn.started) * 1000,
            notice=notice,
        )
        await self.audit.record(record.to_dict())

    async def _record_quietly(
        self, server: GatewaySMTP, txn: _Transaction, verdict: str, reasons: list[str], reply: str
    ) -> None:
        # Used where the client's reply does not depend on the record (a refusal already, or
        # no reply at all); AuditLog has logged the full record if the store failed.
        with contextlib.suppress(StoreError):
            await self._write(server, txn, verdict=verdict, reasons=reasons, reply=reply)

    def _end_transaction(self, state: _SessionState) -> None:
        state.txn = None
        state.xforward.clear()  # XFORWARD attributes last one transaction, as in Postfix

    async def _finish_without_data(self, server: GatewaySMTP) -> None:
        """Record a transaction that ended before its DATA was judged, then reset downstream."""
        state = self._state(server)
        txn = state.txn
        if txn is None:
            return
        refused = [r for r in txn.recipients if not r.accepted]
        if txn.recipients and not any(r.accepted for r in txn.recipients):
            verdict = "reject" if any(r.reply.startswith("5") for r in refused) else "tempfail"
            reasons = list(dict.fromkeys(r.reason for r in refused if r.reason))
            reply = refused[-1].reply
        else:
            verdict, reasons, reply = "abandoned", [], ""
        await self._record_quietly(server, txn, verdict, reasons, reply)
        self._end_transaction(state)
        await state.downstream.rset()

    async def data_refused(self, server: GatewaySMTP, problem: str) -> str:
        """The DATA was refused as it was read (too large, a line too long): record it.

        Returns the reply: the reason table's, with the ref, exactly as ``congvu check`` gives
        it.
        """
        reason = "message.too_large" if problem == "too_much" else "message.line_too_long"

        async def work() -> str:
            state = self._state(server)
            txn = state.txn
            if txn is None:  # pragma: no cover - DATA is only read inside a transaction
                return self.engine.reply(reason)
            line = self.engine.reply(reason, ref=txn.id)
            await self._record_quietly(server, txn, "reject", [reason], line)
            self._end_transaction(state)
            await state.downstream.rset()
            return line

        return await self._guard(server, work)

    def schedule_disconnect(self, server: GatewaySMTP) -> None:
        """Called when the client connection is gone (from a sync protocol callback)."""
        task = asyncio.get_running_loop().create_task(self._disconnect(server))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _disconnect(self, server: GatewaySMTP) -> None:
        state = server.state
        if state is None:
            return

        async def work() -> None:  # after a DATA still being relayed and recorded
            if state.closed:
                return
            state.closed = True
            try:
                await self._finish_without_data(server)
            finally:
                await state.downstream.close()

        await self._guard(server, work)

    async def drain(self) -> None:
        """Wait for in-flight work and clean-ups (used at shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _relay_failed(self, stage: str, exc: DownstreamError) -> None:
        self.log.warning("relay.failed", stage=stage, reason=exc.reason, detail=exc.detail)
        if self.metrics is not None:
            self.metrics.downstream_errors.labels(exc.reason).inc()

    def too_many(self, server: GatewaySMTP) -> bool:
        """Over the concurrent-session limits, in all or from this client address?"""
        limits = self.engine.config.limits
        if len(self.protocols) >= limits.max_sessions:
            return True
        ip = _peer_ip(server)
        config = self.engine.config
        if config.may_xforward(ip) or config.is_trusted(ip):
            return False  # a proxy in front (Postfix) or the district's own servers
        same = sum(1 for p in self.protocols if _peer_ip(p) == ip)
        return same >= limits.max_sessions_per_ip

    # -- SMTP hooks --------------------------------------------------------------------------

    async def handle_HELO(
        self, server: GatewaySMTP, session: Any, envelope: Any, hostname: str
    ) -> str:
        """Answer HELO; a new greeting abandons any open transaction."""
        await self._guard(server, lambda: self._finish_without_data(server))
        session.host_name = hostname
        return f"250 {server.hostname}"

    async def handle_EHLO(
        self, server: GatewaySMTP, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        """Advertise ENHANCEDSTATUSCODES and PIPELINING (and XFORWARD to proxies)."""
        await self._guard(server, lambda: self._finish_without_data(server))
        session.host_name = hostname
        last = responses.pop()  # "250 HELP"
        # aiosmtpd offers AUTH after STARTTLS even with no mechanism behind it.
        responses[:] = [r for r in responses if not r.startswith("250-AUTH")]
        responses += ["250-ENHANCEDSTATUSCODES", "250-PIPELINING"]
        if self.may_xforward(server):
            responses.append("250-XFORWARD NAME ADDR PROTO HELO")
        responses.append(last)
        return responses

    async def handle_MAIL(
        self,
        server: GatewaySMTP,
        session: Any,
        envelope: Any,
        address: str,
        mail_options: list[str],
    ) -> str:
        """Open the downstream transaction; its refusal or absence is the client's answer."""
        return await self._guard(
            server, lambda: self._mail(server, envelope, address, mail_options)
        )

    async def _mail(
        self, server: GatewaySMTP, envelope: Any, address: str, options: list[str]
    ) -> str:
        state = self._state(server)
        await self._finish_without_data(server)
        smtputf8 = "SMTPUTF8" in options
        # aiosmtpd hands the null sender over as "<>"; everywhere else it is "" (no address).
        sender = "" if address == "<>" else address
        txn = _Transaction(
            new_decision_id(), datetime.now(UTC), time.perf_counter(), sender, smtputf8
        )
        refused = self.engine.sender_refusal(sender, smtputf8=smtputf8)
        if refused is not None:
            line = self.engine.reply(refused, ref=txn.id)
            await self._record_quietly(server, txn, "reject", [refused], line)
            return line
        size = next((o.split("=", 1)[1] for o in options if o.startswith("SIZE=")), None)
        ip, helo, _ = self._client(server)
        esmtp = server.session is not None and server.session.extended_smtp
        about = {
            "NAME": state.xforward.get("NAME", "[UNAVAILABLE]"),
            "ADDR": ip,
            "PROTO": state.xforward.get("PROTO", "ESMTP" if esmtp else "SMTP"),
            "HELO": helo,
        }
        try:
            reply = await state.downstream.mail(
                sender,
                size=int(size) if size and size.isdigit() else None,
                smtputf8=smtputf8,
                about=about,
            )
        except DownstreamError as exc:
            self._relay_failed("MAIL", exc)
            line = self.engine.reply(exc.reason, ref=txn.id)
            await self._record_quietly(server, txn, "tempfail", [exc.reason], line)
            return line
        if not reply.ok:
            line = reply.line(f"{reply.code // 100}.0.0")
            await self._record_quietly(
                server, txn, _verdict_of(reply), [_downstream_reason(reply)], line
            )
            return line
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        state.txn = txn
        return "250 2.1.0 Sender ok"

    async def handle_RCPT(
        self,
        server: GatewaySMTP,
        session: Any,
        envelope: Any,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        """Relay check, then the downstream's own answer for this recipient."""
        return await self._guard(
            server, lambda: self._rcpt(server, envelope, address, rcpt_options)
        )

    async def _rcpt(
        self, server: GatewaySMTP, envelope: Any, address: str, options: list[str]
    ) -> str:
        state = self._state(server)
        txn = state.txn
        if txn is None:  # pragma: no cover - aiosmtpd refuses RCPT before MAIL itself
            return "503 5.5.1 Error: need MAIL command"

        def refuse(code: str) -> str:
            line = self.engine.reply(code, ref=txn.id)
            txn.recipients.append(RecipientOutcome(address, False, line, code))
            return line

        ip, _, _ = self._client(server)
        accepted = sum(1 for r in txn.recipients if r.accepted)
        if accepted >= self.engine.config.limits.max_recipients:
            # 452, not 5xx: the client keeps the rest and sends them in another transaction.
            return refuse("message.too_many_recipients")
        refused = self.engine.recipient_refusal(address, ip, smtputf8=txn.smtputf8)
        if refused is not None:
            return refuse(refused)
        try:
            reply = await state.downstream.rcpt(address)
        except DownstreamError as exc:
            self._relay_failed("RCPT", exc)
            return refuse(exc.reason)
        if not reply.ok:
            line = reply.line("5.1.1" if reply.code >= 500 else "4.0.0")
            txn.recipients.append(RecipientOutcome(address, False, line, _downstream_reason(reply)))
            return line
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        line = "250 2.1.5 Recipient ok"
        txn.recipients.append(RecipientOutcome(address, True, line))
        return line

    async def handle_RSET(self, server: GatewaySMTP, session: Any, envelope: Any) -> str:
        """RSET abandons the transaction here and downstream."""
        await self._guard(server, lambda: self._finish_without_data(server))
        return "250 2.0.0 Ok"

    async def handle_QUIT(self, server: GatewaySMTP, session: Any, envelope: Any) -> str:
        """Finish the session cleanly before saying goodbye."""
        task = asyncio.ensure_future(self._disconnect(server))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        await asyncio.shield(task)
        return "221 2.0.0 Bye"

    async def handle_DATA(self, server: GatewaySMTP, session: Any, envelope: Any) -> str:
        """Judge, then refuse or relay; record; only then reply."""
        return await self._guard(server, lambda: self._data(server, envelope))

    async def _data(self, server: GatewaySMTP, envelope: Any) -> str:
        state = self._state(server)
        txn = state.txn
        if txn is None:  # pragma: no cover - aiosmtpd refuses DATA before RCPT itself
            return "503 5.5.1 Error: need RCPT command"
        judgement: Judgement | None = None
        try:
            ip, helo, tls = self._client(server)
            raw: bytes = envelope.original_content
            judgement = await self.engine.judge(
                raw,
                mail_from=txn.mail_from,
                recipients=tuple(envelope.rcpt_tos),
                client_ip=ip,
                helo=helo,
                tls=tls,
                now=txn.when,
            )
            for error in judgement.decision.errors:
                self.log.error("check.exception", decision_id=txn.id, traceback=error)
            decision = judgement.decision
            if decision.action is not Action.ACCEPT:
                await state.downstream.rset()
                assert decision.reply is not None
                verdict, reasons = decision.action.value, list(decision.reasons)
                line = decision.reply.line(ref=txn.id)
            else:
                verdict, reasons, line = await self._relay(server, state, txn, judgement)
        except Exception:
            self.log.exception("smtp.exception", stage="DATA", decision_id=txn.id)
            await state.downstream.rset()
            verdict, reasons = "tempfail", ["internal.check_error"]
            line = self.engine.reply("internal.check_error", ref=txn.id)
        notice = await self._notify(judgement, txn, verdict, line)
        try:
            await self._write(
                server,
                txn,
                verdict=verdict,
                reasons=reasons,
                reply=line,
                judgement=judgement,
                notice=notice,
            )
        except StoreError:
            if verdict == "accept":
                # Delivered but not recorded: 4xx makes the client retry (a duplicate), which
                # is the lesser harm than a delivery nobody can account for.
                self.log.error("store.accepted_unrecorded", decision_id=txn.id)
            return self.engine.reply("store.unavailable", ref=txn.id)
        finally:
            self._end_transaction(state)
        return line

    async def _notify(
        self, judgement: Judgement | None, txn: _Transaction, verdict: str, line: str
    ) -> dict[str, Any] | None:
        """Tell an internal sender what was refused (or will be); never changes the answer."""
        if (
            self.notifier is None
            or judgement is None
            or judgement.facts is None
            or judgement.parsed is None
            or verdict not in ("accept", "reject")
            # An advisory says "delivered": not when the downstream refused after all.
            or (verdict == "reject" and judgement.decision.action is Action.ACCEPT)
        ):
            return None
        try:
            return await self.notifier.notify(
                facts=judgement.facts,
                decision=judgement.decision,
                parsed=judgement.parsed,
                policy=self.engine.policy,
                reply=line,
                decision_id=txn.id,
                when=txn.when,
            )
        except Exception as exc:
            self.log.exception("notice.failed", decision_id=txn.id)
            return {
                "kind": None,
                "sent": False,
                "to": None,
                "message_id": None,
                "reason": f"notice failed: {type(exc).__name__}",
            }

    async def _relay(
        self, server: GatewaySMTP, state: _SessionState, txn: _Transaction, judgement: Judgement
    ) -> tuple[str, list[str], str]:
        decision = judgement.decision
        assert judgement.parsed is not None
        ip, helo, tls = self._client(server)
        monitor = decision.monitor_reasons
        head = trace_headers(
            hostname=self.engine.config.hostname,
            decision_id=txn.id,
            helo=helo,
            client_ip=ip,
            tls=tls,
            esmtp=bool(server.session is not None and server.session.extended_smtp),
            recipients=tuple(r.address for r in txn.recipients if r.accepted),
            result="neutral" if monitor else "pass",
            reason=f"monitor: would refuse {' '.join(monitor)}" if monitor else "",
            when_utc=txn.when,
            methods=auth_methods(judgement.facts) if judgement.facts else (),
        )
        body = strip_our_headers(judgement.parsed, self.engine.config.hostname)
        try:
            reply = await state.downstream.data(head + body)
        except DownstreamError as exc:
            self._relay_failed("DATA", exc)
            line = self.engine.reply(exc.reason, ref=txn.id)
            return "tempfail", [exc.reason], line
        if reply.ok:
            return "accept", [], accept_reply(txn.id)
        line = reply.line(f"{reply.code // 100}.0.0")
        return _verdict_of(reply), [_downstream_reason(reply)], line

    async def handle_exception(self, error: Exception) -> str:
        """Any exception escaping a hook: log it, answer 451 4.3.0, show the client nothing."""
        with contextlib.suppress(Exception):  # the reply must not depend on logging
            self.log.error("smtp.exception", exc_info=error)
        return self.engine.reply("internal.check_error")


def _peer_ip(server: GatewaySMTP) -> str:
    """The connecting address itself (not an XFORWARD claim)."""
    session = server.session
    peer = session.peer if session is not None else None
    if isinstance(peer, tuple):
        return str(peer[0])
    return "" if peer is None else str(peer)


def _downstream_reason(reply: DownstreamReply) -> str:
    if reply.reason:
        return reply.reason
    return "downstream.refused" if reply.code >= 500 else "downstream.deferred"


def _verdict_of(reply: DownstreamReply) -> str:
    return Action.REJECT.value if reply.code >= 500 else Action.TEMPFAIL.value
