"""What the console's pages show, in Vietnamese and English: the scores as ``congvu report``
gives them (its very files, exported), a unit's accounts, a decision's evidence and its place
in the chain, the search and its pages, the chain's verify status."""

from __future__ import annotations

import html
import io
import re
import sqlite3
import subprocess
import sys
import time
import urllib.parse
from datetime import UTC, datetime, timedelta

import httpx
import openpyxl
import pytest

from gateway.store import PostgresStore
from gateway.store.base import Search
from gateway.web.i18n import TEXT
from gateway.web.pages import Console, standard_periods
from policies import load_policy
from policies.reasons import REASONS
from policies.schema import VIETNAM_TIME
from tests.gateway.web.conftest import Site, csrf_of, log_in
from tests.support.console import GIA_HIEP, TAN_HA, district_records, fill
from tests.support.records import sent

UNIT = "/unit/" + urllib.parse.quote(GIA_HIEP, safe="")


def report(site: Site, *args: str) -> bytes:
    """What ``congvu report`` prints (or writes, with ``-o``) for this site."""
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "--config", str(site.config), "report", *args],
        capture_output=True,
        check=True,
    )
    return result.stdout


def text_of(page: str) -> str:
    """A page's text, as a reader sees it: no tags, entities read, spaces collapsed."""
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", page)))


@pytest.mark.parametrize("lang", ["vi", "en"])
def test_every_page_renders_in_both_languages(site: Site, lang: str) -> None:
    """Each page, in each language, has its words (no key missing) and the district's data."""
    client = site.client()
    assert log_in(client, "thanhtra") == 303
    if lang == "en":
        token = csrf_of(client.get("/").text)
        client.post("/language", data={"csrf": token, "next": "/"})
    words = {key: pair[1 if lang == "en" else 0] for key, pair in TEXT.items()}
    expected = {
        "/": [words["units_ranked"], words["non_compliant"], GIA_HIEP, TAN_HA, "document.unsigned"],
        UNIT: [words["accounts"], "canbo2@giahiep.lamdong.gov.vn", site.district.refused_id],
        "/account/canbo1@giahiep.lamdong.gov.vn": [words["recent_mail"], site.district.refused_id],
        f"/decision/{site.district.refused_id}": [
            words["chain_place"],
            words["sealed"],
            REASONS["document.unsigned"].fix_en
            if lang == "en"
            else REASONS["document.unsigned"].fix_vi,
            "cv0.pdf",
        ],
        "/search?verdict=reject": [words["search"], site.district.refused_id],
        "/chain": [words["verify_title"]],
    }
    for path, shown in expected.items():
        page = client.get(path)
        assert page.status_code == 200, path
        assert f'lang="{lang}"' in page.text
        for item in shown:
            assert item in text_of(page.text) or item in page.text, (path, item)


def test_the_overview_has_the_scores_of_congvu_report(site: Site) -> None:
    """The overview's totals and each unit's figures are those ``congvu report`` prints."""
    client = site.client()
    assert log_in(client, "thanhtra") == 303
    page = text_of(client.get("/").text)
    printed = report(site, "--format", "json").decode()
    import json

    figures = json.loads(printed)
    total = figures["total"]
    assert (
        f"{total['accounts_active']}/{total['accounts_issued']} tài khoản được sử dụng = "
        f"{total['usage_rate']}%" in page
    )
    for unit in figures["units"]:
        row = (
            f"{unit['unit']} {unit['accounts_issued']} {unit['accounts_active']} "
            f"{unit['usage_rate']} {unit['messages_sent']} {unit['accepted']} {unit['refused']}"
        )
        assert row in page, row


@pytest.mark.parametrize("unit", [None, GIA_HIEP])
def test_exports_are_the_files_congvu_report_writes(site: Site, unit: str | None) -> None:
    """XLSX, CSV and HTML from the console are those of ``congvu report`` for the same period
    (and unit): the same cells, the same text."""
    client = site.client()
    assert log_in(client, "thanhtra") == 303
    today = datetime.now(UTC).astimezone().date()
    first = (today - timedelta(days=40)).isoformat()
    last = today.isoformat()
    query = f"from={first}&to={last}" + (f"&unit={urllib.parse.quote(unit)}" if unit else "")
    cli = ["--from", first, "--to", last, *(["--unit", unit] if unit else [])]
    for fmt in ("csv", "html", "xlsx"):
        response = client.get(f"/export/report.{fmt}?{query}")
        assert response.status_code == 200
        assert response.headers["content-disposition"].startswith("attachment;")
        if fmt == "csv":
            assert response.content == report(site, *cli, "--format", "csv")
            continue
        out = site.folder / f"cli.{fmt}"
        report(site, *cli, "--format", fmt, "-o", str(out))
        if fmt == "html":
            assert response.text == out.read_text("utf-8")
        else:
            mine = openpyxl.load_workbook(io.BytesIO(response.content))
            theirs = openpyxl.load_workbook(out)
            assert mine.sheetnames == theirs.sheetnames
            for name in mine.sheetnames:
                assert list(mine[name].values) == list(theirs[name].values), name


def test_a_unit_page_lists_its_accounts_use(site: Site) -> None:
    """Each account of the unit: used or not, its mail and its refusals, its last mail."""
    client = site.client()
    assert log_in(client, "thanhtra") == 303
    page = client.get(UNIT).text
    rows = {
        text_of(row).split()[0]: (kind, text_of(row))
        for kind, row in re.findall(r'<tr class="(unused|)">(.*?)</tr>', page, re.S)
    }
    assert rows["canbo2@giahiep.lamdong.gov.vn"][0] == "unused"
    kind, used = rows["canbo1@giahiep.lamdong.gov.vn"]
    assert kind == "" and " có 2 1 1 " in used  # used; 2 sent, 1 refused, 1 unsigned


