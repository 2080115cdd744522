"""Evidence in, decision out: the one judging path every front-end's transaction takes.

``Judge.decide`` parses the message, applies the built-in header limits, has the checks
(:mod:`gateway.checks`) gather facts (DKIM, documents and their signatures), and asks the
pure rules in ``policies/`` for the decision. Checks never decide; nothing here ranks or
weighs evidence: that is the rules' work. Whatever goes wrong inside (a parser bug, a rule
bug) becomes a tempfail decision with the traceback kept for the log: never a pass, never an
exception reaching the client.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial

from gateway.checks.dkim import INLINE_BYTES, verify_dkim
from gateway.checks.dns import TxtResolver
from gateway.checks.documents import gather_documents
from gateway.checks.validation import SignatureValidator
from gateway.config import GatewayConfig
from gateway.message import (
    FilePart,
    ParsedMessage,
    build_facts,
    file_parts,
    normalize_line_endings,
    parse_message,
)
from policies import (
    Action,
    Decision,
    Finding,
    MessageFacts,
    Mode,
    Policy,
    evaluate,
    refusal,
)

__all__ = ["Judge", "Judgement"]


@dataclass(frozen=True)
class Judgement:
    """The policy's decision with the evidence it was based on."""

    decision: Decision
    parsed: ParsedMessage | None
    facts: MessageFacts | None
    elapsed_ms: float


class Judge:
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

    def _prepare(
        self,
        raw: bytes,
        *,
        mail_from: str,
        recipients: tuple[str, ...],
        client_ip: str,
        helo: str,
        tls: bool,
        login: str,
        policy: Policy,
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
            login=login,
            files=files,
        )
        # Several declarations are joined: "ban-do, an-pham" is no kind, so exempts nothing.
        declared = ", ".join(
            h.value.strip().lower() for h in parsed.all(policy.documents.class_header)
        )
        return parsed, files, dataclasses.replace(facts, document_class=declared)

    def _limit(self, parsed: ParsedMessage, policy: Policy) -> Decision | None:
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
        return Decision(Action.REJECT, (code,), (), (finding,), refusal(code, policy))

    async def decide(
        self,
        raw: bytes,
        *,
        mail_from: str,
        recipients: tuple[str, ...],
        client_ip: str,
        helo: str = "",
        tls: bool = False,
        login: str = "",
        now: datetime | None = None,
        policy: Policy | None = None,
    ) -> Judgement:
        """Decide on ``raw``; exceptions anywhere become a tempfail (``internal.check_error``).

        A large message is parsed in a thread; DKIM keys are fetched and documents validated
        (in worker processes) concurrently; then the pure policy decides.
        """
        started = time.perf_counter()
        now = now or datetime.now(UTC)
        policy = policy or self.policy  # one policy for the whole judgement, across a reload
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
                login=login,
                policy=policy,
            )
            # A large message is parsed in a thread, so that other sessions are not held up;
            # a small one costs less than the hand-over to a thread and back.
            prepared = await asyncio.to_thread(prepare) if len(raw) > INLINE_BYTES else prepare()
            parsed, files, base = prepared
            facts = base  # recorded as far as known, even if gathering evidence fails below
            limited = self._limit(parsed, policy)
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
                refusal("internal.check_error", policy),
                (traceback.format_exc(),),
            )
        elapsed = (time.perf_counter() - started) * 1000
        return Judgement(decision, parsed, facts, elapsed)
