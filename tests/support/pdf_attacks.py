"""PDF signature attacks (issue 15, class 1), built at test time over the test PKI: a corpus to
extend. Anchors: pdf-insecurity.org; Mladenov et al., "1 Trillion Dollar Refund" (CCS 2019:
incremental saving, signature wrapping, universal signature forgery); Mainka et al., "Shadow
Attacks" (NDSS 2021: hide, replace, hide-and-replace).

Every attack starts from :func:`letter`, a one-page letter as an office writes it: text in a
font object, an image (the seal), a filled form field (the document number) and an overlay
that a later change could hide, plus a *shadow* body of its page content stream that no
cross-reference entry points to (bytes an attacker planted before the signing).

- :data:`MODIFIED`: a valid signature followed by a change of what is shown. Each must be
  ``fail``/``modified`` (550 ``document.modified_after_signing``).
- :data:`FORGED`: signature dictionaries that prove nothing (no, empty or zero
  ``/Contents``, a wrong ``/ByteRange``, wrapped). Each must fail, never pass.
- :data:`CONTROLS`: what real signing tools write, which must pass: further signatures,
  certification that allows them, document timestamps and validation data, a visible
  signature, a line break after ``%%EOF``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO

from asn1crypto import x509 as asn1_x509
from asn1crypto.crl import CertificateList
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign import signers
from pyhanko.sign.fields import enumerate_sig_fields
from pyhanko.sign.validation import EmbeddedPdfSignature, async_add_validation_info
from pyhanko_certvalidator import ValidationContext

from tests.support.pki import TestPKI, make_pdf, sign_pdf

__all__ = ["CONTROLS", "FORGED", "MODIFIED", "Attack", "append_revision", "letter"]


@dataclass(frozen=True)
class Attack:
    name: str
    build: Callable[[TestPKI], bytes]  # the PDF to attach


# --- the letter ----------------------------------------------------------------------------

PAGE_TEXT = b"BT /F1 14 Tf 72 720 Td (Cong van so 123/UBND-VP: cap 10 trieu dong) Tj ET"
SHADOW_TEXT = b"BT /F1 14 Tf 72 720 Td (Cong van so 123/UBND-VP: cap 90 trieu dong) Tj ET"
PAGE, CONTENT, FONT, SEAL, FIELD, FIELD_AP, OVERLAY, VALUE = 3, 4, 5, 6, 7, 8, 9, 10


def _stream(dictionary: bytes, data: bytes) -> bytes:
    return b"<< %s /Length %d >>\nstream\n%s\nendstream" % (dictionary, len(data), data)


def _page_content(text: bytes) -> bytes:
    return _stream(b"", text + b"\nq 100 0 0 100 400 600 cm /Seal Do Q\n/Overlay Do")


def _field(value: bytes) -> bytes:
    """The document-number field; its value is ``value`` or, written ``10 0 R``, object 10."""
    value = value if value.endswith(b" R") else b"(%s)" % value
    return (
        b"<< /Type /Annot /Subtype /Widget /FT /Tx /T (so_van_ban) /V %s /F 4"
        b" /Rect [72 650 300 670] /P 3 0 R /DA (/Helv 12 Tf 0 g) /AP << /N 8 0 R >> >>" % value
    )


def _field_appearance(value: bytes) -> bytes:
    return _stream(
        b"/Type /XObject /Subtype /Form /BBox [0 0 228 20]"
        b" /Resources << /Font << /Helv 5 0 R >> >>",
        b"/Tx BMC BT /Helv 12 Tf 2 5 Td (%s) Tj ET EMC" % value,
    )


def _overlay(cover: bool) -> bytes:
    """A form XObject drawn last on the page: empty, or a white box over the amount."""
    drawing = b"1 g 250 715 60 20 re f" if cover else b""
    return _stream(b"/Type /XObject /Subtype /Form /BBox [0 0 595 842]", drawing)


def _seal(rgb: bytes) -> bytes:
    return _stream(
        b"/Type /XObject /Subtype /Image /Width 2 /Height 2 /ColorSpace /DeviceRGB"
        b" /BitsPerComponent 8",
        rgb * 4,
    )


def letter() -> bytes:
    """The unsigned letter, written by hand so that each object's number is known."""
    bodies = {
        1: b"<< /Type /Catalog /Pages 2 0 R /AcroForm << /Fields [7 0 R]"
        b" /DA (/Helv 0 Tf 0 g) /DR << /Font << /Helv 5 0 R >> >> >> >>",
        2: b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        PAGE: b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> /XObject << /Seal 6 0 R /Overlay 9 0 R >> >>"
        b" /Annots [7 0 R] >>",
        CONTENT: _page_content(PAGE_TEXT),
        FONT: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        SEAL: _seal(b"\xcc\x00\x00"),
        FIELD: _field(b"10 0 R"),
        FIELD_AP: _field_appearance(b"123"),
        OVERLAY: _overlay(cover=False),
        VALUE: b"(123)",
    }
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = {}
    for number, body in bodies.items():
        offsets[number] = len(out)
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    # The shadow: a second body of the page content stream, which no xref entry names.
    out += b"4 0 obj\n%s\nendobj\n" % _page_content(SHADOW_TEXT)
    xref_at = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(bodies) + 1)
    out += b"".join(b"%010d 00000 n \n" % offsets[n] for n in sorted(offsets))
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\n" % (len(bodies) + 1)
    out += b"startxref\n%d\n%%%%EOF\n" % xref_at
    return bytes(out)


