"""The console in a real browser: Debian's Chromium, driven by Playwright, against
``congvu web`` itself (the command a district runs), over the district's log.

An auditor logs in, finds a refused message by its sender, opens it, and exports the unit's
XLSX, whose figures are those of ``congvu report``; a unit's manager cannot open another
unit's pages, by link or by typing the URL; the pages fit a phone's screen.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import openpyxl
import pytest

from tests.gateway.web.conftest import write_config
from tests.support.browser import CHROMIUM_ARGS, chromium
from tests.support.console import GIA_HIEP, PASSWORD, TAN_HA, District, write_district

playwright = pytest.importorskip("playwright.sync_api")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def console(tmp_path: Path, users_file: bytes) -> Iterator[tuple[str, Path, District]]:
    """``congvu web`` over the district's log: its URL, its configuration, the log."""
    district = write_district(tmp_path / "d.sqlite")
    port = free_port()
    config = write_config(tmp_path, f'listen = "127.0.0.1:{port}"\n')
    (tmp_path / "users.toml").write_bytes(users_file)
    log = tmp_path / "web.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "--config", str(config), "web"],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "congvu web did not start"
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}", config, district
    finally:
        process.terminate()
        process.wait(15)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Debian's Chromium (not a browser Playwright downloads: there is no internet here)."""
    path = chromium()
    with playwright.sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def settled(page: object) -> None:
    """Wait until the page shows figures, not that they are being read (that page reloads
    itself, by a meta refresh, until they are)."""
    page.wait_for_function(  # type: ignore[attr-defined]
        "!document.querySelector('meta[http-equiv=refresh]')", timeout=60_000
    )


def log_in(page: object, base: str, user: str) -> None:
    page.goto(base + "/")  # type: ignore[attr-defined]
    page.fill("input[name=user]", user)  # type: ignore[attr-defined]
    page.fill("input[name=password]", PASSWORD)  # type: ignore[attr-defined]
    page.click("form[action='/login'] button")  # type: ignore[attr-defined]


def test_an_auditor_finds_a_refusal_and_exports_the_units_xlsx(
    console: tuple[str, Path, District], browser: object, tmp_path: Path
) -> None:
    """Log in; search by sender; open the refused message (its reason, its document, its
    place in the chain); on its unit's page export the XLSX: the figures of congvu report."""
    base, config, district = console
    context = browser.new_context(accept_downloads=True)  # type: ignore[attr-defined]
    page = context.new_page()
    log_in(page, base, "thanhtra")
    page.wait_for_url(base + "/")
    settled(page)
    assert page.locator("h1").first.inner_text().startswith("Tổng quan")

    page.click("nav >> text=Tìm thư")
    page.fill("input[name=sender]", "canbo1@giahiep.lamdong.gov.vn")
    page.select_option("select[name=verdict]", "reject")
    page.click("form.search button")
    rows = page.locator("table.decisions tbody tr")
    assert rows.count() == 1
    assert "document.unsigned" in rows.first.inner_text()
    rows.first.locator("a").click()

    page.wait_for_url(f"{base}/decision/{district.refused_id}")
    body = page.locator("main").inner_text()
    assert "document.unsigned" in body and "cv0.pdf" in body
    assert "Bản ghi nguyên vẹn (hash khớp)" in body and "Nối đúng với bản ghi trước" in body

    page.click(f"main >> text={GIA_HIEP}")
    settled(page)
    with page.expect_download() as caught:
        page.click("p.exports >> text=XLSX")
    download = caught.value
    mine = tmp_path / "console.xlsx"
    download.save_as(mine)
    assert download.suggested_filename.endswith(".xlsx")

    query = urllib.parse.parse_qs(urllib.parse.urlsplit(download.url).query)
    theirs = tmp_path / "cli.xlsx"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "--config",
            str(config),
            "report",
            "--from",
            query["from"][0],
            "--to",
            query["to"][0],
            "--unit",
            GIA_HIEP,
            "--format",
            "xlsx",
            "-o",
            str(theirs),
        ],
        check=True,
        capture_output=True,
    )
    got, want = openpyxl.load_workbook(mine), openpyxl.load_workbook(theirs)
    for name in want.sheetnames:
        assert list(got[name].values) == list(want[name].values), name
    units = list(got["Đơn vị"].values)
    assert units[2][0] == GIA_HIEP and units[2][1:3] == (3, 2)  # 3 issued, 2 used
    context.close()


def test_a_manager_cannot_open_another_units_pages(
    console: tuple[str, Path, District], browser: object
) -> None:
    """Gia Hiệp's manager lands on their unit; Tân Hà's unit page, account and decisions are
    refused when typed as URLs, and the search shows none of them."""
    base, _, district = console
    context = browser.new_context()  # type: ignore[attr-defined]
    page = context.new_page()
    log_in(page, base, "giahiep")
    page.wait_for_url(base + "/unit/" + urllib.parse.quote(GIA_HIEP, safe=""))
    settled(page)
    assert GIA_HIEP in page.locator("h1").inner_text()
    for path in [
        "/unit/" + urllib.parse.quote(TAN_HA, safe=""),
        "/account/canbo@tanha.lamdong.gov.vn",
        f"/decision/{district.other_unit_id}",
        "/",  # the province's overview: to their own unit
    ]:
        response = page.goto(base + path)
        assert response is not None
        if path == "/":
            assert TAN_HA not in page.content()
            continue
        assert response.status == 403, path
        assert "Bạn không được xem trang này." in page.inner_text("main")
        assert "tanha" not in page.content()
    page.goto(base + "/search?sender=vanthu%40tanha.lamdong.gov.vn")
    assert page.locator("table.decisions").count() == 0
    context.close()


def test_the_pages_fit_a_phones_screen(
    console: tuple[str, Path, District], browser: object
) -> None:
    """On a 390-pixel-wide screen nothing but the wide tables' own boxes scrolls sideways."""
    base, _, district = console
    context = browser.new_context(viewport={"width": 390, "height": 844})  # type: ignore[attr-defined]
    page = context.new_page()
    log_in(page, base, "thanhtra")
    page.wait_for_url(base + "/")
    for path in [
        "/",
        "/unit/" + urllib.parse.quote(GIA_HIEP, safe=""),
        f"/decision/{district.refused_id}",
        "/search?verdict=reject",
    ]:
        page.goto(base + path)
        settled(page)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, (path, width)
    context.close()


def test_the_docs_screenshots_can_be_taken_again(browser: object, tmp_path: Path) -> None:
    """scripts/screenshots.py (the pictures in docs/auditor/console.md) still runs: every
    page it photographs opens and renders."""
    root = Path(__file__).parents[3]
    subprocess.run(
        [
            sys.executable,
            str(root / "scripts" / "screenshots.py"),
            "--out",
            str(tmp_path),
            "--chromium",
            chromium(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    taken = sorted(p.name for p in tmp_path.glob("*.png"))
    assert taken == sorted(p.name for p in (root / "docs" / "auditor" / "img").glob("*.png"))
    for shot in tmp_path.glob("*.png"):
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
