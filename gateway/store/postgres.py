"""The decision store on PostgreSQL: several gateways behind the district's MX, one log.

Same interface and record chain as :class:`gateway.store.sqlite.SqliteStore`. Writes go
through one writer thread that commits them in groups (group commit): a burst of decisions costs
one transaction, yet :meth:`PostgresStore.write` returns only after its own record is committed,
so every SMTP reply still follows its record. Each instance's chain head lives in
``chain_heads``, locked (``FOR UPDATE``) by the transaction that extends it, so gateways that
share an instance name take turns instead of forking the chain.

Schema changes are numbered migrations, applied at start under an advisory lock.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import psycopg

from gateway.directory import Account, account_from_row, account_row
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
    chain_link,
    chain_rows,
    prune_plan,
    verify_rows,
)
from gateway.store.commit import GroupCommitter, PendingRecord
from gateway.store.keys import PRUNE_KEYS, keying, keys_schema, rebuild_keys, write_keys
from gateway.store.tallies import (
    POSTGRES_SERIAL,
    TABLES,
    RollupReader,
    Rollups,
    entries_of,
    rebuild,
    schema,
)

__all__ = ["PostgresStore"]

MIGRATIONS: list[tuple[int, str]] = [
    (
        1,
        """
        CREATE TABLE decisions (
            id TEXT PRIMARY KEY,
            time TEXT NOT NULL,
            verdict TEXT NOT NULL,
            mail_from TEXT NOT NULL,
            client_ip TEXT NOT NULL,
            reasons TEXT NOT NULL,
            record TEXT NOT NULL,
            instance TEXT NOT NULL,
            seq BIGINT NOT NULL,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL,
            UNIQUE (instance, seq)
        );
        CREATE INDEX decisions_time ON decisions (time);
        CREATE TABLE chain_heads (instance TEXT PRIMARY KEY, seq BIGINT NOT NULL,
                                  hash TEXT NOT NULL);
        CREATE TABLE accounts (
            address TEXT PRIMARY KEY,
            full_name TEXT NOT NULL,
            unit TEXT NOT NULL,
            role TEXT NOT NULL,
            issued TEXT NOT NULL,
            personal TEXT NOT NULL
        );
        """,
    ),
    (2, ACTIVITY_SCHEMA),
    (3, schema(POSTGRES_SERIAL)),  # then the records already there are rolled up
    (4, "CREATE INDEX IF NOT EXISTS decisions_sender ON decisions (mail_from, time, id)"),
    (5, keys_schema()),  # then the records already there get their keys
]
_MIGRATION_LOCK = 0x636F6E67  # "cong": one advisory lock id for migrations
_BATCH = 200  # records per group commit at most
# Never wait forever on a lock held by a gateway cut off mid-transaction, or on a dead server.
_TIMEOUTS = ("SET lock_timeout = '10s'", "SET statement_timeout = '20s'")


class PostgresStore:
    """Decision records in PostgreSQL (psycopg 3), with group commit."""

    def __init__(self, url: str, instance: str = "", batch_wait: float = 0.002) -> None:
        self.url, self.instance, self.batch_wait = url, instance, batch_wait
        self._rollups = Rollups()
        try:
            self._read = psycopg.connect(url, autocommit=True, connect_timeout=10)
            self._write_conn = _connect_writer(url)
            self._migrate()
        except psycopg.Error as exc:
            raise StoreError(f"cannot open decision store {_safe_url(url)}: {exc}") from exc
        self._read_lock = threading.Lock()
        self._committer = GroupCommitter(
            self._commit, name="pg-writer", batch_wait=batch_wait, max_batch=_BATCH
        )

    def _migrate(self) -> None:
        conn = self._write_conn
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS congvu_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
            )
            row = conn.execute("SELECT value FROM congvu_meta WHERE key = 'migration'").fetchone()
            current = int(row[0]) if row else 0
            for number, sql in MIGRATIONS:
                if number > current:
                    conn.execute(sql)
                    if number == 3:
                        self._roll_up_existing()
                    if number == 5:
                        self._keys_of_existing()
                    conn.execute(
                        "INSERT INTO congvu_meta VALUES ('migration', %s) "
                        "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                        (str(number),),
                    )

    def _roll_up_existing(self, *, keys: bool = False) -> int:
        """Roll up every record (and, with ``keys``, make their search keys), from nothing,
        in one read of the records, in the caller's transaction: the migration's (a store
        made before the rollups), or :meth:`rebuild_rollups`'."""
        with self._write_conn.cursor(name="congvu_rollup") as cursor:
            cursor.itersize = 2000
            cursor.execute("SELECT record FROM decisions")
            rows: Iterable[tuple[str]] = keying(self._write_many, cursor) if keys else cursor
            count = rebuild(self._rollups, self._write_query, self._write_many, rows)
        if keys:
            self._write_conn.execute("ANALYZE decision_keys")
        # Fresh statistics for the planner (autovacuum would take them later): without them
        # the reports' plans are poor (a province-year of 5 million: 11 s instead of 5).
        for table in TABLES:
            self._write_conn.execute(f"ANALYZE {table}")
        return count

    def _keys_of_existing(self) -> int:
        """The search keys of every record, from nothing, in the caller's transaction."""
        with self._write_conn.cursor(name="congvu_keys") as rows:
            rows.itersize = 2000
            rows.execute("SELECT record FROM decisions")
            count = rebuild_keys(self._write_many, rows)
        self._write_conn.execute("ANALYZE decision_keys")
        return count

    def rebuild_rollups(self) -> int:
        """Roll up every record again, from nothing (one transaction; the decisions are locked
        against writes meanwhile, so gateways writing wait); how many records were read."""
        conn = self._write_conn
        try:
            with conn.transaction():
                conn.execute("SET LOCAL statement_timeout = 0")
                conn.execute("LOCK TABLE decisions IN SHARE MODE")
                return self._roll_up_existing(keys=True)
        except psycopg.Error as exc:
            self._rollups.forget()
            raise StoreError(f"cannot rebuild the rollups: {exc}") from exc

    def _write_query(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return self._write_conn.execute(sql, params or None).fetchall()

    def _write_many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        with self._write_conn.cursor() as cursor:
            cursor.executemany(sql, rows)

    # -- writing (group commit) ----------------------------------------------------------------

    def write(self, record: Record) -> str:
        """Queue ``record`` for the writer and wait until its group is committed."""
        return self._committer.write(record)

    async def write_async(
        self, record: Record, text: str | None = None, entry: Entry | None = None
    ) -> str:
        """:meth:`write` for the event loop."""
        return await self._committer.write_async(record, text, entry)

    def _commit(self, group: list[PendingRecord]) -> None:
        conn = self._write_conn
        try:
            with conn.transaction():
                conn.execute(
                    "INSERT INTO chain_heads VALUES (%s, 0, %s) ON CONFLICT DO NOTHING",
                    (self.instance, GENESIS),
                )
                head = conn.execute(
                    "SELECT seq, hash FROM chain_heads WHERE instance = %s FOR UPDATE",
                    (self.instance,),
                ).fetchone()
                if head is None:  # pragma: no cover - inserted just above
                    raise StoreError("chain head missing")
                rows, seq, prev = chain_rows(group, self.instance, *head)
                with conn.cursor() as cursor:
                    cursor.executemany(
                        INSERT_COLUMNS + "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", rows
                    )
                conn.execute(
                    "UPDATE chain_heads SET seq = %s, hash = %s WHERE instance = %s",
                    (seq, prev, self.instance),
                )
                fresh = self._rollups.write(self._write_query, self._write_many, entries_of(group))
                write_keys(self._write_many, group)
            self._rollups.remember(fresh)
        except Exception as exc:  # noqa: BLE001 - every waiter must hear about it
            if isinstance(exc, psycopg.OperationalError):
                self._reconnect()
            elif len(group) > 1:
                # One bad record (a duplicate id, say) must not fail its neighbours: each
                # gets a transaction of its own, and only the bad one hears of the failure.
                for pending in group:
                    self._commit([pending])
                return
            for pending in group:
                pending.error = exc

    def _reconnect(self) -> None:
        try:
            self._write_conn.close()
            self._write_conn = _connect_writer(self.url)
        except psycopg.Error:
            pass  # the next group fails too (4xx to clients) until the server is back

    # -- reading ---------------------------------------------------------------------------------

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            with self._read_lock:
                return self._read.execute(sql, params or None).fetchall()
        except psycopg.Error as exc:
            raise StoreError(f"decision store query failed: {exc}") from exc

    def search(self, search: Search, before: tuple[str, str] | None, limit: int) -> list[Record]:
        """One page of the records ``search`` finds, newest first."""
        sql, params = search_query(search, before, limit)
        return [json.loads(r[0]) for r in self._query(sql, tuple(params))]

    def chain_link(self, decision_id: str) -> ChainLink | None:
        """Where the record ``decision_id`` sits in its chain, and whether it holds there."""
        rows = self._query(CHAIN_LINK_QUERY, (decision_id.upper(),))
        return chain_link(rows[0] if rows else None, self._anchors())

    def get(self, decision_id: str) -> Record | None:
        """One record by id (case-insensitive)."""
        rows = self._query("SELECT record FROM decisions WHERE id = %s", (decision_id.upper(),))
        return json.loads(rows[0][0]) if rows else None

    def tail(self, limit: int) -> list[Record]:
        """The newest ``limit`` records, oldest first."""
        rows = self._query(
            "SELECT record FROM decisions ORDER BY time DESC, id DESC LIMIT %s", (limit,)
        )
        return [json.loads(r[0]) for r in reversed(rows)]

    def records_between(self, start: str, end: str) -> list[Record]:
        """Records with ``start <= time < end``, oldest first."""
        rows = self._query(
            "SELECT record FROM decisions WHERE time >= %s AND time < %s ORDER BY time, id",
            (start, end),
        )
        return [json.loads(r[0]) for r in rows]

    def iter_records_between(self, start: str, end: str) -> Iterator[Record]:
        """:meth:`records_between` a page at a time (bounded memory, no long read)."""
        return pages(lambda params: [tuple(r) for r in self._query(PAGE_QUERY, params)], start, end)

    def _anchors(self) -> dict[str, tuple[int, str]]:
        """Each pruned chain's anchor: the seq and hash of its last pruned record."""
        return anchors_of(
            self._query("SELECT key, value FROM congvu_meta WHERE key LIKE 'anchor:%'")
        )

    def verify(self) -> list[ChainProblem]:
        """Check every instance's chain from its anchor."""
        anchors = self._anchors()
        # Streamed (a server-side cursor): a province-year's records are tens of gigabytes.
        try:
            with (
                self._read_lock,
                self._read.transaction(),
                self._read.cursor(name="congvu_verify") as rows,
            ):
                rows.itersize = 2000
                rows.execute(VERIFY_QUERY)
                problems = verify_rows(rows, anchors)
        except psycopg.Error as exc:
            raise StoreError(f"decision store query failed: {exc}") from exc
        # The chain heads say how far each chain reached: newest records deleted show here.
        for instance, head_seq, newest in self._query(
            "SELECT h.instance, h.seq, (SELECT MAX(seq) FROM decisions d"
            " WHERE d.instance = h.instance) FROM chain_heads h"
        ):
            floor = anchors.get(instance, (0, ""))[0]
            if (newest or floor) != head_seq:
                problems.append(
                    ChainProblem(
                        instance,
                        head_seq,
                        "(head)",
                        f"the chain reached #{head_seq} but its newest record is "
                        f"#{newest or floor}: newest records deleted",
                    )
                )
        return problems

    def prune(self, before: str) -> int:
        """Delete records older than ``before``, keeping each chain's anchor."""
        conn = self._write_conn
        with conn.transaction():
            deleted = 0
            for instance, limit, digest in prune_plan(conn.execute, before, "%s"):
                conn.execute(
                    "INSERT INTO congvu_meta VALUES (%s, %s) ON CONFLICT (key) DO UPDATE "
                    "SET value = EXCLUDED.value",
                    (f"anchor:{instance}", json.dumps({"seq": limit, "hash": digest})),
                )
                deleted += conn.execute(
                    "DELETE FROM decisions WHERE instance = %s AND seq <= %s", (instance, limit)
                ).rowcount
            conn.execute(PRUNE_KEYS, (before, before))
        return deleted

    def replace_accounts(self, accounts: list[Account]) -> None:
        """Swap the whole directory in one transaction (readers see the old or the new one)."""
        conn = self._write_conn
        try:
            with conn.transaction(), conn.cursor() as cursor:
                cursor.execute("DELETE FROM accounts")
                cursor.executemany(
                    "INSERT INTO accounts VALUES (%s, %s, %s, %s, %s, %s)",
                    [account_row(a) for a in accounts],
                )
        except psycopg.Error as exc:
            raise StoreError(f"cannot import the directory: {exc}") from exc

    def accounts(self) -> list[Account]:
        """The directory, by address."""
        return [account_from_row(r) for r in self._query("SELECT * FROM accounts ORDER BY address")]

    def record_activity(self, rows: list[tuple[str, str, str, str, str]]) -> None:
        """Add mailbox activity: (login, day, kind, first seen, last seen) rows, merged with
        what is stored (the earliest first and the latest last seen win: idempotent)."""
        conn = self._write_conn
        try:
            with conn.transaction(), conn.cursor() as cursor:
                cursor.executemany(ADD_ACTIVITY, rows)
        except psycopg.Error as exc:
            raise StoreError(f"cannot record mailbox activity: {exc}") from exc

    def activity_between(self, start: str, end: str) -> list[tuple[str, str, str]]:
        """(login, kind, last seen) of the activity seen in ``start <= time < end``."""
        return [tuple(r) for r in self._query(ACTIVITY_QUERY, (end, start))]

    # -- rollups (gateway.store.tallies): what reports read -------------------------------------

    def rollups(self) -> RollupReader:
        """The daily rollups, for reports."""
        return RollupReader(lambda sql, params: self._query(sql, tuple(params)))

    def close(self) -> None:
        """Finish queued writes, then close."""
        self._committer.close()
        self._write_conn.close()
        self._read.close()

    def describe(self) -> str:
        """The URL, without its password."""
        return _safe_url(self.url)


def _connect_writer(url: str) -> psycopg.Connection[Any]:
    # SET, not the "options" parameter: that would replace options given in the URL.
    conn = psycopg.connect(url, connect_timeout=10)
    for statement in _TIMEOUTS:
        conn.execute(statement)
    conn.commit()
    return conn


def _safe_url(url: str) -> str:
    """The URL without its password, for messages: libpq takes one in the user part
    (``user:secret@``) and as a parameter (``?password=secret``; ``sslpassword`` too)."""
    from urllib.parse import urlsplit  # noqa: PLC0415

    parts = urlsplit(url)
    if parts.password:
        url = url.replace(f":{parts.password}@", ":***@")
    base, mark, query = url.partition("?")
    fields = [
        f"{f.partition('=')[0]}=***" if f.partition("=")[0].endswith("password") else f
        for f in query.split("&")
    ]
    return base + mark + "&".join(fields)
