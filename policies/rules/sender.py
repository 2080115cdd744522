"""Rules about who sent the message: official mailboxes only, and an unambiguous author."""

from __future__ import annotations

from typing import Any

from policies.addresses import (
    AddressError,
    addresses_in_text,
    canonical_domain,
    comments_of,
    domain_matches,
    imitated_domain,
    parse_addr_spec,
    shown_text,
)
from policies.identity import aligned, proven_by_dkim
from policies.model import AddressField, MessageFacts, Verdict
from policies.reader import TomlReader
from policies.rules.base import RuleContext, rule
from policies.schema import Policy

_RECIPIENT_KEYWORDS = ("official", "*")


def _local_key(local: str) -> str:
    """A local part as mail servers route it: unquoted, lower case, without a +detail.

    ``"vanthu"@`` and ``vanthu+x@`` reach the same mailbox as ``vanthu@`` on the usual
    servers (Postfix with recipient_delimiter = +), so they must be protected alike.
    """
    return local.strip('"').lower().split("+", 1)[0]


def _read_recipient_patterns(reader: TomlReader, key: str, default: list[str]) -> list[str]:
    """Validate and canonicalise recipient patterns: keywords, addresses or domains."""
    out: list[str] = []
    for p in reader.strings(key, default):
        if p in _RECIPIENT_KEYWORDS:
            out.append(p)
            continue
        try:
            if "@" in p:
                box = parse_addr_spec(p)
                out.append(f"{_local_key(box.local_part)}@{box.domain}")
            else:
                out.append(canonical_domain(p))
        except AddressError as exc:
            raise reader.error(
                key,
                f"{p!r} ({exc}): use 'official', '*', an address, or a domain "
                "(which includes its subdomains)",
            ) from exc
    return out


def _personal_domain_options(reader: TomlReader) -> dict[str, Any]:
    return {
        "protected_recipients": _read_recipient_patterns(
            reader, "protected_recipients", ["official"]
        ),
        "public_recipients": _read_recipient_patterns(reader, "public_recipients", []),
    }


def _recipient_matches(address: str, pattern: str, policy: Policy) -> bool:
    local, _, domain = address.rpartition("@")
    if pattern == "*":
        return True
    if pattern == "official":
        return policy.is_official(domain)
    if "@" in pattern:
        p_local, _, p_domain = pattern.rpartition("@")
        try:
            same_domain = canonical_domain(domain) == p_domain
        except AddressError:
            return False
        return same_domain and _local_key(local) == p_local
    return domain_matches(domain, pattern)


def _envelope_domain(address: str) -> str:
    return address.rpartition("@")[2]


def _address_fields(facts: MessageFacts) -> list[AddressField]:
    """From, Sender and Reply-To, in that order."""
    return [*facts.from_fields, *facts.sender_fields, *facts.reply_to_fields]


@rule("sender-personal-domain", options=_personal_domain_options)
def sender_personal_domain(facts: MessageFacts, ctx: RuleContext) -> Verdict | None:
    """Official mail must be sent from an official mailbox: mail to a protected recipient
    whose envelope sender, From, Sender or Reply-To is at a personal provider (gmail, yahoo,
    ...) is refused.

    Options: ``protected_recipients`` (default ``["official"]``: every recipient in an official
    domain; also ``"*"``, addresses, or domains with their subdomains) and
    ``public_recipients`` (public contact addresses where citizens write in; never protected).
    """
    protected_patterns = ctx.options.get("protected_recipients", ["official"])
    public_patterns = ctx.options.get("public_recipients", [])
    protected = [
        r
        for r in facts.recipients
        if any(_recipient_matches(r, p, ctx.policy) for p in protected_patterns)
        and not any(_recipient_matches(r, p, ctx.policy) for p in public_patterns)
    ]
    if not protected:
        return None
    hits: list[str] = []
    if facts.mail_from and ctx.policy.is_personal(_envelope_domain(facts.mail_from)):
        hits.append(f"envelope sender {facts.mail_from}")
    for field in _address_fields(facts):
        hits.extend(
            f"{field.name} {mb.address}"
            for mb in field.mailboxes
            if ctx.policy.is_personal(mb.domain)
        )
    if not hits:
        return None
    return Verdict(
        "sender.personal_domain",
        f"personal-provider address: {'; '.join(hits)} (to {', '.join(protected)})",
    )


def _shown_but_not_real(field: AddressField) -> list[str]:
    """Addresses a reader would see in display names or comments that are not the real ones."""
    real = {mb.address.lower() for mb in field.mailboxes}
    shown_texts = [mb.display_name for mb in field.mailboxes] + comments_of(field.raw)
    found: list[str] = []
    for text in shown_texts:
        found.extend(
            a for a in addresses_in_text(shown_text(text)) if a.lower().rstrip(".") not in real
        )
    return found


