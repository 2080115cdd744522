"""Real signatures, made by a test PKI at test time, judged by gateway.checks.signatures."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.checks.signatures import (
    MAX_DOCUMENT_BYTES,
    validate_detached,
    validate_pdf,
    validate_smime,
)
from gateway.checks.trust import TrustStore
from policies.model import SIGNATURE_PROBLEMS, SignatureCheck
from tests.support.pki import (
    Identity,
    TestPKI,
    add_content_after_signing,
    countersign,
    detached_cms,
    encrypt_pdf,
    issue,
    legacy_hierarchy,
    make_crl,
    make_hybrid_pdf,
    make_pdf,
    sign_pdf,
    smime_parts,
    tamper_signature,
)

FROM = "a.nguyen@dilinh.lamdong.gov.vn"


@pytest.fixture(scope="module")
def pdf() -> bytes:
    """An unsigned one-page official letter."""
    return make_pdf("Cong van so 123/UBND-VP")


@pytest.fixture(scope="module")
def signed(pki: TestPKI, pdf: bytes) -> bytes:
    """The letter signed by a person (nonRepudiation-only certificate)."""
    return sign_pdf(pdf, pki.person)


@pytest.fixture
def now() -> datetime:
    """The validation time: a moment after every signature in this module was made."""
    return datetime.now(UTC) + timedelta(seconds=1)


def assert_signer(check: SignatureCheck, who: Identity, *, timestamped: bool = False) -> None:
    """The check names ``who`` with every Signer field filled."""
    match = [s for s in check.signers if s.fingerprint == who.fingerprint]
    assert match, check.signers
    signer = match[0]
    assert signer.subject == who.cert.subject.rfc4514_string()
    orgs = who.cert.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)
    assert signer.organisation == orgs[0].value
    assert signer.serial == who.serial
    assert signer.not_after == who.cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert signer.signing_time.endswith("Z")
    datetime.strptime(signer.signing_time, "%Y-%m-%dT%H:%M:%SZ")  # ISO 8601, UTC
    assert signer.timestamped is timestamped


def assert_check(check: SignatureCheck, method: str, result: str, problem: str) -> None:
    """Result and problem as expected; the problem is one the model knows."""
    assert (check.method, check.result, check.problem) == (method, result, problem), check
    assert problem == "" or problem in SIGNATURE_PROBLEMS
    assert check.elapsed_ms > 0


# --- PDF --------------------------------------------------------------------------------------


def test_person_signature_passes(pki: TestPKI, signed: bytes, now: datetime) -> None:
    """A valid signature by a nonRepudiation-only certificate passes."""
    check = validate_pdf(signed, pki.store(), now)
    assert_check(check, "pdf", "pass", "")
    assert_signer(check, pki.person)
    assert check.signers[0].organisation == "UBND huyen Di Linh"


def test_clerk_countersignature_passes(pki: TestPKI, signed: bytes, now: datetime) -> None:
    """A clerk's RSA-2048 signature over a signed PDF passes, and both signers are listed."""
    check = validate_pdf(countersign(signed, pki.clerk), pki.store(), now)
    assert_check(check, "pdf", "pass", "")
    assert len(check.signers) == 2
    assert_signer(check, pki.person)
    assert_signer(check, pki.clerk)


def test_unsigned_pdf_is_none(pki: TestPKI, pdf: bytes, now: datetime) -> None:
    """A PDF without a signature is ``none``/``unsigned``."""
    check = validate_pdf(pdf, pki.store(), now)
    assert_check(check, "pdf", "none", "unsigned")
    assert check.signers == ()


def test_content_added_after_signing_is_modified(
    pki: TestPKI, signed: bytes, now: datetime
) -> None:
    """A page added in an incremental update after the signature is ``modified``."""
    check = validate_pdf(add_content_after_signing(signed), pki.store(), now)
    assert_check(check, "pdf", "fail", "modified")
    assert_signer(check, pki.person)
    assert "after signing" in check.detail


