"""What only the SQLite store does: migrating a store made before the hash chain, several
processes opening one new file at once, and its writer thread failing or being cancelled.
What both stores do is in ``test_contract.py``."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import pytest

from gateway.store import SqliteStore


def record(n: int) -> dict[str, object]:
    return {
        "id": f"01TEST{n:020d}",
        "time": f"2026-11-22T10:00:{n:02d}.000Z",
        "verdict": "accept",
        "reasons": [],
        "envelope": {"mail_from": f"a{n}@lamdong.gov.vn", "recipients": []},
        "client": {"ip": "10.0.0.1"},
    }


def test_chains_are_per_instance_and_old_stores_are_migrated(tmp_path: Path) -> None:
    """Two gateways share one store, each with its own chain; a pre-chain store is chained."""
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE decisions (id TEXT PRIMARY KEY, time TEXT NOT NULL, verdict TEXT NOT NULL,"
        " mail_from TEXT NOT NULL, client_ip TEXT NOT NULL, reasons TEXT NOT NULL,"
        " record TEXT NOT NULL);"
    )
    old = record(1)
    db.execute(
        "INSERT INTO decisions VALUES (?, ?, 'accept', 'a1@lamdong.gov.vn', '10.0.0.1', '', ?)",
        (old["id"], old["time"], json.dumps(old, sort_keys=True)),
    )
    db.commit()
    db.close()
    first = SqliteStore(path, instance="")
    second = SqliteStore(path, instance="gw2")
    first.write(record(2))
    second.write(record(3))
    assert first.verify() == []
    rows = (
        sqlite3.connect(path)
        .execute("SELECT instance, seq FROM decisions ORDER BY instance, seq")
        .fetchall()
    )
    assert rows == [("", 1), ("", 2), ("gw2", 1)]


def test_a_failed_group_commit_fails_every_writer_in_it(tmp_path: Path) -> None:
    """No writer may be told "stored" when its group did not commit."""
    from gateway.store import StoreError

    store = SqliteStore(tmp_path / "d.sqlite", instance="gw")
    store.write(record(0))
    store._db.execute("DROP TABLE decisions")  # the next commit cannot insert
    with pytest.raises(StoreError):
        store.write(record(1))
    store.close()


def test_a_writer_that_crashes_fails_its_records_instead_of_hanging(tmp_path: Path) -> None:
    """Whatever goes wrong inside a commit, each waiting session hears "not stored" (and answers
    4xx); none waits for ever or is told its record is safe."""
    import asyncio

    from gateway.store import StoreError

    store = SqliteStore(tmp_path / "d.sqlite", instance="gw")

    def crash(group: list[object]) -> None:
        raise MemoryError

    store._commit = crash  # type: ignore[method-assign]

    async def two() -> list[object]:
        both = asyncio.gather(
            store.write_async(record(1)), store.write_async(record(2)), return_exceptions=True
        )
        return await asyncio.wait_for(both, 5)  # not the 30 s write timeout: told at once

    assert [type(r) for r in asyncio.run(two())] == [StoreError, StoreError]
    with pytest.raises(StoreError):
        store.write(record(3))
    assert store._committer._thread.is_alive()  # the writer goes on serving
    store.close()


def test_a_cancelled_session_does_not_lose_its_record_and_close_commits_the_queue(
    tmp_path: Path,
) -> None:
    """A client that hangs up while its record is being written does not stop the write; the
    store, when closed, first commits what is queued, and then refuses more."""
    import asyncio

    from gateway.store import StoreError

    store = SqliteStore(tmp_path / "d.sqlite", instance="gw")

    async def cancelled() -> None:
        task = asyncio.ensure_future(store.write_async(record(1)))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancelled())
    store.close()
    with sqlite3.connect(tmp_path / "d.sqlite") as db:
        assert db.execute("SELECT id FROM decisions").fetchall() == [(record(1)["id"],)]
    with pytest.raises(StoreError, match="closed"):
        store.write(record(2))


def _open_at(path: str, start: float) -> str:
    time.sleep(max(0.0, start - time.time()))
    try:
        SqliteStore(Path(path), instance=str(os.getpid())).close()
    except Exception as exc:  # noqa: BLE001 - reported to the test
        return f"{type(exc).__name__}: {exc}"
    return "ok"


def test_worker_processes_opening_a_new_store_at_once_all_start(tmp_path: Path) -> None:
    """Found with two workers on a fresh install: switching a new file to WAL and creating its
    tables can fail at once with "database is locked" in one of them (one open in three),
    and that worker could not start. Both must open it, every time."""
    import multiprocessing

    # spawn: forking this process (other tests' threads, locks held) could hang a child.
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        for n in range(15):
            path = str(tmp_path / f"d{n}.sqlite")
            start = time.time() + 0.05
            results = [pool.apply_async(_open_at, (path, start)) for _ in range(2)]
            assert [r.get(30) for r in results] == ["ok", "ok"]