@rule("sender-malformed-identity")
def sender_malformed_identity(facts: MessageFacts, ctx: RuleContext) -> Verdict | None:
    """Every message must name one clear author: no From, several From headers, or a From,
    Sender or Reply-To that does not parse or shows another address than the real one is
    refused.

    Addresses are parsed strictly (RFC 5322 without obsolete forms): a header that a lenient
    parser and a mail client could read as different domains is refused, not guessed at.
    """
    reason = "sender.malformed_identity"
    if not facts.from_fields:
        return Verdict(reason, "no From header")
    if len(facts.from_fields) > 1:
        return Verdict(reason, f"{len(facts.from_fields)} From headers")
    if len(facts.sender_fields) > 1:
        return Verdict(reason, f"{len(facts.sender_fields)} Sender headers")
    from_field = facts.from_fields[0]
    if len(from_field.mailboxes) > 1 and not facts.sender_fields:
        return Verdict(reason, "several From addresses and no Sender header")
    problems: list[str] = []
    for field in (from_field, *facts.sender_fields, *facts.reply_to_fields):
        if field.error:
            problems.append(f"{field.name} does not parse ({field.error}): {field.raw[:200]!r}")
            continue
        problems.extend(
            f"{field.name} shows {shown} but the address is "
            f"{', '.join(mb.address for mb in field.mailboxes)}"
            for shown in _shown_but_not_real(field)
        )
    if problems:
        return Verdict(reason, "; ".join(problems))
    return None


@rule("sender-lookalike-identity")
def sender_lookalike_identity(facts: MessageFacts, ctx: RuleContext) -> Verdict | None:
    """An address must not imitate an official one: a From, Sender, Reply-To or envelope
    sender whose domain is an official domain written with look-alike letters, or whose
    quoted local part holds another address, is refused.

    A domain such as ``lamdоng.gov.vn`` with a Cyrillic о, in Unicode or as its ``xn--``
    A-label, is ``sender.lookalike_domain``; ``"vanthu@lamdong.gov.vn"@example.com``, which
    some clients show as that address, is ``sender.address_in_local_part``.
    """
    official = ctx.policy.official_domains
    found: list[tuple[str, str]] = []
    addresses = [(f.name, mb.address) for f in _address_fields(facts) for mb in f.mailboxes]
    if facts.mail_from:
        addresses.append(("envelope sender", facts.mail_from))
    for where, address in addresses:
        local, _, domain = address.rpartition("@")
        try:
            imitated = imitated_domain(canonical_domain(domain), official)
        except AddressError:
            imitated = ""  # not a domain at all: another rule's business
        if imitated:
            found.append(("sender.lookalike_domain", f"{where} {address}: looks like {imitated}"))
        elif "@" in local:
            found.append(
                ("sender.address_in_local_part", f"{where} {address}: an address in the local part")
            )
    if not found:
        return None
    reason = found[0][0]
    return Verdict(reason, "; ".join(detail for _, detail in found))


@rule("sender-official-unauthenticated")
def sender_official_unauthenticated(facts: MessageFacts, ctx: RuleContext) -> Verdict | None:
    """Mail whose From claims an official domain must prove it, by a passing DKIM signature
    aligned with that domain, by coming from a trusted network, or by a client that logged in
    at the MTA (SASL); else it is refused as forged.

    Signatures with a body length limit (l=) do not count. A DNS failure while fetching a key
    is a temporary error (4xx), never a failed signature. Many district servers do not sign
    yet: start this rule in monitor mode.
    """
    if facts.client_trusted or facts.login:
        return None
    claimed = sorted(
        {
            mb.domain
            for field in facts.from_fields
            for mb in field.mailboxes
            if ctx.policy.is_official(mb.domain)
        }
    )
    if not claimed:
        return None
    relevant = [d for d in facts.dkim if any(aligned(d.domain, c) for c in claimed)]
    unproven = [c for c in claimed if not proven_by_dkim(c, facts.dkim)]
    if not unproven:
        return None
    seen = (
        "; ".join(f"d={d.domain} s={d.selector}: {d.result} {d.detail}".strip() for d in facts.dkim)
        or "no DKIM signature"
    )
    if any(d.result == "temperror" for d in relevant):
        return Verdict(
            "sender.authentication_temperror",
            f"From {', '.join(unproven)}: DKIM key lookup failed ({seen})",
        )
    return Verdict(
        "sender.official_unauthenticated",
        f"From {', '.join(unproven)} without an aligned passing DKIM signature ({seen})",
    )
