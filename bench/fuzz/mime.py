"""The MIME structure of a generated message above its leaves: multiparts of every subtype
with broken or borrowed boundaries, S/MIME (multipart/signed and opaque, and signed messages
wrapped in a multipart/mixed with or without a disclaimer), attached messages (some with a
transfer encoding), message/partial, nesting hundreds of levels deep; and the fields of a
leaf written so that MIME reads two ways (a Content-Transfer-Encoding in odd case, with
comments, quotes, folding or a stray ";"; two Content-Type, Content-Transfer-Encoding or
Content-Disposition fields; a parameter given twice; a space before a field's colon); and
documents written into body parts with no file name."""

from __future__ import annotations

import base64
import binascii
import random

from bench.fuzz.corpus import _corpus
from bench.fuzz.draw import _chance, _damage, _drew, _garbage, _pick
from bench.fuzz.headers import _content_type, _serialize_headers
from bench.fuzz.parts import (
    NestedMessage,
    _attachment,
    _mutated_pdf,
    _text_part,
    _uuencoded_part,
)

Entity = tuple[list[tuple[str, str]], bytes]


def _boundary(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.8:
        return "=_Part_" + "".join(_pick(rng, "0123456789abcdef") for _ in range(16))
    return _pick(
        rng,
        (
            "",
            " ",
            "a b c",
            "x" * 200,
            "--",
            "boundary=",
            '"',
            "=?utf-8?q?x?=",
            "\t",
            "ơ",
            "simple",
        ),
    )


def _multipart(rng: random.Random, subtype: str, parts: list[Entity]) -> Entity:
    boundary = _boundary(rng)
    params = [("boundary", boundary)] if _chance(rng, 0.97) else []
    if params and _chance(rng, 0.02):  # a second boundary: parsers differ on which counts
        _drew("mime.two-boundaries")
        second = ("boundary", _boundary(rng)) if _chance(rng, 0.5) else ("BOUNDARY", boundary)
        params.insert(rng.randrange(2), second)
    if subtype == "signed":
        params += [("protocol", "application/pkcs7-signature"), ("micalg", "sha-256")]
    if subtype == "report":
        params.append(("report-type", "delivery-status"))
    used = boundary if _chance(rng, 0.95) else _boundary(rng)  # the body may use another one
    delimiter = b"--" + used.encode("utf-8")
    out = bytearray()
    if _chance(rng, 0.2):
        out += b"This is a multi-part message in MIME format.\r\n"
    for headers, body in parts:
        out += delimiter + _pick(rng, (b"\r\n", b"\r\n", b"\r\n", b"  \r\n", b"\n", b"x\r\n"))
        out += _serialize_headers(rng, headers) + b"\r\n" + body
        if not body.endswith(b"\r\n"):
            out += b"\r\n"
    roll = rng.random()
    if roll < 0.85:
        out += delimiter + b"--\r\n"
    elif roll < 0.9:
        out += delimiter + b"--"
    if _chance(rng, 0.1):
        out += b"epilogue " + _garbage(rng, rng.randrange(0, 50)) + b"\r\n"
    return [("Content-Type", _content_type(rng, f"multipart/{subtype}", params))], bytes(out)


def _odd_encoding(rng: random.Random, value: str) -> str:
    """A Content-Transfer-Encoding value as some mailers write it (and clients read it)."""
    return _pick(
        rng,
        (
            value.upper(),
            value.title(),
            "".join(c.upper() if _chance(rng, 0.5) else c for c in value),
            f" {value} ",
            f"{value} (Sent by Outlook)",
            f"(x) {value}",
            f"((a) b) {value}",
            f"(unclosed {value}",
            f'"{value}"',
            f'"{value}',
            f"{value};",
            f"{value}; x=y",
            f"\r\n {value}",
            f"{value}\r\n\t(folded)",
            f"{value}\t",
        ),
    )


_SECOND_VALUES = {
    "Content-Type": ("text/plain", "application/pdf", 'application/octet-stream; name="x.pdf"'),
    "Content-Transfer-Encoding": ("7bit", "base64", "quoted-printable", "8bit", "binary"),
    "Content-Disposition": ("inline", 'attachment; filename="van-ban.pdf"', "attachment"),
}


_TWICE = (
    ("Content-Type", "name"),
    ("Content-Disposition", "filename"),
    ("Content-Type", "charset"),
)


def _odd_fields(rng: random.Random, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """A leaf's fields made to read two ways: the transfer encoding written oddly, a second
    Content-Type, Content-Transfer-Encoding or Content-Disposition, a space before the colon
    of the part's fields, or a parameter given twice."""
    headers = list(headers)
    roll = rng.random()
    encodings = [i for i, (name, _) in enumerate(headers) if name == "Content-Transfer-Encoding"]
    if roll < 0.45 and encodings:
        _drew("mime.encoding-odd")
        i = encodings[0]
        headers[i] = (headers[i][0], _odd_encoding(rng, headers[i][1] or "base64"))
    elif roll < 0.75:
        _drew("mime.two-fields")
        name = _pick(rng, tuple(_SECOND_VALUES))
        second = (name, _pick(rng, _SECOND_VALUES[name]))
        same = [i for i, (n, _) in enumerate(headers) if n == name]
        at = same[0] + rng.randrange(2) if same else rng.randrange(len(headers) + 1)
        headers.insert(at, second)
    elif roll < 0.9:
        _drew("mime.space-before-colon")
        every = _chance(rng, 0.5)
        space = _pick(rng, (" ", " ", "\t", "  "))
        chosen = rng.randrange(len(headers)) if headers else -1
        headers = [
            (name + space if every or i == chosen else name, value)
            for i, (name, value) in enumerate(headers)
        ]
    else:  # a parameter twice: a harmless value first, the file's own last (or other case)
        _drew("mime.two-parameters")
        name, parameter = _pick(rng, _TWICE)
        twice = _pick(rng, (parameter, parameter.upper(), parameter.title()))
        harmless = _pick(rng, ("ban-do.dwg", "ghi-chu.txt", "us-ascii", ""))
        fields = [i for i, (n, _) in enumerate(headers) if n == name]
        value = "attachment" if name == "Content-Disposition" else "application/pdf"
        rest = ""
        if fields:
            value, _, rest = headers[fields[0]][1].partition(";")
            del headers[fields[0]]
        rest = f";{rest}" if rest else ""
        headers.append((name, f'{value}; {parameter}="{harmless}"{rest}; {twice}="van-ban.pdf"'))
    return headers


def _signed(rng: random.Random, inner: Entity) -> Entity:
    """S/MIME multipart/signed: ``inner`` and the CMS signature (not over ``inner``)."""
    corpus = _corpus()
    sig = corpus.cms if _chance(rng, 0.7) else _damage(rng, corpus.cms, b"\x00\x30")
    sig_part = (
        [
            ("Content-Type", 'application/pkcs7-signature; name="smime.p7s"'),
            ("Content-Transfer-Encoding", "base64"),
            ("Content-Disposition", 'attachment; filename="smime.p7s"'),
        ],
        base64.encodebytes(sig).replace(b"\n", b"\r\n"),
    )
    return _multipart(rng, "signed", [inner, sig_part])


def _pdf_part(rng: random.Random, data: bytes) -> Entity:
    return (
        [
            ("Content-Type", 'application/pdf; name="congvan-123.pdf"'),
            ("Content-Transfer-Encoding", "base64"),
            ("Content-Disposition", 'attachment; filename="congvan-123.pdf"'),
        ],
        base64.encodebytes(data).replace(b"\n", b"\r\n"),
    )


def _disclaimer(rng: random.Random) -> Entity:
    text = "Email này có thể chứa thông tin mật. Disclaimer: this e-mail is confidential.\r\n"
    if _chance(rng, 0.3):
        return [("Content-Type", "text/html; charset=utf-8")], f"<p>{text}</p>".encode()
    return [("Content-Type", "text/plain; charset=utf-8")], text.encode()


def _signed_in_mixed(rng: random.Random, depth: int, nested: NestedMessage) -> Entity:
    """A signed message as a server that adds a disclaimer sends it: multipart/mixed around
    the multipart/signed, the disclaimer after (or before) it; or no disclaimer; sometimes a
    document outside the signed part."""
    corpus = _corpus()
    document = corpus.signed_pdf if _chance(rng, 0.5) else corpus.plain_pdf
    if _chance(rng, 0.7):
        content = _multipart(rng, "mixed", [_text_part(rng, html=False), _pdf_part(rng, document)])
    else:
        content = _entity(rng, depth + 2, nested)
    parts = [_signed(rng, content)]
    disclaimer = _chance(rng, 0.7)
    if disclaimer:
        parts.insert(len(parts) if _chance(rng, 0.8) else 0, _disclaimer(rng))
    if _chance(rng, 0.15):
        parts.append(_pdf_part(rng, corpus.plain_pdf))
    _drew("mime.signed-in-mixed" + (".disclaimer" if disclaimer else ""))
    return _multipart(rng, "mixed", parts)


def _partial(rng: random.Random) -> Entity:
    """message/partial: the first fragment of a message carrying a document."""
    _drew("mime.partial")
    corpus = _corpus()
    data = base64.encodebytes(corpus.signed_pdf).replace(b"\n", b"\r\n")
    inner = (
        _serialize_headers(rng, [("Content-Type", 'application/pdf; name="congvan-123.pdf"')])
        + b"Content-Transfer-Encoding: base64\r\n\r\n"
        + data[: rng.randrange(len(data) + 1)]
    )
    total = rng.randrange(1, 4)
    params = _pick(
        rng,
        (
            f'; id="fuzz@gw"; number=1; total={total}',
            f"; id=x; number={rng.randrange(0, 5)}",
            "",
            "; total=0",
        ),
    )
    return [("Content-Type", "message/partial" + params)], inner


def _quoted_printable(data: bytes, binary: bool) -> bytes:
    """Quoted-printable with CRLF line ends; ``binary``: every line break of the data escaped
    (=0D=0A, as a client encodes a file), else kept as line breaks."""
    encoded = binascii.b2a_qp(data, istext=not binary)
    return encoded.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _encoded_forward(rng: random.Random, depth: int, nested: NestedMessage) -> Entity:
    """A forwarded message (message/rfc822) in base64 or quoted-printable, which RFC 2046
    forbids and clients may decode: a document inside it."""
    if _chance(rng, 0.5) and depth < 4:
        inner = nested(rng, depth + 1)
    else:
        document = _pick(rng, (_corpus().plain_pdf, _corpus().signed_pdf))
        if _chance(rng, 0.2):
            document = _mutated_pdf(rng, document)
        fields, body = _multipart(rng, "mixed", [_text_part(rng, False), _pdf_part(rng, document)])
        head = [("From", "<a.nguyen@dilinh.lamdong.gov.vn>"), ("Subject", "Fwd"), *fields]
        inner = _serialize_headers(rng, head) + b"\r\n" + body
    cte = _pick(rng, ("base64", "base64", "quoted-printable"))
    _drew(f"mime.forward-encoded.{cte}")
    if cte == "base64":
        encoded = base64.encodebytes(inner).replace(b"\n", b"\r\n")
    else:
        encoded = _quoted_printable(inner, binary=_chance(rng, 0.5))
    if _chance(rng, 0.2):
        cte = _odd_encoding(rng, cte)
    ctype = _pick(rng, ("message/rfc822", "message/rfc822", "message/global", "message/news"))
    return [("Content-Type", ctype), ("Content-Transfer-Encoding", cte)], encoded


def _document_in_body(rng: random.Random) -> Entity:
    """A document written into a body part with no file name: base64 (or quoted-printable)
    in a text/plain or text/html part, in a part with no Content-Type, or in place of a
    forwarded message. A client that sniffs the content or saves the part opens it."""
    corpus = _corpus()
    data = _pick(
        rng,
        (corpus.signed_pdf, corpus.plain_pdf, corpus.plain_pdf, corpus.cms, b"%PDF-1.7\n"),
    )
    if _chance(rng, 0.2):
        data = _mutated_pdf(rng, data)
    where = _pick(
        rng,
        ("text/plain; charset=utf-8", "text/plain", "text/html", "", "message/rfc822", "text/x-y"),
    )
    _drew("mime.document-in-body")
    headers = [("Content-Type", where)] if where else []
    if _chance(rng, 0.85):
        headers.append(("Content-Transfer-Encoding", "base64"))
        return headers, base64.encodebytes(data).replace(b"\n", b"\r\n")
    headers.append(("Content-Transfer-Encoding", "quoted-printable"))
    return headers, _quoted_printable(data, binary=True)


def _mime_attack(rng: random.Random, depth: int, nested: NestedMessage) -> Entity:
    roll = rng.random()
    if roll < 0.25:
        return _partial(rng)
    if roll < 0.55:
        return _encoded_forward(rng, depth, nested)
    return _signed_in_mixed(rng, depth, nested)


def _entity(rng: random.Random, depth: int, nested: NestedMessage) -> Entity:
    """A MIME entity: headers (name, value) and body bytes."""
    leafy = depth >= 3 or _chance(rng, 0.35 + 0.15 * depth)
    roll = rng.random()
    if leafy:
        if _chance(rng, 0.03):
            _drew("mime.uuencoded")
            headers, body = _uuencoded_part(rng)
        elif _chance(rng, 0.015):
            headers, body = _document_in_body(rng)
        elif roll < 0.55:
            headers, body = _text_part(rng, html=_chance(rng, 0.2))
        else:
            headers, body = _attachment(rng, depth, nested)
        if _chance(rng, 0.05):
            headers = _odd_fields(rng, headers)
        return headers, body
    if depth < 4 and _chance(rng, 0.06):
        return _mime_attack(rng, depth, nested)
    if roll < 0.08:  # S/MIME multipart/signed: content + the CMS signature
        return _signed(rng, _entity(rng, depth + 1, nested))
    if roll < 0.12:  # opaque S/MIME
        headers = [
            (
                "Content-Type",
                'application/pkcs7-mime; smime-type=signed-data; name="smime.p7m"',
            ),
            ("Content-Transfer-Encoding", "base64"),
        ]
        return headers, base64.encodebytes(_corpus().cms).replace(b"\n", b"\r\n")
    if roll < 0.17 and depth < 4:
        inner_message = nested(rng, depth + 1)
        return [("Content-Type", "message/rfc822")], inner_message
    subtype = _pick(
        rng, ("mixed", "mixed", "mixed", "alternative", "related", "report", "digest", "x-odd")
    )
    count = rng.randrange(0, 5)
    parts = [_entity(rng, depth + 1, nested) for _ in range(count)]
    return _multipart(rng, subtype, parts)


def _deep(rng: random.Random) -> Entity:
    """Hundreds of nested multiparts (or message/rfc822s), built without recursion."""
    levels = rng.randrange(50, 1200)
    rfc822 = _chance(rng, 0.3)
    headers, body = _text_part(rng, html=False)
    for level in range(levels):
        if rfc822:
            inner = _serialize_headers(rng, headers) + b"\r\n" + body
            headers, body = [("Content-Type", "message/rfc822")], inner
            continue
        boundary = f"b{level}"
        inner = _serialize_headers(rng, headers) + b"\r\n" + body
        body = b"--%s\r\n%s\r\n--%s--\r\n" % (boundary.encode(), inner, boundary.encode())
        headers = [("Content-Type", f'multipart/mixed; boundary="{boundary}"')]
    return headers, body
