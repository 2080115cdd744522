"""The command, ``python -m bench.fuzz``: its options, the summary it prints of each half and
how to reproduce each kind of failure, and the replay of one message (with its envelope,
verdict, and a file and configuration for ``congvu check``) or one dialogue (with its
transcript)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import bench.fuzz
from bench.fuzz.config import HOSTNAME
from bench.fuzz.dialogue_run import run_dialogues
from bench.fuzz.message_run import run_messages
from bench.fuzz.messages import generate_message
from bench.fuzz.report import MessageReport
from bench.fuzz.runner import CheckRunner


def _print_failures(
    failures: Counter[str], examples: dict[str, list[int]], details: dict[str, str], what: str
) -> None:
    for kind, n in failures.most_common():
        print(f"  {n:>7}  {kind}  ({what} {', '.join(map(str, examples.get(kind, [])))})")
        detail = details.get(kind, "")
        if detail:
            for line in detail.strip().splitlines()[-6:]:
                print(f"             | {line[:150]}")


def _progress(label: str) -> Callable[[int, int], None]:
    began = time.perf_counter()

    def show(done: int, total: int) -> None:
        rate = done / max(time.perf_counter() - began, 1e-9)
        print(f"\r{label}: {done}/{total} ({rate:.0f}/s)", end="", file=sys.stderr, flush=True)
        if done >= total:
            print(file=sys.stderr)

    return show


def _replay(seed: int, index: int, dump: Path | None) -> int:
    message = generate_message(seed, index)
    print(f"message {index} of seed {seed}: {len(message.raw)} bytes")
    print(
        f"  envelope: from <{message.mail_from}> to {list(message.recipients)} "
        f"client {message.client_ip} helo {message.helo!r} tls {message.tls}"
    )
    report = MessageReport()
    runner = CheckRunner()
    try:
        runner.run(message, index, report)
    finally:
        runner.close()
    print(f"  verdict: {dict(report.verdicts)} reasons: {dict(report.reasons)}")
    _print_failures(report.failures, report.examples, report.details, "message")
    _print_failures(report.warnings, report.examples, report.details, "warning, message")
    if dump is not None:
        dump.mkdir(parents=True, exist_ok=True)
        (dump / f"fuzz-{seed}-{index}.eml").write_bytes(message.raw)
        (dump / "gateway.toml").write_text(
            f'[server]\nhostname = "{HOSTNAME}"\n\n[relay]\nlocal_domains = ["lamdong.gov.vn"]\n'
            'trusted_networks = ["127.0.0.0/8"]\n',
            "utf-8",
        )
        rcpts = " ".join(f"--rcpt {r!r}" for r in message.recipients)
        print(
            f"  written to {dump}; reproduce with:\n  congvu check --config {dump}/gateway.toml "
            f"--mail-from {message.mail_from!r} {rcpts} --client-ip {message.client_ip} "
            f"--helo {message.helo!r} {dump}/fuzz-{seed}-{index}.eml"
        )
    return 1 if report.exceptions else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fuzz", description=(bench.fuzz.__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--messages", type=int, default=10000, help="messages to check")
    parser.add_argument("--dialogues", type=int, default=500, help="SMTP dialogues to play")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--start", type=int, default=0, help="first message/dialogue index")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--replay", type=int, metavar="INDEX", help="check one message, verbosely")
    parser.add_argument("--dump", type=Path, metavar="DIR", help="with --replay: write it out")
    parser.add_argument("--replay-dialogue", type=int, metavar="INDEX", help="one dialogue")
    args = parser.parse_args(argv)
    logging.disable(logging.CRITICAL)  # pyHanko logs each broken file; aiosmtpd each session
    if args.replay is not None:
        return _replay(args.seed, args.replay, args.dump)
    if args.replay_dialogue is not None:
        logging.disable(logging.NOTSET)
        lines: list[str] = []
        dialogue_report = asyncio.run(
            run_dialogues(1, args.seed, start=args.replay_dialogue, transcript=lines)
        )
        print("\n".join(lines))
        r = dialogue_report
        _print_failures(r.failures, r.examples, r.details, "dialogue")
        _print_failures(r.warnings, r.warning_examples, r.warning_details, "warning, dialogue")
        return 1 if dialogue_report.exceptions else 0

    status = 0
    if args.messages:
        report = run_messages(
            args.messages,
            args.seed,
            workers=args.workers,
            start=args.start,
            progress=_progress("messages") if sys.stderr.isatty() else None,
        )
        print(
            f"messages: {report.messages} (seed {args.seed}, from {args.start}) in "
            f"{report.seconds:.1f} s: {report.messages / max(report.seconds, 1e-9):.0f} msg/s "
            f"on {args.workers} worker(s)"
        )
        print("  verdicts: " + ", ".join(f"{k} {v}" for k, v in report.verdicts.most_common()))
        print("  reasons:  " + ", ".join(f"{k} {v}" for k, v in report.reasons.most_common(14)))
        if report.slow:
            slow = ", ".join(f"#{i} {ms / 1000:.1f} s" for ms, i in report.slow[:5])
            print(f"  slowest:  {slow}")
        print(
            f"  exceptions: {report.exceptions} in {report.failed_messages} messages, "
            f"{len(report.failures)} kinds"
        )
        _print_failures(report.failures, report.examples, report.details, "messages")
        if report.warnings:
            caught = sum(report.warnings.values())
            print(f"  caught by serve, so not counted (a notice not sent): {caught}")
            _print_failures(report.warnings, report.examples, report.details, "messages")
        if report.exceptions:
            print(f"  reproduce: python -m bench.fuzz --seed {args.seed} --replay INDEX --dump DIR")
            status = 1
    if args.dialogues:
        logging.disable(logging.NOTSET)
        dialogue_report = asyncio.run(
            run_dialogues(
                args.dialogues,
                args.seed,
                start=args.start,
                progress=_progress("dialogues") if sys.stderr.isatty() else None,
            )
        )
        r = dialogue_report
        print(
            f"dialogues: {r.dialogues} in {r.seconds:.1f} s; {r.commands} command lines, "
            f"{r.replies} reply lines; downstream got {r.delivered} messages, {r.notices} notices"
        )
        print(
            "  end-of-data replies: "
            + ", ".join(f"{k} {v}" for k, v in sorted(r.data_replies.items()))
        )
        print("  endings: " + ", ".join(f"{k} {v}" for k, v in r.endings.most_common()))
        print(
            "  log events: " + (", ".join(f"{k} {v}" for k, v in r.log_events.most_common()) or "-")
        )
        print(f"  failures: {r.exceptions}")
        _print_failures(r.failures, r.examples, r.details, "dialogues")
        if r.warnings:
            print(f"  warnings (not failures): {sum(r.warnings.values())}")
            _print_failures(r.warnings, r.warning_examples, r.warning_details, "dialogues")
        if r.exceptions:
            print(f"  reproduce: python -m bench.fuzz --seed {args.seed} --replay-dialogue INDEX")
            status = 1
    return status
