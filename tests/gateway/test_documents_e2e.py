"""Signed documents end to end: real signatures (test PKI), real SMTP, real downstream.

The gateway trusts the test PKI's root (never the shipped VGCA roots: test certificates must
not pretend to be government ones). Validation runs in worker processes as in production.
"""

from __future__ import annotations

import base64
import io
import zipfile
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import cms, core, x509

from gateway.checks.validation import PoolValidator
from gateway.directory import Account
from gateway.record import Record
from tests.support.gateway import CLERK, OFFICIAL, make_config, policy_text
from tests.support.pki import (
    TestPKI,
    add_content_after_signing,
    countersign,
    detached_cms,
    make_pdf,
    sign_pdf,
    smime_parts,
)
from tests.support.records import score_records
from tests.support.smtp import Downstream

DOCUMENT_RULES = (
    '[[rules]]\nid = "sender-malformed-identity"\n'
    '[[rules]]\nid = "document-exemption"\n'
    '[[rules]]\nid = "document-signature-required"\n'
)


@pytest.fixture
def gateway(start_gateway, downstream: Downstream, tmp_path: Path, pki: TestPKI) -> Any:
    return documents_gateway(start_gateway, downstream, tmp_path, pki)


@pytest.fixture
def trusted_gateway(start_gateway, downstream: Downstream, tmp_path: Path, pki: TestPKI) -> Any:
    """Loopback trusted: the sender is proven, so the report credits its account."""
    return documents_gateway(start_gateway, downstream, tmp_path, pki, trusted=True)


def documents_gateway(
    start_gateway: Any,
    downstream: Downstream,
    tmp_path: Path,
    pki: TestPKI,
    *,
    trusted: bool = False,
) -> Any:
    validator = PoolValidator(pki.store(), workers=1, timeout=30)
    config = make_config(tmp_path, downstream.port, trusted=trusted)
    return start_gateway(config, policy_text(DOCUMENT_RULES), validator=validator)


def write_store(folder: Path, pki: TestPKI, root: Any = None) -> Path:
    """A trust-store folder (trust/, intermediates/) holding the test root (or ``root``)."""
    from cryptography.hazmat.primitives import serialization

    (folder / "trust").mkdir(parents=True, exist_ok=True)
    (folder / "intermediates").mkdir(exist_ok=True)
    pem = serialization.Encoding.PEM
    (folder / "trust" / "root.pem").write_bytes((root or pki.root).cert.public_bytes(pem))
    (folder / "intermediates" / "issuing.pem").write_bytes(pki.issuing.cert.public_bytes(pem))
    return folder


