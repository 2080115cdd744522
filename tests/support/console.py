"""A district's decision log for the web console's tests: two units, their accounts, and a
few days of their mail (accepted, refused for unsigned documents, from a personal address),
written through the store's own write path with the record's own types."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from gateway.directory import Account
from gateway.record import Record, record_time
from gateway.store import DecisionStore, SqliteStore
from tests.support.records import sent

GIA_HIEP = "UBND xã Gia Hiệp"
TAN_HA = "UBND xã Tân Hà"
PASSWORD = "mat-khau-thu-nghiem"

ACCOUNTS = [
    Account("vanthu@giahiep.lamdong.gov.vn", "Nguyễn Văn Thư", GIA_HIEP, "clerk", date(2025, 1, 1)),
    Account("canbo1@giahiep.lamdong.gov.vn", "Trần Cán Bộ", GIA_HIEP, "officer", date(2025, 1, 1)),
    Account("canbo2@giahiep.lamdong.gov.vn", "Lê Chưa Dùng", GIA_HIEP, "officer", date(2025, 1, 1)),
    Account("vanthu@tanha.lamdong.gov.vn", "Phạm Văn Thư", TAN_HA, "clerk", date(2025, 1, 1)),
    Account("canbo@tanha.lamdong.gov.vn", "Hoàng Cán Bộ", TAN_HA, "officer", date(2025, 1, 1)),
]
HUYEN = "vanthu@lamdong.gov.vn"


@dataclass
class District:
    """The log written: its records by id, and the refused one the browser looks for."""

    records: dict[str, Record]
    refused_id: str  # canbo1@giahiep's unsigned document, refused
    other_unit_id: str  # a decision of Tân Hà's


def district_records(now: datetime | None = None) -> list[Record]:
    """The district's decisions, all in the last hours before ``now`` (so that "this month
    so far", the pages' default, holds them)."""
    now = now or datetime.now(UTC)

    def at(minutes: int) -> str:
        return record_time(now - timedelta(minutes=minutes))

    return [
        sent(
            "01WEBTEST0000000000000001",
            at(300),
            "vanthu@giahiep.lamdong.gov.vn",
            documents=["pass"],
            recipients=[HUYEN],
        ),
        sent(
            "01WEBTEST0000000000000002",
            at(240),
            "canbo1@giahiep.lamdong.gov.vn",
            "reject",
            ["document.unsigned"],
            documents=["none"],
            recipients=[HUYEN],
        ),
        sent(
            "01WEBTEST0000000000000003",
            at(200),
            "canbo1@giahiep.lamdong.gov.vn",
            documents=["pass"],
            recipients=["vanthu@tanha.lamdong.gov.vn"],
        ),
        sent(
            "01WEBTEST0000000000000004",
            at(180),
            "vanthu@tanha.lamdong.gov.vn",
            documents=["pass"],
            recipients=[HUYEN],
        ),
        sent(
            "01WEBTEST0000000000000005",
            at(120),
            "vanthu@tanha.lamdong.gov.vn",
            "reject",
            ["document.unsigned"],
            documents=["none", "pass"],
            recipients=[HUYEN],
        ),
        sent(
            "01WEBTEST0000000000000006",
            at(60),
            "citizen@example.org",
            recipients=["vanthu@giahiep.lamdong.gov.vn"],
        ),
    ]


def write_district(path: Path, now: datetime | None = None) -> District:
    """Write the directory and the decisions into the SQLite store at ``path``."""
    records = district_records(now)
    store = SqliteStore(path)
    try:
        return fill(store, records)
    finally:
        store.close()


def fill(store: DecisionStore, records: list[Record]) -> District:
    """The directory and ``records`` written into ``store``."""
    store.replace_accounts(ACCOUNTS)
    for record in records:
        store.write(record.to_dict())
    return District({r.id: r for r in records}, records[1].id, records[4].id)


def add_user(config: Path, name: str, role: str, unit: str = "") -> None:
    """``congvu web user add`` (the password on standard input)."""
    command = [
        sys.executable,
        "-m",
        "gateway.cli",
        "--config",
        str(config),
        "web",
        "user",
        "add",
        name,
        "--role",
        role,
        "--password-stdin",
    ]
    if unit:
        command += ["--unit", unit]
    subprocess.run(command, input=PASSWORD + "\n", text=True, check=True, capture_output=True)