def shadow_offset(pdf: bytes) -> int:
    """Where the planted body of the page content stream starts."""
    return pdf.index(b"4 0 obj\n" + _page_content(SHADOW_TEXT))


# --- incremental updates written by hand ---------------------------------------------------


def append_revision(
    pdf: bytes,
    objects: dict[int, bytes],
    *,
    repoint: dict[int, int] | None = None,
    root: int | None = None,
    xref: bool = True,
    startxref_shift: int = 0,
) -> bytes:
    """``pdf`` with an incremental update that (re)defines ``objects`` (number -> body).

    ``repoint`` adds xref entries for objects whose bodies are already in the file (number ->
    offset); ``root`` makes the new trailer name another catalog; without ``xref`` only the
    object bodies are appended (no xref, trailer or ``%%EOF``); ``startxref_shift`` makes the
    new ``startxref`` point that many bytes off its xref.
    """
    trailer = PdfFileReader(BytesIO(pdf), strict=False).trailer_view
    previous = int(re.findall(rb"startxref\s+(\d+)", pdf)[-1])
    out = bytearray(pdf)
    offsets = dict(repoint or {})
    for number, body in objects.items():
        offsets[number] = len(out)
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    if not xref:
        return bytes(out)
    size = max(int(trailer["/Size"]), max(offsets, default=0) + 1)
    xref_at = len(out)
    out += b"xref\n0 1\n0000000000 65535 f \n"
    for number in sorted(offsets):
        out += b"%d 1\n%010d 00000 n \n" % (number, offsets[number])
    root_ref = b"%d 0 R" % (root if root is not None else trailer.raw_get("/Root").idnum)
    out += b"trailer\n<< /Size %d /Root %s /Prev %d >>\n" % (size, root_ref, previous)
    out += b"startxref\n%d\n%%%%EOF\n" % (xref_at + startxref_shift)
    return bytes(out)


def _signed(pki: TestPKI) -> bytes:
    return sign_pdf(letter(), pki.person)


def _after(
    change: Callable[[bytes], bytes], *, then_countersign: bool = False
) -> Callable[[TestPKI], bytes]:
    """An attack: the letter signed by the person, changed by ``change``; optionally the
    clerk signs after the change (a countersignature must not bless it)."""

    def build(pki: TestPKI) -> bytes:
        changed = change(_signed(pki))
        return sign_pdf(changed, pki.clerk) if then_countersign else changed

    return build


def _objects(**bodies: bytes) -> Callable[[bytes], bytes]:
    numbers = {"page": PAGE, "content": CONTENT, "font": FONT, "seal": SEAL}
    numbers |= {"field": FIELD, "field_ap": FIELD_AP, "overlay": OVERLAY, "value": VALUE}
    return lambda pdf: append_revision(pdf, {numbers[k]: v for k, v in bodies.items()})


def _annotation(pdf: bytes) -> bytes:
    """A FreeText annotation over the amount, added to the page's /Annots."""
    page = re.sub(rb"/Annots\s*\[", b"/Annots [40 0 R ", letter_page(pdf))
    note = (
        b"<< /Type /Annot /Subtype /FreeText /Rect [250 715 310 735] /Contents (90)"
        b" /DA (/Helv 14 Tf 0 g) /F 4 >>"
    )
    return append_revision(pdf, {PAGE: page, 40: note})


