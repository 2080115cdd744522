"""Refusal notices on the wire: RFC 3464 delivery-status reports, rate-limited, sent downstream.

What a notice says, and whether one is due, is decided in :mod:`policies.notices`. Here it is
wrapped as ``multipart/report; report-type=delivery-status`` (RFC 3464; with RFC 6533's
``message/global-delivery-status`` and ``message/global-headers`` when addresses or headers
are UTF-8), given a null envelope sender and ``Auto-Submitted: auto-replied``, and sent
through the downstream server like any other mail for the officer. A notice that cannot be
sent is logged and recorded; it never changes the answer to the original message.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections import deque
from datetime import datetime
from email.header import Header
from email.utils import format_datetime
from typing import Any

from gateway.message import ParsedMessage
from gateway.relay import DownstreamError, Relay
from policies import Decision, MessageFacts, Policy
from policies.notices import NoticeContent, notice_kind, render_notice

__all__ = ["Notifier", "build_notice"]

_WINDOW = 3600.0
NOTICE_TIMEOUT = 15.0  # seconds the original client may wait for a notice to go out


def _utf8(text: str) -> str:
    """Text that encodes as UTF-8: stray 8-bit bytes of a header (kept as surrogate escapes
    when the message was read) become U+FFFD instead of failing the notice."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a lone surrogate that was never a byte
        return text.encode("utf-8", "replace").decode("utf-8")


def _encoded(text: str) -> str:
    if text.isascii():
        return text
    return Header(_utf8(text), "utf-8").encode(maxlinelen=76, linesep="\r\n")


def _b64(text: str) -> str:
    return base64.encodebytes(_utf8(text).encode("utf-8")).decode("ascii").replace("\n", "\r\n")


