"""The web console's pages at province scale: ``congvu web`` over a store that
``bench/report_scale.py --keep DIR`` wrote (5 million decisions: a province-year), each page
asked over HTTP as a browser asks it, timed.

    python bench/report_scale.py --decisions 5000000 --keep /srv/scale   # once (long)
    python bench/console_pages.py /srv/scale

Once the console has read the figures it keeps ready (this month, last month, this quarter,
this year, the idle list) and walked the chains, each page is asked once (``first``: its
answer, which for a period being read is the page that says so; then, on a line of its own,
the time until its figures are shown) and ``--repeat`` times more (``again``, the median), in
milliseconds, and both as a ratio to ``/healthz`` measured in the same run (an HTTP round trip
that reads one row: the floor). A period not kept ready (Q3) is read on its first asking:
that row shows what any other period costs. The console's own background readings are timed
in its log (``web.figures_read``, ``web.chain_verified``). It prints numbers; nothing here
passes or fails.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.web.pages import standard_periods  # noqa: E402 - after the path is set
from policies.schema import VIETNAM_TIME  # noqa: E402

PASSWORD = "mat-khau-do-hieu-nang"
YEAR = 2026


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pages(client: httpx.Client) -> list[tuple[str, str]]:
    """(label, path) of the pages to time, ids taken from the store as a reader would find
    them (a search, then one of its decisions)."""
    found = client.get("/search?sender=u00007%40unit007.lamdong.gov.vn").text
    decision = re.search(r'href="/decision/(\w+)"', found)
    assert decision, "no decision of u00007 in the store"
    older = re.search(r'rel="next" href="([^"]+)"', found)
    # The periods the pages link to (kept ready by the console), and one that is not.
    kept = standard_periods(datetime.now(VIETNAM_TIME).date())
    year, month = kept["this_year"].query(), kept["last_month"].query()
    cold = f"from={YEAR}-07-01&to={YEAR}-09-30"
    unit = "/unit/Don%20vi%20007"
    listed = [
        ("overview, this month", "/"),
        ("overview, last month", f"/?{month}"),
        ("overview, this year", f"/?{year}"),
        ("overview, Q3 (not kept ready)", f"/?{cold}"),
        ("a unit, last month", f"{unit}?{month}"),
        ("a unit, this year", f"{unit}?{year}"),
        ("a unit, Q3 (read above)", f"{unit}?{cold}"),
        ("an account, this year", f"/account/u00007%40unit007.lamdong.gov.vn?{year}"),
        ("a decision", f"/decision/{decision.group(1)}"),
        ("search: a sender", "/search?sender=u00007%40unit007.lamdong.gov.vn"),
        ("search: a recipient", "/search?recipient=vanthu%40lamdong.gov.vn"),
        ("search: a reason, this year", f"/search?reason=document.unsigned&{year}"),
        ("search: a unit, refused", "/search?unit=Don+vi+007&verdict=reject"),
        (
            "search: rare reason + sender",
            "/search?reason=sender.personal_domain&sender=u00007%40unit007.lamdong.gov.vn",
        ),
        ("the chain's status", "/chain"),
        ("export: a unit's last month, XLSX", f"/export/report.xlsx?{month}&unit=Don+vi+007"),
    ]
    if older:
        listed.insert(10, ("search: a sender, page 2", older.group(1).replace("&amp;", "&")))
    return listed


def timed(client: httpx.Client, path: str) -> float:
    """Milliseconds to the page's answer (a 202, "being read", counts: it is the answer);
    negative for a 202."""
    started = time.perf_counter()
    response = client.get(path)
    elapsed = (time.perf_counter() - started) * 1000
    assert response.status_code in (200, 202), (path, response.status_code)
    return -elapsed if response.status_code == 202 else elapsed


def shown(client: httpx.Client, path: str) -> float:
    """Milliseconds until the page shows its figures (asked again every 0.1 s while it says
    they are being read; a browser asks every 2 s)."""
    started = time.perf_counter()
    while client.get(path).status_code == 202:
        time.sleep(0.1)
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("store", type=Path, help="a folder bench/report_scale.py --keep wrote")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    folder = args.store.resolve()
    port = free_port()
    config = folder / "web.toml"
    config.write_text(
        (folder / "congvu.toml").read_text()
        + f'\n[web]\nlisten = "127.0.0.1:{port}"\nusers = "web-users.toml"\n'
        'secret = "web-secret"\naccess_log = "web-access.log"\n'
    )
    env = {**os.environ, "CONGVU_CONFIG": str(config)}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "web",
            "user",
            "add",
            "bench",
            "--role",
            "auditor",
            "--password-stdin",
        ],
        input=PASSWORD + "\n",
        text=True,
        env=env,
        check=True,
        capture_output=True,
        cwd=folder,
    )
    with (folder / "web.log").open("wb") as log:
        web = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "web"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=folder,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(600):  # opening a store made before the search keys makes them first
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(1)
        with httpx.Client(base_url=base, timeout=600) as client:
            login = client.get("/login").text
            token = re.search(r'name="csrf" value="([^"]+)"', login)
            assert token
            client.post(
                "/login", data={"csrf": token.group(1), "user": "bench", "password": PASSWORD}
            )
            # The console reads the periods it keeps ready, and walks the chains, as it
            # starts: wait for both (their times are in its log, printed below).
            while not all(
                event in (folder / "web.log").read_bytes()
                for event in (b"web.figures_read", b"web.chain_verified")
            ):
                time.sleep(0.5)
            floor = statistics.median(timed(client, "/healthz") for _ in range(20))
            print(
                f"store: {folder} ({(folder / 'written').read_text().strip()}); "
                f"{os.cpu_count()} cores; /healthz {floor:.1f} ms"
            )
            print(f"{'page':<34} {'first ms':>9} {'again ms':>9} {'first x':>8} {'again x':>8}")
            for label, path in pages(client):
                first = timed(client, path)
                waited = shown(client, path) if first < 0 else 0.0
                first = abs(first)
                again = statistics.median(timed(client, path) for _ in range(args.repeat))
                print(
                    f"{label:<34} {first:>9.0f} {again:>9.0f} {first / floor:>8.0f} "
                    f"{again / floor:>8.0f}",
                    flush=True,
                )
                if waited:  # it was being read: when its figures were shown
                    print(f"{'  (its figures shown after)':<34} {first + waited:>9.0f}")
            status = Path(f"/proc/{web.pid}/status").read_text()
            peak = re.search(r"VmHWM:\s+(\d+) kB", status)
            print(
                f"congvu web: peak resident memory {int(peak.group(1)) // 1024 if peak else 0} MB"
            )
            log = (folder / "web.log").read_text()
            for event, what in (
                ("web.figures_read", "reading the kept figures"),
                ("web.chain_verified", "walking the chains"),
            ):
                lines = [line for line in log.splitlines() if event in line]
                seconds = [re.search(r'"seconds": ([\d.]+)', line) for line in lines]
                print(
                    f"{what} (in the background): "
                    + ", ".join(f"{m.group(1)} s" for m in seconds if m)
                )
    finally:
        web.terminate()
        web.wait(30)


if __name__ == "__main__":
    main()
