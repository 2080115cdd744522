"""The console's access log: who saw what, when, from where.

One JSON object a line (as the gateway's own log): the time (UTC), the user and role, the
client address, the method, the path with its query (a decision's id, a search's terms), the
answer's status, and for logins the outcome. Auditing the auditors: the decision log is
evidence, and reading it is recorded too. Lines are written and flushed one by one, so a
crash loses none already answered.
"""

from __future__ import annotations

import json
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from gateway.record import record_time

__all__ = ["AccessLog"]


class AccessLog:
    """Appends access lines to a file (``-``: standard output)."""

    def __init__(self, target: Path) -> None:
        self.target = target
        self._lock = threading.Lock()
        self._out: TextIO
        if str(target) == "-":
            self._out = sys.stdout
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            self._out = open(target, "a", encoding="utf-8")  # noqa: SIM115 - kept open

    def write(self, **fields: Any) -> None:
        """One line: the time, then ``fields``."""
        line = json.dumps({"time": record_time(datetime.now(UTC)), **fields}, ensure_ascii=False)
        with self._lock:
            self._out.write(line + "\n")
            self._out.flush()

    def close(self) -> None:
        if self._out is not sys.stdout:
            self._out.close()
