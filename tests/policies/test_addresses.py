"""Strict address parsing and domain matching: the domain judged is the domain a reader sees."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies.addresses import (
    AddressError,
    ascii_fold,
    canonical_domain,
    domain_matches,
    parse_addr_spec,
    parse_mailbox_list,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a@lamdong.gov.vn", [("", "a@lamdong.gov.vn")]),
        ("Nguyen Van A <a@lamdong.gov.vn>", [("Nguyen Van A", "a@lamdong.gov.vn")]),
        ('"Nguyen, Van A" <a@LamDong.Gov.VN>', [("Nguyen, Van A", "a@lamdong.gov.vn")]),
        ("John Q. Public <jqp@x.gov.vn>", [("John Q. Public", "jqp@x.gov.vn")]),
        ("a@x.gov.vn (Phong Noi vu)", [("", "a@x.gov.vn")]),
        ("=?utf-8?b?VsSDbiB0aMawIA==?= <vanthu@x.gov.vn>", [("Văn thư", "vanthu@x.gov.vn")]),
        ('"quoted local"@x.gov.vn', [("", "quoted local@x.gov.vn")]),
        ("Văn thư <vanthu@sở.gov.vn>", [("Văn thư", "vanthu@xn--s-lym.gov.vn")]),
        ("a@x.gov.vn, B <b@y.gov.vn>", [("", "a@x.gov.vn"), ("B", "b@y.gov.vn")]),
    ],
)
def test_valid_headers_parse_to_what_a_client_shows(
    value: str, expected: list[tuple[str, str]]
) -> None:
    """Ordinary From headers give the display name and canonical address a reader sees."""
    assert [(m.display_name, m.address) for m in parse_mailbox_list(value)] == expected


@pytest.mark.parametrize(
    "value",
    [
        "a@x.gov.vn@gmail.com",  # CVE-2023-27043 shape: which domain?
        "a@gmail.com)<b@x.gov.vn>",
        "a@gmail.com<b@x.gov.vn>",  # lenient parsers pick either
        "<a@x.gov.vn",
        "a@x.gov.vn>",
        '"unterminated <a@x.gov.vn>',
        "(unterminated a@x.gov.vn",
        "a @x.gov.vn",
        "a@ x.gov.vn",
        "a. b@x.gov.vn",
        "a@[192.0.2.1]",
        "group: a@x.gov.vn;",
        "a@x.gov.vn,",
        ",a@x.gov.vn",
        "",
        "   ",
        "a@localhost",
        "a@-bad-.gov.vn",
        "a@x..gov.vn",
        "a@x.gov.vn.",
        "a\x00@x.gov.vn",
        "undisclosed",
    ],
)
def test_ambiguous_or_malformed_headers_are_refused_not_guessed(value: str) -> None:
    """Anything outside the strict grammar raises AddressError."""
    with pytest.raises(AddressError):
        parse_mailbox_list(value)


@pytest.mark.parametrize(
    ("domain", "pattern", "matches"),
    [
        ("gov.vn", "gov.vn", True),
        ("lamdong.gov.vn", "gov.vn", True),
        ("LAMDONG.GOV.VN.", "gov.vn", True),
        ("evil-gov.vn", "gov.vn", False),
        ("gov.vn.evil.com", "gov.vn", False),
        ("xgov.vn", "gov.vn", False),
        ("sở.gov.vn", "xn--s-lym.gov.vn", True),
        ("xn--s-lym.gov.vn", "sở.gov.vn", True),
        ("not a domain", "gov.vn", False),
    ],
)
def test_domain_matching_is_by_whole_labels(domain: str, pattern: str, matches: bool) -> None:
    """A pattern matches itself and its subdomains, case and trailing dot aside, IDNA-equal."""
    assert domain_matches(domain, pattern) is matches


labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)


@given(st.lists(labels, min_size=1, max_size=4), st.lists(labels, min_size=2, max_size=3))
def test_subdomains_always_match_and_suffix_tricks_never_do(
    prefix: list[str], base: list[str]
) -> None:
    """x.y.BASE matches BASE in any case; PREFIX-BASE (glued, not dotted) never does."""
    pattern = ".".join(base)
    sub = ".".join([*prefix, pattern])
    assert domain_matches(sub.upper(), pattern)
    assert domain_matches(sub + ".", pattern.upper())
    glued = ".".join(prefix) + "-" + pattern
    assert not domain_matches(glued, pattern)


@given(st.text(max_size=200))
def test_parser_never_crashes(value: str) -> None:
    """Any text either parses into canonical addresses or raises AddressError, nothing else."""
    try:
        boxes = parse_mailbox_list(value)
    except AddressError:
        return
    for box in boxes:
        assert box.domain == canonical_domain(box.domain)


@given(
    st.sampled_from(["a", "Nguyen.Van-A", "x_y+tag"]), st.sampled_from(["gmail.com", "x.gov.vn"])
)
def test_parsed_address_round_trips(local: str, domain: str) -> None:
    """What a header says is what is parsed, with and without a display name."""
    assert parse_mailbox_list(f"Name <{local}@{domain}>")[0].address == f"{local}@{domain}"
    assert parse_addr_spec(f"{local}@{domain}").address == f"{local}@{domain}"


def test_ascii_fold_removes_vietnamese_diacritics() -> None:
    """SMTP replies are ASCII: Vietnamese is written without diacritics, đ as d."""
    assert (
        ascii_fold("Văn phòng HĐND và UBND huyện Đạ Tẻh") == "Van phong HDND va UBND huyen Da Teh"
    )
    assert ascii_fold("a\r\nb") == "ab"
