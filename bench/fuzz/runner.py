"""``CheckRunner``: one generated message through ``congvu check``'s path (the same
transaction, the default policy, signature validation in threads, the DNS stub), then through what
``congvu serve`` does next (the record, the trace headers, the notice), with every problem
written to a ``MessageReport``."""

from __future__ import annotations

import asyncio
import json
import time
import traceback

from bench.fuzz.config import HOSTNAME, NOW, StubResolver, fuzz_config
from bench.fuzz.messages import FuzzMessage
from bench.fuzz.replies import reply_problem
from bench.fuzz.report import MessageReport, _trace_key
from gateway.checks.validation import make_validator
from gateway.config import GatewayConfig
from gateway.judge import Judge
from gateway.message import normalize_line_endings, parse_message, strip_our_headers
from gateway.notices import build_notice
from gateway.record import Record
from gateway.store import clean_text
from gateway.transaction import Client, Transaction, run_offline
from policies import Action, Policy, load_policy
from policies.notices import notice_kind, render_notice

SLOW_MS = 2000.0  # a message judged slower than this is listed


class CheckRunner:
    """``congvu check``'s path, message after message, in one event loop."""

    def __init__(self, config: GatewayConfig | None = None, policy: Policy | None = None) -> None:
        self.config = config or fuzz_config()
        self.policy = policy or load_policy()
        self.validator = make_validator(self.config, self.policy, processes=False)
        self.judge = Judge(
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
        """Drive ``msg`` through the transaction as ``congvu check`` does, then do what
        ``serve`` does next; record problems."""
        ref = f"FUZZ{index}"

        def bad_reply(line: str, stage: str) -> None:
            problem = reply_problem(line)
            if problem:
                report.fail(f"{stage}: {problem}", index, line)

        client = Client(msg.client_ip, helo=msg.helo, tls=msg.tls)
        try:
            txn = await run_offline(
                self.judge,
                client,
                msg.mail_from,
                msg.recipients,
                msg.raw,
                decision_id=ref,
                when=NOW,
            )
        except Exception:  # noqa: BLE001 - the transaction must never raise
            tb = traceback.format_exc()
            report.fail("transaction raised: " + _trace_key(tb), index, tb)
            return
        for outcome in txn.recipients:
            bad_reply(outcome.reply, "RCPT reply")
        ended = txn.end()
        judgement = txn.judgement
        self._check_record(txn, index=index, report=report)
        if ended.verdict == "abandoned":  # no recipient at all: nothing was ever refused
            report.verdicts["abandoned (no recipient)"] += 1
            return
        if judgement is None:
            size_or_line = ended.reasons in (("message.too_large",), ("message.line_too_long",))
            report.verdicts["reject (size/line)" if size_or_line else "reject (envelope)"] += 1
            report.reasons.update(ended.reasons or ["-"])
            bad_reply(ended.line, "envelope reply")
            return
        decision = judgement.decision
        for error in decision.errors:
            report.fail("decision.errors: " + _trace_key(error), index, error)
        report.verdicts[ended.verdict] += 1
        report.reasons.update(ended.reasons or ["-"])
        bad_reply(ended.line, "final reply")
        expected = {"accept": "2", "reject": "5", "tempfail": "4"}[ended.verdict]
        if ended.line[:1] != expected:
            report.fail(f"{ended.verdict} answered {ended.line[:3]}", index, ended.line)
        await self._serve_side(txn, index=index, report=report)

    @staticmethod
    def _check_record(txn: Transaction, *, index: int, report: MessageReport) -> None:
        """The record of every transaction, however it ended, is built, stored as JSON and
        read back to the same text (the text the chain hash covers)."""
        try:
            record = clean_text(txn.record().to_dict())
            text = json.dumps(record, ensure_ascii=False, sort_keys=True)
            text.encode("utf-8")
            if Record.from_dict(json.loads(text)).to_json() != text:
                report.fail("record: not read back as written", index, text[:2000])
        except Exception:  # noqa: BLE001
            tb = traceback.format_exc()
            report.fail("record: " + _trace_key(tb), index, tb)

    async def _serve_side(self, txn: Transaction, *, index: int, report: MessageReport) -> None:
        """What ``serve`` does after judging, the record aside: trace headers, notice."""
        assert txn.judgement is not None
        decision, facts, parsed = txn.judgement.decision, txn.judgement.facts, txn.judgement.parsed
        ref, line = txn.id, txn.end().line
        if facts is None or parsed is None:
            return
        if decision.action is Action.ACCEPT:
            try:
                relayed = txn.relay_message()
                head = relayed[: len(relayed) - len(strip_our_headers(parsed, HOSTNAME))]
                ours = parse_message(normalize_line_endings(head + b"\r\n")).headers
                if len(ours) != 2 or parse_message(head + b"\r\n").defects:
                    report.fail("trace headers: not exactly our two fields", index, repr(head))
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
