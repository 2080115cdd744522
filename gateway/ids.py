"""Decision ids: 26-character, time-ordered, unique (ULID layout, Crockford base32).

Sorting ids sorts decisions by time, which is what an admin reading ``log tail`` expects, and
an id quoted by an officer from a refusal can be found without a time range.
"""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_decision_id(now_ms: int | None = None) -> str:
    """A new id: 48 bits of milliseconds since the epoch, then 80 random bits."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    value = (ms << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))
