"""Property-based tests for strict address parsing and domain matching.

What a user relies on: the domain the gateway judges is the domain the mail goes to, in one
canonical form whatever the case, trailing dot or IDNA spelling, matched by whole labels
(``evil-gov.vn`` is not ``gov.vn``), never taken from inside a quoted local part, and anything
the strict parser does not accept is refused with :class:`AddressError`, never another error.
"""

from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from policies.addresses import (
    AddressError,
    Mailbox,
    canonical_domain,
    decode_words,
    domain_matches,
    organisational_domain,
    parse_addr_spec,
    parse_mailbox_list,
)

FAST = settings(max_examples=200, deadline=None)

# --- strategies -------------------------------------------------------------------------------

ASCII_LABELS = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,12}[a-z0-9])?", fullmatch=True)

# Vietnamese lower-case letters in NFC (each one code point): the IDNA names this gateway sees.
_VOWELS = "aăâeêioôơuưy"
_TONES = ("", "\u0300", "\u0301", "\u0303", "\u0309", "\u0323")
VI_LETTERS = sorted(
    {unicodedata.normalize("NFC", v + t) for v in _VOWELS for t in _TONES}
    | set("bcdđghklmnpqrstvx")
)
assert all(len(c) == 1 for c in VI_LETTERS)
VI_LABELS = st.text(st.sampled_from([*VI_LETTERS, *"0123456789"]), min_size=1, max_size=12)
LABELS = st.one_of(ASCII_LABELS, VI_LABELS)
TAILS = st.sampled_from(["gov.vn", "edu.vn", "com.vn", "lamdong.gov.vn", "gmail.com"])

# Small label pools, so that generated domains and patterns overlap often and near misses
# (a pattern label glued to another with or without a hyphen) are common.
ASCII_POOL = ("gov", "vn", "evil-gov", "evilgov", "xgov", "gov-vn", "lamdong", "x")
VI_POOL = ("sở", "sởnv", "nội-vụ", "nộivụ", "lâmđồng", "gov", "vn", "x")

IDNA_DOTS = ("\u3002", "\uff0e", "\uff61")  # label separators in IDNA besides "."


def a_label(label: str) -> str:
    """The IDNA A-label of an NFC lower-case label, computed with plain punycode (RFC 3492)."""
    return label if label.isascii() else "xn--" + label.encode("punycode").decode("ascii")


def is_label_suffix(domain: list[str], pattern: list[str]) -> bool:
    """The matching rule stated on whole labels: ``pattern`` is the tail of ``domain``."""
    return len(domain) >= len(pattern) and domain[len(domain) - len(pattern) :] == pattern


def quote(local: str) -> str:
    """``local`` as an RFC 5322 quoted string."""
    return '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'


def recased(text: str) -> st.SearchStrategy[str]:
    """``text`` with any of its letters upper-cased (bit ``i`` of the mask: character ``i``)."""
    return st.integers(min_value=0, max_value=2 ** len(text) - 1).map(
        lambda mask: "".join(c.upper() if mask >> i & 1 else c for i, c in enumerate(text))
    )


