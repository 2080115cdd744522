"""PDF mutations of the attacks on signed PDFs that the gateway defends against (issue 15):
incremental updates written by hand after the signature, and forged signature dictionaries.
``_pdf_attack`` draws one; every number, offset and body comes from the message's generator.

Updates: a revision (xref table, trailer with /Prev, startxref, %%EOF) that redefines random
objects (1..15) with plausible or random bodies (a page, a content stream, a catalog with an
action run on opening, a form told to redraw its fields, another signature); xref entries
that re-point an object at an offset inside the file (its earlier body, or anywhere) or free
it; objects appended with no xref; a wrong startxref (shifted, negative, huge); a trailer
whose /Root is a new, missing or non-catalog object; 10 to 200 tiny revisions; garbage with
many %%EOF markers; a /Prev that loops back or points past the end.

Forgeries, written over the signature dictionary in place, padded with spaces so that every
offset stays (where the replacement fits): /Contents removed, empty, zeros, an odd number of
digits, non-hex characters, or shortened with something written in the freed gap (a second
/ByteRange, the end of the object and another one); /ByteRange with 2 to 6 numbers,
negative, overlapping or past the end; /Type /DocTimeStamp; another /SubFilter.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable

from bench.fuzz.draw import _chance, _drew, _garbage, _pick, _printable

_SHOWN = b"BT /F1 14 Tf 72 720 Td (Cong van so 123/UBND-VP: cap 90 trieu dong) Tj ET"
_FONT = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"
_STARTXREF = re.compile(rb"startxref\s+(-?\d+)")
_OBJECT = re.compile(rb"(?<![0-9])\d+ 0 obj")


# --- object bodies ---------------------------------------------------------------------------


def _number(rng: random.Random) -> int:
    return rng.randrange(1, 16)


def _stream(rng: random.Random, data: bytes, entries: bytes = b"") -> bytes:
    length = len(data) if _chance(rng, 0.9) else rng.randrange(-3, 10**6)
    end = b"\nendstream" if _chance(rng, 0.95) else b""
    return b"<< %s/Length %d >>\nstream\n%s%s" % (entries, length, data, end)


def _page(rng: random.Random) -> bytes:
    contents = _pick(rng, (b"3 0 R", b"%d 0 R" % _number(rng), b"[3 0 R %d 0 R]" % _number(rng)))
    annots = _pick(rng, (b" /Annots [8 0 R]", b"", b" /Annots [8 0 R %d 0 R]" % _number(rng)))
    return (
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents %s"
        b" /Resources << /Font << /F1 %s >> >>%s >>" % (contents, _FONT, annots)
    )


def _content(rng: random.Random) -> bytes:
    drawing = _pick(rng, (_SHOWN, b"1 g 250 715 60 20 re f 0 g " + _SHOWN, b"q Q", b""))
    return _stream(rng, drawing)


def _catalog_action(rng: random.Random) -> bytes:
    action = _pick(
        rng,
        (
            b"<< /S /JavaScript /JS (app.alert\\(1\\)) >>",
            b"<< /S /URI /URI (http://evil.example/) >>",
            b"<< /S /Launch /F (cmd.exe) >>",
            b"[4 0 R /Fit]",
            b"%d 0 R" % _number(rng),
        ),
    )
    return b"<< /Type /Catalog /Pages 2 0 R /AcroForm 7 0 R /OpenAction %s >>" % action


def _redraw_form(rng: random.Random) -> bytes:
    value = _pick(rng, (b"true", b"true", b"false", b"1", b"/true"))
    if _chance(rng, 0.5):  # the form object itself (7 in the signed corpus PDF)
        return b"<< /Fields [8 0 R] /SigFlags 3 /NeedAppearances %s >>" % value
    return (
        b"<< /Type /Catalog /Pages 2 0 R /AcroForm << /Fields [8 0 R] /SigFlags 3"
        b" /NeedAppearances %s >> >>" % value
    )


def _field(rng: random.Random) -> bytes:
    if _chance(rng, 0.5):
        return (
            b"<< /FT /Tx /T (so_van_ban) /V (999) /Type /Annot /Subtype /Widget"
            b" /Rect [72 650 300 670] /P 4 0 R >>"
        )
    value = _pick(rng, (b" /V 9 0 R", b"", b" /V %d 0 R" % _number(rng), b" /V null"))
    return (
        b"<< /FT /Sig /T (Sig%d) /Type /Annot /Subtype /Widget /F 132 /Rect [0 0 0 0]"
        b" /P 4 0 R%s >>" % (rng.randrange(1, 4), value)
    )


def _signature_value(rng: random.Random) -> bytes:
    """A signature dictionary of its own (another signature, or a timestamp)."""
    kind = _pick(rng, (b"/Sig", b"/DocTimeStamp", b"/Sig"))
    subfilter = _pick(rng, (b"/ETSI.CAdES.detached", b"/ETSI.RFC3161", b"/adbe.pkcs7.detached"))
    span = b" ".join(b"%d" % rng.randrange(-2, 9000) for _ in range(4))
    digits = _garbage(rng, rng.randrange(0, 64)).hex().encode()
    return b"<< /Type %s /Filter /Adobe.PPKLite /SubFilter %s /ByteRange [%s] /Contents <%s> >>" % (
        kind,
        subfilter,
        span,
        digits,
    )


def _annotation(rng: random.Random) -> bytes:
    return (
        b"<< /Type /Annot /Subtype /FreeText /Rect [250 715 310 735] /Contents (90)"
        b" /DA (/Helv 14 Tf 0 g) /F 4 /P 4 0 R >>"
    )


def _pages(rng: random.Random) -> bytes:
    kids = b" ".join(b"%d 0 R" % _number(rng) for _ in range(rng.randrange(0, 4)))
    return b"<< /Type /Pages /Count %d /Kids [%s] >>" % (rng.randrange(-1, 5), kids)


def _scalar(rng: random.Random) -> bytes:
    return _pick(rng, (b"null", b"0", b"-1", b"(x)", b"/Name", b"true", b"[]", b"<<>>", b""))


def _junk(rng: random.Random) -> bytes:
    if _chance(rng, 0.5):
        return _printable(rng, rng.randrange(1, 200)).encode()
    return _garbage(rng, rng.randrange(1, 200))


def _deep(rng: random.Random) -> bytes:
    depth = rng.randrange(10, 3000)
    opening, closing = _pick(rng, ((b"[", b"]"), (b"<< /A ", b" >>")))
    return opening * depth + b"0" + (closing * depth if _chance(rng, 0.8) else b"")


_BODIES: tuple[Callable[[random.Random], bytes], ...] = (
    _page,
    _content,
    _content,
    _catalog_action,
    _redraw_form,
    _field,
    _signature_value,
    _annotation,
    _pages,
    _scalar,
    _junk,
    _deep,
)


def _body(rng: random.Random) -> bytes:
    return _pick(rng, _BODIES)(rng)


# --- revisions -------------------------------------------------------------------------------


def _last(pattern: bytes, pdf: bytes, default: int) -> int:
    found = re.findall(pattern, pdf)
    return int(found[-1]) if found else default


def _revision(
    rng: random.Random,
    pdf: bytes,
    objects: dict[int, bytes],
    *,
    repoint: dict[int, int] | None = None,
    free: tuple[int, ...] = (),
    root: bytes | None = None,
    prev: Callable[[int, int], bytes] | None = None,
    startxref: Callable[[int], bytes] | None = None,
) -> bytes:
    """``pdf`` with an incremental update that defines ``objects`` (number -> body),
    re-points ``repoint`` (number -> offset) and frees ``free``. ``root`` is the trailer's
    /Root entry (default: the last one's); ``prev`` gives /Prev from (the last startxref, this
    xref's offset); ``startxref`` gives the startxref value from this xref's offset."""
    previous = _last(rb"startxref\s+(-?\d+)", pdf, 0)
    size = _last(rb"/Size\s+(\d+)", pdf, 1)
    out = bytearray(pdf)
    if _chance(rng, 0.9) and not out.endswith(b"\n"):
        out += b"\n"
    entries = {number: b"%010d 00000 n \n" % offset for number, offset in (repoint or {}).items()}
    for number, body in objects.items():
        entries[number] = b"%010d 00000 n \n" % len(out)
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    for number in free:
        entries[number] = b"0000000000 %05d f \n" % _pick(rng, (1, 1, 0, 65535))
    xref_at = len(out)
    out += b"xref\n0 1\n0000000000 65535 f \n"
    for number in sorted(entries):
        out += b"%d 1\n%s" % (number, entries[number])
    if root is None:
        root = b"/Root %d 0 R" % _last(rb"/Root\s+(\d+)\s+\d+\s+R", pdf, 1)
    size = max(size, max(entries, default=0) + 1)
    prev_value = prev(previous, xref_at) if prev else b"%d" % previous
    out += b"trailer\n<< /Size %d %s /Prev %s >>\n" % (size, root, prev_value)
    out += b"startxref\n%s\n%%%%EOF\n" % (startxref(xref_at) if startxref else b"%d" % xref_at)
    return bytes(out)


def _redefine(rng: random.Random, pdf: bytes) -> bytes:
    objects = {_number(rng): _body(rng) for _ in range(rng.randrange(1, 5))}
    return _revision(rng, pdf, objects)


def _repoint(rng: random.Random, pdf: bytes) -> bytes:
    """Xref entries that name bytes already in the file: an earlier body (a shadow), any."""
    starts = [m.start() for m in _OBJECT.finditer(pdf)]
    repoint = {}
    for _ in range(rng.randrange(1, 4)):
        roll = rng.random()
        if roll < 0.5 and starts:
            offset = _pick(rng, starts)
        elif roll < 0.9:
            offset = rng.randrange(len(pdf) + 1)
        else:
            offset = len(pdf) + rng.randrange(1, 10**6)
        repoint[_number(rng)] = offset
    return _revision(rng, pdf, {}, repoint=repoint)


def _free(rng: random.Random, pdf: bytes) -> bytes:
    free = tuple({_number(rng) for _ in range(rng.randrange(1, 4))})
    objects = {_number(rng): _body(rng)} if _chance(rng, 0.3) else {}
    return _revision(rng, pdf, objects, free=free)


def _no_xref(rng: random.Random, pdf: bytes) -> bytes:
    """Objects appended after %%EOF with no cross-reference section (a repairing reader
    shows them), sometimes ending in a trailer, a startxref or a %%EOF of their own."""
    out = bytearray(pdf)
    for _ in range(rng.randrange(1, 4)):
        out += b"\n%d 0 obj\n%s\nendobj\n" % (_number(rng), _body(rng))
    out += _pick(
        rng,
        (
            b"",
            b"%%EOF\n",
            b"trailer\n<< /Root 1 0 R >>\n",
            b"trailer\n<< /Root 1 0 R >>\n%%EOF\n",
            b"startxref\n%d\n%%%%EOF\n" % _last(rb"startxref\s+(-?\d+)", pdf, 0),
        ),
    )
    return bytes(out)


def _wrong_startxref(rng: random.Random, pdf: bytes) -> bytes:
    def wrong(xref_at: int) -> bytes:
        roll = rng.random()
        if roll < 0.5:
            return b"%d" % (xref_at + _pick(rng, (-1, 1)) * rng.randrange(1, 400))
        if roll < 0.7:
            return b"-%d" % rng.randrange(0, 10**6)
        if roll < 0.85:
            return b"%d" % rng.randrange(10**9, 10**19)
        return _pick(rng, (b"", b"x", b"1e3", b"+5", b"0", b"%d" % len(pdf)))

    objects = {_number(rng): _body(rng) for _ in range(rng.randrange(0, 3))}
    return _revision(rng, pdf, objects, startxref=wrong)


def _other_root(rng: random.Random, pdf: bytes) -> bytes:
    """A trailer whose /Root is a new catalog (the signed objects left unused), missing, or
    not a catalog."""
    roll = rng.random()
    objects: dict[int, bytes] = {}
    if roll < 0.4:
        base = rng.randrange(11, 40)
        objects = {
            base: b"<< /Type /Catalog /Pages %d 0 R >>" % (base + 1),
            base + 1: b"<< /Type /Pages /Kids [%d 0 R] /Count 1 >>" % (base + 2),
            base + 2: b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 595 842] /Contents %d 0 R"
            b" /Resources << /Font << /F1 %s >> >> >>" % (base + 1, base + 3, _FONT),
            base + 3: _stream(rng, _SHOWN),
        }
        root = b"/Root %d 0 R" % base
    elif roll < 0.6:
        root = b""
    elif roll < 0.9:
        root = b"/Root %d 0 R" % _pick(rng, (2, 3, 4, 5, 8, 9, 0, 99, _number(rng)))
    else:
        root = _pick(rng, (b"/Root << /Type /Catalog >>", b"/Root 1 0 R /Root 4 0 R", b"/Root"))
    return _revision(rng, pdf, objects, root=root)


def _many_revisions(rng: random.Random, pdf: bytes) -> bytes:
    for _ in range(rng.randrange(10, 201)):
        if _chance(rng, 0.9):  # a tiny update: the document information
            body = b"<< /ModDate (D:20261122%06d) /Producer (x) >>" % rng.randrange(10**6)
            pdf = _revision(rng, pdf, {5: body})
        else:
            pdf = _revision(rng, pdf, {_number(rng): _body(rng)})
    return pdf


def _many_eof(rng: random.Random, pdf: bytes) -> bytes:
    out = bytearray(pdf)
    for _ in range(rng.randrange(2, 60)):
        out += _pick(rng, (b"", b"\n", b"\r\n")) + _garbage(rng, rng.randrange(0, 80))
        if _chance(rng, 0.3):
            out += b"startxref\n%d\n" % rng.randrange(len(out) + 1)
        out += b"%%EOF" + _pick(rng, (b"\n", b"", b"\r\n", b" "))
    return bytes(out)


def _bad_prev(rng: random.Random, pdf: bytes) -> bytes:
    """A /Prev that loops (to its own xref, or two revisions to each other) or points past
    the end of the file."""
    roll = rng.random()
    objects = {_number(rng): _body(rng)}
    if roll < 0.3:
        return _revision(rng, pdf, objects, prev=lambda _previous, xref_at: b"%d" % xref_at)
    if roll < 0.55:
        return _revision(
            rng, pdf, objects, prev=lambda _p, at: b"%d" % (at + rng.randrange(1, 10**7))
        )
    if roll < 0.7:
        return _revision(rng, pdf, objects, prev=lambda _p, _at: _pick(rng, (b"-1", b"0", b"x")))
    # two revisions naming each other: the first /Prev is written wide, then filled in
    placeholder = b"9" * 10
    first = _revision(rng, pdf, objects, prev=lambda _p, _at: placeholder)
    at = first.rindex(b"/Prev " + placeholder) + len(b"/Prev ")
    second = _revision(rng, first, {_number(rng): _body(rng)})  # its /Prev: the first's xref
    second_xref = _last(rb"startxref\s+(-?\d+)", second, 0)
    return second[:at] + b"%010d" % second_xref + second[at + len(placeholder) :]


_UPDATES: tuple[tuple[str, Callable[[random.Random, bytes], bytes]], ...] = (
    ("redefine", _redefine),
    ("redefine", _redefine),
    ("repoint", _repoint),
    ("free", _free),
    ("no-xref", _no_xref),
    ("startxref", _wrong_startxref),
    ("root", _other_root),
    ("many-revisions", _many_revisions),
    ("many-eof", _many_eof),
    ("prev", _bad_prev),
)


def _update(rng: random.Random, pdf: bytes) -> bytes:
    name, build = _pick(rng, _UPDATES)
    _drew(f"pdf.update.{name}")
    return build(rng, pdf)


# --- forged signature dictionaries -----------------------------------------------------------


def _overwrite(pdf: bytes, start: int, end: int, replacement: bytes) -> bytes:
    """``pdf`` with [start, end) replaced: padded with spaces when it fits (every offset
    stays), else spliced in (the offsets after it move)."""
    if len(replacement) <= end - start:
        replacement = replacement.ljust(end - start)
    return pdf[:start] + replacement + pdf[end:]


def _contents_span(pdf: bytes) -> tuple[int, int]:
    """The last signature's /Contents hex string, from ``<`` to after ``>``."""
    start = pdf.rindex(b"/Contents <") + len(b"/Contents ")
    end = pdf.find(b">", start)
    return start, (end + 1 if end >= 0 else len(pdf))


def _gap_text(rng: random.Random) -> bytes:
    """What an attacker writes in the bytes a shortened /Contents frees."""
    return _pick(
        rng,
        (
            b"/ByteRange [0 1 2 3]",
            b"/ByteRange [%d %d %d %d]" % tuple(rng.randrange(-5, 10**4) for _ in range(4)),
            b">>\nendobj\n3 0 obj\n" + _stream(rng, _SHOWN) + b"\nendobj\n9 0 obj\n<<",
            b">>\nendobj\n%d 0 obj\n<<" % _number(rng),
            b"/Contents <00>",
            b"/Type /DocTimeStamp",
            b"/SubFilter /adbe.x509.rsa_sha1",
            b"%%EOF\n",
            _printable(rng, rng.randrange(1, 300)).encode(),
        ),
    )


def _forge_contents(rng: random.Random, pdf: bytes) -> bytes:
    start, end = _contents_span(pdf)
    digits = pdf[start + 1 : end - 1]
    roll = rng.random()
    if roll < 0.12:  # no /Contents at all
        return _overwrite(pdf, start - len(b"/Contents "), end, b"")
    if roll < 0.22:
        replacement = b"<>"
    elif roll < 0.32:
        replacement = b"<" + b"0" * len(digits) + b">"
    elif roll < 0.44:  # an odd number of hex digits
        replacement = b"<" + (digits[:-1] if len(digits) % 2 == 0 else digits) + b">"
    elif roll < 0.58:  # characters that are not hex digits
        out = bytearray(digits)
        for _ in range(rng.randrange(1, 20)):
            if out:
                out[rng.randrange(len(out))] = _pick(rng, b"GgZz-x.# \x00<\n")
        replacement = b"<" + bytes(out) + b">"
    elif roll < 0.68:  # the DER cut short
        replacement = b"<" + digits[: rng.randrange(len(digits) + 1)] + b">"
    else:  # wrapped: shortened to its DER, something written in the freed gap
        der = digits.rstrip(b"0")
        der += b"0" * (len(der) % 2)
        replacement = b"<" + der + b"> " + _gap_text(rng)
    return _overwrite(pdf, start, end, replacement)


def _forge_byte_range(rng: random.Random, pdf: bytes) -> bytes:
    start = pdf.rindex(b"/ByteRange [")
    end = pdf.find(b"]", start)
    end = len(pdf) if end < 0 else end + 1
    while end < len(pdf) and pdf[end] == 0x20:  # the padding a signer leaves after it
        end += 1
    real = [int(n) for n in re.findall(rb"-?\d+", pdf[start:end])[:4]]
    real += [0] * (4 - len(real))

    def value() -> int:
        roll = rng.random()
        if roll < 0.3:
            return _pick(rng, real) + rng.randrange(-3, 4)
        if roll < 0.45:
            return -rng.randrange(1, 10**6)
        if roll < 0.6:
            return len(pdf) + rng.randrange(0, 10**4)
        if roll < 0.7:
            return rng.randrange(10**12, 10**18)
        return rng.randrange(len(pdf) + 1)

    roll = rng.random()
    if roll < 0.4:
        numbers = [value() for _ in range(_pick(rng, (2, 3, 5, 6)))]
    elif roll < 0.6:  # overlapping: the second range starts inside the first
        a, b = real[0], real[1] + rng.randrange(1, 2000)
        numbers = [a, b, rng.randrange(0, max(b, 1)), real[3] + rng.randrange(0, 100)]
    elif roll < 0.8:  # one number changed
        numbers = list(real)
        numbers[rng.randrange(4)] = value()
    else:
        numbers = [value() for _ in range(4)]
    text = b" ".join(b"%d" % n for n in numbers)
    if _chance(rng, 0.1):
        text = _pick(rng, (b"0 1.5 2 3", b"0 -0 1e3 4", b"4 0 R", b"", b"0 10 20 10 ]"))
    return _overwrite(pdf, start, end, b"/ByteRange [" + text + b"]")


def _forge_type(rng: random.Random, pdf: bytes) -> bytes:
    kind = _pick(rng, (b"/DocTimeStamp", b"/DocTimeStamp", b"/Sig ", b"/Annot", b"/X"))
    at = pdf.rfind(b"/Type /Sig")
    start = pdf.rindex(b"/ByteRange [")
    end = pdf.find(b"]", start) + 1
    if at < 0 or not end:
        return pdf
    if _chance(rng, 0.5):  # in place: offsets move
        return pdf[:at] + b"/Type " + kind + pdf[at + len(b"/Type /Sig") :]
    # a second /Type in the padding after /ByteRange: every offset stays
    pad = len(pdf[end:]) - len(pdf[end:].lstrip(b" "))
    return _overwrite(pdf, end, end + pad, b" /Type " + kind)


def _forge_subfilter(rng: random.Random, pdf: bytes) -> bytes:
    matches = list(re.finditer(rb"/SubFilter\s*/[^\s/<>\[\]()]*", pdf))
    if not matches:
        return pdf
    match = matches[-1]
    name = _pick(
        rng,
        (
            b"adbe.pkcs7.detached",
            b"adbe.pkcs7.sha1",
            b"adbe.x509.rsa_sha1",
            b"ETSI.RFC3161",
            b"etsi.cades.detached",
            b"ETSI.CAdES.detached#00",
            b"",
            _printable(rng, rng.randrange(1, 40)).encode().translate(None, b"/<>[]()%"),
        ),
    )
    return _overwrite(pdf, match.start(), match.end(), b"/SubFilter /" + name)


_FORGERIES: tuple[tuple[str, Callable[[random.Random, bytes], bytes]], ...] = (
    ("contents", _forge_contents),
    ("contents", _forge_contents),
    ("byte-range", _forge_byte_range),
    ("byte-range", _forge_byte_range),
    ("type", _forge_type),
    ("subfilter", _forge_subfilter),
)


def _pdf_attack(rng: random.Random, pdf: bytes) -> bytes:
    """``pdf`` forged or updated after its signature (a PDF without one is only updated)."""
    signed = b"/Contents <" in pdf and b"/ByteRange [" in pdf
    if signed and _chance(rng, 0.45):
        name, forge = _pick(rng, _FORGERIES)
        _drew(f"pdf.forge.{name}")
        pdf = forge(rng, pdf)
        if _chance(rng, 0.15):  # and then an update
            pdf = _update(rng, pdf)
        return pdf
    return _update(rng, pdf)
