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
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, AnyStr, TypeVar
from urllib.parse import unquote

from aiosmtpd.smtp import MISSING, SMTP, TLSSetupException, syntax

from gateway import replies
from gateway.dataread import READ_LIMIT, read_data
from gateway.judge import Judge
from gateway.logs import get_logger
from gateway.metrics import Metrics
from gateway.notices import Notifier
from gateway.relay import DownstreamError, DownstreamSession, Relay
from gateway.replies import Reply, add_enhanced_code
from gateway.store import AuditLog, Journal
from gateway.transaction import Client, Transaction

__all__ = ["GatewayHandler", "GatewaySMTP"]

T = TypeVar("T")
# <dot-atom@domain> and what follows (the parameters), as aiosmtpd's _getaddr returns them.
_SIMPLE_PATH = re.compile(
    r"[ \t]*<([A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*)"
    r">[ \t]*(?![(\s])(.*)",  # a comment or other white space after it: aiosmtpd's parser
    re.DOTALL,
)
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
            self.say_and_close(replies.TOO_MANY_SESSIONS, "sessions")
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
        if handler.judge.config.limits.greet_pause:
            await asyncio.sleep(handler.judge.config.limits.greet_pause)
        if self._early_talker:
            handler.log.warning("smtp.early_talker", client_ip=_peer_ip(self))
            self.say_and_close(replies.EARLY_TALKER, "early_talker")
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
            await self.push(replies.IN_TRANSACTION.line())
            return
        if self._tls_protocol is not None:
            await self.push(replies.TLS_ACTIVE.line())
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
            await self.push(replies.XFORWARD_UNKNOWN.line())
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
            await self.push(replies.DATA_NEEDS_RCPT.line())
            return
        if arg:
            await self.push(replies.DATA_SYNTAX.line())
            return
        handler = self.event_handler
        assert isinstance(handler, GatewayHandler)
        await self.push(replies.START_DATA.line())
        self._reset_timeout(handler.judge.config.limits.data_timeout)
        try:
            data = await read_data(self._reader, max_size=self.data_size_limit)
        except asyncio.IncompleteReadError:
            return  # the client went away mid-DATA: connection_lost records it
        except OSError:
            # The spool could not be written (disk full): the rest of the body must never be
            # read as commands. Say 421 and hang up; connection_lost records the transaction.
            handler.log.error("smtp.spool_failed", exc_info=True)
            self.say_and_close(replies.NO_SPOOL, "spool")
            return
        self._reset_timeout()
        if data.problem:
            await self.push(await handler.data_refused(self, data.problem))
        else:
            self.envelope.content = self.envelope.original_content = data.content
            status = await self._call_handler_hook("DATA")
            await self.push(replies.DATA_OK.line() if status is MISSING else status)
        self._set_post_data_state()  # type: ignore[no-untyped-call]

    async def _call_handler_hook(self, command: str, *args: Any) -> Any:
        """No MAIL, RCPT or DATA work once the connection is closing (after a final 421, the
        commands a client pipelined behind it must not reach the downstream)."""
        if command in ("MAIL", "RCPT", "DATA") and (
            self.transport is None or self.transport.is_closing()
        ):
            return replies.CLOSING.line()
        return await super()._call_handler_hook(command, *args)

    def _timeout_cb(self) -> None:
        """A session idle past the command timeout, or a DATA past its deadline: say why."""
        self.say_and_close(replies.TIMEOUT, "timeout")

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
                    and self._errors > handler.judge.config.limits.max_errors
                    and self.transport is not None
                ):
                    # A client that keeps failing is probing or broken: stop listening to it.
                    self.say_and_close(replies.TOO_MANY_ERRORS, "errors")
            return
        await super().push(status)

    def shut_idle(self) -> bool:
        """Between transactions, say 421 and close (True); else do so at the next boundary."""
        self._shutdown_requested = True
        state = self.state
        busy = state is not None and (state.txn is not None or state.busy)
        if busy or self._in_command:
            return False
        self.say_and_close(replies.SHUTTING_DOWN, "shutdown")
        return True

    def say_and_close(self, reply: Reply, why: str) -> None:
        """Write a last reply, unasked (RFC 5321 allows 421 at any time), and hang up."""
        if self.transport is None:
            return
        handler = self.event_handler
        if isinstance(handler, GatewayHandler) and handler.metrics is not None:
            handler.metrics.closed.labels(why).inc()
        with contextlib.suppress(Exception):  # the client may be gone already
            self._writer.write(reply.line().encode("ascii") + b"\r\n")
        self.transport.close()


