"""``congvu policy explain``: a policy in words, for the admin who wrote it and the auditor
who checks it. Pure: the text comes from the policy and the rule registry alone."""

from __future__ import annotations

import json
import textwrap

from policies.rules import RULES
from policies.schema import Policy

__all__ = ["explain"]


def explain(policy: Policy) -> str:
    """What ``policy`` does, in words: its domains, documents, trust settings, the built-in
    refusals and each rule in order with its mode and options (``congvu policy explain``)."""
    lines = [
        f"Policy: {policy.name}",
        f"Source: {policy.source} (sha256 {policy.sha256[:16]}…)",
        f"Official domains (and subdomains): {', '.join(policy.official_domains)}",
        f"Personal mail providers: {len(policy.personal_providers)} domains",
        f"Help contact: {policy.help_contact or '(none)'}",
        "",
        f"Documents: {len(policy.documents.types)} content types; exempt file types "
        f"{', '.join(policy.documents.exempt_extensions) or '(none)'}; declared with "
        f"{policy.documents.class_header}: {', '.join(policy.documents.classes) or '(none)'}",
        f"Trust store: {policy.trust.store}; revocation {policy.trust.revocation}"
        + (
            f" (unknown status: {policy.trust.unknown_revocation})"
            if policy.trust.revocation == "hard-fail"
            else ""
        ),
        "",
        "Built in, before any rule (policy cannot turn these off):",
        "  - recipients outside the local domains only from trusted networks (no open relay);",
        "  - non-ASCII addresses only with SMTPUTF8; size and line-length limits;",
        "  - a header section with lines that are not header fields is refused",
        "    (message.malformed_headers): readers could disagree on who sent it;",
        "  - a MIME part that reads two ways (message.ambiguous_structure) and a message/partial",
        "    fragment (message.partial) are refused: readers could open what was not checked.",
        "",
        "Rules, in order (every rule runs; the most severe verdict wins):",
    ]
    for n, rc in enumerate(policy.rules, start=1):
        rule = RULES[rc.id]
        mode = rc.mode.value + (
            f" from {rc.enforce_from} (monitor before)" if rc.enforce_from else ""
        )
        lines.append(f"{n}. {rc.id} [{mode}]")
        lines += textwrap.wrap(rule.description, 96, initial_indent="   ", subsequent_indent="   ")
        for key, value in rc.options.items():
            lines.append(f"   {key} = {json.dumps(value, ensure_ascii=False)}")
    return "\n".join(lines)
