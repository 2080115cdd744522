"""Advisories: signs of misuse the directives name, counted for scoring, never refused."""

from __future__ import annotations

from policies.addresses import domain_in
from policies.model import MessageFacts, Verdict
from policies.rules.base import RuleContext, rule


@rule("advisory-public-service-registration")
def advisory_public_service_registration(facts: MessageFacts, ctx: RuleContext) -> Verdict | None:
    """Official addresses must not be used to register with social networks or e-banking: mail
    from such services to an official address is counted as evidence (never refused).

    The services are the policy's [advisories] service_domains (subdomains included).
    """
    sender_domains = {facts.mail_from.rpartition("@")[2]} if facts.mail_from else set()
    sender_domains |= {mb.domain for f in facts.from_fields for mb in f.mailboxes}
    services = sorted(
        d for d in sender_domains if domain_in(d, ctx.policy.advisories.service_domains)
    )
    official = [r for r in facts.recipients if ctx.policy.is_official(r.rpartition("@")[2])]
    if not services or not official:
        return None
    return Verdict(
        "advisory.public_service_registration",
        f"{', '.join(services)} writes to {', '.join(official)}",
    )


@rule("advisory-public-contact-in-body")
def advisory_public_contact_in_body(facts: MessageFacts, ctx: RuleContext) -> Verdict | None:
    """Official mail should not print personal contact addresses: mail from an official sender
    whose text shows a gmail/yahoo/... address is counted (never refused)."""
    official_sender = any(
        ctx.policy.is_official(mb.domain) for f in facts.from_fields for mb in f.mailboxes
    )
    personal = sorted(
        {a for a in facts.body_addresses if ctx.policy.is_personal(a.rpartition("@")[2])}
    )
    if not official_sender or not personal:
        return None
    return Verdict("advisory.public_contact_in_body", f"prints {', '.join(personal[:5])}")
