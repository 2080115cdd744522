"""Evidence from the raw message: headers, addresses, attachments; and our trace headers.

The message is kept as the exact bytes received. Headers are located by byte offset so that
removing a forged header of ours or prepending our trace headers leaves every other byte as
the client sent it (signatures such as DKIM depend on that).
"""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from email.header import decode_header, make_header
from email.message import Message
from email.utils import format_datetime

import filetype

from policies.model import AddressField, Attachment, MessageFacts

__all__ = [
    "ParsedMessage",
    "RawHeader",
    "build_facts",
    "parse_message",
    "split_headers",
    "strip_our_headers",
    "trace_headers",
]

_FIELD_NAME = re.compile(rb"^([\x21-\x39\x3b-\x7e]+):")
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


def split_headers(raw: bytes) -> tuple[list[RawHeader], int]:
    """Locate the header fields of ``raw`` and the offset where the body starts.

    The header section ends at the first empty line or, as in the ``email`` package, at the
    first line that is neither a field nor a continuation (that line then starts the body).
    """
    headers: list[RawHeader] = []
    pos, n = 0, len(raw)
    current: tuple[str, int, list[bytes]] | None = None

    def close(end: int) -> None:
        if current is not None:
            name, start, parts = current
            value = b" ".join(p.strip(b" \t\r\n") for p in parts).strip()
            headers.append(RawHeader(name, _decode(value), start, end))

    while pos < n:
        eol = raw.find(b"\n", pos)
        nxt = n if eol < 0 else eol + 1
        line = raw[pos:nxt]
        if line in (b"\r\n", b"\n"):
            close(pos)
            return headers, nxt
        if line[:1] in (b" ", b"\t") and current is not None:
            current[2].append(line)
        else:
            m = _FIELD_NAME.match(line)
            if not m:
                close(pos)
                return headers, pos
            close(pos)
            current = (m.group(1).decode("ascii"), pos, [line[m.end() :]])
        pos = nxt
    close(pos)
    return headers, n


def parse_message(raw: bytes) -> ParsedMessage:
    """Split ``raw`` into located header fields and body."""
    headers, body_offset = split_headers(raw)
    return ParsedMessage(raw, tuple(headers), body_offset)


def _decoded_header(value: str) -> str:
    try:
        return str(make_header(decode_header(value)))
    except (ValueError, LookupError, UnicodeError):
        return value


def _detect_type(data: bytes, declared: str) -> str:
    # Some producers put bytes before the PDF header; readers accept it within the first KiB.
    if b"%PDF-" in data[:1024]:
        return "application/pdf"
    kind = filetype.guess_mime(data)
    if kind:
        return str(kind)
    if declared.startswith("text/"):
        return "text/plain"
    return "application/octet-stream"


def _attachments(raw: bytes) -> list[Attachment]:
    # compat32 is the fast, forgiving parser: MIME structure only, no header objects.
    message: Message = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(raw)
    found: list[Attachment] = []
    for part in message.walk():
        if part.is_multipart():
            continue
        declared = part.get_content_type()
        disposition = (part.get("Content-Disposition") or "").split(";", 1)[0].strip().lower()
        filename = part.get_filename() or ""
        if (
            not filename
            and disposition != "attachment"
            and part.get_content_maintype()
            in (
                "text",
                "message",
            )
        ):
            continue  # a body part, not a file
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        found.append(
            Attachment(
                filename=_decoded_header(filename),
                declared_type=declared,
                detected_type=_detect_type(data, declared),
                size=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
            )
        )
    return found


def build_facts(
    parsed: ParsedMessage,
    *,
    mail_from: str,
    recipients: tuple[str, ...],
    client_ip: str,
    client_trusted: bool,
    helo: str = "",
    tls: bool = False,
) -> MessageFacts:
    """Everything the policy judges, from the envelope and the parsed message."""
    fields: dict[str, list[AddressField]] = {k: [] for k in _ADDRESS_HEADERS}
    for header in parsed.headers:
        if header.lname in fields:
            fields[header.lname].append(
                AddressField.parse(_ADDRESS_HEADERS[header.lname], header.value)
            )
    return MessageFacts(
        mail_from=mail_from,
        recipients=recipients,
        client_ip=client_ip,
        client_trusted=client_trusted,
        helo=helo,
        tls=tls,
        from_fields=tuple(fields["from"]),
        sender_fields=tuple(fields["sender"]),
        reply_to_fields=tuple(fields["reply-to"]),
        subject=_decoded_header(parsed.first("Subject")),
        message_id=parsed.first("Message-ID"),
        size=len(parsed.raw),
        attachments=tuple(_attachments(parsed.raw)),
    )


def _authserv_id(value: str) -> str:
    head = re.sub(r"\([^)]*\)", " ", value.split(";", 1)[0])
    parts = head.split()
    return parts[0].lower() if parts else ""


def strip_our_headers(parsed: ParsedMessage, authserv_id: str) -> bytes:
    """The message without headers that claim to come from this gateway.

    RFC 8601 section 5: a border MTA removes Authentication-Results fields bearing its own
    authserv-id, or a sender could forge our verdict for the servers behind us.
    """
    ours = authserv_id.lower()
    cut = [
        h
        for h in parsed.headers
        if (h.lname == "authentication-results" and _authserv_id(h.value) == ours)
        or h.lname.startswith("x-congvu-")
    ]
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
    ar_words = [f"{hostname};", f"congvu={result}"]
    if reason:
        ar_words.append(f'reason="{_safe(reason)}"')
    ar_words.append(f"policy.decision={decision_id}")
    return (received + _fold("Authentication-Results", ar_words)).encode("utf-8")


def _safe(text: str) -> str:
    """Header-safe text: no CR/LF or other controls (they would inject header lines)."""
    return "".join(c for c in text if c >= " " and c not in {"\x7f", '"'})