def build_notice(
    *,
    kind: str,
    content: NoticeContent,
    facts: MessageFacts,
    parsed: ParsedMessage,
    reply: str,
    decision_id: str,
    hostname: str,
    from_address: str,
    when: datetime,
) -> tuple[bytes, str]:
    """The notice as bytes, and its Message-ID."""
    message_id = f"<{decision_id}.notice@{hostname}>"
    boundary = f"=_congvu_{decision_id}"
    alt = f"=_congvu_alt_{decision_id}"
    subject_prefix = (
        "Thư bị trả lại / Returned mail" if kind == "refusal" else ("Nhắc nhở / Advisory")
    )
    subject = f"{subject_prefix}: {facts.subject or '(không có tiêu đề / no subject)'}"
    head = [
        f"From: {_encoded('Cổng thư công vụ')} <{from_address}>",
        f"To: <{facts.mail_from}>",
        f"Subject: {_encoded(subject)}",
        f"Date: {format_datetime(when)}",
        f"Message-ID: {message_id}",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
    ]
    human = (
        f'Content-Type: multipart/alternative; boundary="{alt}"\r\n\r\n'
        f"--{alt}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Transfer-Encoding: base64\r\n\r\n{_b64(content.text)}"
        f"--{alt}\r\nContent-Type: text/html; charset=utf-8\r\n"
        f"Content-Transfer-Encoding: base64\r\n\r\n{_b64(content.html)}"
        f"--{alt}--\r\n"
    )
    if kind != "refusal":  # an advisory: the message was delivered, so no delivery report
        head.append(human.split("\r\n", 1)[0])
        return ("\r\n".join(head) + "\r\n" + human.split("\r\n", 1)[1]).encode(), message_id

    original_headers = parsed.raw[: parsed.body_offset]
    utf8 = not (facts.mail_from + "".join(facts.recipients)).isascii() or not (
        original_headers.isascii()
    )
    status_code = reply.split(" ", 2)[1] if reply.count(" ") >= 2 else "5.0.0"
    address_type = "utf-8" if utf8 else "rfc822"
    per_recipient = "".join(
        f"\r\nFinal-Recipient: {address_type}; {rcpt}\r\nAction: failed\r\n"
        f"Status: {status_code}\r\nDiagnostic-Code: smtp; {reply}\r\n"
        for rcpt in facts.recipients
    )
    status = (
        f"Reporting-MTA: dns; {hostname}\r\nX-Congvu-Decision: {decision_id}\r\n"
        f"Arrival-Date: {format_datetime(when)}\r\n{per_recipient}"
    )
    status_type = "message/global-delivery-status" if utf8 else "message/delivery-status"
    headers_type = "message/global-headers" if utf8 else "text/rfc822-headers"
    head.append(
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"'
    )
    body = (
        (
            f"--{boundary}\r\n{human}"
            f"--{boundary}\r\nContent-Type: {status_type}\r\n\r\n{status}"
            f"--{boundary}\r\nContent-Type: {headers_type}\r\n\r\n"
        ).encode()
        + original_headers
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return ("\r\n".join(head) + "\r\n\r\n").encode("utf-8") + body, message_id


class Notifier:
    """Decides, rate-limits, builds and sends notices."""

    def __init__(self, relay: Relay, hostname: str) -> None:
        self.relay = relay
        self.hostname = hostname
        self._sent: dict[str, deque[float]] = {}

    def _forget(self, address: str) -> None:
        times = self._sent.get(address.lower())
        if times:
            times.pop()

    def _allowed(self, address: str, limit: int) -> bool:
        now = time.monotonic()
        times = self._sent.setdefault(address.lower(), deque())
        while times and now - times[0] > _WINDOW:
            times.popleft()
        if len(times) >= limit:
            return False
        times.append(now)
        return True

    async def notify(
        self,
        *,
        facts: MessageFacts,
        decision: Decision,
        parsed: ParsedMessage,
        policy: Policy,
        reply: str,
        decision_id: str,
        when: datetime,
    ) -> dict[str, Any]:
        """Send a notice if one is due; what happened, for the decision record."""
        kind, why_not = notice_kind(facts, decision, policy)
        if not kind:
            return {"kind": None, "sent": False, "to": None, "message_id": None, "reason": why_not}
        record: dict[str, Any] = {
            "kind": kind,
            "sent": False,
            "to": facts.mail_from,
            "message_id": None,
            "reason": "",
        }
        if not self._allowed(facts.mail_from, policy.notices.rate_per_hour):
            record["reason"] = f"rate limit: {policy.notices.rate_per_hour} an hour"
            return record
        try:
            content = render_notice(
                facts,
                decision,
                policy,
                kind=kind,
                decision_id=decision_id,
                date=parsed.first("Date"),
            )
            data, message_id = build_notice(
                kind=kind,
                content=content,
                facts=facts,
                parsed=parsed,
                reply=reply,
                decision_id=decision_id,
                hostname=self.hostname,
                from_address=policy.notices.from_address or f"MAILER-DAEMON@{self.hostname}",
                when=when,
            )
            # The client waits for its answer while the notice goes out: bound that wait.
            problem = await asyncio.wait_for(self._deliver(data, facts.mail_from), NOTICE_TIMEOUT)
        except TimeoutError:
            problem = f"no answer within {NOTICE_TIMEOUT:g} s"
        except Exception as exc:  # noqa: BLE001 - a notice must never change the verdict
            problem = f"{type(exc).__name__}: {exc}"
        if problem:
            record["reason"] = f"not sent: {problem}"[:300]
            self._forget(facts.mail_from)  # the quota counts notices sent, not attempts
        else:
            record.update(sent=True, message_id=message_id)
        return record

    async def _deliver(self, data: bytes, to: str) -> str:
        """Send ``data`` from the null sender to ``to``; "" when accepted, else what went wrong."""
        session = self.relay.session()
        try:
            answers = [await session.mail("", size=len(data), smtputf8=not to.isascii())]
            if answers[-1].ok:
                answers.append(await session.rcpt(to))
            if answers[-1].ok:
                answers.append(await session.data(data))
        except DownstreamError as exc:
            return exc.detail
        finally:
            await session.close()
        return "" if answers[-1].ok else f"{answers[-1].code} {answers[-1].text}"
