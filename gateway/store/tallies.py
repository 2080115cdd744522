"""Daily rollups of the decision records, kept by both stores as records commit.

Each record's :class:`gateway.report.tally.Entry` is added, in the transaction that inserts
the record, to the tables below; a report reads sums over its days with GROUP BY instead of
reading every record (a province-year is about 5 million). The tables:

- ``senders``: each distinct :class:`~gateway.report.tally.Sender` once, numbered;
- ``tallies``: per day (Vietnam time), sender and verdict, the counted columns and the
  latest record's time (the idle list's "last seen");
- ``tally_reasons``: refusals per day, sender and reason;
- ``tally_registrations``: public-service registrations per day and recipient;
- ``tally_marks``: the ids behind findings (unsigned documents returned, personal-provider
  refusals), by time; ``tally_proven``: the ids of records whose sender a personal address
  may credit, by sender.

The rollups are not hash-chained: ``congvu report --from-records`` recomputes any report from
the chained records, and must agree. A store made before them is rolled up once, when it is
first opened by this version (:func:`rebuild`). Pruning deletes records but keeps the rollups:
the scores of a pruned period stay readable.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any

from gateway.record import Record, RecordError
from gateway.report.tally import (
    JUDGED,
    MARKS,
    TALLY_COUNTS,
    Entry,
    Mark,
    Sender,
    Tally,
    Totals,
    entry,
)
from gateway.store.commit import PendingRecord

__all__ = [
    "POSTGRES_SERIAL",
    "SQLITE_CLUSTERED",
    "SQLITE_SERIAL",
    "TABLES",
    "RollupReader",
    "Rollups",
    "entries_of",
    "rebuild",
    "schema",
]

Query = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]  # a SELECT: its rows
Many = Callable[[str, list[tuple[Any, ...]]], None]  # one statement, many parameter rows


# The SQL of both stores, with "%s" placeholders (SQLite's connection is given them as "?").
_SUMS = ", ".join(f"SUM({c})" for c in TALLY_COUNTS)
_ADDED = ", ".join(f"{c} = tallies.{c} + EXCLUDED.{c}" for c in TALLY_COUNTS)
ADD_SENDERS = "INSERT INTO senders (key) VALUES (%s) ON CONFLICT (key) DO NOTHING"
ADD_TALLIES = (
    f"INSERT INTO tallies (day, sender, verdict, {', '.join(TALLY_COUNTS)}, last_time) "  # noqa: S608 - column names
    f"VALUES ({', '.join(['%s'] * (4 + len(TALLY_COUNTS)))}) "
    f"ON CONFLICT (day, sender, verdict) DO UPDATE SET {_ADDED}, last_time = CASE "
    "WHEN EXCLUDED.last_time > tallies.last_time THEN EXCLUDED.last_time "
    "ELSE tallies.last_time END"
)
ADD_REASONS = (
    "INSERT INTO tally_reasons VALUES (%s, %s, %s, %s) ON CONFLICT (day, sender, reason) "
    "DO UPDATE SET records = tally_reasons.records + EXCLUDED.records"
)
ADD_REGISTRATIONS = (
    "INSERT INTO tally_registrations VALUES (%s, %s, %s) ON CONFLICT (day, recipient) "
    "DO UPDATE SET records = tally_registrations.records + EXCLUDED.records"
)
ADD_MARKS = "INSERT INTO tally_marks VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING"
ADD_PROVEN = "INSERT INTO tally_proven VALUES (%s, %s, %s) ON CONFLICT DO NOTHING"
SUM_TALLIES = (
    f"SELECT sender, verdict, {_SUMS}, MAX(last_time) FROM tallies "  # noqa: S608 - column names
    "WHERE day >= %s AND day <= %s{among} GROUP BY sender, verdict"
)
SUM_REASONS = (
    "SELECT sender, reason, SUM(records) FROM tally_reasons "
    "WHERE day >= %s AND day <= %s{among} GROUP BY sender, reason"
)
SUM_REGISTRATIONS = (
    "SELECT recipient, SUM(records) FROM tally_registrations "
    "WHERE day >= %s AND day <= %s GROUP BY recipient"
)
REFUSALS_BY_DAY = (
    "SELECT day, reason, SUM(records) FROM tally_reasons WHERE day >= %s AND day <= %s "
    "GROUP BY day, reason"
)
RECORDS_BY_DAY = (
    "SELECT day, SUM(no_reason), SUM(records) FROM tallies WHERE day >= %s AND day <= %s "
    "GROUP BY day"
)
MARKS_BETWEEN = (
    "SELECT time, id, mark, sender FROM tally_marks WHERE time >= %s AND time < %s{among}"
)
PROVEN_BETWEEN = "SELECT time, id FROM tally_proven WHERE sender = %s AND time >= %s AND time < %s"
LAST_SEEN = (
    "SELECT sender, MAX(last_time) FROM tallies WHERE day <= %s "
    "AND verdict IN ('accept', 'reject') GROUP BY sender"
)
_IN_SQL = 500  # senders named in a query at most; more are filtered here
assert JUDGED == ("accept", "reject")  # as LAST_SEEN names them


def schema(serial: str, clustered: str = "") -> str:
    """The rollups' tables (idempotent); ``serial``: an integer key the database numbers;
    ``clustered``: what makes a table kept in its key's order (SQLite's WITHOUT ROWID: a
    period's tallies are then read in one sweep, not a lookup each)."""
    counts = ",\n    ".join(f"{name} BIGINT NOT NULL" for name in TALLY_COUNTS)
    return f"""
CREATE TABLE IF NOT EXISTS senders (id {serial}, key TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS tallies (
    day TEXT NOT NULL,
    sender BIGINT NOT NULL,
    verdict TEXT NOT NULL,
    {counts},
    last_time TEXT NOT NULL,
    PRIMARY KEY (day, sender, verdict)
){clustered};
CREATE INDEX IF NOT EXISTS tallies_sender ON tallies (sender, day);
CREATE TABLE IF NOT EXISTS tally_reasons (
    day TEXT NOT NULL,
    sender BIGINT NOT NULL,
    reason TEXT NOT NULL,
    records BIGINT NOT NULL,
    PRIMARY KEY (day, sender, reason)
){clustered};
CREATE TABLE IF NOT EXISTS tally_registrations (
    day TEXT NOT NULL,
    recipient TEXT NOT NULL,
    records BIGINT NOT NULL,
    PRIMARY KEY (day, recipient)
){clustered};
CREATE TABLE IF NOT EXISTS tally_marks (
    time TEXT NOT NULL,
    id TEXT NOT NULL,
    mark TEXT NOT NULL,
    sender BIGINT NOT NULL,
    PRIMARY KEY (time, id, mark)
){clustered};
CREATE INDEX IF NOT EXISTS tally_marks_sender ON tally_marks (sender, time);
CREATE TABLE IF NOT EXISTS tally_proven (
    sender BIGINT NOT NULL,
    time TEXT NOT NULL,
    id TEXT NOT NULL,
    PRIMARY KEY (sender, time, id)
){clustered};
"""


