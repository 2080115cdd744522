"""``CheckRunner``: one generated message through ``congvu check``'s path (the same Engine
calls, the default policy, signature validation in threads, the DNS stub), then through what
``congvu serve`` does next (the record, the trace headers, the notice), with every problem
written to a ``MessageReport``."""

from __future__ import annotations

import asyncio
import json
import time
import traceback
from typing import Any

from bench.fuzz.config import HOSTNAME, NOW, StubResolver, fuzz_config
from bench.fuzz.messages import FuzzMessage
from bench.fuzz.replies import reply_problem
from bench.fuzz.report import MessageReport, _trace_key
from gateway.audit import clean_text
from gateway.config import GatewayConfig
from gateway.engine import Engine, RecipientOutcome, accept_reply, build_record
from gateway.message import (
    auth_methods,
    normalize_line_endings,
    parse_message,
    strip_our_headers,
    trace_headers,
)
from gateway.notices import build_notice
from gateway.validation import make_validator
from policies import Action, Policy, load_policy
from policies.notices import notice_kind, render_notice

SLOW_MS = 2000.0  # a message judged slower than this is listed


class CheckRunner:
    """``congvu check``'s path, message after message, in one event loop."""

    def __init__(self, config: GatewayConfig | None = None, policy: Policy | None = None) -> None:
        self.config = config or fuzz_config()
        self.policy = policy or load_policy()
        self.validator = make_validator(self.config, self.policy, processes=False)
        self.engine = Engine(
            self.config, self.policy, validator=self.validator, resolver=StubResolver()
        )
        self.loop = asyncio.new_event_loop()

    def close(self) -> None:
        self.validator.close()
        self.loop.close()

    def run(self, message: FuzzMessage, index: int, report: MessageReport) -> None:
        started = time.perf_counter()
        before = report.exceptions
        try:
            self.loop.run_until_complete(self.check(message, index, report))
        except Exception:  # noqa: BLE001 - what the fuzz looks for
            report.fail("runner raised: " + _trace_key(traceback.format_exc()), index)
        elapsed = (time.perf_counter() - started) * 1000
        report.messages += 1
        report.failed_messages += report.exceptions > before
        if elapsed > SLOW_MS:
            report.slow = sorted([*report.slow, (elapsed, index)], reverse=True)[:10]

    async def check(self, msg: FuzzMessage, index: int, report: MessageReport) -> None:
        """Judge ``msg`` as ``congvu check`` does, then as ``serve`` continues; record problems."""
        engine, ref = self.engine, f"FUZZ{index}"

        def bad_reply(line: str, stage: str) -> None:
            problem = reply_problem(line)
            if problem:
                report.fail(f"{stage}: {problem}", index, line)

        mail_from, rcpts = msg.mail_from, msg.recipients
        smtputf8 = not (mail_from + "".join(rcpts)).isascii()
        refused = engine.sender_refusal(mail_from, smtputf8=smtputf8)
        outcomes: list[RecipientOutcome] = []
        for rcpt in [] if refused else rcpts:
            code = engine.recipient_refusal(rcpt, msg.client_ip, smtputf8=smtputf8)
            reply = engine.reply(code, ref=ref) if code else "250 2.1.5 Recipient ok"
            bad_reply(reply, "RCPT reply")
            outcomes.append(RecipientOutcome(rcpt, code is None, reply, code))
            refused = refused or code
        accepted = tuple(o.address for o in outcomes if o.accepted)
        if not accepted:
            report.verdicts["reject (envelope)"] += 1
            report.reasons[refused or "relay.denied"] += 1
            bad_reply(engine.reply(refused or "relay.denied", ref=ref), "envelope reply")
            return
        if code := engine.data_refusal(msg.raw):
            report.verdicts["reject (size/line)"] += 1
            report.reasons[code] += 1
            bad_reply(engine.reply(code, ref=ref), "data reply")
            return
        try:
            judgement = await engine.judge(
                msg.raw,
                mail_from=mail_from,
                recipients=accepted,
                client_ip=msg.client_ip,
                helo=msg.helo,
                tls=msg.tls,
                now=NOW,
            )
        except Exception:  # noqa: BLE001 - judge must never raise
            tb = traceback.format_exc()
            report.fail("judge raised: " + _trace_key(tb), index, tb)
            return
        decision = judgement.decision
        for error in decision.errors:
            report.fail("decision.errors: " + _trace_key(error), index, error)
        verdict = decision.action.value
        report.verdicts[verdict] += 1
        report.reasons.update(decision.reasons or ["-"])
        line = decision.reply.line(ref=ref) if decision.reply else accept_reply(ref)
        bad_reply(line, "final reply")
        expected = {"accept": "2", "reject": "5", "tempfail": "4"}[verdict]
        if line[:1] != expected:
            report.fail(f"{verdict} answered {line[:3]}", index, line)
        await self._serve_side(
            msg=msg, index=index, report=report, judgement=judgement, outcomes=outcomes, line=line
        )

    async def _serve_side(
        self,
        *,
        msg: FuzzMessage,
        index: int,
        report: MessageReport,
        judgement: Any,
        outcomes: list[RecipientOutcome],
        line: str,
    ) -> None:
        """What ``serve`` does after judging: record, trace headers, notice."""
        decision, facts, parsed = judgement.decision, judgement.facts, judgement.parsed
        ref = f"FUZZ{index}"
        try:
            record = build_record(
                decision_id=ref,
                when=NOW,
                client_ip=msg.client_ip,
                helo=msg.helo,
                tls=msg.tls,
                mail_from=msg.mail_from,
                recipients=outcomes,
                judgement=judgement,
                verdict=decision.action.value,
                reasons=list(decision.reasons),
                reply=line,
                policy=self.policy,
                processing_ms=judgement.elapsed_ms,
            )
            json.dumps(clean_text(record), ensure_ascii=False, sort_keys=True).encode("utf-8")
        except Exception:  # noqa: BLE001
            tb = traceback.format_exc()
            report.fail("record: " + _trace_key(tb), index, tb)
        if facts is None or parsed is None:
            return
        if decision.action is Action.ACCEPT:
            try:
                head = trace_headers(
                    hostname=HOSTNAME,
                    decision_id=ref,
                    helo=msg.helo,
                    client_ip=msg.client_ip,
                    tls=msg.tls,
                    esmtp=True,
                    recipients=tuple(o.address for o in outcomes if o.accepted),
                    result="neutral" if decision.monitor_reasons else "pass",
                    reason=" ".join(decision.monitor_reasons),
                    when_utc=NOW,
                    methods=auth_methods(facts),
                )
                relayed = head + strip_our_headers(parsed, HOSTNAME)
                ours = parse_message(normalize_line_endings(head + b"\r\n")).headers
                if len(ours) != 2 or parse_message(head + b"\r\n").defects:
                    report.fail("trace headers: not exactly our two fields", index, repr(head))
                if b"congvu=pass" in strip_our_headers(
                    parse_message(relayed[len(head) :]), HOSTNAME
                ):
                    pass  # a forged verdict under another id may stay; ours is checked above
            except Exception:  # noqa: BLE001
                tb = traceback.format_exc()
                report.fail("trace headers: " + _trace_key(tb), index, tb)
        try:
            kind, _ = notice_kind(facts, decision, self.policy)
            if kind:
                content = render_notice(
                    facts,
                    decision,
                    self.policy,
                    kind=kind,
                    decision_id=ref,
                    date=parsed.first("Date"),
                )
                build_notice(
                    kind=kind,
                    content=content,
                    facts=facts,
                    parsed=parsed,
                    reply=line,
                    decision_id=ref,
                    hostname=HOSTNAME,
                    from_address=self.policy.notices.from_address or f"MAILER-DAEMON@{HOSTNAME}",
                    when=NOW,
                )
        except Exception:  # noqa: BLE001 - serve's Notifier catches it: the notice is not sent
            tb = traceback.format_exc()
            report.fail("notice not sent: " + _trace_key(tb), index, tb, warning=True)