def test_content_added_after_countersignature_is_modified(
    pki: TestPKI, signed: bytes, now: datetime
) -> None:
    """Content added after the last of two signatures is ``modified`` too."""
    check = validate_pdf(
        add_content_after_signing(countersign(signed, pki.clerk)), pki.store(), now
    )
    assert_check(check, "pdf", "fail", "modified")


def test_tampered_signature_is_invalid(pki: TestPKI, signed: bytes, now: datetime) -> None:
    """Flipped bytes in the signature value make it ``invalid``."""
    check = validate_pdf(tamper_signature(signed), pki.store(), now)
    assert_check(check, "pdf", "fail", "invalid")
    assert_signer(check, pki.person)


def test_signed_bytes_changed_is_invalid(pki: TestPKI, signed: bytes, now: datetime) -> None:
    """Editing a covered byte of the document (same length) breaks the digest: ``invalid``."""
    edited = signed.replace(b"123/UBND-VP", b"456/UBND-VP", 1)
    assert edited != signed
    check = validate_pdf(edited, pki.store(), now)
    assert_check(check, "pdf", "fail", "invalid")


def test_expired_signer_is_expired(pki: TestPKI, pdf: bytes, now: datetime) -> None:
    """A certificate that expired before the (claimed) signing time is ``expired``."""
    check = validate_pdf(sign_pdf(pdf, pki.expired), pki.store(), now)
    assert_check(check, "pdf", "fail", "expired")
    assert_signer(check, pki.expired)


def test_a_claimed_signing_time_does_not_rescue_an_expired_certificate(
    pki: TestPKI, pdf: bytes
) -> None:
    """Signed while the certificate was valid, judged after it expired: the signing time the
    signer claims is its own word, so without a trusted timestamp the certificate must be
    valid now (``expired``); a trusted timestamp from its validity proves the signature
    older than the expiry (``pass``). For a PDF and a detached signature alike."""
    short = issue(
        pki.issuing, "Het han sau mot ngay", now=pki.now, not_after=pki.now + timedelta(days=1)
    )
    later = datetime.now(UTC) + timedelta(days=10)
    for check in (
        validate_pdf(sign_pdf(pdf, short), pki.store(), later),
        validate_detached(pdf, detached_cms(pdf, short), pki.store(), later),
    ):
        assert_check(check, check.method, "fail", "expired")
        assert "no trusted timestamp" in check.detail
    stamped = sign_pdf(pdf, short, timestamp=pki.tsa)
    assert_check(validate_pdf(stamped, pki.store(), later), "pdf", "pass", "")


def test_revoked_signer_is_revoked(pki: TestPKI, pdf: bytes, now: datetime) -> None:
    """A certificate on the issuing CA's CRL is ``revoked``, under soft-fail and hard-fail."""
    document = sign_pdf(pdf, pki.revoked)
    for mode in ("soft-fail", "hard-fail"):
        check = validate_pdf(document, pki.store(revocation=mode), now)
        assert_check(check, "pdf", "fail", "revoked")
        assert_signer(check, pki.revoked)


def test_revocation_off_ignores_crls(pki: TestPKI, pdf: bytes, now: datetime) -> None:
    """With revocation off, a listed certificate is not looked up."""
    check = validate_pdf(sign_pdf(pdf, pki.revoked), pki.store(revocation="off"), now)
    assert_check(check, "pdf", "pass", "")


def test_untrusted_root_is_untrusted(pki: TestPKI, pdf: bytes, now: datetime) -> None:
    """A signer under a root the store does not hold is ``untrusted``."""
    check = validate_pdf(sign_pdf(pdf, pki.stranger), pki.store(), now)
    assert_check(check, "pdf", "fail", "untrusted")
    assert_signer(check, pki.stranger)


def test_intermediate_from_store_builds_the_path(pki: TestPKI, pdf: bytes, now: datetime) -> None:
    """A signature embedding only the signer's certificate chains through the store's CA."""
    bare_chain = replace(pki.person, chain=())
    document = sign_pdf(pdf, bare_chain)
    assert_check(validate_pdf(document, pki.store(), now), "pdf", "pass", "")
    without = validate_pdf(document, pki.store(intermediates=False), now)
    assert_check(without, "pdf", "fail", "untrusted")


