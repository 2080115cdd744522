"""Every SMTP reply is built in gateway/replies.py, and the replies it builds are right."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from gateway import replies
from gateway.relay import DownstreamReply
from policies import load_policy

ROOT = Path(__file__).parents[2]
_REPLY_TEXT = re.compile(r"^[2345]\d\d ")  # a final reply line; "250-" lines are EHLO keywords


def _reply_literals(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        values: list[object] = []
        if isinstance(node, ast.Constant):
            values = [node.value]
        elif isinstance(node, ast.JoinedStr) and node.values:
            first = node.values[0]
            values = [first.value] if isinstance(first, ast.Constant) else []
        for value in values:
            text = value.decode("latin-1") if isinstance(value, bytes) else value
            if isinstance(text, str) and _REPLY_TEXT.match(text):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {text[:40]!r}")
    return found


def test_no_smtp_reply_is_written_outside_the_replies_module() -> None:
    """A reply written anywhere else would be one the milter and the proxy could give
    differently (metrics.py's lines are HTTP status lines)."""
    paths = [
        p for p in (ROOT / "gateway").rglob("*.py") if p.name not in ("replies.py", "metrics.py")
    ]
    assert [hit for p in paths for hit in _reply_literals(p)] == []


@pytest.mark.parametrize(
    ("code", "text", "stage", "line"),
    [
        (
            550,
            "5.1.1 <x@lamdong.gov.vn>: Recipient address rejected",
            "RCPT",
            "550 5.1.1 <x@lamdong.gov.vn>: Recipient address rejected",
        ),
        (550, "no such user", "RCPT", "550 5.1.1 no such user"),
        (450, "try later", "RCPT", "450 4.0.0 try later"),
        (550, "5.1.1: user unknown", "RCPT", "550 5.1.1: user unknown"),
        (550, "5.7.1; blocked", "MAIL", "550 5.7.1; blocked"),
        (554, "spam detected", "DATA", "554 5.0.0 spam detected"),
        (452, "4.3.1 insufficient storage", "DATA", "452 4.3.1 insufficient storage"),
    ],
)
def test_the_downstreams_answer_keeps_its_code_or_gets_one(
    code: int, text: str, stage: str, line: str
) -> None:
    """Passed back as the downstream said it, with an enhanced code added only when missing."""
    assert replies.downstream(DownstreamReply.of(code, text), stage=stage).line() == line


def test_a_refusal_names_its_decision_and_the_acceptance_its_id() -> None:
    """The ref lets an officer find the record; the parts are what a milter hands the MTA."""
    refusal = replies.refusal("sender.personal_domain", load_policy(), ref="01ABC")
    assert (refusal.code, refusal.enhanced) == (550, "5.7.1")
    assert refusal.line().startswith("550 5.7.1 [sender.personal_domain] ")
    assert refusal.line().endswith(" (ref 01ABC)")
    assert replies.accepted("01ABC").line() == "250 2.0.0 Ok: accepted as 01ABC"
