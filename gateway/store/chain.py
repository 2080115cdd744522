"""The hash chain that makes the decision log tamper-evident, shared by both stores.

Each gateway instance's records form a chain: record number ``seq`` carries the hash of the one
before (``prev_hash``) and its own ``hash`` over that and its JSON text. ``verify_rows`` walks
the chains; ``prune_plan`` says which oldest part of each chain may go, leaving an anchor.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.store.base import Record
from gateway.store.commit import PendingRecord

__all__ = [
    "CHAIN_LINK_QUERY",
    "GENESIS",
    "INSERT_COLUMNS",
    "VERIFY_QUERY",
    "ChainLink",
    "ChainProblem",
    "anchors_of",
    "chain_hash",
    "chain_link",
    "chain_rows",
    "prune_plan",
    "record_columns",
    "verify_rows",
]

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


def anchors_of(rows: Iterable[tuple[str, str]]) -> dict[str, tuple[int, str]]:
    """Each pruned chain's anchor (the seq and hash of its last pruned record), from the
    stores' meta rows ``("anchor:INSTANCE", JSON)`` that ``prune`` writes."""
    anchors = {}
    for key, value in rows:
        data = json.loads(value)
        anchors[key.removeprefix("anchor:")] = (int(data["seq"]), str(data["hash"]))
    return anchors


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


# One record's place in its chain, with its neighbours (both stores; "%s" placeholders).
CHAIN_LINK_QUERY = (
    "SELECT d.instance, d.seq, d.prev_hash, d.hash, d.record, p.id, p.hash, n.id"
    " FROM decisions d"
    " LEFT JOIN decisions p ON p.instance = d.instance AND p.seq = d.seq - 1"
    " LEFT JOIN decisions n ON n.instance = d.instance AND n.seq = d.seq + 1"
    " WHERE d.id = %s"
)


@dataclass(frozen=True)
class ChainLink:
    """Where one record sits in its instance's chain, as an auditor checks it by hand."""

    instance: str
    seq: int
    prev_hash: str
    hash: str
    previous_id: str  # "" when the record is the first kept (the chain's start, or pruned)
    next_id: str  # "" when it is the newest
    sealed: bool  # its hash is that of the previous hash and its own text: not edited
    linked: bool  # the record before it carries the hash it names (or it starts the chain)


def chain_link(row: Sequence[Any] | None, anchors: dict[str, tuple[int, str]]) -> ChainLink | None:
    """The :class:`ChainLink` of a :data:`CHAIN_LINK_QUERY` row (None: no such record)."""
    if row is None:
        return None
    instance, seq, prev, digest, text, previous_id, previous_hash, next_id = row
    if previous_hash is None:  # the first record, or the first after a prune (its anchor)
        anchor = anchors.get(instance)
        previous_hash = anchor[1] if anchor is not None and anchor[0] == seq - 1 else None
        if previous_hash is None and seq == 1:
            previous_hash = GENESIS
    return ChainLink(
        instance=instance,
        seq=int(seq),
        prev_hash=prev,
        hash=digest,
        previous_id=previous_id or "",
        next_id=next_id or "",
        sealed=chain_hash(prev, text) == digest,
        linked=previous_hash == prev,
    )
