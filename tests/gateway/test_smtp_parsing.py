"""The fast path for ``<local@domain>`` in MAIL/RCPT gives exactly what aiosmtpd's own parser
gives, on every argument it takes (the rest goes to aiosmtpd's parser)."""

from __future__ import annotations

import asyncio
import random

from aiosmtpd.smtp import SMTP

from gateway.smtp import _SIMPLE_PATH

PIECES = [
    "a",
    "B",
    "9",
    ".",
    "-",
    "+",
    "=",
    "_",
    "@",
    "<",
    ">",
    " ",
    "\t",
    "\r",
    "\x00",
    '"',
    "[",
    "]",
    "(",
    ")",
    ",",
    ":",
    "x.gov.vn",
    "SIZE=10",
    "é",
]

ATOMS = ["a", "B", "9", "-", "+", "_", "vanthu", ".x"]


def test_the_fast_path_agrees_with_aiosmtpd() -> None:
    loop = asyncio.new_event_loop()  # aiosmtpd's SMTP would make (and leak) one
    try:
        check_against(SMTP(object(), loop=loop))
    finally:
        loop.close()


def check_against(stock: SMTP) -> None:
    rng = random.Random(20261122)
    taken = 0
    for _ in range(20000):
        pieces = ATOMS if rng.random() < 0.6 else PIECES  # mostly what a real MTA sends
        inner = "".join(rng.choice(pieces) for _ in range(rng.randrange(1, 6)))
        arg = (
            rng.choice(["", " ", "\t", "\r"])
            + "<"
            + inner
            + "@"
            + rng.choice(["b.gov.vn", "b", "-b", "b-", "b..c", "b.", "[1.2.3.4]", "b_c"])
            + ">"
            + rng.choice(
                ["", " ", "  SIZE=1", " BODY=8BITMIME\r", "\x00", "x", " (c) SIZE=1", "\t(c)"]
            )
        )
        fast = _SIMPLE_PATH.fullmatch(arg) or _SIMPLE_PATH.match(arg)
        if fast is None:
            continue
        taken += 1
        assert (fast.group(1), fast.group(2)) == stock._getaddr(arg), repr(arg)
    assert taken > 1500  # the comparison covered the fast path well
