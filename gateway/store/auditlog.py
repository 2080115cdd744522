"""The writer the SMTP side uses: each record into the store and into the structured log."""

from __future__ import annotations

import json
from typing import Any

from gateway.logs import RawJSON, get_logger
from gateway.metrics import Metrics
from gateway.store.base import DecisionStore, Record, StoreError

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

    async def record(self, record: Record) -> None:
        """Store and log ``record``; raise :class:`StoreError` if it could not be stored."""
        text = json.dumps(record, ensure_ascii=False, sort_keys=True)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # surrogate escapes from 8-bit headers
            record = clean_text(record)
            text = json.dumps(record, ensure_ascii=False, sort_keys=True)
        try:
            digest = await self.store.write_async(record, text)
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