def test_wrong_key_usage_is_untrusted(pki: TestPKI, pdf: bytes, now: datetime) -> None:
    """A certificate without digitalSignature or nonRepudiation may not sign documents."""
    encipher = issue(
        pki.issuing, "May chu ma hoa", now=pki.now, non_repudiation=False, key_encipherment=True
    )
    check = validate_pdf(sign_pdf(pdf, encipher), pki.store(), now)
    assert_check(check, "pdf", "fail", "untrusted")


_DOCUMENT_SIGNING = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.36")  # RFC 9336
_EKU = x509.oid.ExtendedKeyUsageOID


@pytest.mark.parametrize(
    ("purposes", "result"),
    [
        ((_EKU.SERVER_AUTH,), "fail"),
        ((_EKU.CLIENT_AUTH,), "fail"),
        ((_EKU.CODE_SIGNING,), "fail"),
        ((_EKU.TIME_STAMPING,), "fail"),
        ((_EKU.EMAIL_PROTECTION,), "pass"),
        ((_EKU.CLIENT_AUTH, _EKU.EMAIL_PROTECTION), "pass"),
        ((_DOCUMENT_SIGNING,), "pass"),
        ((_EKU.ANY_EXTENDED_KEY_USAGE,), "pass"),
    ],
    ids=lambda v: v if isinstance(v, str) else "+".join(o._name for o in v),
)
def test_extended_key_usage_must_name_a_signing_purpose(
    pki: TestPKI,
    pdf: bytes,
    now: datetime,
    purposes: tuple[x509.ObjectIdentifier, ...],
    result: str,
) -> None:
    """A certificate whose extended key usage names only TLS, code or timestamp purposes may
    not sign documents (RFC 5280 binds the key to the purposes listed); e-mail protection,
    document signing and any purpose may. Without the extension (the person's certificate
    above), any purpose. The same for a PDF and a detached signature."""
    signer = issue(pki.issuing, "Chung thu thu nghiem", now=pki.now, eku=purposes)
    for check in (
        validate_pdf(sign_pdf(pdf, signer), pki.store(), now),
        validate_detached(pdf, detached_cms(pdf, signer), pki.store(), now),
    ):
        assert_check(check, check.method, result, "" if result == "pass" else "untrusted")


def test_a_ca_certificate_does_not_sign_documents(pki: TestPKI, pdf: bytes, now: datetime) -> None:
    """A CA certificate with the signing key usages too (as some CAs issue them) chains to the
    root, but only end-entity certificates sign: ``untrusted``, the reason in the detail."""
    ca = issue(pki.issuing, "CA cap duoi", now=pki.now, digital_signature=True, ca=True)
    for check in (
        validate_pdf(sign_pdf(pdf, ca), pki.store(), now),
        validate_detached(pdf, detached_cms(pdf, ca), pki.store(), now),
    ):
        assert_check(check, check.method, "fail", "untrusted")
        assert "CA certificate" in check.detail


