"""The decision log: exactly one record per SMTP transaction, stored before the final reply.

A record is a JSON object (its schema is frozen by ``tests/gateway/test_audit.py``; auditors'
parsers depend on it). It goes to the structured log as the ``policy.decision`` event and into
a :class:`DecisionStore`: SQLite by default; the interface is small so PostgreSQL can follow.

If the store cannot be written the caller must answer 4xx: never 250 without a record.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import queue
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from gateway.directory import Account, account_from_row, account_row
from gateway.logs import RawJSON, get_logger
from gateway.metrics import Metrics
from gateway.record import SCHEMA_VERSION

__all__ = ["SCHEMA_VERSION", "AuditLog", "DecisionStore", "SqliteStore", "StoreError"]

Record = dict[str, Any]


class StoreError(Exception):
    """The decision store could not be read or written."""


class DecisionStore(Protocol):
    """Where decision records are kept."""

    def write(self, record: Record) -> str:
        """Store ``record`` durably (committed when this returns); return its chain hash."""

    async def write_async(self, record: Record, text: str | None = None) -> str:
        """:meth:`write`, awaited on the event loop: no thread is held while it waits.
        ``text``: the record as JSON (sorted keys), if the caller has it already."""

    def get(self, decision_id: str) -> Record | None:
        """The record with ``decision_id``, or None."""

    def tail(self, limit: int) -> list[Record]:
        """The newest ``limit`` records, oldest first."""

    def close(self) -> None:
        """Release the store."""

    def describe(self) -> str:
        """Which store this is, for logs and messages (never a password)."""


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
CREATE TABLE IF NOT EXISTS accounts (
    address TEXT PRIMARY KEY,
    full_name TEXT NOT NULL,
    unit TEXT NOT NULL,
    role TEXT NOT NULL,
    issued TEXT NOT NULL,
    personal TEXT NOT NULL
);
"""
# Tamper evidence: each gateway instance's records form a hash chain (seq, prev_hash, hash).
_CHAIN_COLUMNS = {
    "instance": "TEXT NOT NULL DEFAULT ''",
    "seq": "INTEGER NOT NULL DEFAULT 0",
    "prev_hash": "TEXT NOT NULL DEFAULT ''",
    "hash": "TEXT NOT NULL DEFAULT ''",
}
GENESIS = "0" * 64


def record_columns(record: Record) -> tuple[Any, ...]:
    """The record's fields copied into indexed columns (id, time, verdict, sender, ip, reasons)."""
    return (
        record["id"],
        record["time"],
        record["verdict"],
        record["envelope"]["mail_from"],
        record["client"]["ip"],
        " ".join(record["reasons"]),
    )


def chain_hash(prev_hash: str, record_json: str) -> str:
    """The hash that links a record to the one before it (same instance)."""
    return hashlib.sha256(f"{prev_hash}\n{record_json}".encode()).hexdigest()


@dataclass
class PendingRecord:
    """A record waiting for its group commit (both stores commit in groups)."""

    record: Record
    text: str
    done: bool = False
    digest: str = ""
    error: BaseException | None = None
    event: threading.Event | None = None  # set when done, for a waiting thread
    future: asyncio.Future[None] | None = None  # resolved when done, for a waiting coroutine

    @classmethod
    def of(cls, record: Record, text: str | None = None, **waiter: Any) -> PendingRecord:
        if text is None:
            text = json.dumps(record, ensure_ascii=False, sort_keys=True)
        return cls(record, text, **waiter)

    def result(self) -> str:
        """The chain hash, or :class:`StoreError` if the record was not committed."""
        if not self.done:
            raise StoreError(
                f"decision {self.record['id']} not committed within {WRITE_TIMEOUT:g} s"
            )
        if self.error is not None:
            raise StoreError(f"cannot write decision {self.record['id']}: {self.error}")
        return self.digest


WRITE_TIMEOUT = 30.0  # a write not committed by then is a store failure (the client gets 4xx)


