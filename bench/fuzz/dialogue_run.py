"""``run_dialogues``: plays a range of dialogues against the harness and checks, after each,
the log (no ``smtp.exception`` and the like) and the server loop (no exception), and at the
end the downstream (every 250 delivered, every delivery recorded as accepted, once, with our
trace headers; every notice about a recorded decision) and both decision chains."""

from __future__ import annotations

import contextlib
import logging
import re
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import structlog

from bench.fuzz.client import _run_dialogue
from bench.fuzz.dialogues import dialogue_rng, generate_dialogue
from bench.fuzz.harness import _drain, _Harness, _ServerLoop, _start
from bench.fuzz.report import DialogueReport, _trace_key
from policies import load_policy

_WATCHED_EVENTS = {
    "smtp.exception",
    "check.exception",
    "store.failed",
    "store.accepted_unrecorded",
    "notice.failed",
}


@contextlib.contextmanager
def _collect_logs() -> Iterator[list[dict[str, Any]]]:
    """Every structlog event at warning and above, and aiosmtpd's errors, kept in a list."""
    events: list[dict[str, Any]] = []

    def keep(logger: Any, method: str, event: Any) -> Any:
        if method in ("warning", "warn", "error", "exception", "critical", "fatal"):
            events.append(dict(event))
        raise structlog.DropEvent

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + "".join(traceback.format_exception(*record.exc_info))
            events.append({"event": f"{record.name}.{record.levelname.lower()}", "text": text})

    old = structlog.get_config()
    structlog.configure(
        processors=[structlog.processors.format_exc_info, keep],
        cache_logger_on_first_use=False,
    )
    mail_log = logging.getLogger("mail.log")
    handler = Keep(logging.ERROR)
    saved = (mail_log.level, mail_log.propagate)
    mail_log.addHandler(handler)
    mail_log.setLevel(logging.ERROR)
    mail_log.propagate = False
    try:
        yield events
    finally:
        mail_log.removeHandler(handler)
        mail_log.setLevel(saved[0])
        mail_log.propagate = saved[1]
        structlog.configure(**old)


_DECISION = re.compile(rb"policy\.decision=(\S+)")
_NOTICE = re.compile(rb"Message-ID: <(\S+)\.notice@")


async def run_dialogues(
    count: int,
    seed: int,
    *,
    start: int = 0,
    transcript: list[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> DialogueReport:
    """Play dialogues ``start`` .. ``start + count - 1`` of run ``seed`` against real gateways.

    The gateways and the downstream run in an event loop of their own (a thread); the client
    runs in the caller's loop.
    """
    report = DialogueReport()
    began = time.perf_counter()
    accepted: list[tuple[str, int]] = []
    index = start
    with _collect_logs() as events, tempfile.TemporaryDirectory() as tmp:
        server = _ServerLoop()
        try:
            harness = await server.call(_start(Path(tmp), load_policy()))
            seen_events = seen_errors = 0
            try:
                for index in range(start, start + count):
                    dialogue = generate_dialogue(seed, index)
                    await _run_dialogue(
                        index=index,
                        dialogue=dialogue,
                        port=harness.ports[dialogue.gateway],
                        report=report,
                        accepted=accepted,
                        rng=dialogue_rng(seed, index + 10**9),  # write fragmentation only
                        transcript=transcript,
                    )
                    report.dialogues += 1
                    await server.call(_drain(harness))
                    seen_events = _check_events(events, seen_events, index, report)
                    seen_errors = _check_loop_errors(server.errors, seen_errors, index, report)
                    if progress and report.dialogues % 50 == 0:
                        progress(report.dialogues, count)
                _check_deliveries(harness, accepted, report)
            finally:
                await server.call(harness.stop())
        finally:
            server.close()
        _check_events(events, seen_events, index, report)
        _check_loop_errors(server.errors, seen_errors, index, report)
    report.seconds = time.perf_counter() - began
    return report


def _check_loop_errors(
    errors: list[dict[str, Any]], seen: int, index: int, report: DialogueReport
) -> int:
    for context in errors[seen:]:
        exc = context.get("exception")
        detail = "".join(traceback.format_exception(exc)) if exc else str(context)
        report.fail(f"server event loop: {context.get('message', '?')}", index, detail)
    return len(errors)


def _check_events(
    events: list[dict[str, Any]], seen: int, index: int, report: DialogueReport
) -> int:
    for event in events[seen:]:
        name = str(event.get("event", "?"))
        report.log_events[name] += 1
        if name in _WATCHED_EVENTS or name.startswith("mail.log"):
            detail = str(event.get("exception") or event.get("traceback") or event.get("text", ""))
            report.fail(f"log event {name}: {_trace_key(detail) if detail else ''}", index, detail)
    return len(events)


def _check_deliveries(
    harness: _Harness, accepted: list[tuple[str, int]], report: DialogueReport
) -> None:
    """Every 250 was delivered; every delivery was judged, accepted and recorded, once."""
    delivered: Counter[str] = Counter()
    for data in harness.downstream.delivered:
        head = data.split(b"\r\n\r\n", 1)[0]
        notice = _NOTICE.search(head)
        if notice is not None and b"Auto-Submitted: auto-replied" in head:
            report.notices += 1  # a refusal notice or advisory, about a recorded decision
            decision_id = notice.group(1).decode()
            if all(s.get(decision_id) is None for s in harness.stores):
                report.fail("notice about a decision never recorded", -1, decision_id)
            continue
        ids = _DECISION.findall(head)
        if not ids:
            report.fail("downstream got a message the gateway did not relay", -1, repr(data[:300]))
            continue
        delivered[ids[0].decode()] += 1
    report.delivered = sum(delivered.values())
    for decision_id, times in delivered.items():
        if times > 1:
            report.fail("message delivered more than once", -1, decision_id)
        records = [s.get(decision_id) for s in harness.stores]
        found = [r for r in records if r is not None]
        if not found or found[0]["verdict"] != "accept":
            verdict = found[0]["verdict"] if found else "no record"
            report.fail(f"delivered but recorded as {verdict}", -1, decision_id)
    for decision_id, index in accepted:
        if decision_id not in delivered:
            report.fail("250 at end-of-data but the downstream has no message", index, decision_id)
    for store in harness.stores:
        problems = store.verify()
        if problems:
            report.fail("decision chain broken", -1, str(problems[:3]))
