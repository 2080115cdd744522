"""Fuzz: hostile generated messages through the check path, hostile SMTP dialogues through a
real gateway. Zero unhandled exceptions is the expected result.

    python bench/fuzz.py --messages 100000 --seed 1 [--dialogues 2000] [--workers 2]
    python bench/fuzz.py --seed 1 --replay 4711 [--dump DIR]   # one message, to reproduce
    python bench/fuzz.py --seed 1 --replay-dialogue 17         # one dialogue, with transcript

Messages are mutations of realistic official mail (random, duplicate, folded and encoded-word
headers; broken MIME boundaries; deep nesting; random types, transfer encodings and charsets;
NULs, 8-bit bytes, bare CR/LF; huge parameter lists; attachments such as signed, truncated or
damaged PDFs, Office files, zips, CMS signatures; forged and odd From/Sender/Reply-To). Each is
judged as ``congvu check`` judges it (the same Engine calls, the default policy, signature
validation in threads, a DNS stub that answers at once and never uses the network), then
recorded, given trace headers and, where due, a refusal notice as ``congvu serve`` would. A
failure is: ``Engine.judge`` raising, a Decision with ``errors`` (a rule or the evidence
gathering crashed), a reply that is not one well-formed SMTP reply line, or a verdict whose
reply has the wrong class; also any exception while building the record, trace headers or
notice, and a record that the record's reader does not read back to the text stored.

Dialogues are random command sequences (EHLO/HELO/MAIL/RCPT/DATA/RSET/NOOP/STARTTLS/XFORWARD
and garbage; bad arguments, pipelined bursts, bare CR/LF, NULs, long lines, early hang-ups,
failed TLS handshakes) against two real gateways on 127.0.0.1 (one plain and untrusted; one
with STARTTLS, XFORWARD from loopback and a trusted network) relaying to a real aiosmtpd
downstream that refuses or drops on request. A failure is: a reply line that is not a
well-formed SMTP reply (3 digits, printable ASCII, CRLF) or shows internals ("Traceback",
"Error: ("); a 250 to end-of-data for a message the downstream did not receive; a message the
downstream received that the gateway did not record as accepted (or received twice, or
without our trace headers: smuggled); an "smtp.exception" (or "check.exception") log event; an
exception in the event loop; a broken decision chain.

Generation is deterministic given --seed: message N is the same bytes in every run.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import hashlib
import io
import ipaddress
import json
import logging
import multiprocessing
import os
import quopri
import random
import re
import ssl
import sys
import tempfile
import threading
import time
import traceback
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import structlog
from aiosmtpd.smtp import SMTP
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.audit import SqliteStore, clean_text
from gateway.config import DownstreamConfig, GatewayConfig
from gateway.dkim import DnsNoData, DnsTempError
from gateway.engine import Engine, RecipientOutcome, accept_reply
from gateway.message import (
    auth_methods,
    normalize_line_endings,
    parse_message,
    strip_our_headers,
    trace_headers,
)
from gateway.notices import build_notice
from gateway.record import Record, build_record
from gateway.server import Gateway
from gateway.validation import make_validator
from policies import Action, Policy, load_policy
from policies.notices import notice_kind, render_notice

T = TypeVar("T")

HOSTNAME = "gw.lamdong.gov.vn"
LOCAL_DOMAINS = ("lamdong.gov.vn",)
NOW = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)  # judged "now": verdicts do not drift by date
REPLY_TIMEOUT = 60.0  # seconds a dialogue waits for one reply before calling it a hang
SLOW_MS = 2000.0  # a message judged slower than this is listed

# -- the seed corpus -----------------------------------------------------------------------------

# A one-page PDF signed (PAdES, ECDSA) by "Nguyen Van A <a.nguyen@dilinh.lamdong.gov.vn>" under
# a test CA the gateway does not trust; zlib, then base64. Embedded so that every run generates
# the same bytes (a signature made at run time would differ each time).
_SIGNED_PDF_Z = (
    "eNrtWdtuG8cZvudTDFgYkFFIO+eDICnYnQNixEoMSUmKxkGxJJcyY4krkLQk+3161ate96JA+kB9hX6zPIiy5CBO"
    "GgQBvDztzvzzn/9vhjNPXoS0y/ZM78mPf//xn//5R48RStrBD72Dg15x9vaqIYWvF/VFe94rXtTnzZxwEJz0jo56"
    "zXSUCfmDAR1dr/Dtm+mCsF7xxWQ0J98RmQeS77eGiq2hz5vp+eIVMTr3zxezpr7sVWekSIwwSc7GxHC8KTkbkR3f"
    "Ts/JdT0l85YwLoqvqy/D7jcvyHVDrifNkAzqlgzxebnDXj59Ss5+IPEsy1yxXUmXjyreK46b0aSu2luoTPFSThEr"
    "ORQvTpp5+2Y2hBPymNTCvO6GkTseubVXnL4ZLLrH3AgXVPW86eiLz5uL62YxGdbZzuUbnpoumuliTkTnW+gxw+MD"
    "T6sthY/bUagXDdkJL6nhnHLNGOfMccH0X5+CxawdvRk2M7Jz9fbzevq6JfQlVVrY/E2fbnG9nTXjHiW6RzcX0UoJ"
    "RcZk08YMWfZM79q0ftDGuHrQxhV70Ca5vWtbzOrJRTPrzDppW6TM0gvPpuOWqNV9QDQOXMMhoRkMraOaN7VTI8UH"
    "A9o0jZCSj4/IgRkKwcesMQNu6rFlY6mUksZQWVujB/wox/F08q4hq0SrZ4vOA4rJ3pMn8av0cyugKIezNrWzS2KW"
    "z/EWQZxP2ukyPeLpM7+VF6G5bi7aq2Z2R7ZMi2+aWX4iRa7COybPMz2qJ+fHs9Ov/pbt/whmfI8+YCY4otErvj55"
    "TnZeLRZX85w6yAeTPzc3Nzk1JvM2/7Sz89wI90xH9WyU76WyRuW+V4vLi6dbzE+a60kndGeVijyn17LQi/sKHTeL"
    "egRnEkbfy+0/SDEW5XTaLjKa2Qdo9tuUp9nimibNxWhbODL5PF3U51B2a4jdHgIIBREcQnbwy56uXdMZsuWbbyej"
    "8wYNiTDBs3eHi5XP8wuiXiwBHCEl7r3guS2BG/cdCGo51SJSTR0vrZbW6mRooIwaysuul6clFa8oRzsTjKIFNBij"
    "aR5DmVZUUNn1K4pbWj3KkXUcpRYdR06r7pdVaMegPBqtTJokQulsGULiNDipgCgy5PCoMsjSu2BYKJmDnBJy7FKO"
    "jyJAB/ARVBhoCe4UIESFUmjXDD1KyygYwy1Nm56SemqV1MoIIzkMkJV0oFICxm6oBKj8FhXXCYbhTgoJMhYZrBRc"
    "KAEPQYP82bxU2fUKobt2Ltz9XnyX/weNLfTQ9zROd1TS4VcYpZ2O2qz1Vm5lpdnyYo7Efb+KLn4CbDAz6MpUcDGt"
    "kvfGG1PyqjI6Vcz7FCrnBTehqkRUlY9OSJsid5XlXjJVCcQz+FJ5FVXQNFoO7opbI2KkKglrTShLw6vSliVyodJV"
    "gGWBGs9D8FzFxEphGYyh+JZ3fmEhh4GylGA7YkdXT7iLawrQrinkKuM0yMKmP1IJD0omE81CuLaqMk5VZVLQIyhv"
    "vQoyJV/ijjsN+WwjH4knlzFAScgy2cpGx51RHCkegrI68Kii9JIGGb2OhkWRY882FkAzjhYOLlyXlEt8uNUoP2sk"
    "XsgTnnjSwnDteTTr6MYcVaM10x53kiezzs+4pP1QrSCmNrtKKpox0AavU4rKcGa1pjChkpGX0gZnUI3GBu0RdUal"
    "z7UbbDQ0eQgQPmJFAh6MUhvhJbTIZG3k+TJIf6RzrKgvUQNClSmhhI1MxjvUlRRM4jlXurVLVOAZUjI6JH0fHZAT"
    "PnIfuFYh5xy3jFFbwooU0UqjMMF3NfhBdPidam2DEXqFDvwRjODCdr3ifQQRuQB/Sm/0MLetN/BSSS4j1l05f5Rx"
    "WukIbaR2+PaddvZxpJPQ+26EypmVR8KvPEDkY/juKGOaRc2Qc1ujoSTk6ZU09HnwCmhLnW/wAQPNc/bGX4ZHMpYm"
    "qQCdmJYMxW5SCsJJlF2sHI/UOLgjpGCDMNCQiwoTVumC9zIEIDYSXShktSuBQtpU6KQRXF3JpRJJJs6dBHOEhpYa"
    "hYd6Qr+tnBVCVhmPyjynYR5DdPwjeIRId/Pih5FI558PYcnPRyPuNtJRpJxn1iiQXxkVIe8hVJcBWRbQyeADZENS"
    "fyRC6fs18lE4BTqtnC8Z97pyAtFwwFtmorOABYsVjRfoqRA8xSpbVlpKVbEIDIP9li1xquTOR5Uqh/QI3sXSU+EA"
    "gQngl7TGaIUsYyA1mMM09YlL44ynJUsQBdDK+OSW6yPm1usjTGe/F8Z8JD7+xBoOKzUWEHlmH610ka17fI0HI9Oj"
    "Y+AvhA6aO2lESsoih0tfJVFKVBvqC6sIC6qyKhXWhoEF6ypfYf6jWAwKa2JOj4T/vXnmx59bWr0vA0HlWK8yC7WB"
    "l9DfYAhSFFIN5lIUKKoiYlqmTiXLKw9CB4GYrJnWLgI9kDHW6zxjeVRarJLEalNJ4C/mNCpiKZFvf4z4Pl5JcDUC"
    "LXMdMfAOQMjIE0PpoFw0st0pDxeBWxnh64gETxWcGEKsUKYhIEE4i7G0VeYBu2ksS9RjxAzPQ8l5BGDxmOBAgwvr"
    "QOc1sEEAR73HEoMZxUwlsSJUnn66Pl2frk/Xp+vT9Wuuo15RvV00J/X0vCHfUcI01wTrPtxhGvyefMS13oDrduXS"
    "5GLRzEhRjtpBs/fixRfPJ4um25Vb98Sz02d7vhzF071Rs6iHr5pRrzj+0Mbi3Z5ct8N6f0d1vfu6tev3l+Pnm6MX"
    "qe3W2cvBZ7dX9fB1syCD5nwyPez/91//7pPJ6LD/rTqmx1e+eTX5/N2sOX335dnw3euhG/U/O+od3O7fXl5dQhC5"
    "vbyYzvdvD/t1tm0f97m56JOOZPH6sL/Z+twTdo/2MXo2Gu+fhLQai6fDft6o3i+Km5ubvRux187OC+acKygvON8F"
    "xe787XRR3+5O539acwjNfDibXC3yvvMv5LTW/vJqM2463+ss2Ru2l8VtfVWwPVqsCa+2BNwjRAcIRUd4tX/cjibj"
    "t3ln+LCfY7fL2C7nZ8ztc7HP9J8p3ae0TzBof71D/MBNJJtYD9o3i8N+v4DJxcpr+Xbj/qOtACIjDvuzHJ4HZ2Cr"
    "wx/+U4c/xm4d/sgNLf6P0/cPdhgWm3dthsh1u5QPDoGYdPxBm6YPDpDwr878RodFbmzc2A7NSA7MkA+GpqFuODRY"
    "3I7qcd2Iu8MixvKefXNN8jHRvXMjw7RZHRz9D33Nvyw="
)

_OFFICIAL = (
    "a.nguyen@dilinh.lamdong.gov.vn",
    "vanthu@lamdong.gov.vn",
    "tranthib@sotc.hanoi.gov.vn",
    "phongnv@ubnd.dalat.lamdong.gov.vn",
    "ketoan@baoloc.lamdong.gov.vn",
    "lanhdao@DILINH.LAMDONG.GOV.VN",
    "vp@xn--tnh-ypa.gov.vn",
    "chanh.vp@lâmđồng.gov.vn",
)
_PERSONAL = (
    "nguyenvana@gmail.com",
    "NguyenVanA@GMAIL.COM",
    "b.tran@yahoo.com.vn",
    "c.le@outlook.com",
    "d.pham@hotmail.com",
    "e.vo@icloud.com",
    "f.do@zing.vn",
    "g.hoang@googlemail.com",
)
_OTHER = (
    "info@congty.com.vn",
    "noreply@dichvucong.gov.vn",
    "no-reply@facebookmail.com",
    "postmaster@lamdong.gov.vn",
    "MAILER-DAEMON@mx.example.net",
    "bounce+abc=def@lists.example.org",
)
_LOCAL_RCPTS = (
    "vanthu@lamdong.gov.vn",
    "tiepdan@lamdong.gov.vn",
    "lanhdao@lamdong.gov.vn",
    "VanThu@LamDong.Gov.Vn",
    "phongnv@lamdong.gov.vn",
)
_EXTERNAL_RCPTS = ("someone@example.com", "x@gmail.com", "vanthu@lamdong.gov.vn.evil.example")
_NAMES = (
    "Nguyễn Văn A",
    "Trần Thị Bích",
    "UBND huyện Di Linh",
    "Văn thư",
    "Nguyen Van A",
    "Phòng Tài chính - Kế hoạch",
    "vanthu@lamdong.gov.vn",
    "Lãnh đạo UBND tỉnh (lanhdao@lamdong.gov.vn)",
    'Quote "q" Name',
    "",
)
_SUBJECTS = (
    "Báo cáo tuần",
    "V/v triển khai Kế hoạch số 123/KH-UBND",
    "Giấy mời họp",
    "Công văn số 45/UBND-VP",
    "Thông báo kết luận của Chủ tịch UBND huyện",
    "Re: Fw: Dự thảo quyết định",
    "Tờ trình phê duyệt dự toán",
    "Bao cao thang 11",
    "",
)
_BODY_LINES = (
    "Kính gửi: Văn thư UBND huyện.",
    "Thực hiện Công văn số 1234/UBND-VP ngày 20/11/2026 của UBND tỉnh Lâm Đồng,",
    "Phòng Tài chính - Kế hoạch gửi kèm báo cáo theo yêu cầu.",
    "Trân trọng./.",
    "Nơi nhận: - Như trên; - Lưu: VT.",
    "Mọi chi tiết xin liên hệ: nguyenvana@gmail.com, ĐT 0263 123 456.",
    "Đăng ký tài khoản tại https://dichvucong.gov.vn/p/home/dvc-dang-ky.html",
    "Xác nhận đăng ký tài khoản Facebook của bạn",
    "Hộp thư tiếp dân: tiepdan@lamdong.gov.vn",
    "-- ",
    "Nguyen Van A | a.nguyen@dilinh.lamdong.gov.vn | c.le@outlook.com",
    ".",
    "..leading dots",
    "From the desk of the chairman",
)
_CHARSETS = (
    "utf-8",
    "UTF-8",
    "us-ascii",
    "iso-8859-1",
    "windows-1258",
    "x-bogus-charset",
    "utf-16",
    "utf-7",
    "",
    "unicode-1-1-utf-7",
    "\x00",
)
_CTES = ("7bit", "8bit", "quoted-printable", "base64", "binary", "x-uuencode", "x-bogus", "")
_MAIN_TYPES = (
    "text/plain",
    "text/html",
    "application/pdf",
    "application/octet-stream",
    "application/zip",
    "application/msword",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/pkcs7-signature",
    "application/x-pkcs7-signature",
    "application/pkcs7-mime",
    "application/ms-tnef",
    "message/rfc822",
    "message/delivery-status",
    "multipart/mixed",
    "multipart/signed",
    "image/png",
    "text/rfc822-headers",
    "application/",
    "a/b/c",
    "x",
    "",
)
_FIELD_NAMES = (
    "From",
    "Sender",
    "Reply-To",
    "To",
    "Cc",
    "Subject",
    "Content-Type",
    "Content-Transfer-Encoding",
    "Content-Disposition",
    "MIME-Version",
    "X-Document-Class",
    "Received",
    "Return-Path",
    "DKIM-Signature",
    "Authentication-Results",
    "X-Congvu-Decision",
    "Auto-Submitted",
    "Precedence",
    "List-Id",
    "Message-ID",
    "X-Mailer",
    "Thread-Topic",
)
_DOCUMENT_CLASSES = ("ban-do", "an-pham", "quy-hoach", "ban-ve-thiet-ke", "BAN-DO", "khac", "")
_FUZZ_MARK = b"X-Fuzz-Downstream: "  # dialogue messages ask the downstream to misbehave


def _signed_pdf() -> bytes:
    return zlib.decompress(base64.b64decode("".join(_SIGNED_PDF_Z)))


def _cms_of(pdf: bytes) -> tuple[bytes, bytes]:
    """The CMS SignedData in ``pdf``'s last signature, and the bytes it signs (its ranges)."""
    start = pdf.rindex(b"/Contents <") + len(b"/Contents <")
    end = pdf.index(b">", start)
    der = binascii.unhexlify(pdf[start:end])
    size = der[1]  # the DER length of the outer SEQUENCE: short or long form
    if size & 0x80:
        width = size & 0x7F
        size = 2 + width + int.from_bytes(der[2 : 2 + width], "big")
    else:
        size += 2
    cms = der[:size]
    ranges = re.findall(rb"/ByteRange \[\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*\]", pdf)
    a, b, c, d = (int(x) for x in ranges[-1])
    return cms, pdf[a : a + b] + pdf[c : c + d]


