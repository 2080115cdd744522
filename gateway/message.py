"""Evidence from the raw message: headers, addresses, attachments; and our trace headers.

The message is kept as the exact bytes received. Headers are located by byte offset so that
removing a forged header of ours or prepending our trace headers leaves every other byte as
the client sent it (signatures such as DKIM depend on that).
"""

from __future__ import annotations

import binascii
import email.parser
import email.policy
import functools
import hashlib
import io
import quopri
import re
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from email.errors import CharsetError, HeaderParseError, MissingHeaderBodySeparatorDefect
from email.header import decode_header, make_header
from email.message import Message
from email.utils import format_datetime
from typing import TypeVar

import filetype

from policies.addresses import addresses_in_text
from policies.model import AddressField, Attachment, MessageFacts

__all__ = [
    "FilePart",
    "ParsedMessage",
    "RawHeader",
    "auth_methods",
    "authentication_results",
    "build_facts",
    "detect_type",
    "file_parts",
    "forged_headers",
    "parse_message",
    "smime_parts",
    "split_headers",
    "strip_our_headers",
    "trace_headers",
]

T = TypeVar("T")

# RFC 5322 field name, with the obsolete white space before the colon that Postfix also accepts.
_FIELD_NAME = re.compile(rb"^([\x21-\x39\x3b-\x7e]+)[ \t]*:")
# The same line-ending rule as aiosmtplib's (and so as what the downstream receives).
_LINE_ENDINGS = re.compile(rb"(?:\r\n|\n|\r(?!\n))")
_ADDRESS_HEADERS = {"from": "From", "sender": "Sender", "reply-to": "Reply-To"}


@dataclass(frozen=True)
class RawHeader:
    """One header field as received: name, unfolded value, and where its bytes are."""

    name: str
    value: str
    start: int
    end: int

    @property
    def lname(self) -> str:
        """The field name in lower case."""
        return self.name.lower()


@dataclass(frozen=True)
class ParsedMessage:
    """A message's header fields (in order) and where its body starts."""

    raw: bytes
    headers: tuple[RawHeader, ...]
    body_offset: int
    defects: tuple[str, ...] = ()

    def all(self, name: str) -> list[RawHeader]:
        """Every field called ``name`` (case-insensitive), in order."""
        lname = name.lower()
        return [h for h in self.headers if h.lname == lname]

    def first(self, name: str) -> str:
        """The first ``name`` field's value, or ""."""
        found = self.all(name)
        return found[0].value if found else ""


def _decode(value: bytes) -> str:
    # UTF-8 in headers is legal with SMTPUTF8 (RFC 6532); anything else stays visible as
    # surrogate escapes rather than being silently replaced.
    return value.decode("utf-8", errors="surrogateescape")


def normalize_line_endings(raw: bytes) -> bytes:
    """Every bare CR or LF as CRLF: what is judged must be exactly what is delivered.

    The downstream client (aiosmtplib) rewrites bare CR/LF into CRLF when it sends; if the
    gateway judged the bytes before that, ``X-A: a<CR>From: boss@gmail.com`` would be one
    header here and two downstream.
    """
    if raw.count(b"\r\n") == raw.count(b"\r") == raw.count(b"\n"):
        return raw  # every CR and LF already in pairs: three C-speed counts, no rewrite
    return _LINE_ENDINGS.sub(b"\r\n", raw)


