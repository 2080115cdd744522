"""Strict parsing of header addresses and matching of domains.

Why not ``email.utils.getaddresses``: the standard library parser is lenient on purpose and,
before the CVE-2023-27043 fix (not in every 3.11 patch release), reads headers such as
``alice@x.gov.vn@gmail.com`` or ``a@gmail.com)<b@x.gov.vn>`` as an address in a different
domain than the one a mail client shows. A gateway that judges the domain must refuse to guess:
this parser accepts the RFC 5322 grammar without its obsolete forms (plus the ubiquitous ``.``
in display names) and raises :class:`AddressError` on anything else.

Domains are compared in one canonical form: lower case, IDNA (punycode) ASCII, no trailing dot.
A pattern ``gov.vn`` matches ``gov.vn`` and ``x.gov.vn`` but never ``evil-gov.vn``.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from email.errors import CharsetError, HeaderParseError
from email.header import decode_header, make_header

from publicsuffixlist import PublicSuffixList

__all__ = [
    "AddressError",
    "Mailbox",
    "addresses_in_text",
    "ascii_fold",
    "canonical_domain",
    "comments_of",
    "decode_words",
    "domain_in",
    "domain_matches",
    "imitated_domain",
    "organisational_domain",
    "parse_addr_spec",
    "parse_mailbox_list",
    "shown_text",
]

_SPECIALS = set('()<>[]:;@\\,."')
_TEXT_CHAR = r"[^\s@<>\"'(),;:\[\]]"  # what can make up an address in free text
# Bounded (RFC 5321: 64-octet local part, 255-octet domain) and anchored at the start of a
# run of such characters: linear time. Unanchored and unbounded, a long run without "@" was
# rescanned from every position (quadratic: 16 s for 64 KB of text, with the GIL held).
_ADDRESS_IN_TEXT = re.compile(
    rf"(?<!{_TEXT_CHAR}){_TEXT_CHAR}{{1,64}}@{_TEXT_CHAR}{{1,252}}\.{_TEXT_CHAR}{{2,63}}"
)
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_MAX_HEADER_VALUE = 8192  # longer From/Sender/Reply-To values are refused, not parsed


class AddressError(ValueError):
    """The header value is not an unambiguous RFC 5322 address list."""


@dataclass(frozen=True)
class Mailbox:
    """One address as a mail client would show it: display name and ``local@domain``."""

    display_name: str
    local_part: str
    domain: str  # canonical: lower case, IDNA ASCII, no trailing dot

    @property
    def address(self) -> str:
        """The address in ``local@domain`` form."""
        return f"{self.local_part}@{self.domain}"


@dataclass(frozen=True)
class _Token:
    kind: str  # "atom", "qstring", or the special character itself
    text: str
    space_before: bool


@functools.lru_cache(maxsize=4096)
def canonical_domain(domain: str) -> str:
    """Return ``domain`` in canonical form, or raise :class:`AddressError` if it is not one.

    Cached: every message compares its domains with the official and personal-provider lists.
    """
    name = domain.strip().rstrip(".").lower()
    if not name:
        raise AddressError("empty domain")
    try:
        ascii_name = name.encode("idna").decode("ascii") if not name.isascii() else name
    except UnicodeError as exc:
        raise AddressError(f"domain {domain!r} is not a valid internationalised name") from exc
    if len(ascii_name) > 253:
        raise AddressError("domain longer than 253 characters")
    labels = ascii_name.split(".")
    if len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        raise AddressError(f"{domain!r} is not a valid domain name")
    for label in labels:
        if label.startswith("xn--"):
            # An A-label must decode to the Unicode name it claims to encode (RFC 5891 5.4).
            try:
                unicode_label = label.encode("ascii").decode("idna")
                if unicode_label.encode("idna").decode("ascii") != label:
                    raise UnicodeError("not a canonical A-label")
            except UnicodeError as exc:
                raise AddressError(f"{domain!r}: {label!r} is not a valid A-label") from exc
    return ascii_name


def domain_matches(domain: str, pattern: str) -> bool:
    """True when ``domain`` is ``pattern`` or one of its subdomains (both canonicalised)."""
    try:
        d = canonical_domain(domain)
        p = canonical_domain(pattern)
    except AddressError:
        return False
    return d == p or d.endswith("." + p)


def domain_in(domain: str, patterns: Iterable[str]) -> bool:
    """True when ``domain`` matches any of ``patterns`` (see :func:`domain_matches`)."""
    return any(domain_matches(domain, p) for p in patterns)


@functools.cache
def _psl() -> PublicSuffixList:
    return PublicSuffixList()  # the list bundled with the package: no network


def organisational_domain(domain: str) -> str | None:
    """The registered domain (one label under a public suffix): ``lamdong.gov.vn`` for
    ``dilinh.lamdong.gov.vn``; None for a public suffix itself such as ``gov.vn``."""
    try:
        name = canonical_domain(domain)
    except AddressError:
        return None
    org: str | None = _psl().privatesuffix(name)
    return org


def ascii_fold(text: str) -> str:
    """Vietnamese (or any) text without diacritics, printable ASCII only, for SMTP replies."""
    text = text.replace("đ", "d").replace("Đ", "D")
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return "".join(c if " " <= c <= "~" else "?" for c in stripped if c not in "\r\n")


def addresses_in_text(text: str) -> list[str]:
    """Things in free text (a display name, a comment) that a reader would take for addresses."""
    if "@" not in text:  # most text: no scan at all
        return []
    return _ADDRESS_IN_TEXT.findall(text)


def _tokenize(value: str) -> tuple[list[_Token], list[str]]:
    """Split a header value into tokens; comments are returned separately (they are CFWS)."""
    tokens: list[_Token] = []
    comments: list[str] = []
    i, n = 0, len(value)
    space = False
    while i < n:
        c = value[i]
        if c in " \t\r\n":
            space = True
            i += 1
        elif c == "(":
            depth, j, buf = 1, i + 1, []
            while j < n and depth:
                ch = value[j]
                if ch == "\\" and j + 1 < n:
                    buf.append(value[j + 1])
                    j += 2
                    continue
                if ch == "(":
                    depth += 1
                elif ch == ")":
                    depth -= 1
                    if not depth:
                        break
                buf.append(ch)
                j += 1
            if depth:
                raise AddressError("unterminated comment")
            comments.append("".join(buf))
            space = True
            i = j + 1
        elif c == '"':
            j, buf = i + 1, []
            while j < n and value[j] != '"':
                if value[j] == "\\":
                    if j + 1 >= n:
                        break
                    j += 1
                if value[j] in "\r\n":
                    raise AddressError("line break inside a quoted string")
                buf.append(value[j])
                j += 1
            if j >= n:
                raise AddressError("unterminated quoted string")
            tokens.append(_Token("qstring", "".join(buf), space))
            space = False
            i = j + 1
        elif c == ")":
            raise AddressError("unbalanced ')'")
        elif c == "[":
            raise AddressError("domain literals ([...]) are not accepted")
        elif c == "\\":
            raise AddressError("backslash outside a quoted string")
        elif c in _SPECIALS:
            tokens.append(_Token(c, c, space))
            space = False
            i += 1
        elif ord(c) < 32 or ord(c) == 127:
            raise AddressError("control character in address header")
        else:
            j = i
            while j < n and value[j] not in _SPECIALS and value[j] not in " \t\r\n":
                if ord(value[j]) < 32 or ord(value[j]) == 127:
                    raise AddressError("control character in address header")
                j += 1
            tokens.append(_Token("atom", value[i:j], space))
            space = False
            i = j
    return tokens, comments


class _Parser:
    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.pos = 0

    def peek(self) -> _Token | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> _Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def expect(self, kind: str) -> _Token:
        token = self.peek()
        if token is None or token.kind != kind:
            found = "end of header" if token is None else repr(token.text)
            raise AddressError(f"expected {kind!r}, found {found}")
        return self.take()

    def dot_atom(self, what: str) -> str:
        """``atom *("." atom)`` with no white space or comments inside (obsolete forms refused)."""
        first = self.expect("atom")
        parts = [first.text]
        while (tok := self.peek()) is not None and tok.kind == ".":
            dot = self.take()
            nxt = self.expect("atom")
            if dot.space_before or nxt.space_before:
                raise AddressError(f"white space inside the {what}")
            parts.append(".")
            parts.append(nxt.text)
        return "".join(parts)

    def addr_spec(self) -> tuple[str, str]:
        tok = self.peek()
        if tok is not None and tok.kind == "qstring":
            local = self.take().text
            if not local or any(ord(c) < 32 for c in local):
                raise AddressError("empty or control characters in quoted local part")
        else:
            local = self.dot_atom("local part")
        at = self.expect("@")
        domain_tok = self.peek()
        if at.space_before or (domain_tok is not None and domain_tok.space_before):
            raise AddressError("white space around '@'")
        domain = canonical_domain(self.dot_atom("domain"))
        return local, domain

    def phrase(self) -> list[_Token]:
        words: list[_Token] = []
        while (tok := self.peek()) is not None and tok.kind in ("atom", "qstring", "."):
            words.append(self.take())
        return words

    def mailbox(self) -> Mailbox:
        start = self.pos
        words = self.phrase()
        nxt = self.peek()
        if nxt is not None and nxt.kind == "<":
            if words and words[0].kind == ".":
                raise AddressError("display name starts with '.'")
            self.take()
            local, domain = self.addr_spec()
            self.expect(">")
            return Mailbox(_display_name(words), local, domain)
        if nxt is not None and nxt.kind == ":":
            raise AddressError("group syntax is not accepted in this header")
        # A bare addr-spec: re-read the same tokens with the addr-spec grammar.
        self.pos = start
        local, domain = self.addr_spec()
        return Mailbox("", local, domain)


def decode_words(text: str) -> str:
    """Decode RFC 2047 encoded words as a mail client shows them (adjacent words joined).

    Clients also decode encoded words inside quoted strings and comments, where RFC 2047
    forbids them, so this is applied there too. Undecodable text is judged as it stands.
    """
    if "=?" not in text:
        return text
    try:
        return str(make_header(decode_header(text)))
    except (HeaderParseError, CharsetError, ValueError, LookupError, UnicodeError):
        return text


def shown_text(text: str) -> str:
    """Text as a reader would take it: encoded words decoded, compatibility forms folded.

    NFKC turns look-alike forms such as the full-width ``＠`` into ``@``, so an address
    spelled with them in a display name is seen for what it shows.
    """
    return unicodedata.normalize("NFKC", decode_words(text))


def _display_name(words: list[_Token]) -> str:
    parts: list[str] = []
    for word in words:
        if parts and word.space_before:
            parts.append(" ")
        parts.append(word.text)
    return decode_words("".join(parts).strip()).strip()


def parse_mailbox_list(value: str) -> list[Mailbox]:
    """Parse a From/Sender/Reply-To value into mailboxes, or raise :class:`AddressError`.

    Comments are allowed where RFC 5322 allows CFWS; a comment or display name that shows an
    address other than the real one is reported by :func:`Mailbox` users, not here.
    """
    if len(value) > _MAX_HEADER_VALUE:
        raise AddressError("address header too long")
    tokens, _comments = _tokenize(value)
    if not tokens:
        raise AddressError("no address")
    parser = _Parser(tokens)
    mailboxes = [parser.mailbox()]
    while parser.peek() is not None:
        parser.expect(",")
        mailboxes.append(parser.mailbox())
    return mailboxes


def comments_of(value: str) -> list[str]:
    """The comments in a header value (text in parentheses), which some mail clients display."""
    try:
        return _tokenize(value)[1]
    except AddressError:
        return []


def parse_addr_spec(value: str) -> Mailbox:
    """Parse a bare ``local@domain`` (an SMTP envelope address), or raise :class:`AddressError`."""
    tokens, comments = _tokenize(value)
    if comments or any(t.space_before for t in tokens):
        raise AddressError("an envelope address has no comments or white space")
    parser = _Parser(tokens)
    local, domain = parser.addr_spec()
    extra = parser.peek()
    if extra is not None:
        raise AddressError(f"unexpected {extra.text!r} after the address")
    return Mailbox("", local, domain)


@functools.lru_cache(maxsize=4096)
def _skeleton(name: str) -> str:
    """``name`` (Unicode) with each character that looks like a Latin letter or digit
    replaced by it (Unicode's confusables, as ``confusable_homoglyphs`` packs them): the
    Cyrillic о of ``lamdоng`` becomes o. Other characters stay (đ is not d)."""
    # Loaded on the first non-ASCII domain: its table costs start-up time every command
    # would pay otherwise.
    from confusable_homoglyphs import confusables  # noqa: PLC0415

    out = []
    for char in name:
        if char.isascii():
            out.append(char)
            continue
        found = confusables.is_confusable(char, preferred_aliases=["latin"], greedy=True) or []
        latin = [
            h["c"]
            for entry in found
            for h in entry["homoglyphs"]
            if len(h["c"]) == 1 and h["c"].isascii() and h["c"].isalnum()
        ]
        out.append(latin[0].lower() if latin else char)
    return "".join(out)


def imitated_domain(domain: str, official: Iterable[str]) -> str:
    """The official domain that ``domain`` (canonical, A-labels) imitates with look-alike
    characters (``lamdоng.gov.vn`` with a Cyrillic о, written in Unicode or as its A-label
    ``xn--...``), or "" when it imitates none. The official domains and their subdomains
    themselves imitate nothing; ASCII names are never look-alikes here (a typo domain is
    another matter)."""
    if domain.isascii() and "xn--" not in domain:
        return ""
    try:
        unicode_name = domain.encode("ascii").decode("idna")
    except UnicodeError:
        return ""  # not a valid IDN: refused for its syntax elsewhere
    shown = _skeleton(unicodedata.normalize("NFC", unicode_name))
    for name in official:
        if domain_in(domain, (name,)):
            continue  # really in that official domain (gov.vn holds xn--...gov.vn too)
        if shown == name or shown.endswith("." + name):
            return name
    return ""
