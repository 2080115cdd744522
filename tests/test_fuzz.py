"""A small sample of the fuzz run (bench/fuzz/) in CI: hostile messages through the check
path and hostile SMTP dialogues through real gateways, with no unhandled exception.

The full run is the documented command ``python -m bench.fuzz --messages 100000 --seed N``.
"""

from __future__ import annotations

import asyncio

from bench.fuzz.dialogue_run import run_dialogues
from bench.fuzz.dialogues import generate_dialogue
from bench.fuzz.message_run import run_messages
from bench.fuzz.messages import count_draws, generate_message
from bench.fuzz.replies import reply_problem


def _failures(report) -> str:  # type: ignore[no-untyped-def]
    return "\n".join(
        f"{n} x {kind} (e.g. #{report.examples[kind][0]}): {report.details[kind][-600:]}"
        for kind, n in report.failures.most_common()
    )


def test_generation_is_deterministic() -> None:
    """The same seed and index give the same message and dialogue; others differ."""
    assert generate_message(7, 3) == generate_message(7, 3)
    assert generate_message(7, 3) != generate_message(8, 3)
    assert generate_dialogue(7, 3) == generate_dialogue(7, 3)


# The hostile structures of issue 15 the generators name (bench/fuzz/pdfs.py, containers.py,
# mime.py, parts.py, headers.py): each must occur in a sample, or its code path goes unfuzzed.
_NAMED_DRAWS = {
    *(
        f"pdf.update.{kind}"
        for kind in (
            "redefine",
            "repoint",
            "free",
            "no-xref",
            "startxref",
            "root",
            "many-revisions",
            "many-eof",
            "prev",
        )
    ),
    *(f"pdf.forge.{kind}" for kind in ("contents", "byte-range", "type", "subfilter")),
    *(
        f"container.{kind}"
        for kind in (
            "gzip",
            "gzip-truncated",
            "gzip-lying",
            "gzip-odd",
            "tar",
            "tar.gz",
            "tar-huge-size",
            "nested",
            "stub-zip",
            "bz2-xz",
        )
    ),
    *(
        f"mime.{kind}"
        for kind in (
            "encoding-odd",
            "two-fields",
            "two-parameters",
            "two-boundaries",
            "space-before-colon",
            "document-in-body",
            "partial",
            "forward-encoded.base64",
            "forward-encoded.quoted-printable",
            "uuencoded",
            "uuencoded.many",
            "uuencoded.no-end",
            "uuencoded.only-begins",
            "word-xml",
            "signed-in-mixed",
            "signed-in-mixed.disclaimer",
        )
    ),
    *(f"header.{kind}" for kind in ("lookalike-domain", "quoted-local-part", "encoded-address")),
}


def test_the_hostile_structures_are_drawn() -> None:
    """A sample of generated messages holds every named structure: each MIME and header one,
    and PDF updates, forged signature dictionaries and containers (each kind of these is one
    entry of a table, a few in a thousand messages: the sample holds most of them)."""
    draws, messages = count_draws(20261122, 1500)
    by_family = ("pdf.update.", "pdf.forge.", "container.")
    assert sorted(n for n in _NAMED_DRAWS - set(draws) if not n.startswith(by_family)) == []
    assert all(any(n.startswith(family) for n in draws) for family in by_family)
    assert len(set(draws)) >= len(_NAMED_DRAWS) - 3
    assert sorted(set(draws) - _NAMED_DRAWS) == []  # a new name belongs in the list above
    assert all(0 < messages[name] <= draws[name] for name in draws)


def test_reply_check_catches_leaks() -> None:
    """The oracle itself: internals and codeless lines are failures, good replies are not."""
    assert reply_problem("250 2.0.0 Ok: accepted as X1") is None
    assert reply_problem("500 Error: (ValueError) boom") is not None
    assert reply_problem("Traceback (most recent call last):") is not None
    assert reply_problem("25 ok") is not None


def test_a_sample_of_hostile_messages_is_judged_without_exceptions() -> None:
    """300 generated messages through congvu check's path: every one gets a verdict."""
    report = run_messages(300, seed=20261122, workers=1)
    assert report.messages == 300
    assert sum(report.verdicts.values()) == 300
    assert report.verdicts["accept"] and report.verdicts["reject"]  # the sample reaches both
    assert report.exceptions == 0, _failures(report)


def test_a_sample_of_hostile_dialogues_gets_only_well_formed_replies() -> None:
    """30 generated SMTP sessions against real gateways: no internals, no 250 without a
    delivery, no smtp.exception in the log."""
    report = asyncio.run(run_dialogues(30, seed=20261122))
    assert report.dialogues == 30
    assert report.replies > 30
    assert report.exceptions == 0, _failures(report)
