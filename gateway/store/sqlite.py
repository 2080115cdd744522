"""The decision store in one SQLite file: the default, for a gateway on its own."""

from __future__ import annotations

import contextlib
import json
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from gateway.directory import Account, account_from_row, account_row
from gateway.record import SCHEMA_VERSION
from gateway.report.tally import Entry
from gateway.store.base import (
    ACTIVITY_QUERY,
    ACTIVITY_SCHEMA,
    ADD_ACTIVITY,
    PAGE_QUERY,
    Record,
    Search,
    StoreError,
    pages,
    search_query,
)
from gateway.store.chain import (
    CHAIN_LINK_QUERY,
    GENESIS,
    INSERT_COLUMNS,
    VERIFY_QUERY,
    ChainLink,
    ChainProblem,
    anchors_of,
    chain_hash,
    chain_link,
    chain_rows,
    prune_plan,
    verify_rows,
)
from gateway.store.commit import GroupCommitter, PendingRecord
from gateway.store.keys import PRUNE_KEYS, keying, keys_schema, rebuild_keys, write_keys
from gateway.store.tallies import (
    SQLITE_CLUSTERED,
    SQLITE_SERIAL,
    RollupReader,
    Rollups,
    entries_of,
    rebuild,
    schema,
)

__all__ = ["SqliteStore"]

_SCHEMA = (
    """
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
CREATE INDEX IF NOT EXISTS decisions_sender ON decisions (mail_from, time, id);
CREATE TABLE IF NOT EXISTS accounts (
    address TEXT PRIMARY KEY,
    full_name TEXT NOT NULL,
    unit TEXT NOT NULL,
    role TEXT NOT NULL,
    issued TEXT NOT NULL,
    personal TEXT NOT NULL
);
"""
    + ACTIVITY_SCHEMA
)
# Tamper evidence: each gateway instance's records form a hash chain (seq, prev_hash, hash).
_CHAIN_COLUMNS = {
    "instance": "TEXT NOT NULL DEFAULT ''",
    "seq": "INTEGER NOT NULL DEFAULT 0",
    "prev_hash": "TEXT NOT NULL DEFAULT ''",
    "hash": "TEXT NOT NULL DEFAULT ''",
}