class GroupCommitter:
    """One writer thread for a store: whatever records are waiting when it is free are
    committed together, in one transaction and one fsync (group commit).

    ``commit`` must set each record's ``digest`` or ``error`` (a bad record fails alone). A
    waiting thread is woken by an event; waiting coroutines are woken by one call into their
    event loop per group, not one per record: at hundreds of decisions a second the handoff
    between threads costs more than the insert.
    """

    def __init__(
        self,
        commit: Callable[[list[PendingRecord]], None],
        name: str,
        *,
        batch_wait: float = 0.0,
        max_batch: int = 500,
    ) -> None:
        self._commit = commit
        self.batch_wait, self.max_batch = batch_wait, max_batch
        self._queue: queue.SimpleQueue[PendingRecord | None] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def write(self, record: Record) -> str:
        """Queue ``record`` and wait, in this thread, until its group is committed."""
        pending = self._submit(record, None, event=threading.Event())
        assert pending.event is not None
        pending.event.wait(WRITE_TIMEOUT)
        return pending.result()

    async def write_async(self, record: Record, text: str | None = None) -> str:
        """Queue ``record`` (``text``: as JSON, if known) and await its group's commit."""
        pending = self._submit(record, text, future=asyncio.get_running_loop().create_future())
        assert pending.future is not None
        # A cancelled or timed-out wait cancels only this future: the record is still
        # committed (or not) by the writer, which skips futures nobody waits for.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(WRITE_TIMEOUT):
                await pending.future
        return pending.result()

    def _submit(self, record: Record, text: str | None, **waiter: Any) -> PendingRecord:
        if self._closed:
            raise StoreError("the decision store is closed")
        pending = PendingRecord.of(record, text, **waiter)
        self._queue.put(pending)
        return pending

    def close(self) -> None:
        """Commit what is queued, then stop the writer."""
        self._closed = True
        self._queue.put(None)
        self._thread.join(WRITE_TIMEOUT)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                return
            group = [first]
            try:
                while len(group) < self.max_batch:
                    item = (
                        self._queue.get(timeout=self.batch_wait)
                        if self.batch_wait
                        else self._queue.get_nowait()
                    )
                    if item is None:
                        stopping = True
                        break
                    group.append(item)
            except queue.Empty:
                pass
            try:
                self._commit(group)
            except BaseException as exc:  # noqa: BLE001 - no waiter may hang or hear "stored"
                for pending in group:
                    pending.error = pending.error or exc
            finally:
                self._settle(group)

    @staticmethod
    def _settle(group: list[PendingRecord]) -> None:
        loops: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
        for pending in group:
            pending.done = True
            if pending.event is not None:
                pending.event.set()
            if pending.future is not None:
                loops.setdefault(pending.future.get_loop(), []).append(pending.future)
        for loop, futures in loops.items():
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                loop.call_soon_threadsafe(_resolve, futures)


def _resolve(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)


INSERT_COLUMNS = (
    "INSERT INTO decisions (id, time, verdict, mail_from, client_ip, reasons,"
    " record, instance, seq, prev_hash, hash) VALUES "
)


def chain_rows(
    group: Sequence[PendingRecord], instance: str, seq: int, prev: str
) -> tuple[list[tuple[Any, ...]], int, str]:
    """Chain ``group`` after (``seq``, ``prev``): set each digest; return the rows to insert
    (in :data:`INSERT_COLUMNS` order) and the new chain head."""
    rows = []
    for pending in group:
        seq += 1
        pending.digest = chain_hash(prev, pending.text)
        rows.append(
            (*record_columns(pending.record), pending.text, instance, seq, prev, pending.digest)
        )
        prev = pending.digest
    return rows, seq, prev


@dataclass(frozen=True)
class ChainProblem:
    """Where a decision log's hash chain breaks, and how."""

    instance: str
    seq: int
    decision_id: str
    problem: str

    def __str__(self) -> str:
        return f"{self.instance} #{self.seq} ({self.decision_id}): {self.problem}"


_PLAN_INSTANCES = "SELECT DISTINCT instance FROM decisions WHERE time < ?"
_PLAN_FIRST_NEW = "SELECT MIN(seq) FROM decisions WHERE instance = ? AND time >= ?"
_PLAN_NEWEST = "SELECT MAX(seq) FROM decisions WHERE instance = ?"
_PLAN_ROW = "SELECT seq, hash FROM decisions WHERE instance = ? AND seq = ?"


