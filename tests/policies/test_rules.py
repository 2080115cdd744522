"""Rule truth tables and the pipeline's handling of modes, dates and raising rules."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from policies import Action, AddressField, MessageFacts, evaluate, parse_policy
from policies.rules import RULES, rule

NOW = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)
CLERK = "vanthu@lamdong.gov.vn"


def policy(rules: str, extra_domains: str = "") -> object:
    return parse_policy(f'[domains]\nofficial = ["gov.vn"]\n{extra_domains}\n{rules}', "test.toml")


def facts(
    mail_from: str = "a@x.gov.vn",
    from_: list[str] | None = None,
    sender: list[str] | None = None,
    reply_to: list[str] | None = None,
    rcpts: tuple[str, ...] = (CLERK,),
) -> MessageFacts:
    from_ = ["A <a@x.gov.vn>"] if from_ is None else from_
    return MessageFacts(
        mail_from=mail_from,
        recipients=rcpts,
        client_ip="192.0.2.1",
        client_trusted=False,
        from_fields=tuple(AddressField.parse("From", v) for v in from_),
        sender_fields=tuple(AddressField.parse("Sender", v) for v in sender or []),
        reply_to_fields=tuple(AddressField.parse("Reply-To", v) for v in reply_to or []),
    )


PERSONAL = '[[rules]]\nid = "sender-personal-domain"\n'


@pytest.mark.parametrize(
    ("case", "refused_for"),
    [
        (facts(), None),
        (facts(mail_from=""), None),  # null sender (bounces) is not an address
        (facts(mail_from="a@gmail.com"), "envelope sender a@gmail.com"),
        (facts(mail_from="a@GMAIL.COM"), "envelope sender a@GMAIL.COM"),
        (facts(from_=["A <a@yahoo.com.vn>"]), "From a@yahoo.com.vn"),
        (facts(sender=["a@hotmail.com"]), "Sender a@hotmail.com"),
        (facts(reply_to=["a@icloud.com"]), "Reply-To a@icloud.com"),
        (facts(from_=["a@mail.yahoo.com"]), "From a@mail.yahoo.com"),  # subdomain of a provider
        (facts(from_=["a@notgmail.com"]), None),
        (facts(from_=["a@gmail.com.x.gov.vn"]), None),
        (facts(mail_from="a@gmail.com", rcpts=("friend@example.com",)), None),  # not protected
    ],
)
def test_personal_domain_truth_table(case: MessageFacts, refused_for: str | None) -> None:
    """Envelope sender, From, Sender and Reply-To are each checked against personal providers."""
    decision = evaluate(case, policy(PERSONAL), NOW)
    if refused_for is None:
        assert decision.action is Action.ACCEPT
    else:
        assert decision.action is Action.REJECT
        assert decision.reasons == ("sender.personal_domain",)
        assert refused_for in decision.findings[0].detail


def test_protected_and_public_recipients_are_policy() -> None:
    """A citizen writing from gmail to the public contact address is not refused."""
    rules = (
        PERSONAL
        + 'protected_recipients = ["official"]\npublic_recipients = ["tiepdan@lamdong.gov.vn"]\n'
    )
    p = policy(rules)
    citizen = facts(
        mail_from="dan@gmail.com", from_=["dan@gmail.com"], rcpts=("tiepdan@lamdong.gov.vn",)
    )
    assert evaluate(citizen, p, NOW).action is Action.ACCEPT
    both = facts(
        mail_from="dan@gmail.com", from_=["dan@gmail.com"], rcpts=("tiepdan@lamdong.gov.vn", CLERK)
    )
    assert evaluate(both, p, NOW).action is Action.REJECT

    only_clerk = policy(PERSONAL + f'protected_recipients = ["{CLERK}", "baocao.lamdong.gov.vn"]\n')

    def gmail_to(rcpt: str) -> Action:
        return evaluate(facts(mail_from="a@gmail.com", rcpts=(rcpt,)), only_clerk, NOW).action

    assert gmail_to("giamdoc@lamdong.gov.vn") is Action.ACCEPT
    assert gmail_to("VanThu@LamDong.gov.vn") is Action.REJECT
    assert gmail_to("x@baocao.lamdong.gov.vn") is Action.REJECT
    # Quoted or sub-addressed forms reach the same mailbox, so they are protected alike.
    assert gmail_to('"vanthu"@lamdong.gov.vn') is Action.REJECT
    assert gmail_to("vanthu+x@lamdong.gov.vn") is Action.REJECT


MALFORMED = '[[rules]]\nid = "sender-malformed-identity"\n'


@pytest.mark.parametrize(
    ("case", "detail"),
    [
        (facts(), None),
        (facts(from_=["a@x.gov.vn, b@x.gov.vn"], sender=["a@x.gov.vn"]), None),
        (facts(from_=['"a@x.gov.vn" <a@x.gov.vn>']), None),  # display name equal to the address
        (facts(from_=[]), "no From header"),
        (facts(from_=["a@x.gov.vn", "b@x.gov.vn"]), "2 From headers"),
        (facts(from_=["a@x.gov.vn, b@x.gov.vn"]), "several From addresses and no Sender"),
        (
            facts(from_=['"a@gmail.com" <b@x.gov.vn>']),
            "From shows a@gmail.com but the address is b@x.gov.vn",
        ),
        (facts(from_=["b@x.gov.vn (a@gmail.com)"]), "From shows a@gmail.com"),
        (facts(from_=["a@x.gov.vn@gmail.com"]), "From does not parse"),
        (facts(from_=["a@gmail.com)<b@x.gov.vn>"]), "From does not parse"),
        (facts(reply_to=["<broken"]), "Reply-To does not parse"),
        # Encoded words are shown decoded by clients, adjacent ones joined, even where
        # RFC 2047 forbids them (quoted strings, comments); full-width @ reads as @.
        (facts(from_=["=?utf-8?q?boss?= =?utf-8?q?=40gmail.com?= <a@x.gov.vn>"]), "boss@gmail.com"),
        (facts(from_=["a@x.gov.vn (=?utf-8?q?boss=40gmail.com?=)"]), "boss@gmail.com"),
        (facts(from_=['"=?utf-8?q?boss=40gmail.com?=" <a@x.gov.vn>']), "boss@gmail.com"),
        (facts(from_=['"boss＠gmail.com" <a@x.gov.vn>']), "boss@gmail.com"),
        (facts(from_=["=?utf-8?b?A?= <a@x.gov.vn>"]), None),  # broken encoded word: shown raw
        (facts(sender=["a@x.gov.vn", "b@x.gov.vn"]), "2 Sender headers"),
    ],
)
def test_malformed_identity_truth_table(case: MessageFacts, detail: str | None) -> None:
    """No From, several, unparseable, or showing another address: refused."""
    decision = evaluate(case, policy(MALFORMED), NOW)
    if detail is None:
        assert decision.action is Action.ACCEPT, decision.findings
    else:
        assert decision.reasons == ("sender.malformed_identity",)
        assert detail in decision.findings[0].detail


LOOKALIKE = '[[rules]]\nid = "sender-lookalike-identity"\n'
LAMDONG = 'official = ["lamdong.gov.vn"]'


@pytest.mark.parametrize(
    ("case", "reason", "detail"),
    [
        (facts(mail_from="a@lamdong.gov.vn", from_=["a@lamdong.gov.vn"]), None, None),
        (facts(mail_from="", from_=["a@dilinh.lamdong.gov.vn"]), None, None),
        (facts(mail_from="", from_=["a@example.com"]), None, None),
        (facts(mail_from="", from_=["a@lamđong.gov.vn"]), None, None),  # đ is no d
        (facts(mail_from="", from_=["a@đàlạt.vn"]), None, None),  # Vietnamese, imitates none
        # A Cyrillic о, in Unicode and as the A-label a mail program sends
        (facts(mail_from="", from_=["a@lamdоng.gov.vn"]), "lookalike_domain", "lamdong.gov.vn"),
        (
            facts(mail_from="", from_=["a@xn--lamdng-zqf.gov.vn"]),
            "lookalike_domain",
            "From a@xn--lamdng-zqf.gov.vn: looks like lamdong.gov.vn",
        ),
        # Whole-name (Cyrillic а and о), a subdomain, Greek ο; Sender, Reply-To, envelope
        (facts(mail_from="", from_=["a@lаmdоng.gov.vn"]), "lookalike_domain", "From"),
        (facts(mail_from="", from_=["a@dilinh.lamdοng.gov.vn"]), "lookalike_domain", "From"),
        (facts(mail_from="", sender=["a@lamdоng.gov.vn"]), "lookalike_domain", "Sender"),
        (facts(mail_from="", reply_to=["a@lamdоng.gov.vn"]), "lookalike_domain", "Reply-To"),
        (facts(mail_from="a@lamdоng.gov.vn"), "lookalike_domain", "envelope sender"),
        # An address hidden in a quoted local part
        (
            facts(mail_from="", from_=['"vanthu@lamdong.gov.vn"@example.com']),
            "address_in_local_part",
            "an address in the local part",
        ),
        (
            facts(mail_from='"x@lamdong.gov.vn"@example.com', from_=["a@example.com"]),
            "address_in_local_part",
            "envelope sender",
        ),
    ],
)
def test_lookalike_identity_truth_table(
    case: MessageFacts, reason: str | None, detail: str | None
) -> None:
    """An official domain written with look-alike letters, or an address hidden in a quoted
    local part, is refused with its own reason; the district's own names and other
    Vietnamese names are not."""
    district = parse_policy(f"[domains]\n{LAMDONG}\n{LOOKALIKE}", "test.toml")
    decision = evaluate(case, district, NOW)
    if reason is None:
        assert decision.action is Action.ACCEPT, decision.findings
    else:
        assert decision.reasons == (f"sender.{reason}",)
        assert detail is not None and detail in decision.findings[0].detail


def test_every_rule_runs_and_reject_reason_order_follows_policy() -> None:
    """Both violations are found; the first in policy order gives the reply."""
    case = facts(mail_from="a@gmail.com", from_=['"a@gmail.com" <b@x.gov.vn>'])
    decision = evaluate(case, policy(PERSONAL + MALFORMED), NOW)
    assert decision.reasons == ("sender.personal_domain", "sender.malformed_identity")
    assert decision.reply is not None and "[sender.personal_domain]" in decision.reply.text


@pytest.mark.parametrize(
    ("mode", "enforce_from", "action", "outcome"),
    [
        ("enforce", "", Action.REJECT, "reject"),
        ("monitor", "", Action.ACCEPT, "would-reject"),
        ("off", "", Action.ACCEPT, "off"),
        ("enforce", "enforce_from = 2026-11-23\n", Action.ACCEPT, "would-reject"),
        ("enforce", "enforce_from = 2026-11-22\n", Action.REJECT, "reject"),
    ],
)
def test_modes_and_enforce_from(mode: str, enforce_from: str, action: Action, outcome: str) -> None:
    """monitor delivers and records; off skips; enforce_from is a Vietnam-local date."""
    # NOW is 10:00 on 2026-11-22 in Vietnam (03:00 UTC).
    p = policy(f'[[rules]]\nid = "sender-personal-domain"\nmode = "{mode}"\n{enforce_from}')
    decision = evaluate(facts(mail_from="a@gmail.com"), p, NOW)
    assert decision.action is action
    assert decision.findings[0].outcome == outcome
    if outcome == "would-reject":
        assert decision.monitor_reasons == ("sender.personal_domain",)


def test_vietnam_date_boundary() -> None:
    """At 17:30 UTC on the 22nd it is already the 23rd in Vietnam."""
    p = policy('[[rules]]\nid = "sender-personal-domain"\nenforce_from = 2026-11-23\n')
    late = datetime(2026, 11, 22, 17, 30, tzinfo=UTC)
    assert evaluate(facts(mail_from="a@gmail.com"), p, late).action is Action.REJECT


@pytest.fixture
def broken_rule():
    @rule("test-broken")
    def broken(facts, ctx):  # type: ignore[no-untyped-def]
        """Always raises."""
        raise KeyError("x")

    yield
    del RULES["test-broken"]


@pytest.mark.usefixtures("broken_rule")
def test_a_raising_rule_is_a_tempfail_never_a_pass() -> None:
    """Enforce: 451 internal.check_error; monitor: recorded as error, message goes on."""
    enforce = evaluate(facts(), policy('[[rules]]\nid = "test-broken"\n'), NOW)
    assert enforce.action is Action.TEMPFAIL
    assert enforce.reply is not None and enforce.reply.code == 451
    assert "KeyError" in enforce.errors[0]
    monitor = evaluate(facts(), policy('[[rules]]\nid = "test-broken"\nmode = "monitor"\n'), NOW)
    assert monitor.action is Action.ACCEPT and monitor.findings[0].outcome == "error"
    both = evaluate(
        facts(mail_from="a@gmail.com"), policy('[[rules]]\nid = "test-broken"\n' + PERSONAL), NOW
    )
    assert both.action is Action.REJECT  # reject is more severe than tempfail


def test_every_rule_states_its_policy_in_one_sentence() -> None:
    """`congvu policy explain` prints each rule's first docstring line: it must exist."""
    for r in RULES.values():
        assert r.description.endswith("."), r.id
