"""A small sample of the fuzz run (bench/fuzz.py) in CI: hostile messages through the check
path and hostile SMTP dialogues through real gateways, with no unhandled exception.

The full run is the documented command ``python bench/fuzz.py --messages 100000 --seed N``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "fuzz.py"


@pytest.fixture(scope="module")
def fuzz() -> Iterator[ModuleType]:
    """bench/fuzz.py, loaded by path (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location("congvu_bench_fuzz", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def _failures(report) -> str:  # type: ignore[no-untyped-def]
    return "\n".join(
        f"{n} x {kind} (e.g. #{report.examples[kind][0]}): {report.details[kind][-600:]}"
        for kind, n in report.failures.most_common()
    )


def test_generation_is_deterministic(fuzz: ModuleType) -> None:
    """The same seed and index give the same message and dialogue; others differ."""
    assert fuzz.generate_message(7, 3) == fuzz.generate_message(7, 3)
    assert fuzz.generate_message(7, 3) != fuzz.generate_message(8, 3)
    assert fuzz.generate_dialogue(7, 3) == fuzz.generate_dialogue(7, 3)


def test_reply_check_catches_leaks(fuzz: ModuleType) -> None:
    """The oracle itself: internals and codeless lines are failures, good replies are not."""
    assert fuzz.reply_problem("250 2.0.0 Ok: accepted as X1") is None
    assert fuzz.reply_problem("500 Error: (ValueError) boom") is not None
    assert fuzz.reply_problem("Traceback (most recent call last):") is not None
    assert fuzz.reply_problem("25 ok") is not None


def test_a_sample_of_hostile_messages_is_judged_without_exceptions(fuzz: ModuleType) -> None:
    """300 generated messages through congvu check's path: every one gets a verdict."""
    report = fuzz.run_messages(300, seed=20261122, workers=1)
    assert report.messages == 300
    assert sum(report.verdicts.values()) == 300
    assert report.verdicts["accept"] and report.verdicts["reject"]  # the sample reaches both
    assert report.exceptions == 0, _failures(report)


def test_a_sample_of_hostile_dialogues_gets_only_well_formed_replies(fuzz: ModuleType) -> None:
    """30 generated SMTP sessions against real gateways: no internals, no 250 without a
    delivery, no smtp.exception in the log."""
    report = asyncio.run(fuzz.run_dialogues(30, seed=20261122))
    assert report.dialogues == 30
    assert report.replies > 30
    assert report.exceptions == 0, _failures(report)
