"""The decision log: exactly one record per SMTP transaction, stored before the final reply.

A record is a JSON object (its schema is frozen by ``tests/gateway/test_audit.py``; auditors'
parsers depend on it). It goes to the structured log as the ``policy.decision`` event and into
a :class:`DecisionStore`: SQLite by default; the interface is small so PostgreSQL can follow.

If the store cannot be written the caller must answer 4xx: never 250 without a record.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any, Protocol

from gateway.logs import get_logger

__all__ = ["SCHEMA_VERSION", "AuditLog", "DecisionStore", "SqliteStore", "StoreError"]

SCHEMA_VERSION = 3  # see gateway.engine.build_record for what each version added
Record = dict[str, Any]


class StoreError(Exception):
    """The decision store could not be read or written."""


class DecisionStore(Protocol):
    """Where decision records are kept."""

    def write(self, record: Record) -> None:
        """Store ``record`` durably (committed when this returns)."""

    def get(self, decision_id: str) -> Record | None:
        """The record with ``decision_id``, or None."""

    def tail(self, limit: int) -> list[Record]:
        """The newest ``limit`` records, oldest first."""

    def close(self) -> None:
        """Release the store."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS decisions (
    id TEXT PRIMARY KEY,
    time TEXT NOT NULL,
    verdict TEXT NOT NULL,
    mail_from TEXT NOT NULL,
    client_ip TEXT NOT NULL,
    reasons TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_time ON decisions (time);
"""


class SqliteStore:
    """Decision records in one SQLite file (WAL, synchronous=FULL: committed means on disk)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(_SCHEMA)
            self._db.execute(
                "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open decision store {path}: {exc}") from exc
        self._lock = threading.Lock()

    def write(self, record: Record) -> None:
        """Insert ``record`` and commit."""
        row = (
            record["id"],
            record["time"],
            record["verdict"],
            record["envelope"]["mail_from"],
            record["client"]["ip"],
            " ".join(record["reasons"]),
            json.dumps(record, ensure_ascii=False, sort_keys=True),
        )
        try:
            with self._lock:
                self._db.execute("INSERT INTO decisions VALUES (?, ?, ?, ?, ?, ?, ?)", row)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write decision {record['id']}: {exc}") from exc

    def get(self, decision_id: str) -> Record | None:
        """One record by id (case-insensitive: ids are often read aloud or retyped)."""
        with self._lock:
            row = self._db.execute(
                "SELECT record FROM decisions WHERE id = ?", (decision_id.upper(),)
            ).fetchone()
        return json.loads(row[0]) if row else None

    def tail(self, limit: int) -> list[Record]:
        """The newest ``limit`` records, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT record FROM decisions ORDER BY time DESC, id DESC LIMIT ?", (limit,)
            ).fetchall()
        return [json.loads(r[0]) for r in reversed(rows)]

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()


class AuditLog:
    """Writes each record to the store (off the event loop) and to the structured log."""

    def __init__(self, store: DecisionStore) -> None:
        self.store = store
        self.log = get_logger()

    async def record(self, record: Record) -> None:
        """Store and log ``record``; raise :class:`StoreError` if it could not be stored."""
        try:
            await asyncio.to_thread(self.store.write, record)
        except StoreError:
            self.log.error("store.failed", decision=record, exc_info=True)
            raise
        except Exception as exc:
            self.log.error("store.failed", decision=record, exc_info=True)
            raise StoreError(str(exc)) from exc
        self.log.info("policy.decision", decision=record)