def letter_page(pdf: bytes) -> bytes:
    """The page object's body as the signed PDF has it last (pyHanko may have added to it)."""
    return _last_body(pdf, PAGE)


def _new_root(pdf: bytes) -> bytes:
    """A trailer that switches /Root to a new catalog, pages and page: the signed objects are
    all still there, unused."""
    objects = {
        41: b"<< /Type /Catalog /Pages 42 0 R >>",
        42: b"<< /Type /Pages /Kids [43 0 R] /Count 1 >>",
        43: b"<< /Type /Page /Parent 42 0 R /MediaBox [0 0 595 842] /Contents 44 0 R"
        b" /Resources << /Font << /F1 5 0 R >> /XObject << /Seal 6 0 R /Overlay 9 0 R >> >> >>",
        44: _page_content(SHADOW_TEXT),
    }
    return append_revision(pdf, objects, root=41)


def _catalog(pdf: bytes, extra: bytes) -> bytes:
    """The catalog as the signed PDF has it last, with ``extra`` entries (in /AcroForm for
    /NeedAppearances)."""
    body = _last_body(pdf, 1)
    if extra.startswith(b"/NeedAppearances"):
        return re.sub(rb"/AcroForm\s*<<", b"/AcroForm << " + extra, body, count=1)
    return body[: body.rindex(b">>")] + extra + b" >>"


def _last_body(pdf: bytes, number: int) -> bytes:
    starts = [m.end() for m in re.finditer(rb"\n%d 0 obj\s*" % number, pdf)]
    return pdf[starts[-1] : pdf.index(b"endobj", starts[-1])].strip()


def _free(pdf: bytes, number: int) -> bytes:
    """An update whose xref marks object ``number`` free."""
    previous = int(re.findall(rb"startxref\s+(\d+)", pdf)[-1])
    size = int(PdfFileReader(BytesIO(pdf), strict=False).trailer_view["/Size"])
    update = b"xref\n0 1\n0000000000 65535 f \n%d 1\n0000000000 00001 f \n" % number
    update += b"trailer\n<< /Size %d /Root 1 0 R /Prev %d >>\n" % (size, previous)
    return pdf + update + b"startxref\n%d\n%%%%EOF\n" % len(pdf)


def _redraw_signature(pdf: bytes) -> bytes:
    """The visible signature's appearance stream replaced by one that shows another name."""
    reader = PdfFileReader(BytesIO(pdf))
    widget = reader.root["/AcroForm"]["/Fields"][-1]
    ref = widget["/AP"].raw_get("/N")
    drawing = _stream(
        b"/Type /XObject /Subtype /Form /BBox [0 0 200 60] /Resources << /Font << /F1 5 0 R >> >>",
        b"BT /F1 10 Tf 5 30 Td (Ky boi: Chu tich UBND tinh) Tj ET",
    )
    return append_revision(pdf, {ref.idnum: drawing})


def _sign_regardless(pdf: bytes, pki: TestPKI) -> bytes:
    """The clerk signs with a tool that ignores the certification's permissions, as an
    attacker's would (pyHanko's own signer refuses)."""

    class Careless(signers.PdfSigner):
        def _enforce_certification_constraints(self, reader: object) -> None:
            return None

    meta = signers.PdfSignatureMetadata(field_name="Sig2", md_algorithm="sha256")
    writer = IncrementalPdfFileWriter(BytesIO(pdf))
    return Careless(meta, signer=pki.clerk.pyhanko_signer()).sign_pdf(writer).getvalue()


def _with_validation_data(pdf: bytes, pki: TestPKI) -> bytes:
    """``pdf`` with the validation data of its last signature (certificates and CRLs in a
    DSS) added in an update, as a PAdES-LTV signing tool does."""
    context = ValidationContext(
        trust_roots=[asn1_x509.Certificate.load(pki.root.der)],
        other_certs=[asn1_x509.Certificate.load(pki.issuing.der)],
        crls=[CertificateList.load(pki.root_crl), CertificateList.load(pki.issuing_crl)],
        allow_fetching=False,
    )
    reader = PdfFileReader(BytesIO(pdf))
    name, _, field = list(enumerate_sig_fields(reader, filled_status=True))[-1]
    out = BytesIO()
    signature = EmbeddedPdfSignature(reader, field, name)
    asyncio.run(async_add_validation_info(signature, context, output=out))
    return out.getvalue()


