"""Take the web console's screenshots for docs/auditor/console.md.

    .venv/bin/python scripts/screenshots.py                 rewrite docs/auditor/img/*.png
    .venv/bin/python scripts/screenshots.py --out DIR       write them into DIR instead

A demo district's log (tests/support/console.py: two communes, five accounts, a day's mail)
is written into a temporary folder, ``congvu web`` is started on it, and Debian's Chromium,
driven by Playwright, logs in and photographs the main pages (a desktop's width, and the
overview on a phone's). tests/gateway/web/test_browser.py runs this script, so it keeps
working as the pages change.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from playwright.sync_api import sync_playwright  # noqa: E402 - after the path is set

from tests.support.browser import CHROMIUM_ARGS  # noqa: E402
from tests.support.console import (  # noqa: E402
    GIA_HIEP,
    PASSWORD,
    add_user,
    write_district,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "auditor" / "img")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="congvu-shots-") as tmp:
        folder = Path(tmp)
        district = write_district(folder / "d.sqlite")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        config = folder / "congvu.toml"
        config.write_text(
            f'[store]\nsqlite = "d.sqlite"\n[web]\nlisten = "127.0.0.1:{port}"\n'
            'users = "users.toml"\nsecret = "secret"\naccess_log = "access.log"\n'
        )
        add_user(config, "thanhtra", "auditor")
        base = f"http://127.0.0.1:{port}"
        with (folder / "web.log").open("wb") as log:
            web = subprocess.Popen(  # noqa: S603 - our own command
                [sys.executable, "-m", "gateway.cli", "--config", str(config), "web"],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=folder,
            )
        try:
            for _ in range(300):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.1)
            shots = {
                "overview": "/",
                "unit": "/unit/" + urllib.parse.quote(GIA_HIEP, safe=""),
                "decision": f"/decision/{district.refused_id}",
                "search": "/search?sender=canbo1%40giahiep.lamdong.gov.vn",
                "chain": "/chain",
            }
            with sync_playwright() as driver:
                browser = driver.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
                for width, height, names in ((1200, 900, shots), (390, 844, {"phone": "/"})):
                    page = browser.new_page(viewport={"width": width, "height": height})
                    page.goto(base + "/login")
                    if width > 400:
                        page.screenshot(path=str(args.out / "login.png"))
                    page.fill("input[name=user]", "thanhtra")
                    page.fill("input[name=password]", PASSWORD)
                    page.click("form[action='/login'] button")
                    page.wait_for_url(base + "/")
                    for name, path in names.items():
                        page.goto(base + path)
                        # A period's figures being read: that page reloads until they are.
                        page.wait_for_function(
                            "!document.querySelector('meta[http-equiv=refresh]')",
                            timeout=60_000,
                        )
                        page.screenshot(path=str(args.out / f"{name}.png"), full_page=True)
                browser.close()
        finally:
            web.terminate()
            web.wait(15)
    print(f"screenshots written to {args.out}")


if __name__ == "__main__":
    main()
