"""What a run found: ``MessageReport`` for the messages and ``DialogueReport`` for the
dialogues (counts, failures by kind with their first indexes and one traceback each,
warnings), and the short, stable name a traceback is counted under."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

_FRAME = re.compile(r'\s*File "([^"]+)", line (\d+), in (\S+)')


def _trace_key(tb: str) -> str:
    """A short, stable name for a traceback: the exception, the innermost frame of this
    project (gateway/, policies/) and the innermost frame of all."""
    lines = [line for line in tb.strip().splitlines() if line.strip()]
    frames = [m.groups() for m in map(_FRAME.match, lines) if m]
    ours = [f for f in frames if re.search(r"[/\\](gateway|policies)[/\\]", f[0])]
    where = []
    for frame in ([ours[-1]] if ours else []) + ([frames[-1]] if frames else []):
        text = f"{Path(frame[0]).name}:{frame[1]} {frame[2]}"
        if text not in where:
            where.append(text)
    last = lines[-1].split(":", 1)[0][:80] if lines else "?"
    return f"{last} at {' < '.join(reversed(where))}" if where else last


@dataclass
class MessageReport:
    """What a run of messages found."""

    messages: int = 0
    verdicts: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)  # kind -> count
    examples: dict[str, list[int]] = field(default_factory=dict)  # kind -> first indexes
    details: dict[str, str] = field(default_factory=dict)  # kind -> one full traceback
    slow: list[tuple[float, int]] = field(default_factory=list)  # (ms, index), slowest first
    warnings: Counter[str] = field(default_factory=Counter)  # caught by serve: not failures
    failed_messages: int = 0
    seconds: float = 0.0

    def fail(self, kind: str, index: int, detail: str = "", *, warning: bool = False) -> None:
        (self.warnings if warning else self.failures)[kind] += 1
        seen = self.examples.setdefault(kind, [])
        if len(seen) < 5:
            seen.append(index)
        self.details.setdefault(kind, detail)

    def merge(self, other: MessageReport) -> None:
        self.messages += other.messages
        self.verdicts.update(other.verdicts)
        self.reasons.update(other.reasons)
        self.failures.update(other.failures)
        self.warnings.update(other.warnings)
        self.failed_messages += other.failed_messages
        for kind, indexes in other.examples.items():
            self.examples[kind] = sorted(self.examples.get(kind, []) + indexes)[:5]
        for kind, detail in other.details.items():
            self.details.setdefault(kind, detail)
        self.slow = sorted(self.slow + other.slow, reverse=True)[:10]

    @property
    def exceptions(self) -> int:
        return sum(self.failures.values())


@dataclass
class DialogueReport:
    """What a run of dialogues found."""

    dialogues: int = 0
    commands: int = 0
    replies: int = 0
    data_replies: Counter[str] = field(default_factory=Counter)  # end-of-data reply codes
    endings: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[int]] = field(default_factory=dict)
    details: dict[str, str] = field(default_factory=dict)
    log_events: Counter[str] = field(default_factory=Counter)
    warnings: Counter[str] = field(default_factory=Counter)  # not failures; see reply_warning
    warning_examples: dict[str, list[int]] = field(default_factory=dict)
    warning_details: dict[str, str] = field(default_factory=dict)
    delivered: int = 0
    notices: int = 0
    seconds: float = 0.0

    def fail(self, kind: str, index: int, detail: str = "") -> None:
        self.failures[kind] += 1
        seen = self.examples.setdefault(kind, [])
        if len(seen) < 5 and index not in seen:
            seen.append(index)
        self.details.setdefault(kind, detail)

    def warn(self, kind: str, index: int, detail: str = "") -> None:
        self.warnings[kind] += 1
        seen = self.warning_examples.setdefault(kind, [])
        if len(seen) < 5 and index not in seen:
            seen.append(index)
        self.warning_details.setdefault(kind, detail)

    @property
    def exceptions(self) -> int:
        return sum(self.failures.values())