@dataclass
class _SessionState:
    downstream: DownstreamSession
    txn: Transaction | None = None
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
        judge: Judge,
        relay: Relay,
        audit: AuditLog,
        notifier: Notifier | None = None,
        metrics: Metrics | None = None,
        *,
        journal: Journal | None = None,
    ) -> None:
        self.metrics = metrics
        self.journal = journal  # what was handed downstream before it was recorded
        self.judge = judge
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

    def _client(self, server: GatewaySMTP) -> Client:
        """Client IP, HELO name and TLS, as forwarded by a trusted proxy where it did."""
        session = server.session
        helo = (session.host_name if session is not None else "") or ""
        forwarded = server.state.xforward if server.state is not None else {}
        return Client(
            ip=forwarded.get("ADDR", _peer_ip(server)),
            helo=forwarded.get("HELO", helo),
            tls=session is not None and session.ssl is not None,
            esmtp=bool(session is not None and session.extended_smtp),
        )

    def may_xforward(self, server: GatewaySMTP) -> bool:
        """XFORWARD is accepted only from the configured proxy hosts."""
        return self.judge.config.may_xforward(_peer_ip(server))

    def xforward(self, server: GatewaySMTP, arg: str) -> str:
        """Store XFORWARD attributes (xtext-decoded) for the next transaction."""
        state = self._state(server)
        if state.txn is not None:
            return replies.IN_TRANSACTION.line()
        pairs = [item.partition("=") for item in arg.split()]
        if not pairs or any(
            not sep or name.upper() not in _XFORWARD_ATTRS for name, sep, _ in pairs
        ):
            return replies.XFORWARD_SYNTAX.line()
        for name, _, value in pairs:
            decoded = unquote(value.replace("+", "%"))  # xtext: +HH is a hex-escaped byte
            if decoded in ("[UNAVAILABLE]", "[TEMPUNAVAIL]"):
                state.xforward.pop(name.upper(), None)
                continue
            if name.upper() == "ADDR":
                decoded = decoded.removeprefix("IPv6:")
            state.xforward[name.upper()] = "".join(c for c in decoded if " " < c < "\x7f")
        return replies.OK.line()

    def _end_transaction(self, state: _SessionState) -> None:
        state.txn = None
        state.xforward.clear()  # XFORWARD attributes last one transaction, as in Postfix

    async def _finish_without_data(self, server: GatewaySMTP) -> None:
        """Record a transaction that ended before its DATA was judged, then reset downstream."""
        state = self._state(server)
        txn = state.txn
        if txn is None:
            return
        txn.end()
        await txn.record_quietly(self.audit)
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
                return replies.refusal(reason, self.judge.policy).line()
            line = txn.data_refused(reason).line()
            await txn.record_quietly(self.audit)
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
        limits = self.judge.config.limits
        if len(self.protocols) >= limits.max_sessions:
            return True
        ip = _peer_ip(server)
        config = self.judge.config
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
        return replies.hello(server.hostname).line()

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
        # aiosmtpd hands the null sender over as "<>"; everywhere else it is "" (no address).
        sender = "" if address == "<>" else address
        client = self._client(server)
        txn = Transaction(self.judge, client, sender, smtputf8="SMTPUTF8" in options)
        if txn.outcome is not None:  # the sender refused before anything else
            await txn.record_quietly(self.audit)
            return txn.outcome.line
        size = next((o.split("=", 1)[1] for o in options if o.startswith("SIZE=")), None)
        about = {
            "NAME": state.xforward.get("NAME", "[UNAVAILABLE]"),
            "ADDR": client.ip,
            "PROTO": state.xforward.get("PROTO", "ESMTP" if client.esmtp else "SMTP"),
            "HELO": client.helo,
        }
        try:
            reply = await state.downstream.mail(
                sender,
                size=int(size) if size and size.isdigit() else None,
                smtputf8=txn.smtputf8,
                about=about,
            )
        except DownstreamError as exc:
            self._relay_failed("MAIL", exc)
            line = txn.failed(exc.reason).line()
            await txn.record_quietly(self.audit)
            return line
        if not reply.ok:
            line = txn.sender_refused(reply).line()
            await txn.record_quietly(self.audit)
            return line
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        state.txn = txn
        return replies.SENDER_OK.line()

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
            return replies.NEED_MAIL.line()
        refused = txn.rcpt(address)
        if refused is not None:
            return refused.line()
        try:
            reply = await state.downstream.rcpt(address)
        except DownstreamError as exc:
            self._relay_failed("RCPT", exc)
            return txn.recipient_failed(address, exc.reason).line()
        if not reply.ok:
            return txn.recipient_refused(address, reply).line()
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return txn.recipient_accepted(address).line()

    async def handle_RSET(self, server: GatewaySMTP, session: Any, envelope: Any) -> str:
        """RSET abandons the transaction here and downstream."""
        await self._guard(server, lambda: self._finish_without_data(server))
        return replies.OK.line()

    async def handle_QUIT(self, server: GatewaySMTP, session: Any, envelope: Any) -> str:
        """Finish the session cleanly before saying goodbye."""
        task = asyncio.ensure_future(self._disconnect(server))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        await asyncio.shield(task)
        return replies.BYE.line()

    async def handle_DATA(self, server: GatewaySMTP, session: Any, envelope: Any) -> str:
        """Judge, then refuse or relay; record; only then reply."""
        return await self._guard(server, lambda: self._data(server, envelope))

    async def _data(self, server: GatewaySMTP, envelope: Any) -> str:
        state = self._state(server)
        txn = state.txn
        if txn is None:  # pragma: no cover - aiosmtpd refuses DATA before RCPT itself
            return replies.NEED_RCPT.line()
        try:
            judgement = await txn.judge(envelope.original_content)
            for error in judgement.decision.errors:
                self.log.error("check.exception", decision_id=txn.id, traceback=error)
            if txn.outcome is not None:  # refused: nothing goes downstream
                await state.downstream.rset()
            else:
                await self._relay(state, txn)
        except Exception:
            self.log.exception("smtp.exception", stage="DATA", decision_id=txn.id)
            await state.downstream.rset()
            txn.failed("internal.check_error")
        try:
            reply, recorded = await txn.conclude(self.audit, self.notifier)
            if recorded and self.journal is not None:
                self.journal.done(txn.id)
        finally:
            self._end_transaction(state)
        return reply.line()

    async def _relay(self, state: _SessionState, txn: Transaction) -> None:
        message = txn.relay_message()
        if self.journal is not None:  # from here on the downstream may take it
            self.journal.intent(txn.intended_record().to_dict())
        try:
            reply = await state.downstream.data(message)
        except DownstreamError as exc:
            self._relay_failed("DATA", exc)
            txn.delivery_failed(exc)
        else:
            txn.delivered(reply)

    async def handle_exception(self, error: Exception) -> str:
        """Any exception escaping a hook: log it, answer 451 4.3.0, show the client nothing."""
        with contextlib.suppress(Exception):  # the reply must not depend on logging
            self.log.error("smtp.exception", exc_info=error)
        return replies.refusal("internal.check_error", self.judge.policy).line()


def _peer_ip(server: GatewaySMTP) -> str:
    """The connecting address itself (not an XFORWARD claim)."""
    session = server.session
    peer = session.peer if session is not None else None
    if isinstance(peer, tuple):
        return str(peer[0])
    return "" if peer is None else str(peer)