def _plain_pdf(text: str) -> bytes:
    """A minimal one-page PDF, built by hand (so the bytes are always the same)."""
    content = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode("latin-1", "replace")
    bodies = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content),
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(bodies, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(bodies) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(bodies) + 1,
        xref,
    )
    return bytes(out)


@dataclass(frozen=True)
class _Corpus:
    signed_pdf: bytes
    cms: bytes
    cms_content: bytes
    plain_pdf: bytes


_CORPUS: _Corpus | None = None


def _corpus() -> _Corpus:
    global _CORPUS  # noqa: PLW0603 - built once per process, read-only afterwards
    if _CORPUS is None:
        signed = _signed_pdf()
        cms, content = _cms_of(signed)
        _CORPUS = _Corpus(signed, cms, content, _plain_pdf("Cong van so 45/UBND-VP"))
    return _CORPUS


# -- message generation --------------------------------------------------------------------------


@dataclass(frozen=True)
class FuzzMessage:
    """One generated message with its envelope."""

    raw: bytes
    mail_from: str
    recipients: tuple[str, ...]
    client_ip: str
    helo: str
    tls: bool


def _chance(rng: random.Random, p: float) -> bool:
    return rng.random() < p


def _pick(rng: random.Random, items: Sequence[T]) -> T:
    return items[rng.randrange(len(items))]


def _garbage(rng: random.Random, n: int) -> bytes:
    return bytes(rng.randrange(256) for _ in range(n))


def _printable(rng: random.Random, n: int) -> str:
    return "".join(chr(rng.randrange(0x21, 0x7F)) for _ in range(n))


def _text(rng: random.Random, lines: int) -> str:
    out = [_pick(rng, _BODY_LINES) for _ in range(lines)]
    if _chance(rng, 0.1):
        out.insert(rng.randrange(len(out) + 1), _printable(rng, rng.randrange(1, 200)))
    return "\r\n".join(out) + "\r\n"


def _encoded_word(rng: random.Random, text: str) -> str:
    charset = _pick(rng, ("utf-8", "UTF-8", "iso-8859-1", "windows-1258", "x-unknown", "utf-7"))
    data = text.encode("utf-8")
    kind = rng.random()
    if kind < 0.5:
        payload, enc = base64.b64encode(data).decode(), _pick(rng, ("B", "b"))
    elif kind < 0.85:
        payload = quopri.encodestring(data, header=True).decode().replace("\n", "")
        enc = _pick(rng, ("Q", "q"))
    else:
        payload, enc = _printable(rng, rng.randrange(1, 30)).replace("?=", ""), _pick(rng, "BQX")
    if _chance(rng, 0.1):  # corrupt the payload
        cut = rng.randrange(len(payload) + 1)
        payload = payload[:cut] + _pick(rng, ("=", "?", "*", "\t", "==", "=?")) + payload[cut:]
    word = f"=?{charset}?{enc}?{payload}?="
    if _chance(rng, 0.05):
        word = word[: rng.randrange(len(word))]  # unterminated
    if _chance(rng, 0.05):
        word = f"=?{charset}*vi?{enc}?{payload}?="  # RFC 2231 language tag
    return word


