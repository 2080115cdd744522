"""The decision log's search keys, kept by both stores as records commit: each record's
envelope recipients (``to:`` and the address, lowercased) and reason codes (``reason:`` and
the code), with its time and id, in one table ordered by key then time.

The web console's search (:func:`gateway.store.base.search_query`) finds a recipient's or a
reason's decisions through them, newest first, a page at a time, without reading the records
of a province-year (about 5 million). The envelope sender needs no key: it is a column of
``decisions``, indexed with the time. Like the rollups, the keys are not hash-chained: they
only point at records, which are. A store made before them gets them once, when it is first
opened by this version (:func:`rebuild_keys`); pruning deletes the keys of the records it
deletes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from gateway.store.commit import PendingRecord

__all__ = [
    "INSERT_KEYS",
    "PRUNE_KEYS",
    "keying",
    "keys_of",
    "keys_schema",
    "rebuild_keys",
    "write_keys",
]

Many = Callable[[str, list[tuple[Any, ...]]], None]  # one statement, many parameter rows

INSERT_KEYS = "INSERT INTO decision_keys VALUES (%s, %s, %s) ON CONFLICT DO NOTHING"
# The keys of records pruned (parameters: the cut-off twice): prune deletes a prefix of each
# chain, so a record older than the cut-off may stay; its keys stay with it.
PRUNE_KEYS = (
    "DELETE FROM decision_keys WHERE time < %s AND NOT EXISTS "
    "(SELECT 1 FROM decisions d WHERE d.id = decision_keys.id AND d.time < %s)"
)


def keys_schema(clustered: str = "") -> str:
    """The table (idempotent); ``clustered``: SQLite's WITHOUT ROWID, so that a key's
    decisions are read in one sweep of the table itself."""
    return (
        "CREATE TABLE IF NOT EXISTS decision_keys (key TEXT NOT NULL, time TEXT NOT NULL, "
        f"id TEXT NOT NULL, PRIMARY KEY (key, time, id)){clustered}"
    )


def keys_of(record: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The (key, time, id) rows of a stored record (as JSON values); none for a record whose
    layout is not a decision's (it is stored all the same)."""
    try:
        time, ident = str(record["time"]), str(record["id"])
        recipients = [str(r["address"]).lower() for r in record["envelope"]["recipients"]]
        reasons = [str(code) for code in record.get("reasons", [])]
    except (KeyError, TypeError, AttributeError):
        return []
    found = dict.fromkeys([*(f"to:{a}" for a in recipients), *(f"reason:{c}" for c in reasons)])
    return [(key, time, ident) for key in found]


def write_keys(many: Many, group: Sequence[PendingRecord]) -> None:
    """Insert the keys of a group commit's records, in the caller's transaction."""
    rows = [row for pending in group for row in keys_of(pending.record)]
    if rows:
        many(INSERT_KEYS, rows)


def keying(many: Many, rows: Iterable[tuple[str]]) -> Iterator[tuple[str]]:
    """The stored records ``rows`` (their JSON text) passed on as they are read, their keys
    written, from nothing, on the way (in the caller's transaction): ``congvu audit rollup``
    rebuilds the rollups and the keys in one read of the records."""
    many("DELETE FROM decision_keys", [()])
    batch: list[tuple[str, str, str]] = []
    for row in rows:
        batch += keys_of(json.loads(row[0]))
        if len(batch) >= 5000:
            many(INSERT_KEYS, batch)
            batch = []
        yield row
    if batch:
        many(INSERT_KEYS, batch)


def rebuild_keys(many: Many, rows: Iterable[tuple[str]]) -> int:
    """The keys of every stored record ``rows`` (their JSON text), from nothing, in the
    caller's transaction; how many records were read."""
    return sum(1 for _ in keying(many, rows))