def prune_plan(execute: Any, before: str, mark: str) -> list[tuple[str, int, str]]:
    """Per instance, the last record of the longest prefix of its chain older than ``before``:
    ``(instance, seq, hash)``. Only such a prefix may go (record times follow MAIL FROM,
    sequence numbers follow writing, so the two orders can differ near the cut-off).
    ``execute`` runs SQL whose placeholders are ``mark`` (SQLite ``?``, psycopg ``%s``).
    """

    def run(sql: str, params: tuple[Any, ...]) -> Any:
        return execute(sql.replace("?", mark), params)

    plan = []
    for (instance,) in run(_PLAN_INSTANCES, (before,)).fetchall():
        first_new = run(_PLAN_FIRST_NEW, (instance, before)).fetchone()[0]
        if first_new is None:
            first_new = run(_PLAN_NEWEST, (instance,)).fetchone()[0] + 1
        row = run(_PLAN_ROW, (instance, first_new - 1)).fetchone()
        if row is not None:
            plan.append((instance, int(row[0]), str(row[1])))
    return plan


VERIFY_QUERY = (
    "SELECT instance, seq, id, time, verdict, mail_from, client_ip, reasons, record,"
    " prev_hash, hash FROM decisions ORDER BY instance, seq"
)


def verify_rows(
    rows: Iterable[tuple[Any, ...]], anchors: dict[str, tuple[int, str]]
) -> list[ChainProblem]:
    """Walk the chains in ``rows`` (as :data:`VERIFY_QUERY` returns them) from their anchors."""
    problems: list[ChainProblem] = []
    # A pruned chain continues from its anchor (the last pruned record).
    expected_seq: dict[str, int] = {i: seq + 1 for i, (seq, _) in anchors.items()}
    last_hash: dict[str, str] = {i: digest for i, (_, digest) in anchors.items()}
    for instance, seq, did, time_, verdict, mail_from, ip, reasons, text, prev, digest in rows:
        want_seq = expected_seq.get(instance, 1)
        want_prev = last_hash.get(instance, GENESIS)
        problem = ""
        if seq != want_seq:
            problem = f"sequence jumps from {want_seq - 1} to {seq}: records deleted or inserted"
        elif prev != want_prev:
            problem = "does not link to the record before it: inserted or replaced"
        elif chain_hash(prev, text) != digest:
            problem = "record edited after it was written"
        else:
            columns: tuple[Any, ...]
            try:
                columns = record_columns(json.loads(text))
            except (ValueError, KeyError, TypeError):
                columns = ()
            if columns != (did, time_, verdict, mail_from, ip, reasons):
                problem = "indexed columns differ from the record: edited"
        if problem:
            problems.append(ChainProblem(instance, seq, did, problem))
        expected_seq[instance] = seq + 1
        last_hash[instance] = digest
    return problems


class SqliteStore:
    """Decision records in one SQLite file (WAL, synchronous=FULL: committed means on disk;
    group commit)."""

    def __init__(self, path: Path, instance: str = "") -> None:
        self.path = path
        self.instance = instance
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

    async def write_async(self, record: Record, text: str | None = None) -> str:
        """:meth:`write` for the event loop."""
        return await self._committer.write_async(record, text)

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
        return deleted_count

    def _anchors(self) -> dict[str, tuple[int, str]]:
        rows = self._db.execute("SELECT key, value FROM meta WHERE key LIKE 'anchor:%'").fetchall()
        out = {}
        for key, value in rows:
            data = json.loads(value)
            out[key.removeprefix("anchor:")] = (int(data["seq"]), str(data["hash"]))
        return out

    def verify(self) -> list[ChainProblem]:
        """Check every instance's chain: edited, inserted or deleted records are reported."""
        with self._lock:
            anchors = self._anchors()
            rows = self._db.execute(VERIFY_QUERY).fetchall()
        return verify_rows(rows, anchors)

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

    def records_between(self, start: str, end: str) -> list[Record]:
        """Records with ``start <= time < end`` (ISO 8601 UTC strings), oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT record FROM decisions WHERE time >= ? AND time < ? ORDER BY time, id",
                (start, end),
            ).fetchall()
        return [json.loads(r[0]) for r in rows]

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
