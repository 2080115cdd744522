"""A test PKI made at test time with ``cryptography``, and signed documents made with pyHanko.

Nothing here is committed as a certificate: committed test certificates expire and break builds.
One :func:`build_pki` call makes every key and certificate (EC P-256 where speed matters, RSA-2048
for the clerk and the timestamp authority, since the VGCA issues RSA keys)::

    Test Root CA ──► Test Issuing CA ──► person      nonRepudiation only, e-mail SAN
        │                  │         ├─► clerk       RSA-2048, digitalSignature + nonRepudiation
        │                  │         ├─► expired     validity ended a day ago
        │                  │         ├─► revoked     on the issuing CA's CRL
        │                  │         ├─► bare        names no CRL (no distribution point)
        │                  │         └─► tsa         RSA-2048, timeStamping, for DummyTimeStamper
        │                  └─ CRLs: fresh (lists "revoked") and stale (nextUpdate passed)
        └─ CRL: fresh (empty), over the issuing CA
    Rogue Root CA ─────► stranger  (a root no trust store holds)

Every distribution point is an ``http://crl.test.invalid/…`` URL: nothing is ever fetched.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from io import BytesIO

from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.writer import PageObject, PdfFileWriter
from pyhanko_certvalidator.registry import SimpleCertificateStore

from gateway.checks.trust import TrustStore

# As in gateway.checks.signatures: pyHanko's import-time DSA warning.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "DSA is deprecated", CryptographyDeprecationWarning)
    from pyhanko.sign import signers
    from pyhanko.sign.fields import MDPPerm, SigFieldSpec, SigSeedSubFilter
    from pyhanko.sign.signers.pdf_signer import PdfTimeStamper
    from pyhanko.sign.timestamps.dummy_client import DummyTimeStamper

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
CRL_BASE = "http://crl.test.invalid"


@dataclass(frozen=True)
class Identity:
    """A certificate, its private key, and the issuing certificates a signer embeds."""

    cert: x509.Certificate
    key: PrivateKey
    chain: tuple[x509.Certificate, ...] = ()  # issuers below the root, embedded when signing
    email: str = ""

    @property
    def der(self) -> bytes:
        """The certificate, DER."""
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the DER certificate, lower-case hex."""
        return hashlib.sha256(self.der).hexdigest()

    @property
    def serial(self) -> str:
        """Serial number, lower-case hex (as :class:`policies.model.Signer` reports it)."""
        return format(self.cert.serial_number, "x")

    def pyhanko_signer(self) -> signers.SimpleSigner:
        """pyHanko's signer for this identity, embedding its issuing chain."""
        key_der = self.key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        chain = [
            asn1_x509.Certificate.load(c.public_bytes(serialization.Encoding.DER))
            for c in self.chain
        ]
        return signers.SimpleSigner(
            signing_cert=asn1_x509.Certificate.load(self.der),
            signing_key=asn1_keys.PrivateKeyInfo.load(key_der),
            cert_registry=SimpleCertificateStore.from_certs(chain),
        )


@dataclass(frozen=True)
class TestPKI:
    """Every identity and CRL of the test PKI; see the module docstring for the tree."""

    __test__ = False  # not a pytest test class, despite the name

    now: datetime
    root: Identity
    issuing: Identity
    person: Identity
    clerk: Identity
    expired: Identity
    revoked: Identity
    bare: Identity
    tsa: Identity
    rogue_root: Identity
    stranger: Identity
    root_crl: bytes
    issuing_crl: bytes
    stale_issuing_crl: bytes
    extra: dict[str, Identity] = field(default_factory=dict)

    def store(
        self,
        *,
        revocation: str = "soft-fail",
        crls: tuple[bytes, ...] | None = None,
        intermediates: bool = True,
        max_crl_age_days: int | None = None,
    ) -> TrustStore:
        """A trust store with the test root; the issuing CA and both fresh CRLs unless told."""
        return TrustStore(
            roots=(self.root.der,),
            intermediates=(self.issuing.der,) if intermediates else (),
            crls=(self.root_crl, self.issuing_crl) if crls is None else crls,
            revocation=revocation,
            max_crl_age_days=max_crl_age_days,
        )


