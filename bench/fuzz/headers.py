"""Header fields of the generated messages: encoded words, mailbox addresses (official,
personal, malformed; official domains written with look-alike letters, in Unicode or as
A-labels; quoted local parts holding an official address) and address fields around them
(some hiding an address in encoded words), folding, parameter lists (quoted, RFC 2231,
duplicated, thousands), Content-Type values, DKIM-Signature values, the mutations of a whole
header list (duplicated, dropped, junk and 8-bit fields), and the serialization of a header
list to bytes."""

from __future__ import annotations

import base64
import quopri
import random

from bench.fuzz.corpus import (
    _FIELD_NAMES,
    _MAIN_TYPES,
    _NAMES,
    _OFFICIAL,
    _OTHER,
    _PERSONAL,
    _SUBJECTS,
)
from bench.fuzz.draw import _chance, _drew, _garbage, _pick, _printable

# Letters that look like the Latin letters of official domains: Cyrillic, Greek, Latin
# variants and fullwidth forms (which IDNA maps back to ASCII); and dots that IDNA reads as
# dots.
_LOOKALIKE_LETTERS = {
    "a": ("\u0430", "\u0251", "\uff41"),  # Cyrillic a, Latin alpha, fullwidth a
    "o": ("\u043e", "\u03bf", "\uff4f", "\u0585"),  # Cyrillic o, Greek omicron, fullwidth
    "e": ("\u0435", "\uff45"),  # Cyrillic ie, fullwidth e
    "p": ("\u0440", "\u03c1"),  # Cyrillic er, Greek rho
    "c": ("\u0441", "\uff43"),  # Cyrillic es, fullwidth c
    "i": ("\u0456", "\u0131", "\uff49"),  # Cyrillic i, dotless i, fullwidth i
    "l": ("\u04cf", "\uff4c", "\u0399"),  # Cyrillic palochka, fullwidth l, Greek Iota
    "n": ("\u0578", "\uff4e"),  # Armenian vo, fullwidth n
    "d": ("\u0501", "\uff44"),  # Cyrillic komi de, fullwidth d
    "h": ("\u04bb", "\uff48"),  # Cyrillic shha, fullwidth h
    "g": ("\u0261", "\uff47"),  # Latin script g, fullwidth g
    "v": ("\u03bd", "\u0475", "\uff56"),  # Greek nu, Cyrillic izhitsa, fullwidth v
    "m": ("\uff4d",),
    "t": ("\uff54",),
    "b": ("\u042c", "\uff42"),  # Cyrillic soft sign, fullwidth b
    "u": ("\u03c5", "\uff55"),  # Greek upsilon, fullwidth u
    "s": ("\u0455",),  # Cyrillic dze
}
_LOOKALIKE_DOTS = ("\u3002", "\uff0e", "\uff61")  # ideographic, fullwidth, halfwidth stops
_OFFICIAL_ASCII = tuple(a.lower() for a in _OFFICIAL if a.isascii() and "xn--" not in a)


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


def _a_label(domain: str) -> str:
    """``domain`` as IDNA A-labels (fullwidth letters become ASCII), or as it is if IDNA
    refuses it."""
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return domain


def _lookalike_domain(rng: random.Random, domain: str) -> str:
    """``domain`` with one to four letters (and sometimes a dot) swapped for look-alikes,
    in Unicode, as A-labels, or each label either way. Often one in "gov.vn": the official
    domain of the default policy, whose subdomains are all official."""
    chars = list(domain)
    spots = [i for i, c in enumerate(chars) if c in _LOOKALIKE_LETTERS]
    chosen = set(rng.sample(spots, min(len(spots), rng.randrange(1, 4))))
    suffix = [i for i in spots if i >= len(domain) - len("gov.vn")]
    if suffix and _chance(rng, 0.6):
        chosen.add(_pick(rng, suffix))
    for i in sorted(chosen):
        chars[i] = _pick(rng, _LOOKALIKE_LETTERS[chars[i]])
    dots = [i for i, c in enumerate(chars) if c == "."]
    if dots and _chance(rng, 0.1):
        chars[_pick(rng, dots)] = _pick(rng, _LOOKALIKE_DOTS)
    fake = "".join(chars)
    if _chance(rng, 0.05):
        fake = fake.upper()
    roll = rng.random()
    if roll < 0.5:
        return fake
    if roll < 0.9:
        return _a_label(fake)
    return ".".join(_a_label(label) if _chance(rng, 0.5) else label for label in fake.split("."))


def _disguised_address(rng: random.Random) -> str:
    """An address made to pass for an official one: the domain in look-alike letters, or a
    quoted local part (or a %-hack) that holds the official address."""
    official = _pick(rng, _OFFICIAL_ASCII)
    local, _, domain = official.rpartition("@")
    if _chance(rng, 0.55):
        _drew("header.lookalike-domain")
        return f"{local}@{_lookalike_domain(rng, domain)}"
    _drew("header.quoted-local-part")
    other = _pick(rng, (*_PERSONAL, *_OTHER)).rpartition("@")[2]
    return _pick(
        rng,
        (
            f'"{official}"@{other}',
            f'"{official}"@{other}',
            f'"{official} "@{other}',
            f'"<{official}>"@{other}',
            f'"{local}\\@{domain}"@{other}',
            f'"{official}@"@{other}',
            f'"{official}"@{domain}',
            f'"Van thu {official}"@{other}',
            f'"{official}"@{_lookalike_domain(rng, domain)}',
            f"{local}%{domain}@{other}",
            f'"{local}"@{domain}',
        ),
    )


def _hidden_address_field(rng: random.Random, address: str) -> str:
    """An address field around ``address`` with an official address hidden in encoded words
    (as a display name, a whole mailbox, a local part, or split across two words)."""
    _drew("header.encoded-address")
    official = _pick(rng, _OFFICIAL)
    local, _, domain = official.rpartition("@")
    b_encoding = _chance(rng, 0.5)

    def word(text: str) -> str:
        data = text.encode("utf-8")
        if b_encoding:
            return f"=?utf-8?B?{base64.b64encode(data).decode()}?="
        return f"=?utf-8?Q?{quopri.encodestring(data, header=True).decode()}?=".replace("\n", "")

    cut = rng.randrange(1, len(official))
    return _pick(
        rng,
        (
            f"{word(official)} <{address}>",
            f"{word(f'Văn thư <{official}>')} <{address}>",
            f'"{word(official)}" <{address}>',
            f"{word(official[:cut])} {word(official[cut:])} <{address}>",
            f"{word(official[:cut])}{word(official[cut:])}",
            word(f"<{official}>"),
            word(official),
            f"<{word(official)}>",
            f"{word(local)}@{domain}",
            f"<{word(official)}@{address.rpartition('@')[2]}>",
            f"{word(official)}, <{address}>",
        ),
    )


def _mailbox_address(rng: random.Random) -> str:
    if _chance(rng, 0.05):
        return _disguised_address(rng)
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
    if _chance(rng, 0.04):
        return _hidden_address_field(rng, address)
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
