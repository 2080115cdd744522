"""The PostgreSQL store against the real server on 127.0.0.1:5432: the same behaviour as
SQLite, several gateways sharing it, group commit, and the gateway end to end on it."""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from conftest import CLERK, OFFICIAL, Downstream, make_config, message, policy_text

from gateway.audit import StoreError
from gateway.pgstore import PostgresStore
from tests.support.records import sent

BASE = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A schema of its own for each test, dropped afterwards."""
    schema = f"congvu_test_{secrets.token_hex(4)}"
    try:
        admin = psycopg.connect(BASE, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        if os.environ.get("CONGVU_REQUIRE_POSTGRES"):
            pytest.fail(f"PostgreSQL is required here: {exc}")
        pytest.skip(f"no PostgreSQL on 127.0.0.1:5432: {exc}")
    admin.execute(f"CREATE SCHEMA {schema}")
    yield f"{BASE}?options=-csearch_path%3D{schema}"
    admin.execute(f"DROP SCHEMA {schema} CASCADE")
    admin.close()


def record(n: int, instance: str = "") -> dict[str, object]:
    return {
        "id": f"01PG{instance.upper()}{n:018d}",
        "time": f"2026-11-22T10:{n // 60 % 60:02d}:{n % 60:02d}.000Z",
        "verdict": "accept",
        "reasons": [],
        "envelope": {"mail_from": "a@lamdong.gov.vn", "recipients": []},
        "client": {"ip": "10.0.0.1"},
    }


def test_records_round_trip_and_chain(pg_url: str) -> None:
    """write/get/tail and the chain behave as in SQLite; an edit is caught."""
    store = PostgresStore(pg_url, instance="gw1")
    try:
        digests = [store.write(record(n)) for n in range(1, 4)]
        assert len(set(digests)) == 3
        assert store.get(str(record(2)["id"]).lower())["id"] == record(2)["id"]  # type: ignore[index]
        assert [r["id"] for r in store.tail(2)] == [record(2)["id"], record(3)["id"]]
        assert store.verify() == []
        with psycopg.connect(pg_url, autocommit=True) as db:
            db.execute("UPDATE decisions SET verdict = 'reject' WHERE seq = 2")
        assert "indexed columns differ" in str(store.verify()[0])
    finally:
        store.close()


def test_two_gateways_share_one_store_with_group_commit(pg_url: str) -> None:
    """Concurrent writers on two instances: every record committed, both chains intact."""
    stores = [PostgresStore(pg_url, instance=name) for name in ("mx1", "mx2")]
    try:

        def burst(store: PostgresStore, instance: str) -> None:
            for n in range(100):
                store.write(record(n, instance))

        threads = [
            threading.Thread(target=burst, args=(s, name))
            for s, name in ((stores[0], "a"), (stores[0], "b"), (stores[1], "c"))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert stores[1].verify() == []
        with psycopg.connect(pg_url) as db:
            counts = dict(db.execute("SELECT instance, count(*) FROM decisions GROUP BY instance"))
            heads = dict(db.execute("SELECT instance, seq FROM chain_heads"))
        assert counts == {"mx1": 200, "mx2": 100} and heads == {"mx1": 200, "mx2": 100}
    finally:
        for store in stores:
            store.close()


def test_unreachable_postgres_is_a_store_error() -> None:
    """No server: StoreError at open (the gateway then refuses to start, loudly)."""
    with pytest.raises(StoreError, match="cannot open decision store"):
        PostgresStore("postgresql://postgres@127.0.0.1:1/test?connect_timeout=2")


def test_gateway_end_to_end_on_postgres(
    start_gateway, downstream: Downstream, tmp_path: Path, pg_url: str
) -> None:
    """The gateway records into PostgreSQL before answering, like with SQLite."""
    store = PostgresStore(pg_url, instance="gw.lamdong.gov.vn")
    gw = start_gateway(make_config(tmp_path, downstream.port), policy_text(), store=store)
    _, (code, text) = gw.send(message(), OFFICIAL, [CLERK])
    assert code == 250
    decision_id = text.decode().rsplit(" ", 1)[1]
    assert store.get(decision_id)["verdict"] == "accept"  # type: ignore[index]


def test_commands_work_on_the_postgres_store(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """directory import, report and audit verify read and write the shared store."""
    from gateway.cli import main

    config = tmp_path / "congvu.toml"
    config.write_text(f'[store]\nurl = "{pg_url}"\n[server]\nhostname = "gw1"\n')
    csv_file = tmp_path / "dir.csv"
    csv_file.write_text(
        "address,full_name,unit,role,issued\na@lamdong.gov.vn,A,UBND,officer,2022-01-01\n", "utf-8"
    )
    assert main(["directory", "import", str(csv_file), "--config", str(config)]) == 0
    store = PostgresStore(pg_url, instance="gw1")
    store.write(sent("01PG1", "2026-10-05T02:00:00.000Z", "a@lamdong.gov.vn").to_dict())
    store.close()
    capsys.readouterr()
    assert (
        main(
            [
                "report",
                "--from",
                "2026-10-01",
                "--to",
                "2026-10-31",
                "--format",
                "json",
                "--config",
                str(config),
            ]
        )
        == 0
    )
    assert '"usage_rate": "100.00"' in capsys.readouterr().out
    assert main(["audit", "verify", "--config", str(config)]) == 0


def test_deleting_the_newest_records_is_seen_and_closed_stores_refuse(pg_url: str) -> None:
    """The chain head remembers how far the chain reached; a closed store refuses writes."""
    store = PostgresStore(pg_url, instance="gw1")
    for n in range(1, 6):
        store.write(record(n))
    with psycopg.connect(pg_url, autocommit=True) as db:
        db.execute("DELETE FROM decisions WHERE seq >= 4")
    assert "newest records deleted" in str(store.verify()[-1])
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.write(record(9))


def test_one_bad_record_does_not_fail_the_rest_of_its_group(pg_url: str) -> None:
    """As in SQLite: a duplicate decision id fails that writer alone; its group is stored."""
    from gateway.audit import PendingRecord

    store = PostgresStore(pg_url, instance="gw1")
    try:
        store.write(record(0))
        group = [PendingRecord.of(r) for r in (record(1), record(0), record(2))]
        store._commit(group)
        assert group[0].error is None and group[2].error is None
        assert isinstance(group[1].error, psycopg.errors.UniqueViolation)
        assert store.verify() == []
        assert [r["id"] for r in store.tail(10)] == [record(n)["id"] for n in (0, 1, 2)]
    finally:
        store.close()