def test_corrupt_pdf_is_unreadable(pki: TestPKI, signed: bytes, now: datetime) -> None:
    """A truncated PDF and non-PDF bytes are ``permerror``/``unreadable``."""
    for data in (signed[: len(signed) // 2], b"%PDF-1.7\n garbage", b"", b"\x00" * 100):
        check = validate_pdf(data, pki.store(), now)
        assert_check(check, "pdf", "permerror", "unreadable")


def test_encrypted_pdf_is_unreadable(pki: TestPKI, now: datetime) -> None:
    """An encrypted PDF cannot be checked: ``permerror``/``unreadable``."""
    check = validate_pdf(encrypt_pdf(), pki.store(), now)
    assert_check(check, "pdf", "permerror", "unreadable")
    assert "encrypted" in check.detail


def test_oversized_pdf_is_unreadable(pki: TestPKI, now: datetime) -> None:
    """A PDF over the size guard is refused unread."""
    check = validate_pdf(b"%PDF-1.7\n" + b" " * MAX_DOCUMENT_BYTES, pki.store(), now)
    assert_check(check, "pdf", "permerror", "unreadable")


def test_hybrid_reference_pdf_needs_opt_in(pki: TestPKI, now: datetime) -> None:
    """A signed Office-style hybrid-reference PDF is refused unless allowed, then judged."""
    document = sign_pdf(make_hybrid_pdf(), pki.person)
    refused = validate_pdf(document, pki.store(), now)
    assert_check(refused, "pdf", "permerror", "unreadable")
    assert "hybrid" in refused.detail
    allowed = validate_pdf(document, pki.store(), now, allow_hybrid_xrefs=True)
    assert_check(allowed, "pdf", "pass", "")
    assert_signer(allowed, pki.person)
    changed = validate_pdf(
        add_content_after_signing(document), pki.store(), now, allow_hybrid_xrefs=True
    )
    assert_check(changed, "pdf", "fail", "modified")


@pytest.mark.parametrize(
    "mangle",
    [
        lambda d: d.replace(b"/ByteRange [", b"/ByteRange [1 ", 1),
        lambda d: d.replace(b"/Contents <30", b"/Contents <31", 1),
        lambda d: d.replace(b"/SubFilter /ETSI.CAdES.detached", b"/SubFilter /Adobe.PPKLite", 1),
        lambda d: d.replace(b"/Type /Sig", b"/Type /Xyz", 1),
    ],
    ids=["byterange", "cms-tag", "subfilter", "type"],
)
def test_hostile_signature_dictionary_never_raises(
    pki: TestPKI, signed: bytes, now: datetime, mangle: object
) -> None:
    """Mangled signature dictionaries give a failure result, never an exception or a pass."""
    data = mangle(signed)  # type: ignore[operator]
    assert data != signed
    check = validate_pdf(data, pki.store(), now)
    assert check.result in ("fail", "permerror"), check
    assert check.problem in SIGNATURE_PROBLEMS


# --- the time of signing ----------------------------------------------------------------------


def test_timestamp_is_reported(pki: TestPKI, pdf: bytes, now: datetime) -> None:
    """A signature timestamp from a trusted TSA makes ``timestamped`` true."""
    check = validate_pdf(sign_pdf(pdf, pki.person, timestamp=pki.tsa), pki.store(), now)
    assert_check(check, "pdf", "pass", "")
    assert_signer(check, pki.person, timestamped=True)


def test_timestamp_proves_signing_before_expiry(pki: TestPKI, pdf: bytes, now: datetime) -> None:
    """An expired-since certificate passes when a timestamp proves it signed while valid."""
    proven = pki.now - timedelta(days=3)
    document = sign_pdf(pdf, pki.expired, timestamp=pki.tsa, timestamp_at=proven)
    check = validate_pdf(document, pki.store(), now)
    assert_check(check, "pdf", "pass", "")
    assert check.signers[0].signing_time == proven.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert check.signers[0].timestamped


def test_timestamp_before_revocation_passes(pki: TestPKI, pdf: bytes, now: datetime) -> None:
    """Revoked after a proven signing time: the signature stands; before it: revoked."""
    before = sign_pdf(pdf, pki.revoked, timestamp=pki.tsa, timestamp_at=pki.now - timedelta(days=5))
    assert_check(validate_pdf(before, pki.store(), now), "pdf", "pass", "")
    hard = pki.store(revocation="hard-fail")
    assert_check(validate_pdf(before, hard, now), "pdf", "pass", "")
    after = sign_pdf(pdf, pki.revoked, timestamp=pki.tsa, timestamp_at=pki.now - timedelta(days=1))
    assert_check(validate_pdf(after, pki.store(), now), "pdf", "fail", "revoked")


def test_untrusted_tsa_is_ignored(pki: TestPKI, pdf: bytes, now: datetime) -> None:
    """A timestamp from a TSA outside the store proves nothing: the claimed time is used."""
    rogue_tsa = issue(
        pki.rogue_root,
        "Rogue TSA",
        now=pki.now,
        key=pki.tsa.key,
        digital_signature=True,
        non_repudiation=False,
        eku=(x509.ExtendedKeyUsageOID.TIME_STAMPING,),
    )
    document = sign_pdf(pdf, pki.expired, timestamp=rogue_tsa, timestamp_at=pki.now - timedelta(5))
    check = validate_pdf(document, pki.store(), now)
    assert_check(check, "pdf", "fail", "expired")
    assert not check.signers[0].timestamped


# --- revocation modes -------------------------------------------------------------------------


def test_stale_crl_under_hard_fail_is_temporary(pki: TestPKI, signed: bytes, now: datetime) -> None:
    """Under hard-fail, a CRL whose nextUpdate has passed gives ``revocation_unavailable``."""
    store = pki.store(revocation="hard-fail", crls=(pki.root_crl, pki.stale_issuing_crl))
    check = validate_pdf(signed, store, now)
    assert_check(check, "pdf", "temperror", "revocation_unavailable")
    assert_signer(check, pki.person)


def test_old_crl_under_max_age_is_temporary(pki: TestPKI, signed: bytes, now: datetime) -> None:
    """A CRL older than ``max_crl_age_days`` counts as out of date even before nextUpdate."""
    old = make_crl(
        pki.issuing,
        now=pki.now,
        this_update=pki.now - timedelta(days=4),
        next_update=pki.now + timedelta(days=3),
    )
    crls = (pki.root_crl, old)
    lax = pki.store(revocation="hard-fail", crls=crls)
    assert_check(validate_pdf(signed, lax, now), "pdf", "pass", "")
    strict = pki.store(revocation="hard-fail", crls=crls, max_crl_age_days=2)
    assert_check(validate_pdf(signed, strict, now), "pdf", "temperror", "revocation_unavailable")


def test_stale_crl_still_proves_revocation(pki: TestPKI, pdf: bytes, now: datetime) -> None:
    """An out-of-date CRL that lists the signer still makes it ``revoked`` (not temporary)."""
    store = pki.store(revocation="hard-fail", crls=(pki.root_crl, pki.stale_issuing_crl))
    check = validate_pdf(sign_pdf(pdf, pki.revoked), store, now)
    assert_check(check, "pdf", "fail", "revoked")


def test_no_revocation_info_under_hard_fail_is_unknown(
    pki: TestPKI, pdf: bytes, now: datetime
) -> None:
    """A certificate naming no CRL, with no CRL held for it, is not silently passed."""
    store = pki.store(revocation="hard-fail", crls=(pki.root_crl,))
    check = validate_pdf(sign_pdf(pdf, pki.bare), store, now)
    assert_check(check, "pdf", "temperror", "revocation_unknown")
    assert_signer(check, pki.bare)


def test_missing_crl_under_hard_fail_is_unknown(pki: TestPKI, signed: bytes, now: datetime) -> None:
    """A certificate naming a CRL we do not hold: ``revocation_unknown``."""
    store = pki.store(revocation="hard-fail", crls=(pki.root_crl,))
    assert_check(validate_pdf(signed, store, now), "pdf", "temperror", "revocation_unknown")


def test_held_crl_covers_certificate_naming_none(pki: TestPKI, pdf: bytes, now: datetime) -> None:
    """Under hard-fail the issuer's full CRL establishes status even without a CRL pointer."""
    check = validate_pdf(sign_pdf(pdf, pki.bare), pki.store(revocation="hard-fail"), now)
    assert_check(check, "pdf", "pass", "")


def test_unknown_revocation_is_reported_not_judged(
    pki: TestPKI, signed: bytes, now: datetime
) -> None:
    """An unknown status is a temporary problem whatever the policy: what it comes to (4xx or
    a refusal) is the policy's ``unknown_revocation``, applied by the document rules alone."""
    store = pki.store(revocation="hard-fail", crls=(pki.root_crl,))
    check = validate_pdf(signed, store, now)
    assert_check(check, "pdf", "temperror", "revocation_unknown")
    assert "revocation information" in check.detail


async def test_an_unknown_status_is_validated_once_per_trust_store(
    pki: TestPKI, signed: bytes
) -> None:
    """No CRL of the issuer: the same document is not validated again for every message (a
    circular to fifty units) until the trust store changes, as any definitive result."""
    from gateway.checks.validation import PoolValidator

    validator = PoolValidator(
        pki.store(revocation="hard-fail", crls=(pki.root_crl,)), processes=False, workers=1
    )
    try:
        first = await validator.pdf(signed)
        second = await validator.pdf(signed)
    finally:
        validator.close()
    assert (first.problem, first.cached, second.problem, second.cached) == (
        "revocation_unknown",
        False,
        "revocation_unknown",
        True,
    )


def test_soft_fail_without_crl_passes(pki: TestPKI, signed: bytes, now: datetime) -> None:
    """Under soft-fail, no CRL at all is no problem."""
    check = validate_pdf(signed, pki.store(crls=()), now)
    assert_check(check, "pdf", "pass", "")


def test_soft_fail_with_stale_crl_passes(pki: TestPKI, signed: bytes, now: datetime) -> None:
    """Under soft-fail, an out-of-date CRL that does not list the signer is no problem."""
    store = pki.store(crls=(pki.root_crl, pki.stale_issuing_crl))
    assert_check(validate_pdf(signed, store, now), "pdf", "pass", "")


# --- SHA-1 is allowed for the legacy (G1-like) hierarchy only ---------------------------------


def test_sha1_chain_allowed_only_under_a_legacy_root(
    pki: TestPKI, pdf: bytes, now: datetime
) -> None:
    """SHA-1 certificates pass under a root marked legacy, and nowhere else."""
    root, ca, signer = legacy_hierarchy(pki.now)
    document = sign_pdf(pdf, signer)
    legacy = TrustStore(
        roots=(root.der,), intermediates=(ca.der,), sha1_roots=frozenset({root.fingerprint})
    )
    assert_check(validate_pdf(document, legacy, now), "pdf", "pass", "")
    plain = TrustStore(roots=(root.der,), intermediates=(ca.der,), sha1_roots=frozenset())
    check = validate_pdf(document, plain, now)
    assert_check(check, "pdf", "fail", "untrusted")
    assert "sha1" in check.detail

    # A SHA-1 certificate from a modern CA in the same store is still refused.
    sha1_elsewhere = issue(pki.issuing, "Do Van F", now=pki.now, sha1=True)
    mixed = TrustStore(
        roots=(root.der, pki.root.der),
        intermediates=(ca.der, pki.issuing.der),
        sha1_roots=frozenset({root.fingerprint}),
    )
    assert_check(
        validate_pdf(sign_pdf(pdf, sha1_elsewhere), mixed, now), "pdf", "fail", "untrusted"
    )
    assert_check(validate_pdf(document, mixed, now), "pdf", "pass", "")


# --- detached CMS -----------------------------------------------------------------------------


def test_detached_cms_over_right_content_passes(pki: TestPKI, now: datetime) -> None:
    """A .p7s over exactly the content passes, DER or PEM."""
    content = make_pdf("Quyet dinh so 45/QD-UBND")
    for pem in (False, True):
        check = validate_detached(
            content, detached_cms(content, pki.clerk, pem=pem), pki.store(), now
        )
        assert_check(check, "cms", "pass", "")
        assert_signer(check, pki.clerk)


def test_rsa_pss_signatures_pass(pki: TestPKI, now: datetime) -> None:
    """RSASSA-PSS (newer Outlook, smart cards) passes like PKCS#1 v1.5, and a PSS signature
    over other bytes is still ``invalid``."""
    content = b"Noi dung van ban\r\n"
    signature = detached_cms(content, pki.clerk, pss=True)
    assert_check(validate_detached(content, signature, pki.store(), now), "cms", "pass", "")
    changed = validate_detached(content + b".", signature, pki.store(), now)
    assert_check(changed, "cms", "fail", "invalid")


def test_detached_cms_over_other_content_is_invalid(pki: TestPKI, now: datetime) -> None:
    """The same .p7s over different bytes is ``invalid``."""
    content = make_pdf("Quyet dinh so 45/QD-UBND")
    signature = detached_cms(content, pki.clerk)
    check = validate_detached(content + b"\n", signature, pki.store(), now)
    assert_check(check, "cms", "fail", "invalid")
    assert_signer(check, pki.clerk)


@pytest.mark.parametrize("garbage", [b"", b"not a signature", b"\x30\x03\x02\x01\x01", b"\x30\x80"])
def test_garbage_cms_is_invalid(pki: TestPKI, now: datetime, garbage: bytes) -> None:
    """Bytes that are no CMS SignedData are ``invalid``, never an exception."""
    check = validate_detached(b"content", garbage, pki.store(), now)
    assert_check(check, "cms", "fail", "invalid")


def test_detached_cms_untrusted_and_revoked(pki: TestPKI, now: datetime) -> None:
    """The trust rules are the PDF's: untrusted root, revoked signer."""
    content = b"Bao cao tuan\r\n"
    stranger = validate_detached(content, detached_cms(content, pki.stranger), pki.store(), now)
    assert_check(stranger, "cms", "fail", "untrusted")
    revoked = validate_detached(content, detached_cms(content, pki.revoked), pki.store(), now)
    assert_check(revoked, "cms", "fail", "revoked")


# --- S/MIME -----------------------------------------------------------------------------------


MIME_PART = (
    b"Content-Type: text/plain; charset=utf-8\n"
    b"Content-Transfer-Encoding: 7bit\n\n"
    b"Kinh gui van thu,\nBao cao dinh kem.\n"
)


def test_smime_from_matching_address_passes(pki: TestPKI, now: datetime) -> None:
    """An S/MIME signature by a certificate naming the From address passes (any case)."""
    part, signature = smime_parts(MIME_PART, pki.person)
    assert b"\r\n" in part
    check = validate_smime(part, signature, pki.store(), now, FROM.upper())
    assert_check(check, "smime", "pass", "")
    assert_signer(check, pki.person)


def test_smime_from_other_address_is_untrusted(pki: TestPKI, now: datetime) -> None:
    """A valid S/MIME signature whose certificate names another address is ``untrusted``."""
    part, signature = smime_parts(MIME_PART, pki.person)
    check = validate_smime(part, signature, pki.store(), now, "vanthu@dilinh.lamdong.gov.vn")
    assert_check(check, "smime", "fail", "untrusted")
    assert "vanthu@dilinh.lamdong.gov.vn" in check.detail
    assert FROM in check.detail


def test_smime_altered_part_is_invalid(pki: TestPKI, now: datetime) -> None:
    """Changing the signed part (even its line endings) is ``invalid``."""
    part, signature = smime_parts(MIME_PART, pki.person)
    check = validate_smime(part.replace(b"\r\n", b"\n"), signature, pki.store(), now, FROM)
    assert_check(check, "smime", "fail", "invalid")


# --- the boundary -----------------------------------------------------------------------------


def test_naive_now_is_a_caller_error(pki: TestPKI, signed: bytes) -> None:
    """A naive ``now`` is refused loudly, not turned into a verdict."""
    with pytest.raises(ValueError, match="timezone"):
        validate_pdf(signed, pki.store(), datetime.now())


def test_real_trust_store_rejects_test_signature(signed: bytes, now: datetime) -> None:
    """The shipped Vietnamese roots do not trust the test PKI."""
    from gateway.checks.trust import default_trust_store

    check = validate_pdf(signed, default_trust_store(), now)
    assert_check(check, "pdf", "fail", "untrusted")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4)
)
def test_flipped_bytes_never_raise(
    pki: TestPKI, signed: bytes, flips: list[tuple[int, int]]
) -> None:
    """Random byte changes to a signed PDF and its detached twin give a verdict, never a crash."""
    now = datetime.now(UTC)
    pdf = bytearray(signed)
    for where, value in flips:
        pdf[where % len(pdf)] = value
    check = validate_pdf(bytes(pdf), pki.store(), now)
    assert check.result in ("pass", "fail", "none", "permerror", "temperror")
    assert check.problem == "" or check.problem in SIGNATURE_PROBLEMS
    signature = bytearray(detached_cms(b"noi dung", pki.person))
    for where, value in flips:
        signature[where % len(signature)] = value
    check = validate_detached(b"noi dung", bytes(signature), pki.store(), now)
    assert check.problem == "" or check.problem in SIGNATURE_PROBLEMS
