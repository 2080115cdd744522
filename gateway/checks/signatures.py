"""Digital-signature checks on official documents: signed PDFs, detached CMS, S/MIME.

Each public function is synchronous and pure apart from the CPU it burns (no network, no
clock: ``now`` is passed in), so the gateway runs it in a worker process under a wall-clock
timeout. Each returns a :class:`policies.model.SignatureCheck` in RFC 8601 vocabulary; what
that means for the message is for the policy rules to say.

How a signature is judged, in order (the first failure is reported):

1. *Integrity* (pyHanko): the CMS parses, its message digest matches the signed bytes and the
   signature verifies under the signer's certificate, with SHA-2 digests → else ``invalid``.
   For a PDF, the signature's byte range must cover its whole revision, and the changes made
   after it (pyHanko's difference analysis) may only be further signatures, each filling its
   own field — for the *last* signature, only DSS/validation data and document timestamps →
   else ``modified``. pyHanko's form-filling level allows more than that; the gateway also
   refuses another field filled in (its value or appearance differs from the signed
   revision's), a form set to redraw fields from their values (``NeedAppearances``), bytes
   after the last signature that are not whole parsed revisions (objects with no xref, a
   ``startxref`` that leads back: repairing readers show them), an update that breaks the
   file after a signed revision, and a later catalog without the signatures.
2. *Time of signing*: a signature timestamp token that verifies and whose TSA chains to the
   trust store proves it (``timestamped``); otherwise the time the signer claims (the CMS
   signingTime attribute, else the PDF's /M), never later than ``now``. With neither, ``now``.
3. *Chain* (pyhanko-certvalidator, no fetching): a path from the signer's certificate to a root
   in the store, built from the store's intermediates and the certificates in the signature,
   every certificate valid at the time of signing *proven by a trusted timestamp*, else
   *now* (a claimed time proves nothing: an expired certificate is not rescued by the signer
   saying it signed earlier) → else ``untrusted`` or ``expired``; the signer's key usage must
   include digitalSignature or nonRepudiation (VGCA signing certificates often carry only
   nonRepudiation), its extended key usage, if any, a signing purpose, and it must not be
   a CA certificate.
4. *Revocation*, by the store's mode (see :class:`gateway.checks.trust.TrustStore`), from the
   store's CRLs only. A certificate on a CRL is ``revoked`` when revoked before a *proven*
   signing time; without a timestamp any revocation counts, because a claimed time is the
   signer's word (a stolen key could claim a time before the revocation). Under hard-fail every
   certificate below the root needs a current CRL: a CRL held but out of date (nextUpdate
   passed, or older than ``max_crl_age_days``) is ``revocation_unavailable`` (temperror); no
   CRL, or a certificate no CRL speaks for, is ``revocation_unknown`` (temperror); what that
   comes to is the policy's ``unknown_revocation``, applied by the document rules alone.

SHA-1 is refused everywhere except (a) certificate and CRL signatures made by a key the store
allows SHA-1 for (the VGCA G1 root and CA keys it verifiably certified:
:data:`gateway.checks.trust.LEGACY_SHA1_ROOTS`), and (b) digests inside timestamp tokens (old TSAs).

Hostile input never raises: parse errors become ``permerror``/``unreadable`` (the container)
or ``fail``/``invalid`` (the signature); an unexpected exception is logged with its traceback
and reported as ``permerror``/``unreadable`` — never as a pass.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import itertools
import logging
import re
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from io import BytesIO
from typing import Any

from asn1crypto import algos, cms, core, crl, keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.utils import CryptographyDeprecationWarning

from gateway.checks.trust import TrustStore, fingerprint
from policies.model import SignatureCheck, Signer, problem_rank

# pyHanko imports cryptography's DSA key class, which cryptography deprecates with a warning
# at import. It is about pyHanko's import, not anything the gateway does (DSA signatures are
# refused as a weak algorithm anyway); hide that one warning, here only, so that no command
# prints it to an admin.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "DSA is deprecated", CryptographyDeprecationWarning)
    from pyhanko.pdf_utils.misc import PdfError
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign.diff_analysis import DiffResult, ModificationLevel
    from pyhanko.sign.fields import SigSeedSubFilter, enumerate_sig_fields
    from pyhanko.sign.general import CMSExtractionError, CMSStructuralError, extract_signer_info
    from pyhanko.sign.validation import (
        EmbeddedPdfSignature,
        SignatureCoverageLevel,
        async_validate_detached_cms,
        async_validate_pdf_signature,
    )
    from pyhanko.sign.validation.errors import SignatureValidationError
    from pyhanko.sign.validation.settings import KeyUsageConstraints
    from pyhanko.sign.validation.status import StandardCMSSignatureStatus
    from pyhanko_certvalidator import ValidationContext, find_valid_path
    from pyhanko_certvalidator.authority import Authority
    from pyhanko_certvalidator.errors import (
        DisallowedAlgorithmError,
        ExpiredError,
        InsufficientRevinfoError,
        NotYetValidError,
        PathBuildingError,
        RevokedError,
        ValidationError,
    )
    from pyhanko_certvalidator.path import ValidationPath
    from pyhanko_certvalidator.policy_decl import (
        NO_REVOCATION,
        AlgorithmUsageConstraint,
        AlgorithmUsagePolicy,
        CertRevTrustPolicy,
        DisallowWeakAlgorithmsPolicy,
        RevocationCheckingPolicy,
        RevocationCheckingRule,
    )
    from pyhanko_certvalidator.sig_validate import DefaultSignatureValidator
    from pyhanko_certvalidator.validate import async_validate_path

__all__ = [
    "CLOCK_SKEW",
    "MAX_DOCUMENT_BYTES",
    "MAX_PDF_SIGNATURES",
    "MAX_SIGNATURE_BYTES",
    "quiet_library_logs",
    "validate_detached",
    "validate_pdf",
    "validate_smime",
]

MAX_DOCUMENT_BYTES = 50 * 1024 * 1024  # a PDF or detached content larger than this is refused
MAX_SIGNATURE_BYTES = 2 * 1024 * 1024  # a .p7s / S/MIME signature larger than this is refused
MAX_PDF_SIGNATURES = 20  # each costs a difference analysis; no real document has more
CLOCK_SKEW = timedelta(minutes=5)  # tolerance for signer and CRL clocks

_log = logging.getLogger("congvu.signatures")

# digitalSignature OR nonRepudiation: VGCA personal certificates often assert only the latter.
# An extended key usage, where the certificate has one, must name a purpose that signs
# documents (RFC 5280 4.2.1.12 binds the key to the purposes listed, critical or not):
# e-mail protection (what S/MIME and most personal signing certificates carry), document
# signing (RFC 9336), Microsoft's and Adobe's document-signing purposes, or any purpose. A
# certificate for TLS servers or clients, or for code, does not sign official documents.
# Checked by congvu itself (in _Judge._chain), not handed to pyHanko: pyHanko rebuilds the
# constraints it is given without explicit_extd_key_usage_required, and then refuses every
# certificate without the extension.
_SIGNER_KEY_USAGE = KeyUsageConstraints(
    key_usage={"digital_signature", "non_repudiation"}, match_all_key_usages=False
)
_SIGNER_PURPOSES = KeyUsageConstraints(
    extd_key_usage={
        "email_protection",
        "1.3.6.1.5.5.7.3.36",  # id-kp-documentSigning, RFC 9336
        "document_signing",
        "microsoft_document_signing",
        "adobe_authentic_documents_trust",
        "any_extended_key_usage",
    },
    explicit_extd_key_usage_required=False,  # no extension at all: any purpose
)
_WEAK_DIGESTS = frozenset({"md2", "md5", "sha1"})
_TS_WEAK_DIGESTS = frozenset({"md2", "md5"})  # timestamp tokens may still use SHA-1
_PDF_SUBFILTERS = frozenset(
    {SigSeedSubFilter.ADOBE_PKCS7_DETACHED.value, SigSeedSubFilter.PADES.value}
)
_PEM_CMS = re.compile(rb"-----BEGIN (PKCS7|CMS)-----\s*(.*?)\s*-----END \1-----", re.DOTALL)


# --- public API -------------------------------------------------------------------------------


def validate_pdf(
    data: bytes, trust: TrustStore, now: datetime, *, allow_hybrid_xrefs: bool = False
) -> SignatureCheck:
    """Validate every signature embedded in a PDF (method ``pdf``).

    ``none``/``unsigned`` when the PDF has no signature; otherwise every signature must pass
    (see the module docstring) and the last one must cover the document as delivered.

    Hybrid-reference PDFs (a classic xref table plus an /XRefStm stream, as Microsoft Office
    writes them) are ``unreadable`` unless ``allow_hybrid_xrefs``: readers that follow the
    stream and readers that do not can be shown different objects, so pyHanko validates them
    only in its lenient parsing mode, which this option then uses for that file.
    """
    moment = _utc(now)
    return _run("pdf", lambda: _validate_pdf(data, trust, moment, allow_hybrid_xrefs))


def validate_detached(
    content: bytes, signature: bytes, trust: TrustStore, now: datetime
) -> SignatureCheck:
    """Validate a detached CMS signature (``.p7s``/``.sig``, DER or PEM) over ``content``."""
    moment = _utc(now)
    return _run(
        "cms",
        lambda: _validate_cms(
            "cms", content, signature, trust=trust, now=moment, from_address=None
        ),
    )


def validate_smime(
    signed_part: bytes,
    signature: bytes,
    trust: TrustStore,
    now: datetime,
    from_address: str,
) -> SignatureCheck:
    """Validate an S/MIME multipart/signed message (method ``smime``).

    ``signed_part`` is the first body part exactly as transmitted (canonical CRLF), and
    ``signature`` the application/pkcs7-signature part, decoded (DER). The signer's certificate
    must also name ``from_address`` (SAN rfc822Name or emailAddress in the subject, compared
    case-insensitively), or the result is ``fail``/``untrusted``.
    """
    moment = _utc(now)
    return _run(
        "smime",
        lambda: _validate_cms(
            "smime", signed_part, signature, trust=trust, now=moment, from_address=from_address
        ),
    )


# --- outcome plumbing -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Outcome:
    """What one signature came to."""

    result: str  # pass | fail | temperror | permerror
    problem: str = ""
    detail: str = ""
    signer: Signer | None = None


def _run(method: str, body: Callable[[], SignatureCheck]) -> SignatureCheck:
    started = time.perf_counter()
    try:
        check = body()
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 -- reported as permerror, with the traceback
        # Hostile input can reach code paths in the PDF/ASN.1 parsers that raise anything.
        # Report "could not read" (never a pass, never a claim about the signer), and keep
        # the traceback: it may equally be our bug.
        _log.warning("signature check raised", exc_info=exc)
        check = SignatureCheck(
            method,
            "permerror",
            "unreadable",
            f"could not be processed ({type(exc).__name__})",
        )
    return replace(check, elapsed_ms=round((time.perf_counter() - started) * 1000, 2))


def _combine(method: str, outcomes: list[tuple[str, _Outcome]]) -> SignatureCheck:
    """One check for several signatures: every signer is listed, and the most telling
    problem (the policy's one order, :func:`policies.model.problem_rank`) speaks."""
    signers = tuple(o.signer for _, o in outcomes if o.signer is not None)
    failing = [(label, o) for label, o in outcomes if o.problem]
    if not failing:
        notes = "; ".join(f"{label}: {o.detail}" for label, o in outcomes if o.detail)
        return SignatureCheck(method, "pass", "", notes, signers)
    label, worst = min(failing, key=lambda item: problem_rank(item[1].problem))
    detail = f"{label}: {worst.detail}" if label else worst.detail
    return SignatureCheck(method, worst.result, worst.problem, detail, signers)


def quiet_library_logs() -> None:
    """Silence pyHanko's warnings-with-traceback for expected failures (call in the worker).

    pyHanko logs every untrusted, expired or modified signature at WARNING with a traceback;
    the verdict is in the returned check already. Errors still get through.
    """
    for name in ("pyhanko", "pyhanko_certvalidator"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return moment.astimezone(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- PDF --------------------------------------------------------------------------------------


# What the PDF parser raises on malformed input (decimal.InvalidOperation is an ArithmeticError).
_PDF_ERRORS = (
    PdfError,
    ValueError,
    KeyError,
    TypeError,
    IndexError,
    AttributeError,
    EOFError,
    ArithmeticError,
    RecursionError,
)
_CMS_ERRORS = (
    SignatureValidationError,
    CMSExtractionError,
    CMSStructuralError,
    ValueError,
    KeyError,
    TypeError,
    IndexError,
    AttributeError,
    NotImplementedError,
    OverflowError,
    UnsupportedAlgorithm,
    x509.InvalidVersion,
)


def _validate_pdf(
    data: bytes, trust: TrustStore, now: datetime, allow_hybrid_xrefs: bool
) -> SignatureCheck:
    if len(data) > MAX_DOCUMENT_BYTES:
        return SignatureCheck(
            "pdf", "permerror", "unreadable", f"PDF of {len(data)} bytes is over the size limit"
        )
    try:
        reader = PdfFileReader(BytesIO(data))
        if reader.encrypted:
            return SignatureCheck("pdf", "permerror", "unreadable", "the PDF is encrypted")
        if reader.xrefs.hybrid_xrefs_present:
            if not allow_hybrid_xrefs:
                return SignatureCheck(
                    "pdf",
                    "permerror",
                    "unreadable",
                    "hybrid cross-reference PDF (as Microsoft Office writes), not allowed",
                )
            reader = PdfFileReader(BytesIO(data), strict=False)
        # Stop reading fields one past the limit: a file with 200,000 filled fields would
        # otherwise hold a worker for many seconds before being refused anyway.
        fields = list(
            itertools.islice(
                enumerate_sig_fields(reader, filled_status=True), MAX_PDF_SIGNATURES + 1
            )
        )
    except _PDF_ERRORS as exc:
        if _signed_prefix(data):
            return SignatureCheck(
                "pdf",
                "fail",
                "modified",
                _short(
                    "data that is not a readable revision was added after signing "
                    f"(readers that repair the file show it): {exc}"
                ),
            )
        return SignatureCheck(
            "pdf", "permerror", "unreadable", _short(f"not a readable PDF: {exc}")
        )

    if len(fields) > MAX_PDF_SIGNATURES:
        return SignatureCheck(
            "pdf", "permerror", "unreadable", f"{len(fields)} signatures, over the limit"
        )
    regular: list[tuple[str, EmbeddedPdfSignature]] = []
    broken: list[tuple[str, _Outcome]] = []
    for fq_name, sig_ref, sig_field in fields:
        label = f"signature field {fq_name!r}"
        try:
            sig_obj = sig_ref.get_object()
            kind = sig_obj.get("/Type", "/Sig")
            subfilter = sig_obj.get("/SubFilter")
        except _PDF_ERRORS as exc:
            broken.append(
                (label, _Outcome("permerror", "unreadable", _short(f"unreadable: {exc}")))
            )
            continue
        if kind == "/DocTimeStamp":
            # Document timestamps are LTA data; the difference analysis of the signature
            # before them decides whether they are allowed. They sign nothing of their own.
            continue
        if kind != "/Sig" or subfilter not in _PDF_SUBFILTERS:
            what = f"signature format {subfilter}" if kind == "/Sig" else f"object type {kind}"
            broken.append((label, _Outcome("permerror", "unreadable", f"unsupported {what}")))
            continue
        try:
            regular.append((label, EmbeddedPdfSignature(reader, sig_field, fq_name)))
        except (*_CMS_ERRORS, PdfError) as exc:
            broken.append(
                (label, _Outcome("fail", "invalid", _short(f"malformed signature: {exc}")))
            )

    if not regular and not broken:
        if _signed_before(data, reader):
            return SignatureCheck(
                "pdf",
                "fail",
                "modified",
                "a later revision replaced the signed document (its signatures are no longer "
                "in the catalog the reader shows)",
            )
        return SignatureCheck("pdf", "none", "unsigned", "the PDF has no signature")
    regular.sort(key=lambda item: item[1].signed_revision)
    signature_fields = frozenset(name for name, _, _ in fields)
    outcomes = broken + [
        (
            label,
            _check_pdf_signature(emb, trust, now, signature_fields, last=(i == len(regular) - 1)),
        )
        for i, (label, emb) in enumerate(regular)
    ]
    if len(outcomes) == 1:
        outcomes = [("", outcomes[0][1])]
    if regular and not any(outcome.problem for _, outcome in outcomes):
        # Only for signatures that hold: a forged byte range says nothing about the tail.
        appended = _unexplained_tail(data, reader, regular[-1][1])
        if appended is not None:
            outcomes.append(("after the last revision", appended))
    return _combine("pdf", outcomes)


# The end of a revision: its startxref, the offset and %%EOF; then only line ends or padding.
_REVISION_END = re.compile(rb"startxref\s+\d+\s*%%EOF[\s\x00]*\Z")
_MAX_PREFIXES = 8  # how many earlier %%EOF markers an unreadable file is cut at
_MAX_REVISIONS_SEARCHED = 100


def _unexplained_tail(
    data: bytes, reader: PdfFileReader, last: EmbeddedPdfSignature
) -> _Outcome | None:
    """Bytes after the last signature that are not whole revisions the reader parsed.

    The difference analysis sees only what the cross-reference sections name. Objects appended
    after ``%%EOF`` with no xref, or a revision whose ``startxref`` leads back to an earlier
    xref, are invisible to it, while a reader that repairs the file (most do, silently) shows
    them. So every byte after the last signature's byte range must belong to one of the
    revisions parsed after it: each ends in ``%%EOF``, and the file ends with the last one.
    """
    try:
        _, _, start2, len2 = (int(n) for n in last.byte_range)
    except (TypeError, ValueError):
        return None  # not a standard byte range: the signature itself fails
    tail = data[start2 + len2 :]
    later = reader.xrefs.total_revisions - 1 - last.signed_revision
    if later <= 0 and not tail.strip(b" \t\r\n\x00\x0c"):
        return None
    if later > 0 and tail.count(b"%%EOF") == later and _REVISION_END.search(tail[-256:]):
        return None
    return _Outcome(
        "fail",
        "modified",
        f"{len(tail)} bytes after the signed revisions that no cross-reference section names "
        "(readers that repair the file show them)",
    )


def _signed_prefix(data: bytes) -> bool:
    """Whether the file, cut at one of its last ``%%EOF`` markers, is a signed PDF: an update
    that breaks the file (a wrong ``startxref``, objects with no xref) was appended to it."""
    ends = [m.end() for m in re.finditer(rb"%%EOF", data)][-_MAX_PREFIXES:]
    for end in reversed(ends):
        if end >= len(data.rstrip()):
            continue  # the file itself, which did not read
        try:
            if _has_signature(PdfFileReader(BytesIO(data[:end]))):
                return True
        except _PDF_ERRORS:
            continue
    return False


def _signed_before(data: bytes, reader: PdfFileReader) -> bool:
    """Whether an earlier revision of this unsigned-looking PDF had a filled signature field:
    a later one switched the trailer's /Root (or dropped the fields) to hide them."""
    if b"/ByteRange" not in data:
        return False
    count = reader.xrefs.total_revisions - 1  # the revisions before the newest
    half = _MAX_REVISIONS_SEARCHED // 2
    # Past the limit: the first revisions, where signatures are, and the last, which an
    # attacker could otherwise pad with updates by the hundred.
    earlier = [*range(min(count, half)), *range(max(half, count - half), count)]
    for revision in earlier:
        try:
            if _has_signature(reader.get_historical_resolver(revision)):
                return True
        except _PDF_ERRORS:
            continue
    return False


def _has_signature(handler: Any) -> bool:
    """Whether the PDF (a reader, or one of its past revisions) has a filled signature
    field."""
    return next(enumerate_sig_fields(handler, filled_status=True), None) is not None


def _unseen_change(emb: EmbeddedPdfSignature, candidates: set[str] | frozenset[str]) -> str:
    """A change after the signature that pyHanko's form-filling level allows and the gateway
    does not, or "": another field filled in (a further signature fills its own field and
    nothing else), or the form told to redraw its fields from their values."""
    filled = _filled_after(emb, candidates)
    if filled:
        return f"form field {filled[0]!r} was filled in"
    try:
        before = _redraws_fields(emb.reader.get_historical_resolver(emb.signed_revision))
        after = _redraws_fields(emb.reader)
    except _PDF_ERRORS:
        return "the form could not be compared with the signed revision"
    if after and not before:
        return "the form was set to redraw its fields from their values (NeedAppearances)"
    return ""


def _redraws_fields(handler: Any) -> bool:
    """Whether the form asks readers to draw fields anew from their values: what they then
    show is no longer the appearance that was signed."""
    form = handler.root.get("/AcroForm")
    return form is not None and form.get_object().get("/NeedAppearances") == True  # noqa: E712 -- a BooleanObject


def _filled_after(emb: EmbeddedPdfSignature, candidates: set[str] | frozenset[str]) -> list[str]:
    """The fields among ``candidates`` (pyHanko's changed form fields, which also names fields
    whose widget's page was rewritten) whose value or appearance differs between the signed
    revision and the document as delivered, or that one of them lacks."""
    if not candidates:
        return []
    try:
        before = _field_states(emb.reader.get_historical_resolver(emb.signed_revision))
        after = _field_states(emb.reader)
    except _PDF_ERRORS:
        return sorted(candidates)  # what cannot be compared is not assumed unchanged
    return sorted(name for name in candidates if before.get(name) != after.get(name))


_MAX_FIELDS = 1000  # form fields compared between two revisions


def _field_states(handler: Any) -> dict[str, tuple[object, ...]]:
    """Each form field's fully qualified name -> what it shows: its value, and the state and
    normal appearance (the stream's bytes) of each of its widgets."""
    states: dict[str, tuple[object, ...]] = {}
    try:
        pending = [("", f) for f in handler.root["/AcroForm"]["/Fields"]]
    except KeyError:
        return states
    while pending and len(states) < _MAX_FIELDS:
        parent, ref = pending.pop()
        field = ref.get_object()
        title = field.get("/T")
        name = f"{parent}.{title}" if parent and title is not None else str(title or parent)
        kids = [k for k in field.get("/Kids", ()) if "/T" in k.get_object()]
        pending.extend((name, kid) for kid in kids)
        widgets = [field, *(k.get_object() for k in field.get("/Kids", ()))]
        # [] resolves an indirect value (get() would not): its object may be what changed.
        value = field["/V"] if "/V" in field else None  # noqa: SIM401
        states[name] = (repr(value), *(_appearance(w) for w in widgets))
    return states


def _appearance(widget: Any) -> tuple[object, ...]:
    """A widget's state and the bytes of its normal appearance (one stream, or one per
    state)."""
    state = repr(widget.get("/AS"))
    appearances = widget.get("/AP")
    normal = appearances.get_object().get("/N") if appearances is not None else None
    if normal is None:
        return (state,)
    normal = normal.get_object()
    streams = normal.items() if not hasattr(normal, "data") else [("", normal)]
    return (state, *sorted((str(k), v.get_object().data) for k, v in streams))


def _check_pdf_signature(
    emb: EmbeddedPdfSignature,
    trust: TrustStore,
    now: datetime,
    signature_fields: frozenset[str],
    *,
    last: bool,
) -> _Outcome:
    try:
        judge = _Judge(trust, now, emb.signed_data)
    except _CMS_ERRORS as exc:
        return _Outcome("fail", "invalid", _short(f"malformed signature ({exc})"))

    def integrity_problem(status: Any) -> _Outcome | None:
        coverage = status.coverage
        if coverage == SignatureCoverageLevel.ENTIRE_FILE:
            return None
        if coverage is None or coverage < SignatureCoverageLevel.ENTIRE_REVISION:
            return _Outcome("fail", "modified", "the signature does not cover its whole revision")
        diff = status.diff_result
        if not isinstance(diff, DiffResult):
            # pyHanko's SuspiciousModification: the changes are not of an allowed kind
            why = str(diff).split("\n", 1)[0][:120] if diff is not None else "not analysable"
            return _Outcome(
                "fail", "modified", f"content was changed or added after signing ({why})"
            )
        # After the last signature: validation data and document timestamps (LTA) only.
        # After an earlier one: those, and further signatures, each in a signature field;
        # no other field filled in (pyHanko's form-filling level allows any), whatever the
        # certification permits: a countersignature does not bless what the first signer
        # never saw.
        level = diff.modification_level
        allowed = ModificationLevel.LTA_UPDATES if last else ModificationLevel.FORM_FILLING
        if level > ModificationLevel.FORM_FILLING:
            what = "content was changed or added"
        elif status.docmdp_ok is False:
            what = "changes the certifying signature forbids were made"
        elif level > allowed:
            what = "form fields or signatures were added"
        else:
            what = _unseen_change(emb, diff.changed_form_fields - signature_fields)
        if not what:
            return None
        return _Outcome("fail", "modified", f"{what} after {'it' if last else 'signing'}")

    async def validate() -> Any:
        return await async_validate_pdf_signature(
            emb,
            signer_validation_context=judge.integrity_context(),
            ts_validation_context=judge.timestamp_context(),
            key_usage_settings=_SIGNER_KEY_USAGE,
        )

    return judge.run(validate, integrity_problem)


# --- detached CMS and S/MIME ------------------------------------------------------------------


def _validate_cms(
    method: str,
    content: bytes,
    signature: bytes,
    *,
    trust: TrustStore,
    now: datetime,
    from_address: str | None,
) -> SignatureCheck:
    if len(content) > MAX_DOCUMENT_BYTES:
        return SignatureCheck(
            method, "permerror", "unreadable", f"content of {len(content)} bytes is over the limit"
        )
    if len(signature) > MAX_SIGNATURE_BYTES:
        return SignatureCheck(
            method, "permerror", "unreadable", f"signature of {len(signature)} bytes is too large"
        )
    try:
        signed_data = _load_signed_data(signature)
        attached = signed_data["encap_content_info"]["content"].native is not None
        signer_infos = list(signed_data["signer_infos"])
        # A co-signed .p7s (officer and clerk in one file, as Decree 30 wants) carries several
        # SignerInfos; pyHanko validates one at a time, so each gets a copy of its own.
        singles = []
        for signer_info in signer_infos[: MAX_PDF_SIGNATURES + 1]:
            single = signed_data.copy()
            single["signer_infos"] = cms.SignerInfos([signer_info])
            singles.append((single, _Judge(trust, now, single)))
    except _CMS_ERRORS as exc:
        return SignatureCheck(method, "fail", "invalid", _short(f"malformed CMS signature: {exc}"))
    if attached:
        return SignatureCheck(
            method, "fail", "invalid", "the CMS signature encapsulates content; not detached"
        )

    def address_problem(status: Any) -> _Outcome | None:
        if from_address is None:
            return None
        names = _email_addresses(status.signing_cert)
        if from_address.strip().casefold() in names:
            return None
        named = ", ".join(sorted(names)) or "no e-mail address"
        return _Outcome(
            "fail",
            "untrusted",
            f"signer certificate names {named}, not the From address {from_address}",
        )

    if not signer_infos or len(signer_infos) > MAX_PDF_SIGNATURES:
        return SignatureCheck(
            method, "fail", "invalid", f"CMS signature with {len(signer_infos)} signers"
        )
    outcomes: list[tuple[str, _Outcome]] = []
    for index, (single, judge) in enumerate(singles):

        async def validate(single: cms.SignedData = single, judge: _Judge = judge) -> Any:
            return await async_validate_detached_cms(
                content,
                single,
                signer_validation_context=judge.integrity_context(),
                ts_validation_context=judge.timestamp_context(),
                key_usage_settings=_SIGNER_KEY_USAGE,
            )

        label = f"signer {index + 1}" if len(singles) > 1 else ""
        outcomes.append((label, judge.run(validate, address_problem)))
    return _combine(method, outcomes)


def _load_signed_data(signature: bytes) -> cms.SignedData:
    match = _PEM_CMS.search(signature)
    if match:
        body = b"".join(line for line in match.group(2).splitlines() if b":" not in line)
        try:
            der = base64.b64decode(body, validate=True)
        except binascii.Error as exc:
            raise ValueError("bad base64 in the PEM signature") from exc
    else:
        der = signature
    info = cms.ContentInfo.load(der, strict=True)
    if info["content_type"].native != "signed_data":
        raise ValueError(f"content type is {info['content_type'].native}, not signed data")
    signed_data = info["content"]
    if not isinstance(signed_data, cms.SignedData):
        raise ValueError("not a SignedData")
    return signed_data


def _email_addresses(cert: asn1_x509.Certificate) -> set[str]:
    parsed = x509.load_der_x509_certificate(cert.dump())
    found = {
        attr.value.strip().casefold()
        for attr in parsed.subject.get_attributes_for_oid(x509.NameOID.EMAIL_ADDRESS)
        if isinstance(attr.value, str)
    }
    try:
        san = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        found.update(name.strip().casefold() for name in san.get_values_for_type(x509.RFC822Name))
    except x509.ExtensionNotFound:
        pass
    return found


def _signed_data_certs(signed_data: cms.SignedData) -> list[asn1_x509.Certificate]:
    """Certificates in a SignedData and in its timestamp tokens (for path building)."""
    found: list[asn1_x509.Certificate] = []

    def collect(sd: cms.SignedData) -> None:
        for choice in sd["certificates"] or ():
            if choice.name == "certificate":
                found.append(choice.chosen)

    collect(signed_data)
    for signer_info in signed_data["signer_infos"]:
        for attrs, kind in (
            (signer_info["unsigned_attrs"], "signature_time_stamp_token"),
            (signer_info["signed_attrs"], "content_time_stamp"),
        ):
            if isinstance(attrs, core.Void):
                continue
            for attr in attrs:
                if attr["type"].native == kind:
                    for token in attr["values"]:
                        if isinstance(token["content"], cms.SignedData):
                            collect(token["content"])
    return found


# --- judging one signature --------------------------------------------------------------------


@dataclass(frozen=True)
class _Crl:
    asn1: crl.CertificateList
    parsed: x509.CertificateRevocationList

    def current(self, now: datetime, max_age_days: int | None) -> bool:
        """Issued (not in the future), nextUpdate not passed, and young enough."""
        this_update = self.parsed.last_update_utc
        next_update = self.parsed.next_update_utc
        if this_update > now + CLOCK_SKEW:
            return False
        if next_update is None or next_update < now - CLOCK_SKEW:
            return False
        return max_age_days is None or this_update >= now - timedelta(days=max_age_days)


@dataclass
class _Materials:
    """A trust store parsed once per version (and per worker process)."""

    roots: list[asn1_x509.Certificate]
    intermediates: list[asn1_x509.Certificate]
    crls: list[_Crl]
    sha1_root_keys: frozenset[bytes]
    # (CRL index, issuer key) -> the CRL's signature verifies under that key
    crl_signed: dict[tuple[int, bytes], bool] = field(default_factory=dict)


_MATERIALS: OrderedDict[str, _Materials] = OrderedDict()
_MATERIALS_KEPT = 4
_MATERIALS_LOCK = threading.Lock()


def _materials(trust: TrustStore) -> _Materials:
    with _MATERIALS_LOCK:
        cached = _MATERIALS.get(trust.version)
        if cached is not None:
            _MATERIALS.move_to_end(trust.version)
            return cached
    roots = [asn1_x509.Certificate.load(der) for der in trust.roots]
    made = _Materials(
        roots=roots,
        intermediates=[asn1_x509.Certificate.load(der) for der in trust.intermediates],
        crls=[
            _Crl(crl.CertificateList.load(der), x509.load_der_x509_crl(der)) for der in trust.crls
        ],
        sha1_root_keys=frozenset(
            root.public_key.dump() for root in roots if fingerprint(root.dump()) in trust.sha1_roots
        ),
    )
    with _MATERIALS_LOCK:
        _MATERIALS[trust.version] = made
        while len(_MATERIALS) > _MATERIALS_KEPT:
            _MATERIALS.popitem(last=False)
    return made


class _ScopedSha1Policy(AlgorithmUsagePolicy):
    """SHA-2 everywhere, except SHA-1 signatures made with an allowed legacy CA key.

    Path validation asks about a certificate's signature with its *issuer's* key; CMS
    validation asks with the signer's own key. ``ca_keys`` tells the two apart. With
    ``sha1_cms`` (the timestamp context) a key that is no CA's — the TSA's — may sign its
    token with SHA-1; TSA *certificates* still follow the certificate rule.
    """

    def __init__(
        self, legacy_keys: frozenset[bytes], ca_keys: frozenset[bytes], *, sha1_cms: bool
    ) -> None:
        self._legacy = legacy_keys
        self._ca_keys = ca_keys
        self._sha1_cms = sha1_cms
        # (pyhanko-certvalidator leaves this constructor unannotated)
        self._strict = DisallowWeakAlgorithmsPolicy(_WEAK_DIGESTS)  # type: ignore[no-untyped-call]
        self._lenient = DisallowWeakAlgorithmsPolicy(_TS_WEAK_DIGESTS)  # type: ignore[no-untyped-call]

    def digest_algorithm_allowed(
        self, algo: algos.DigestAlgorithm, moment: datetime | None
    ) -> AlgorithmUsageConstraint:
        policy = self._lenient if self._sha1_cms else self._strict
        return policy.digest_algorithm_allowed(algo, moment)

    def signature_algorithm_allowed(
        self,
        algo: algos.SignedDigestAlgorithm,
        moment: datetime | None,
        public_key: keys.PublicKeyInfo | None,
    ) -> AlgorithmUsageConstraint:
        key = public_key.dump() if public_key is not None else b""
        lenient = key in self._legacy or (self._sha1_cms and key not in self._ca_keys)
        policy = self._lenient if lenient else self._strict
        return policy.signature_algorithm_allowed(algo, moment, public_key)


class _Judge:
    """Validation contexts and the verdict for one signature (one CMS SignedData)."""

    def __init__(self, trust: TrustStore, now: datetime, signed_data: cms.SignedData):
        self.trust = trust
        self.now = now
        self.m = _materials(trust)
        self.signer_info = extract_signer_info(signed_data)  # exactly one SignerInfo
        embedded = _signed_data_certs(signed_data)
        self.others = [*self.m.intermediates, *embedded]
        cas = [*self.m.roots, *self.m.intermediates, *(c for c in embedded if _is_ca(c))]
        ca_keys = frozenset(c.public_key.dump() for c in cas)
        legacy = _legacy_keys(self.m.sha1_root_keys, cas)
        self.policy = _ScopedSha1Policy(legacy, ca_keys, sha1_cms=False)
        self.ts_policy = _ScopedSha1Policy(legacy, ca_keys, sha1_cms=True)
        self.current_crls = [c for c in self.m.crls if c.current(now, trust.max_crl_age_days)]

    def _context(
        self,
        moment: datetime,
        policy: AlgorithmUsagePolicy,
        revinfo: RevocationCheckingPolicy,
    ) -> ValidationContext:
        # retroactive_revinfo: a CRL issued after the signing time still tells whether the
        # certificate had been revoked *before* it (point-in-time validation at that time).
        return ValidationContext(
            trust_roots=self.m.roots,
            other_certs=self.others,
            moment=moment,
            allow_fetching=False,
            crls=[c.asn1 for c in self.current_crls],
            revinfo_policy=CertRevTrustPolicy(revinfo, retroactive_revinfo=True),
            algorithm_usage_policy=policy,
            time_tolerance=CLOCK_SKEW,
        )

    def integrity_context(self) -> ValidationContext:
        """For pyHanko's own pass: its integrity findings count, its trust verdict does not."""
        return self._context(self.now, self.policy, NO_REVOCATION)

    def timestamp_context(self) -> ValidationContext:
        """The TSA's chain, validated now; a TSA on a CRL we hold is not trusted."""
        if self.trust.revocation == "off":
            revinfo = NO_REVOCATION
        else:
            soft = RevocationCheckingRule.CHECK_IF_DECLARED_SOFT
            revinfo = RevocationCheckingPolicy(soft, soft)
        return self._context(self.now, self.ts_policy, revinfo)

    def run(
        self,
        validate: Callable[[], Awaitable[Any]],
        extra_problem: Callable[[Any], _Outcome | None],
    ) -> _Outcome:
        """Run pyHanko's validation, then judge; malformed CMS becomes ``invalid``."""
        try:
            return asyncio.run(self._judge(validate, extra_problem))
        except PdfError as exc:  # the difference analysis reads the revisions after the signature
            return _Outcome("permerror", "unreadable", _short(f"unreadable PDF revision ({exc})"))
        except _CMS_ERRORS as exc:
            return _Outcome("fail", "invalid", _short(f"malformed signature ({exc})"))

    async def _judge(
        self,
        validate: Callable[[], Awaitable[Any]],
        extra_problem: Callable[[Any], _Outcome | None],
    ) -> _Outcome:
        status: StandardCMSSignatureStatus = await validate()
        cert: asn1_x509.Certificate = status.signing_cert
        signing_time, timestamped, time_note = self._signing_time(status)
        signer = _signer(cert, signing_time, timestamped)

        def outcome(found: _Outcome) -> _Outcome:
            return replace(found, detail=_short(f"{_who(cert)}: {found.detail}"), signer=signer)

        if not status.intact:
            return outcome(_Outcome("fail", "invalid", "the signed content does not match"))
        if not status.valid:
            return outcome(_Outcome("fail", "invalid", "the signature value does not verify"))
        weak = self._weak_algorithm(cert)
        if weak:
            return outcome(_Outcome("fail", "invalid", weak))
        if time_note == _BROKEN_TIMESTAMP:
            return outcome(_Outcome("fail", "invalid", time_note))
        extra = extra_problem(status)
        if extra is not None:
            return outcome(extra)
        # Only a trusted timestamp proves when the signature was made. A time the signer
        # claims (signingTime, the PDF's /M) is its own word: a certificate that has expired
        # is not rescued by a claim that it signed before, so without a timestamp the chain
        # must be valid now.
        path = await self._chain(cert, signing_time if timestamped else self.now, timestamped)
        if isinstance(path, _Outcome):
            return outcome(path)
        revocation = await self._revocation(path, signing_time, timestamped)
        if revocation is not None:
            return outcome(revocation)
        return _Outcome("pass", "", time_note, signer)

    def _weak_algorithm(self, cert: asn1_x509.Certificate) -> str:
        """Why the CMS signature's own algorithms are refused (SHA-1, RSA under 2048 bits)."""
        digest = self.signer_info["digest_algorithm"]
        allowed = self.policy.digest_algorithm_allowed(digest, None)
        if allowed:
            mechanism = self.signer_info["signature_algorithm"]
            allowed = self.policy.signature_algorithm_allowed(mechanism, None, cert.public_key)
            name = mechanism["algorithm"].native
        else:
            name = digest["algorithm"].native
        if allowed:
            return ""
        return f"algorithm {name} is not allowed" + (
            f" ({allowed.failure_reason})" if allowed.failure_reason else ""
        )

    def _signing_time(self, status: StandardCMSSignatureStatus) -> tuple[datetime, bool, str]:
        """(time of signing, whether a trusted timestamp proves it, a note for ``detail``)."""
        note = ""
        ts = status.timestamp_validity
        if ts is not None:
            if not (ts.intact and ts.valid):
                return self.now, False, _BROKEN_TIMESTAMP
            if ts.trusted:
                return _utc(ts.timestamp), True, ""
            note = "timestamp ignored (its TSA is not trusted); "
        claimed = status.signer_reported_dt
        if claimed is None:
            return self.now, False, note + "no signing time given, validated as of now"
        if claimed.tzinfo is None:
            claimed = claimed.replace(tzinfo=UTC)
        # A claimed time in the future is not believed: validate as of now.
        return min(_utc(claimed), self.now), False, note.rstrip("; ")

    async def _chain(
        self, cert: asn1_x509.Certificate, moment: datetime, proven: bool
    ) -> ValidationPath | _Outcome:
        ctx = self._context(moment, self.policy, NO_REVOCATION)
        try:
            path: ValidationPath = await find_valid_path(
                cert, ctx.path_builder.async_build_paths_lazy(cert), validation_context=ctx
            )
            _SIGNER_KEY_USAGE.validate(cert)
            _SIGNER_PURPOSES.validate(cert)
            if _is_ca(cert):
                return _Outcome(
                    "fail",
                    "untrusted",
                    "the signer's certificate is a CA certificate: only end-entity "
                    "certificates sign documents",
                )
        except PathBuildingError:
            return _Outcome("fail", "untrusted", "no chain to a root in the trust store")
        except (ExpiredError, NotYetValidError) as exc:
            when = (
                f"at the time of signing ({_iso(moment)}), proven by a trusted timestamp"
                if proven
                else f"now ({_iso(moment)}), and no trusted timestamp proves an earlier "
                "signing time (the time a signer claims is not proof)"
            )
            return _Outcome("fail", "expired", f"not valid {when}: {exc.failure_msg}")
        except DisallowedAlgorithmError as exc:
            named = _MECHANISM.search(exc.failure_msg)
            which = named.group(1) if named else "a disallowed algorithm"
            return _Outcome(
                "fail", "untrusted", f"a certificate in the chain is signed with {which}"
            )
        except ValidationError as exc:  # path constraints, key usage, self-signed signer
            return _Outcome("fail", "untrusted", exc.failure_msg)
        return path

    async def _revocation(
        self, path: ValidationPath, moment: datetime, timestamped: bool
    ) -> _Outcome | None:
        if self.trust.revocation == "off":
            return None
        listed = self._listed(path, moment, timestamped)
        if listed is not None or self.trust.revocation != "hard-fail":
            return listed
        # pyHanko's "hard-fail" preset only checks certificates that name a CRL or OCSP
        # location; "either check required" checks every certificate below the root against
        # the CRLs we hold, whether or not it names one.
        required = RevocationCheckingRule.CRL_OR_OCSP_REQUIRED
        ctx = self._context(moment, self.policy, RevocationCheckingPolicy(required, required))
        try:
            await async_validate_path(ctx, path)
        except RevokedError as exc:
            return _Outcome("fail", "revoked", exc.failure_msg)
        except InsufficientRevinfoError as exc:
            stale = self._stale_issuer(path)
            if stale:
                return _Outcome(
                    "temperror",
                    "revocation_unavailable",
                    f"the CRL of {stale} we hold is out of date",
                )
            return _Outcome("temperror", "revocation_unknown", exc.failure_msg)
        except ValidationError as exc:
            return _Outcome("fail", "untrusted", exc.failure_msg)
        return None

    def _listed(self, path: ValidationPath, moment: datetime, timestamped: bool) -> _Outcome | None:
        """A certificate of the path on any CRL we hold (current or not) signed by its issuer.

        Independent of distribution points, so soft-fail sees revocations too; and when the
        signing time is only claimed, a revocation after that claim still counts.
        """
        for issuer, cert in _pairs(path):
            for held in self._crls_of(issuer):
                entry = held.parsed.get_revoked_certificate_by_serial_number(cert.serial_number)
                if entry is None or _removed(entry):
                    continue
                when = entry.revocation_date_utc
                if timestamped and when > moment:
                    continue  # revoked after a proven signing time: the signature stands
                return _Outcome(
                    "fail",
                    "revoked",
                    f"{_cn(cert)} revoked {_iso(when)} (CRL of {_cn_name(issuer.name)})",
                )
        return None

    def _stale_issuer(self, path: ValidationPath) -> str:
        """The issuer whose CRLs we hold are all out of date, if any."""
        current = {id(c) for c in self.current_crls}
        for issuer, _cert in _pairs(path):
            held = self._crls_of(issuer)
            if held and not any(id(c) in current for c in held):
                return _cn_name(issuer.name)
        return ""

    def _crls_of(self, issuer: Authority) -> list[_Crl]:
        found = []
        key = issuer.public_key.dump()
        for index, held in enumerate(self.m.crls):
            if held.asn1.issuer != issuer.name:
                continue
            signed = self.m.crl_signed.get((index, key))
            if signed is None:
                tbs = held.asn1["tbs_cert_list"]
                signed = _signed_by(
                    held.asn1["signature"].native,
                    tbs.dump(),
                    held.asn1["signature_algorithm"],
                    issuer.public_key,
                )
                self.m.crl_signed[(index, key)] = signed
            if signed:
                found.append(held)
        return found


_MECHANISM = re.compile(r"signature mechanism (\w+)")
_BROKEN_TIMESTAMP = "the signature timestamp token is broken"
_DETAIL_LIMIT = 300


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _DETAIL_LIMIT else text[: _DETAIL_LIMIT - 3] + "..."


def _pairs(path: ValidationPath) -> list[tuple[Authority, asn1_x509.Certificate]]:
    """(issuing authority, certificate) for every certificate below the trust anchor."""
    return list(zip(path.iter_authorities(), path.iter_certs(include_root=False), strict=False))


def _signed_by(
    signature: bytes,
    data: bytes,
    algorithm: algos.SignedDigestAlgorithm,
    key: keys.PublicKeyInfo,
) -> bool:
    # certvalidator's verifier, not cryptography's X.509 API: the latter refuses SHA-1, and
    # the VGCA G1 hierarchy (certificates and CRLs) is SHA-1 signed.
    try:
        DefaultSignatureValidator().validate_signature(signature, data, key, algorithm)
    except (InvalidSignature, ValueError, TypeError, NotImplementedError, UnsupportedAlgorithm):
        return False
    return True


def _removed(entry: x509.RevokedCertificate) -> bool:
    try:
        reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    except x509.ExtensionNotFound:
        return False
    return reason == x509.ReasonFlags.remove_from_crl


def _is_ca(cert: asn1_x509.Certificate) -> bool:
    try:
        return bool(cert.ca)
    except ValueError:
        return False


def _legacy_keys(root_keys: frozenset[bytes], cas: list[asn1_x509.Certificate]) -> frozenset[bytes]:
    """The SHA-1-allowed roots' keys, plus every CA key they (transitively) certified."""
    legacy = set(root_keys)
    parents = [c for c in cas if c.public_key.dump() in legacy]
    pending = [c for c in cas if c.public_key.dump() not in legacy]
    grew = bool(parents)
    while grew:
        grew = False
        for cert in list(pending):
            if any(
                cert.issuer == parent.subject
                and _signed_by(
                    cert["signature_value"].native,
                    cert["tbs_certificate"].dump(),
                    cert["signature_algorithm"],
                    parent.public_key,
                )
                for parent in parents
            ):
                legacy.add(cert.public_key.dump())
                parents.append(cert)
                pending.remove(cert)
                grew = True
    return frozenset(legacy)


def _cn_name(name: asn1_x509.Name) -> str:
    try:
        native = name.native
        value = native.get("common_name") if isinstance(native, dict) else None
        return str(value) if value else name.human_friendly
    except ValueError:
        return "an unreadable name"


def _cn(cert: asn1_x509.Certificate) -> str:
    return _cn_name(cert.subject)


def _who(cert: asn1_x509.Certificate) -> str:
    return _cn(cert)


def _signer(cert: asn1_x509.Certificate, signing_time: datetime, timestamped: bool) -> Signer:
    der = cert.dump()
    parsed = x509.load_der_x509_certificate(der)
    orgs = parsed.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)
    return Signer(
        subject=parsed.subject.rfc4514_string(),
        organisation=", ".join(str(o.value) for o in orgs),
        serial=format(parsed.serial_number, "x"),
        fingerprint=hashlib.sha256(der).hexdigest(),
        signing_time=_iso(signing_time),
        timestamped=timestamped,
        not_after=_iso(parsed.not_valid_after_utc),
    )
