"""The relay journal: what was handed to the downstream, written before it was handed over.

The proxy's one window without a record: the downstream has taken a message, and the gateway
is killed (``kill -9``, a crash, the power) before the record is committed. The client heard
no ``250`` and sends the message again: the first copy would be a delivery no record explains.

So, before the proxy sends a message's last byte downstream, it writes the message's record
here (one JSON line, a ``write`` to the operating system: no disk flush, which a killed
process does not need); after the record is committed, a ``done`` line. When the gateway
starts, :func:`reconcile` reads the journal: every message handed over without a ``done``
and without a record in the store gets its record now, with the verdict ``interrupted`` (it
may have been delivered; the client was not told, and will have sent it again, as a second
transaction with a record of its own). The journal is then emptied.

One journal per gateway process (``<store folder>/journal-<instance>.jsonl``): processes never
share one. A journal larger than :data:`COMPACT_BYTES` is rewritten with only what is still
open.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from gateway.logs import get_logger
from gateway.store.auditlog import clean_text
from gateway.store.base import DecisionStore, StoreError

__all__ = ["COMPACT_BYTES", "Journal", "reconcile"]

COMPACT_BYTES = 16 * 1024 * 1024


class Journal:
    """Appends intents and completions to one file; keeps the open ones in memory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self._open: dict[str, str] = {}  # decision id -> its intent line
        self._size = os.fstat(self._fd).st_size
        self._lock = threading.Lock()

    def intent(self, record: dict[str, Any]) -> None:
        """``record`` is about to be handed to the downstream."""
        # ASCII escapes: an 8-bit header byte (a lone surrogate here) is written as \udcXX, and
        # cleaned as the store cleans it only if the entry is ever reconciled (rarely).
        line = json.dumps({"intent": record}) + "\n"
        with self._lock:
            self._open[record["id"]] = line
            self._write(line)

    def done(self, decision_id: str) -> None:
        """The record of ``decision_id`` is committed (or it was never handed over)."""
        with self._lock:
            if self._open.pop(decision_id, None) is None:
                return
            self._write(json.dumps({"done": decision_id}) + "\n")
            if self._size > COMPACT_BYTES:
                self._compact()

    def close(self) -> None:
        """Close the file (what is still open stays in it, for the next start)."""
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def _write(self, line: str) -> None:
        data = line.encode("utf-8")
        os.write(self._fd, data)
        self._size += len(data)

    def _compact(self) -> None:
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text("".join(self._open.values()), "utf-8")
        os.replace(temporary, self.path)
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._size = os.fstat(self._fd).st_size


def reconcile(path: Path, store: DecisionStore) -> list[str]:
    """Record what the journal at ``path`` shows handed over but not recorded, as
    ``interrupted``; empty the journal. Returns the decision ids recorded so."""
    if not path.exists():
        return []
    intents: dict[str, dict[str, Any]] = {}
    for line in path.read_text("utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by the crash: its message was not handed over yet
        if "intent" in entry:
            intents[entry["intent"]["id"]] = entry["intent"]
        elif "done" in entry:
            intents.pop(entry["done"], None)
    recorded = []
    for decision_id, record in intents.items():
        if store.get(decision_id) is not None:
            continue  # committed, but killed before the done line
        interrupted = clean_text(record) | {
            "verdict": "interrupted",
            "reasons": [],
            "reply": "",
            "monitor_reasons": [],
            "mode": "enforce",
        }
        try:
            store.write(interrupted)
        except StoreError:
            get_logger().error("journal.reconcile_failed", decision_id=decision_id)
            raise
        get_logger().warning("journal.interrupted", decision_id=decision_id)
        recorded.append(decision_id)
    path.write_text("", "utf-8")
    return recorded
