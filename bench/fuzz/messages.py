"""A whole generated message and its envelope: the top-level header fields, the body from
mime.py, byte-level damage to the result (bare CR or LF, NULs, cuts, long lines), and the
envelope (sender, recipients, client address, HELO, TLS). ``generate_message(seed, index)``
is message ``index`` of run ``seed``, the same bytes in every run; ``count_draws`` says how
often the named hostile structures occur in a range of them."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

from bench.fuzz.config import HOSTNAME
from bench.fuzz.corpus import _DOCUMENT_CLASSES, _EXTERNAL_RCPTS, _LOCAL_RCPTS, _SUBJECTS
from bench.fuzz.draw import _chance, _counting_draws, _garbage, _pick
from bench.fuzz.headers import (
    _address_field,
    _dkim_signature,
    _mailbox_address,
    _maybe_encoded,
    _mutate_headers,
    _serialize_headers,
)
from bench.fuzz.mime import _deep, _entity


@dataclass(frozen=True)
class FuzzMessage:
    """One generated message with its envelope."""

    raw: bytes
    mail_from: str
    recipients: tuple[str, ...]
    client_ip: str
    helo: str
    tls: bool


def _envelope_rcpts(rng: random.Random) -> tuple[str, ...]:
    count = 1 if _chance(rng, 0.8) else rng.randrange(0, 6)
    out = []
    for _ in range(count):
        roll = rng.random()
        if roll < 0.85:
            out.append(_pick(rng, _LOCAL_RCPTS))
        elif roll < 0.95:
            out.append(_pick(rng, _EXTERNAL_RCPTS))
        else:
            out.append(_pick(rng, ("người@lamdong.gov.vn", "", "<>", "a@b@lamdong.gov.vn")))
    return tuple(out)


def build_message(rng: random.Random, depth: int = 0, dialogue: bool = False) -> FuzzMessage:
    """One hostile message (and envelope) drawn from ``rng``."""
    sender = _mailbox_address(rng)
    rcpts = _envelope_rcpts(rng)
    headers: list[tuple[str, str]] = []
    if _chance(rng, 0.1):
        headers.append(("Return-Path", f"<{sender}>"))
    received = rng.randrange(0, 4) if _chance(rng, 0.97) else rng.randrange(25, 40)
    for i in range(received):
        headers.append(
            (
                "Received",
                f"from mx{i}.example.net (mx{i}.example.net [192.0.2.{i % 250}]) by "
                f"relay.example.net with ESMTPS id X{i}; Sun, 22 Nov 2026 10:00:0{i % 10} +0700",
            )
        )
    signatures = 0 if _chance(rng, 0.7) else rng.randrange(1, 11)
    domain = sender.rpartition("@")[2] or "example.net"
    for _ in range(signatures):
        headers.append(("DKIM-Signature", _dkim_signature(rng, domain)))
    headers.append(("From", _address_field(rng, sender)))
    if _chance(rng, 0.1):
        headers.append(("Sender", _address_field(rng, _mailbox_address(rng))))
    if _chance(rng, 0.2):
        headers.append(("Reply-To", _address_field(rng, _mailbox_address(rng))))
    headers.append(("To", ", ".join(rcpts) or "undisclosed-recipients:;"))
    if _chance(rng, 0.2):
        headers.append(("Cc", _address_field(rng, _mailbox_address(rng))))
    subject = _pick(rng, _SUBJECTS)
    headers.append(("Subject", _maybe_encoded(rng, subject)))
    if _chance(rng, 0.9):
        headers.append(("Date", "Sun, 22 Nov 2026 10:00:00 +0700"))
    if _chance(rng, 0.9):
        headers.append(("Message-ID", f"<{rng.randrange(10**12)}@fuzz.test>"))
    if _chance(rng, 0.1):
        headers.append(("X-Document-Class", _pick(rng, _DOCUMENT_CLASSES)))
    if _chance(rng, 0.05):
        headers.append(("Auto-Submitted", _pick(rng, ("auto-replied", "auto-generated", "no"))))
    if _chance(rng, 0.05):
        headers.append(("Precedence", _pick(rng, ("bulk", "list", "junk"))))
    if _chance(rng, 0.05):
        headers.append(("List-Id", "<thongbao.lamdong.gov.vn>"))
    if _chance(rng, 0.1):
        authserv = _pick(
            rng, (HOSTNAME, f'"{HOSTNAME}"', f"(x){HOSTNAME.upper()}", "other.example")
        )
        headers.append(("Authentication-Results", f"{authserv}; congvu=pass; dkim=pass"))
    if _chance(rng, 0.03):
        headers.append(("X-Congvu-Decision", "forged"))
    if dialogue and _chance(rng, 0.15):
        headers.append(("X-Fuzz-Downstream", _pick(rng, ("drop", "reject", "defer", "slow"))))
    if _chance(rng, 0.8):
        headers.append(("MIME-Version", _pick(rng, ("1.0", "1.0", "1.0 (x)", "2.0", ""))))
    if depth == 0 and _chance(rng, 0.005):
        content_headers, body = _deep(rng)
    else:
        content_headers, body = _entity(rng, depth, _nested_message)
    headers += content_headers
    headers = _mutate_headers(rng, headers)
    raw = _serialize_headers(rng, headers) + b"\r\n" + body
    raw = _mutate_bytes(rng, raw)
    return FuzzMessage(
        raw=raw,
        mail_from=_envelope_sender(rng, sender),
        recipients=rcpts,
        client_ip=_pick(
            rng,
            ("203.0.113.7", "203.0.113.7", "198.51.100.20", "127.0.0.1", "::1", "10.1.2.3"),
        ),
        helo=_pick(rng, ("mail.example.net", "[203.0.113.7]", "", "x" * 300, "ểê", "a\x00b")),
        tls=_chance(rng, 0.5),
    )


def _nested_message(rng: random.Random, depth: int) -> bytes:
    """A whole message as a part of another (an attachment or a message/rfc822 part)."""
    return build_message(rng, depth=depth).raw


def _envelope_sender(rng: random.Random, sender: str) -> str:
    roll = rng.random()
    if roll < 0.7:
        return sender
    if roll < 0.8:
        return ""  # the null sender
    if roll < 0.95:
        return _mailbox_address(rng)
    return _pick(rng, ("người@lamdong.gov.vn", "<>", "a b@c", "\x00"))


def _mutate_bytes(rng: random.Random, raw: bytes) -> bytes:
    if not _chance(rng, 0.35):
        return raw
    data = bytearray(raw)
    for _ in range(rng.randrange(1, 4)):
        roll = rng.random()
        where = rng.randrange(len(data) + 1)
        if roll < 0.15:
            data[where:where] = _pick(rng, (b"\r", b"\n", b"\r\r", b"\n\r"))
        elif roll < 0.25:
            data[where:where] = b"\x00" * rng.randrange(1, 4)
        elif roll < 0.35:
            data[where:where] = _garbage(rng, rng.randrange(1, 64))
        elif roll < 0.45:
            for _ in range(rng.randrange(1, 20)):
                if data:
                    data[rng.randrange(len(data))] = rng.randrange(256)
        elif roll < 0.55:
            del data[where:]
        elif roll < 0.62:
            data = bytearray(bytes(data).replace(b"\r\n", b"\n"))
        elif roll < 0.66:
            data = bytearray(bytes(data).replace(b"\r\n", b"\r"))
        elif roll < 0.72:
            data = bytearray(bytes(data).replace(b"\r\n\r\n", b"\r\n", 1))  # no blank line
        elif roll < 0.78:
            size = rng.randrange(0, 200)
            start = rng.randrange(len(data) + 1)
            data[where:where] = data[start : start + size]
        elif roll < 0.82:
            data[0:0] = _pick(
                rng, (b"From a@b Sun Nov 22 10:00:00 2026\r\n", b"\xef\xbb\xbf", b"\r\n")
            )
        elif roll < 0.85:
            data[where:where] = b"x" * rng.randrange(999, 1500)  # a line too long
        else:
            data += _garbage(rng, rng.randrange(1, 300))
    return bytes(data)


def message_rng(seed: int, index: int) -> random.Random:
    """The generator of message ``index`` for ``seed`` (independent of every other message)."""
    return random.Random(f"congvu-fuzz-message:{seed}:{index}")


def generate_message(seed: int, index: int) -> FuzzMessage:
    """Message ``index`` of run ``seed``: the same bytes in every run."""
    return build_message(message_rng(seed, index))


def count_draws(seed: int, count: int, start: int = 0) -> tuple[Counter[str], Counter[str]]:
    """How often each named hostile structure (``"pdf.update.repoint"``, ``"mime.partial"``,
    ...) is drawn in messages ``start`` .. ``start + count - 1`` of run ``seed``: the number
    of draws, and the number of messages with at least one."""
    draws: Counter[str] = Counter()
    messages: Counter[str] = Counter()
    for index in range(start, start + count):
        with _counting_draws() as tally:
            generate_message(seed, index)
        draws.update(tally)
        messages.update(tally.keys())
    return draws, messages