class SqliteStore:
    """Decision records in one SQLite file (WAL, synchronous=FULL: committed means on disk;
    group commit)."""

    def __init__(self, path: Path, instance: str = "") -> None:
        self.path = path
        self.instance = instance
        self._rollups = Rollups()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = self._open()
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open decision store {path}: {exc}") from exc
        self._lock = threading.Lock()  # one connection, used by the writer and by readers
        self._committer = GroupCommitter(self._commit_locked, name="sqlite-writer")

    def _open(self) -> sqlite3.Connection:
        """Connect, set WAL, create or migrate the schema.

        Worker processes open the same new file at the same moment. Switching it to WAL and
        creating its tables can then fail at once with "database is locked" (SQLite does not
        wait where waiting could deadlock): each step is idempotent, so it is tried again
        for a while (seen: one open in three failed, and the worker could not start).
        """
        deadline = time.monotonic() + 15
        while True:
            db = sqlite3.connect(
                self.path, check_same_thread=False, isolation_level=None, timeout=5
            )
            self._db = db
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=FULL")
                db.executescript(_SCHEMA)
                db.execute(
                    "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
                self._migrate_chain()
                # The rollups (gateway.store.tallies), and the search keys (gateway.store.keys)
                # of a store made before them (docs/admin/upgrade.md says how long each takes).
                rollups = schema(SQLITE_SERIAL, SQLITE_CLUSTERED)
                self._migrate("rollups", rollups, self._rebuild_locked)
                self._migrate("search_keys", keys_schema(SQLITE_CLUSTERED), self._rebuild_keys)
            except sqlite3.OperationalError as exc:
                db.close()
                busy = exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
                if not busy or time.monotonic() > deadline:
                    raise
                time.sleep(random.uniform(0.01, 0.1))  # noqa: S311 - jitter, not a secret
                continue
            except BaseException:
                db.close()
                raise
            return db

    @contextlib.contextmanager
    def _immediate(self) -> Iterator[None]:
        """One write transaction, its lock taken at once: other writers to the file wait."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _migrate_chain(self) -> None:
        """Add the chain columns to a store made before them, and chain its records."""
        index = "CREATE UNIQUE INDEX IF NOT EXISTS decisions_chain ON decisions (instance, seq)"
        if not self._missing_chain_columns():
            self._db.execute(index)
            return
        with self._immediate():
            # Looked at again under the write lock: another process opening the same new
            # file may have added them meanwhile ("duplicate column name").
            missing = self._missing_chain_columns()
            if missing:
                self._chain_existing(missing)
            self._db.execute(index)

    def _migrate(self, done_key: str, tables: str, fill: Callable[[], int]) -> None:
        """Create ``tables``; fill them once, from the records, in a store made before them
        (under the write lock: no record is missed). Other processes opening the store
        meanwhile wait for it, however long, rather than fail."""
        self._db.executescript(tables)
        done = "SELECT 1 FROM meta WHERE key = ?"
        while not self._db.execute(done, (done_key,)).fetchone():
            try:
                with self._immediate():
                    if self._db.execute(done, (done_key,)).fetchone():
                        return  # another process did it meanwhile
                    fill()
                    self._db.execute("INSERT INTO meta VALUES (?, '1')", (done_key,))
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode & 0xFF not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                    raise
                time.sleep(0.2)

    def _rebuild_keys(self) -> int:
        rows = self._db.execute("SELECT record FROM decisions")
        return rebuild_keys(self._many, iter(rows.fetchone, None))

    def _rebuild_locked(self, *, keys: bool = False) -> int:
        """The rollups (and, with ``keys``, the search keys) from the records, read once."""
        rows: Iterable[tuple[str]] = iter(
            self._db.execute("SELECT record FROM decisions").fetchone, None
        )
        if keys:
            rows = keying(self._many, rows)
        return rebuild(self._rollups, self._query, self._many, rows)

    def rebuild_rollups(self) -> int:
        """Roll up every record again, from nothing (one transaction: gateways writing
        meanwhile wait, and after 5 s answer 4xx); how many records were read."""
        try:
            with self._lock, self._immediate():
                return self._rebuild_locked(keys=True)
        except sqlite3.Error as exc:
            self._rollups.forget()
            raise StoreError(f"cannot rebuild the rollups: {exc}") from exc

    def _query(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """A query written with "%s" placeholders (both stores' SQL), run here."""
        return self._db.execute(sql.replace("%s", "?"), params).fetchall()

    def _many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        self._db.executemany(sql.replace("%s", "?"), rows)

    def _chain_existing(self, missing: list[str]) -> None:
        """Add the ``missing`` chain columns and chain the records already there."""
        for column in missing:
            self._db.execute(f"ALTER TABLE decisions ADD COLUMN {column} {_CHAIN_COLUMNS[column]}")
        prev = GENESIS
        rows = self._db.execute("SELECT id, record FROM decisions ORDER BY time, id").fetchall()
        for seq, (decision_id, text) in enumerate(rows, start=1):
            digest = chain_hash(prev, text)
            self._db.execute(
                "UPDATE decisions SET instance = ?, seq = ?, prev_hash = ?, hash = ? WHERE id = ?",
                (self.instance, seq, prev, digest, decision_id),
            )
            prev = digest

    def _missing_chain_columns(self) -> list[str]:
        have = {row[1] for row in self._db.execute("PRAGMA table_info(decisions)")}
        return [c for c in _CHAIN_COLUMNS if c not in have]

    def write(self, record: Record) -> str:
        """Insert ``record``, chained to this instance's previous one; commit; return its hash.

        Each record is on disk before this returns (synchronous=FULL), but records written
        while a commit is in progress are committed together by the next one (group commit):
        a burst of decisions costs a few fsyncs rather than one each.
        """
        return self._committer.write(record)

    async def write_async(
        self, record: Record, text: str | None = None, entry: Entry | None = None
    ) -> str:
        """:meth:`write` for the event loop."""
        return await self._committer.write_async(record, text, entry)

    def _commit_locked(self, group: list[PendingRecord]) -> None:
        with self._lock:
            self._commit(group)

    def _commit(self, group: list[PendingRecord]) -> None:
        try:
            # IMMEDIATE: gateways sharing this file and instance name take turns.
            with self._immediate():
                last = self._db.execute(
                    "SELECT seq, hash FROM decisions WHERE instance = ? ORDER BY seq DESC LIMIT 1",
                    (self.instance,),
                ).fetchone()
                if last is None:  # empty, or every record pruned: continue from the anchor
                    anchor = self._anchors().get(self.instance)
                    last = anchor if anchor is not None else (0, GENESIS)
                rows, _, _ = chain_rows(group, self.instance, *last)
                self._db.executemany(INSERT_COLUMNS + "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
                fresh = self._rollups.write(self._query, self._many, entries_of(group))
                write_keys(self._many, group)
            self._rollups.remember(fresh)
        except Exception as exc:  # noqa: BLE001 - every record of the group must hear of it
            if len(group) > 1:
                # One bad record (a duplicate id, say) must not fail its neighbours: each
                # gets a transaction of its own, and only the bad one hears of the failure.
                for pending in group:
                    self._commit([pending])
                return
            group[0].error = exc

    def prune(self, before: str) -> int:
        """Delete records older than ``before`` (ISO UTC); the chains stay verifiable.

        For each instance the last pruned record's sequence number and hash are kept as the
        chain's anchor, from which ``verify`` continues.
        """
        with self._lock, self._immediate():
            # Only a prefix of each chain goes: up to the record before the first one that
            # is not old (record times follow MAIL FROM, sequence numbers follow writing).
            deleted_count = 0
            for instance, limit, digest in prune_plan(self._db.execute, before, "?"):
                self._db.execute(
                    "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                    (f"anchor:{instance}", json.dumps({"seq": limit, "hash": digest})),
                )
                deleted_count += self._db.execute(
                    "DELETE FROM decisions WHERE instance = ? AND seq <= ?", (instance, limit)
                ).rowcount
            self._query(PRUNE_KEYS, (before, before))
        return deleted_count

    def _anchors(self) -> dict[str, tuple[int, str]]:
        return anchors_of(self._db.execute("SELECT key, value FROM meta WHERE key LIKE 'anchor:%'"))

    def verify(self) -> list[ChainProblem]:
        """Check every instance's chain: edited, inserted or deleted records are reported."""
        with self._lock:
            anchors = self._anchors()
            # Row by row, not fetched at once: a province-year's records are tens of gigabytes.
            return verify_rows(self._db.execute(VERIFY_QUERY), anchors)

    def search(self, search: Search, before: tuple[str, str] | None, limit: int) -> list[Record]:
        """One page of the records ``search`` finds, newest first."""
        sql, params = search_query(search, before, limit)
        with self._lock:
            rows = self._query(sql, params)
        return [json.loads(r[0]) for r in rows]

    def chain_link(self, decision_id: str) -> ChainLink | None:
        """Where the record ``decision_id`` sits in its chain, and whether it holds there."""
        with self._lock:
            rows = self._query(CHAIN_LINK_QUERY, (decision_id.upper(),))
            anchors = self._anchors()
        return chain_link(rows[0] if rows else None, anchors)

    def replace_accounts(self, accounts: list[Account]) -> None:
        """Swap the whole directory in one transaction (readers see the old or the new one)."""
        rows = [account_row(a) for a in accounts]
        try:
            with self._lock, self._immediate():
                self._db.execute("DELETE FROM accounts")
                self._db.executemany("INSERT INTO accounts VALUES (?, ?, ?, ?, ?, ?)", rows)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot import the directory: {exc}") from exc

    def accounts(self) -> list[Account]:
        """The directory, by address."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM accounts ORDER BY address").fetchall()
        return [account_from_row(r) for r in rows]

    def record_activity(self, rows: list[tuple[str, str, str, str, str]]) -> None:
        """Add mailbox activity: (login, day, kind, first seen, last seen) rows, merged with
        what is stored (the earliest first and the latest last seen win: idempotent)."""
        try:
            with self._lock, self._immediate():
                self._many(ADD_ACTIVITY, rows)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot record mailbox activity: {exc}") from exc

    def activity_between(self, start: str, end: str) -> list[tuple[str, str, str]]:
        """(login, kind, last seen) of the activity seen in ``start <= time < end``."""
        with self._lock:
            rows = self._query(ACTIVITY_QUERY, (end, start))
        return [tuple(r) for r in rows]

    # -- rollups (gateway.store.tallies): what reports read -------------------------------------

    def rollups(self) -> RollupReader:
        """The daily rollups, for reports."""

        def query(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
            with self._lock:
                return self._query(sql, params)

        return RollupReader(query)

    def records_between(self, start: str, end: str) -> list[Record]:
        """Records with ``start <= time < end`` (ISO 8601 UTC strings), oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT record FROM decisions WHERE time >= ? AND time < ? ORDER BY time, id",
                (start, end),
            ).fetchall()
        return [json.loads(r[0]) for r in rows]

    def iter_records_between(self, start: str, end: str) -> Iterator[Record]:
        """:meth:`records_between` a page at a time (bounded memory, no long read)."""

        def read(params: tuple[str, str, str, str, int]) -> list[tuple[str, str, str]]:
            with self._lock:
                query = PAGE_QUERY.replace("%s", "?")
                return [tuple(r) for r in self._db.execute(query, params).fetchall()]

        return pages(read, start, end)

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
        """Commit what is queued, then close the database."""
        self._committer.close()
        with self._lock:
            self._db.close()

    def describe(self) -> str:
        """``sqlite:`` and the file's absolute path."""
        return f"sqlite:{self.path.resolve()}"
