"""The SMTP side: aiosmtpd hooks that proxy each transaction to the downstream in real time.

Per client session: EHLO/HELO is answered locally; MAIL FROM opens (or reuses) the downstream
session and forwards the sender; each RCPT TO passes the built-in relay check, then goes to
the downstream, whose answer reaches the client for that recipient only; DATA is judged, and
then either refused (the downstream transaction is reset) or sent on, the client hearing 250
only after the downstream did. Exactly one decision record is written per transaction, before
the final reply; a transaction that ends without DATA (RSET, QUIT, disconnect) is recorded too.

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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, AnyStr

from aiosmtpd.smtp import SMTP

from gateway.audit import AuditLog, StoreError
from gateway.engine import Engine, Judgement, RecipientOutcome, accept_reply, build_record
from gateway.ids import new_decision_id
from gateway.logs import get_logger
from gateway.message import strip_our_headers, trace_headers
from gateway.relay import DownstreamError, DownstreamReply, DownstreamSession, Relay
from policies import Action, refusal

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


class GatewaySMTP(SMTP):
    """aiosmtpd's protocol with enhanced status codes and a hook for lost connections."""

    _in_ehlo = False

    async def smtp_EHLO(self, hostname: str) -> None:
        """EHLO replies carry keywords, not enhanced codes (RFC 2034 section 3)."""
        self._in_ehlo = True
        try:
            await super().smtp_EHLO(hostname)
        finally:
            self._in_ehlo = False

    async def push(self, status: AnyStr) -> None:
        """Send a reply, adding an enhanced status code after EHLO when it has none."""
        if (
            isinstance(status, str)
            and not self._in_ehlo
            and self.session is not None
            and self.session.extended_smtp
        ):
            await super().push(add_enhanced_code(status))
            return
        await super().push(status)

    def connection_lost(self, error: Exception | None) -> None:
        """Close the downstream session and record any unfinished transaction."""
        session = self.session
        super().connection_lost(error)
        handler = self.event_handler
        if isinstance(handler, GatewayHandler) and session is not None:
            handler.schedule_disconnect(session)


@dataclass
class _Transaction:
    id: str
    when: datetime
    started: float
    mail_from: str
    recipients: list[RecipientOutcome] = field(default_factory=list)


@dataclass
class _SessionState:
    downstream: DownstreamSession
    txn: _Transaction | None = None
    closed: bool = False


