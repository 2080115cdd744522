"""The one loop: run the policy's rules in order, apply their modes, pick the verdict.

Every rule runs (so a notice can list every violation); the most severe enforced verdict wins
(reject over tempfail over accept), and its first reason, in policy order, gives the reply.
A rule that raises is a tempfail, never a pass: an outage must not become a verdict, and a
broken check must not let mail through (no fail-open). In monitor mode a raising rule cannot
refuse anything anyway, so it is recorded as ``error`` and the message goes on.
"""

from __future__ import annotations

import traceback
from datetime import datetime

from policies.addresses import domain_in
from policies.model import Action, Decision, Finding, MessageFacts, Mode, Reply
from policies.reasons import REASONS, reply_for
from policies.rules import RULES, RuleContext
from policies.schema import Policy

__all__ = ["BUILT_IN_CHECKS", "HEADER_SYNTAX", "check_recipient", "evaluate", "refusal"]

HEADER_SYNTAX = "message-header-syntax"  # the built-in checks' ids in findings
MIME_STRUCTURE = "message-mime-structure"
MIME_FRAGMENT = "message-fragment"

# Built in, like the relay check, ahead of the rules: a message that readers can disagree
# about could hide the very From, Reply-To or document the rules judge, and a fragment hides
# its documents. Not a policy choice. (finding id, the facts it reads, reason code)
BUILT_IN_CHECKS: tuple[tuple[str, str, str], ...] = (
    (HEADER_SYNTAX, "header_defects", "message.malformed_headers"),
    (MIME_STRUCTURE, "mime_ambiguities", "message.ambiguous_structure"),
    (MIME_FRAGMENT, "fragments", "message.partial"),
)


def check_recipient(
    address: str, *, client_trusted: bool, local_domains: tuple[str, ...], login: str = ""
) -> str | None:
    """The built-in relay check, ahead of all policy: the reason code refusing ``address``, or None.

    Recipients in the local domains are accepted from anyone; any other recipient only from a
    client in a trusted network or one that logged in (SASL: an officer submitting mail, whose
    message the rules then judge like any other). Policy cannot turn this off: an open relay is
    never a choice.
    """
    if client_trusted or login:
        return None
    domain = address.rpartition("@")[2]
    if "@" in address and domain_in(domain, local_domains):
        return None
    return "relay.denied"


def refusal(code: str, policy: Policy | None) -> Reply:
    """The reply for reason ``code`` with the policy's help contact."""
    return reply_for(code, policy.help_contact if policy else "")


def evaluate(facts: MessageFacts, policy: Policy, now: datetime) -> Decision:
    """Judge ``facts`` under ``policy`` at time ``now`` (aware datetime; policies read no clock)."""
    findings: list[Finding] = []
    enforced: list[tuple[Action, str]] = []
    monitored: list[str] = []
    errors: list[str] = []
    for check, attribute, reason in BUILT_IN_CHECKS:
        defects: tuple[str, ...] = getattr(facts, attribute)
        if defects:
            detail = "; ".join(defects[:5])
            findings.append(Finding(check, Mode.ENFORCE, "reject", reason, detail))
            enforced.append((Action.REJECT, reason))
    for config in policy.rules:
        mode = config.effective_mode(now)
        if mode is Mode.OFF:
            findings.append(Finding(config.id, mode, "off"))
            continue
        try:
            verdict = RULES[config.id].func(facts, RuleContext(policy, config.options, now))
        except Exception as exc:  # noqa: BLE001 - any bug in a rule must become a tempfail
            errors.append(f"rule {config.id}: {traceback.format_exc()}")
            detail = f"rule raised {type(exc).__name__}"
            if mode is Mode.ENFORCE:
                findings.append(
                    Finding(config.id, mode, "tempfail", "internal.check_error", detail)
                )
                enforced.append((Action.TEMPFAIL, "internal.check_error"))
            else:
                findings.append(Finding(config.id, mode, "error", "internal.check_error", detail))
            continue
        if verdict is None:
            findings.append(Finding(config.id, mode, "pass"))
            continue
        action = REASONS[verdict.reason].action
        if action is Action.ACCEPT:
            # An accepting reason is a note for auditors (an exemption claimed), not a refusal.
            findings.append(Finding(config.id, mode, "note", verdict.reason, verdict.detail))
        elif mode is Mode.ENFORCE:
            findings.append(Finding(config.id, mode, action.value, verdict.reason, verdict.detail))
            enforced.append((action, verdict.reason))
        else:
            outcome = f"would-{action.value}"
            findings.append(Finding(config.id, mode, outcome, verdict.reason, verdict.detail))
            monitored.append(verdict.reason)

    if not enforced:
        return Decision(Action.ACCEPT, (), tuple(monitored), tuple(findings), None, tuple(errors))
    # Stable sort: most severe first, policy order within the same severity.
    enforced.sort(key=lambda item: -item[0].severity)
    action, first_reason = enforced[0]
    reasons = tuple(dict.fromkeys(code for _, code in enforced))
    return Decision(
        action,
        reasons,
        tuple(monitored),
        tuple(findings),
        refusal(first_reason, policy),
        tuple(errors),
    )