def split_headers(raw: bytes) -> tuple[list[RawHeader], int, list[str]]:
    """Locate the header fields of ``raw`` (CRLF lines), the body offset, and any defects.

    The header section ends at the first empty line. A line in it that is neither a field nor
    a continuation (no colon, an 8-bit or empty name, a NUL) is a defect: mail clients and
    MTAs disagree on what such a line means, so it must not be silently skipped.
    """
    headers: list[RawHeader] = []
    defects: list[str] = []
    pos, n = 0, len(raw)
    current: tuple[str, int, list[bytes]] | None = None

    def close(end: int) -> None:
        if current is not None:
            name, start, parts = current
            value = b" ".join(p.strip(b" \t\r\n") for p in parts).strip()
            headers.append(RawHeader(name, _decode(value), start, end))

    number = 0
    while pos < n:
        number += 1
        eol = raw.find(b"\n", pos)
        nxt = n if eol < 0 else eol + 1
        line = raw[pos:nxt]
        if line in (b"\r\n", b"\n"):
            close(pos)
            return headers, nxt, defects
        if b"\x00" in line:
            defects.append(f"header line {number} contains a NUL byte")
        if line[:1] in (b" ", b"\t"):
            if current is None:
                defects.append(f"header line {number} continues no field")
            else:
                current[2].append(line)
        else:
            m = _FIELD_NAME.match(line)
            close(pos)
            if m:
                current = (m.group(1).decode("ascii"), pos, [line[m.end() :]])
            else:
                current = None
                shown = line[:60].decode("ascii", "backslashreplace").rstrip()
                defects.append(f"header line {number} is not a header field: {shown!r}")
        pos = nxt
    close(pos)
    return headers, n, defects


def parse_message(raw: bytes) -> ParsedMessage:
    """Split ``raw`` (line endings already normalised) into located header fields and body."""
    headers, body_offset, defects = split_headers(raw)
    return ParsedMessage(raw, tuple(headers), body_offset, tuple(defects))


def _decoded_header(value: str) -> str:
    try:
        return str(make_header(decode_header(value)))
    except (HeaderParseError, CharsetError, ValueError, LookupError, UnicodeError):
        return value


_OOXML = {
    "word/": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "xl/": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "ppt/": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
}