SQLITE_SERIAL = "INTEGER PRIMARY KEY"
SQLITE_CLUSTERED = " WITHOUT ROWID"
POSTGRES_SERIAL = "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"
TABLES = (
    "senders",
    "tallies",
    "tally_reasons",
    "tally_registrations",
    "tally_marks",
    "tally_proven",
)


def _placeholders(count: int) -> str:
    return ", ".join(["%s"] * count)


def _among(senders: Collection[int] | None) -> tuple[str, list[int]]:
    """A filter on the ``sender`` column, and its parameters: none for None (every sender) or
    for too many to name (the caller filters the rows)."""
    if senders is None or len(senders) > _IN_SQL:
        return "", []
    if not senders:
        return " AND 0 = 1", []
    return f" AND sender IN ({_placeholders(len(senders))})", list(senders)


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Rollups:
    """One store's rollups: written inside its commit, read by its reports.

    ``query`` and ``many`` run statements on the connection (and in the transaction) the
    caller holds. Sender numbers are remembered across commits, but only once committed
    (:meth:`remember`): a rolled-back commit must not leave a number that does not exist.
    """

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}

    # -- writing --------------------------------------------------------------------------------

    def write(self, query: Query, many: Many, entries: Sequence[Entry]) -> dict[str, int]:
        """Add ``entries`` (in the caller's transaction); the sender numbers it had to look
        up, for :meth:`remember` once the transaction commits."""
        keyed = [(item, item.sender.key()) for item in entries]
        fresh: dict[str, int] = {}
        # Rows go in key order: gateways sharing a PostgreSQL store then lock them in one
        # order, and never deadlock (which would fail both commits: 4xx to their clients).
        new = sorted({key for _, key in keyed if key not in self._ids})
        if new:
            many(ADD_SENDERS, [(key,) for key in new])
            for chunk in _chunks(new, _IN_SQL):
                sql = f"SELECT id, key FROM senders WHERE key IN ({_placeholders(len(chunk))})"  # noqa: S608
                fresh.update((key, ident) for ident, key in query(sql, chunk))
        tallies: dict[tuple[str, int, str], Tally] = {}
        reasons: Counter[tuple[str, int, str]] = Counter()
        registrations: Counter[tuple[str, str]] = Counter()
        marks, proven = [], []
        for item, key in keyed:
            sender = self._ids.get(key) or fresh[key]
            tallies.setdefault((item.day, sender, item.verdict), Tally()).add(item.tally)
            reasons.update((item.day, sender, reason) for reason in item.reasons)
            registrations.update((item.day, rcpt) for rcpt in item.registrations)
            for mark in item.marks:
                if mark == "proven":
                    proven.append((sender, item.time, item.id))
                else:
                    marks.append((item.time, item.id, mark, sender))
        for sql, rows in (
            (
                ADD_TALLIES,
                [(*k, *tallies[k].counts(), tallies[k].last_time) for k in sorted(tallies)],
            ),
            (ADD_REASONS, [(*k, reasons[k]) for k in sorted(reasons)]),
            (ADD_REGISTRATIONS, [(*k, registrations[k]) for k in sorted(registrations)]),
            (ADD_MARKS, sorted(marks)),
            (ADD_PROVEN, sorted(proven)),
        ):
            if rows:
                many(sql, rows)
        return fresh

    def remember(self, fresh: dict[str, int]) -> None:
        """Keep the numbers of a committed :meth:`write`."""
        if len(self._ids) > 200_000:  # a flood of one-off senders: start again
            self._ids.clear()
        self._ids.update(fresh)

    def forget(self) -> None:
        """Drop the remembered numbers (after :func:`rebuild`, which renumbers)."""
        self._ids.clear()


