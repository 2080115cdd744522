"""The report from the store's daily rollups gives the same figures as the report recomputed
from the records themselves (``--from-records``), on a generated log that holds every kind of
sender, verdict, document and finding the scores weigh, on SQLite and the real PostgreSQL.

The rollups are kept as records commit; what is checked here is that keeping them loses
nothing: not a day cut at Vietnam's midnight, not a sender credited by a directory changed
after the mail was sent, not a store made before the rollups (rolled up when first opened),
not a commit that failed.
"""

from __future__ import annotations

import dataclasses
import io
import random
import sqlite3
from collections.abc import Iterator
from contextlib import closing, redirect_stdout
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from gateway.cli import main
from gateway.directory import Account
from gateway.record import Client, FindingRecord, HeaderField, Headers, Record
from gateway.report.figures import RecordFigures, RollupFigures
from gateway.store import PostgresStore, SqliteStore, StoreError
from tests.support.records import pdf, sent

Store = SqliteStore | PostgresStore
UNITS = ("UBND huyện", "Xã A", "Xã B")
PERIODS = [
    (date(2026, 8, 1), date(2026, 8, 31)),
    (date(2026, 9, 1), date(2026, 9, 30)),
    (date(2026, 7, 1), date(2026, 9, 30)),
    (date(2026, 9, 15), date(2026, 9, 15)),  # one day, its edges at 17:00 UTC
    (date(2026, 1, 1), date(2026, 12, 31)),
]


def directory(moved: bool = False) -> list[Account]:
    """Twelve accounts in three units; two share the local part "vanthu" (a bare login
    "vanthu" credits no one), two have personal addresses. ``moved``: the directory after a
    reorganisation (an account changes unit, another gains a personal address)."""
    made = []
    for i in range(12):
        unit = UNITS[i % 3]
        if moved and i == 4:
            unit = "Xã B"
        personal = (f"p{i}@gmail.com",) if i in (1, 2) or (moved and i == 7) else ()
        local = "vanthu" if i in (0, 1) else f"u{i}"
        issued = date(2026, 9, 20) if i == 11 else date(2022, 1, 1)
        role = "clerk" if i < 3 else "officer"
        made.append(
            Account(f"{local}@{'abc'[i % 3]}.gov.vn", f"Cán bộ {i}", unit, role, issued, personal)
        )
    return made


def generate(count: int, seed: int) -> list[Record]:
    """``count`` decisions of every kind the scores tell apart."""
    rng = random.Random(seed)
    accounts = directory()
    official = [a.address for a in accounts] + ["khac@a.gov.vn"]  # one not in the directory
    personal = ["p1@gmail.com", "p2@gmail.com", "p7@gmail.com", "ai.do@yahoo.com"]
    start = datetime(2026, 7, 20, tzinfo=UTC)
    made = []
    for n in range(count):
        moment = start + timedelta(seconds=rng.randrange(110 * 86400))
        if rng.random() < 0.05:  # on Vietnam's midnight, or the millisecond before it
            moment = moment.replace(hour=16, minute=59, second=59, microsecond=999_000)
            moment += timedelta(milliseconds=rng.choice((0, 1)))
        time = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        kind = rng.choice(("official", "official", "login", "forged", "personal", "inbound"))
        sender = {
            "official": rng.choice(official),
            "login": rng.choice(official),
            "forged": rng.choice(official),
            "personal": rng.choice(personal),
            "inbound": f"dan{rng.randrange(40)}@example.org",
        }[kind]
        verdict = rng.choices(("accept", "reject", "tempfail"), (70, 25, 5))[0]
        reasons: tuple[str, ...] = ()
        if verdict == "reject":
            pool = ("document.unsigned", "sender.personal_domain", "document.modified")
            reasons = tuple(rng.sample(pool, rng.randrange(3)))
        documents = rng.choices(("pass", "none", "fail"), k=rng.randrange(3))
        record = sent(
            f"01R{seed:03d}{n:020d}",
            time,
            sender,
            verdict,
            reasons,
            documents=documents,
            recipients=rng.sample(official, rng.randrange(1, 3)),
        )
        if documents and rng.random() < 0.3:  # an exempt document (a declared class)
            record = replace(record, attachments=(pdf("giay-moi.pdf", "none", exempt="class"),))
        if kind == "login":
            login = rng.choice((sender, sender.partition("@")[0], "nobody"))
            record = replace(record, client=Client(ip="203.0.113.9", login=login))
        if kind in ("login", "forged", "inbound") or rng.random() < 0.1:
            record = replace(record, authenticated=False)
        if kind in ("forged", "inbound") or rng.random() < 0.2:
            record = replace(record, dkim=())
        if rng.random() < 0.15:  # From and the envelope sender differ
            other = rng.choice(official + personal)
            record = replace(
                record, headers=Headers(from_=(HeaderField(raw=other, addresses=(other,)),))
            )
        if rng.random() < 0.1:
            record = replace(record, monitor_reasons=("sender.personal_domain",))
        findings = []
        for reason in ("advisory.public_service_registration", "advisory.public_contact_in_body"):
            if rng.random() < 0.08:
                findings.append(
                    FindingRecord(id=reason, mode="enforce", outcome="advise", reason=reason)
                )
        made.append(replace(record, findings=tuple(findings)))
    return made


