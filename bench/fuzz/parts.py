"""The leaves of a generated message's MIME tree: text parts, and attachments (signed,
truncated and damaged PDFs, PDFs updated or forged after their signature; Office files and
Word 2003 XML documents; zip archives and the other containers of containers.py; CMS
signatures; files known by their first bytes; now and then a whole message), with the
transfer encodings they are sent in, sometimes wrongly encoded; and text parts carrying
uuencoded files."""

from __future__ import annotations

import base64
import binascii
import quopri
import random
import re
from collections.abc import Callable

from bench.fuzz.containers import _container, _zip
from bench.fuzz.corpus import _CHARSETS, _MAIN_TYPES, _corpus
from bench.fuzz.draw import _chance, _damage, _drew, _garbage, _pick, _text
from bench.fuzz.headers import _content_type, _params
from bench.fuzz.pdfs import _pdf_attack

NestedMessage = Callable[[random.Random, int], bytes]
"""Builds a whole message (its bytes) at a nesting depth. A part may be a message, and
messages.py builds messages out of these parts, so it passes its builder in: this module does
not import that one."""


def _transfer_encode(rng: random.Random, data: bytes, text: bool) -> tuple[str, bytes]:
    """A Content-Transfer-Encoding and the encoded body (sometimes wrongly encoded)."""
    roll = rng.random()
    if roll < (0.35 if text else 0.8):
        encoded = base64.encodebytes(data).replace(b"\n", b"\r\n")
        if _chance(rng, 0.08):
            encoded = _damage(rng, encoded, b"!*@\x00-_=%")
        return _pick(rng, ("base64", "BASE64", "Base64")), encoded
    if roll < (0.65 if text else 0.85):
        encoded = quopri.encodestring(data).replace(b"\n", b"\r\n")
        if _chance(rng, 0.08):
            encoded = _damage(rng, encoded, b"=\x00G")
        return "quoted-printable", encoded
    if roll < 0.9:
        return _pick(rng, ("7bit", "8bit", "binary", "")), data
    if roll < 0.95:
        lines = [b"begin 644 file.bin\r\n"]
        for i in range(0, len(data), 45):
            lines.append(binascii.b2a_uu(data[i : i + 45]).replace(b"\n", b"\r\n"))
        lines.append(b"`\r\nend\r\n")
        encoded = b"".join(lines)
        if _chance(rng, 0.2):
            encoded = encoded[: rng.randrange(len(encoded) + 1)]
        return _pick(rng, ("x-uuencode", "uuencode", "x-uue")), encoded
    return _pick(rng, ("x-bogus", "base-64", "quoted_printable", "7bit; x=y")), data


def _office(rng: random.Random, kind: str) -> bytes:
    if kind == "odt":
        return _zip(
            rng,
            [
                ("mimetype", b"application/vnd.oasis.opendocument.text"),
                ("content.xml", b"<office:document-content/>"),
                ("META-INF/manifest.xml", b"<manifest/>"),
            ],
        )
    folder = {"docx": "word/", "xlsx": "xl/", "pptx": "ppt/"}[kind]
    members = [
        ("[Content_Types].xml", b"<Types/>"),
        (f"{folder}document.xml", _text(rng, 3).encode()),
        ("_rels/.rels", b"<Relationships/>"),
    ]
    if _chance(rng, 0.1):  # a signed Office file carries its signature in _xmlsignatures/
        members.append(("_xmlsignatures/sig1.xml", b"<Signature/>"))
    return _zip(rng, members)


