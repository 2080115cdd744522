"""One SMTP transaction, from MAIL FROM to its one record: the path every front-end drives.

A front-end only translates its protocol to and from a :class:`Transaction`: the before-queue
proxy (:mod:`gateway.smtp`), ``congvu check`` and the fuzzer (through :func:`run_offline`), and
a milter. The transaction holds the envelope, applies the built-in limits (address syntax,
relay, recipients, size and line length), has the message judged (:class:`gateway.judge.Judge`),
builds every reply (:mod:`gateway.replies`) and, at the end, the decision record.

Its life, and what a front-end calls at each step::

    Transaction(judge, client, sender)    MAIL FROM    .outcome set if the sender is refused
    .rcpt(address)                        RCPT TO      a refusal, or None: ask the downstream,
    .recipient_accepted(address)                       then record its answer
    .data_limit(raw) / .data_refused(c)   DATA         too large, a line too long
    await .judge(raw)                     end of DATA  .outcome set unless the policy accepts
    .relay_message() / .delivered(reply)  relaying     the downstream's answer concludes it
    .end()                                RSET, QUIT, a lost client: an open one is abandoned
    .record(notice)                       always       the one decision record

Whatever happens, :attr:`Transaction.outcome` ends up set exactly once, and
:meth:`Transaction.record` describes it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from gateway import replies
from gateway.dataread import MAX_LINE
from gateway.ids import new_decision_id
from gateway.judge import Judgement
from gateway.logs import get_logger
from gateway.message import (
    auth_methods,
    authentication_results,
    normalize_line_endings,
    strip_our_headers,
    trace_headers,
)
from gateway.record import Record, build_record, notice_record
from gateway.store.base import StoreError
from policies import Action, Reply, check_recipient
from policies.addresses import AddressError, canonical_domain

if TYPE_CHECKING:
    from gateway.config import GatewayConfig
    from gateway.judge import Judge
    from gateway.notices import Notifier
    from gateway.relay import DownstreamError, DownstreamReply
    from gateway.store import AuditLog

__all__ = [
    "Client",
    "Outcome",
    "RecipientOutcome",
    "Transaction",
    "recipient_refusal",
    "run_offline",
    "sender_refusal",
]

# RFC 5321 4.1.3 address literals: [192.0.2.1], [IPv6:2001:db8::1]
_ONE_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_ADDRESS_LITERAL = re.compile(r"\[(?:\d{1,3}(?:\.\d{1,3}){3}|IPv6:[0-9A-Fa-f:.]+)\]")


@dataclass(frozen=True)
class Client:
    """Who sent the transaction: as connected, or as a trusted proxy in front says."""

    ip: str
    helo: str = ""
    tls: bool = False
    esmtp: bool = True
    login: str = ""  # the SASL login at the MTA (a milter's {auth_authen}), "" when none


@dataclass
class RecipientOutcome:
    """What happened to one RCPT TO."""

    address: str
    accepted: bool
    reply: str
    reason: str | None = None


@dataclass(frozen=True)
class Outcome:
    """How a transaction ended: the verdict, its reasons, and the client's final reply."""

    verdict: str  # accept | reject | tempfail | abandoned
    reasons: tuple[str, ...] = ()
    reply: Reply | None = None

    @property
    def line(self) -> str:
        """The final reply as sent ("" for an abandoned transaction: nobody was answered)."""
        return self.reply.line() if self.reply is not None else ""


def sender_refusal(address: str, *, smtputf8: bool) -> str | None:
    """The reason code refusing a MAIL FROM (or RCPT TO) ``address`` before any policy:
    not ``local@domain`` or holding a control character (it would be copied into a command
    sent downstream), or non-ASCII without SMTPUTF8. None when it may go on (the null sender
    ``""`` included)."""
    if not address or address.lower() == "postmaster":  # RFC 5321 4.5.1
        return None
    local, at, domain = address.rpartition("@")
    if not at or not local or any(c < " " or c == "\x7f" for c in address):
        return "address.syntax"
    try:
        canonical_domain(domain)
    except AddressError:
        # An address literal, or one label (root@localhost from a trusted host).
        if not (_ADDRESS_LITERAL.fullmatch(domain) or _ONE_LABEL.fullmatch(domain)):
            return "address.syntax"
    return "address.non_ascii" if not address.isascii() and not smtputf8 else None


