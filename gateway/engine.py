"""The judging path shared by ``congvu serve`` and ``congvu check``: one code path, one answer.

``Engine.judge`` turns the raw message and envelope into facts and asks the policy. Whatever
goes wrong inside (a parser bug, a rule bug) becomes a tempfail decision with the traceback
kept for the log: never a pass, never an exception reaching the SMTP client.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial

from gateway.config import GatewayConfig
from gateway.dataread import MAX_LINE
from gateway.dkim import INLINE_BYTES, TxtResolver, verify_dkim
from gateway.evidence import gather_documents
from gateway.message import (
    FilePart,
    ParsedMessage,
    build_facts,
    file_parts,
    normalize_line_endings,
    parse_message,
)
from gateway.validation import SignatureValidator
from policies import (
    Action,
    Decision,
    Finding,
    MessageFacts,
    Mode,
    Policy,
    check_recipient,
    evaluate,
    refusal,
)
from policies.addresses import AddressError, canonical_domain

__all__ = ["Engine", "Judgement", "RecipientOutcome", "accept_reply"]

# RFC 5321 4.1.3 address literals: [192.0.2.1], [IPv6:2001:db8::1]
_ONE_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_ADDRESS_LITERAL = re.compile(r"\[(?:\d{1,3}(?:\.\d{1,3}){3}|IPv6:[0-9A-Fa-f:.]+)\]")


@dataclass
class RecipientOutcome:
    """What happened to one RCPT TO."""

    address: str
    accepted: bool
    reply: str
    reason: str | None = None


@dataclass(frozen=True)
class Judgement:
    """The policy's decision with the evidence it was based on."""

    decision: Decision
    parsed: ParsedMessage | None
    facts: MessageFacts | None
    elapsed_ms: float


def accept_reply(decision_id: str) -> str:
    """The final 250 the client gets once the downstream has accepted."""
    return f"250 2.0.0 Ok: accepted as {decision_id}"


