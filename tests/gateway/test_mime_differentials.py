"""MIME parser differentials (issue 15, class 2): a document a mail client would open is seen
and judged, however its part is written or its file disguised; a structure with two readings
is refused. The part cases are tests/support/mime_attacks.py's corpus."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from test_documents_e2e import attach, documents_gateway

from tests.support.gateway import CLERK, OFFICIAL
from tests.support.mime_attacks import FRAGMENTS, SEEN, TWO_READINGS, Case, message
from tests.support.pki import TestPKI, detached_cms, make_pdf, sign_pdf
from tests.support.smtp import Downstream


@pytest.fixture
def gateway(start_gateway: Any, downstream: Downstream, tmp_path: Any, pki: TestPKI) -> Any:
    return documents_gateway(start_gateway, downstream, tmp_path, pki)


@pytest.mark.parametrize("case", SEEN, ids=lambda c: c.name)
def test_a_document_a_client_opens_is_judged(gateway: Any, pki: TestPKI, case: Case) -> None:
    """Unsigned, it is refused as unsigned (it was let through as an unknown file); signed,
    it passes: the gateway decoded exactly the bytes the client shows."""
    unsigned = message(case.part("cong-van.pdf", make_pdf()), sender=OFFICIAL, to=CLERK)
    _, (code, text) = gateway.send(unsigned, OFFICIAL, [CLERK])
    assert code == 550 and b"[document.unsigned]" in text, text
    signed_pdf = sign_pdf(make_pdf("Cong van da ky"), pki.clerk)
    signed = message(case.part("cong-van.pdf", signed_pdf), sender=OFFICIAL, to=CLERK)
    _, (code, text) = gateway.send(signed, OFFICIAL, [CLERK])
    assert code == 250, text


@pytest.mark.parametrize(
    ("case", "reason"),
    [(c, "message.ambiguous_structure") for c in TWO_READINGS]
    + [(c, "message.partial") for c in FRAGMENTS],
    ids=lambda c: getattr(c, "name", ""),
)
def test_a_structure_with_two_readings_is_refused(
    gateway: Any, pki: TestPKI, case: Case, reason: str
) -> None:
    """Refused with its own code and the part named, even when the document in it is signed:
    which reading a client takes is not the gateway's to guess."""
    signed_pdf = sign_pdf(make_pdf("Cong van da ky"), pki.clerk)
    data = message(case.part("cong-van.pdf", signed_pdf), sender=OFFICIAL, to=CLERK)
    _, (code, text) = gateway.send(data, OFFICIAL, [CLERK])
    assert code == 550 and f"[{reason}]".encode() in text, text
    finding = next(f for f in gateway.records()[0]["findings"] if f["reason"] == reason)
    assert "MIME part 2" in finding["detail"]


WORD_2003 = (
    '<?xml version="1.0" encoding="{encoding}" standalone="yes"?>\r\n'
    '<?mso-application progid="Word.Document"?>\r\n'
    '<w:wordDocument xmlns:w="http://schemas.microsoft.com/office/word/2003/wordml">'
    "<w:body><w:p><w:r><w:t>Quyet dinh so 12/QD-UBND</w:t></w:r></w:p></w:body>"
    "</w:wordDocument>\r\n"
)


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16"])
def test_a_word_2003_xml_document_is_a_document(gateway: Any, pki: TestPKI, encoding: str) -> None:
    """One XML file that Word opens with a click (its mso-application instruction), whatever
    its name and declared type: judged as a Word document, so it needs a signature."""
    doc = WORD_2003.format(encoding=encoding.removesuffix("-sig")).encode(encoding)
    unsigned = message(attach("bao-cao.xml", doc, "text/xml"), sender=OFFICIAL, to=CLERK)
    _, (code, text) = gateway.send(unsigned, OFFICIAL, [CLERK])
    assert code == 550 and b"[document.unsigned]" in text, text
    assert gateway.records()[0]["attachments"][0]["detected_type"] == "application/msword"
    part = attach("bao-cao.xml", doc, "text/xml") + attach(
        "bao-cao.xml.p7s", detached_cms(doc, pki.clerk)
    )
    _, (code, text) = gateway.send(message(part, sender=OFFICIAL, to=CLERK), OFFICIAL, [CLERK])
    assert code == 250, text


def base64_lines(data: bytes) -> str:
    return base64.encodebytes(data).decode().replace("\n", "\r\n")


def _forwarded(name: str, data: bytes) -> str:
    """The document attached to a message that is forwarded as an attachment (message/rfc822,
    as clients forward, without a transfer encoding of its own)."""
    inner = (
        "From: <vanthu@lamdong.gov.vn>\r\nSubject: Cong van goc\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="IN"\r\n\r\n'
        f'--IN\r\nContent-Type: application/pdf; name="{name}"\r\n'
        f"Content-Transfer-Encoding: base64\r\n\r\n{base64_lines(data)}--IN--\r\n"
    )
    return f"--MIX\r\nContent-Type: message/rfc822\r\n\r\n{inner}"


def test_a_document_in_a_forwarded_message_is_judged(gateway: Any, pki: TestPKI) -> None:
    """A forwarded message's documents are the forwarder's to sign-check like any other:
    unsigned refused, signed accepted."""
    unsigned = message(_forwarded("cong-van.pdf", make_pdf()), sender=OFFICIAL, to=CLERK)
    _, (code, text) = gateway.send(unsigned, OFFICIAL, [CLERK])
    assert code == 550 and b"[document.unsigned]" in text, text
    signed_pdf = sign_pdf(make_pdf("Cong van da ky"), pki.person)
    signed = message(_forwarded("cong-van.pdf", signed_pdf), sender=OFFICIAL, to=CLERK)
    _, (code, text) = gateway.send(signed, OFFICIAL, [CLERK])
    assert code == 250, text