def _word_xml(rng: random.Random) -> bytes:
    """A Word (or Excel) 2003 XML document: one XML file that Office opens with a click,
    whatever its name; in UTF-8, with a BOM, or in UTF-16; its processing instruction
    sometimes written otherwise, or too far in to be seen."""
    progid = _pick(rng, ("Word.Document", "Word.Document", "Excel.Sheet", "word.document", "W"))
    quote = _pick(rng, ('"', '"', "'"))
    spacing = _pick(rng, ("", "", " ", "\r\n"))
    instruction = f"<?mso-application progid{spacing}={spacing}{quote}{progid}{quote}?>"
    declaration = _pick(
        rng,
        (
            '<?xml version="1.0"?>',
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>',
            '<?xml version="1.0" encoding="UTF-16"?>',
            "",
        ),
    )
    between = _pick(rng, ("", "\r\n", "\n  "))
    if _chance(rng, 0.05):  # the instruction beyond the first 4 KiB
        between += "<!--" + "x" * rng.randrange(4000, 9000) + "-->"
    text = _text(rng, rng.randrange(1, 4)).replace("\r\n", " ").replace("<", "&lt;")
    document = (
        f"{declaration}{between}{instruction}\r\n"
        '<w:wordDocument xmlns:w="http://schemas.microsoft.com/office/word/2003/wordml">'
        f"<w:body><w:p><w:r><w:t>{text}</w:t></w:r></w:p></w:body></w:wordDocument>\r\n"
    )
    if _chance(rng, 0.1):
        document = _pick(rng, (" ", "\r\n", "\t")) + document
    encoding = rng.random()
    if encoding < 0.45:
        return document.encode("utf-8")
    if encoding < 0.65:
        return b"\xef\xbb\xbf" + document.encode("utf-8")
    if encoding < 0.85:
        return document.encode("utf-16")  # with its byte order mark
    if encoding < 0.95:
        return b"\xfe\xff" + document.encode("utf-16-be")
    return document.encode("utf-16-le")  # no byte order mark


def _uuencode(name: str, data: bytes) -> bytes:
    lines = [b"begin 644 %s\r\n" % name.encode("utf-8")]
    for i in range(0, len(data), 45):
        lines.append(binascii.b2a_uu(data[i : i + 45]).replace(b"\n", b"\r\n"))
    return b"".join([*lines, b"`\r\nend\r\n"])


def _uuencoded_part(rng: random.Random) -> tuple[list[tuple[str, str]], bytes]:
    """A text/plain part with a file uuencoded in its text ("begin 644 name" ... "end"),
    which mail clients show as an attachment; sometimes with no "end", or many "begin"
    lines."""
    corpus = _corpus()
    out = bytearray(_text(rng, rng.randrange(1, 4)).encode("utf-8"))
    files = 1 if _chance(rng, 0.8) else rng.randrange(2, 40)
    if files > 1:
        _drew("mime.uuencoded.many")
    for _ in range(files):
        kind = rng.random()
        if kind < 0.3:
            data = corpus.signed_pdf
        elif kind < 0.5:
            data = corpus.plain_pdf
        elif kind < 0.65:
            data = _mutated_pdf(rng, _pick(rng, (corpus.signed_pdf, corpus.plain_pdf)))
        elif kind < 0.8:
            data = _word_xml(rng)
        else:
            data = _garbage(rng, rng.randrange(0, 300))
        name = _pick(rng, ("van-ban.pdf", "bao cao.pdf", "cv.doc", "../x.pdf", "a" * 300, "tờ.pdf"))
        block = _uuencode(name, data)
        roll = rng.random()
        if roll < 0.15:  # no "end"
            _drew("mime.uuencoded.no-end")
            block = block[: block.rindex(b"end")]
        elif roll < 0.25:
            mode = _pick(rng, (b"0644", b"755", b"666", b"64", b"1777"))
            block = block.replace(b"begin 644", b"begin " + mode, 1)
        elif roll < 0.3:
            block = block.replace(b"\r\n", b"\n")
        elif roll < 0.35:  # a line of the block damaged
            block = _damage(rng, block, b"` !M\r\n")
        out += block + _text(rng, 1).encode("utf-8")
    if _chance(rng, 0.1):
        _drew("mime.uuencoded.only-begins")
        out += b"begin 644 only-a-begin.pdf\r\n" * rng.randrange(1, 50)
    data = bytes(out)
    headers = [("Content-Type", _content_type(rng, "text/plain", [("charset", "utf-8")]))]
    if _chance(rng, 0.6):
        cte = _pick(rng, ("7bit", "8bit", ""))
    else:
        cte, data = _transfer_encode(rng, data, text=True)
    if cte:
        headers.append(("Content-Transfer-Encoding", cte))
    return headers, data


