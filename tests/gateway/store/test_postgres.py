"""What only the PostgreSQL store does, against the real server on 127.0.0.1:5432: a server
that cannot be reached, and the gateway and the ``congvu`` commands on a shared store. What
both stores do is in ``test_contract.py``."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.store import PostgresStore, StoreError
from tests.support.gateway import CLERK, OFFICIAL, make_config, message, policy_text
from tests.support.records import sent
from tests.support.smtp import Downstream


def record(n: int, instance: str = "") -> dict[str, object]:
    return {
        "id": f"01PG{instance.upper()}{n:018d}",
        "time": f"2026-11-22T10:{n // 60 % 60:02d}:{n % 60:02d}.000Z",
        "verdict": "accept",
        "reasons": [],
        "envelope": {"mail_from": "a@lamdong.gov.vn", "recipients": []},
        "client": {"ip": "10.0.0.1"},
    }


def test_unreachable_postgres_is_a_store_error() -> None:
    """No server: StoreError at open (the gateway then refuses to start, loudly), naming the
    store without its password."""
    with pytest.raises(StoreError, match="cannot open decision store") as info:
        PostgresStore("postgresql://postgres:Pw-1@127.0.0.1:1/test?connect_timeout=2&password=Pw-2")
    assert "postgresql://postgres:***@127.0.0.1:1/test" in str(info.value)
    assert "Pw-" not in str(info.value)


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


def test_several_gateways_on_one_postgres_store(
    start_gateway, downstream: Downstream, tmp_path: Path, pg_url: str
) -> None:
    """Two proxies and a milter writing at once into one PostgreSQL store: every transaction
    recorded once, each gateway's hash chain intact, the report counting each message once."""
    import threading
    from datetime import date

    from gateway.directory import Account
    from gateway.record import Record
    from tests.support.milter import MilterClient
    from tests.support.records import score_records

    officer = "a.nguyen@dilinh.lamdong.gov.vn"
    gateways = []
    for name in ("gw1", "gw2", "gw3"):
        config = make_config(
            tmp_path / name,
            downstream.port,
            hostname=f"{name}.lamdong.gov.vn",
            trusted=True,  # the district's own clients: their mail credits the officer
            milter_listen="127.0.0.1:1",  # started on a free port below (gw3 only)
        )
        store = PostgresStore(pg_url, instance=name)
        gateways.append(start_gateway(config, policy_text(), store=store))
    milter_port = gateways[2].loop_thread.run(gateways[2].gateway.start_milter(port=0))
    each = 15
    failures: list[BaseException] = []

    def through_proxy(gw: object) -> None:
        try:
            for n in range(each):
                _, (code, _) = gw.send(message(subject=f"so {n}"), officer, [CLERK])  # type: ignore[attr-defined]
                assert code == 250
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            failures.append(exc)

    def through_milter() -> None:
        try:
            client = MilterClient(milter_port)
            client.connect("10.0.0.5")
            client.helo()
            for n in range(each):
                client.mail(officer, login=officer)
                client.rcpt(CLERK)
                client.message(message(subject=f"milter {n}"))
            client.close()
        except BaseException as exc:  # noqa: BLE001
            failures.append(exc)

    threads = [threading.Thread(target=through_proxy, args=(gw,)) for gw in gateways[:2]]
    threads.append(threading.Thread(target=through_milter))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not failures, failures
    reader = PostgresStore(pg_url, instance="reader")
    try:
        assert reader.verify() == []
        records = reader.records_between("2000-01-01", "2100-01-01")
    finally:
        reader.close()
    assert len(records) == len({r["id"] for r in records}) == 3 * each
    account = Account(
        officer, "Nguyễn Văn A", "UBND huyện Di Linh", "officer", date(2022, 1, 1), ()
    )
    [score], _ = score_records(
        [Record.from_dict(r) for r in records], [account], period_end=date(2100, 1, 1)
    )
    assert score.messages_sent == 3 * each


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