def test_a_decision_shows_an_edit_to_its_record(site: Site) -> None:
    """A record edited in the database after it was written: its page says so."""
    client = site.client()
    assert log_in(client, "thanhtra") == 303
    refused = site.district.refused_id
    with sqlite3.connect(site.folder / "d.sqlite") as db:
        db.execute(
            "UPDATE decisions SET record = REPLACE(record, '\"reject\"', '\"accept\"') "
            "WHERE id = ?",
            (refused,),
        )
    page = client.get(f"/decision/{refused}").text
    assert TEXT["not_sealed"][0] in page


def chain_status(client: httpx.Client, awaited: str) -> str:
    """The chain page once it says ``awaited`` (the walk runs in the background), or after
    30 seconds, as it is then."""
    deadline = time.monotonic() + 30
    while awaited not in (page := client.get("/chain").text) and time.monotonic() < deadline:
        time.sleep(0.05)
    return page


def test_the_chain_page_runs_audit_verify(site: Site) -> None:
    """The chain's status is ``congvu audit verify``'s; verifying again (a form) finds an
    edit made since."""
    client = site.client()
    assert log_in(client, "thanhtra") == 303
    page = chain_status(client, "Mọi chuỗi nhật ký nguyên vẹn")
    assert "Mọi chuỗi nhật ký nguyên vẹn" in page
    with sqlite3.connect(site.folder / "d.sqlite") as db:
        db.execute("DELETE FROM decisions WHERE id = ?", (site.district.refused_id,))
    assert client.post("/chain", data={"csrf": csrf_of(page)}).status_code == 303
    page = chain_status(client, "chỗ hỏng")
    assert "1 chỗ hỏng" in page and "records deleted or inserted" in page


def test_search_pages_through_a_senders_decisions(site: Site) -> None:
    """Fifty decisions a page, newest first; "older" goes on exactly where the page ended,
    with nothing skipped or repeated."""
    now = datetime.now(UTC)
    for n in range(120):
        record = sent(
            f"01WEBPAGE{n:016d}",
            (now - timedelta(minutes=n)).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "vanthu@tanha.lamdong.gov.vn",
            recipients=["vanthu@lamdong.gov.vn"],
        )
        site.store.write(record.to_dict())
    client = site.client()
    assert log_in(client, "thanhtra") == 303
    seen: list[str] = []
    path = "/search?sender=vanthu%40tanha.lamdong.gov.vn"
    while path:
        page = client.get(path).text
        seen += re.findall(r'href="/decision/(01\w+)"', page)
        older = re.search(r'rel="next" href="([^"]+)"', page)
        path = older.group(1).replace("&amp;", "&") if older else ""
    written = [f"01WEBPAGE{n:016d}" for n in range(120)]
    assert seen[:120] == written and len(seen) == len(set(seen)) == 122


def test_a_recipient_is_matched_exactly(site: Site) -> None:
    """A recipient search finds the decisions addressed to that address, in any case, and
    not those where it only appears elsewhere (a From, a longer address)."""
    console = Console(site.store, load_policy(None))
    found = console.search(Search(recipient="VANTHU@lamdong.gov.vn"))
    assert {r["id"] for r in found.records} == {
        "01WEBTEST0000000000000001",
        "01WEBTEST0000000000000002",
        "01WEBTEST0000000000000004",
        "01WEBTEST0000000000000005",
    }
    to_unit = console.search(Search(recipient="vanthu@giahiep.lamdong.gov.vn"))
    assert [r["id"] for r in to_unit.records] == ["01WEBTEST0000000000000006"]


def test_the_console_reads_a_postgresql_store_alike(pg_url: str) -> None:
    """Over the district's log in PostgreSQL: the same scores as over SQLite, the search and
    a decision with its place in the chain."""
    store = PostgresStore(pg_url)
    try:
        district = fill(store, district_records())
        console = Console(store, load_policy(None))
        period = standard_periods(datetime.now(VIETNAM_TIME).date())["this_month"]
        _, total = console.scores(period)
        assert (total.accounts_issued, total.accounts_active, total.refused) == (5, 3, 2)
        [row] = console.scores(period, GIA_HIEP)[0]
        assert (row.messages_sent, row.refused, row.documents_unsigned) == (3, 1, 1)
        found = console.search(Search(recipient="VANTHU@lamdong.gov.vn", verdict="reject"))
        assert [r["id"] for r in found.records] == [district.other_unit_id, district.refused_id]
        record, link = console.decision(district.refused_id.lower()) or (None, None)
        assert record is not None and link is not None and link.sealed and link.linked
        assert console.unit_of(record) == GIA_HIEP
    finally:
        store.close()


def test_a_period_being_read_answers_at_once_and_shows_its_figures_when_read(
    site: Site,
) -> None:
    """A period nobody asked for yet: the page says its figures are being read and asks the
    browser back (a meta refresh, no script); asked again, it shows them."""
    client = site.client(wait=0)
    assert log_in(client, "thanhtra") == 303
    today = datetime.now(VIETNAM_TIME).date()
    path = f"/?from={(today - timedelta(days=400)).isoformat()}&to={today.isoformat()}"
    first = client.get(path)
    assert first.status_code == 202
    assert '<meta http-equiv="refresh" content="2">' in first.text
    assert "Đang đọc số liệu" in first.text and GIA_HIEP not in first.text
    for _ in range(200):
        page = client.get(path)
        if page.status_code == 200:
            break
        time.sleep(0.05)
    assert page.status_code == 200 and GIA_HIEP in page.text and "3/5" in text_of(page.text)