def _empty_updates(pdf: bytes, count: int) -> bytes:
    for _ in range(count):
        pdf = append_revision(pdf, {})
    return pdf


def _trailing(data: bytes) -> Callable[[bytes], bytes]:
    return lambda pdf: pdf + data


_APPENDED_OBJECT = b"4 0 obj\n" + _page_content(SHADOW_TEXT) + b"\nendobj\n"


MODIFIED: tuple[Attack, ...] = (
    Attack("page content redefined", _after(_objects(content=_page_content(SHADOW_TEXT)))),
    Attack(
        "content stream added to the page",
        _after(
            lambda pdf: append_revision(
                pdf,
                {
                    PAGE: re.sub(
                        rb"/Contents\s+4 0 R", b"/Contents [4 0 R 45 0 R]", letter_page(pdf)
                    ),
                    45: _stream(b"", b"1 g 250 715 60 20 re f 0 g " + SHADOW_TEXT[:-2] + b"ET"),
                },
            )
        ),
    ),
    Attack("seal image replaced", _after(_objects(seal=_seal(b"\x00\x00\xcc")))),
    Attack("annotation added over the text", _after(_annotation)),
    Attack(
        "form field value changed",
        _after(_objects(field=_field(b"999"), field_ap=_field_appearance(b"999"))),
    ),
    Attack(
        "form field value changed in its own object",
        _after(
            _objects(value=b"(999)", field_ap=_field_appearance(b"999")),
            then_countersign=True,
        ),
    ),
    Attack(
        "font remapped",
        _after(_objects(font=b"<< /Type /Font /Subtype /Type1 /BaseFont /ZapfDingbats >>")),
    ),
    Attack("shadow, hide: an overlay covers the amount", _after(_objects(overlay=_overlay(True)))),
    Attack(
        "shadow, hide-and-replace: an xref re-points the content at a planted body",
        _after(lambda pdf: append_revision(pdf, {}, repoint={CONTENT: shadow_offset(pdf)})),
    ),
    Attack("trailer switches /Root", _after(_new_root)),
    Attack(
        "trailer switches /Root, then 150 empty updates",
        _after(lambda pdf: _empty_updates(_new_root(pdf), 150)),
    ),
    Attack("object appended with no xref", _after(_trailing(_APPENDED_OBJECT))),
    Attack(
        "object appended with an xref, trailer and %%EOF but a wrong startxref",
        _after(
            lambda pdf: append_revision(
                pdf, {CONTENT: _page_content(SHADOW_TEXT)}, startxref_shift=-7
            )
        ),
    ),
    Attack(
        "object appended after %%EOF with only a trailer",
        _after(_trailing(_APPENDED_OBJECT + b"trailer\n<< /Root 1 0 R >>\n")),
    ),
    Attack(
        "catalog gains an action run on opening",
        _after(
            lambda pdf: append_revision(
                pdf, {1: _catalog(pdf, b"/OpenAction << /S /JavaScript /JS (app.alert(1)) >>")}
            )
        ),
    ),
    Attack(
        "form asks viewers to redraw fields from their values",
        _after(lambda pdf: append_revision(pdf, {1: _catalog(pdf, b"/NeedAppearances true")})),
    ),
    Attack(
        "page content object freed",
        _after(lambda pdf: _free(pdf, CONTENT)),
    ),
    Attack(
        "visible signature's appearance redrawn",
        lambda pki: _redraw_signature(sign_pdf(letter(), pki.person, visible=True)),
    ),
    Attack(
        "content changed, then countersigned",
        _after(_objects(content=_page_content(SHADOW_TEXT)), then_countersign=True),
    ),
    Attack(
        "form field filled, then countersigned",
        _after(
            _objects(field=_field(b"999"), field_ap=_field_appearance(b"999")),
            then_countersign=True,
        ),
    ),
    Attack("annotation added, then countersigned", _after(_annotation, then_countersign=True)),
    Attack(
        "certified with no changes allowed, then signed again",
        lambda pki: _sign_regardless(sign_pdf(letter(), pki.person, certify=True, docmdp=1), pki),
    ),
)


# --- forged signature dictionaries ---------------------------------------------------------