def _key(kind: str) -> PrivateKey:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn: str, org: str = "UBND huyen Di Linh", email: str = "") -> x509.Name:
    attrs = [
        x509.NameAttribute(NameOID.COUNTRY_NAME, "VN"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
        x509.NameAttribute(NameOID.COMMON_NAME, cn),
    ]
    if email:
        attrs.append(x509.NameAttribute(NameOID.EMAIL_ADDRESS, email))
    return x509.Name(attrs)


def _ca(
    cn: str,
    key: PrivateKey,
    *,
    issuer: Identity | None,
    now: datetime,
    crl: str = "",
) -> Identity:
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn, "Test PKI"))
        .issuer_name(issuer.cert.subject if issuer else _name(cn, "Test PKI"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=365))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    signing_key = key
    if issuer is not None:
        signing_key = issuer.key
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
    if crl:
        builder = builder.add_extension(_cdp(crl), critical=False)
    cert = builder.sign(signing_key, hashes.SHA256())
    chain: tuple[x509.Certificate, ...] = ()
    if issuer is not None and issuer.cert.issuer != issuer.cert.subject:
        chain = (*issuer.chain, issuer.cert)
    return Identity(cert, key, chain)


def _cdp(url: str) -> x509.CRLDistributionPoints:
    return x509.CRLDistributionPoints(
        [
            x509.DistributionPoint(
                full_name=[x509.UniformResourceIdentifier(url)],
                relative_name=None,
                reasons=None,
                crl_issuer=None,
            )
        ]
    )


def issue(
    issuer: Identity,
    cn: str,
    *,
    now: datetime,
    key: PrivateKey | None = None,
    org: str = "UBND huyen Di Linh",
    email: str = "",
    digital_signature: bool = False,
    non_repudiation: bool = True,
    key_encipherment: bool = False,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    crl: str | None = f"{CRL_BASE}/issuing.crl",
    eku: tuple[x509.ObjectIdentifier, ...] = (),
    sha1: bool = False,
    ca: bool = False,
) -> Identity:
    """An end-entity certificate issued by ``issuer`` (a signer, unless ``eku`` says otherwise);
    with ``ca``, a CA certificate (keyCertSign) that has the signer's key usages too."""
    key = key or _key("ec")
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn, org, email))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - timedelta(days=30))
        .not_valid_after(not_after or now + timedelta(days=730))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=digital_signature,
                content_commitment=non_repudiation,
                key_encipherment=key_encipherment,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
    )
    if email:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=False
        )
    if crl:
        builder = builder.add_extension(_cdp(crl), critical=False)
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=True)
    cert = builder.sign(issuer.key, hashes.SHA256())
    if sha1:
        cert = resign_sha1(cert, issuer.key)
    chain = (*issuer.chain, issuer.cert) if issuer.cert.issuer != issuer.cert.subject else ()
    return Identity(cert, key, chain, email)


def resign_sha1(cert: x509.Certificate, issuer_key: PrivateKey) -> x509.Certificate:
    """The same certificate signed with SHA-1, as the VGCA G1 hierarchy is.

    ``cryptography`` no longer signs certificates with SHA-1, so the TBSCertificate is rebuilt
    with asn1crypto and signed with the raw key operation.
    """
    parsed = asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))
    rsa_key = isinstance(issuer_key, rsa.RSAPrivateKey)
    algorithm = asn1_x509.SignedDigestAlgorithm(
        {"algorithm": "sha1_rsa" if rsa_key else "sha1_ecdsa"}
    )
    tbs = parsed["tbs_certificate"]
    tbs["signature"] = algorithm
    data = tbs.dump(force=True)
    if isinstance(issuer_key, rsa.RSAPrivateKey):
        signature = issuer_key.sign(data, padding.PKCS1v15(), hashes.SHA1())
    else:
        signature = issuer_key.sign(data, ec.ECDSA(hashes.SHA1()))
    rebuilt = asn1_x509.Certificate(
        {"tbs_certificate": tbs, "signature_algorithm": algorithm, "signature_value": signature}
    )
    return x509.load_der_x509_certificate(rebuilt.dump())


