"""Rules about attached documents: official documents must be digitally signed, except the
kinds the directive exempts, which the sender declares and the log records."""

from __future__ import annotations

from policies.model import (
    Action,
    DocumentEvidence,
    MessageFacts,
    Mode,
    SignatureCheck,
    Verdict,
    problem_rank,
)
from policies.reasons import REASONS
from policies.rules.base import RuleContext, rule
from policies.schema import Policy

# A failed check's problem -> the reason code that refuses the message for it.
_PROBLEM_REASON = {
    "unsigned": "document.unsigned",
    "invalid": "document.signature_invalid",
    "modified": "document.modified_after_signing",
    "untrusted": "document.signer_untrusted",
    "expired": "document.signer_expired",
    "revoked": "document.signer_revoked",
    "revocation_unavailable": "document.revocation_unavailable",
    "unreadable": "document.unreadable",
}


def _exemptions_honoured(policy: Policy) -> bool:
    # Exemptions are claimed, recorded, never silently assumed: without the rule that records
    # them (document-exemption, not off) there are none.
    return any(r.id == "document-exemption" and r.mode is not Mode.OFF for r in policy.rules)


def exemption(document: DocumentEvidence, facts: MessageFacts, policy: Policy) -> str:
    """Why ``document`` is exempt (a declared class or an exempt file type), or ""."""
    if not _exemptions_honoured(policy):
        return ""
    if facts.document_class and facts.document_class in policy.documents.classes:
        return f"{policy.documents.class_header}: {facts.document_class}"
    if document.attachment.detected_type in policy.documents.types:
        return ""  # a PDF named "cv.pdf.dwg" is still a PDF: its name exempts nothing
    name = document.attachment.filename.lower()
    for ext in policy.documents.exempt_extensions:
        if name.endswith(ext):
            return f"file type {ext}"
    return ""


def _reason(problem: str, policy: Policy) -> str:
    if problem == "revocation_unknown":
        # The one place unknown_revocation applies. Under hard-fail an unknown status is
        # never passed: the policy says how to refuse.
        if policy.trust.unknown_revocation == "reject":
            return "document.revocation_unknown"
        return "document.revocation_unavailable"
    return _PROBLEM_REASON.get(problem, "document.signature_invalid")


def _describe(check: SignatureCheck) -> str:
    parts = [f"{check.method} {check.result}"]
    if check.problem:
        parts.append(check.problem)
    if check.detail:
        parts.append(check.detail)
    for signer in check.signers:
        who = signer.subject + (f" ({signer.organisation})" if signer.organisation else "")
        when = signer.signing_time + (" timestamped" if signer.timestamped else " claimed")
        parts.append(
            f"signer {who}, serial {signer.serial}, sha256 {signer.fingerprint[:16]}…, "
            f"signed {when}, certificate valid to {signer.not_after}"
        )
    return "; ".join(parts)


def _failure(document: DocumentEvidence, facts: MessageFacts, policy: Policy) -> tuple[str, str]:
    """The reason that refuses ``document``, and a description of every check, for the log.

    The most telling problem wins (:data:`policies.model.SIGNATURE_PROBLEMS`);
    a failed S/MIME signature that was the document's only cover is ``message.smime_invalid``
    when permanent, and a temporary failure stays temporary whichever check it came from.
    """
    checks = list(document.checks)
    if facts.smime is not None and facts.smime.result != "pass":
        checks.append(facts.smime)
    failed = [c for c in checks if c.result != "pass"] or [
        SignatureCheck("pdf", "none", "unsigned", "no signature")
    ]

    best = min(failed, key=lambda c: problem_rank(c.problem))
    problem = best.problem or "invalid"
    reason = _reason(problem, policy)
    if (
        best.method == "smime"
        and problem != "unreadable"
        and REASONS[reason].action is Action.REJECT
    ):
        reason = "message.smime_invalid"
    description = " | ".join(_describe(c) for c in checks) or "no signature"
    return reason, description


@rule("document-signature-required")
def document_signature_required(facts: MessageFacts, ctx: RuleContext) -> Verdict | None:
    """Every official document attached must be digitally signed by a trusted, valid, unrevoked
    certificate, and unchanged since: an unsigned document is returned, not received.

    A document passes when its own PDF signatures all hold and the last covers the whole file,
    when a detached signature (.p7s/.sig) in the message signs exactly its bytes, or when it is
    inside a valid S/MIME signature whose certificate matches the From address. Documents of a
    kind the sender declares exempt (see document-exemption) are not required to be signed.
    """
    failures: list[tuple[str, str]] = []
    for document in facts.documents:
        if exemption(document, facts, ctx.policy) or document.in_signed_smime:
            continue
        if any(c.result == "pass" for c in document.checks):
            continue
        reason, description = _failure(document, facts, ctx.policy)
        failures.append((reason, f"{document.attachment.filename or '(unnamed)'}: {description}"))
    if not failures:
        return None
    # One verdict for the message: a refusal for any document beats a temporary failure.
    failures.sort(key=lambda f: -REASONS[f[0]].action.severity)
    return Verdict(failures[0][0], " || ".join(detail for _, detail in failures))


@rule("document-exemption")
def document_exemption(facts: MessageFacts, ctx: RuleContext) -> Verdict | None:
    """Exempt kinds of document (maps, design drawings, planning documents, publications) are
    accepted unsigned when the sender declares them, and every claim is recorded for auditors.

    The sender declares a kind with the policy's header (X-Document-Class: ban-do, …) or sends
    a file type the policy marks exempt (.dwg, .dxf, .kmz, …). A declared kind outside the
    policy's vocabulary exempts nothing and is recorded as such.
    """
    claims = []
    for document in facts.documents:
        why = exemption(document, facts, ctx.policy)
        if why:
            claims.append(f"{document.attachment.filename or '(unnamed)'} exempt by {why}")
    if facts.document_class and facts.document_class not in ctx.policy.documents.classes:
        claims.append(
            f"{ctx.policy.documents.class_header}: {facts.document_class!r} is not an exempt "
            "kind in this policy (no exemption)"
        )
    if not claims:
        return None
    return Verdict("document.exempted", "; ".join(claims))
