"""Random draws shared by every generator: a chance, a pick, garbage bytes, printable junk,
a few lines of body text, and damage to a byte string. Each takes the generator of one
message or dialogue, so that a run stays deterministic. Also the tally of named draws
(``_drew``), which counts how often the hostile structures are generated and never changes
what is."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

from bench.fuzz.corpus import _BODY_LINES

T = TypeVar("T")


def _chance(rng: random.Random, p: float) -> bool:
    return rng.random() < p


def _pick(rng: random.Random, items: Sequence[T]) -> T:
    return items[rng.randrange(len(items))]


def _garbage(rng: random.Random, n: int) -> bytes:
    return bytes(rng.randrange(256) for _ in range(n))


def _printable(rng: random.Random, n: int) -> str:
    return "".join(chr(rng.randrange(0x21, 0x7F)) for _ in range(n))


def _text(rng: random.Random, lines: int) -> str:
    out = [_pick(rng, _BODY_LINES) for _ in range(lines)]
    if _chance(rng, 0.1):
        out.insert(rng.randrange(len(out) + 1), _printable(rng, rng.randrange(1, 200)))
    return "\r\n".join(out) + "\r\n"


def _damage(rng: random.Random, data: bytes, alphabet: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randrange(1, 6)):
        if out:
            out[rng.randrange(len(out))] = _pick(rng, alphabet)
    if _chance(rng, 0.3):
        del out[rng.randrange(len(out) + 1) :]
    return bytes(out)


_TALLY: Counter[str] | None = None  # counting only inside _counting_draws()


def _drew(label: str) -> None:
    """Note that the structure ``label`` (``"pdf.update.repoint"``, ...) was generated."""
    if _TALLY is not None:
        _TALLY[label] += 1


@contextmanager
def _counting_draws() -> Iterator[Counter[str]]:
    """The labels passed to ``_drew`` while inside, counted (generation is unchanged)."""
    global _TALLY  # noqa: PLW0603 - one tally per process, read by its caller
    previous, _TALLY = _TALLY, Counter()
    try:
        yield _TALLY
    finally:
        _TALLY = previous