def _mutated_pdf(rng: random.Random, pdf: bytes) -> bytes:
    if _chance(rng, 0.25):  # updated or forged after the signature (pdfs.py)
        return _pdf_attack(rng, pdf)
    roll = rng.random()
    if roll < 0.35:
        return pdf[: rng.randrange(len(pdf) + 1)]
    if roll < 0.55:
        return _damage(rng, pdf, b"0123456789<>[]/ ()\x00%")
    if roll < 0.7:  # another /ByteRange
        return re.sub(
            rb"/ByteRange \[[^\]]*\]",
            b"/ByteRange [%d %d %d %d]" % tuple(rng.randrange(-5, 10**7) for _ in range(4)),
            pdf,
            count=1,
        )
    if roll < 0.8:  # content appended after the signature (an incremental update)
        return pdf + b"\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R /X (y) >>\nendobj\n%%EOF\n"
    if roll < 0.9:
        cut = rng.randrange(len(pdf) + 1)
        return pdf[:cut] + _garbage(rng, rng.randrange(1, 400)) + pdf[cut:]
    return b"%PDF-1." + _garbage(rng, rng.randrange(0, 3000)) + _pick(rng, (b"", b"%%EOF\n"))


def _attachment(
    rng: random.Random, depth: int, nested: NestedMessage
) -> tuple[list[tuple[str, str]], bytes]:
    """Headers and body of an attachment."""
    corpus = _corpus()
    novel, roll = rng.random(), rng.random()
    if novel < 0.04:  # a PDF in a container (containers.py)
        document = _pick(rng, (corpus.signed_pdf, corpus.plain_pdf, corpus.signed_pdf))
        if _chance(rng, 0.2):
            document = _mutated_pdf(rng, document)
        data, ctype, name = _container(rng, document, "congvan-123.pdf")
    elif novel < 0.06:  # a Word 2003 XML document, as text or as a file
        _drew("mime.word-xml")
        data = _word_xml(rng)
        ctype = _pick(rng, ("text/plain", "application/octet-stream", "text/xml", "text/plain"))
        name = _pick(rng, ("du-thao.xml", "du-thao.doc", "ghi-chu.txt", "du-thao", ""))
    elif roll < 0.12:
        data, ctype, name = corpus.signed_pdf, "application/pdf", "congvan-123.pdf"
    elif roll < 0.27:
        base = corpus.signed_pdf if _chance(rng, 0.5) else corpus.plain_pdf
        data, ctype, name = _mutated_pdf(rng, base), "application/pdf", "bao cao.pdf"
    elif roll < 0.35:
        data, ctype, name = corpus.plain_pdf, "application/pdf", "to-trinh.pdf"
    elif roll < 0.45:
        kind = _pick(rng, ("docx", "xlsx", "pptx", "odt"))
        data = _office(rng, kind)
        if _chance(rng, 0.3):
            data = data[: rng.randrange(len(data) + 1)]
        ctype, name = "application/octet-stream", f"du-thao.{kind}"
    elif roll < 0.55:
        members = [(f"tai-lieu-{i}.pdf", corpus.signed_pdf) for i in range(rng.randrange(0, 3))]
        members += [("ghi-chu.txt", _text(rng, 2).encode())]
        if _chance(rng, 0.2):
            members.append(("van-ban.pdf", _mutated_pdf(rng, corpus.plain_pdf)))
        if _chance(rng, 0.15):
            members.append(("inner.zip", _zip(rng, [("a.pdf", corpus.plain_pdf)])))
        if _chance(rng, 0.05):
            members += [(f"m{i}.txt", b"x") for i in range(rng.randrange(150, 260))]
        if _chance(rng, 0.03):
            members.append(("zeros.bin", bytes(rng.randrange(10**5, 3 * 10**6))))
        if _chance(rng, 0.05):
            members.append(("../../etc/passwd.pdf", corpus.plain_pdf))
        data = _zip(rng, members)
        if _chance(rng, 0.25):
            data = _damage(rng, data, b"\x00\xffPK")
        ctype, name = "application/zip", "ho-so.zip"
    elif roll < 0.65:
        pick = rng.random()
        if pick < 0.4:
            data = corpus.cms
        elif pick < 0.6:
            data = b"-----BEGIN PKCS7-----\r\n" + base64.encodebytes(corpus.cms).replace(
                b"\n", b"\r\n"
            )
            data += b"-----END PKCS7-----\r\n"
        elif pick < 0.8:
            data = corpus.cms[: rng.randrange(len(corpus.cms) + 1)]
        else:
            data = _damage(rng, corpus.cms, b"\x00\x30\x80\xff")
        ctype = _pick(rng, ("application/pkcs7-signature", "application/octet-stream"))
        name = _pick(rng, ("congvan-123.pdf.p7s", "congvan-123.p7s", "chu-ky.sig", "x.p7s"))
    else:
        magic = _pick(
            rng,
            (
                (b"\x78\x9f\x3e\x22", "application/ms-tnef", "winmail.dat"),
                (b"Rar!\x1a\x07\x00", "application/x-rar", "ho-so.rar"),
                (b"7z\xbc\xaf\x27\x1c", "application/x-7z-compressed", "ho-so.7z"),
                (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "application/msword", "cv.doc"),
                (b"{\\rtf1\\ansi ", "application/rtf", "cv.rtf"),
                (b"\x89PNG\r\n\x1a\n", "image/png", "scan.png"),
                (b"\xff\xd8\xff\xe0", "image/jpeg", "anh.jpg"),
                (b"AC1027", "application/acad", "ban-ve.dwg"),
                (b"PK\x03\x04", "application/vnd.google-earth.kmz", "ban-do.kmz"),
                (b"", "application/octet-stream", "empty.bin"),
                (b"%PDF-", "application/pdf", "cut.pdf"),
                (b"", "text/plain", "ghi-chu.txt"),
            ),
        )
        prefix, ctype, name = magic
        data = prefix + _garbage(rng, rng.randrange(0, 600) if prefix else 0)
        if depth < 4 and _chance(rng, 0.1):  # a message as an attachment
            data = nested(rng, depth + 1)
            ctype, name = "message/rfc822", "chuyen-tiep.eml"
    if _chance(rng, 0.15):
        ctype = _pick(rng, _MAIN_TYPES)
    if _chance(rng, 0.1):
        name = _pick(
            rng,
            (
                "",
                "../../../windows/system32/x.pdf",
                "a" * 400 + ".pdf",
                "tờ trình số 12.pdf",
                "x.pdf\x00.exe",
                "CON.pdf",
                "name with\r\n header.pdf",
                ".p7s",
                "bản đồ.dwg",
            ),
        )
    cte, body = _transfer_encode(rng, data, text=False)
    headers = [("Content-Type", _content_type(rng, ctype, [("name", name)] if name else []))]
    if cte:
        headers.append(("Content-Transfer-Encoding", cte))
    disposition = rng.random()
    if disposition < 0.8:
        headers.append(("Content-Disposition", "attachment" + _params(rng, [("filename", name)])))
    elif disposition < 0.9:
        headers.append(("Content-Disposition", "inline" + _params(rng, [("filename", name)])))
    elif disposition < 0.95:
        headers.append(("Content-Disposition", _pick(rng, ("", "attachment;", "x", ";;"))))
    return headers, body


def _text_part(rng: random.Random, html: bool) -> tuple[list[tuple[str, str]], bytes]:
    text = _text(rng, rng.randrange(1, 8))
    if html:
        text = "<html><body><p>" + text.replace("\r\n", "</p><p>") + "</p></body></html>\r\n"
    charset = _pick(rng, _CHARSETS)
    codec = {"utf-16": "utf-16", "iso-8859-1": "latin-1", "us-ascii": "ascii"}.get(charset, "utf-8")
    data = text.encode(codec, "replace")
    if _chance(rng, 0.05):
        data += _garbage(rng, rng.randrange(1, 100))
    cte, body = _transfer_encode(rng, data, text=True)
    params = [("charset", charset)] if charset and _chance(rng, 0.9) else []
    if _chance(rng, 0.1):
        params.append(("format", "flowed"))
    headers = [("Content-Type", _content_type(rng, "text/html" if html else "text/plain", params))]
    if cte:
        headers.append(("Content-Transfer-Encoding", cte))
    return headers, body
