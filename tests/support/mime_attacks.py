"""MIME parser differentials: the same document wrapped the ways that mail clients open and a
strict parser may not (Chen et al., "Composition Kills", USENIX Security 2020; Müller et al.,
"Johnny, you are fired!", USENIX Security 2019). A corpus to extend: each case turns a
document into one attachment part of a ``multipart/mixed; boundary="MIX"`` message.

- :data:`SEEN`: forms a client decodes and opens. The gateway must see the document in
  them and judge it as in a plain base64 part (unsigned: refused; signed: accepted).
- :data:`TWO_READINGS`: structures that read two ways; the gateway refuses them
  (``message.ambiguous_structure``, the detail naming the part) rather than guess. A
  forwarded message with a transfer encoding is among them: RFC 2046 forbids it, and
  clients differ on whether to decode it.
- :data:`FRAGMENTS`: ``message/partial``, whose documents cannot be checked
  (``message.partial``).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["FRAGMENTS", "SEEN", "TWO_READINGS", "Case", "message"]


@dataclass(frozen=True)
class Case:
    name: str
    part: Callable[[str, bytes], str]  # (file name, document) -> the part, boundary line first


def _b64(data: bytes) -> str:
    return base64.encodebytes(data).decode().replace("\n", "\r\n")


_BASE64 = "Content-Transfer-Encoding: base64"


def _part(*fields: str) -> Callable[[str, bytes], str]:
    """A part with these header ``fields`` (``{name}`` in them is the file's name) and the
    document in base64."""

    def part(name: str, data: bytes) -> str:
        head = "".join(f"{field.format(name=name)}\r\n" for field in fields)
        return f"--MIX\r\n{head}\r\n{_b64(data)}"

    return part


def _with_encoding(cte: str) -> Callable[[str, bytes], str]:
    """A base64 part whose Content-Transfer-Encoding field is written as ``cte``."""
    return _part(
        'Content-Type: application/pdf; name="{name}"',
        'Content-Disposition: attachment; filename="{name}"',
        f"Content-Transfer-Encoding: {cte}",
    )


def _qp(data: bytes) -> str:
    """Quoted-printable for binary data: every line break of the data escaped (=0D, =0A), as
    a client encodes a file, so that decoding gives the bytes back; soft breaks every 72."""
    # Written out here: quopri leaves line breaks as they are, which CRLF-canonical mail
    # turns into CRLF, and a PDF's offsets with them.
    encoded = "".join(chr(b) if 33 <= b <= 126 and b != 61 else f"={b:02X}" for b in data)
    lines, line = [], ""
    for unit in (encoded[i : i + 3] if encoded[i] == "=" else encoded[i] for i in _units(encoded)):
        if len(line) + len(unit) > 72:
            lines.append(line + "=")
            line = ""
        line += unit
    return "\r\n".join([*lines, line + "="]) + "\r\n"  # a soft break last: no CRLF added


def _units(encoded: str) -> list[int]:
    """Where each encoded character starts (an escape is three characters)."""
    starts, i = [], 0
    while i < len(encoded):
        starts.append(i)
        i += 3 if encoded[i] == "=" else 1
    return starts


def _quoted_printable(cte: str) -> Callable[[str, bytes], str]:
    def part(name: str, data: bytes) -> str:
        body = _qp(data)
        return (
            f'--MIX\r\nContent-Type: application/pdf; name="{name}"\r\n'
            f'Content-Disposition: attachment; filename="{name}"\r\n'
            f"Content-Transfer-Encoding: {cte}\r\n\r\n{body}"
        )

    return part


def _uuencoded(name: str, data: bytes) -> str:
    """The document uuencoded in a plain-text body part (Outlook and Thunderbird show it as
    an attachment)."""
    lines = [binascii.b2a_uu(data[i : i + 45]).decode("ascii") for i in range(0, len(data), 45)]
    return (
        "--MIX\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nKinh gui, van ban kem theo:\r\n"
        f"begin 644 {name}\r\n"
        + "".join(line.rstrip("\n") + "\r\n" for line in lines)
        + "`\r\nend\r\n"
    )


def _disguised(content_type: str) -> Callable[[str, bytes], str]:
    """The document in base64 in a body part with no file name: ``content_type`` (a text
    type, or none at all, which means text/plain). A client that sniffs the content or saves
    the part opens a PDF."""
    return _part(*([f"Content-Type: {content_type}"] if content_type else []), _BASE64)


SEEN: tuple[Case, ...] = (
    Case("encoding in capitals", _with_encoding("BASE64")),
    Case("encoding in mixed case, spaces around", _with_encoding(" Base64 ")),
    Case("encoding with a comment after", _with_encoding("base64 (Sent by Outlook)")),
    Case("encoding with a comment before", _with_encoding("(x) base64")),
    Case("encoding with nested comments", _with_encoding("((a) b) base64")),
    Case("encoding quoted", _with_encoding('"base64"')),
    Case("encoding with a stray semicolon", _with_encoding("base64;")),
    Case("encoding folded onto the next line", _with_encoding("\r\n base64")),
    Case("quoted-printable in capitals", _quoted_printable("Quoted-Printable")),
    Case("quoted-printable with a comment", _quoted_printable("quoted-printable (qp)")),
    Case("uuencoded in a text part", _uuencoded),
    Case("in a text part with no file name", _disguised("text/plain; charset=utf-8")),
    Case("in an HTML part with no file name", _disguised("text/html")),
    Case("in a part with no Content-Type", _disguised("")),
    Case(
        "its name written plain and in RFC 2231 form, as clients do for a non-ASCII name",
        _part(
            "Content-Type: application/pdf",
            'Content-Disposition: attachment; filename="{name}"; '
            "filename*=utf-8''C%C3%B4ng%20v%C4%83n.pdf",
            _BASE64,
        ),
    ),
)


_space_before_colon = _part(
    'Content-Type : application/pdf; name="{name}"',
    'Content-Disposition : attachment; filename="{name}"',
    "Content-Transfer-Encoding : base64",
)
_two_types = _part(
    "Content-Type: text/plain", 'Content-Type: application/pdf; name="{name}"', _BASE64
)
_two_encodings = _part(
    'Content-Type: application/pdf; name="{name}"',
    'Content-Disposition: attachment; filename="{name}"',
    "Content-Transfer-Encoding: 7bit",
    _BASE64,
)
_two_dispositions = _part(
    "Content-Type: application/pdf",
    "Content-Disposition: inline",
    'Content-Disposition: attachment; filename="{name}"',
    _BASE64,
)


def _partial(name: str, data: bytes) -> str:
    return (
        '--MIX\r\nContent-Type: message/partial; id="abc@gw"; number=1; total=2\r\n\r\n'
        f'Content-Type: application/pdf; name="{name}"\r\n'
        f"Content-Transfer-Encoding: base64\r\n\r\n{_b64(data[: len(data) // 2])}"
    )


def _encoded_forward(cte: str) -> Callable[[str, bytes], str]:
    """The document inside a forwarded message whose part is base64 or quoted-printable:
    a client may decode it and open the document; a parser reads the encoded text."""

    def part(name: str, data: bytes) -> str:
        inner = (
            "From: <a.nguyen@dilinh.lamdong.gov.vn>\r\nSubject: Fwd\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/mixed; boundary="IN"\r\n\r\n'
            f'--IN\r\nContent-Type: application/pdf; name="{name}"\r\n'
            f"Content-Transfer-Encoding: base64\r\n\r\n{_b64(data)}--IN--\r\n"
        ).encode()
        body = _b64(inner) if cte == "base64" else _qp(inner)
        return (
            "--MIX\r\nContent-Type: message/rfc822\r\n"
            f"Content-Transfer-Encoding: {cte}\r\n\r\n{body}"
        )

    return part


TWO_READINGS: tuple[Case, ...] = (
    Case("a space before the colon of the part's fields", _space_before_colon),
    Case("two Content-Type fields", _two_types),
    Case("two Content-Transfer-Encoding fields", _two_encodings),
    Case("two Content-Disposition fields", _two_dispositions),
    Case(  # a harmless name first, the file's real name second
        "a file name given twice",
        _part(
            "Content-Type: application/pdf",
            'Content-Disposition: attachment; filename="ban-do.dwg"; filename="{name}"',
            _BASE64,
        ),
    ),
    Case(
        "a type parameter given twice, in other case",
        _part('Content-Type: application/pdf; name="ban-do.dwg"; NAME="{name}"', _BASE64),
    ),
    Case("a forwarded message in base64", _encoded_forward("base64")),
    Case("a forwarded message in quoted-printable", _encoded_forward("quoted-printable")),
)

FRAGMENTS: tuple[Case, ...] = (Case("message/partial", _partial),)


def message(part: str, *, sender: str, to: str) -> bytes:
    """A message from ``sender`` with a text part and ``part``."""
    head = (
        f"From: Nguyen Van A <{sender}>\r\nTo: {to}\r\nSubject: Cong van\r\n"
        "Message-ID: <mime-attack@test>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="MIX"\r\n\r\n'
    )
    body = "--MIX\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nKinh gui van thu.\r\n"
    return (head + body + part + "--MIX--\r\n").encode()