def recipient_refusal(
    config: GatewayConfig, address: str, client_ip: str, *, smtputf8: bool, login: str = ""
) -> str | None:
    """The reason code refusing RCPT TO ``address`` (built in: policy cannot turn it off)."""
    refused = sender_refusal(address, smtputf8=smtputf8)
    if refused is not None:
        return refused
    return check_recipient(
        address,
        client_trusted=config.is_trusted(client_ip),
        local_domains=config.local_domains,
        login=login,
    )


class Transaction:
    """One transaction's envelope, judgement, replies and outcome (see the module docstring).

    The policy is taken once, when the transaction opens: a reload meanwhile does not change
    the rules halfway through.
    """

    def __init__(
        self,
        judge: Judge,
        client: Client,
        sender: str,
        *,
        smtputf8: bool = False,
        decision_id: str | None = None,
        when: datetime | None = None,
    ) -> None:
        self._judge = judge
        self.config = judge.config
        self.policy = judge.policy
        self.client = client
        self.id = decision_id or new_decision_id()
        self.when = when or datetime.now(UTC)
        self.started = time.perf_counter()
        self.mail_from = sender
        self.smtputf8 = smtputf8
        self.recipients: list[RecipientOutcome] = []
        self.judgement: Judgement | None = None
        self.outcome: Outcome | None = None
        self._last_refusal: Reply | None = None  # of a recipient
        self._intended: Record | None = None  # built for the relay journal, reused at the end
        refused = sender_refusal(sender, smtputf8=smtputf8)
        if refused is not None:
            self._conclude("reject", (refused,), self.refusal(refused))

    # -- replies and the end -----------------------------------------------------------------

    def refusal(self, code: str) -> Reply:
        """The reply refusing for reason ``code``, with this transaction's id as its ref."""
        return replies.refusal(code, self.policy, ref=self.id)

    def _conclude(self, verdict: str, reasons: tuple[str, ...], reply: Reply) -> Reply:
        if self.outcome is None:  # the first ending is the one that happened
            self.outcome = Outcome(verdict, reasons, reply)
        if self.outcome.reply is None:
            # Ended without an answer (abandoned): nothing may be said for it now, least of all
            # a 250. A front-end that gets here has a bug; its client hears 451.
            raise RuntimeError(f"transaction {self.id} already ended ({self.outcome.verdict})")
        return self.outcome.reply

    @property
    def accepted(self) -> tuple[str, ...]:
        """The recipients accepted so far, in order."""
        return tuple(r.address for r in self.recipients if r.accepted)

    # -- envelope ----------------------------------------------------------------------------

    def sender_refused(self, reply: DownstreamReply) -> Reply:
        """The downstream refused MAIL FROM: its answer ends the transaction."""
        return self._conclude(
            _verdict_of(reply), (_reason_of(reply),), replies.downstream(reply, stage="MAIL")
        )

    def failed(self, reason: str, *, verdict: str = "tempfail") -> Reply:
        """End with our own reason: the downstream unreachable, a bug in a check."""
        return self._conclude(verdict, (reason,), self.refusal(reason))

    def rcpt(self, address: str) -> Reply | None:
        """The built-in checks on RCPT TO ``address``: a refusal (kept among the recipients),
        or None, when the front-end asks its downstream and reports the answer."""
        limit = self.config.limits.max_recipients
        if len(self.accepted) >= limit:
            # 452, not 5xx: the client keeps the rest and sends them in another transaction.
            return self.recipient_failed(address, "message.too_many_recipients")
        code = recipient_refusal(
            self.config, address, self.client.ip, smtputf8=self.smtputf8, login=self.client.login
        )
        return None if code is None else self.recipient_failed(address, code)

    def recipient_accepted(self, address: str) -> Reply:
        """``address`` is taken (by the downstream, or with none behind the front-end)."""
        self.recipients.append(RecipientOutcome(address, True, replies.RECIPIENT_OK.line()))
        return replies.RECIPIENT_OK

    def recipient_refused(self, address: str, reply: DownstreamReply) -> Reply:
        """The downstream refused ``address``: its answer goes back for this recipient only."""
        ours = self._last_refusal = replies.downstream(reply, stage="RCPT")
        self.recipients.append(RecipientOutcome(address, False, ours.line(), _reason_of(reply)))
        return ours

    def recipient_failed(self, address: str, code: str) -> Reply:
        """``address`` refused for our reason ``code``."""
        reply = self._last_refusal = self.refusal(code)
        self.recipients.append(RecipientOutcome(address, False, reply.line(), code))
        return reply

    # -- the message -------------------------------------------------------------------------

    def data_limit(self, raw: bytes) -> Reply | None:
        """Refuse ``raw`` if it is too large or has a line too long (a proxy learns this while
        reading DATA, with the same line limit, and calls :meth:`data_refused` itself)."""
        if len(raw) > self.config.max_message_size:
            return self.data_refused("message.too_large")
        # As received over SMTP, every line ends in CRLF: measure it that way.
        lines = normalize_line_endings(raw).split(b"\r\n")
        if any(len(line) > MAX_LINE for line in lines):
            return self.data_refused("message.line_too_long")
        return None

    def data_refused(self, code: str) -> Reply:
        """DATA refused as it was read (``message.too_large``, ``message.line_too_long``)."""
        return self._conclude("reject", (code,), self.refusal(code))

    async def judge(self, raw: bytes) -> Judgement:
        """Have ``raw`` judged; unless the policy accepts, that ends the transaction.

        The policy is taken again now, with the trust store it was loaded with (a reload swaps
        both at once): the rules that judge and the record that says which policy judged
        agree, and the signatures are validated under that same policy's trust store.
        """
        self.policy = self._judge.policy
        judgement = await self._judge.decide(
            raw,
            mail_from=self.mail_from,
            recipients=self.accepted,
            client_ip=self.client.ip,
            helo=self.client.helo,
            tls=self.client.tls,
            login=self.client.login,
            now=self.when,
            policy=self.policy,
        )
        self.judgement = judgement
        decision = judgement.decision
        if decision.action is not Action.ACCEPT:
            assert decision.reply is not None
            reply = dataclasses.replace(decision.reply, ref=self.id)
            self._conclude(decision.action.value, decision.reasons, reply)
        return judgement

    def relay_message(self) -> bytes:
        """The accepted message as it goes on: our trace headers, then the message without any
        header that claims to be ours."""
        judgement = self.judgement
        assert judgement is not None
        assert judgement.parsed is not None
        head = trace_headers(
            hostname=self.config.hostname,
            decision_id=self.id,
            helo=self.client.helo,
            client_ip=self.client.ip,
            tls=self.client.tls,
            esmtp=self.client.esmtp,
            recipients=self.accepted,
            when_utc=self.when,
            **self._results(),
        )
        return head + strip_our_headers(judgement.parsed, self.config.hostname)

    def authentication_results(self) -> str:
        """Our ``Authentication-Results:`` field for the accepted message, alone: what a milter
        adds (the MTA writes its own ``Received:``)."""
        return authentication_results(
            hostname=self.config.hostname, decision_id=self.id, **self._results()
        )

    def _results(self) -> dict[str, Any]:
        judgement = self.judgement
        assert judgement is not None
        monitor = judgement.decision.monitor_reasons
        return {
            "result": "neutral" if monitor else "pass",
            "reason": f"monitor: would refuse {' '.join(monitor)}" if monitor else "",
            "methods": auth_methods(judgement.facts) if judgement.facts else (),
        }

    def delivered(self, reply: DownstreamReply | None = None) -> Reply:
        """The downstream's answer to the message (None: no downstream, taken as accepted)."""
        if reply is None or reply.ok:
            return self._conclude("accept", (), replies.accepted(self.id))
        return self._conclude(
            _verdict_of(reply), (_reason_of(reply),), replies.downstream(reply, stage="DATA")
        )

    def delivery_failed(self, exc: DownstreamError) -> Reply:
        """The downstream could not be reached, or failed, while taking the message."""
        return self.failed(exc.reason)

    def end(self) -> Outcome:
        """End the transaction where it stands (RSET, QUIT, a new MAIL, a lost client).

        One that never reached its judgement: refused if every recipient was (reject when any
        refusal was permanent), else abandoned.
        """
        if self.outcome is None:
            refused = [r for r in self.recipients if not r.accepted]
            if self.recipients and not any(r.accepted for r in self.recipients):
                verdict = "reject" if any(r.reply.startswith("5") for r in refused) else "tempfail"
                reasons = tuple(dict.fromkeys(r.reason for r in refused if r.reason))
                self.outcome = Outcome(verdict, reasons, self._last_refusal)
            else:
                self.outcome = Outcome("abandoned")
        return self.outcome

    # -- after the end -----------------------------------------------------------------------

    async def conclude(self, audit: AuditLog, notifier: Notifier | None) -> tuple[Reply, bool]:
        """After the message's verdict (and the relay): the notice, then the record. Returns
        the final reply and whether the record was committed; when it was not, the reply is
        ``451 4.3.0 [store.unavailable]``: nothing is answered 250 without a record."""
        outcome = self.end()
        assert outcome.reply is not None  # a message that reached its verdict was answered
        notice = await self.notify(notifier) if notifier is not None else None
        try:
            await audit.record(self.record(notice))
        except Exception as exc:  # noqa: BLE001 - any failure to record is a 451, never a 250
            if not isinstance(exc, StoreError):  # the record could not even be built: a bug
                get_logger().exception("record.failed", decision_id=self.id)
            if outcome.verdict == "accept":
                # Delivered but not recorded: 4xx makes the client retry (a duplicate), which
                # is the lesser harm than a delivery nobody can account for.
                get_logger().error("store.accepted_unrecorded", decision_id=self.id)
            return self.refusal("store.unavailable"), False
        return outcome.reply, True

    async def record_quietly(self, audit: AuditLog) -> None:
        """Record a transaction whose answer does not depend on its record (a refusal given
        already, or no answer at all); AuditLog has logged the whole record if the store
        failed."""
        with contextlib.suppress(StoreError):
            await audit.record(self.record())

    async def notify(self, notifier: Notifier) -> dict[str, Any] | None:
        """Tell an internal sender what was refused (or will be: an advisory); never changes
        the answer. The notice's summary for the record, or None when none was due."""
        judgement, outcome = self.judgement, self.end()
        if (
            judgement is None
            or judgement.facts is None
            or judgement.parsed is None
            or outcome.verdict not in ("accept", "reject")
            # An advisory says "delivered": not when the downstream refused after all.
            or (outcome.verdict == "reject" and judgement.decision.action is Action.ACCEPT)
        ):
            return None
        try:
            return await notifier.notify(
                facts=judgement.facts,
                decision=judgement.decision,
                parsed=judgement.parsed,
                policy=self.policy,
                reply=outcome.line,
                decision_id=self.id,
                when=self.when,
            )
        except Exception as exc:  # noqa: BLE001 - a notice never changes the answer
            get_logger().exception("notice.failed", decision_id=self.id)
            return {
                "kind": None,
                "sent": False,
                "to": None,
                "message_id": None,
                "reason": f"notice failed: {type(exc).__name__}",
            }

    def record(self, notice: dict[str, Any] | None = None) -> Record:
        """The decision record of this transaction (ending it first if still open)."""
        outcome, intended = self.end(), self._intended
        if intended is not None and outcome.verdict == "accept":  # as journaled, but the end
            return dataclasses.replace(
                intended,
                notice=notice_record(notice),
                processing_ms=round((time.perf_counter() - self.started) * 1000, 3),
            )
        return self._record(outcome, notice)

    def intended_record(self) -> Record:
        """The record this transaction will have if the downstream takes the message: what
        the relay journal keeps while the message is handed over. It ends nothing."""
        self._intended = self._record(Outcome("accept", (), replies.accepted(self.id)), None)
        return self._intended

    def _record(self, outcome: Outcome, notice: dict[str, Any] | None) -> Record:
        return build_record(
            decision_id=self.id,
            when=self.when,
            client_ip=self.client.ip,
            helo=self.client.helo,
            tls=self.client.tls,
            login=self.client.login,
            mail_from=self.mail_from,
            recipients=self.recipients,
            judgement=self.judgement,
            verdict=outcome.verdict,
            reasons=list(outcome.reasons),
            reply=outcome.line,
            policy=self.policy,
            processing_ms=(time.perf_counter() - self.started) * 1000,
            notice=notice,
        )


async def run_offline(
    judge: Judge,
    client: Client,
    sender: str,
    recipients: list[str] | tuple[str, ...],
    raw: bytes,
    *,
    decision_id: str | None = None,
    when: datetime | None = None,
) -> Transaction:
    """Drive one transaction as a front-end with no downstream would (every recipient and the
    message taken): ``congvu check`` and the fuzzer. The client declares SMTPUTF8 when an
    address needs it, as a real client would."""
    smtputf8 = not (sender + "".join(recipients)).isascii()
    txn = Transaction(judge, client, sender, smtputf8=smtputf8, decision_id=decision_id, when=when)
    if txn.outcome is not None:
        return txn
    for address in recipients:
        if txn.rcpt(address) is None:
            txn.recipient_accepted(address)
    if not txn.accepted or txn.data_limit(raw) is not None:
        txn.end()
        return txn
    await txn.judge(raw)
    txn.delivered()
    return txn


def _reason_of(reply: DownstreamReply) -> str:
    if reply.reason:
        return reply.reason
    return "downstream.refused" if reply.code >= 500 else "downstream.deferred"


def _verdict_of(reply: DownstreamReply) -> str:
    return Action.REJECT.value if reply.code >= 500 else Action.TEMPFAIL.value
