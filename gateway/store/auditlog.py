"""The writer the SMTP side uses: each record into the store and into the structured log."""

from __future__ import annotations

import json
from typing import Any

from gateway.logs import RawJSON, get_logger
from gateway.metrics import Metrics
from gateway.record import Record as RecordObject
from gateway.report.tally import Entry, entry
from gateway.store.base import DecisionStore, StoreError

__all__ = ["AuditLog", "clean_text"]


def clean_text(value: Any) -> Any:
    """The record with undecodable bytes (surrogate escapes from 8-bit headers) made U+FFFD:
    a stray byte in a Subject must not make the record unstorable (and the sender retry)."""
    if isinstance(value, str):
        if value.isascii():
            return value
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if isinstance(value, dict):
        return {k: clean_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean_text(v) for v in value]
    return value


class AuditLog:
    """Writes each record to the store (off the event loop) and to the structured log."""

    def __init__(self, store: DecisionStore, metrics: Metrics | None = None) -> None:
        self.store = store
        self.metrics = metrics
        self.log = get_logger()

    async def record(self, decision: RecordObject) -> None:
        """Store and log ``decision``; raise :class:`StoreError` if it could not be stored."""
        record = decision.to_dict()
        text = json.dumps(record, ensure_ascii=False, sort_keys=True)
        found = None
        try:
            text.encode("utf-8")
            found = _entry(decision)
        except UnicodeEncodeError:  # surrogate escapes from 8-bit headers
            record = clean_text(record)  # (and the store reads the entry from what is kept)
            text = json.dumps(record, ensure_ascii=False, sort_keys=True)
        try:
            digest = await self.store.write_async(record, text, found)
        except StoreError:
            self.log.error("store.failed", decision=record, exc_info=True)
            raise
        except Exception as exc:
            self.log.error("store.failed", decision=record, exc_info=True)
            raise StoreError(str(exc)) from exc
        # The chain hash in the external log anchors the store: a rewritten chain would not match.
        self.log.info("policy.decision", decision=RawJSON(text), chain_hash=digest)
        if self.metrics is not None:
            self.metrics.observe(record)


def _entry(decision: RecordObject) -> Entry | None:
    """What ``decision`` adds to the rollups, worked out here from the record in hand (the
    store would have to read it back from JSON); None if that fails: the store tries."""
    try:
        return entry(decision)
    except Exception:  # noqa: BLE001 - the record must be stored all the same
        get_logger().exception("rollup.entry_failed", decision_id=decision.id)
        return None
