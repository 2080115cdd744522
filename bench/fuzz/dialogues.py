"""Generated SMTP sessions: the steps (command lines sent together, a message after a 354,
a hang-up), the commands with their bad arguments, line ends and garbage, and the two kinds
of session, polite (a normal client, now and then a wrong step) and hostile (random
commands). ``generate_dialogue(seed, index)`` is dialogue ``index`` of run ``seed``, the
same steps in every run."""

from __future__ import annotations

import base64
import random
import re
from dataclasses import dataclass

from bench.fuzz.corpus import (
    _EXTERNAL_RCPTS,
    _LOCAL_RCPTS,
    _NAMES,
    _OFFICIAL,
    _PERSONAL,
    _SUBJECTS,
    _corpus,
)
from bench.fuzz.draw import _chance, _garbage, _pick, _printable, _text
from bench.fuzz.headers import _mailbox_address, _maybe_encoded
from bench.fuzz.messages import build_message


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