def legacy_hierarchy(now: datetime) -> tuple[Identity, Identity, Identity]:
    """A G1-like SHA-1 hierarchy: (root, CA, signer), every certificate signed with SHA-1."""
    root = _ca("Legacy Root CA", _key("ec"), issuer=None, now=now)
    root = replace(root, cert=resign_sha1(root.cert, root.key))
    ca = _ca("Legacy Issuing CA", _key("ec"), issuer=root, now=now)
    ca = replace(ca, cert=resign_sha1(ca.cert, root.key))
    signer = issue(ca, "Hoang Van E", now=now, crl=None, sha1=True)
    return root, ca, signer


def make_crl(
    issuer: Identity,
    *,
    now: datetime,
    revoked: tuple[tuple[Identity, datetime], ...] = (),
    this_update: datetime | None = None,
    next_update: datetime | None = None,
) -> bytes:
    """A DER CRL signed by ``issuer`` listing ``revoked`` (identity, revocation time) pairs."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.cert.subject)
        .last_update(this_update or now - timedelta(hours=1))
        .next_update(next_update or now + timedelta(days=7))
        .add_extension(x509.CRLNumber(1), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
    )
    for who, when in revoked:
        entry = (
            x509.RevokedCertificateBuilder()
            .serial_number(who.cert.serial_number)
            .revocation_date(when)
            .add_extension(x509.CRLReason(x509.ReasonFlags.key_compromise), critical=False)
            .build()
        )
        builder = builder.add_revoked_certificate(entry)
    crl = builder.sign(issuer.key, hashes.SHA256())
    return crl.public_bytes(serialization.Encoding.DER)


def build_pki(now: datetime | None = None) -> TestPKI:
    """Make every key, certificate and CRL of the test PKI (about half a second)."""
    now = (now or datetime.now(UTC)).replace(microsecond=0)
    root = _ca("Test Root CA", _key("ec"), issuer=None, now=now)
    issuing = _ca("Test Issuing CA", _key("ec"), issuer=root, now=now, crl=f"{CRL_BASE}/root.crl")
    person = issue(issuing, "Nguyen Van A", now=now, email="a.nguyen@dilinh.lamdong.gov.vn")
    clerk = issue(
        issuing,
        "Van thu UBND huyen Di Linh",
        now=now,
        key=_key("rsa"),
        org="Van phong UBND huyen Di Linh",
        email="vanthu@dilinh.lamdong.gov.vn",
        digital_signature=True,
    )
    expired = issue(
        issuing,
        "Tran Thi B",
        now=now,
        not_before=now - timedelta(days=400),
        not_after=now - timedelta(days=1),
    )
    revoked = issue(issuing, "Le Van C", now=now)
    bare = issue(issuing, "Pham Thi D", now=now, crl=None)
    tsa = issue(
        issuing,
        "Test TSA",
        now=now,
        key=_key("rsa"),
        org="Test PKI",
        digital_signature=True,
        non_repudiation=False,
        eku=(ExtendedKeyUsageOID.TIME_STAMPING,),
    )
    rogue_root = _ca("Rogue Root CA", _key("ec"), issuer=None, now=now)
    stranger = issue(rogue_root, "Nguyen Van A", now=now, email="a.nguyen@dilinh.lamdong.gov.vn")
    revoked_at = now - timedelta(days=2)
    return TestPKI(
        now=now,
        root=root,
        issuing=issuing,
        person=person,
        clerk=clerk,
        expired=expired,
        revoked=revoked,
        bare=bare,
        tsa=tsa,
        rogue_root=rogue_root,
        stranger=stranger,
        root_crl=make_crl(root, now=now),
        issuing_crl=make_crl(issuing, now=now, revoked=((revoked, revoked_at),)),
        stale_issuing_crl=make_crl(
            issuing,
            now=now,
            revoked=((revoked, revoked_at),),
            this_update=now - timedelta(days=10),
            next_update=now - timedelta(days=3),
        ),
    )


# --- documents ------------------------------------------------------------------------------


def make_pdf(
    text: str = "Cong van so 123/UBND-VP", *, pages: int = 1, stream_xrefs: bool = False
) -> bytes:
    """A minimal valid PDF with ``text`` on each page (Helvetica, ASCII); its cross-reference
    section a table, or with ``stream_xrefs`` a stream (PDF 1.5, as most writers now do)."""
    writer = PdfFileWriter(stream_xrefs=stream_xrefs)
    font = generic.DictionaryObject(
        {
            generic.pdf_name("/Type"): generic.pdf_name("/Font"),
            generic.pdf_name("/Subtype"): generic.pdf_name("/Type1"),
            generic.pdf_name("/BaseFont"): generic.pdf_name("/Helvetica"),
        }
    )
    for number in range(pages):
        _append_page(writer, f"{text} ({number + 1})", font)
    out = BytesIO()
    writer.write(out)
    return out.getvalue()


def make_hybrid_pdf() -> bytes:
    """A one-page hybrid-reference PDF: an xref table whose trailer names an /XRefStm stream.

    Microsoft Office writes its PDFs this way; pyHanko's writer cannot, so the bytes are
    assembled by hand (the companion stream is empty, which is all the structure needs).
    """
    bodies = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R /Resources << >> >>",
        b"<< /Length 5 >>\nstream\nBT ET\nendstream",
        b"<< /Type /XRef /Size 5 /W [1 1 1] /Index [0 0] /Length 0 >>\nstream\n\nendstream",
    ]
    out = bytearray(b"%PDF-1.5\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(bodies, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref_at = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(bodies) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R /XRefStm %d >>\n" % (len(bodies) + 1, offsets[-1])
    out += b"startxref\n%d\n%%%%EOF\n" % xref_at
    return bytes(out)


def _append_page(
    writer: PdfFileWriter | IncrementalPdfFileWriter,
    text: str,
    font: generic.DictionaryObject,
) -> None:
    safe = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    stream = generic.StreamObject(stream_data=f"BT /F1 14 Tf 72 720 Td ({safe}) Tj ET".encode())
    resources = generic.DictionaryObject(
        {generic.pdf_name("/Font"): generic.DictionaryObject({generic.pdf_name("/F1"): font})}
    )
    page = PageObject(
        contents=writer.add_object(stream), media_box=(0, 0, 595, 842), resources=resources
    )
    writer.insert_page(page)


def sign_pdf(
    pdf: bytes,
    signer: Identity | None,
    *,
    timestamp: Identity | None = None,
    timestamp_at: datetime | None = None,
    field_name: str | None = None,
    certify: bool = False,
    docmdp: int = 2,
    visible: bool = False,
) -> bytes:
    """Sign ``pdf`` in an incremental update (PAdES), optionally with a signature timestamp.

    ``timestamp`` is the TSA identity (pyHanko's DummyTimeStamper signs the token offline);
    ``timestamp_at`` fixes the time it asserts (default: now). With ``certify`` the signature
    certifies the document with the DocMDP permission level ``docmdp`` (1: no changes, 2: form
    filling and signatures). ``visible`` gives the signature a field with a box on page 1.
    Without a ``signer``, the update is a document timestamp by ``timestamp`` (PAdES LTA).
    """
    writer = IncrementalPdfFileWriter(BytesIO(pdf), strict=False)  # lenient: hybrid PDFs too
    timestamper = None
    if timestamp is not None:
        key_der = timestamp.key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        timestamper = DummyTimeStamper(
            tsa_cert=asn1_x509.Certificate.load(timestamp.der),
            tsa_key=asn1_keys.PrivateKeyInfo.load(key_der),
            certs_to_embed=SimpleCertificateStore.from_certs(
                [
                    asn1_x509.Certificate.load(c.public_bytes(serialization.Encoding.DER))
                    for c in timestamp.chain
                ]
            ),
            fixed_dt=timestamp_at,
        )
    name = field_name or f"Sig{_count_signatures(pdf) + 1}"
    if signer is None:
        assert timestamper is not None, "a document timestamp needs a TSA"
        out = BytesIO()
        PdfTimeStamper(timestamper, field_name=name).timestamp_pdf(writer, "sha256", output=out)
        return out.getvalue()
    meta = signers.PdfSignatureMetadata(
        field_name=name,
        md_algorithm="sha256",
        subfilter=SigSeedSubFilter.PADES,
        certify=certify,
        docmdp_permissions=MDPPerm(docmdp),
    )
    spec = SigFieldSpec(name, on_page=0, box=(300, 60, 500, 120)) if visible else None
    out = signers.sign_pdf(
        writer,
        meta,
        signer=signer.pyhanko_signer(),
        timestamper=timestamper,
        new_field_spec=spec,
    )
    return out.getvalue()


def _count_signatures(pdf: bytes) -> int:
    return pdf.count(b"/Type /Sig") + pdf.count(b"/Type/Sig")


def _helvetica() -> generic.DictionaryObject:
    return generic.DictionaryObject(
        {
            generic.pdf_name("/Type"): generic.pdf_name("/Font"),
            generic.pdf_name("/Subtype"): generic.pdf_name("/Type1"),
            generic.pdf_name("/BaseFont"): generic.pdf_name("/Helvetica"),
        }
    )


def countersign(pdf: bytes, clerk: Identity) -> bytes:
    """A second signature (the clerk's) over an already signed PDF, in a new revision."""
    return sign_pdf(pdf, clerk)


def add_content_after_signing(pdf: bytes, text: str = "Trang them sau khi ky") -> bytes:
    """An incremental update after the signatures that adds a page with ``text``."""
    writer = IncrementalPdfFileWriter(BytesIO(pdf), strict=False)
    _append_page(writer, text, _helvetica())
    out = BytesIO()
    writer.write(out)
    return out.getvalue()


def tamper_signature(pdf: bytes) -> bytes:
    """Flip bytes inside the (last) signature's RSA/ECDSA value, leaving the PDF parseable.

    The /Contents hex string holds the DER CMS followed by zero padding; the signature value is
    the last non-zero stretch, so flipping a digit just before the padding breaks it.
    """
    start = pdf.rindex(b"/Contents <") + len(b"/Contents <")
    end = pdf.index(b">", start)
    hex_digits = pdf[start:end].rstrip(b"0")
    where = start + len(hex_digits) - 4
    flipped = b"0" if pdf[where : where + 1] != b"0" else b"1"
    return pdf[:where] + flipped + pdf[where + 1 :]


def encrypt_pdf(text: str = "Tai lieu mat", password: str = "matkhau") -> bytes:
    """A small PDF encrypted with a user password (AES-256, the standard security handler)."""
    writer = PdfFileWriter(stream_xrefs=False)
    writer.encrypt(password, password)
    _append_page(writer, text, _helvetica())
    out = BytesIO()
    writer.write(out)
    return out.getvalue()


def detached_cms(
    content: bytes, signer: Identity, *, pem: bool = False, pss: bool = False
) -> bytes:
    """A detached CMS SignedData (``.p7s``/``.sig``) over exactly ``content``; with ``pss``
    (an RSA signer) the signature is RSASSA-PSS, as newer Outlook and smart cards make it."""
    builder = pkcs7.PKCS7SignatureBuilder().set_data(content)
    pad = padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH) if pss else None
    builder = builder.add_signer(signer.cert, signer.key, hashes.SHA256(), rsa_padding=pad)
    for cert in signer.chain:
        builder = builder.add_certificate(cert)
    encoding = serialization.Encoding.PEM if pem else serialization.Encoding.DER
    # Binary: sign the bytes as they are (without it, cryptography rewrites LF to CRLF first)
    options = [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary]
    return builder.sign(encoding, options)


def smime_parts(mime_bytes: bytes, signer: Identity) -> tuple[bytes, bytes]:
    """The first part of a multipart/signed message (CRLF-canonical) and its signature (DER)."""
    lines = mime_bytes.replace(b"\r\n", b"\n").split(b"\n")
    canonical = b"\r\n".join(lines)
    return canonical, detached_cms(canonical, signer)
