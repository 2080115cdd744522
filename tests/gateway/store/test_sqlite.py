"""Tamper evidence: each record carries the hash of the one before; edits, deletions and
insertions are found by `congvu audit verify`, which names the first bad record."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import pytest

from gateway.cli import main
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


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    path = tmp_path / "decisions.sqlite"
    store = SqliteStore(path, instance="gw1")
    for n in range(1, 6):
        store.write(record(n))
    store.close()
    return path


def verify(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    config = path.parent / "c.toml"
    config.write_text(f'[store]\nsqlite = "{path}"\n')
    status = main(["audit", "verify", "--config", str(config)])
    out = capsys.readouterr()
    return status, out.out + out.err


def test_an_untouched_log_verifies(store_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Five records written in turn form one intact chain."""
    assert verify(store_path, capsys) == (
        0,
        f"sqlite:{store_path}: every decision chain is intact\n",
    )


def test_an_edited_record_is_named(store_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Changing a verdict afterwards (in the JSON or in the indexed column) is found."""
    db = sqlite3.connect(store_path)
    text = db.execute("SELECT record FROM decisions WHERE seq = 3").fetchone()[0]
    edited = json.loads(text) | {"verdict": "reject"}
    db.execute("UPDATE decisions SET record = ? WHERE seq = 3", (json.dumps(edited),))
    db.execute("UPDATE decisions SET verdict = 'reject' WHERE seq = 4")
    db.commit()
    status, out = verify(store_path, capsys)
    assert status == 1
    assert "gw1 #3 (01TEST00000000000000000003): record edited" in out
    assert "gw1 #4 (01TEST00000000000000000004): indexed columns differ" in out


def test_a_deleted_record_is_found(store_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Removing a record leaves a gap in the sequence."""
    db = sqlite3.connect(store_path)
    db.execute("DELETE FROM decisions WHERE seq = 2")
    db.commit()
    status, out = verify(store_path, capsys)
    assert status == 1 and "#3" in out and "sequence jumps from 1 to 3" in out


def test_an_inserted_record_is_found(store_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A forged record slipped into the chain does not link to its neighbours."""
    db = sqlite3.connect(store_path)
    # Make room at #3 (two steps: the (instance, seq) index is unique at every row).
    db.execute("UPDATE decisions SET seq = -seq WHERE seq >= 3 AND instance = 'gw1'")
    db.execute("UPDATE decisions SET seq = 1 - seq WHERE seq < 0 AND instance = 'gw1'")
    forged = json.dumps(record(99), sort_keys=True)
    db.execute(
        "INSERT INTO decisions (id, time, verdict, mail_from, client_ip, reasons, record,"
        " instance, seq, prev_hash, hash) VALUES (?, ?, 'accept', 'x', 'y', '', ?, 'gw1', 3,"
        " ?, ?)",
        ("01FORGED", "2026-11-22T10:00:02.500Z", forged, "f" * 64, "e" * 64),
    )
    db.commit()
    status, out = verify(store_path, capsys)
    assert status == 1 and "01FORGED" in out and "does not link" in out


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


def test_pruning_keeps_the_chain_verifiable(tmp_path: Path) -> None:
    """Old records go; the chain still verifies from its anchor, and still catches tampering."""
    path = tmp_path / "d.sqlite"
    store = SqliteStore(path, instance="gw1")
    for n in range(1, 6):
        store.write(record(n))
    assert store.prune("2026-11-22T10:00:03.000Z") == 2  # records 1 and 2
    assert store.verify() == []
    store.write(record(6))
    assert store.verify() == []
    db = sqlite3.connect(path)
    db.execute("DELETE FROM decisions WHERE seq = 3")  # removing the new oldest is still seen
    db.commit()
    assert "sequence jumps from 2 to 4" in str(store.verify()[0])
    store.close()


def test_retention_cannot_cut_into_the_scoring_year(tmp_path: Path) -> None:
    """A policy keeping records less than a year (366 days) is refused."""
    from policies import ConfigError, parse_policy

    with pytest.raises(ConfigError, match=r"retention\.keep_days: must be at least 366"):
        parse_policy(
            '[domains]\nofficial = ["gov.vn"]\n[retention]\nkeep_days = 90\n'
            '[[rules]]\nid = "sender-personal-domain"\n',
            "p.toml",
        )


def test_prune_respects_chain_order_and_chains_continue(tmp_path: Path) -> None:
    """Records written out of time order near the cut-off, and a fully pruned chain."""
    store = SqliteStore(tmp_path / "d.sqlite", instance="gw1")
    # seq 1: 10:00:05, seq 2: 10:00:09, seq 3: 10:00:01 (a slow transaction, written last)
    for n in (5, 9, 1):
        store.write(record(n))
    # Old are seq 1 and 3, but seq 3 sits after the newer seq 2: only the prefix (seq 1) goes.
    assert store.prune("2026-11-22T10:00:06.000Z") == 1
    assert store.verify() == []
    assert store.prune("2026-11-22T10:00:59.000Z") == 2  # everything
    store.write(record(30))  # continues from the anchor, not from genesis
    assert store.verify() == []
    store.close()


def test_concurrent_writes_are_group_committed_into_one_intact_chain(tmp_path: Path) -> None:
    """Eight threads writing at once (as the gateway's store threads do): every write returns
    its own hash only once committed, the chain has no gap or fork, and fewer transactions
    than records were needed."""
    import concurrent.futures

    store = SqliteStore(tmp_path / "d.sqlite", instance="gw")
    commits = 0
    commit = store._commit

    def counting(group: list[object]) -> None:
        nonlocal commits
        commits += 1
        commit(group)  # type: ignore[arg-type]

    store._commit = counting  # type: ignore[method-assign]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        digests = list(pool.map(lambda n: store.write(record(n)), range(400)))
    assert len(set(digests)) == 400
    assert store.verify() == []
    with sqlite3.connect(tmp_path / "d.sqlite") as db:
        seqs = [r[0] for r in db.execute("SELECT seq FROM decisions ORDER BY seq")]
    assert seqs == list(range(1, 401))
    assert commits < 400
    store.close()


def test_a_failed_group_commit_fails_every_writer_in_it(tmp_path: Path) -> None:
    """No writer may be told "stored" when its group did not commit."""
    from gateway.store import StoreError

    store = SqliteStore(tmp_path / "d.sqlite", instance="gw")
    store.write(record(0))
    store._db.execute("DROP TABLE decisions")  # the next commit cannot insert
    with pytest.raises(StoreError):
        store.write(record(1))
    store.close()


def test_one_bad_record_does_not_fail_the_rest_of_its_group(tmp_path: Path) -> None:
    """A group with a record that cannot be stored (here: a duplicate decision id): the others
    are committed, in an intact chain, and only that writer hears of the failure."""
    from gateway.store.commit import PendingRecord

    store = SqliteStore(tmp_path / "d.sqlite", instance="gw")
    store.write(record(0))
    group = [
        PendingRecord.of(r)
        for r in (record(1), record(0), record(2))  # record(0) again: its id is taken
    ]
    store._commit(group)
    assert group[0].error is None and group[2].error is None
    assert isinstance(group[1].error, sqlite3.IntegrityError)
    assert store.verify() == []
    assert [r["id"] for r in store.tail(10)] == [record(n)["id"] for n in (0, 1, 2)]
    store.close()


def test_coroutines_writing_at_once_share_commits_and_each_get_their_own_hash(
    tmp_path: Path,
) -> None:
    """The gateway's path: many sessions await their records at once; each is told only once
    its record is committed, the chain is intact, and groups share a transaction."""
    import asyncio

    store = SqliteStore(tmp_path / "d.sqlite", instance="gw")
    groups: list[int] = []
    commit = store._commit

    def counting(group: list[object]) -> None:
        groups.append(len(group))
        commit(group)  # type: ignore[arg-type]

    store._commit = counting  # type: ignore[method-assign]

    async def burst() -> list[str]:
        return await asyncio.gather(*(store.write_async(record(n)) for n in range(300)))

    digests = asyncio.run(burst())
    assert len(set(digests)) == 300
    assert sum(groups) == 300 and len(groups) < 300
    assert store.verify() == []
    with sqlite3.connect(tmp_path / "d.sqlite") as db:
        stored = dict(db.execute("SELECT id, hash FROM decisions"))
    assert [stored[str(record(n)["id"])] for n in range(300)] == digests
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