class GatewayHandler:
    """aiosmtpd handler: relay check, real-time downstream proxying, judging, recording."""

    def __init__(self, engine: Engine, relay: Relay, audit: AuditLog) -> None:
        self.engine = engine
        self.relay = relay
        self.audit = audit
        self.log = get_logger()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- session bookkeeping -------------------------------------------------------------

    def _state(self, session: Any) -> _SessionState:
        state: _SessionState | None = getattr(session, "congvu", None)
        if state is None:
            state = _SessionState(self.relay.session())
            session.congvu = state
        return state

    @staticmethod
    def _client(session: Any) -> tuple[str, str, bool]:
        peer = session.peer
        ip = peer[0] if isinstance(peer, tuple) else str(peer)
        return ip, session.host_name or "", session.ssl is not None

    async def _write(
        self,
        session: Any,
        txn: _Transaction,
        *,
        verdict: str,
        reasons: list[str],
        reply: str,
        judgement: Judgement | None = None,
    ) -> None:
        ip, helo, tls = self._client(session)
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
        )
        await self.audit.record(record)

    async def _finish_without_data(self, session: Any, state: _SessionState) -> None:
        """Record a transaction that ended before DATA was completed, and reset downstream."""
        txn, state.txn = state.txn, None
        if txn is None:
            return
        await state.downstream.rset()
        refused = [r for r in txn.recipients if not r.accepted]
        if txn.recipients and not any(r.accepted for r in txn.recipients):
            verdict = "reject" if any(r.reply.startswith("5") for r in refused) else "tempfail"
            reasons = list(dict.fromkeys(r.reason for r in refused if r.reason))
            reply = refused[-1].reply
        else:
            verdict, reasons, reply = "abandoned", [], ""
        # A store failure was logged with the full record by AuditLog; no reply depends on it.
        with contextlib.suppress(StoreError):
            await self._write(session, txn, verdict=verdict, reasons=reasons, reply=reply)

    def schedule_disconnect(self, session: Any) -> None:
        """Called when the client connection is gone (from a sync protocol callback)."""
        task = asyncio.get_running_loop().create_task(self._disconnect(session))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _disconnect(self, session: Any) -> None:
        state: _SessionState | None = getattr(session, "congvu", None)
        if state is None or state.closed:
            return
        state.closed = True
        try:
            await self._finish_without_data(session, state)
        finally:
            await state.downstream.close()

    async def drain(self) -> None:
        """Wait for background clean-ups (used at shutdown)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- SMTP hooks --------------------------------------------------------------------------

    async def handle_HELO(self, server: SMTP, session: Any, envelope: Any, hostname: str) -> str:
        """Answer HELO; a new greeting abandons any open transaction."""
        await self._finish_without_data(session, self._state(session))
        session.host_name = hostname
        return f"250 {server.hostname}"

    async def handle_EHLO(
        self, server: SMTP, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        """Advertise ENHANCEDSTATUSCODES and PIPELINING besides aiosmtpd's own keywords."""
        await self._finish_without_data(session, self._state(session))
        session.host_name = hostname
        last = responses.pop()  # "250 HELP"
        responses += ["250-ENHANCEDSTATUSCODES", "250-PIPELINING", last]
        return responses

    async def handle_MAIL(
        self, server: SMTP, session: Any, envelope: Any, address: str, mail_options: list[str]
    ) -> str:
        """Open the downstream transaction; its refusal or absence is the client's answer."""
        state = self._state(session)
        await self._finish_without_data(session, state)
        txn = _Transaction(new_decision_id(), datetime.now(UTC), time.perf_counter(), address)
        size = next((o.split("=", 1)[1] for o in mail_options if o.startswith("SIZE=")), None)
        smtputf8 = "SMTPUTF8" in mail_options
        try:
            reply = await state.downstream.mail(
                address, size=int(size) if size and size.isdigit() else None, smtputf8=smtputf8
            )
        except DownstreamError as exc:
            self.log.warning("relay.failed", stage="MAIL", reason=exc.reason, detail=exc.detail)
            line = refusal(exc.reason, self.engine.policy).line()
            await self._record_early(session, txn, "tempfail", exc.reason, line)
            return line
        if not reply.ok:
            reason = _downstream_reason(reply)
            line = reply.line(f"{reply.code // 100}.0.0")
            await self._record_early(session, txn, _verdict_of(reply), reason, line)
            return line
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        state.txn = txn
        return "250 2.1.0 Sender ok"

    async def _record_early(
        self, session: Any, txn: _Transaction, verdict: str, reason: str, line: str
    ) -> None:
        # The reply is already a refusal; AuditLog logged the record if the store failed.
        with contextlib.suppress(StoreError):
            await self._write(session, txn, verdict=verdict, reasons=[reason], reply=line)

    async def handle_RCPT(
        self, server: SMTP, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        """Relay check, then the downstream's own answer for this recipient."""
        state = self._state(session)
        txn = state.txn
        if txn is None:  # pragma: no cover - aiosmtpd refuses RCPT before MAIL itself
            return "503 5.5.1 Error: need MAIL command"
        ip, _, _ = self._client(session)
        denied = self.engine.recipient_refusal(address, ip)
        if denied is not None:
            txn.recipients.append(RecipientOutcome(address, False, denied.line(), "relay.denied"))
            return denied.line()
        try:
            reply = await state.downstream.rcpt(address)
        except DownstreamError as exc:
            self.log.warning("relay.failed", stage="RCPT", reason=exc.reason, detail=exc.detail)
            line = refusal(exc.reason, self.engine.policy).line()
            txn.recipients.append(RecipientOutcome(address, False, line, exc.reason))
            return line
        if not reply.ok:
            line = reply.line("5.1.1" if reply.code >= 500 else "4.0.0")
            txn.recipients.append(RecipientOutcome(address, False, line, _downstream_reason(reply)))
            return line
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        line = "250 2.1.5 Recipient ok"
        txn.recipients.append(RecipientOutcome(address, True, line))
        return line

    async def handle_RSET(self, server: SMTP, session: Any, envelope: Any) -> str:
        """RSET abandons the transaction here and downstream."""
        await self._finish_without_data(session, self._state(session))
        return "250 2.0.0 Ok"

    async def handle_QUIT(self, server: SMTP, session: Any, envelope: Any) -> str:
        """Finish the session cleanly before saying goodbye."""
        await self._disconnect(session)
        return "221 2.0.0 Bye"

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        """Judge, then refuse or relay; record; only then reply."""
        state = self._state(session)
        txn, state.txn = state.txn, None
        if txn is None:  # pragma: no cover - aiosmtpd refuses DATA before RCPT itself
            return "503 5.5.1 Error: need RCPT command"
        judgement: Judgement | None = None
        try:
            ip, helo, tls = self._client(session)
            raw: bytes = envelope.original_content
            # Parsing and judging are CPU work: a worker thread keeps other sessions answered
            # while a large message is examined (process workers come with PDF validation).
            judgement = await asyncio.to_thread(
                partial(self.engine.judge, raw),
                mail_from=envelope.mail_from,
                recipients=tuple(envelope.rcpt_tos),
                client_ip=ip,
                helo=helo,
                tls=tls,
                now=txn.when,
            )
            for error in judgement.errors:
                self.log.error("check.exception", decision_id=txn.id, traceback=error)
            decision = judgement.decision
            if decision.action is not Action.ACCEPT:
                await state.downstream.rset()
                assert decision.reply is not None
                verdict, reasons, line = (
                    decision.action.value,
                    list(decision.reasons),
                    decision.reply.line(),
                )
            else:
                verdict, reasons, line = await self._relay(state, txn, judgement, session)
        except Exception:
            self.log.exception("smtp.exception", stage="DATA", decision_id=txn.id)
            await state.downstream.rset()
            verdict, reasons = "tempfail", ["internal.check_error"]
            line = refusal("internal.check_error", self.engine.policy).line()
        try:
            await self._write(
                session, txn, verdict=verdict, reasons=reasons, reply=line, judgement=judgement
            )
        except StoreError:
            if verdict == "accept":
                # Delivered but not recorded: 4xx makes the client retry (a duplicate), which
                # is the lesser harm than a delivery nobody can account for.
                self.log.error("store.accepted_unrecorded", decision_id=txn.id)
            return refusal("store.unavailable", self.engine.policy).line()
        return line

    async def _relay(
        self, state: _SessionState, txn: _Transaction, judgement: Judgement, session: Any
    ) -> tuple[str, list[str], str]:
        decision = judgement.decision
        assert judgement.parsed is not None
        ip, helo, tls = self._client(session)
        monitor = decision.monitor_reasons
        head = trace_headers(
            hostname=self.engine.config.hostname,
            decision_id=txn.id,
            helo=helo,
            client_ip=ip,
            tls=tls,
            esmtp=bool(session.extended_smtp),
            recipients=tuple(r.address for r in txn.recipients if r.accepted),
            result="neutral" if monitor else "pass",
            reason=f"monitor: would refuse {' '.join(monitor)}" if monitor else "",
            when_utc=txn.when,
        )
        body = strip_our_headers(judgement.parsed, self.engine.config.hostname)
        try:
            reply = await state.downstream.data(head + body)
        except DownstreamError as exc:
            self.log.warning("relay.failed", stage="DATA", reason=exc.reason, detail=exc.detail)
            return "tempfail", [exc.reason], refusal(exc.reason, self.engine.policy).line()
        if reply.ok:
            return "accept", [], accept_reply(txn.id)
        line = reply.line(f"{reply.code // 100}.0.0")
        return _verdict_of(reply), [_downstream_reason(reply)], line

    async def handle_exception(self, error: Exception) -> str:
        """Any exception escaping a hook: log it, answer 451 4.3.0, show the client nothing."""
        with contextlib.suppress(Exception):  # the reply must not depend on logging
            self.log.error("smtp.exception", exc_info=error)
        return refusal("internal.check_error", self.engine.policy).line()


def _downstream_reason(reply: DownstreamReply) -> str:
    return "downstream.refused" if reply.code >= 500 else "downstream.deferred"


def _verdict_of(reply: DownstreamReply) -> str:
    return Action.REJECT.value if reply.code >= 500 else Action.TEMPFAIL.value