def _maybe_encoded(rng: random.Random, text: str) -> str:
    if text and _chance(rng, 0.35):
        if _chance(rng, 0.5):
            return _encoded_word(rng, text)
        mid = rng.randrange(len(text) + 1)
        return f"{_encoded_word(rng, text[:mid])} {_encoded_word(rng, text[mid:])}"
    return text


def _mailbox_address(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.4:
        return _pick(rng, _OFFICIAL)
    if roll < 0.65:
        return _pick(rng, _PERSONAL)
    if roll < 0.75:
        return _pick(rng, _OTHER)
    if roll < 0.8:
        return f"{_printable(rng, rng.randrange(1, 20))}@{_printable(rng, rng.randrange(1, 20))}"
    weird = (
        "x@gmail.com@lamdong.gov.vn",
        "a@b@c",
        '"vanthu@lamdong.gov.vn"@gmail.com',
        "a..b@lamdong.gov.vn",
        "a@lamdong.gov.vn.",
        "a@[127.0.0.1]",
        "a@[IPv6:::1]",
        "@lamdong.gov.vn",
        "a@",
        "a",
        "người.dùng@lamdong.gov.vn",
        "a@gov.vn\x00.gmail.com",
        "a" * 300 + "@lamdong.gov.vn",
        "a@" + "b." * 150 + "gov.vn",
        "a@-lamdong.gov.vn",
        "a@xn--.gov.vn",
        "a@xn--zz-9zz.gov.vn",
    )
    return _pick(rng, weird)


def _address_field(rng: random.Random, address: str) -> str:
    """An address header value around ``address``: display names, comments, groups, tricks."""
    name = _maybe_encoded(rng, _pick(rng, _NAMES))
    roll = rng.random()
    if roll < 0.3:
        value = f"{name} <{address}>" if name else f"<{address}>"
    elif roll < 0.45:
        value = f'"{name}" <{address}>'
    elif roll < 0.55:
        value = address
    elif roll < 0.6:
        value = f"{address} ({name})"
    elif roll < 0.65:
        value = f"{name} <{address}>, {_mailbox_address(rng)}"
    elif roll < 0.7:
        value = f"Nhóm: {address}, {_mailbox_address(rng)};"
    elif roll < 0.75:
        value = f"<{_mailbox_address(rng)}> <{address}>"
    elif roll < 0.8:
        value = f"{address} (comment (nested) ) <{_mailbox_address(rng)}>"
    elif roll < 0.85:
        value = f"<@relay.example:{address}>"
    elif roll < 0.9:
        value = _pick(
            rng,
            (
                "",
                "<>",
                "undisclosed-recipients:;",
                '"unterminated <a@b>',
                "<a@b",
                "a@b>",
                "(((",
                "\\",
                ",,,",
            ),
        )
    else:
        value = f"{_encoded_word(rng, address)} <{_mailbox_address(rng)}>"
    return value


def _fold(rng: random.Random, value: bytes) -> bytes:
    """Fold ``value`` at random places (sometimes where it should not be folded)."""
    if not value or not _chance(rng, 0.3):
        return value
    out = bytearray()
    for i, byte in enumerate(value):
        if byte == 0x20 and _chance(rng, 0.3):
            out += _pick(rng, (b"\r\n ", b"\r\n\t", b"\r\n  ", b"\r\n \r\n "))
            continue
        if i and _chance(rng, 0.005):
            out += _pick(rng, (b"\r\n ", b"\r\n", b"\n\t", b"\r \t"))
        out.append(byte)
    return bytes(out)


def _params(rng: random.Random, params: list[tuple[str, str]]) -> str:
    """A parameter list: quoting, RFC 2231 forms, duplicates, junk, sometimes thousands."""
    if _chance(rng, 0.03):
        params = params + [
            (f"p{i}", _printable(rng, rng.randrange(0, 12)).replace(";", ""))
            for i in range(rng.randrange(100, 3000))
        ]
    if _chance(rng, 0.05) and params:
        params = [*params, params[0]]  # the same parameter twice
    out = []
    for name, value in params:
        roll = rng.random()
        if roll < 0.55:
            out.append(f'{name}="{value}"')
        elif roll < 0.75:
            out.append(f"{name}={value}")
        elif roll < 0.83:
            charset = _pick(rng, ("utf-8", "UTF-8", "iso-8859-1", "bogus", ""))
            quoted = "".join(
                c if c.isalnum() and c.isascii() else "".join(f"%{b:02X}" for b in c.encode())
                for c in value
            )
            out.append(f"{name}*={charset}'vi'{quoted}")
        elif roll < 0.9:
            n = rng.randrange(1, 5)
            step = max(1, len(value) // n)
            chunks = [value[i : i + step] for i in range(0, len(value), step)] or [""]
            order = list(range(len(chunks)))
            if _chance(rng, 0.2):
                rng.shuffle(order)
            for i in order:
                star = "*" if _chance(rng, 0.5) else ""
                out.append(f'{name}*{i + (1 if _chance(rng, 0.1) else 0)}{star}="{chunks[i]}"')
        elif roll < 0.95:
            out.append(f"{name}={_maybe_encoded(rng, value)}")
        else:
            out.append(_pick(rng, (f"{name}", f'{name}="unterminated', "=", ";", f"{name}==x")))
    sep = "\r\n\t" if len(out) > 6 else " "
    return "".join(f";{sep}{p}" for p in out)


def _content_type(rng: random.Random, ctype: str, params: list[tuple[str, str]]) -> str:
    if _chance(rng, 0.05):
        ctype = _pick(rng, _MAIN_TYPES)
    if _chance(rng, 0.03):
        ctype = ctype.upper()
    return ctype + _params(rng, params)


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


def _damage(rng: random.Random, data: bytes, alphabet: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randrange(1, 6)):
        if out:
            out[rng.randrange(len(out))] = _pick(rng, alphabet)
    if _chance(rng, 0.3):
        del out[rng.randrange(len(out) + 1) :]
    return bytes(out)


def _zip(rng: random.Random, members: list[tuple[str, bytes]]) -> bytes:
    """A zip archive with fixed timestamps (so the bytes are deterministic)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=(2026, 11, 22, 10, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED if _chance(rng, 0.7) else zipfile.ZIP_STORED
            archive.writestr(info, data)
    return buffer.getvalue()


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


def _mutated_pdf(rng: random.Random, pdf: bytes) -> bytes:
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


def _attachment(rng: random.Random, depth: int) -> tuple[list[tuple[str, str]], bytes]:
    """Headers and body of an attachment."""
    corpus = _corpus()
    roll = rng.random()
    if roll < 0.12:
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
            data = build_message(rng, depth=depth + 1).raw
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


def _entity(rng: random.Random, depth: int) -> tuple[list[tuple[str, str]], bytes]:
    """A MIME entity: headers (name, value) and body bytes."""
    leafy = depth >= 3 or _chance(rng, 0.35 + 0.15 * depth)
    roll = rng.random()
    if leafy:
        if roll < 0.55:
            return _text_part(rng, html=_chance(rng, 0.2))
        return _attachment(rng, depth)
    if roll < 0.08:  # S/MIME multipart/signed: content + the CMS signature
        inner = _entity(rng, depth + 1)
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
        inner_message = build_message(rng, depth=depth + 1).raw
        return [("Content-Type", "message/rfc822")], inner_message
    subtype = _pick(
        rng, ("mixed", "mixed", "mixed", "alternative", "related", "report", "digest", "x-odd")
    )
    count = rng.randrange(0, 5)
    parts = [_entity(rng, depth + 1) for _ in range(count)]
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


def _serialize_headers(rng: random.Random, headers: list[tuple[str, str]]) -> bytes:
    out = bytearray()
    for name, value in headers:
        raw = value.encode("utf-8", "surrogateescape")
        sep = b": " if _chance(rng, 0.95) else _pick(rng, (b":", b" : ", b":\t", b"  :"))
        out += name.encode("utf-8", "surrogateescape") + sep + _fold(rng, raw) + b"\r\n"
    return bytes(out)


def _dkim_signature(rng: random.Random, domain: str) -> str:
    tags = {
        "v": "1",
        "a": _pick(rng, ("rsa-sha256", "ed25519-sha256", "rsa-sha1", "x")),
        "c": _pick(rng, ("relaxed/relaxed", "simple/simple", "relaxed", "bogus/x")),
        "d": domain,
        "s": _pick(rng, ("mail", "default", "sel2026", "key-bad", "key-temp", "key-ok", "a.b")),
        "h": _pick(rng, ("from:to:subject:date", "from", "", "from:from:from")),
        "bh": base64.b64encode(_garbage(rng, 32)).decode(),
        "b": base64.b64encode(_garbage(rng, rng.randrange(0, 256))).decode(),
    }
    if _chance(rng, 0.05):
        tags["l"] = str(rng.randrange(0, 1000))
    if _chance(rng, 0.05):
        tags["t"] = _pick(rng, ("0", "99999999999", "x"))
    for key in list(tags):
        if _chance(rng, 0.04):
            del tags[key]
    return "; ".join(f"{k}={v}" for k, v in tags.items())


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
        content_headers, body = _entity(rng, depth)
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


def _envelope_sender(rng: random.Random, sender: str) -> str:
    roll = rng.random()
    if roll < 0.7:
        return sender
    if roll < 0.8:
        return ""  # the null sender
    if roll < 0.95:
        return _mailbox_address(rng)
    return _pick(rng, ("người@lamdong.gov.vn", "<>", "a b@c", "\x00"))


def _mutate_headers(rng: random.Random, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    headers = list(headers)
    for _ in range(rng.randrange(0, 4) if _chance(rng, 0.6) else 0):
        roll = rng.random()
        if roll < 0.25 and headers:  # a duplicate field
            headers.insert(rng.randrange(len(headers) + 1), _pick(rng, headers))
        elif roll < 0.4 and headers:
            del headers[rng.randrange(len(headers))]
        elif roll < 0.6:
            name = _pick(rng, _FIELD_NAMES)
            if _chance(rng, 0.3):
                name = _pick(rng, (name.upper(), name.lower(), "From ", "Fröm", "X-\x00", "", ":"))
            value = _pick(
                rng,
                (
                    _address_field(rng, _mailbox_address(rng)),
                    _maybe_encoded(rng, _pick(rng, _SUBJECTS)),
                    _printable(rng, rng.randrange(0, 80)),
                    _garbage(rng, rng.randrange(0, 40)).decode("latin-1"),
                    "x" * rng.randrange(900, 1200),
                    " ".join(["y" * 60] * rng.randrange(10, 400)),
                ),
            )
            headers.insert(rng.randrange(len(headers) + 1), (name, value))
        elif roll < 0.7 and headers:  # a field swapped for a line that is not one
            i = rng.randrange(len(headers))
            headers[i] = (_pick(rng, ("not a header", " leading space", "\t", "X é")), "")
        elif roll < 0.8 and headers:  # 8-bit bytes in a value
            i = rng.randrange(len(headers))
            name, value = headers[i]
            headers[i] = (name, value + _garbage(rng, rng.randrange(1, 10)).decode("latin-1"))
        elif roll < 0.85:
            headers += [("X-Filler", "z" * 20)] * rng.randrange(900, 1100)
        else:
            rng.shuffle(headers)
    return headers


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


# -- the check path ------------------------------------------------------------------------------


class StubResolver:
    """DNS without a network: NXDOMAIN for most names, fixed answers for a few selectors."""

    async def txt(self, name: str) -> bytes:
        """The TXT record at ``name``; see :class:`gateway.dkim.TxtResolver`."""
        selector = name.partition(".")[0]
        if selector == "key-temp":
            raise DnsTempError(f"{name}: Timeout")
        if selector == "key-bad":
            return b"v=DKIM1; k=rsa; p=" + hashlib.sha256(name.encode()).hexdigest().encode()
        if selector == "key-ok":
            return b"v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
        raise DnsNoData(name)


_REPLY = re.compile(r"[2-5]\d\d(?:[ -][\x00-\x7f]*)?")
_REPLY_TEXT = re.compile(r"[\t\x20-\x7e]*")


def reply_problem(line: str) -> str | None:
    """Why ``line`` (without its CRLF) is not a well-formed SMTP reply line, or None.

    A failure: no 3-digit code, non-ASCII, or internals shown ("Traceback", aiosmtpd's
    "Error: (" exception text).
    """
    if "Traceback" in line or "Error: (" in line:
        return "reply shows internals"
    if not _REPLY.fullmatch(line):
        return "malformed reply (no 3-digit code, or not ASCII)"
    return None


def reply_warning(line: str) -> str | None:
    """What is odd but not counted as a failure: control characters in the text (echoed from
    the client's command), or more than RFC 5321's 512 octets."""
    if not _REPLY_TEXT.fullmatch(line):
        return "control characters in a reply line"
    if len(line) > 510:
        return "reply longer than 512 octets"
    return None


_FRAME = re.compile(r'\s*File "([^"]+)", line (\d+), in (\S+)')


def _trace_key(tb: str) -> str:
    """A short, stable name for a traceback: the exception, the innermost frame of this
    project (gateway/, policies/) and the innermost frame of all."""
    lines = [line for line in tb.strip().splitlines() if line.strip()]
    frames = [m.groups() for m in map(_FRAME.match, lines) if m]
    ours = [f for f in frames if re.search(r"[/\\](gateway|policies)[/\\]", f[0])]
    where = []
    for frame in ([ours[-1]] if ours else []) + ([frames[-1]] if frames else []):
        text = f"{Path(frame[0]).name}:{frame[1]} {frame[2]}"
        if text not in where:
            where.append(text)
    last = lines[-1].split(":", 1)[0][:80] if lines else "?"
    return f"{last} at {' < '.join(reversed(where))}" if where else last


@dataclass
class MessageReport:
    """What a run of messages found."""

    messages: int = 0
    verdicts: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)  # kind -> count
    examples: dict[str, list[int]] = field(default_factory=dict)  # kind -> first indexes
    details: dict[str, str] = field(default_factory=dict)  # kind -> one full traceback
    slow: list[tuple[float, int]] = field(default_factory=list)  # (ms, index), slowest first
    warnings: Counter[str] = field(default_factory=Counter)  # caught by serve: not failures
    failed_messages: int = 0
    seconds: float = 0.0

    def fail(self, kind: str, index: int, detail: str = "", *, warning: bool = False) -> None:
        (self.warnings if warning else self.failures)[kind] += 1
        seen = self.examples.setdefault(kind, [])
        if len(seen) < 5:
            seen.append(index)
        self.details.setdefault(kind, detail)

    def merge(self, other: MessageReport) -> None:
        self.messages += other.messages
        self.verdicts.update(other.verdicts)
        self.reasons.update(other.reasons)
        self.failures.update(other.failures)
        self.warnings.update(other.warnings)
        self.failed_messages += other.failed_messages
        for kind, indexes in other.examples.items():
            self.examples[kind] = sorted(self.examples.get(kind, []) + indexes)[:5]
        for kind, detail in other.details.items():
            self.details.setdefault(kind, detail)
        self.slow = sorted(self.slow + other.slow, reverse=True)[:10]

    @property
    def exceptions(self) -> int:
        return sum(self.failures.values())


def fuzz_config(**overrides: Any) -> GatewayConfig:
    """The configuration fuzzed: the golden cases' (tests/data/gateway.toml), no listeners."""
    values: dict[str, Any] = {
        "source": "<fuzz>",
        "hostname": HOSTNAME,
        "local_domains": LOCAL_DOMAINS,
        "trusted_networks": (ipaddress.ip_network("127.0.0.0/8"),),
        "metrics_listen": "",
        "validation_workers": 2,
    }
    values.update(overrides)
    return GatewayConfig(**values)


class CheckRunner:
    """``congvu check``'s path, message after message, in one event loop."""

    def __init__(self, config: GatewayConfig | None = None, policy: Policy | None = None) -> None:
        self.config = config or fuzz_config()
        self.policy = policy or load_policy()
        self.validator = make_validator(self.config, self.policy, processes=False)
        self.engine = Engine(
            self.config, self.policy, validator=self.validator, resolver=StubResolver()
        )
        self.loop = asyncio.new_event_loop()

    def close(self) -> None:
        self.validator.close()
        self.loop.close()

    def run(self, message: FuzzMessage, index: int, report: MessageReport) -> None:
        started = time.perf_counter()
        before = report.exceptions
        try:
            self.loop.run_until_complete(self.check(message, index, report))
        except Exception:  # noqa: BLE001 - what the fuzz looks for
            report.fail("runner raised: " + _trace_key(traceback.format_exc()), index)
        elapsed = (time.perf_counter() - started) * 1000
        report.messages += 1
        report.failed_messages += report.exceptions > before
        if elapsed > SLOW_MS:
            report.slow = sorted([*report.slow, (elapsed, index)], reverse=True)[:10]

    async def check(self, msg: FuzzMessage, index: int, report: MessageReport) -> None:
        """Judge ``msg`` as ``congvu check`` does, then as ``serve`` continues; record problems."""
        engine, ref = self.engine, f"FUZZ{index}"

        def bad_reply(line: str, stage: str) -> None:
            problem = reply_problem(line)
            if problem:
                report.fail(f"{stage}: {problem}", index, line)

        mail_from, rcpts = msg.mail_from, msg.recipients
        smtputf8 = not (mail_from + "".join(rcpts)).isascii()
        refused = engine.sender_refusal(mail_from, smtputf8=smtputf8)
        outcomes: list[RecipientOutcome] = []
        for rcpt in [] if refused else rcpts:
            code = engine.recipient_refusal(rcpt, msg.client_ip, smtputf8=smtputf8)
            reply = engine.reply(code, ref=ref) if code else "250 2.1.5 Recipient ok"
            bad_reply(reply, "RCPT reply")
            outcomes.append(RecipientOutcome(rcpt, code is None, reply, code))
            refused = refused or code
        accepted = tuple(o.address for o in outcomes if o.accepted)
        if not accepted:
            report.verdicts["reject (envelope)"] += 1
            report.reasons[refused or "relay.denied"] += 1
            bad_reply(engine.reply(refused or "relay.denied", ref=ref), "envelope reply")
            return
        if code := engine.data_refusal(msg.raw):
            report.verdicts["reject (size/line)"] += 1
            report.reasons[code] += 1
            bad_reply(engine.reply(code, ref=ref), "data reply")
            return
        try:
            judgement = await engine.judge(
                msg.raw,
                mail_from=mail_from,
                recipients=accepted,
                client_ip=msg.client_ip,
                helo=msg.helo,
                tls=msg.tls,
                now=NOW,
            )
        except Exception:  # noqa: BLE001 - judge must never raise
            tb = traceback.format_exc()
            report.fail("judge raised: " + _trace_key(tb), index, tb)
            return
        decision = judgement.decision
        for error in decision.errors:
            report.fail("decision.errors: " + _trace_key(error), index, error)
        verdict = decision.action.value
        report.verdicts[verdict] += 1
        report.reasons.update(decision.reasons or ["-"])
        line = decision.reply.line(ref=ref) if decision.reply else accept_reply(ref)
        bad_reply(line, "final reply")
        expected = {"accept": "2", "reject": "5", "tempfail": "4"}[verdict]
        if line[:1] != expected:
            report.fail(f"{verdict} answered {line[:3]}", index, line)
        await self._serve_side(
            msg=msg, index=index, report=report, judgement=judgement, outcomes=outcomes, line=line
        )

    async def _serve_side(
        self,
        *,
        msg: FuzzMessage,
        index: int,
        report: MessageReport,
        judgement: Any,
        outcomes: list[RecipientOutcome],
        line: str,
    ) -> None:
        """What ``serve`` does after judging: record, trace headers, notice."""
        decision, facts, parsed = judgement.decision, judgement.facts, judgement.parsed
        ref = f"FUZZ{index}"
        try:
            record = build_record(
                decision_id=ref,
                when=NOW,
                client_ip=msg.client_ip,
                helo=msg.helo,
                tls=msg.tls,
                mail_from=msg.mail_from,
                recipients=outcomes,
                judgement=judgement,
                verdict=decision.action.value,
                reasons=list(decision.reasons),
                reply=line,
                policy=self.policy,
                processing_ms=judgement.elapsed_ms,
            )
            text = json.dumps(clean_text(record.to_dict()), ensure_ascii=False, sort_keys=True)
            text.encode("utf-8")
            # What the store keeps must read back, and serialize to the same text (the hash).
            if Record.from_dict(json.loads(text)).to_json() != text:
                report.fail("record: not read back as written", index, text[:2000])
        except Exception:  # noqa: BLE001
            tb = traceback.format_exc()
            report.fail("record: " + _trace_key(tb), index, tb)
        if facts is None or parsed is None:
            return
        if decision.action is Action.ACCEPT:
            try:
                head = trace_headers(
                    hostname=HOSTNAME,
                    decision_id=ref,
                    helo=msg.helo,
                    client_ip=msg.client_ip,
                    tls=msg.tls,
                    esmtp=True,
                    recipients=tuple(o.address for o in outcomes if o.accepted),
                    result="neutral" if decision.monitor_reasons else "pass",
                    reason=" ".join(decision.monitor_reasons),
                    when_utc=NOW,
                    methods=auth_methods(facts),
                )
                relayed = head + strip_our_headers(parsed, HOSTNAME)
                ours = parse_message(normalize_line_endings(head + b"\r\n")).headers
                if len(ours) != 2 or parse_message(head + b"\r\n").defects:
                    report.fail("trace headers: not exactly our two fields", index, repr(head))
                if b"congvu=pass" in strip_our_headers(
                    parse_message(relayed[len(head) :]), HOSTNAME
                ):
                    pass  # a forged verdict under another id may stay; ours is checked above
            except Exception:  # noqa: BLE001
                tb = traceback.format_exc()
                report.fail("trace headers: " + _trace_key(tb), index, tb)
        try:
            kind, _ = notice_kind(facts, decision, self.policy)
            if kind:
                content = render_notice(
                    facts,
                    decision,
                    self.policy,
                    kind=kind,
                    decision_id=ref,
                    date=parsed.first("Date"),
                )
                build_notice(
                    kind=kind,
                    content=content,
                    facts=facts,
                    parsed=parsed,
                    reply=line,
                    decision_id=ref,
                    hostname=HOSTNAME,
                    from_address=self.policy.notices.from_address or f"MAILER-DAEMON@{HOSTNAME}",
                    when=NOW,
                )
        except Exception:  # noqa: BLE001 - serve's Notifier catches it: the notice is not sent
            tb = traceback.format_exc()
            report.fail("notice not sent: " + _trace_key(tb), index, tb, warning=True)


_RUNNER: CheckRunner | None = None


def _worker_init() -> None:
    global _RUNNER  # noqa: PLW0603 - one runner per worker process
    logging.disable(logging.CRITICAL)  # pyHanko and friends log every broken file
    _RUNNER = CheckRunner()


def _worker_chunk(job: tuple[int, int, int]) -> MessageReport:
    seed, start, stop = job
    assert _RUNNER is not None
    report = MessageReport()
    began = time.perf_counter()
    for index in range(start, stop):
        _RUNNER.run(generate_message(seed, index), index, report)
    report.seconds = time.perf_counter() - began
    return report


def run_messages(
    count: int,
    seed: int,
    *,
    workers: int = 1,
    start: int = 0,
    chunk: int = 200,
    progress: Callable[[int, int], None] | None = None,
) -> MessageReport:
    """Generate and check messages ``start`` .. ``start + count - 1`` of run ``seed``."""
    total = MessageReport()
    began = time.perf_counter()
    jobs = [(seed, i, min(i + chunk, start + count)) for i in range(start, start + count, chunk)]
    if workers <= 1:
        global _RUNNER  # noqa: PLW0603
        previous = _RUNNER
        _RUNNER = CheckRunner()
        try:
            for job in jobs:
                total.merge(_worker_chunk(job))
                if progress:
                    progress(total.messages, count)
        finally:
            _RUNNER.close()
            _RUNNER = previous
    else:
        context = multiprocessing.get_context("spawn")
        with context.Pool(workers, initializer=_worker_init) as pool:
            for part in pool.imap_unordered(_worker_chunk, jobs):
                total.merge(part)
                if progress:
                    progress(total.messages, count)
    total.seconds = time.perf_counter() - began
    return total


# -- SMTP dialogues ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Send:
    """Command lines sent together (pipelined), each ending in LF; one reply each."""

    lines: tuple[bytes, ...]
    fragmented: bool = False  # written a few bytes at a time
    tls: str = "handshake"  # after a 220 to STARTTLS: handshake, garbage, plaintext or close


@dataclass(frozen=True)
class Body:
    """The message after a 354 (ending in CRLF.CRLF); ``then``: wait, vanish or cut."""

    data: bytes
    then: str = "wait"


@dataclass(frozen=True)
class Hangup:
    """Send ``partial`` (no line end) and close the connection."""

    partial: bytes = b""
    abort: bool = False


Step = Send | Body | Hangup


@dataclass(frozen=True)
class Dialogue:
    """One SMTP session: which gateway (0 plain, 1 TLS/XFORWARD), and the steps."""

    gateway: int
    steps: tuple[Step, ...]


_ENDS_GROUP = {b"DATA", b"STARTTLS", b"QUIT", b"BDAT"}


def _token(line: bytes) -> bytes:
    """The command aiosmtpd will see in ``line``."""
    return line.rstrip(b"\r\n").partition(b" ")[0].upper()


def _line_end(rng: random.Random) -> bytes:
    roll = rng.random()
    if roll < 0.85:
        return b"\r\n"
    return _pick(rng, (b"\n", b"\r\r\n", b" \r\n", b"\x00\r\n", b"\t\n"))


def _smtp_address(rng: random.Random, local: bool) -> str:
    if local:
        roll = rng.random()
        if roll < 0.75:
            return _pick(rng, _LOCAL_RCPTS)
        if roll < 0.85:
            return _pick(rng, ("refuse5", "refuse4")) + "@lamdong.gov.vn"
        if roll < 0.93:
            return _pick(rng, _EXTERNAL_RCPTS)
        return _pick(rng, ("postmaster", "người@lamdong.gov.vn", "a@b@c", ""))
    return _mailbox_address(rng) if _chance(rng, 0.9) else ""


def _mail_params(rng: random.Random) -> str:
    params = []
    for _ in range(rng.randrange(0, 4) if _chance(rng, 0.4) else 0):
        params.append(
            _pick(
                rng,
                (
                    f"SIZE={rng.randrange(0, 10**6)}",
                    "SIZE=99999999999999",
                    "SIZE=-1",
                    "SIZE=abc",
                    "SIZE=",
                    "BODY=8BITMIME",
                    "BODY=BINARYMIME",
                    "BODY=x",
                    "SMTPUTF8",
                    "SMTPUTF8=1",
                    "RET=FULL",
                    "ENVID=x+2Bz",
                    "AUTH=<>",
                    "NOTIFY=SUCCESS,FAILURE",
                    "ORCPT=rfc822;a@b",
                    "X=Y",
                    "=",
                    "==",
                    "\x00",
                ),
            )
        )
    return "".join(" " + p for p in params)


def _command(rng: random.Random, gateway: int) -> bytes:
    """One command line (without its line end)."""
    roll = rng.random()
    host = _pick(rng, ("client.example", "[127.0.0.1]", "[IPv6:::1]", "", "ểê", "x" * 300, "a b"))
    if roll < 0.12:
        verb = _pick(rng, ("EHLO", "HELO", "ehlo", "Helo", "EHLO  "))
        text = f"{verb} {host}".rstrip() if _chance(rng, 0.95) else verb
    elif roll < 0.3:
        address = _smtp_address(rng, local=False)
        form = rng.random()
        if form < 0.85:
            text = f"MAIL FROM:<{address}>{_mail_params(rng)}"
        else:
            text = _pick(
                rng,
                (
                    f"MAIL FROM: <{address}>",
                    f"MAIL FROM:{address}",
                    f"MAIL FROM:<{address}",
                    f"MAIL TO:<{address}>",
                    "MAIL",
                    f"MAIL FROM:<<{address}>>",
                    f"MAIL FROM:<{address}> <x@y>",
                    "MAIL FROM:<>",
                    "mail from:<>",
                ),
            )
    elif roll < 0.5:
        address = _smtp_address(rng, local=True)
        form = rng.random()
        if form < 0.85:
            text = f"RCPT TO:<{address}>{_mail_params(rng) if _chance(rng, 0.2) else ''}"
        else:
            text = _pick(
                rng,
                (
                    f"RCPT TO: <{address}>",
                    f"RCPT TO:{address}",
                    "RCPT TO:<>",
                    "RCPT",
                    f"RCPT FROM:<{address}>",
                    f"RCPT TO:<@a.example,@b.example:{address}>",
                    "RCPT TO:<postmaster>",
                ),
            )
    elif roll < 0.6:
        text = _pick(rng, ("DATA", "DATA", "DATA", "data", "DATA x", "BDAT 100 LAST"))
    elif roll < 0.67:
        text = _pick(rng, ("RSET", "RSET", "RSET x", "NOOP", "NOOP x", "NOOP " + "y" * 100))
    elif roll < 0.72:
        text = _pick(rng, ("STARTTLS", "STARTTLS", "STARTTLS x", "starttls"))
    elif roll < 0.78:
        attrs = [
            _pick(
                rng,
                (
                    "ADDR=203.0.113.9",
                    "ADDR=10.9.8.7",
                    "ADDR=IPv6:2001:db8::1",
                    "ADDR=[UNAVAILABLE]",
                    "ADDR=not-an-ip",
                    "NAME=mx.example",
                    "HELO=client+2Eexample",
                    "PROTO=ESMTP",
                    "PORT=25",
                    "SOURCE=REMOTE",
                    "IDENT=x",
                    "BOGUS=1",
                    "ADDR",
                    "=x",
                    "HELO=%00+00+0D+0A",
                ),
            )
            for _ in range(rng.randrange(0, 4))
        ]
        text = "XFORWARD " + " ".join(attrs) if attrs else "XFORWARD"
    elif roll < 0.83:
        text = _pick(
            rng,
            (
                "VRFY postmaster",
                "EXPN staff",
                "HELP",
                "HELP DATA",
                "AUTH PLAIN AGFAYg==",
                "AUTH LOGIN",
                "ETRN lamdong.gov.vn",
                "TURN",
                "QUIT",
                "GET / HTTP/1.1",
                "Host: gw.lamdong.gov.vn",
                "PROXY TCP4 1.2.3.4 5.6.7.8 1 2",
                "\x16\x03\x01\x00\x05",
            ),
        )
    elif roll < 0.9:
        text = _printable(rng, rng.randrange(0, 40))
    elif roll < 0.94:
        return _garbage(rng, rng.randrange(0, 60)).replace(b"\n", b"")
    elif roll < 0.97:
        return _pick(rng, (b"NOOP ", b"MAIL FROM:<", b"X", b"RCPT TO:<")) + b"a" * _pick(
            rng, (520, 1000, 1001, 1500, 70000)
        )
    else:
        text = _pick(rng, ("", " ", "\t", "\x00", "NO\x00OP", "NOOP\rRSET", "\x1b[31mRSET"))
    return text.encode("utf-8", "surrogateescape")


def _clean_message(rng: random.Random, sender: str, rcpt: str) -> bytes:
    """A well-formed official message (text, maybe a signed PDF): what most days bring."""
    head = (
        f"From: {_pick(rng, _NAMES[:6])} <{sender}>\r\nTo: <{rcpt}>\r\n"
        f"Subject: {_maybe_encoded(rng, _pick(rng, _SUBJECTS))}\r\n"
        "Date: Sun, 22 Nov 2026 10:00:00 +0700\r\n"
        f"Message-ID: <{rng.randrange(10**12)}@fuzz.test>\r\nMIME-Version: 1.0\r\n"
    )
    if _chance(rng, 0.15):
        head += f"X-Fuzz-Downstream: {_pick(rng, ('drop', 'reject', 'defer', 'slow'))}\r\n"
    text = _text(rng, rng.randrange(1, 6)).encode()
    if _chance(rng, 0.6):
        return (
            head + "Content-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n\r\n"
        ).encode() + text
    pdf = _corpus().signed_pdf if _chance(rng, 0.7) else _corpus().plain_pdf
    return (
        head.encode()
        + b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n--b1\r\n'
        + b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        + text
        + b'--b1\r\nContent-Type: application/pdf; name="cv.pdf"\r\n'
        + b"Content-Transfer-Encoding: base64\r\n"
        + b'Content-Disposition: attachment; filename="cv.pdf"\r\n\r\n'
        + base64.encodebytes(pdf).replace(b"\n", b"\r\n")
        + b"--b1--\r\n"
    )


def _data_body(rng: random.Random, raw: bytes | None = None) -> bytes:
    """A (hostile) message made SMTP data: dot-stuffed (mostly), CRLF.CRLF only at the end."""
    if raw is None:
        raw = build_message(rng, dialogue=True).raw
    if _chance(rng, 0.9):
        raw = re.sub(rb"(?m)^\.", b"..", raw)  # dot-stuffing (lines split on LF)
    else:
        raw = re.sub(rb"(?<=\r\n)\.(?=\r\n)", b"..", raw)  # only what would end the data
    while raw.startswith(b".\r\n") or b"\r\n.\r\n" in raw:
        raw = raw.replace(b"\r\n.\r\n", b"\r\n..\r\n")
        if raw.startswith(b".\r\n"):
            raw = b"." + raw
    if not raw.endswith(b"\r\n"):
        raw += b"\r\n"
    return raw + b".\r\n"


def _polite(rng: random.Random, gateway: int) -> list[Step]:
    """A normal client's session (with a hostile message, now and then a wrong step)."""
    steps: list[Step] = []
    hello = _pick(rng, (b"EHLO client.example\r\n", b"HELO client.example\r\n"))
    lines = [hello]
    if gateway == 1 and _chance(rng, 0.4):
        lines.append(
            _pick(
                rng,
                (b"XFORWARD ADDR=10.1.2.3 NAME=mx.lamdong.gov.vn", b"XFORWARD ADDR=203.0.113.5"),
            )
            + b"\r\n"
        )
    if gateway == 1 and _chance(rng, 0.3):
        steps.append(Send(tuple(lines)))
        lines = [b"STARTTLS\r\n"]
        steps.append(Send(tuple(lines)))
        lines = [hello]
    for _ in range(rng.randrange(1, 3)):
        clean = _chance(rng, 0.5)
        sender = _pick(rng, _OFFICIAL[:5] if clean else (*_OFFICIAL[:5], *_PERSONAL[:3], ""))
        params = _mail_params(rng) if _chance(rng, 0.3) else ""
        lines.append(f"MAIL FROM:<{sender}>{params}\r\n".encode())
        rcpts = [_smtp_address(rng, local=True) for _ in range(rng.randrange(1, 4))]
        if clean:
            rcpts[0] = _pick(rng, _LOCAL_RCPTS)
        lines += [f"RCPT TO:<{rcpt}>\r\n".encode() for rcpt in rcpts]
        lines.append(b"DATA\r\n")
        if _chance(rng, 0.5):  # pipelined
            steps.append(Send(tuple(lines)))
        else:
            steps += [Send((line,)) for line in lines]
        lines = []
        then = "wait" if _chance(rng, 0.9) else _pick(rng, ("vanish", "cut"))
        raw = _clean_message(rng, sender, rcpts[0]) if clean else None
        steps.append(Body(_data_body(rng, raw), then))
        if then != "wait":
            return steps
    steps.append(Send((b"QUIT\r\n",)) if _chance(rng, 0.8) else Hangup())
    return steps


def _hostile(rng: random.Random, gateway: int) -> list[Step]:
    lines = [_command(rng, gateway) + _line_end(rng) for _ in range(rng.randrange(1, 30))]
    if _chance(rng, 0.7):
        lines.insert(0, b"EHLO fuzz.example\r\n")
    steps: list[Step] = []
    group: list[bytes] = []
    for line in lines:
        group.append(line)
        ends = _token(line) in _ENDS_GROUP
        if ends or _chance(rng, 0.5):
            tls = _pick(rng, ("handshake", "handshake", "garbage", "plaintext", "close"))
            steps.append(Send(tuple(group), fragmented=_chance(rng, 0.1), tls=tls))
            group = []
        if _token(line) == b"DATA":
            then = _pick(rng, ("wait",) * 8 + ("vanish", "cut"))
            steps.append(Body(_data_body(rng), then))
        if _token(line) == b"QUIT":
            return steps
        if _chance(rng, 0.02):
            steps.append(Hangup(_pick(rng, (b"", b"MAIL FROM:<a@b", b"\x00")), _chance(rng, 0.3)))
            return steps
    if group:
        steps.append(Send(tuple(group)))
    steps.append(Send((b"QUIT\r\n",)) if _chance(rng, 0.7) else Hangup())
    return steps


def dialogue_rng(seed: int, index: int) -> random.Random:
    """The generator of dialogue ``index`` for ``seed``."""
    return random.Random(f"congvu-fuzz-dialogue:{seed}:{index}")


def generate_dialogue(seed: int, index: int) -> Dialogue:
    """Dialogue ``index`` of run ``seed``: the same steps in every run."""
    rng = dialogue_rng(seed, index)
    gateway = rng.randrange(2)
    steps = _polite(rng, gateway) if _chance(rng, 0.4) else _hostile(rng, gateway)
    return Dialogue(gateway, tuple(steps))


@dataclass
class DialogueReport:
    """What a run of dialogues found."""

    dialogues: int = 0
    commands: int = 0
    replies: int = 0
    data_replies: Counter[str] = field(default_factory=Counter)  # end-of-data reply codes
    endings: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[int]] = field(default_factory=dict)
    details: dict[str, str] = field(default_factory=dict)
    log_events: Counter[str] = field(default_factory=Counter)
    warnings: Counter[str] = field(default_factory=Counter)  # not failures; see reply_warning
    warning_examples: dict[str, list[int]] = field(default_factory=dict)
    warning_details: dict[str, str] = field(default_factory=dict)
    delivered: int = 0
    notices: int = 0
    seconds: float = 0.0

    def fail(self, kind: str, index: int, detail: str = "") -> None:
        self.failures[kind] += 1
        seen = self.examples.setdefault(kind, [])
        if len(seen) < 5 and index not in seen:
            seen.append(index)
        self.details.setdefault(kind, detail)

    def warn(self, kind: str, index: int, detail: str = "") -> None:
        self.warnings[kind] += 1
        seen = self.warning_examples.setdefault(kind, [])
        if len(seen) < 5 and index not in seen:
            seen.append(index)
        self.warning_details.setdefault(kind, detail)

    @property
    def exceptions(self) -> int:
        return sum(self.failures.values())


class FuzzDownstream:
    """aiosmtpd handler of the downstream: records, or misbehaves when the message asks."""

    def __init__(self) -> None:
        self.delivered: list[bytes] = []

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        local = address.partition("@")[0].lower()
        if local == "refuse5":
            return "550 5.1.1 <refuse5@lamdong.gov.vn>: Recipient address rejected"
        if local == "refuse4":
            return "450 4.2.1 Mailbox busy"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        data: bytes = envelope.original_content
        if _FUZZ_MARK + b"drop" in data:
            server.transport.close()
            return "421 4.3.0 gone"
        if _FUZZ_MARK + b"reject" in data:
            return "554 5.7.1 Downstream refuses"
        if _FUZZ_MARK + b"defer" in data:
            return "451 4.3.0 Downstream busy"
        if _FUZZ_MARK + b"slow" in data:
            await asyncio.sleep(0.2)
        self.delivered.append(data)
        return "250 2.0.0 Ok: queued"


def _self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOSTNAME)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=2))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "tls.crt", folder / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