class RollupReader:
    """What reports read from a store's rollups (``query`` runs a SELECT on the store)."""

    def __init__(self, query: Query) -> None:
        self.query = query

    def senders(self) -> dict[int, Sender]:
        """Every sender on record, by number."""
        rows = self.query("SELECT id, key FROM senders", ())
        return {ident: Sender.from_key(key) for ident, key in rows}

    def totals(self, first: str, last: str, senders: dict[int, Sender], *, every: bool) -> Totals:
        """The days [first, last] added up for ``senders`` (all of them if ``every``)."""
        among, named = _among(None if every else senders)
        totals = Totals()
        rows = self.query(SUM_TALLIES.format(among=among), [first, last, *named])
        for sender, verdict, *counts, last_time in rows:
            if sender in senders:
                tally = Tally.of(counts, last_time)
                totals.tallies.setdefault(senders[sender], {})[verdict] = tally
        for sender, reason, count in self.query(
            SUM_REASONS.format(among=among), [first, last, *named]
        ):
            if sender in senders:
                totals.reasons.setdefault(senders[sender], Counter())[reason] = int(count)
        rows = self.query(SUM_REGISTRATIONS, [first, last])
        totals.registrations.update({rcpt: int(count) for rcpt, count in rows})
        return totals

    def refusals(self, first: str, last: str) -> tuple[dict[str, Counter[str]], int]:
        """Refusals per day by reason ("(other)": none named) in [first, last], and how many
        records the days hold."""
        by_day: dict[str, Counter[str]] = {}
        for day, reason, count in self.query(REFUSALS_BY_DAY, [first, last]):
            by_day.setdefault(day, Counter())[reason] = int(count)
        records = 0
        for day, other, count in self.query(RECORDS_BY_DAY, [first, last]):
            records += int(count)
            if other:
                by_day.setdefault(day, Counter())["(other)"] = int(other)
        return by_day, records

    def marks(
        self, start: str, end: str, senders: dict[int, Sender], proven: Collection[int]
    ) -> list[Mark]:
        """The marks of ``senders``' records in [start, end) (UTC times), with the "proven"
        ones of the senders in ``proven`` only; in the records' order."""
        among, named = _among(senders)
        found = [
            (time, ident, sender, mark)
            for time, ident, mark, sender in self.query(
                MARKS_BETWEEN.format(among=among), [start, end, *named]
            )
            if sender in senders
        ]
        for sender in proven:
            found.extend(
                (time, ident, sender, "proven")
                for time, ident in self.query(PROVEN_BETWEEN, [sender, start, end])
            )
        found.sort(key=lambda f: (f[0], f[1], MARKS.index(f[3])))
        return [(time, ident, senders[sender], mark) for time, ident, sender, mark in found]

    def last_seen(self, last: str, senders: dict[int, Sender]) -> dict[Sender, str]:
        """Each sender's latest judged record up to the day ``last``."""
        rows = self.query(LAST_SEEN, [last])
        return {senders[sender]: when for sender, when in rows if sender in senders}


def entry_of(record: dict[str, Any]) -> Entry | None:
    """What a stored record (as JSON values) adds; None for a record the reader refuses: it
    is stored all the same, and adds nothing (``--from-records`` says what is wrong)."""
    try:
        return entry(Record.from_dict(record))
    except (RecordError, ValueError, KeyError, TypeError, AttributeError):
        return None


def entries_of(group: Sequence[PendingRecord]) -> list[Entry]:
    """What the records of a group commit add: as their writer said, else read from them."""
    found = (p.entry or entry_of(p.record) for p in group)
    return [item for item in found if item is not None]


def rebuild(rollups: Rollups, query: Query, many: Many, rows: Iterable[tuple[str]]) -> int:
    """Roll up, from nothing, the stored records ``rows`` (their JSON text), in the caller's
    transaction; how many were read. Committed numbers are forgotten: the caller remembers
    the new ones once it commits."""
    for table in TABLES:
        many(f"DELETE FROM {table}", [()])  # noqa: S608 - our own table names
    rollups.forget()
    batch: list[Entry] = []
    count = 0
    fresh: dict[str, int] = {}
    for (text,) in rows:
        count += 1
        item = entry_of(json.loads(text))
        if item is not None:
            batch.append(item)
        if len(batch) >= 2000:
            rollups.remember(fresh)
            fresh = rollups.write(query, many, batch)
            batch = []
    fresh.update(rollups.write(query, many, batch))
    rollups.remember(fresh)
    return count
