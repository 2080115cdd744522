"""The office's report from a small, hand-checkable log: usage rates, refusals, the
non-compliant list with evidence, idle and unknown mailboxes; and the directory import."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.record import DkimRecord, Envelope, FindingRecord, RecipientRecord, Record
from gateway.store import SqliteStore
from tests.support.browser import CHROMIUM_ARGS, chromium
from tests.support.records import sent

DIRECTORY = """address,full_name,unit,role,issued,personal_addresses
vanthu@dilinh.lamdong.gov.vn,Văn thư UBND,UBND huyện,clerk,2022-01-10,
a@dilinh.lamdong.gov.vn,Nguyễn Văn A,UBND huyện,officer,2022-01-10,nguyenvana@gmail.com
b@dilinh.lamdong.gov.vn,Trần Thị B,UBND huyện,officer,2022-01-10,
c@dilinh.lamdong.gov.vn,Lê Văn C,UBND huyện,officer,2022-01-10,
vanthu.xa@dilinh.lamdong.gov.vn,Văn thư xã,UBND xã Gia Hiệp,clerk,2022-03-01,
d@dilinh.lamdong.gov.vn,Phạm D,UBND xã Gia Hiệp,officer,2022-03-01,
e@dilinh.lamdong.gov.vn,Hoàng E,Phòng Nội vụ,officer,2022-03-01,
"""


def decision(
    n: int,
    sender: str,
    verdict: str,
    reasons: list[str],
    *,
    day: str = "2026-10-05",
    documents: list[str] | None = None,
) -> Record:
    """A decision record as the gateway writes it: the sender proven, one PDF per result."""
    return sent(
        f"01R{n:023d}",
        f"{day}T02:00:{n % 60:02d}.000Z",
        sender,
        verdict,
        reasons,
        documents=documents or [],
    )


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "dir.csv").write_text(DIRECTORY, "utf-8")
    path = tmp_path / "congvu.toml"
    path.write_text(
        f'[store]\nsqlite = "{tmp_path / "d.sqlite"}"\n[server]\nhostname = "gw1.lamdong.gov.vn"\n'
    )
    assert main(["directory", "import", str(tmp_path / "dir.csv"), "--config", str(path)]) == 0
    store = SqliteStore(tmp_path / "d.sqlite", instance="gw1")
    records = [
        decision(1, "vanthu@dilinh.lamdong.gov.vn", "accept", [], documents=["pass"]),
        decision(2, "vanthu@dilinh.lamdong.gov.vn", "accept", [], documents=["pass", "pass"]),
        decision(3, "a@dilinh.lamdong.gov.vn", "reject", ["document.unsigned"], documents=["none"]),
        decision(4, "nguyenvana@gmail.com", "reject", ["sender.personal_domain"]),
        decision(5, "vanthu.xa@dilinh.lamdong.gov.vn", "accept", []),
        decision(6, "x@dilinh.lamdong.gov.vn", "accept", []),  # official, not in the directory
        decision(7, "b@dilinh.lamdong.gov.vn", "accept", [], day="2026-09-01"),  # before
        decision(8, "b@dilinh.lamdong.gov.vn", "abandoned", []),  # not judged: not "sent"
        # A bank writing to d@ (xã Gia Hiệp): the registration counts against the xã.
        replace(
            decision(9, "alerts@vietcombank.com.vn", "accept", []),
            envelope=Envelope(
                mail_from="alerts@vietcombank.com.vn",
                recipients=(
                    RecipientRecord(address="d@dilinh.lamdong.gov.vn", accepted=True, reply="250"),
                ),
            ),
            findings=(
                FindingRecord(
                    id="advisory-public-service-registration",
                    mode="enforce",
                    outcome="note",
                    reason="advisory.public_service_registration",
                    detail="vietcombank.com.vn writes to d@dilinh.lamdong.gov.vn",
                ),
            ),
        ),
    ]
    for record in records:
        store.write(record.to_dict())
    store.close()
    return path


def test_unit_scores_are_what_the_office_counts(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Accounts used over accounts issued, two decimals; refusals by reason; documents."""
    argv = [
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
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    units = {u["unit"]: u for u in report["units"]}
    huyen = units["UBND huyện"]
    # vanthu and a sent from their official mailboxes: 2 of 4 (gmail use does not count).
    assert (huyen["accounts_issued"], huyen["accounts_active"], huyen["usage_rate"]) == (
        4,
        2,
        "50.00",
    )
    assert (huyen["messages_sent"], huyen["accepted"], huyen["refused"]) == (4, 2, 2)
    assert huyen["refused_by_reason"] == "document.unsigned=1; sender.personal_domain=1"
    assert (huyen["documents_signed"], huyen["documents_unsigned"]) == (3, 1)
    assert huyen["from_personal_providers"] == 1
    assert "01R00000000000000000000003" in huyen["evidence"]  # the unsigned document
    assert "văn bản không ký số" in huyen["non_compliant"]
    xa = units["UBND xã Gia Hiệp"]
    assert (xa["accounts_issued"], xa["accounts_active"], xa["usage_rate"]) == (2, 1, "50.00")
    assert xa["advisories"] == 1 and huyen["advisories"] == 0
    assert units["Phòng Nội vụ"]["usage_rate"] == "0.00"
    total = report["total"]
    assert (total["accounts_issued"], total["accounts_active"], total["usage_rate"]) == (
        7,
        3,
        "42.86",
    )
    # Ranked: the non-compliant unit first.
    assert report["units"][0]["unit"] == "UBND huyện"


def test_min_rate_makes_low_usage_non_compliant(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A district threshold (e.g. 30%) lists units below it, with the rate."""
    assert (
        main(
            [
                "report",
                "--from",
                "2026-10-01",
                "--to",
                "2026-10-31",
                "--min-rate",
                "30",
                "--format",
                "csv",
                "--config",
                str(config),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("Đơn vị,Tài khoản được cấp,Tài khoản sử dụng,Tỉ lệ (%)")
    noi_vu = next(line for line in out.splitlines() if line.startswith("Phòng Nội vụ"))
    assert "tỉ lệ sử dụng 0.00% < 30%" in noi_vu


def test_idle_never_seen_and_unknown_mailboxes(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Revocation candidates, never-used accounts, and official senders not in the directory."""
    assert (
        main(["report", "idle", "--days", "90", "--format", "json", "--config", str(config)]) == 0
    )
    idle = json.loads(capsys.readouterr().out)
    never = {row["address"] for row in idle["never_seen"]}
    assert never == {
        "c@dilinh.lamdong.gov.vn",
        "d@dilinh.lamdong.gov.vn",
        "e@dilinh.lamdong.gov.vn",
    }
    assert [row["address"] for row in idle["unknown_senders"]] == ["x@dilinh.lamdong.gov.vn"]


def test_bad_directory_rows_are_all_reported_and_nothing_changes(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every bad row with its line number; the directory already imported stays as it was."""
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "address,full_name,unit,role,issued\n"
        "ok@dilinh.lamdong.gov.vn,OK,UBND,officer,2022-01-01\n"
        "not-an-address,X,UBND,officer,2022-01-01\n"
        "y@dilinh.lamdong.gov.vn,Y,UBND,chief,2022-01-01\n"
        "z@dilinh.lamdong.gov.vn,Z,UBND,officer,01/02/2022\n"
        "ok@dilinh.lamdong.gov.vn,OK again,UBND,officer,2022-01-01\n",
        "utf-8",
    )
    assert main(["directory", "import", str(bad), "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:3: address 'not-an-address'" in err
    assert f"{bad}:4: y@dilinh.lamdong.gov.vn: role must be officer or clerk" in err
    assert f"{bad}:5: z@dilinh.lamdong.gov.vn: issued must be a date" in err
    assert f"{bad}:6: ok@dilinh.lamdong.gov.vn is listed twice (first on line 2)" in err
    store = SqliteStore(tmp_path / "d.sqlite")
    assert len(store.accounts()) == 7  # unchanged
    store.close()


def test_xlsx_for_the_office(config: Path, tmp_path: Path) -> None:
    """Vietnamese headings, one sheet per table, numbers stored as numbers."""
    from openpyxl import load_workbook

    out = tmp_path / "bao-cao.xlsx"
    assert (
        main(
            [
                "report",
                "--from",
                "2026-10-01",
                "--to",
                "2026-10-31",
                "--format",
                "xlsx",
                "-o",
                str(out),
                "--config",
                str(config),
            ]
        )
        == 0
    )
    book = load_workbook(out)
    assert book.sheetnames == ["Đơn vị", "Lý do trả về", "Không hoàn thành"]
    units = book["Đơn vị"]
    assert units["A1"].value.startswith(
        "Tình hình sử dụng thư công vụ từ 01/10/2026 đến 31/10/2026"
    )
    assert [c.value for c in units[2]][:4] == [
        "Đơn vị",
        "Tài khoản được cấp",
        "Tài khoản sử dụng",
        "Tỉ lệ (%)",
    ]
    row = next(r for r in units.iter_rows(min_row=3) if r[0].value == "UBND huyện")
    assert (row[1].value, row[2].value, row[3].value) == (4, 2, 50.0)
    assert row[3].number_format == "0.00"
    reasons = {
        (r[0].value, r[1].value): r[2].value for r in book["Lý do trả về"].iter_rows(min_row=2)
    }
    assert reasons[("UBND huyện", "document.unsigned")] == 1
    failing = [r[0].value for r in book["Không hoàn thành"].iter_rows(min_row=2)]
    assert failing == ["UBND huyện"]


def test_html_report_is_self_contained_and_opens_in_chromium(config: Path, tmp_path: Path) -> None:
    """Charts as inline SVG, no script and nothing fetched; headless Chromium renders it."""
    import subprocess

    out = tmp_path / "bao-cao.html"
    assert (
        main(
            [
                "report",
                "--from",
                "2026-10-01",
                "--to",
                "2026-10-31",
                "--format",
                "html",
                "-o",
                str(out),
                "--config",
                str(config),
            ]
        )
        == 0
    )
    page = out.read_text("utf-8")
    assert page.count("<svg") == 2 and "<script" not in page
    assert "src=" not in page and "href=" not in page  # nothing to fetch
    assert "UBND huyện" in page and "50.00%" in page and "document.unsigned" in page
    shot = tmp_path / "bao-cao.png"
    result = subprocess.run(
        [
            chromium(),
            "--headless",
            *CHROMIUM_ARGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            "--enable-logging=stderr",
            f"--screenshot={shot}",
            "--window-size=1280,2000",
            out.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert shot.stat().st_size > 10_000  # a rendered page, not a blank
    console = [
        line for line in result.stderr.splitlines() if "CONSOLE" in line or "net::ERR_FILE" in line
    ]
    assert console == []


def test_the_threshold_is_policy(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """[scoring] min_usage_rate in the policy lists low-usage units without a command option."""
    policy = tmp_path / "policy.toml"
    policy.write_text(
        '[domains]\nofficial = ["lamdong.gov.vn"]\n[scoring]\nmin_usage_rate = 60\n'
        '[[rules]]\nid = "sender-personal-domain"\n',
        "utf-8",
    )
    with_policy = tmp_path / "c2.toml"
    with_policy.write_text(config.read_text() + f'[policy]\nfile = "{policy}"\n')
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
                str(with_policy),
            ]
        )
        == 0
    )
    units = {u["unit"]: u for u in json.loads(capsys.readouterr().out)["units"]}
    assert "50.00% < 60%" in units["UBND xã Gia Hiệp"]["non_compliant"]


def test_forged_senders_credit_and_blame_no_one() -> None:
    """A From the gateway could not prove (no trusted network, no aligned DKIM) scores nothing;
    a personal address counts against its officer only with that provider's DKIM pass."""
    from datetime import date

    from gateway.directory import Account
    from tests.support.records import score_records

    account = Account(
        "chutich@lamdong.gov.vn",
        "Chủ tịch",
        "UBND huyện",
        "officer",
        date(2022, 1, 1),
        ("chutich.personal@gmail.com",),
    )
    forged = replace(
        decision(1, "chutich@lamdong.gov.vn", "reject", ["document.unsigned"], documents=["none"]),
        authenticated=False,
        dkim=(),
    )
    unsigned_gmail = replace(
        decision(2, "chutich.personal@gmail.com", "reject", ["sender.personal_domain"]),
        authenticated=False,
        dkim=(),
    )
    [score], _ = score_records([forged, unsigned_gmail], [account], period_end=date(2026, 10, 31))
    assert (score.accounts_active, score.messages_sent, score.non_compliant) == (0, 0, [])
    proven_gmail = replace(
        unsigned_gmail, dkim=(DkimRecord(domain="gmail.com", selector="s", result="pass"),)
    )
    [score], _ = score_records([proven_gmail], [account], period_end=date(2026, 10, 31))
    assert (score.messages_sent, score.from_personal_providers) == (1, 1)


def test_an_officers_login_is_their_use_of_official_mail() -> None:
    """Mail sent after logging in at the MTA (the milter's login) credits the login's account,
    whatever its From says; a bare user name credits the one account with that local part,
    and no one where two accounts share it. It also counts as activity for the idle list."""
    from datetime import UTC, date, datetime

    from gateway.directory import Account
    from gateway.record import Client
    from tests.support.records import idle_records, score_records

    def account(address: str, unit: str) -> Account:
        return Account(address, "Cán bộ", unit, "officer", date(2022, 1, 1), ())

    accounts = [
        account("an@dilinh.lamdong.gov.vn", "UBND huyện Di Linh"),
        account("binh@baoloc.lamdong.gov.vn", "UBND TP Bảo Lộc"),
        account("vanthu@dilinh.lamdong.gov.vn", "UBND huyện Di Linh"),
        account("vanthu@baoloc.lamdong.gov.vn", "UBND TP Bảo Lộc"),
    ]
    unproven = replace(decision(1, "x@example.org", "accept", []), authenticated=False, dkim=())

    def by(login: str) -> Record:
        return replace(unproven, client=Client(ip="10.0.0.9", login=login))

    records = [by("an@dilinh.lamdong.gov.vn"), by("binh"), by("vanthu")]
    scores, total = score_records(records, accounts, period_end=date(2026, 10, 31))
    sent_by_unit = {s.unit: s.messages_sent for s in scores}
    assert sent_by_unit == {"UBND huyện Di Linh": 1, "UBND TP Bảo Lộc": 1}
    assert total.accounts_active == 2
    idle = idle_records(
        records,
        accounts,
        now=datetime(2026, 10, 31, tzinfo=UTC),
        days=90,
        is_official=lambda domain: domain.endswith("lamdong.gov.vn"),
    )
    assert {row["address"] for row in idle.never_seen} == {
        "vanthu@dilinh.lamdong.gov.vn",
        "vanthu@baoloc.lamdong.gov.vn",
    }


def test_spreadsheet_cells_never_run_as_formulas(tmp_path: Path) -> None:
    """A unit name starting with '=' (from the directory) is written as text in CSV."""
    from datetime import date

    from gateway.directory import Account
    from gateway.report import render
    from tests.support.records import score_records

    account = Account(
        "a@lamdong.gov.vn", "A", '=HYPERLINK("http://x","y")', "officer", date(2022, 1, 1)
    )
    scores, total = score_records([], [account], period_end=date(2026, 10, 31))
    assert "\n\"'=HYPERLINK" in render(scores, total, "csv")


def test_directory_refuses_ambiguous_personal_addresses_and_empty_files(tmp_path: Path) -> None:
    """A personal address is one officer's, never an official account; an empty file is refused."""
    from gateway.directory import DirectoryError, parse_directory_csv

    head = "address,full_name,unit,role,issued,personal_addresses\n"
    shared = head + (
        "a@x.gov.vn,A,U,officer,2022-01-01,p@gmail.com\n"
        "b@x.gov.vn,B,U,officer,2022-01-01,p@gmail.com;a@x.gov.vn\n"
    )
    with pytest.raises(DirectoryError) as info:
        parse_directory_csv(shared, "d.csv")
    text = str(info.value)
    assert "d.csv:3: b@x.gov.vn: personal address p@gmail.com also belongs to a@x.gov.vn" in text
    assert "d.csv:3: b@x.gov.vn: personal address a@x.gov.vn is an official account" in text
    with pytest.raises(DirectoryError, match="header only"):
        parse_directory_csv(head, "d.csv")
