"""Every SMTP reply the gateway gives, built in one place.

Three kinds, as aiosmtpd's ``testing/statuscodes.py`` names its replies:

- fixed protocol replies (named constants below: ``SENDER_OK``, ``SHUTTING_DOWN``, ...);
- refusals for a reason code (:func:`refusal`): the code, enhanced code and text come from the
  policy's reason table (:mod:`policies.reasons`), with the decision id as ``(ref ...)``;
- the downstream's own answer passed back (:func:`downstream`), and the final 250 once the
  downstream accepted (:func:`accepted`).

A front-end sends :meth:`Reply.line`; a milter hands the parts (code, enhanced code, text) to
the MTA. :func:`add_enhanced_code` gives aiosmtpd's own replies the RFC 3463 code they lack,
since we advertise ENHANCEDSTATUSCODES.
"""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING

from policies import Reply
from policies import refusal as _policy_refusal

if TYPE_CHECKING:
    from gateway.relay import DownstreamReply
    from policies import Policy

__all__ = [
    "BYE",
    "CLOSING",
    "OK",
    "RECIPIENT_OK",
    "SENDER_OK",
    "Reply",
    "accepted",
    "add_enhanced_code",
    "downstream",
    "refusal",
]

OK = Reply(250, "2.0.0", "Ok")
SENDER_OK = Reply(250, "2.1.0", "Sender ok")
RECIPIENT_OK = Reply(250, "2.1.5", "Recipient ok")
BYE = Reply(221, "2.0.0", "Bye")
CLOSING = Reply(421, "4.3.2", "Connection closing")
SHUTTING_DOWN = Reply(421, "4.3.2", "Service shutting down, try again later")
TOO_MANY_SESSIONS = Reply(421, "4.7.0", "Too many connections, try again later")
TOO_MANY_ERRORS = Reply(421, "4.7.0", "Too many errors, closing")
TIMEOUT = Reply(421, "4.4.2", "Timeout exceeded, closing connection")
NO_SPOOL = Reply(421, "4.3.1", "Insufficient system storage, closing")
EARLY_TALKER = Reply(554, "5.5.1", "Protocol error: talking before the greeting")
TLS_ACTIVE = Reply(554, "5.5.1", "Error: TLS already active")
IN_TRANSACTION = Reply(503, "5.5.1", "Error: MAIL transaction in progress")
NEED_MAIL = Reply(503, "5.5.1", "Error: need MAIL command")
NEED_RCPT = Reply(503, "5.5.1", "Error: need RCPT command")
XFORWARD_UNKNOWN = Reply(500, "5.5.2", 'Error: command "XFORWARD" not recognized')
XFORWARD_SYNTAX = Reply(501, "5.5.4", "Syntax: XFORWARD attribute=value...")
# In aiosmtpd's words, without an enhanced code: the protocol adds one after EHLO only
# (RFC 2034), as it does to aiosmtpd's own replies.
DATA_NEEDS_RCPT = Reply(503, "", "Error: need RCPT command")
DATA_SYNTAX = Reply(501, "", "Syntax: DATA")
DATA_OK = Reply(250, "", "OK")
START_DATA = Reply(354, "", "End data with <CR><LF>.<CR><LF>")


def hello(hostname: str) -> Reply:
    """The answer to HELO (EHLO's lines are aiosmtpd's, with our keywords added)."""
    return Reply(250, "", hostname)


def refusal(code: str, policy: Policy, ref: str = "") -> Reply:
    """The reply refusing for reason ``code`` under ``policy``; ``ref`` is the decision id."""
    return dataclasses.replace(_policy_refusal(code, policy), ref=ref)


def accepted(decision_id: str) -> Reply:
    """The final 250 the client gets once the downstream has accepted the message."""
    return Reply(250, "2.0.0", "Ok: accepted as " + decision_id)


def downstream(reply: DownstreamReply, *, stage: str) -> Reply:
    """The downstream's refusal passed back to our client, with an enhanced code when the
    downstream gave none: for a recipient ``5.1.1`` (permanent) or ``4.0.0``; else the class's
    generic ``X.0.0``. A text that starts with its own code is passed back exactly as it came
    (``550 5.1.1: user unknown`` keeps its colon)."""
    if _ENHANCED_TEXT.match(reply.text):
        return Reply(reply.code, "", reply.text)
    if stage == "RCPT":
        enhanced = "5.1.1" if reply.code >= 500 else "4.0.0"
    else:
        enhanced = f"{reply.code // 100}.0.0"
    return Reply(reply.code, enhanced, reply.text)


_ENHANCED_TEXT = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}\b")
_HAS_ENHANCED = re.compile(r"^[245]\d\d[ -][245]\.\d{1,3}\.\d{1,3}(\s|$)")
_REPLY = re.compile(r"^([245])(\d\d)([ -])(.*)$", re.DOTALL)
_DEFAULT_ENHANCED = {
    "500": "5.5.2",
    "501": "5.5.4",
    "502": "5.5.1",
    "503": "5.5.1",
    "504": "5.5.4",
    "530": "5.7.0",
    "552": "5.3.4",
    "554": "5.0.0",
    "555": "5.5.4",
    "421": "4.4.2",
}


def add_enhanced_code(status: str) -> str:
    """Insert an RFC 3463 code into a 2xx/4xx/5xx reply that lacks one (3xx have none)."""
    if _HAS_ENHANCED.match(status):
        return status
    m = _REPLY.match(status)
    if not m:
        return status
    klass, rest, sep, text = m.groups()
    code = klass + rest
    enhanced = _DEFAULT_ENHANCED.get(code, f"{klass}.0.0")
    return f"{code}{sep}{enhanced} {text}"