_WATCHED_EVENTS = {
    "smtp.exception",
    "check.exception",
    "store.failed",
    "store.accepted_unrecorded",
    "notice.failed",
}


@contextlib.contextmanager
def _collect_logs() -> Iterator[list[dict[str, Any]]]:
    """Every structlog event at warning and above, and aiosmtpd's errors, kept in a list."""
    events: list[dict[str, Any]] = []

    def keep(logger: Any, method: str, event: Any) -> Any:
        if method in ("warning", "warn", "error", "exception", "critical", "fatal"):
            events.append(dict(event))
        raise structlog.DropEvent

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + "".join(traceback.format_exception(*record.exc_info))
            events.append({"event": f"{record.name}.{record.levelname.lower()}", "text": text})

    old = structlog.get_config()
    structlog.configure(
        processors=[structlog.processors.format_exc_info, keep],
        cache_logger_on_first_use=False,
    )
    mail_log = logging.getLogger("mail.log")
    handler = Keep(logging.ERROR)
    saved = (mail_log.level, mail_log.propagate)
    mail_log.addHandler(handler)
    mail_log.setLevel(logging.ERROR)
    mail_log.propagate = False
    try:
        yield events
    finally:
        mail_log.removeHandler(handler)
        mail_log.setLevel(saved[0])
        mail_log.propagate = saved[1]
        structlog.configure(**old)