class Engine:
    """Configuration and policy, applied to one message at a time."""

    def __init__(
        self,
        config: GatewayConfig,
        policy: Policy,
        *,
        validator: SignatureValidator,
        resolver: TxtResolver,
    ) -> None:
        self.config = config
        self.policy = policy
        self.validator = validator
        self.resolver = resolver

    @staticmethod
    def sender_refusal(address: str, *, smtputf8: bool) -> str | None:
        """The reason code refusing a MAIL FROM (or RCPT TO) ``address`` before any policy:
        not ``local@domain`` or holding a control character (it would be copied into a command
        sent downstream), or non-ASCII without SMTPUTF8. None when it may go on (the null
        sender ``""`` included)."""
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

    def recipient_refusal(self, address: str, client_ip: str, *, smtputf8: bool) -> str | None:
        """The reason code refusing RCPT TO ``address`` (built in: policy cannot turn it off)."""
        non_ascii = self.sender_refusal(address, smtputf8=smtputf8)
        if non_ascii is not None:
            return non_ascii
        return check_recipient(
            address,
            client_trusted=self.config.is_trusted(client_ip),
            local_domains=self.config.local_domains,
        )

    def data_refusal(self, raw: bytes) -> str | None:
        """What the SMTP layer refuses before judging: too large, or a line too long.

        ``serve`` gets this from :func:`gateway.dataread.read_data` while reading DATA, with
        the same line limit; ``check`` asks here.
        """
        if len(raw) > self.config.max_message_size:
            return "message.too_large"
        # As received over SMTP, every line ends in CRLF: measure it that way.
        lines = normalize_line_endings(raw).split(b"\r\n")
        if any(len(line) > MAX_LINE for line in lines):
            return "message.line_too_long"
        return None

    def reply(self, code: str, ref: str = "") -> str:
        """The reply line for reason ``code`` under the current policy."""
        return refusal(code, self.policy).line(ref=ref)

    def _prepare(
        self,
        raw: bytes,
        *,
        mail_from: str,
        recipients: tuple[str, ...],
        client_ip: str,
        helo: str,
        tls: bool,
    ) -> tuple[ParsedMessage, list[FilePart], MessageFacts]:
        parsed = parse_message(normalize_line_endings(raw))
        files = file_parts(parsed.raw)
        facts = build_facts(
            parsed,
            mail_from=mail_from,
            recipients=recipients,
            client_ip=client_ip,
            client_trusted=self.config.is_trusted(client_ip),
            helo=helo,
            tls=tls,
            files=files,
        )
        # Several declarations are joined: "ban-do, an-pham" is no kind, so exempts nothing.
        declared = ", ".join(
            h.value.strip().lower() for h in parsed.all(self.policy.documents.class_header)
        )
        return parsed, files, dataclasses.replace(facts, document_class=declared)

    def _limit(self, parsed: ParsedMessage) -> Decision | None:
        """Built-in bounds on the header section, ahead of any evidence: loops and bloat."""
        limits = self.config.limits
        code, detail = "", ""
        received = len(parsed.all("Received"))
        if received > limits.max_received:
            code, detail = (
                "message.loop",
                f"{received} Received headers (limit {limits.max_received})",
            )
        elif parsed.body_offset > limits.max_header_bytes:
            code = "message.header_too_large"
            detail = f"{parsed.body_offset} header bytes (limit {limits.max_header_bytes})"
        elif len(parsed.headers) > limits.max_header_fields:
            code = "message.header_too_large"
            detail = f"{len(parsed.headers)} header fields (limit {limits.max_header_fields})"
        if not code:
            return None
        finding = Finding("gateway-limits", Mode.ENFORCE, "reject", code, detail)
        return Decision(Action.REJECT, (code,), (), (finding,), refusal(code, self.policy))

    async def judge(
        self,
        raw: bytes,
        *,
        mail_from: str,
        recipients: tuple[str, ...],
        client_ip: str,
        helo: str = "",
        tls: bool = False,
        now: datetime | None = None,
    ) -> Judgement:
        """Decide on ``raw``; exceptions anywhere become a tempfail (``internal.check_error``).

        A large message is parsed in a thread; DKIM keys are fetched and documents validated
        (in worker processes) concurrently; then the pure policy decides.
        """
        started = time.perf_counter()
        now = now or datetime.now(UTC)
        policy = self.policy  # one policy for the whole judgement, even across a reload
        parsed: ParsedMessage | None = None
        facts: MessageFacts | None = None
        try:
            prepare = partial(
                self._prepare,
                raw,
                mail_from=mail_from,
                recipients=recipients,
                client_ip=client_ip,
                helo=helo,
                tls=tls,
            )
            # A large message is parsed in a thread, so that other sessions are not held up;
            # a small one costs less than the hand-over to a thread and back.
            prepared = await asyncio.to_thread(prepare) if len(raw) > INLINE_BYTES else prepare()
            parsed, files, base = prepared
            facts = base  # recorded as far as known, even if gathering evidence fails below
            limited = self._limit(parsed)
            if limited is not None:
                return Judgement(limited, parsed, facts, (time.perf_counter() - started) * 1000)
            dkim_results, (documents, smime) = await asyncio.gather(
                verify_dkim(parsed.raw, self.resolver),
                gather_documents(parsed, files, base, policy, self.validator),
            )
            facts = dataclasses.replace(base, dkim=dkim_results, documents=documents, smime=smime)
            decision = evaluate(facts, policy, now)
        except Exception:  # noqa: BLE001 - a bug in a check is a tempfail, never a pass
            decision = Decision(
                Action.TEMPFAIL,
                ("internal.check_error",),
                (),
                (
                    Finding(
                        "gateway-evidence",
                        Mode.ENFORCE,
                        "tempfail",
                        "internal.check_error",
                        "gathering evidence raised",
                    ),
                ),
                refusal("internal.check_error", self.policy),
                (traceback.format_exc(),),
            )
        elapsed = (time.perf_counter() - started) * 1000
        return Judgement(decision, parsed, facts, elapsed)
