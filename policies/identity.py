"""Who sent a message, as far as it can be proven: DKIM alignment and the authenticated sender.

The one place where DKIM alignment is computed. The sender rule (is an official From forged?),
the notices (may we answer this sender?) and the office's scoring (whom does this message
credit?) all ask here, so they cannot disagree on who is proven.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from policies.addresses import organisational_domain
from policies.model import MessageFacts
from policies.schema import Policy

__all__ = ["DkimOutcome", "aligned", "proven_by_dkim", "sender_authenticated"]


class DkimOutcome(Protocol):
    """A DKIM signature's result, as judged (policies.model.DkimResult) or as recorded."""

    @property
    def domain(self) -> str:
        """The signing domain (d=)."""

    @property
    def result(self) -> str:
        """pass, fail, neutral, temperror or permerror."""


def aligned(dkim_domain: str, from_domain: str) -> bool:
    """Relaxed alignment, as DMARC defines it: d= and the From domain have the same
    organisational domain (Public Suffix List), so a signature by ``gov.vn`` aligns with
    nothing and one by ``mail.lamdong.gov.vn`` aligns with ``lamdong.gov.vn``."""
    d, f = organisational_domain(dkim_domain), organisational_domain(from_domain)
    return d is not None and d == f


def proven_by_dkim(from_domain: str, dkim: Iterable[DkimOutcome]) -> bool:
    """Whether a passing DKIM signature aligned with ``from_domain`` is among ``dkim``."""
    return any(d.result == "pass" and aligned(d.domain, from_domain) for d in dkim)


def sender_authenticated(facts: MessageFacts, policy: Policy) -> bool:
    """Whether the sender is proven internal: a trusted client, or an official envelope sender
    who logged in (SASL at the MTA) or whose official From has an aligned passing DKIM
    signature. Notices and scoring rely on it."""
    if facts.client_trusted:
        return True
    # From outside, the notice goes to the envelope sender: it must be official as well,
    # or a DKIM-valid From (or a login with a personal MAIL FROM) could aim notices at any
    # address (backscatter).
    if not policy.is_official(facts.mail_from.rpartition("@")[2]):
        return False
    return bool(facts.login) or any(
        policy.is_official(mb.domain) and proven_by_dkim(mb.domain, facts.dkim)
        for field in facts.from_fields
        for mb in field.mailboxes
    )
