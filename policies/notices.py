"""Refusal notices: whether to send one, and what it says (pure: no sending, no clock).

A notice goes to internal senders only (a client in a trusted network, or an official From
proven by an aligned DKIM pass): notifying forged external senders would be backscatter.
It never answers the null sender, auto-submitted mail, reports, or mailing lists. The text
comes from the policy's templates (Jinja2, validated when the policy is read); the gateway
wraps it in an RFC 3464 delivery-status report and sends it.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jinja2
import jinja2.sandbox

from policies.identity import sender_authenticated
from policies.model import Action, Decision, MessageFacts
from policies.reasons import REASONS
from policies.schema import Policy

__all__ = [
    "SAMPLE_CONTEXT",
    "NoticeContent",
    "notice_kind",
    "render_notice",
]

_LIST_PRECEDENCE = ("bulk", "list", "junk")


@dataclass(frozen=True)
class NoticeContent:
    """The human-readable parts of a notice."""

    text: str
    html: str


def notice_kind(facts: MessageFacts, decision: Decision, policy: Policy) -> tuple[str, str]:
    """``("refusal" | "advisory", "")`` when a notice is due, else ``("", why not)``."""
    settings = policy.notices
    if not settings.enabled:
        return "", "notices are off in the policy"
    if decision.action is Action.REJECT:
        kind = "refusal"
    elif decision.action is Action.ACCEPT and any(
        REASONS[r].action is Action.REJECT for r in decision.monitor_reasons
    ):
        if not settings.advisory_in_monitor:
            return "", "monitor-mode advisories are off in the policy"
        kind = "advisory"  # only for what would be returned, not for what would be retried
    else:
        return "", "nothing refused"  # a tempfail: the sender's server keeps it and retries
    if not facts.mail_from:
        return "", "null sender (a bounce)"
    if facts.auto_submitted and facts.auto_submitted != "no":
        return "", f"auto-submitted message ({facts.auto_submitted})"
    if facts.content_type.startswith("multipart/report"):
        return "", "a report (bounce or receipt)"
    if facts.list_id or facts.precedence in _LIST_PRECEDENCE:
        return "", "mailing list or bulk mail"
    if not sender_authenticated(facts, policy):
        return "", "external sender (a notice could be backscatter to a forged address)"
    return kind, ""


def _finding_lines(decision: Decision, policy: Policy) -> list[dict[str, str]]:
    codes = decision.reasons if decision.action is Action.REJECT else decision.monitor_reasons
    lines = []
    for finding in decision.findings:
        if finding.reason is None or finding.reason not in codes:
            continue
        reason = REASONS[finding.reason]
        lines.append(
            {
                "code": reason.code,
                "explain_vi": reason.explain_vi,
                "explain_en": reason.explain_en,
                "fix_vi": reason.fix_vi,
                "fix_en": reason.fix_en,
                "directive": policy.citation(reason.code),
                "detail": finding.detail,
            }
        )
    return lines


def notice_context(
    facts: MessageFacts,
    decision: Decision,
    policy: Policy,
    *,
    kind: str,
    decision_id: str,
    date: str,
) -> dict[str, Any]:
    """The variables a notice template sees."""
    enforce_from = ""
    if kind == "advisory":
        dates = sorted(
            str(r.enforce_from)
            for r in policy.rules
            if r.enforce_from is not None
            and any(f.rule == r.id and f.outcome.startswith("would-") for f in decision.findings)
        )
        enforce_from = dates[0] if dates else ""
    return {
        "advisory": kind == "advisory",
        "enforce_from": enforce_from,
        "subject": facts.subject,
        "date": date,
        "recipients": list(facts.recipients),
        "decision_id": decision_id,
        "findings": _finding_lines(decision, policy),
        "help_contact": policy.help_contact,
    }


SAMPLE_CONTEXT: Mapping[str, Any] = {
    "advisory": False,
    "enforce_from": "2027-01-01",
    "subject": "Báo cáo tuần",
    "date": "Sun, 22 Nov 2026 10:00:00 +0700",
    "recipients": ["vanthu@lamdong.gov.vn"],
    "decision_id": "01M8000000000000000000000",
    "findings": [
        {
            "code": "document.unsigned",
            "explain_vi": REASONS["document.unsigned"].explain_vi,
            "explain_en": REASONS["document.unsigned"].explain_en,
            "fix_vi": REASONS["document.unsigned"].fix_vi,
            "fix_en": REASONS["document.unsigned"].fix_en,
            "directive": REASONS["document.unsigned"].directive,
            "detail": "cong-van.pdf: pdf none; unsigned",
        }
    ],
    "help_contact": "Văn phòng UBND huyện",
}


def _environment(html: bool) -> jinja2.Environment:
    # Sandboxed: a district edits these templates; they must not reach Python internals.
    return jinja2.sandbox.SandboxedEnvironment(
        autoescape=html,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


@functools.lru_cache(maxsize=8)
def compile_template(source: str, *, html: bool) -> jinja2.Template:
    """Compile a template and render it once each way with sample data (errors raise)."""
    template = _environment(html).from_string(source)
    template.render(**SAMPLE_CONTEXT)
    template.render(**{**SAMPLE_CONTEXT, "advisory": True})
    return template


def render_notice(
    facts: MessageFacts,
    decision: Decision,
    policy: Policy,
    *,
    kind: str,
    decision_id: str,
    date: str,
) -> NoticeContent:
    """The notice's text and HTML parts, from the policy's templates."""
    context = notice_context(facts, decision, policy, kind=kind, decision_id=decision_id, date=date)
    text_template = compile_template(policy.notices.text_template, html=False)
    html_template = compile_template(policy.notices.html_template, html=True)
    return NoticeContent(text_template.render(**context), html_template.render(**context))