@pytest.fixture(params=["sqlite", "postgres"])
def opened(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Any, ...]]:
    """(open a store, run SQL on it directly, its configuration file)."""
    config = tmp_path / "congvu.toml"
    if request.param == "sqlite":
        path = tmp_path / "d.sqlite"
        config.write_text(f'[store]\nsqlite = "{path}"\n')

        def sqlite_sql(text: str) -> None:
            with closing(sqlite3.connect(path)) as db, db:
                db.executescript(text)

        yield (lambda: SqliteStore(path, "gw"), sqlite_sql, config)
    else:
        url = request.getfixturevalue("pg_url")
        config.write_text(f'[store]\nurl = "{url}"\n')

        def pg_sql(text: str) -> None:
            with psycopg.connect(url, autocommit=True) as db:
                db.execute(text)

        yield (lambda: PostgresStore(url, "gw"), pg_sql, config)


def figures_agree(store: Store) -> None:
    """Every report the office reads comes out the same from the rollups and the records."""
    accounts = store.accounts()
    rollups, records = RollupFigures(store, accounts), RecordFigures(store, accounts)
    for first, last in PERIODS:
        for options in ({}, {"unit": "Xã A", "min_rate": 50.0}):
            used_r: set[str] = set()
            used_s: set[str] = set()
            from_rollups = rollups.scores(first, last, used=used_r, **options)
            from_records = records.scores(first, last, used=used_s, **options)
            assert _plain(from_rollups) == _plain(from_records), (first, last, options)
            assert used_r == used_s
        assert rollups.refusals(first, last) == records.refusals(first, last)
    now = datetime(2026, 11, 20, tzinfo=UTC)
    for until in (None, date(2026, 9, 1)):
        same = {"until": until, "now": now, "days": 30, "is_official": lambda d: "gov" in d}
        assert rollups.idle(**same) == records.idle(**same)


def _plain(scores: tuple[list[Any], Any]) -> Any:
    ranked, total = scores
    return [dataclasses.asdict(s) for s in ranked], dataclasses.asdict(total)


def test_the_rollups_give_the_records_figures(opened: tuple[Any, ...]) -> None:
    connect, sql, config = opened
    store = connect()
    try:
        store.replace_accounts(directory())
        for record in generate(1200, seed=1):
            store.write(record.to_dict())
        figures_agree(store)
        # What the comparison covers: the generated log holds each kind of finding.
        [xa_a], _ = RollupFigures(store, store.accounts()).scores(
            date(2026, 1, 1), date(2026, 12, 31), unit="Xã A"
        )
        assert xa_a.evidence and xa_a.refused_by_reason and xa_a.advisories
        assert xa_a.from_personal_providers and xa_a.documents_exempted

        store.replace_accounts(directory(moved=True))  # credited by today's directory
        figures_agree(store)
    finally:
        store.close()
    # A store made before the rollups: they are built from its records when it is opened.
    sql(
        "DROP TABLE senders; DROP TABLE tallies; DROP TABLE tally_reasons; "
        "DROP TABLE tally_registrations; DROP TABLE tally_marks; DROP TABLE tally_proven;"
        + (
            "DELETE FROM meta WHERE key = 'rollups';"
            if isinstance(store, SqliteStore)
            else "UPDATE congvu_meta SET value = '2' WHERE key = 'migration';"
        )
    )
    store = connect()
    try:
        figures_agree(store)
    finally:
        store.close()
    # The command line says the same either way.
    for command in (["report", "--period", "2026-Q3"], ["report", "review", "--period", "2026-09"]):
        assert run(config, *command) == run(config, *command, "--from-records")
        assert "Xã A" in run(config, *command)
    # Rollups that lost records (written by an older version after a rollback, or edited):
    # --from-records shows it, and `congvu audit rollup` rebuilds them from the records.
    sql("DELETE FROM tallies WHERE day > '2026-09-20'")
    quarter = ["report", "--period", "2026-Q3", "--format", "csv"]
    assert run(config, *quarter) != run(config, *quarter, "--from-records")
    assert "daily rollups rebuilt from 1200 decisions" in run(config, "audit", "rollup")
    assert run(config, *quarter) == run(config, *quarter, "--from-records")


def run(config: Path, *command: str) -> str:
    """What ``congvu COMMAND`` prints (it must succeed)."""
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["--config", str(config), *command]) == 0
    return out.getvalue()


def test_a_failed_commit_adds_nothing_to_the_rollups(opened: tuple[Any, ...]) -> None:
    """A record the store refuses (its id taken) adds nothing, and its new sender's number,
    rolled back with it, is not reused: the sender's next record is counted."""
    connect, _, _ = opened
    store = connect()
    try:
        store.replace_accounts(directory())
        first = sent("01DUP00000000000000000000A", "2026-09-10T03:00:00.000Z", "u3@a.gov.vn")
        store.write(first.to_dict())
        again = replace(first, envelope=replace(first.envelope, mail_from="u6@a.gov.vn"))
        again = replace(
            again,
            headers=Headers(from_=(HeaderField(raw="u6@a.gov.vn", addresses=("u6@a.gov.vn",)),)),
        )
        with pytest.raises(StoreError):
            store.write(again.to_dict())
        later = replace(again, id="01DUP00000000000000000000B")
        store.write(later.to_dict())
        [score], _ = RollupFigures(store, store.accounts()).scores(
            date(2026, 9, 1), date(2026, 9, 30), unit="UBND huyện"
        )
        assert (score.messages_sent, score.accounts_active) == (2, 2)
    finally:
        store.close()
