"""A generated log of a few thousand decisions over three units and three months, with the
report worked out by hand below (not by the code under test)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.directory import Account
from gateway.record import Record
from gateway.store import SqliteStore
from tests.support.records import idle_records, score_records, sent


def accounts() -> list[Account]:
    made = [
        Account(
            f"h{i}@lamdong.gov.vn",
            f"H{i}",
            "UBND huyện",
            "officer",
            date(2022, 1, 1),
            (f"h{i}.personal@gmail.com",),
        )
        for i in range(10)
    ]
    made += [
        Account(f"a{i}@lamdong.gov.vn", f"A{i}", "Xã A", "officer", date(2022, 1, 1))
        for i in range(6)
    ]
    made += [
        Account(f"b{i}@lamdong.gov.vn", f"B{i}", "Xã B", "officer", date(2022, 1, 1))
        for i in range(3)
    ]
    # Issued after the scored month: not counted as issued for September.
    made.append(Account("b3@lamdong.gov.vn", "B3", "Xã B", "officer", date(2026, 10, 10)))
    return made


def decision(
    n: int, sender: str, day: str, verdict: str = "accept", reasons: tuple[str, ...] = ()
) -> Record:
    """A proven sender's decision; a refused unsigned document carries the unsigned PDF."""
    return sent(
        f"01G{n:023d}",
        f"{day}T03:{n % 60:02d}:00.000Z",
        sender,
        verdict,
        reasons,
        documents=["none"] if "document.unsigned" in reasons else [],
    )


def generate() -> list[Record]:
    out: list[Record] = []

    def add(
        sender: str, day: str, count: int, verdict: str = "accept", reasons: tuple[str, ...] = ()
    ) -> None:
        for _ in range(count):
            out.append(decision(len(out) + 1, sender, day, verdict, reasons))

    for i in range(10):  # August: every huyện account, 150 each (h7..h9 stop after this)
        add(f"h{i}@lamdong.gov.vn", "2026-08-05", 150)
    for i in range(7):  # September: h0..h6, 100 each
        add(f"h{i}@lamdong.gov.vn", "2026-09-10", 100)
    add("h7.personal@gmail.com", "2026-09-11", 5, "reject", ("sender.personal_domain",))
    add("a0@lamdong.gov.vn", "2026-09-12", 50)
    add("a1@lamdong.gov.vn", "2026-09-12", 50)
    add("a2@lamdong.gov.vn", "2026-09-13", 10, "reject", ("document.unsigned",))
    for i in range(7):  # October: h0..h6 again
        add(f"h{i}@lamdong.gov.vn", "2026-10-07", 100)
    add("b0@lamdong.gov.vn", "2026-10-08", 20)
    add("x@lamdong.gov.vn", "2026-10-09", 3)  # official address not in the directory
    return out


def test_generated_log_gives_the_hand_checked_report(tmp_path: Path) -> None:
    """3,000+ decisions: September's figures, rates to two decimals, ranking, idle list."""
    records = generate()
    assert len(records) == 1500 + 700 + 5 + 110 + 700 + 20 + 3  # 3,038
    store = SqliteStore(tmp_path / "d.sqlite", instance="gw")
    for record in records:
        store.write(record.to_dict())
    stored = store.records_between("2026-08-31T17:00:00.000Z", "2026-09-30T17:00:00.000Z")
    september = [Record.from_dict(r) for r in stored]
    assert store.verify() == []
    seen: list[int] = []
    scores, total = score_records(
        september,
        accounts(),
        period_end=date(2026, 9, 30),
        min_rate=20,
        progress=seen.append,
        every=200,
    )
    assert seen == [200, 400, 600, 800]  # long runs report progress (815 records here)
    by_unit = {s.unit: s for s in scores}

    huyen = by_unit["UBND huyện"]
    # h0..h6 used their official mailboxes in September (7 of 10); h7 only wrote from gmail,
    # which is counted against the unit but does not make the account "used".
    assert (huyen.accounts_issued, huyen.accounts_active, huyen.usage_rate) == (10, 7, "70.00")
    assert (huyen.messages_sent, huyen.accepted, huyen.refused) == (705, 700, 5)
    assert huyen.from_personal_providers == 5 and huyen.non_compliant == []

    xa_a = by_unit["Xã A"]
    assert (xa_a.accounts_issued, xa_a.accounts_active, xa_a.usage_rate) == (6, 3, "50.00")
    assert xa_a.refused_by_reason == {"document.unsigned": 10}
    assert len(xa_a.evidence) == 10 and xa_a.non_compliant  # unsigned documents returned

    xa_b = by_unit["Xã B"]
    assert (xa_b.accounts_issued, xa_b.accounts_active, xa_b.usage_rate) == (3, 0, "0.00")
    assert xa_b.non_compliant == ["tỉ lệ sử dụng 0.00% < 20% / usage below threshold"]

    # 10 of 19 accounts issued by 30 September were used: 52.631… -> 52.63.
    assert (total.accounts_issued, total.accounts_active, total.usage_rate) == (19, 10, "52.63")
    assert total.messages_sent == 815
    # Ranked: the two non-compliant units first, the lower rate first among equals.
    assert [s.unit for s in scores] == ["Xã B", "Xã A", "UBND huyện"]

    idle = idle_records(
        [Record.from_dict(r) for r in store.records_between("", "9999")],
        accounts(),
        now=datetime(2026, 11, 22, tzinfo=UTC),
        days=90,
        is_official=lambda d: d.endswith("gov.vn"),
    )
    # Last seen on 5 August, more than 90 days before 22 November: revocation candidates.
    assert [r["address"] for r in idle.idle] == [
        "h7@lamdong.gov.vn",
        "h8@lamdong.gov.vn",
        "h9@lamdong.gov.vn",
    ]
    assert {r["address"] for r in idle.never_seen} == {
        "a3@lamdong.gov.vn",
        "a4@lamdong.gov.vn",
        "a5@lamdong.gov.vn",
        "b1@lamdong.gov.vn",
        "b2@lamdong.gov.vn",
        "b3@lamdong.gov.vn",
    }
    assert [r["address"] for r in idle.unknown_senders] == ["x@lamdong.gov.vn"]
    store.close()