def _contents_span(pdf: bytes) -> tuple[int, int]:
    """The last signature's /Contents hex string, from ``<`` to after ``>``."""
    start = pdf.rindex(b"/Contents <") + len(b"/Contents ")
    return start, pdf.index(b">", start) + 1


def _same_length(pdf: bytes, start: int, end: int, replacement: bytes) -> bytes:
    """``pdf`` with bytes [start, end) replaced, padded with spaces: every offset stays."""
    assert len(replacement) <= end - start
    return pdf[:start] + replacement.ljust(end - start) + pdf[end:]


def _contents(replacement: Callable[[bytes], bytes]) -> Callable[[TestPKI], bytes]:
    def build(pki: TestPKI) -> bytes:
        pdf = _signed(pki)
        start, end = _contents_span(pdf)
        return _same_length(pdf, start, end, replacement(pdf[start:end]))

    return build


def _byte_range(values: bytes) -> Callable[[TestPKI], bytes]:
    def build(pki: TestPKI) -> bytes:
        pdf = _signed(pki)
        start = pdf.rindex(b"/ByteRange [")
        end = pdf.index(b"]", start) + 1
        return _same_length(pdf, start, end, b"/ByteRange [%s]" % values)

    return build


def _no_contents(pki: TestPKI) -> bytes:
    pdf = _signed(pki)
    start, end = _contents_span(pdf)
    return _same_length(pdf, start - len(b"/Contents "), end, b"")


def _wrapped(extra: bytes) -> Callable[[TestPKI], bytes]:
    """Signature wrapping: /Contents shortened to its DER (the zero padding dropped) and the
    freed bytes, still inside the unsigned gap of /ByteRange, used to write ``extra``."""

    def build(pki: TestPKI) -> bytes:
        pdf = _signed(pki)
        start, end = _contents_span(pdf)
        digits = pdf[start + 1 : end - 1].rstrip(b"0")
        digits += b"0" * (len(digits) % 2)
        return _same_length(pdf, start, end, b"<" + digits + b"> " + extra)

    return build


FORGED: tuple[Attack, ...] = (
    Attack("no /Contents", _no_contents),
    Attack("empty /Contents", _contents(lambda _: b"<>")),
    Attack("zero /Contents", _contents(lambda old: b"<" + b"0" * (len(old) - 2) + b">")),
    Attack("/ByteRange of zeros", _byte_range(b"0 0 0 0")),
    Attack("/ByteRange over the first bytes only", _byte_range(b"0 10 20 10")),
    Attack("/ByteRange with a negative length", _byte_range(b"0 -1 0 0")),
    Attack("wrapped: a second /ByteRange in the gap", _wrapped(b"/ByteRange [0 1 2 3]")),
    Attack(
        "wrapped: the gap closes the dictionary and defines an object",
        _wrapped(b">>\nendobj\n4 0 obj\n" + _page_content(SHADOW_TEXT) + b"\nendobj\n9 0 obj\n<<"),
    ),
)


# --- what must still pass ------------------------------------------------------------------

CONTROLS: tuple[Attack, ...] = (
    Attack("signed", _signed),
    Attack("signed, a line break after %%EOF", lambda pki: _signed(pki) + b"\r\n"),
    Attack("countersigned", lambda pki: sign_pdf(_signed(pki), pki.clerk)),
    Attack(
        "certified allowing signatures, then countersigned",
        lambda pki: sign_pdf(sign_pdf(letter(), pki.person, certify=True), pki.clerk),
    ),
    Attack(
        "countersigned with a visible signature",
        lambda pki: sign_pdf(_signed(pki), pki.clerk, visible=True),
    ),
    Attack(
        "cross-reference streams, signed and countersigned",
        lambda pki: sign_pdf(sign_pdf(make_pdf(stream_xrefs=True), pki.person), pki.clerk),
    ),
    Attack(
        "LTV: a timestamped signature, its validation data, then a document timestamp",
        lambda pki: sign_pdf(
            _with_validation_data(sign_pdf(letter(), pki.person, timestamp=pki.tsa), pki),
            None,
            timestamp=pki.tsa,
        ),
    ),
    Attack(
        "signed with a timestamp, then a document timestamp",
        lambda pki: sign_pdf(
            sign_pdf(letter(), pki.person, timestamp=pki.tsa), None, timestamp=pki.tsa
        ),
    ),
)