_ACCEPTED = re.compile(r"250 2\.0\.0 Ok: accepted as (\S+)")
_DECISION = re.compile(rb"policy\.decision=(\S+)")
_NOTICE = re.compile(rb"Message-ID: <(\S+)\.notice@")


class _Closed(Exception):
    """The connection is gone (``reset``: by a TCP reset, which loses replies in flight)."""

    def __init__(self, reset: bool = False) -> None:
        super().__init__("reset" if reset else "closed")
        self.reset = reset


class _Session:
    """A raw SMTP client: what it sent and received, and checks on every reply line."""

    def __init__(
        self,
        index: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        report: DialogueReport,
        transcript: list[str] | None,
    ) -> None:
        self.index, self.reader, self.writer = index, reader, writer
        self.report, self.transcript = report, transcript
        self.last: list[str] = []

    async def send(
        self, data: bytes, fragmented: bool = False, rng: random.Random | None = None
    ) -> None:
        if self.transcript is not None:
            self.transcript.append(f"C: {data[:300]!r}{'...' if len(data) > 300 else ''}")
        try:
            if fragmented and rng is not None:
                pos = 0
                while pos < len(data):
                    step = rng.randrange(1, 20)
                    self.writer.write(data[pos : pos + step])
                    await self.writer.drain()
                    pos += step
            else:
                self.writer.write(data)
                await self.writer.drain()
        except (ConnectionError, RuntimeError) as exc:
            raise _Closed(reset=True) from exc

    async def reply(self) -> list[str]:
        """One reply (all its lines); raise _Closed at end of file."""
        lines: list[str] = []
        while True:
            try:
                raw = await asyncio.wait_for(self.reader.readline(), REPLY_TIMEOUT)
            except TimeoutError:
                self.report.fail(f"no reply within {REPLY_TIMEOUT:g} s", self.index)
                raise _Closed from None
            except (ConnectionError, ssl.SSLError) as exc:
                raise _Closed(reset=True) from exc
            if not raw:
                raise _Closed
            if self.transcript is not None:
                self.transcript.append(f"S: {raw!r}")
            self.report.replies += 1
            if not raw.endswith(b"\r\n"):
                self.report.fail("reply line not ended by CRLF", self.index, repr(raw))
            if not raw.isascii():
                self.report.fail("reply line not ASCII", self.index, repr(raw))
            text = raw.rstrip(b"\r\n").decode("ascii", "backslashreplace")
            problem = reply_problem(text)
            if problem:
                self.report.fail(problem, self.index, repr(raw))
            warning = reply_warning(text)
            if warning:
                self.report.warn(warning, self.index, repr(raw))
            lines.append(text)
            self.last = lines
            if text[3:4] != "-":
                return lines


