"""What a well-formed SMTP reply line is: the check every reply of both halves passes (a
3-digit code, ASCII, no internals shown), and what is odd in one without being a failure."""

from __future__ import annotations

import re

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