@st.composite
def domain_and_pattern(draw: st.DrawFn, pool: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """Label lists for a pattern and a domain that is it, under it, a near miss, or unrelated."""
    labels = st.sampled_from(pool)
    pattern = draw(st.lists(labels, min_size=2, max_size=3))
    prefix = draw(st.lists(labels, max_size=2))
    other = draw(labels)
    kind = draw(st.sampled_from(["same", "sub", "hyphen", "glued", "appended", "unrelated"]))
    if kind == "same":
        domain = pattern
    elif kind == "sub":
        domain = [*prefix, other, *pattern]
    elif kind == "hyphen":  # evil-gov.vn against gov.vn
        domain = [*prefix, f"{other}-{pattern[0]}", *pattern[1:]]
    elif kind == "glued":  # evilgov.vn against gov.vn
        domain = [*prefix, f"{other}{pattern[0]}", *pattern[1:]]
    elif kind == "appended":  # gov.vn.evil.com against gov.vn
        domain = [*prefix, *pattern, other]
    else:
        domain = draw(st.lists(labels, min_size=2, max_size=4))
    return domain, pattern


@st.composite
def domains(draw: st.DrawFn) -> tuple[str, str]:
    """A domain as a header may spell it (any case, Unicode or not) and its canonical form."""
    labels = draw(st.lists(LABELS, min_size=1, max_size=3))
    tail = draw(TAILS)
    text = ".".join([*labels, tail])
    canonical = ".".join([*(a_label(label) for label in labels), tail])
    if draw(st.booleans()):
        text = text.upper()
    return text, canonical


LOCAL_CHARS = st.characters(exclude_categories=("Cs", "Cc"))  # qtext, plus UTF-8 (RFC 6532)
LOCAL_PARTS = st.text(LOCAL_CHARS, min_size=1, max_size=30)

ENCODED_WORDS = st.builds(
    "=?{}?{}?{}?=".format,
    st.one_of(
        st.sampled_from(["utf-8", "UTF-8", "iso-8859-1", "windows-1258", "utf-16", "x-unknown"]),
        st.sampled_from(["", "utf-8*vi", "unknown-8bit"]),
        st.text(st.characters(exclude_characters="?"), min_size=1, max_size=4),
        st.text(st.characters(min_codepoint=0x80), min_size=1, max_size=3),  # 8-bit, UTF-8
    ),
    st.sampled_from(["q", "Q", "b", "B", "x"]),
    st.one_of(
        st.sampled_from(["a", "=40", "PGFAZ21haWwuY29tPg==", "VsSDbiB0aMawIA==", "=C3=BF", "=="]),
        st.text(max_size=8),
    ),
)
HEADER_PIECES = st.one_of(
    st.sampled_from(
        [
            *'@<>()[]":;,.\\ ',
            "＠",  # full-width commercial at
            "\uff1c",  # full-width <
            "\r\n",
            "\r\n ",
            "\x00",
            "\x7f",
            "\t",
            "gov.vn",
            "x.gov.vn",
            "gmail.com",
            "sở",
            "xn--s-lym",
        ]
    ),
    ASCII_LABELS,
    ENCODED_WORDS,
    st.text(max_size=3),
)
HEADERS = st.one_of(
    st.text(max_size=200),
    st.lists(HEADER_PIECES, max_size=15).map("".join),
    st.builds(
        "{} <{}@{}>".format,
        st.lists(st.one_of(ENCODED_WORDS, ASCII_LABELS, LOCAL_PARTS.map(quote)), max_size=3).map(
            " ".join
        ),
        st.one_of(ASCII_LABELS, LOCAL_PARTS.map(quote)),
        domains().map(lambda pair: pair[0]),
    ),
)

_LDH = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


def assert_well_formed(box: Mailbox) -> None:
    """What every parsed mailbox promises its users."""
    assert box.local_part
    assert box.domain == canonical_domain(box.domain)
    # Rules take the domain of ``Mailbox.address`` as the text after its last "@".
    assert box.address.rpartition("@")[2] == box.domain


# --- domain matching --------------------------------------------------------------------------


@FAST
@given(st.one_of(domain_and_pattern(ASCII_POOL), domain_and_pattern(VI_POOL)))
def test_a_pattern_matches_itself_and_its_subdomains_by_whole_labels(
    case: tuple[list[str], list[str]],
) -> None:
    """``gov.vn`` matches ``gov.vn`` and ``x.gov.vn``; never ``evil-gov.vn``, ``evilgov.vn``,
    ``gov.vn.evil.com`` or an unrelated name."""
    domain, pattern = case
    assert domain_matches(".".join(domain), ".".join(pattern)) is is_label_suffix(domain, pattern)


@FAST
@given(LABELS, st.sampled_from(["gov.vn", "GOV.VN", "gov.vn."]))
def test_a_label_next_to_gov_vn_never_passes_for_it(label: str, pattern: str) -> None:
    """Whatever label an attacker picks, only ``label.gov.vn`` is under ``gov.vn``."""
    assert domain_matches(f"{label}.gov.vn", pattern)
    assert not domain_matches(f"{label}-gov.vn", pattern)
    assert not domain_matches(f"{label}gov.vn", pattern)
    assert not domain_matches(f"gov.vn.{label}", pattern)
    assert not domain_matches(f"gov.vn{label}", pattern)
    assert not domain_matches(f"gov-vn.{label}", pattern)


@FAST
@given(domain_and_pattern(ASCII_POOL), st.data())
def test_matching_ignores_case_and_a_trailing_dot(
    case: tuple[list[str], list[str]], data: st.DataObject
) -> None:
    """``LamDong.GOV.vn.`` is ``lamdong.gov.vn``, as a pattern and as a domain."""
    domain_labels, pattern_labels = case
    domain, pattern = ".".join(domain_labels), ".".join(pattern_labels)
    spelt_domain = data.draw(recased(domain)) + data.draw(st.sampled_from(["", "."]))
    spelt_pattern = data.draw(recased(pattern)) + data.draw(st.sampled_from(["", "."]))
    assert canonical_domain(spelt_domain) == domain
    expected = is_label_suffix(domain_labels, pattern_labels)
    assert domain_matches(spelt_domain, spelt_pattern) is expected
    assert domain_matches(spelt_domain, pattern) is expected
    assert domain_matches(domain, spelt_pattern) is expected


_DOMAIN_ALPHABET = st.sampled_from(
    [
        *"abcXYZ019-. \t",
        *IDNA_DOTS,
        *VI_LETTERS[:12],
        *[
            "Đ",
            "Ở",
            "ß",
            "ı",
            "İ",
            "ﬁ",
            "ｇ",
            "\u0301",
            "\u200d",
            "\u00ad",
            "\u202e",
            "\x00",
            "\ud800",
        ],
    ]
)


@FAST
@given(
    st.one_of(
        domains().map(lambda pair: pair[0]),
        st.text(_DOMAIN_ALPHABET, max_size=30),
        st.text(max_size=40),
    )
)
def test_canonical_domain_is_idempotent_and_refuses_with_address_error(text: str) -> None:
    """The canonical form is lower-case LDH ASCII, no trailing dot, its own canonical form, and
    matches what it came from; anything else is refused with AddressError."""
    try:
        canonical = canonical_domain(text)
    except AddressError:
        assert not domain_matches(text, text)  # refused names match nothing, not even themselves
        return
    assert canonical_domain(canonical) == canonical
    assert canonical.isascii()
    assert canonical == canonical.lower()
    assert len(canonical) <= 253
    labels = canonical.split(".")
    assert len(labels) >= 2
    assert all(_LDH.fullmatch(label) for label in labels)
    assert domain_matches(text, canonical)
    assert domain_matches(canonical, text)


# --- IDNA -------------------------------------------------------------------------------------


@FAST
@given(st.lists(VI_LABELS, min_size=1, max_size=3), TAILS, st.sampled_from(IDNA_DOTS))
def test_unicode_name_and_its_a_label_are_one_domain(
    labels: list[str], tail: str, dot: str
) -> None:
    """``sở.gov.vn``, ``SỞ.GOV.VN``, its NFD spelling and ``xn--s-lym.gov.vn`` are one domain."""
    unicode_name = ".".join([*labels, tail])
    ascii_name = ".".join([*(a_label(label) for label in labels), tail])
    ideographic = dot.join([*labels, *tail.split(".")])  # "。" and "．" separate labels too
    spellings = [
        unicode_name,
        unicode_name.upper(),
        unicodedata.normalize("NFD", unicode_name),
        unicode_name + ".",
        ideographic,
        ascii_name,
        ascii_name.upper(),
    ]
    for spelling in spellings:
        assert canonical_domain(spelling) == ascii_name, spelling
    assert domain_matches(unicode_name, ascii_name)
    assert domain_matches(ascii_name.upper(), unicode_name.upper())
    assert domain_matches(ideographic, tail)
    assert parse_addr_spec(f"vanthu@{unicode_name}").domain == ascii_name
    assert parse_mailbox_list(f"Văn thư <vanthu@{unicode_name.upper()}>")[0].domain == ascii_name


@FAST
@given(domain_and_pattern(VI_POOL))
def test_unicode_and_a_label_spellings_match_alike(case: tuple[list[str], list[str]]) -> None:
    """Whether a domain matches a pattern does not depend on which side is spelt in punycode."""
    domain, pattern = case
    expected = is_label_suffix(domain, pattern)
    domain_forms = [".".join(domain), ".".join(a_label(label) for label in domain)]
    pattern_forms = [".".join(pattern), ".".join(a_label(label) for label in pattern)]
    for d in [*domain_forms, domain_forms[0].upper()]:
        for p in pattern_forms:
            assert domain_matches(d, p) is expected, (d, p)


INVALID_IDNA = st.sampled_from(
    [
        "\ufffd",  # replacement character
        "\u200e",  # left-to-right mark
        "\u202e",  # right-to-left override
        "\ue000",  # private use
        "\U000e0001",  # language tag
        "\u2ff0",  # ideographic description character
        "\u0628",  # Arabic letter inside a Latin label (bidi rule)
        "\ud800",  # lone surrogate
        "\u00a0",  # no-break space
        "\x00",
        "ở" * 64,  # label longer than 63 octets once encoded
    ]
)


@FAST
@given(VI_LABELS, INVALID_IDNA, VI_LABELS, TAILS)
def test_invalid_idna_is_refused_not_crashing(before: str, bad: str, after: str, tail: str) -> None:
    """A name IDNA cannot encode is refused everywhere with AddressError and matches nothing."""
    name = f"{before}{bad}{after}.{tail}"
    with pytest.raises(AddressError):
        canonical_domain(name)
    with pytest.raises(AddressError):
        parse_addr_spec(f"vanthu@{name}")
    with pytest.raises(AddressError):
        parse_mailbox_list(f"Văn thư <vanthu@{name}>")
    assert not domain_matches(name, tail)
    assert organisational_domain(name) is None


def _is_valid_a_label(label: str) -> bool:
    try:
        label.encode("ascii").decode("idna")  # checks punycode and the IDNA round trip
    except UnicodeError:
        return False
    return True


@FAST
@given(st.from_regex(r"[a-z0-9]{1,20}", fullmatch=True), TAILS)
@example("zzzz", "gov.vn")
def test_xn_label_that_is_not_a_valid_a_label_is_refused(body: str, tail: str) -> None:
    """``xn--zzzz`` claims to be punycode but is not: it is invalid IDNA, refused as such."""
    label = f"xn--{body}"
    assume(not _is_valid_a_label(label))
    with pytest.raises(AddressError):
        canonical_domain(f"{label}.{tail}")


@FAST
@given(st.lists(LABELS, max_size=2), LABELS, st.booleans(), st.sampled_from(["", "."]))
def test_organisational_domain_is_the_unit_under_gov_vn(
    prefix: list[str], unit: str, upper: bool, dot: str
) -> None:
    """``dilinh.LamDong.gov.vn.`` belongs to ``lamdong.gov.vn``; ``gov.vn`` itself to no one."""
    name = ".".join([*prefix, unit, "gov", "vn"]) + dot
    if upper:
        name = name.upper()
    expected = f"{a_label(unit)}.gov.vn"
    assert organisational_domain(name) == expected
    assert domain_matches(name, expected)
    assert organisational_domain("GOV.VN" + dot) is None


# --- quoted local parts -----------------------------------------------------------------------


@FAST
@given(LOCAL_PARTS, domains())
def test_quoted_local_part_round_trips_and_keeps_the_domain(
    local: str, domain: tuple[str, str]
) -> None:
    """Any correctly quoted local part comes back as written; the domain stays the domain."""
    text, canonical = domain
    addr_spec = f"{quote(local)}@{text}"
    boxes = [
        parse_addr_spec(addr_spec),
        *parse_mailbox_list(addr_spec),
        *parse_mailbox_list(f"Nguyen Van A <{addr_spec}>"),
        *parse_mailbox_list(f"{quote(local)} <{addr_spec}>"),
    ]
    assert len(boxes) == 4
    for box in boxes:
        assert box.local_part == local
        assert box.domain == canonical
        assert_well_formed(box)


_JUNK = st.one_of(
    LOCAL_PARTS, st.sampled_from(["", ">", "<b@evil.com>", ", b@evil.com", ")", "(", "\\", '"'])
)


@FAST
@given(_JUNK, domains(), _JUNK, domains(), ASCII_LABELS)
@example("", ("x.gov.vn", "x.gov.vn"), "", ("gmail.com", "gmail.com"), "alice")
def test_at_sign_in_a_quoted_local_part_never_becomes_the_domain(
    before: str, inner: tuple[str, str], after: str, real: tuple[str, str], atom: str
) -> None:
    """``"a@x.gov.vn"@gmail.com`` is in gmail.com; unquoted, ``a@x.gov.vn@gmail.com`` is refused
    (the CVE-2023-27043 shape), as is the full-width ``a＠x.gov.vn``."""
    local = f"{before}@{inner[0]}{after}"
    text, canonical = real
    for box in (
        parse_addr_spec(f"{quote(local)}@{text}"),
        *parse_mailbox_list(f"{quote(local)}@{text}"),
        *parse_mailbox_list(f"Name <{quote(local)}@{text}>"),
    ):
        assert box.local_part == local
        assert box.domain == canonical
        assert_well_formed(box)
    for unquoted in (f"{atom}@{inner[0]}@{text}", f"{atom}＠{text}"):
        with pytest.raises(AddressError):
            parse_addr_spec(unquoted)
        with pytest.raises(AddressError):
            parse_mailbox_list(unquoted)


# --- the parser on arbitrary text -------------------------------------------------------------


@FAST
@given(HEADERS)
@example("a＠x.gov.vn")
@example("a@x.gov.vn@gmail.com")
@example('"a@gmail.com"@x.gov.vn')
@example("=?utf-8?b?PGFAZ21haWwuY29tPg==?= <b@x.gov.vn>")
@example("a\x00@x.gov.vn")
@example("=?\u00fc?q?a?= <a@x.gov.vn>")  # encoded word with a non-ASCII charset name
def test_parser_refuses_only_with_address_error(value: str) -> None:
    """Any text (control characters, full-width ＠, encoded words) parses into well-formed
    mailboxes or raises AddressError, the one documented failure, never anything else."""
    try:
        boxes = parse_mailbox_list(value)
    except AddressError:
        pass
    else:
        assert boxes
        for box in boxes:
            assert_well_formed(box)
    try:
        box = parse_addr_spec(value)
    except AddressError:
        pass
    else:
        assert_well_formed(box)


NON_ASCII_NAMES = st.text(
    st.characters(min_codepoint=0x80, categories=["L"]), min_size=1, max_size=4
)


@FAST
@given(
    st.one_of(
        st.sampled_from(["x-unknown", "no-such-charset"]),
        NON_ASCII_NAMES,
    ),
    st.sampled_from(["q", "b"]),
    st.from_regex(r"[A-Za-z0-9]{1,12}", fullmatch=True),
)
@example("\u00fc", "q", "a")
def test_encoded_word_in_an_unknown_charset_is_kept_as_it_stands(
    charset: str, encoding: str, payload: str
) -> None:
    """``decode_words`` documents that undecodable text is judged as it stands (display names
    are decoded with it, so a failure here is a failure of the parser)."""
    word = f"=?{charset}?{encoding}?{payload}?="
    assert decode_words(word) == word
