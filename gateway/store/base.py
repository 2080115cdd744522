"""The decision store's interface: what every store offers the gateway, the ``congvu``
commands and other front-ends, and the one error they raise.

A record is a JSON object (its schema is frozen by ``tests/gateway/test_tls_and_audit.py``;
auditors' parsers depend on it), stored with exactly one per SMTP transaction before the final
reply. If the store cannot be written the caller must answer 4xx: never 250 without a record.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from gateway.directory import Account
    from gateway.report.tally import Entry
    from gateway.store.chain import ChainLink, ChainProblem
    from gateway.store.tallies import RollupReader

__all__ = [
    "ACTIVITY_QUERY",
    "ACTIVITY_SCHEMA",
    "ADD_ACTIVITY",
    "PAGE_QUERY",
    "PAGE_SIZE",
    "DecisionStore",
    "Record",
    "Search",
    "StoreError",
    "pages",
    "search_query",
]

Record = dict[str, Any]

# One page of records in [start, end), after the (time, id) key of the previous page's last
# (parameters: time, end, time, id, limit; "%s" placeholders, "?" for SQLite). Written so
# that the time index gives the range from the last time on: a page costs its own rows, not
# a sort of the whole rest of the period (the OR of the plain form made SQLite sort it all,
# each page: 300,000 records took 100 s instead of 38).
PAGE_QUERY = (
    "SELECT time, id, record FROM decisions WHERE time >= %s AND time < %s"
    " AND (time > %s OR id > %s) ORDER BY time, id LIMIT %s"
)
PAGE_SIZE = 2000


def pages(
    read: Callable[[tuple[str, str, str, str, int]], list[tuple[str, str, str]]],
    start: str,
    end: str,
) -> Iterator[Record]:
    """The records in [start, end), oldest first, fetched by ``read`` (one page of
    :data:`PAGE_QUERY`) a page at a time."""
    time, last_id = start, ""  # the first page takes time == start too: every id is > ""
    while True:
        rows = read((time, end, time, last_id, PAGE_SIZE))
        for row_time, row_id, text in rows:
            yield json.loads(text)
            time, last_id = row_time, row_id
        if len(rows) < PAGE_SIZE:
            return


@dataclass(frozen=True)
class Search:
    """What the web console's search asks of the decision log: each field given narrows it.

    ``senders``: envelope senders, any of them (a unit's addresses); ``recipient``: an
    envelope recipient (any case); ``reason``: a reason code the record was refused (or
    tempfailed) for; ``verdict``: accept, reject or tempfail; ``start``/``end``: record
    times (ISO UTC), end excluded.
    """

    senders: tuple[str, ...] = ()
    recipient: str = ""
    reason: str = ""
    verdict: str = ""
    start: str = ""
    end: str = ""


def search_query(
    search: Search, before: tuple[str, str] | None, limit: int
) -> tuple[str, list[Any]]:
    """Both stores' SQL (``%s`` placeholders) for one page of ``search``: the newest records
    first, older than ``before`` (the previous page's last (time, id)), at most ``limit``.

    The page is read from the newest end of one index, in order, and stops when full; the
    other criteria are checked on the way, and the records themselves read for the page's ids
    only. The index: the senders' (mail_from, time, id) when senders are given (a person's or
    a unit's mail is bounded, a reason or a common recipient may be a province's), else a
    recipient's or a reason's search keys (:mod:`gateway.store.keys`), else the time index.
    """
    keys = [f"to:{search.recipient.lower()}"] if search.recipient else []
    keys += [f"reason:{search.reason}"] if search.reason else []
    # Read through the senders' index or the time index (d), or the first key's rows (k).
    driving_key = keys[0] if keys and not search.senders else ""
    checked_keys = keys[1:] if driving_key else keys
    on = "k." if driving_key else "d."
    where: list[str] = []
    params: list[Any] = []
    if driving_key:
        where.append("k.key = %s")
        params.append(driving_key)
    if search.start:
        where.append(f"{on}time >= %s")
        params.append(search.start)
    if search.end:
        where.append(f"{on}time < %s")
        params.append(search.end)
    if before is not None:
        where.append(f"({on}time < %s OR ({on}time = %s AND {on}id < %s))")
        params += [before[0], before[0], before[1]]
    if search.senders:
        senders = sorted({s for a in search.senders for s in (a, a.lower())})
        where.append(f"d.mail_from IN ({', '.join(['%s'] * len(senders))})")
        params += senders
    if search.verdict:
        where.append("d.verdict = %s")
        params.append(search.verdict)
    for key in checked_keys:
        where.append(
            "EXISTS (SELECT 1 FROM decision_keys c WHERE c.key = %s"  # noqa: S608 - names only
            f" AND c.time = {on}time AND c.id = {on}id)"
        )
        params.append(key)
    source = "decision_keys k JOIN decisions d ON d.id = k.id" if driving_key else "decisions d"
    # Only column names and placeholders are put together here; the values are parameters.
    inner = f"SELECT {on}id FROM {source}"  # noqa: S608
    if where:
        inner += " WHERE " + " AND ".join(where)
    order = f" ORDER BY {on}time DESC, {on}id DESC"
    params.append(limit)
    sql = (
        f"SELECT record FROM decisions WHERE id IN ({inner}{order} LIMIT %s)"  # noqa: S608
        " ORDER BY time DESC, id DESC"
    )
    return sql, params


# Mailbox activity: per login, day and kind, when first and last seen (both stores; idempotent).
ACTIVITY_SCHEMA = """
CREATE TABLE IF NOT EXISTS activity (
    login TEXT NOT NULL,
    day TEXT NOT NULL,
    kind TEXT NOT NULL,
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    PRIMARY KEY (login, day, kind)
);
CREATE INDEX IF NOT EXISTS activity_day ON activity (day);
"""

# Mailbox activity merged in (login, day, kind, first seen, last seen): the earliest first and
# the latest last seen win, so importing twice counts once. Both stores' statement ("%s"
# placeholders, "?" for SQLite; CASE, as SQLite has no LEAST nor GREATEST).
ADD_ACTIVITY = (
    "INSERT INTO activity VALUES (%s, %s, %s, %s, %s) ON CONFLICT (login, day, kind) DO UPDATE "
    "SET first_seen = CASE WHEN EXCLUDED.first_seen < activity.first_seen "
    "THEN EXCLUDED.first_seen ELSE activity.first_seen END, "
    "last_seen = CASE WHEN EXCLUDED.last_seen > activity.last_seen "
    "THEN EXCLUDED.last_seen ELSE activity.last_seen END"
)

# Mailbox activity seen in a period [start, end): (login, kind, last seen), both stores'
# query (parameters: end, start; "%s" placeholders, "?" for SQLite).
ACTIVITY_QUERY = (
    "SELECT login, kind, MAX(last_seen) FROM activity WHERE first_seen < %s AND last_seen >= %s"
    " GROUP BY login, kind ORDER BY login, kind"
)


class StoreError(Exception):
    """The decision store could not be read or written."""


class DecisionStore(Protocol):
    """Where decision records are kept (SQLite or PostgreSQL: both keep the same contract,
    ``tests/gateway/store/test_contract.py``)."""

    def write(self, record: Record) -> str:
        """Store ``record`` durably (committed when this returns); return its chain hash."""

    async def write_async(
        self, record: Record, text: str | None = None, entry: Entry | None = None
    ) -> str:
        """:meth:`write`, awaited on the event loop: no thread is held while it waits.
        ``text``: the record as JSON (sorted keys), and ``entry``: what it adds to the
        rollups, if the caller has them already."""

    def get(self, decision_id: str) -> Record | None:
        """The record with ``decision_id``, or None."""

    def tail(self, limit: int) -> list[Record]:
        """The newest ``limit`` records, oldest first."""

    def records_between(self, start: str, end: str) -> list[Record]:
        """Records with ``start <= time < end`` (ISO 8601 UTC strings), oldest first."""

    def iter_records_between(self, start: str, end: str) -> Iterator[Record]:
        """:meth:`records_between`, read a page at a time: memory stays bounded whatever the
        period, and no read transaction stays open between pages."""

    def verify(self) -> list[ChainProblem]:
        """Every place where an instance's chain breaks (edits, deletions, insertions)."""

    def search(self, search: Search, before: tuple[str, str] | None, limit: int) -> list[Record]:
        """One page of the records ``search`` finds, newest first (:func:`search_query`)."""

    def chain_link(self, decision_id: str) -> ChainLink | None:
        """Where the record ``decision_id`` sits in its chain, and whether it holds there."""

    def prune(self, before: str) -> int:
        """Delete records older than ``before``, keeping the chains verifiable; how many."""

    def replace_accounts(self, accounts: list[Account]) -> None:
        """Swap the whole account directory in one transaction."""

    def record_activity(self, rows: list[tuple[str, str, str, str, str]]) -> None:
        """Merge mailbox activity rows (login, day, kind, first seen, last seen)."""

    def activity_between(self, start: str, end: str) -> list[tuple[str, str, str]]:
        """(login, kind, last seen) of the activity seen in ``start <= time < end``."""

    def rollups(self) -> RollupReader:
        """The daily rollups the reports read (:mod:`gateway.store.tallies`)."""

    def rebuild_rollups(self) -> int:
        """Roll up every record again, from nothing; how many records were read."""

    def accounts(self) -> list[Account]:
        """The account directory, by address."""

    def close(self) -> None:
        """Release the store."""

    def describe(self) -> str:
        """Which store this is, for logs and messages (never a password)."""
