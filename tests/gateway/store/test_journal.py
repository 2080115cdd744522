"""The relay journal on its own: what it writes, what a start makes of it."""

from __future__ import annotations

from pathlib import Path

from gateway.store import SqliteStore, journal
from gateway.store.journal import Journal, reconcile
from tests.support.records import sent


def test_only_what_was_handed_over_and_not_recorded_becomes_interrupted(tmp_path: Path) -> None:
    """Done entries, records already committed and a line cut short by the crash are left
    alone; the journal is empty after the start."""
    store = SqliteStore(tmp_path / "decisions.sqlite")
    path = tmp_path / "journal-gw.jsonl"
    log = Journal(path)
    first, second, third = (
        sent(f"01J{n}", "2026-11-22T03:00:00.000Z", "a@lamdong.gov.vn").to_dict() for n in range(3)
    )
    for record in (first, second, third):
        log.intent(record)
    log.done(first["id"])  # recorded and said so
    store.write(second)  # recorded, killed before the done line
    log.close()
    with path.open("a") as torn:
        torn.write('{"intent": {"id": "01JTORN", "time"')
    assert reconcile(path, store) == [third["id"]]
    interrupted = store.get(third["id"])
    assert interrupted is not None
    assert (interrupted["verdict"], interrupted["reasons"], interrupted["reply"]) == (
        "interrupted",
        [],
        "",
    )
    assert store.get(first["id"]) is None and store.get("01JTORN") is None
    assert path.read_text() == ""
    assert reconcile(path, store) == []  # a second start finds nothing
    store.close()


def test_a_long_running_journal_keeps_only_what_is_open(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Past its size limit the journal is rewritten with the open entries alone."""
    monkeypatch.setattr(journal, "COMPACT_BYTES", 4096)
    path = tmp_path / "journal-gw.jsonl"
    log = Journal(path)
    records = [
        sent(f"01K{n:04d}", "2026-11-22T03:00:00.000Z", "a@lamdong.gov.vn").to_dict()
        for n in range(40)
    ]
    for record in records:
        log.intent(record)
    for record in records[1:]:
        log.done(record["id"])
    log.close()
    assert path.stat().st_size < 4096
    store = SqliteStore(tmp_path / "decisions.sqlite")
    assert reconcile(path, store) == [records[0]["id"]]
    store.close()