def docx() -> bytes:
    """A minimal Word document (detected as such by content)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(
            "[Content_Types].xml",
            '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"/>',
        )
        z.writestr("word/document.xml", "<w:document/>")
    return buf.getvalue()


def attach(filename: str, data: bytes, ctype: str = "application/octet-stream") -> str:
    encoded = base64.encodebytes(data).decode().replace("\n", "\r\n")
    return (
        f'--MIX\r\nContent-Type: {ctype}; name="{filename}"\r\n'
        f'Content-Disposition: attachment; filename="{filename}"\r\n'
        f"Content-Transfer-Encoding: base64\r\n\r\n{encoded}"
    )


def with_files(*files: tuple[str, bytes], extra: str = "", from_: str = OFFICIAL) -> bytes:
    head = (
        f"From: Nguyen Van A <{from_}>\r\nTo: {CLERK}\r\nSubject: Cong van\r\n"
        f"Message-ID: <doc@test>\r\n{extra}MIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="MIX"\r\n\r\n'
    )
    body = "--MIX\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nKinh gui van thu.\r\n"
    body += "".join(attach(name, data) for name, data in files) + "--MIX--\r\n"
    return (head + body).encode()


def smime_message(inner: bytes, signer: Any, from_: str = OFFICIAL) -> bytes:
    """A multipart/signed message whose first part is ``inner`` (a MIME entity)."""
    signed, signature = smime_parts(inner, signer)
    sig_b64 = base64.encodebytes(signature).replace(b"\n", b"\r\n")
    return (
        f"From: Nguyen Van A <{from_}>\r\nTo: {CLERK}\r\nSubject: Cong van ky S/MIME\r\n"
        "Message-ID: <smime@test>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; '
        'micalg=sha-256; boundary="SIG"\r\n\r\n'
    ).encode() + (
        b"--SIG\r\n" + signed + b"\r\n--SIG\r\n"
        b'Content-Type: application/pkcs7-signature; name="smime.p7s"\r\n'
        b"Content-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment; filename="smime.p7s"\r\n\r\n' + sig_b64 + b"--SIG--\r\n"
    )


def inner_entity(*files: tuple[str, bytes]) -> bytes:
    body = "--MIX\r\nContent-Type: text/plain\r\n\r\nVan ban dinh kem.\r\n"
    body += "".join(attach(n, d) for n, d in files) + "--MIX--\r\n"
    return ('Content-Type: multipart/mixed; boundary="MIX"\r\n\r\n' + body).encode()


def test_signed_pdf_is_delivered_and_the_signer_recorded(
    gateway, downstream: Downstream, pki: TestPKI
) -> None:
    """A PDF signed by a trusted, valid certificate passes; who signed is in the record."""
    pdf = sign_pdf(make_pdf(), pki.person)
    _, (code, text) = gateway.send(with_files(("cong-van.pdf", pdf)), OFFICIAL, [CLERK])
    assert code == 250, text
    [record] = gateway.records()
    [att] = record["attachments"]
    assert att["document"] is True
    [check] = att["signatures"]
    assert (check["method"], check["result"]) == ("pdf", "pass")
    [signer] = check["signers"]
    assert signer["fingerprint"] == pki.person.fingerprint and signer["serial"] == pki.person.serial
    assert "Nguyen Van A" in signer["subject"]
    got = b" ".join(downstream.handler.messages[0].data.split())
    assert b'x-congvu-document=pass reason="cong-van.pdf";' in got


def test_clerk_countersignature_passes(gateway, pki: TestPKI) -> None:
    """Decree 30: the officer signs, then the clerk signs for the organisation: still valid."""
    pdf = countersign(sign_pdf(make_pdf(), pki.person), pki.clerk)
    _, (code, _) = gateway.send(with_files(("cv.pdf", pdf)), OFFICIAL, [CLERK])
    assert code == 250
    [check] = gateway.records()[0]["attachments"][0]["signatures"]
    assert len(check["signers"]) == 2


@pytest.mark.parametrize(
    ("make", "reply"),
    [
        (lambda p: make_pdf(), b"5.7.1 [document.unsigned]"),
        (
            lambda p: add_content_after_signing(sign_pdf(make_pdf(), p.person)),
            b"5.7.7 [document.modified_after_signing]",
        ),
        (lambda p: sign_pdf(make_pdf(), p.expired), b"5.7.1 [document.signer_expired]"),
        (lambda p: sign_pdf(make_pdf(), p.revoked), b"5.7.1 [document.signer_revoked]"),
        (lambda p: sign_pdf(make_pdf(), p.stranger), b"5.7.1 [document.signer_untrusted]"),
        (lambda p: b"%PDF-1.7\r\n garbage", b"5.6.0 [document.unreadable]"),
    ],
)
def test_bad_documents_are_returned_with_the_reason(
    gateway, downstream: Downstream, pki: TestPKI, make, reply: bytes
) -> None:  # type: ignore[no-untyped-def]
    """Unsigned, modified, expired, revoked, untrusted, unreadable: each its own refusal."""
    _, (code, text) = gateway.send(with_files(("cv.pdf", make(pki))), OFFICIAL, [CLERK])
    assert code == 550 and text.startswith(reply), text
    assert downstream.handler.messages == []
    finding = next(
        f for f in gateway.records()[0]["findings"] if f["id"] == "document-signature-required"
    )
    assert finding["detail"].startswith("cv.pdf: pdf ")


def test_detached_signature_covers_a_word_document(gateway, pki: TestPKI) -> None:
    """A .docx with a .p7s beside it, signing exactly its bytes, passes; a mismatch does not."""
    doc = docx()
    ok = with_files(("to-trinh.docx", doc), ("to-trinh.docx.p7s", detached_cms(doc, pki.clerk)))
    assert gateway.send(ok, OFFICIAL, [CLERK])[1][0] == 250
    other = detached_cms(doc + b"x", pki.clerk)
    bad = with_files(("to-trinh.docx", doc), ("to-trinh.p7s", other))
    _, (code, text) = gateway.send(bad, OFFICIAL, [CLERK])
    assert code == 550 and b"[document.signature_invalid]" in text


def _with_empty_bit_string(signature: bytes) -> bytes:
    """``signature`` (a CMS SignedData) with its certificate's signature an empty BIT STRING:
    DER that asn1crypto reads only to fail with an IndexError."""
    signed = cms.ContentInfo.load(signature)["content"]
    cert = signed["certificates"][0].chosen
    broken = x509.Certificate(
        {
            "tbs_certificate": cert["tbs_certificate"],
            "signature_algorithm": cert["signature_algorithm"],
            "signature_value": core.OctetBitString(contents=b""),
        }
    )
    fields = ("version", "digest_algorithms", "encap_content_info", "signer_infos")
    rebuilt = cms.SignedData(
        {name: signed[name] for name in fields}
        | {"certificates": [cms.CertificateChoices(name="certificate", value=broken)]}
    )
    return cms.ContentInfo({"content_type": "signed_data", "content": rebuilt}).dump()


def test_a_signature_file_that_does_not_parse_is_refused_not_deferred(
    gateway, pki: TestPKI
) -> None:
    """A .p7s whose DER breaks the parser (seen first by the fuzzer) signs nothing: the
    document is unsigned, 550, never 451 [internal.check_error] for a message that can never
    pass."""
    doc = docx()
    broken = _with_empty_bit_string(detached_cms(doc, pki.clerk))
    data = with_files(("to-trinh.docx", doc), ("to-trinh.docx.p7s", broken))
    _, (code, text) = gateway.send(data, OFFICIAL, [CLERK])
    assert code == 550 and b"[document.unsigned]" in text, text


def test_smime_signed_message_covers_its_documents(gateway, pki: TestPKI) -> None:
    """S/MIME by a certificate for the From address covers the documents inside it."""
    inner = inner_entity(("to-trinh.docx", docx()))
    good = smime_message(inner, pki.person)
    assert gateway.send(good, OFFICIAL, [CLERK])[1][0] == 250
    record = gateway.records()[-1]
    assert record["smime"]["result"] == "pass"
    forged = smime_message(inner, pki.person, from_="truong.phong@dilinh.lamdong.gov.vn")
    _, (code, text) = gateway.send(forged, OFFICIAL, [CLERK])
    assert code == 550 and b"[message.smime_invalid]" in text


def _wrapped(signed_message: bytes, *outside: tuple[str, bytes]) -> bytes:
    """``signed_message`` as a server that adds a disclaimer sends it: its header kept, its
    multipart/signed body the first part of a multipart/mixed, the disclaimer (and
    ``outside`` files) after it."""
    head, _, body = signed_message.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    signed_type = next(line for line in lines if line.startswith(b"Content-Type:"))
    kept = [line for line in lines if not line.startswith(b"Content-Type:")]
    wrapper = b"\r\n".join(kept) + b'\r\nContent-Type: multipart/mixed; boundary="WRAP"\r\n\r\n'
    disclaimer = b"--WRAP\r\nContent-Type: text/plain\r\n\r\nThu gui tu may chu cong vu.\r\n"
    files = "".join(attach(n, d).replace("--MIX", "--WRAP", 1) for n, d in outside).encode()
    return (
        wrapper
        + b"--WRAP\r\n"
        + signed_type
        + b"\r\n\r\n"
        + body
        + b"\r\n"
        + disclaimer
        + files
        + b"--WRAP--\r\n"
    )


def test_a_signed_message_wrapped_with_a_disclaimer_still_covers_its_documents(
    gateway, pki: TestPKI
) -> None:
    """A server that adds a disclaimer wraps the S/MIME message in a multipart/mixed: the
    signature still covers the documents inside the signed part (it was not looked at, and
    the documents were refused as unsigned); a document outside it is unsigned."""
    good = smime_message(inner_entity(("to-trinh.docx", docx())), pki.person)
    _, (code, text) = gateway.send(_wrapped(good), OFFICIAL, [CLERK])
    assert code == 250, text
    assert gateway.records()[-1]["smime"]["result"] == "pass"
    outside = _wrapped(good, ("phu-luc.docx", docx() + b"\0"))
    _, (code, text) = gateway.send(outside, OFFICIAL, [CLERK])
    assert code == 550 and b"[document.unsigned]" in text, text


@pytest.mark.parametrize(
    ("files", "extra"),
    [
        ((("ban-do-quy-hoach.pdf", make_pdf("Ban do")),), "X-Document-Class: ban-do\r\n"),
        ((("mat-bang.dwg", b"AC1027 drawing bytes"),), ""),
    ],
)
def test_declared_exemptions_pass_and_are_recorded(
    gateway, files: tuple[tuple[str, bytes], ...], extra: str
) -> None:
    """Maps and drawings pass unsigned when declared; the claim is a recorded note."""
    _, (code, _) = gateway.send(with_files(*files, extra=extra), OFFICIAL, [CLERK])
    assert code == 250
    note = next(f for f in gateway.records()[0]["findings"] if f["id"] == "document-exemption")
    assert note["outcome"] == "note" and "exempt by" in note["detail"]


def test_a_circular_to_many_units_is_validated_once(gateway, pki: TestPKI) -> None:
    """The same signed PDF sent again is answered from the cache."""
    data = with_files(("thong-bao.pdf", sign_pdf(make_pdf("Thong bao"), pki.clerk)))
    for _ in range(3):
        assert gateway.send(data, OFFICIAL, [CLERK])[1][0] == 250
    cached = [r["attachments"][0]["signatures"][0]["cached"] for r in gateway.records()]
    assert cached == [False, True, True]
    assert gateway.gateway.validator.hits == 2


def test_trust_store_reload_takes_effect(
    start_gateway, downstream: Downstream, tmp_path: Path, pki: TestPKI
) -> None:
    """SIGHUP reloads the trust store named by the policy: a removed root stops passing."""
    write_store(tmp_path / "certs", pki)
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text(policy_text(DOCUMENT_RULES, extra='[trust]\nstore = "certs"\n'))
    config = make_config(tmp_path, downstream.port, policy_file=policy_file)
    gw = start_gateway(config, None)
    data = with_files(("cv.pdf", sign_pdf(make_pdf(), pki.person)))
    assert gw.send(data, OFFICIAL, [CLERK])[1][0] == 250
    write_store(tmp_path / "certs", pki, root=pki.rogue_root)
    assert gw.gateway.reload_policy() is True
    _, (code, text) = gw.send(data, OFFICIAL, [CLERK])
    assert code == 550 and b"[document.signer_untrusted]" in text


def test_validation_over_the_time_limit_is_unreadable(pki: TestPKI) -> None:
    """A document that takes too long to check is refused as unreadable, the worker replaced."""
    import asyncio

    pdf = sign_pdf(make_pdf(), pki.person)

    async def run() -> Any:
        validator = PoolValidator(pki.store(), workers=1, timeout=0.001)
        try:
            return await validator.pdf(pdf)
        finally:
            validator.close()

    check = asyncio.run(run())
    assert (check.result, check.problem) == ("permerror", "unreadable")
    assert "longer than" in check.detail


def test_congvu_check_judges_documents_as_serve_does(
    tmp_path: Path, pki: TestPKI, capsys: pytest.CaptureFixture[str]
) -> None:
    """The offline check validates signatures with the policy's trust store, same reasons."""
    import json

    from gateway.cli import main

    write_store(tmp_path / "certs", pki)
    policy = tmp_path / "policy.toml"
    policy.write_text(policy_text(DOCUMENT_RULES, extra='[trust]\nstore = "certs"\n'))
    config = tmp_path / "congvu.toml"
    config.write_text(f'[policy]\nfile = "{policy}"\n')
    signed = tmp_path / "signed.eml"
    signed.write_bytes(with_files(("cv.pdf", sign_pdf(make_pdf(), pki.clerk))))
    modified = tmp_path / "modified.eml"
    modified.write_bytes(
        with_files(("cv.pdf", add_content_after_signing(sign_pdf(make_pdf(), pki.clerk))))
    )

    assert main(["check", "--json", "--config", str(config), str(signed)]) == 0
    assert json.loads(capsys.readouterr().out)["verdict"] == "accept"
    assert main(["check", "--json", "--config", str(config), str(modified)]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["reasons"] == ["document.modified_after_signing"]
    assert result["smtp_reply"].startswith("550 5.7.7 [document.modified_after_signing]")


def _zip(members: dict[str, bytes], *, compress: bool = True) -> bytes:
    buf = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(buf, "w", method) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _late_docx() -> bytes:
    """A .docx whose word/ part comes after many others (magic sniffers give up early)."""
    members = {"[Content_Types].xml": b"<Types/>"}
    members |= {f"customXml/item{i}.xml": b"<x/>" for i in range(8)}
    members["word/document.xml"] = b"<w:document/>"
    return _zip(members)


def _attach_typed(filename: str, data: bytes, ctype: str) -> bytes:
    body = "--MIX\r\nContent-Type: text/plain\r\n\r\nxem\r\n" + attach(filename, data, ctype)
    head = (
        f"From: Nguyen Van A <{OFFICIAL}>\r\nTo: {CLERK}\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="MIX"\r\n\r\n'
    )
    return (head + body + "--MIX--\r\n").encode()


@pytest.mark.parametrize(
    ("build", "accepted"),
    [
        # A PDF dressed as a signature is still a document.
        (lambda p: _attach_typed("qd.pdf", make_pdf(), "application/pkcs7-signature"), False),
        (lambda p: with_files(("qd.sig", make_pdf())), False),
        # Documents inside archives and behind odd detection are found.
        (lambda p: with_files(("ho-so.zip", _zip({"qd.pdf": make_pdf()}))), False),
        (
            lambda p: with_files(
                ("ho-so.zip", _zip({"qd.pdf": sign_pdf(make_pdf(), p.clerk)}, compress=False))
            ),
            True,
        ),
        (lambda p: with_files(("bao-cao.bin", _late_docx())), False),
        (lambda p: with_files(("qd.bin", b"x" * 3000 + make_pdf())), False),
        (lambda p: with_files(("qd.pdf.dwg", make_pdf())), False),
        (
            lambda p: _attach_typed("winmail.dat", b"\x78\x9f\x3e\x22tnef", "application/ms-tnef"),
            False,
        ),
        # Not documents: a note that merely mentions a PDF header.
        (lambda p: with_files(("ghi-chu.txt", b"file bi loi: %PDF-1.7 ...")), True),
    ],
)
def test_documents_cannot_hide(gateway, pki: TestPKI, build, accepted: bool) -> None:  # type: ignore[no-untyped-def]
    """Documents are recognised by content, inside zips, whatever they are called."""
    code = gateway.send(build(pki), OFFICIAL, [CLERK])[1][0]
    assert code == (250 if accepted else 550), gateway.records()[-1]["findings"]


def test_smime_covers_only_what_it_signs(gateway, pki: TestPKI) -> None:
    """A replayed S/MIME signature hidden in the preamble covers nothing that is shown."""
    old = b"Content-Type: text/plain\r\n\r\nChuc mung nam moi.\r\n"
    canon, sig = smime_parts(old, pki.person)
    shown = inner_entity(("qd-gia-mao.pdf", make_pdf("Quyet dinh gia mao")))
    head = (
        f"From: Nguyen Van A <{OFFICIAL}>\r\nTo: {CLERK}\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; '
        'micalg=sha-256; boundary="SIG"\r\n\r\n'
    ).encode()
    sig_part = (
        b"--SIG\r\nContent-Type: application/pkcs7-signature; name=smime.p7s\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(sig).replace(b"\n", b"\r\n")
        + b"--SIG--\r\n"
    )
    spliced = head + b"preamble x--SIG\r\n" + canon + b"\r\n--SIG\r\n" + shown + b"\r\n" + sig_part
    _, (code, _) = gateway.send(spliced, OFFICIAL, [CLERK])
    assert code == 550


def test_opaque_smime_is_unwrapped(gateway, pki: TestPKI) -> None:
    """application/pkcs7-mime signed-data: its signature is checked and its documents judged."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.serialization import pkcs7

    def opaque(inner: bytes, signer: Any) -> bytes:
        builder = pkcs7.PKCS7SignatureBuilder().set_data(inner)
        builder = builder.add_signer(signer.cert, signer.key, hashes.SHA256())
        for cert in signer.chain:
            builder = builder.add_certificate(cert)
        der = builder.sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
        b64 = base64.encodebytes(der).replace(b"\n", b"\r\n")
        return (
            f"From: Nguyen Van A <{OFFICIAL}>\r\nTo: {CLERK}\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
            'Content-Type: application/pkcs7-mime; smime-type=signed-data; name="smime.p7m"\r\n'
            "Content-Transfer-Encoding: base64\r\n"
            'Content-Disposition: attachment; filename="smime.p7m"\r\n\r\n'
        ).encode() + b64

    inner = inner_entity(("to-trinh.docx", docx()))
    assert gateway.send(opaque(inner, pki.person), OFFICIAL, [CLERK])[1][0] == 250
    _, (code, text) = gateway.send(opaque(inner, pki.stranger), OFFICIAL, [CLERK])
    assert code == 550 and b"[message.smime_invalid]" in text


def test_cosigned_detached_signature_passes(pki: TestPKI) -> None:
    """One .p7s signed by the officer and the clerk (Decree 30) is valid, both signers named."""
    from datetime import UTC, datetime

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.serialization import pkcs7

    from gateway.checks.signatures import validate_detached

    content = docx()
    builder = pkcs7.PKCS7SignatureBuilder().set_data(content)
    for signer in (pki.person, pki.clerk):
        builder = builder.add_signer(signer.cert, signer.key, hashes.SHA256())
    builder = builder.add_certificate(pki.issuing.cert)
    der = builder.sign(
        serialization.Encoding.DER,
        [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary],
    )
    check = validate_detached(content, der, pki.store(), datetime.now(UTC))
    assert check.result == "pass", check.detail
    assert {s.fingerprint for s in check.signers} == {pki.person.fingerprint, pki.clerk.fingerprint}
    wrong = validate_detached(content + b"x", der, pki.store(), datetime.now(UTC))
    assert (wrong.result, wrong.problem) == ("fail", "invalid")


def test_stale_crl_under_hard_fail_is_a_temporary_refusal(
    start_gateway, downstream: Downstream, tmp_path: Path, pki: TestPKI
) -> None:
    """Hard-fail with an out-of-date CRL: 451 (try later), not a verdict on the document."""
    store = pki.store(revocation="hard-fail", crls=(pki.root_crl, pki.stale_issuing_crl))
    gw = start_gateway(
        make_config(tmp_path, downstream.port),
        policy_text(DOCUMENT_RULES, extra='[trust]\nrevocation = "hard-fail"\n'),
        validator=PoolValidator(store, workers=1, processes=False),
    )
    data = with_files(("cv.pdf", sign_pdf(make_pdf(), pki.person)))
    _, (code, text) = gw.send(data, OFFICIAL, [CLERK])
    assert code == 451 and text.startswith(b"4.7.5 [document.revocation_unavailable]")


def test_two_class_declarations_exempt_nothing(gateway) -> None:
    """X-Document-Class given twice is ambiguous: no exemption, and the claim is recorded."""
    extra = "X-Document-Class: ban-do\r\nX-Document-Class: an-pham\r\n"
    _, (code, _) = gateway.send(with_files(("bd.pdf", make_pdf()), extra=extra), OFFICIAL, [CLERK])
    assert code == 550
    note = next(f for f in gateway.records()[0]["findings"] if f["id"] == "document-exemption")
    assert "'ban-do, an-pham' is not an exempt kind" in note["detail"]


def test_documents_inside_archives_are_on_record(gateway, pki: TestPKI) -> None:
    """A signed PDF inside a zip is accepted, and who signed it is in the decision record."""
    inner = sign_pdf(make_pdf("Ho so"), pki.clerk)
    data = with_files(("ho-so.zip", _zip({"to-trinh.pdf": inner})))
    assert gateway.send(data, OFFICIAL, [CLERK])[1][0] == 250
    [doc] = gateway.records()[0]["inner_documents"]
    assert doc["filename"] == "ho-so.zip/to-trinh.pdf"
    assert doc["signatures"][0]["signers"][0]["fingerprint"] == pki.clerk.fingerprint


def test_encrypted_smime_cannot_be_checked(gateway) -> None:
    """An S/MIME-encrypted message hides its documents: refused as unreadable, not 'forged'."""
    head = (
        f"From: Nguyen Van A <{OFFICIAL}>\r\nTo: {CLERK}\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
        'Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name="smime.p7m"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n"
    )
    # An EnvelopedData ContentInfo header (OID 1.2.840.113549.1.7.3), content elided.
    body = base64.encodebytes(bytes.fromhex("301306092a864886f70d010703a0063004020100")).decode()
    _, (code, text) = gateway.send((head + body).encode(), OFFICIAL, [CLERK])
    assert code == 550 and b"[document.unreadable]" in text


def officer_score(records: list[dict[str, Any]]) -> tuple[int, int, int]:
    """(signed, unsigned, exempted) documents the report counts for the sender's unit."""
    account = Account(OFFICIAL, "Nguyễn Văn A", "UBND huyện", "officer", date(2022, 1, 1))
    [score], _ = score_records(
        [Record.from_dict(r) for r in records], [account], period_end=date(2099, 1, 1)
    )
    return score.documents_signed, score.documents_unsigned, score.documents_exempted


def test_exemptions_are_counted_from_the_record_not_its_words(trusted_gateway) -> None:
    """Each document carries whether and why it was exempt: a file name holding "; " (which
    also joins the note's claims) is counted exempt, an undeclared one unsigned."""
    name = "Quyết định; số 12.pdf"
    encoded = "=?utf-8?b?" + base64.b64encode(name.encode()).decode() + "?="
    declared = with_files((encoded, make_pdf()), extra="X-Document-Class: ban-do\r\n")
    assert trusted_gateway.send(declared, OFFICIAL, [CLERK])[1][0] == 250
    plain = with_files(("Quyết định số 13.pdf", make_pdf()))
    assert trusted_gateway.send(plain, OFFICIAL, [CLERK])[1][0] == 550
    records = trusted_gateway.records()
    [exempt], [unsigned] = (r["attachments"] for r in records)
    assert (exempt["filename"], exempt["exempt"]) == (name, "X-Document-Class: ban-do")
    assert unsigned["exempt"] == ""
    assert officer_score(records) == (0, 1, 1)


def test_documents_under_a_valid_smime_signature_are_counted_signed(
    trusted_gateway, pki: TestPKI
) -> None:
    """A document that is an attachment of a multipart/signed message is covered by the
    S/MIME signature: on record as such, and counted signed, not unsigned."""
    good = smime_message(inner_entity(("to-trinh.docx", docx())), pki.person)
    assert trusted_gateway.send(good, OFFICIAL, [CLERK])[1][0] == 250
    [record] = trusted_gateway.records()
    [doc] = [a for a in record["attachments"] if a["document"]]
    assert (doc["filename"], doc["signatures"], doc["in_signed_smime"]) == (
        "to-trinh.docx",
        [],
        True,
    )
    assert officer_score([record]) == (1, 0, 0)
