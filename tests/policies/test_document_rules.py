"""Truth tables for the document and DKIM rules (pure: evidence in, verdict out)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from policies import Action, AddressField, MessageFacts, evaluate, parse_policy
from policies.model import (
    SIGNATURE_PROBLEMS,
    Attachment,
    DkimResult,
    DocumentEvidence,
    SignatureCheck,
    Signer,
    problem_rank,
)

NOW = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)
SIGNER = Signer(
    subject="CN=Nguyen Van A,O=UBND huyen Di Linh,C=VN",
    organisation="UBND huyen Di Linh",
    serial="54010203",
    fingerprint="ab" * 32,
    signing_time="2026-11-20T02:00:00+00:00",
    timestamped=True,
    not_after="2028-01-01T00:00:00+00:00",
)


def policy(rules: str, extra: str = "") -> object:
    return parse_policy(f'[domains]\nofficial = ["lamdong.gov.vn"]\n{extra}\n{rules}', "t.toml")


def doc(
    name: str = "cong-van.pdf", *checks: SignatureCheck, smime: bool = False
) -> DocumentEvidence:
    detected = (
        "application/octet-stream"
        if name.endswith(".dwg") and "pdf" not in name
        else ("application/pdf")
    )
    att = Attachment(name, "application/pdf", detected, 1000, "00" * 32)
    return DocumentEvidence(att, tuple(checks), smime)


def check(result: str, problem: str = "", method: str = "pdf") -> SignatureCheck:
    return SignatureCheck(method, result, problem, "why", (SIGNER,) if result != "none" else ())


def facts(
    *documents: DocumentEvidence,
    document_class: str = "",
    smime: SignatureCheck | None = None,
    dkim: tuple[DkimResult, ...] = (),
    from_: str = "a@dilinh.lamdong.gov.vn",
    trusted: bool = False,
) -> MessageFacts:
    return MessageFacts(
        mail_from=from_,
        recipients=("vanthu@lamdong.gov.vn",),
        client_ip="192.0.2.1",
        client_trusted=trusted,
        from_fields=(AddressField.parse("From", from_),),
        documents=documents,
        document_class=document_class,
        smime=smime,
        dkim=dkim,
    )


SIGNED = '[[rules]]\nid = "document-exemption"\n[[rules]]\nid = "document-signature-required"\n'


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        (facts(), None),
        (facts(doc("a.pdf", check("pass"))), None),
        (facts(doc("a.pdf", check("none", "unsigned"))), "document.unsigned"),
        (facts(doc("a.docx")), "document.unsigned"),  # a Word file with no signature at all
        (facts(doc("a.pdf", check("fail", "modified"))), "document.modified_after_signing"),
        (facts(doc("a.pdf", check("fail", "invalid"))), "document.signature_invalid"),
        (facts(doc("a.pdf", check("fail", "untrusted"))), "document.signer_untrusted"),
        (facts(doc("a.pdf", check("fail", "expired"))), "document.signer_expired"),
        (facts(doc("a.pdf", check("fail", "revoked"))), "document.signer_revoked"),
        (facts(doc("a.pdf", check("permerror", "unreadable"))), "document.unreadable"),
        (
            facts(doc("a.pdf", check("temperror", "revocation_unavailable"))),
            "document.revocation_unavailable",
        ),
        # A detached signature that holds rescues an unsigned PDF, and vice versa.
        (facts(doc("a.pdf", check("none", "unsigned"), check("pass", method="cms"))), None),
        (facts(doc("a.pdf", check("pass"), check("fail", "invalid", "cms"))), None),
        # Covered by a valid S/MIME signature.
        (facts(doc("a.docx", smime=True)), None),
        (facts(doc("a.docx"), smime=check("fail", "untrusted", "smime")), "message.smime_invalid"),
        # A stale CRL behind the S/MIME signature is temporary, not a forged signature.
        (
            facts(doc("a.docx"), smime=check("temperror", "revocation_unavailable", "smime")),
            "document.revocation_unavailable",
        ),
        # The document's own, more telling problem is not hidden behind the S/MIME one.
        (
            facts(
                doc("a.pdf", check("fail", "modified")), smime=check("fail", "untrusted", "smime")
            ),
            "document.modified_after_signing",
        ),
        # Exempt: declared class, or exempt file type.
        (facts(doc("ban-do.pdf"), document_class="ban-do"), None),
        (facts(doc("map.dwg")), None),
        (facts(doc("cv.pdf.dwg")), "document.unsigned"),  # PDF content: the name exempts nothing
        (facts(doc("a.pdf"), document_class="khong-ro"), "document.unsigned"),
        # One bad document refuses the message; a refusal beats a temporary failure.
        (
            facts(doc("ok.pdf", check("pass")), doc("bad.pdf", check("fail", "revoked"))),
            "document.signer_revoked",
        ),
        (
            facts(
                doc("t.pdf", check("temperror", "revocation_unavailable")),
                doc("u.pdf", check("none", "unsigned")),
            ),
            "document.unsigned",
        ),
    ],
)
def test_signature_required_truth_table(case: MessageFacts, reason: str | None) -> None:
    """Each kind of signature evidence leads to its own reason, with the documents named."""
    decision = evaluate(case, policy(SIGNED), NOW)
    finding = next(f for f in decision.findings if f.rule == "document-signature-required")
    if reason is None:
        assert finding.outcome == "pass"
        assert decision.action is Action.ACCEPT
    else:
        assert finding.reason == reason
        for d in case.documents:
            if d.attachment.filename in ("bad.pdf", "a.pdf", "a.docx", "t.pdf"):
                assert d.attachment.filename in finding.detail


def test_failure_detail_names_the_signer_for_auditors() -> None:
    """Who signed (subject, organisation, serial, fingerprint) and when is in the finding."""
    decision = evaluate(facts(doc("cv.pdf", check("fail", "expired"))), policy(SIGNED), NOW)
    detail = next(f.detail for f in decision.findings if f.reason == "document.signer_expired")
    for part in (
        "cv.pdf",
        "CN=Nguyen Van A",
        "UBND huyen Di Linh",
        "54010203",
        "abababab",
        "2026-11-20T02:00:00+00:00 timestamped",
        "2028-01-01",
    ):
        assert part in detail


@pytest.mark.parametrize(
    ("unknown", "reason", "action"),
    [
        ("tempfail", "document.revocation_unavailable", Action.TEMPFAIL),
        ("reject", "document.revocation_unknown", Action.REJECT),
    ],
)
def test_unknown_revocation_is_never_silently_passed(
    unknown: str, reason: str, action: Action
) -> None:
    """Under hard-fail an unknown revocation status is a tempfail or a refusal, as policy says."""
    trust = f'[trust]\nrevocation = "hard-fail"\nunknown_revocation = "{unknown}"\n'
    decision = evaluate(
        facts(doc("a.pdf", check("temperror", "revocation_unknown"))), policy(SIGNED, trust), NOW
    )
    assert decision.action is action and decision.reasons == (reason,)


def test_exemptions_are_recorded_as_notes() -> None:
    """A claimed exemption does not refuse; it is a 'note' finding auditors can count."""
    decision = evaluate(facts(doc("ban-do.pdf"), document_class="ban-do"), policy(SIGNED), NOW)
    note = next(f for f in decision.findings if f.rule == "document-exemption")
    assert (note.outcome, note.reason) == ("note", "document.exempted")
    assert "ban-do.pdf exempt by X-Document-Class: ban-do" in note.detail
    unknown = evaluate(facts(doc("a.pdf"), document_class="mat"), policy(SIGNED), NOW)
    note = next(f for f in unknown.findings if f.rule == "document-exemption")
    assert "'mat' is not an exempt kind" in note.detail
    assert unknown.action is Action.REJECT


DKIM = '[[rules]]\nid = "sender-official-unauthenticated"\n'


def dkim(domain: str, result: str) -> DkimResult:
    return DkimResult(domain, "s1", result)


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        (facts(dkim=(dkim("lamdong.gov.vn", "pass"),)), None),  # parent domain: aligned
        (facts(dkim=(dkim("dilinh.lamdong.gov.vn", "pass"),)), None),
        (facts(trusted=True), None),  # from the district's own network
        (facts(from_="x@example.com"), None),  # not an official From
        (facts(), "sender.official_unauthenticated"),
        (facts(dkim=(dkim("example.com", "pass"),)), "sender.official_unauthenticated"),
        (facts(dkim=(dkim("evil-lamdong.gov.vn", "pass"),)), "sender.official_unauthenticated"),
        (facts(dkim=(dkim("lamdong.gov.vn", "fail"),)), "sender.official_unauthenticated"),
        (facts(dkim=(dkim("lamdong.gov.vn", "policy"),)), "sender.official_unauthenticated"),
        (facts(dkim=(dkim("lamdong.gov.vn", "temperror"),)), "sender.authentication_temperror"),
        # Organisational-domain alignment: a public suffix aligns with nothing; a sibling
        # host of the same registered domain aligns.
        (facts(dkim=(dkim("gov.vn", "pass"),)), "sender.official_unauthenticated"),
        (facts(from_="vanthu@lamdong.gov.vn", dkim=(dkim("mail.lamdong.gov.vn", "pass"),)), None),
        (facts(dkim=(dkim("example.com", "temperror"),)), "sender.official_unauthenticated"),
    ],
)
def test_official_from_needs_aligned_dkim(case: MessageFacts, reason: str | None) -> None:
    """Official From: aligned DKIM pass or trusted network; a DNS failure is temporary."""
    decision = evaluate(case, policy(DKIM), NOW)
    assert decision.reasons == ((reason,) if reason else ())


def test_exemptions_need_the_exemption_rule() -> None:
    """Without document-exemption (or with it off) nothing is exempt: never silently assumed."""
    only_required = '[[rules]]\nid = "document-signature-required"\n'
    case = facts(doc("map.dwg"), document_class="ban-do")
    assert evaluate(case, policy(only_required), NOW).reasons == ("document.unsigned",)
    off = '[[rules]]\nid = "document-exemption"\nmode = "off"\n' + only_required
    assert evaluate(case, policy(off), NOW).reasons == ("document.unsigned",)


ADVISORIES = (
    '[[rules]]\nid = "advisory-public-service-registration"\n'
    '[[rules]]\nid = "advisory-public-contact-in-body"\n'
)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({}, None),
        (
            {
                "mail_from": "notification@facebookmail.com",
                "from_": "Facebook <notification@facebookmail.com>",
            },
            "advisory.public_service_registration",
        ),
        (
            {
                "mail_from": "alerts@info.vietcombank.com.vn",
                "from_": "VCB <alerts@info.vietcombank.com.vn>",
            },
            "advisory.public_service_registration",
        ),
        ({"body_addresses": ("nguyenvana@gmail.com",)}, "advisory.public_contact_in_body"),
        ({"body_addresses": ("vanthu@lamdong.gov.vn",)}, None),
    ],
)
def test_advisories_are_counted_never_refused(
    change: dict[str, object], reason: str | None
) -> None:
    """Registrations with social networks or banks, and personal contacts printed: notes only."""
    from_ = str(change.pop("from_", "a@dilinh.lamdong.gov.vn"))
    case = dataclasses.replace(facts(from_=from_), **change)  # type: ignore[arg-type]
    decision = evaluate(case, policy(ADVISORIES), NOW)
    assert decision.action is Action.ACCEPT
    notes = [f.reason for f in decision.findings if f.outcome == "note"]
    assert notes == ([reason] if reason else [])


_RESULT_OF = {
    "unsigned": "none",
    "unreadable": "permerror",
    "revocation_unknown": "temperror",
    "revocation_unavailable": "temperror",
}


@pytest.mark.parametrize("first", SIGNATURE_PROBLEMS)
@pytest.mark.parametrize("second", SIGNATURE_PROBLEMS)
def test_one_precedence_for_signatures_and_checks(first: str, second: str) -> None:
    """A PDF whose two signatures fail, and a document whose two checks fail, are refused for
    the same reason: the signature checks and the rule rank problems by the same one order."""
    from gateway.checks.signatures import _combine, _Outcome

    outcomes = [
        (f"s{n}", _Outcome(_RESULT_OF.get(p, "fail"), p)) for n, p in ((1, first), (2, second))
    ]
    combined = _combine("pdf", outcomes)
    checks = [check(_RESULT_OF.get(p, "fail"), p) for p in (first, second)]
    trust = '[trust]\nrevocation = "hard-fail"\nunknown_revocation = "reject"\n'
    one_check = evaluate(facts(doc("a.pdf", combined)), policy(SIGNED, trust), NOW)
    two_checks = evaluate(facts(doc("a.pdf", *checks)), policy(SIGNED, trust), NOW)
    assert one_check.reasons == two_checks.reasons
    assert combined.problem == min(first, second, key=problem_rank)


@pytest.mark.parametrize(
    ("problems", "reason"),
    [
        # What the signer did wrong speaks before a signature that could not be read...
        (("unreadable", "modified"), "document.modified_after_signing"),
        (("invalid", "modified"), "document.modified_after_signing"),
        # ...before what is wrong with a certificate; the definitive before the temporary.
        (("untrusted", "expired"), "document.signer_expired"),
        (("revocation_unavailable", "untrusted"), "document.signer_untrusted"),
        (("revocation_unavailable", "unreadable"), "document.unreadable"),
        (("unsigned", "revocation_unavailable"), "document.revocation_unavailable"),
    ],
)
def test_which_problem_speaks_for_a_document(problems: tuple[str, ...], reason: str) -> None:
    """The reason a document with several failed checks is refused for, as the policy
    reference states the order."""
    checks = [check(_RESULT_OF.get(p, "fail"), p) for p in problems]
    assert evaluate(facts(doc("a.pdf", *checks)), policy(SIGNED), NOW).reasons == (reason,)


def test_a_login_at_the_mta_proves_the_sender_and_allows_relaying() -> None:
    """An officer who logged in (SASL on submission) sends to anyone, is a proven internal
    sender (notices, scores), and needs no DKIM for an official From; the rules still judge
    what they send."""
    from policies import check_recipient
    from policies.identity import sender_authenticated

    outside = "someone@example.com"
    local = ("lamdong.gov.vn",)
    assert check_recipient(outside, client_trusted=False, local_domains=local) == "relay.denied"
    assert check_recipient(outside, client_trusted=False, local_domains=local, login="a") is None
    logged_in = dataclasses.replace(facts(), login="a.nguyen@dilinh.lamdong.gov.vn")
    assert evaluate(logged_in, policy(DKIM), NOW).action is Action.ACCEPT
    assert evaluate(facts(), policy(DKIM), NOW).reasons == ("sender.official_unauthenticated",)
    assert sender_authenticated(logged_in, policy(DKIM))  # type: ignore[arg-type]
    personal = dataclasses.replace(
        logged_in, from_fields=(AddressField.parse("From", "x@gmail.com"),)
    )
    rules = '[[rules]]\nid = "sender-personal-domain"\n'
    assert evaluate(personal, policy(rules), NOW).reasons == ("sender.personal_domain",)