def _zip_type(data: bytes) -> str:
    """OOXML and ODF files are zips: tell them apart by their central directory, not the
    first few local headers (which is all a magic-number sniffer sees)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = archive.namelist()
            if "mimetype" in names:
                mimetype = archive.read("mimetype")[:100].decode("ascii", "replace").strip()
                if mimetype.startswith("application/vnd.oasis.opendocument."):
                    return mimetype
            if "[Content_Types].xml" in names:
                for prefix, kind in _OOXML.items():
                    if any(n.startswith(prefix) for n in names):
                        return kind
    except (zipfile.BadZipFile, OSError, ValueError, RuntimeError, NotImplementedError):
        return "application/zip"
    return "application/zip"


def _zip_directory_at_end(data: bytes) -> bool:
    """A zip's end-of-central-directory record at the end of ``data``: archive tools open
    such a file as a zip whatever comes before it (a self-extractor's program, a picture)."""
    if b"PK\x05\x06" not in data[-66000:]:  # the record, within its maximum comment length
        return False
    try:
        return zipfile.is_zipfile(io.BytesIO(data))
    except (OSError, ValueError):  # pragma: no cover - is_zipfile catches its own errors
        return False


def _looks_like_pdf(data: bytes) -> bool:
    """A header in the first KiB (as Acrobat accepts), or one anywhere with a PDF trailer at
    the end (as repairing readers such as pdf.js and MuPDF open it)."""
    if data[:1024].find(b"%PDF-") >= 0 and (b"%%EOF" in data[-2048:] or b"startxref" in data):
        return True
    return b"%PDF-" in data and b"%%EOF" in data[-2048:]


# Office 2003 XML (WordprocessingML, SpreadsheetML): one XML file that Word or Excel opens
# with a click, whatever its name, because of this processing instruction. A Word document
# as much as a .doc, so judged as one.
_MSO_APPLICATION = re.compile(
    rb"<\?mso-application\s+progid\s*=\s*[\"'](Word\.Document|Excel\.Sheet)"
)
_MSO_TYPES = {b"Word.Document": "application/msword", b"Excel.Sheet": "application/vnd.ms-excel"}


def _office_xml(data: bytes) -> str:
    head = data[:4096]
    if head.startswith((b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")):  # a byte order mark
        head = head.decode(
            "utf-16" if head[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8-sig", "replace"
        ).encode()
    if not head.lstrip().startswith(b"<?xml"):
        return ""
    found = _MSO_APPLICATION.search(head)
    return _MSO_TYPES[found.group(1)] if found else ""


def detect_type(data: bytes, declared: str) -> str:
    # Magic numbers of containers win: a zip holding a PDF is a zip, inspected as such.
    if data[:4] == b"PK\x03\x04":
        return _zip_type(data)
    if data[257:262] == b"ustar":  # a tar holding a PDF: the PDF starts in its first KiB
        return "application/x-tar"
    if _looks_like_pdf(data):
        return "application/pdf"
    if office := _office_xml(data):
        return office
    if _zip_directory_at_end(data):  # a zip with a stub before it (self-extractor style)
        return _zip_type(data)
    kind = filetype.guess_mime(data)
    if kind:
        return str(kind)
    if data.lstrip()[:5] == b"%PDF-":
        return "application/pdf"  # a truncated PDF is still a document (judged unreadable)
    if declared.startswith("text/"):
        return "text/plain"
    return "application/octet-stream"


@dataclass(frozen=True)
class FilePart:
    """An attachment's description with its decoded bytes (for signature checks)."""

    attachment: Attachment
    data: bytes


def _param(read: Callable[[], T], fallback: T) -> T:
    """A MIME parameter read through the standard library, which can raise on malformed RFC
    2231 continuations (``name*0=a; name*=b``: TypeError in ``decode_params``)."""
    try:
        return read()
    except (TypeError, ValueError, LookupError, IndexError):
        return fallback


def _filename(part: Message) -> str:
    """The part's file name; "?" when it cannot be decoded (still a file, judged by content)."""
    return _param(lambda: part.get_filename() or "", "?")


_MIME_ERRORS = (TypeError, ValueError, LookupError, IndexError, AttributeError)


@functools.lru_cache(maxsize=1)
def mime_tree(raw: bytes) -> Message | None:
    """The message's MIME structure, or None when even the forgiving parser fails on it.

    compat32 is the fast, forgiving parser (MIME structure only, no header objects); it still
    raises on some malformed parameters (RFC 2231 continuations ``name*0=a; name*=b``). The
    same bytes are asked for by several steps of one judgement, one after another: parsed
    once (callers only read the tree). One entry, so that a large message stays in memory
    only until the next one is judged. A message that cannot be parsed gets a header defect,
    so it is refused.
    """
    try:
        return _single_part(raw) or _parser().parsebytes(raw)
    except _MIME_ERRORS:
        return None


def _parser() -> email.parser.BytesParser:
    return email.parser.BytesParser(policy=email.policy.compat32)


def _single_part(raw: bytes) -> Message | None:
    """The tree of a message that is one part (text, or a file): the parser reads only the
    header section; the rest is the payload, as the parser would have made it line by line.

    The split is after the first empty line; the parser's header section ends there or
    earlier (then what it read as body comes first in the payload). None for ``multipart/*``
    and ``message/*``, which need the whole parse.
    """
    ends = [i + len(blank) for blank in (b"\r\n\r\n", b"\n\n") if (i := raw.find(blank)) >= 0]
    if not ends:
        return None
    split = min(ends)
    tree = _parser().parsebytes(raw[:split])
    if tree.get_content_maintype() in ("multipart", "message") or tree.is_multipart():
        return None
    # The payload as parsed: get_payload() would decode 8-bit text (and read the charset
    # parameter, which can raise).
    head_body = getattr(tree, "_payload", None)
    if not isinstance(head_body, str):  # pragma: no cover - a leaf's payload is text
        return None
    tree.set_payload(head_body + raw[split:].decode("ascii", "surrogateescape"))
    return tree


_COMMENT = re.compile(r"\([^()]*\)")


def transfer_encoding(part: Message) -> str:
    """The part's Content-Transfer-Encoding as mail clients read it: the first token, lower
    case, without comments, quotes, folding or a stray ``;`` (``" Base64 (x)"`` is base64).
    The standard library compares the raw value, so it left such a part encoded, and a PDF in
    it was not seen as a document at all."""
    return _mechanism(str(part.get("Content-Transfer-Encoding") or ""))


def _mechanism(value: str) -> str:
    while (stripped := _COMMENT.sub(" ", value)) != value:  # nested comments, inside out
        value = stripped
    tokens = value.replace('"', " ").replace(";", " ").split()
    return tokens[0].lower() if tokens else ""


def decoded_payload(part: Message) -> bytes:
    """A leaf part's content, decoded by :func:`transfer_encoding`."""
    written = str(part.get("Content-Transfer-Encoding") or "")
    mechanism = _mechanism(written)
    if mechanism == written.lower():
        payload = part.get_payload(decode=True)
        return payload if isinstance(payload, bytes) else b""
    # The payload as parsed (get_payload() would read the charset parameter, which can
    # raise), decoded here as the standard library decodes the canonical names.
    text = getattr(part, "_payload", None)
    if not isinstance(text, str):  # pragma: no cover - a leaf's payload is text
        return b""
    data = text.encode("utf-8", "surrogateescape")
    if mechanism == "base64":
        clean = re.sub(rb"[^A-Za-z0-9+/]", b"", data)
        clean = clean[: len(clean) - len(clean) % 4 if len(clean) % 4 == 1 else len(clean)]
        return binascii.a2b_base64(clean + b"=" * (-len(clean) % 4))
    if mechanism == "quoted-printable":
        return quopri.decodestring(data)
    return data  # 7bit, 8bit, binary, or a name no client decodes


@dataclass(frozen=True)
class MimeDefects:
    """What in the MIME structure the gateway refuses rather than guess at."""

    ambiguities: tuple[str, ...] = ()  # parts that read two ways
    fragments: tuple[str, ...] = ()  # message/partial parts: their documents cannot be seen


def mime_defects(raw: bytes) -> MimeDefects:
    """What gives the MIME structure two readings, so that a client may open what the gateway
    did not see: a line in a part's header that is not a field (``Content-Type : ...``, with
    a space before the colon, is a field to a lenient client and the start of the body to
    us), two Content-Type, Content-Transfer-Encoding or Content-Disposition fields in one
    part, a parameter given twice in one field (two ``boundary`` or ``filename`` values:
    parsers differ on which one counts), and a forwarded message (``message/*``) with a
    transfer encoding such as base64, which RFC 2046 forbids and a client may decode and
    open. Apart: ``message/partial`` fragments, whose documents cannot be checked. The
    message's own header is checked by :func:`split_headers`."""
    tree = mime_tree(raw)
    if tree is None:
        return MimeDefects()
    found: list[str] = []
    fragments: list[str] = []
    for index, part in enumerate(tree.walk()):
        where = "the message" if index == 0 else f"MIME part {index}"
        if index and any(isinstance(d, MissingHeaderBodySeparatorDefect) for d in part.defects):
            found.append(f"{where}: a header line that is not a field")
        for name in ("Content-Type", "Content-Transfer-Encoding", "Content-Disposition"):
            count = len(part.get_all(name) or ())
            if count > 1:
                found.append(f"{where}: {count} {name} fields")
        for name in ("Content-Type", "Content-Disposition"):
            if repeated := _repeated_parameters(part, name):
                found.append(f"{where}: {name} parameter {repeated[0]!r} given more than once")
        if part.get_content_type() == "message/partial":
            fragments.append(
                f"{where}: message/partial, a fragment whose documents cannot be checked"
            )
        elif part.get_content_maintype() == "message" and transfer_encoding(part) not in (
            "",
            "7bit",
            "8bit",
            "binary",
        ):
            # RFC 2046 5.2.1 forbids it: a client may decode and open the forwarded message
            # (and its documents) where the parser reads the encoded text as one.
            found.append(f"{where}: a forwarded message with a transfer encoding")
    return MimeDefects(tuple(found[:10]), tuple(fragments[:10]))


def _repeated_parameters(part: Message, field: str) -> list[str]:
    """The parameter names that ``field`` gives more than once, case aside, as written:
    ``filename`` and ``filename*`` (RFC 2231), which clients write side by side for a
    non-ASCII name, are two names; two ``filename`` are one name twice."""
    names = [
        segment.split("=", 1)[0].strip().lower()
        for segment in _parameter_segments(str(part.get(field) or ""))[1:]
        if "=" in segment
    ]
    return sorted({name for name in names if names.count(name) > 1})


def _parameter_segments(value: str) -> list[str]:
    """``value`` split at the semicolons outside quoted strings."""
    segments: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in value:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ";" and not quoted:
            segments.append("".join(current))
            current = []
            continue
        current.append(char)
    segments.append("".join(current))
    return segments


# A uuencoded file in a text part ("begin 644 name" ... "end"): Outlook and Thunderbird show
# it as an attachment, so it is one.
_UU_BEGIN = re.compile(rb"^begin[ \t]+[0-7]{3,4}[ \t]+([^\r\n]+?)[ \t]*\r?$", re.M)
_UU_END = re.compile(rb"^end[ \t]*\r?$", re.M)
_UU_FILES = 20  # uuencoded files read from one text part


def _uudecode(block: bytes) -> bytes:
    """The bytes of a uuencoded block, line by line; a line's length character says how
    much of it counts (trailing garbage, as some encoders leave, is ignored)."""
    out = []
    for line in block.splitlines():
        if not line:
            continue
        count = ((line[0] - 32) & 63) * 4 + 5
        try:
            out.append(binascii.a2b_uu(line[: count // 3]))
        except binascii.Error:
            break  # what a client would show stops at the first broken line too
    return b"".join(out)


def uuencoded_files(text: bytes) -> list[tuple[str, bytes]]:
    """The uuencoded files in a text part's content: (file name, bytes). One pass over the
    text: each block ends at the first ``end`` line after its ``begin``, and a ``begin``
    with no ``end`` after it ends the search."""
    found: list[tuple[str, bytes]] = []
    if b"begin" not in text:  # most text: a substring search, not a regular expression
        return found
    position = 0
    while len(found) < _UU_FILES and (begin := _UU_BEGIN.search(text, position)):
        end = _UU_END.search(text, begin.end())
        if end is None:
            break
        block = text[begin.end() : end.start()]
        found.append((begin.group(1).decode("utf-8", "replace"), _uudecode(block)))
        position = end.end()
    return found


def file_parts(raw: bytes) -> list[FilePart]:
    """Every MIME leaf that carries a file, decoded, in message order."""
    message = mime_tree(raw)
    if message is None:
        return []  # refused for its headers (see build_facts)
    found: list[FilePart] = []
    for part in message.walk():
        if part.is_multipart():
            continue
        declared = part.get_content_type()
        disposition = str(part.get("Content-Disposition") or "").split(";", 1)[0].strip().lower()
        filename = _filename(part)
        body_like = part.get_content_maintype() in ("text", "message")
        if not filename and disposition != "attachment" and body_like:
            # A body part, not a file. But a document written into one is a document: a
            # PDF in a text part, or in place of a forwarded message (the parser reads it as
            # a message with no header, whose body is a text part), is opened by a client
            # that sniffs the content or saves the part. A text part may also carry
            # uuencoded files.
            if part.get_content_maintype() == "text":
                content = decoded_payload(part)
                if _may_be_document(content[:1024]) and detect_type(
                    content, "text/plain"
                ).startswith(_DISGUISED_DOCUMENTS):
                    found.append(_file_part("", declared, content))
                    continue
                for name, data in uuencoded_files(content):
                    found.append(_file_part(name, "application/octet-stream", data))
            continue
        found.append(_file_part(_decoded_header(filename), declared, decoded_payload(part)))
    return found


# Detected types that make a text part a document in disguise: documents and containers,
# which a client opens as files (text, images and media it shows as they are).
_DISGUISED_DOCUMENTS = (
    "application/pdf",
    "application/msword",
    "application/vnd.",  # Office, OpenDocument, RAR, TNEF
    "application/zip",
    "application/x-tar",
    "application/gzip",
    "application/x-bzip2",
    "application/x-xz",
    "application/x-7z-compressed",
)


# The first bytes of the documents above (the content detector is slow on every text part):
# PDF (anywhere in the first KiB, as readers allow), zip, a program stub (self-extractor),
# OLE2 (Word, Excel 97), gzip, bzip2, xz, 7z, RAR, TNEF; a tar's "ustar" at 257, and Word or
# Excel 2003 XML's processing instruction (in UTF-8 or UTF-16).
_DOCUMENT_MAGIC = (
    b"PK\x03\x04",
    b"MZ",
    b"\xd0\xcf\x11\xe0",
    b"\x1f\x8b",
    b"BZh",
    b"\xfd7zXZ\x00",
    b"7z\xbc\xaf\x27\x1c",
    b"Rar!",
    b"\x78\x9f\x3e\x22",
)


def _may_be_document(head: bytes) -> bool:
    """Whether a text part's first KiB could start a document (see :data:`_DOCUMENT_MAGIC`)."""
    return (
        head.startswith(_DOCUMENT_MAGIC)
        or b"%PDF" in head
        or head[257:262] == b"ustar"
        or b"mso-application" in head
        or b"m\x00s\x00o\x00-\x00a\x00p\x00p" in head
    )


def _file_part(filename: str, declared: str, data: bytes) -> FilePart:
    attachment = Attachment(
        filename=filename,
        declared_type=declared,
        detected_type=detect_type(data, declared),
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )
    return FilePart(attachment, data)


_BODY_SCAN = 256 * 1024  # text read per message when looking for printed addresses


def body_addresses(raw: bytes) -> tuple[str, ...]:
    """Addresses printed in the message's text parts (signature blocks, letterheads)."""
    message = mime_tree(raw)
    if message is None:
        return ()
    found: dict[str, None] = {}
    budget = _BODY_SCAN
    for part in message.walk():
        if part.is_multipart() or part.get_content_maintype() != "text" or _filename(part):
            continue
        payload = decoded_payload(part)
        if budget <= 0:
            continue
        charset = _param(part.get_content_charset, None) or "utf-8"
        try:
            text = payload[:budget].decode(charset, "replace")
        except (LookupError, ValueError):  # an unknown charset, or a name with a NUL in it
            text = payload[:budget].decode("utf-8", "replace")
        budget -= len(payload)
        for address in addresses_in_text(text):
            found[address.lower().rstrip(".")] = None
    return tuple(found)[:50]


@dataclass(frozen=True)
class SmimeParts:
    """A top-level multipart/signed message: the signed part's exact bytes and the signature."""

    signed: bytes
    signature: bytes


def smime_parts(parsed: ParsedMessage) -> SmimeParts | None:
    """The signed content and CMS signature of the message's S/MIME ``multipart/signed``
    part: the message itself, or the first one inside its multipart structure (a server that
    adds a disclaimer wraps the signed message in a ``multipart/mixed``). A signed message
    forwarded as an attachment (``message/rfc822``) is not the sender's and is not looked at.

    The signature covers the first part exactly as sent (RFC 8551 3.5), so it is cut from the
    raw bytes between the boundaries, not re-serialised from a parsed tree.
    """
    message = mime_tree(parsed.raw)
    if message is None:
        return None
    signed = next(_signed_parts(message), None)
    if signed is None:
        return None
    return _signed_region(parsed.raw[parsed.body_offset :], signed)


def _signed_parts(part: Message) -> Iterator[Message]:
    """``multipart/signed`` parts, through multiparts only (not into forwarded messages)."""
    if part.get_content_type() == "multipart/signed":
        yield part
        return
    if part.get_content_maintype() == "multipart" and part.is_multipart():
        for sub in part.get_payload():
            if isinstance(sub, Message):
                yield from _signed_parts(sub)


def _signed_region(body: bytes, message: Message) -> SmimeParts | None:
    """The bytes between the first and the next delimiter of ``message``'s boundary in
    ``body``, and its signature part."""
    boundary = _param(message.get_boundary, None)
    param = _param(lambda: message.get_param("protocol"), None)
    protocol = param.lower() if isinstance(param, str) else ""
    if not boundary or protocol not in (
        "application/pkcs7-signature",
        "application/x-pkcs7-signature",
    ):
        return None
    delimiter = re.escape(b"--" + boundary.encode("ascii", "replace"))
    # Delimiters only count at the start of a line and followed by white space to the end of
    # it, exactly as a MIME parser reads them: a "--boundary" inside a line is content.
    opening = re.search(rb"(?:\A|\r\n)" + delimiter + rb"[ \t]*\r\n", body)
    if opening is None:
        return None
    start = opening.end()
    closing = re.compile(rb"\r\n" + delimiter + rb"(?:--)?[ \t]*(?:\r\n|\Z)")
    following = closing.search(body, start)
    if following is None:
        return None
    end = following.start()
    parts = message.get_payload()
    if not isinstance(parts, list) or len(parts) != 2 or not isinstance(parts[1], Message):
        return None
    signature = decoded_payload(parts[1])
    if not signature:
        return None
    return SmimeParts(body[start:end], signature)


def build_facts(
    parsed: ParsedMessage,
    *,
    mail_from: str,
    recipients: tuple[str, ...],
    client_ip: str,
    client_trusted: bool,
    helo: str = "",
    tls: bool = False,
    login: str = "",
    files: list[FilePart] | None = None,
) -> MessageFacts:
    """Everything the policy judges, from the envelope and the parsed message.

    Signature and DKIM evidence are added by the engine (they need I/O and worker processes).
    """
    fields: dict[str, list[AddressField]] = {k: [] for k in _ADDRESS_HEADERS}
    for header in parsed.headers:
        if header.lname in fields:
            fields[header.lname].append(
                AddressField.parse(_ADDRESS_HEADERS[header.lname], header.value)
            )
    mime = mime_defects(parsed.raw)
    return MessageFacts(
        mail_from=mail_from,
        recipients=recipients,
        client_ip=client_ip,
        client_trusted=client_trusted,
        helo=helo,
        tls=tls,
        login=login,
        from_fields=tuple(fields["from"]),
        sender_fields=tuple(fields["sender"]),
        reply_to_fields=tuple(fields["reply-to"]),
        header_defects=parsed.defects
        + (() if mime_tree(parsed.raw) is not None else ("MIME parameters cannot be parsed",)),
        mime_ambiguities=mime.ambiguities,
        fragments=mime.fragments,
        auto_submitted=parsed.first("Auto-Submitted").split(";", 1)[0].strip().lower(),
        precedence=parsed.first("Precedence").strip().lower(),
        list_id=parsed.first("List-Id").strip(),
        content_type=parsed.first("Content-Type").split(";", 1)[0].strip().lower(),
        body_addresses=body_addresses(parsed.raw),
        subject=_decoded_header(parsed.first("Subject")),
        message_id=parsed.first("Message-ID"),
        size=len(parsed.raw),
        attachments=tuple(
            f.attachment for f in (file_parts(parsed.raw) if files is None else files)
        ),
    )


def forged_headers(parsed: ParsedMessage, authserv_id: str) -> list[RawHeader]:
    """The header fields that claim to come from this gateway, which it must remove.

    RFC 8601 section 5: a border MTA removes Authentication-Results fields bearing its own
    authserv-id, or a sender could forge our verdict for the servers behind us. The id may be
    quoted or hidden behind (nested) comments, so any A-R field naming our id as a whole token
    anywhere is removed: losing a foreign result that mentions us is the lesser harm.
    """
    ours = re.compile(rf"(?<![\w.-]){re.escape(authserv_id)}(?![\w-]|\.[\w-])", re.IGNORECASE)
    return [
        h
        for h in parsed.headers
        if (h.lname == "authentication-results" and ours.search(h.value))
        or h.lname.startswith("x-congvu-")
    ]


def strip_our_headers(parsed: ParsedMessage, authserv_id: str) -> bytes:
    """The message without the fields :func:`forged_headers` names."""
    cut = forged_headers(parsed, authserv_id)
    if not cut:
        return parsed.raw
    out, pos = [], 0
    for h in cut:
        out.append(parsed.raw[pos : h.start])
        pos = h.end
    out.append(parsed.raw[pos:])
    return b"".join(out)


def _fold(name: str, words: list[str]) -> str:
    lines, line = [], f"{name}:"
    for word in words:
        if len(line) + 1 + len(word) > 78 and line != f"{name}:":
            lines.append(line)
            line = "\t" + word
        else:
            line = f"{line} {word}"
    lines.append(line)
    return "\r\n".join(lines) + "\r\n"


def trace_headers(
    *,
    hostname: str,
    decision_id: str,
    helo: str,
    client_ip: str,
    tls: bool,
    esmtp: bool,
    recipients: tuple[str, ...],
    result: str,
    reason: str,
    when_utc: datetime,
    methods: tuple[str, ...] = (),
) -> bytes:
    """Our ``Received:`` and ``Authentication-Results:`` lines, to prepend to the message."""
    protocol = ("ESMTPS" if tls else "ESMTP") if esmtp else "SMTP"
    ip = f"IPv6:{client_ip}" if ":" in client_ip else client_ip
    words = [
        "from",
        _safe(helo or "unknown"),
        f"([{ip}])",
        "by",
        hostname,
        "(congvu-gateway)",
        "with",
        protocol,
        "id",
        decision_id,
    ]
    if len(recipients) == 1:
        words += ["for", f"<{_safe(recipients[0])}>"]
    words[-1] += ";"
    words += format_datetime(when_utc).split()
    received = _fold("Received", words)
    results = authentication_results(
        hostname=hostname, decision_id=decision_id, result=result, reason=reason, methods=methods
    )
    return (received + results).encode("utf-8")


def authentication_results(
    *, hostname: str, decision_id: str, result: str, reason: str, methods: tuple[str, ...] = ()
) -> str:
    """Our ``Authentication-Results:`` field (RFC 8601), folded, with its CRLF."""
    ar_words = [f"{hostname};"]
    for method in methods:  # RFC 8601 resinfo: "dkim=pass header.d=... header.s=...;"
        ar_words += method.split(" ")
        ar_words[-1] += ";"
    ar_words.append(f"congvu={result}")
    if reason:
        ar_words.append(f'reason="{_safe(reason)}"')
    ar_words.append(f"policy.decision={decision_id}")
    return _fold("Authentication-Results", ar_words)


def auth_methods(facts: MessageFacts) -> tuple[str, ...]:
    """RFC 8601 results for DKIM, S/MIME and each document, for our Authentication-Results."""
    out = [
        f"dkim={d.result} header.d={_token(d.domain)} header.s={_token(d.selector)}"
        for d in facts.dkim
        if d.domain
    ]
    if facts.smime is not None:
        out.append(f"smime={facts.smime.result}")
    for doc in facts.documents:
        passed = [c for c in doc.checks if c.result == "pass"]
        result = (
            "pass"
            if passed or doc.in_signed_smime
            else (doc.checks[0].result if doc.checks else "none")
        )
        name = _token(doc.attachment.filename or "unnamed")
        out.append(f'x-congvu-document={result} reason="{name}"')
    return tuple(out)


def _token(text: str) -> str:
    """A value safe as an RFC 8601 pvalue / reason: printable ASCII, no quotes or separators."""
    return "".join(c if "!" <= c <= "~" and c not in '";()' else "_" for c in text)[:100] or "_"


def _safe(text: str) -> str:
    """Header-safe text: no CR/LF or other controls (they would inject header lines)."""
    return "".join(c for c in text if c >= " " and c not in {"\x7f", '"'})