def test_a_unit_over_time_and_the_named_periods(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--by month`` gives one line per month of the period (the hand-checked figures:
    the huyện used 10 accounts in August, 7 in September and October); ``--period`` names a
    quarter as --from/--to would."""
    store = SqliteStore(tmp_path / "d.sqlite", instance="gw")
    for record in generate():
        store.write(record.to_dict())
    store.replace_accounts(accounts())
    store.close()
    config = tmp_path / "congvu.toml"
    config.write_text(f'[store]\nsqlite = "{tmp_path / "d.sqlite"}"\n')
    unit = ["--unit", "UBND huyện", "--config", str(config)]
    assert main(["report", "--period", "2026-Q3", "--by", "month", "--format", "json", *unit]) == 0
    months = json.loads(capsys.readouterr().out)
    assert [(m["period"], m["accounts_active"], m["messages_sent"]) for m in months] == [
        ("2026-07", 0, 0),
        ("2026-08", 10, 1500),
        ("2026-09", 7, 705),
    ]
    assert main(["report", "--period", "2026-q3", "--format", "json", *unit]) == 0
    quarter = json.loads(capsys.readouterr().out)["total"]
    assert (
        main(["report", "--from", "2026-07-01", "--to", "2026-09-30", "--format", "json", *unit])
        == 0
    )
    assert json.loads(capsys.readouterr().out)["total"] == quarter
    assert quarter["accounts_active"] == 10 and quarter["messages_sent"] == 2205
    assert main(["report", "--period", "2026-Q5", *unit]) == 2
    assert main(["report", "--period", "2026", "--from", "2026-01-01", *unit]) == 2


def test_the_emulation_review_ranks_units_by_the_directives_criteria(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """September, hand-checked: the huyện meets 4 criteria (gmail use and no clerk account
    miss); Xã A 4 (its clerk logged in; unsigned documents returned and three accounts never
    used miss); Xã B 3 (no use at all: rate, idle accounts, clerk)."""
    store = SqliteStore(tmp_path / "d.sqlite", instance="gw")
    for record in generate():
        store.write(record.to_dict())
    clerk = Account("vta@lamdong.gov.vn", "Van thu A", "Xã A", "clerk", date(2022, 1, 1))
    store.replace_accounts([*accounts(), clerk])
    seen = "2026-09-15T02:00:00Z"
    store.record_activity([("vta@lamdong.gov.vn", "2026-09-15", "webmail", seen, seen)])
    store.close()
    config = tmp_path / "congvu.toml"
    config.write_text(f'[store]\nsqlite = "{tmp_path / "d.sqlite"}"\n')
    args = ["report", "review", "--period", "2026-09", "--min-rate", "20"]
    assert main([*args, "--format", "json", "--config", str(config)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [
        (r["rank"], r["unit"], r["usage_rate"], r["criteria_met"], r["criteria_missed"])
        for r in rows
    ] == [
        (1, "UBND huyện", "70.00", 4, "from_personal_providers clerk_used"),
        (2, "Xã A", "57.14", 4, "unsigned_returned idle_accounts"),
        (3, "Xã B", "0.00", 3, "usage_rate idle_accounts clerk_used"),
    ]
    assert [(r["idle_accounts"], r["clerk_used"]) for r in rows] == [
        (0, False),
        (3, True),
        (3, False),
    ]
    assert [r["unsigned_returned"] for r in rows] == [0, 10, 0]
    assert main([*args, "--config", str(config)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[1].split()[:2] == ["1", "UBND"] and table[1].endswith("4/6")
