"""The decision store: exactly one record per SMTP transaction, stored before the final reply,
each gateway instance's records chained by hash so that edits and deletions are evident.

A record goes to the structured log as the ``policy.decision`` event (:class:`AuditLog`) and
into a :class:`DecisionStore`: SQLite by default (:mod:`gateway.store.sqlite`), PostgreSQL when
several gateways share one log (:mod:`gateway.store.postgres`). Both keep one contract
(``tests/gateway/store/test_contract.py``): the hash chain (:mod:`gateway.store.chain`) and the
group commit (:mod:`gateway.store.commit`) are theirs in common.

``PostgresStore`` is imported on first use only: a gateway on SQLite never loads psycopg.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.store.auditlog import AuditLog, clean_text
from gateway.store.base import DecisionStore, Record, StoreError
from gateway.store.chain import ChainProblem
from gateway.store.journal import Journal, reconcile
from gateway.store.sqlite import SqliteStore

if TYPE_CHECKING:
    from gateway.config import GatewayConfig
    from gateway.store.postgres import PostgresStore

__all__ = [
    "AuditLog",
    "ChainProblem",
    "DecisionStore",
    "Journal",
    "PostgresStore",
    "Record",
    "SqliteStore",
    "StoreError",
    "clean_text",
    "journal_path",
    "open_store",
    "reconcile",
]


def journal_path(config: GatewayConfig) -> Path:
    """This process's relay journal (see :mod:`gateway.store.journal`): beside the SQLite
    store (with PostgreSQL too: the journal is the process's own, on its own disk)."""
    instance = config.hostname
    if config.worker_index is not None:
        instance = f"{config.hostname}-w{config.worker_index}"
    return config.store_path.parent / f"journal-{instance}.jsonl"


def open_store(config: GatewayConfig) -> DecisionStore:
    """The decision store the configuration names: PostgreSQL if a URL is given, else SQLite."""
    # Each process keeps its own hash chain: worker processes are instances of their own.
    instance = config.hostname
    if config.worker_index is not None:
        instance = f"{config.hostname}/w{config.worker_index}"
    if config.store_url:
        from gateway.store.postgres import PostgresStore  # noqa: PLC0415 - psycopg when used

        return PostgresStore(config.store_url, instance=instance)
    return SqliteStore(config.store_path, instance=instance)


def __getattr__(name: str) -> Any:
    """``PostgresStore``, imported when first asked for (with psycopg)."""
    if name == "PostgresStore":
        from gateway.store.postgres import PostgresStore  # noqa: PLC0415 - psycopg when used

        return PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