async def _run_dialogue(
    *,
    index: int,
    dialogue: Dialogue,
    port: int,
    report: DialogueReport,
    accepted: list[tuple[str, int]],
    rng: random.Random,
    transcript: list[str] | None = None,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**20)
    session = _Session(index, reader, writer, report, transcript)
    expecting = 1  # the greeting
    ending = "closed by client"
    try:
        await session.reply()
        expecting = 0
        last_code = ""
        for step in dialogue.steps:
            if isinstance(step, Send):
                report.commands += len(step.lines)
                await session.send(b"".join(step.lines), step.fragmented, rng)
                expecting = len(step.lines)
                for _ in step.lines:
                    last_code = (await session.reply())[-1][:3]
                    expecting -= 1
                if _token(step.lines[-1]) == b"QUIT":
                    ending = "QUIT"
                    break
                if _token(step.lines[-1]) == b"STARTTLS" and last_code == "220":
                    if step.tls == "handshake":
                        context = ssl.create_default_context()
                        context.check_hostname = False
                        context.verify_mode = ssl.CERT_NONE
                        try:
                            await asyncio.wait_for(writer.start_tls(context), REPLY_TIMEOUT)
                        except (ssl.SSLError, ConnectionError, TimeoutError) as exc:
                            report.fail("TLS handshake failed", index, repr(exc))
                            ending = "TLS failed"
                            break
                        continue
                    ending = f"TLS {step.tls}"
                    if step.tls == "garbage":
                        await session.send(b"\x16\x03\x01\x00\x10" + b"\x00" * 16 + b"\r\n")
                    elif step.tls == "plaintext":
                        await session.send(b"EHLO plain.example\r\nMAIL FROM:<a@b>\r\n")
                    if step.tls != "close":
                        with contextlib.suppress(_Closed):
                            await session.reply()
                            report.fail("plaintext reply after a failed TLS handshake", index)
                    break
            elif isinstance(step, Body):
                if last_code != "354":
                    continue  # a client does not send the message after a refused DATA
                if step.then == "cut":
                    await session.send(step.data[: len(step.data) // 2])
                    ending = "hung up mid-DATA"
                    break
                await session.send(step.data)
                if step.then == "vanish":
                    ending = "hung up awaiting the end-of-data reply"
                    break
                expecting = 1
                final = (await session.reply())[-1]
                expecting = 0
                last_code = final[:3]
                report.data_replies[last_code] += 1
                if last_code == "250":
                    m = _ACCEPTED.fullmatch(final)
                    if m is None:
                        report.fail("250 to end-of-data not from the gateway's relay", index, final)
                    else:
                        accepted.append((m.group(1), index))
            else:
                if step.partial:
                    await session.send(step.partial)
                ending = "hung up"
                if step.abort:
                    writer.transport.abort()
                break
    except _Closed as closed:
        last = session.last[-1] if session.last else ""
        ending = f"{'reset' if closed.reset else 'closed'} by gateway after {last[:3] or 'nothing'}"
        # A reset (the gateway hung up while the client was still sending) loses the replies
        # in flight; a clean close must come after a final reply saying why.
        if expecting and not closed.reset and last[:3] not in ("421", "221", "502"):
            report.fail("connection closed without a final reply", index, last)
    finally:
        report.endings[ending.split(" after ")[0]] += 1
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


class _ServerLoop:
    """An event loop in a thread for the gateways and the downstream, apart from the client's
    loop, so that what goes wrong in it is the server's."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.errors: list[dict[str, Any]] = []
        self.loop.set_exception_handler(lambda _loop, context: self.errors.append(context))
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` in the server loop; wait for it from the caller's loop."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def close(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(cancel_all(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()


@dataclass
class _Harness:
    downstream: FuzzDownstream
    gateways: list[Gateway]
    stores: list[SqliteStore]
    ports: list[int]
    servers: list[asyncio.Server]

    async def stop(self) -> None:
        for gateway in self.gateways:
            await gateway.stop(grace=2)
        for server in self.servers:
            server.close()


async def _start(folder: Path, policy: Policy) -> _Harness:
    """The downstream and the two gateways (runs in the server loop)."""
    loop = asyncio.get_running_loop()
    downstream = FuzzDownstream()
    ds_server = await loop.create_server(
        lambda: SMTP(
            downstream, hostname="downstream.fuzz", decode_data=False, enable_SMTPUTF8=True
        ),
        host="127.0.0.1",
        port=0,
    )
    ds_port = ds_server.sockets[0].getsockname()[1]
    cert, key = _self_signed(folder)
    common: dict[str, Any] = {
        "downstream": DownstreamConfig("smtp", host="127.0.0.1", port=ds_port, timeout=10),
        "trusted_networks": (),
        "max_message_size": 256 * 1024,
        "timeout": 60.0,
    }
    configs = [
        fuzz_config(store_path=folder / "plain.sqlite", **common),
        fuzz_config(
            store_path=folder / "tls.sqlite",
            **{
                **common,
                "trusted_networks": (ipaddress.ip_network("10.0.0.0/8"),),
                "xforward_hosts": (ipaddress.ip_network("127.0.0.0/8"),),
                "tls_cert": cert,
                "tls_key": key,
                "max_message_size": 1024 * 1024,
            },
        ),
    ]
    gateways, ports, stores = [], [], []
    for config in configs:
        stores.append(SqliteStore(config.store_path, instance=config.store_path.stem))
        gateway = Gateway.from_config(
            config,
            policy,
            store=stores[-1],
            resolver=StubResolver(),
            validator=make_validator(config, policy, processes=False),
        )
        ports.append(await gateway.start(port=0))
        gateways.append(gateway)
    return _Harness(downstream, gateways, stores, ports, [ds_server])


async def _drain(harness: _Harness) -> None:
    # Let the gateways finish each session (records are written after hang-ups).
    await asyncio.sleep(0.005)
    for gateway in harness.gateways:
        await gateway.handler.drain()


async def run_dialogues(
    count: int,
    seed: int,
    *,
    start: int = 0,
    transcript: list[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> DialogueReport:
    """Play dialogues ``start`` .. ``start + count - 1`` of run ``seed`` against real gateways.

    The gateways and the downstream run in an event loop of their own (a thread); the client
    runs in the caller's loop.
    """
    report = DialogueReport()
    began = time.perf_counter()
    accepted: list[tuple[str, int]] = []
    index = start
    with _collect_logs() as events, tempfile.TemporaryDirectory() as tmp:
        server = _ServerLoop()
        try:
            harness = await server.call(_start(Path(tmp), load_policy()))
            seen_events = seen_errors = 0
            try:
                for index in range(start, start + count):
                    dialogue = generate_dialogue(seed, index)
                    await _run_dialogue(
                        index=index,
                        dialogue=dialogue,
                        port=harness.ports[dialogue.gateway],
                        report=report,
                        accepted=accepted,
                        rng=dialogue_rng(seed, index + 10**9),  # write fragmentation only
                        transcript=transcript,
                    )
                    report.dialogues += 1
                    await server.call(_drain(harness))
                    seen_events = _check_events(events, seen_events, index, report)
                    seen_errors = _check_loop_errors(server.errors, seen_errors, index, report)
                    if progress and report.dialogues % 50 == 0:
                        progress(report.dialogues, count)
                _check_deliveries(harness, accepted, report)
            finally:
                await server.call(harness.stop())
        finally:
            server.close()
        _check_events(events, seen_events, index, report)
        _check_loop_errors(server.errors, seen_errors, index, report)
    report.seconds = time.perf_counter() - began
    return report


def _check_loop_errors(
    errors: list[dict[str, Any]], seen: int, index: int, report: DialogueReport
) -> int:
    for context in errors[seen:]:
        exc = context.get("exception")
        detail = "".join(traceback.format_exception(exc)) if exc else str(context)
        report.fail(f"server event loop: {context.get('message', '?')}", index, detail)
    return len(errors)


def _check_events(
    events: list[dict[str, Any]], seen: int, index: int, report: DialogueReport
) -> int:
    for event in events[seen:]:
        name = str(event.get("event", "?"))
        report.log_events[name] += 1
        if name in _WATCHED_EVENTS or name.startswith("mail.log"):
            detail = str(event.get("exception") or event.get("traceback") or event.get("text", ""))
            report.fail(f"log event {name}: {_trace_key(detail) if detail else ''}", index, detail)
    return len(events)


def _check_deliveries(
    harness: _Harness, accepted: list[tuple[str, int]], report: DialogueReport
) -> None:
    """Every 250 was delivered; every delivery was judged, accepted and recorded, once."""
    delivered: Counter[str] = Counter()
    for data in harness.downstream.delivered:
        head = data.split(b"\r\n\r\n", 1)[0]
        notice = _NOTICE.search(head)
        if notice is not None and b"Auto-Submitted: auto-replied" in head:
            report.notices += 1  # a refusal notice or advisory, about a recorded decision
            decision_id = notice.group(1).decode()
            if all(s.get(decision_id) is None for s in harness.stores):
                report.fail("notice about a decision never recorded", -1, decision_id)
            continue
        ids = _DECISION.findall(head)
        if not ids:
            report.fail("downstream got a message the gateway did not relay", -1, repr(data[:300]))
            continue
        delivered[ids[0].decode()] += 1
    report.delivered = sum(delivered.values())
    for decision_id, times in delivered.items():
        if times > 1:
            report.fail("message delivered more than once", -1, decision_id)
        records = [s.get(decision_id) for s in harness.stores]
        found = [r for r in records if r is not None]
        if not found or found[0]["verdict"] != "accept":
            verdict = found[0]["verdict"] if found else "no record"
            report.fail(f"delivered but recorded as {verdict}", -1, decision_id)
    for decision_id, index in accepted:
        if decision_id not in delivered:
            report.fail("250 at end-of-data but the downstream has no message", index, decision_id)
    for store in harness.stores:
        problems = store.verify()
        if problems:
            report.fail("decision chain broken", -1, str(problems[:3]))


# -- the command ---------------------------------------------------------------------------------


def _print_failures(
    failures: Counter[str], examples: dict[str, list[int]], details: dict[str, str], what: str
) -> None:
    for kind, n in failures.most_common():
        print(f"  {n:>7}  {kind}  ({what} {', '.join(map(str, examples.get(kind, [])))})")
        detail = details.get(kind, "")
        if detail:
            for line in detail.strip().splitlines()[-6:]:
                print(f"             | {line[:150]}")


def _progress(label: str) -> Callable[[int, int], None]:
    began = time.perf_counter()

    def show(done: int, total: int) -> None:
        rate = done / max(time.perf_counter() - began, 1e-9)
        print(f"\r{label}: {done}/{total} ({rate:.0f}/s)", end="", file=sys.stderr, flush=True)
        if done >= total:
            print(file=sys.stderr)

    return show


def _replay(seed: int, index: int, dump: Path | None) -> int:
    message = generate_message(seed, index)
    print(f"message {index} of seed {seed}: {len(message.raw)} bytes")
    print(
        f"  envelope: from <{message.mail_from}> to {list(message.recipients)} "
        f"client {message.client_ip} helo {message.helo!r} tls {message.tls}"
    )
    report = MessageReport()
    runner = CheckRunner()
    try:
        runner.run(message, index, report)
    finally:
        runner.close()
    print(f"  verdict: {dict(report.verdicts)} reasons: {dict(report.reasons)}")
    _print_failures(report.failures, report.examples, report.details, "message")
    _print_failures(report.warnings, report.examples, report.details, "warning, message")
    if dump is not None:
        dump.mkdir(parents=True, exist_ok=True)
        (dump / f"fuzz-{seed}-{index}.eml").write_bytes(message.raw)
        (dump / "gateway.toml").write_text(
            f'[server]\nhostname = "{HOSTNAME}"\n\n[relay]\nlocal_domains = ["lamdong.gov.vn"]\n'
            'trusted_networks = ["127.0.0.0/8"]\n',
            "utf-8",
        )
        rcpts = " ".join(f"--rcpt {r!r}" for r in message.recipients)
        print(
            f"  written to {dump}; reproduce with:\n  congvu check --config {dump}/gateway.toml "
            f"--mail-from {message.mail_from!r} {rcpts} --client-ip {message.client_ip} "
            f"--helo {message.helo!r} {dump}/fuzz-{seed}-{index}.eml"
        )
    return 1 if report.exceptions else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10000, help="messages to check")
    parser.add_argument("--dialogues", type=int, default=500, help="SMTP dialogues to play")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--start", type=int, default=0, help="first message/dialogue index")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--replay", type=int, metavar="INDEX", help="check one message, verbosely")
    parser.add_argument("--dump", type=Path, metavar="DIR", help="with --replay: write it out")
    parser.add_argument("--replay-dialogue", type=int, metavar="INDEX", help="one dialogue")
    args = parser.parse_args(argv)
    logging.disable(logging.CRITICAL)  # pyHanko logs each broken file; aiosmtpd each session
    if args.replay is not None:
        return _replay(args.seed, args.replay, args.dump)
    if args.replay_dialogue is not None:
        logging.disable(logging.NOTSET)
        lines: list[str] = []
        dialogue_report = asyncio.run(
            run_dialogues(1, args.seed, start=args.replay_dialogue, transcript=lines)
        )
        print("\n".join(lines))
        r = dialogue_report
        _print_failures(r.failures, r.examples, r.details, "dialogue")
        _print_failures(r.warnings, r.warning_examples, r.warning_details, "warning, dialogue")
        return 1 if dialogue_report.exceptions else 0

    status = 0
    if args.messages:
        report = run_messages(
            args.messages,
            args.seed,
            workers=args.workers,
            start=args.start,
            progress=_progress("messages") if sys.stderr.isatty() else None,
        )
        print(
            f"messages: {report.messages} (seed {args.seed}, from {args.start}) in "
            f"{report.seconds:.1f} s: {report.messages / max(report.seconds, 1e-9):.0f} msg/s "
            f"on {args.workers} worker(s)"
        )
        print("  verdicts: " + ", ".join(f"{k} {v}" for k, v in report.verdicts.most_common()))
        print("  reasons:  " + ", ".join(f"{k} {v}" for k, v in report.reasons.most_common(14)))
        if report.slow:
            slow = ", ".join(f"#{i} {ms / 1000:.1f} s" for ms, i in report.slow[:5])
            print(f"  slowest:  {slow}")
        print(
            f"  exceptions: {report.exceptions} in {report.failed_messages} messages, "
            f"{len(report.failures)} kinds"
        )
        _print_failures(report.failures, report.examples, report.details, "messages")
        if report.warnings:
            caught = sum(report.warnings.values())
            print(f"  caught by serve, so not counted (a notice not sent): {caught}")
            _print_failures(report.warnings, report.examples, report.details, "messages")
        if report.exceptions:
            print(f"  reproduce: python bench/fuzz.py --seed {args.seed} --replay INDEX --dump DIR")
            status = 1
    if args.dialogues:
        logging.disable(logging.NOTSET)
        dialogue_report = asyncio.run(
            run_dialogues(
                args.dialogues,
                args.seed,
                start=args.start,
                progress=_progress("dialogues") if sys.stderr.isatty() else None,
            )
        )
        r = dialogue_report
        print(
            f"dialogues: {r.dialogues} in {r.seconds:.1f} s; {r.commands} command lines, "
            f"{r.replies} reply lines; downstream got {r.delivered} messages, {r.notices} notices"
        )
        print(
            "  end-of-data replies: "
            + ", ".join(f"{k} {v}" for k, v in sorted(r.data_replies.items()))
        )
        print("  endings: " + ", ".join(f"{k} {v}" for k, v in r.endings.most_common()))
        print(
            "  log events: " + (", ".join(f"{k} {v}" for k, v in r.log_events.most_common()) or "-")
        )
        print(f"  failures: {r.exceptions}")
        _print_failures(r.failures, r.examples, r.details, "dialogues")
        if r.warnings:
            print(f"  warnings (not failures): {sum(r.warnings.values())}")
            _print_failures(r.warnings, r.warning_examples, r.warning_details, "dialogues")
        if r.exceptions:
            print(f"  reproduce: python bench/fuzz.py --seed {args.seed} --replay-dialogue INDEX")
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
