"""The MIME structure of a generated message above its leaves: multiparts of every subtype
with broken or borrowed boundaries, S/MIME (multipart/signed and opaque), attached messages,
and nesting hundreds of levels deep."""

from __future__ import annotations

import base64
import random

from bench.fuzz.corpus import _corpus
from bench.fuzz.draw import _chance, _damage, _garbage, _pick
from bench.fuzz.headers import _content_type, _serialize_headers
from bench.fuzz.parts import NestedMessage, _attachment, _text_part


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


def _multipart(
    rng: random.Random, subtype: str, parts: list[tuple[list[tuple[str, str]], bytes]]
) -> tuple[list[tuple[str, str]], bytes]:
    boundary = _boundary(rng)
    params = [("boundary", boundary)] if _chance(rng, 0.97) else []
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


def _entity(
    rng: random.Random, depth: int, nested: NestedMessage
) -> tuple[list[tuple[str, str]], bytes]:
    """A MIME entity: headers (name, value) and body bytes."""
    leafy = depth >= 3 or _chance(rng, 0.35 + 0.15 * depth)
    roll = rng.random()
    if leafy:
        if roll < 0.55:
            return _text_part(rng, html=_chance(rng, 0.2))
        return _attachment(rng, depth, nested)
    if roll < 0.08:  # S/MIME multipart/signed: content + the CMS signature
        inner = _entity(rng, depth + 1, nested)
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


def _deep(rng: random.Random) -> tuple[list[tuple[str, str]], bytes]:
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
