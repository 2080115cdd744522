"""The report at province scale: generate a province's decisions through the store's own write
path, then time ``congvu report`` on them (wall time and peak memory of the command).

    python bench/report_scale.py                        # 100,000 decisions, SQLite
    python bench/report_scale.py --decisions 5000000    # a province-year (hours of writing)
    python bench/report_scale.py --postgres postgresql://127.0.0.1:5432/test

A province: 6,500 accounts in 200 units (``--accounts``, ``--units``). Each decision is a real
record (made by judging a 4 KB message through the transaction, as ``congvu check`` does),
given its own id, time in the year, sender and verdict; 70% of the accounts send, 30% of the
decisions are inbound mail from 20,000 outside addresses, 15% are refusals. Mailbox
activity: each account that reads mail logs in on some days (``--activity-days`` per
account, spread over the year). What is printed: the write rate, the store's size per
decision, and for each report (the province's year, one unit's year, the idle list, the
year by month, the year recomputed from the records) its wall time and the peak resident
memory of the ``congvu`` process; with ``--baseline``, whether both versions printed the
same.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.fuzz.runner import CheckRunner  # noqa: E402 - after the path is set
from bench.run import OFFICIAL, plain  # noqa: E402
from gateway.config import load_config  # noqa: E402
from gateway.record import HeaderField, Record  # noqa: E402
from gateway.store import open_store  # noqa: E402
from gateway.transaction import Client, run_offline  # noqa: E402

YEAR = 2026
REFUSALS = ("document.unsigned", "sender.personal_domain", "document.signer_untrusted")
INBOUND = 0.3  # of the decisions: mail from outside (citizens, firms: 20,000 addresses)


def template() -> Record:
    """A real record: a 4 KB official message judged as ``congvu check`` judges it."""
    runner = CheckRunner()

    async def judge() -> Record:
        txn = await run_offline(
            runner.judge, Client("10.0.0.1"), OFFICIAL, ["vanthu@lamdong.gov.vn"], plain(4096)
        )
        txn.end()
        return txn.record()

    try:
        return runner.loop.run_until_complete(judge())
    finally:
        runner.close()


def directory(path: Path, accounts: int, units: int) -> list[str]:
    """Write the province's directory CSV; the addresses."""
    addresses = [f"u{i:05d}@unit{i % units:03d}.lamdong.gov.vn" for i in range(accounts)]
    rows = ["address,full_name,unit,role,issued,personal_addresses"]
    rows += [
        f"{a},Can bo {i},Don vi {i % units:03d},officer,{YEAR - 1}-06-01,"
        for i, a in enumerate(addresses)
    ]
    path.write_text("\n".join(rows) + "\n")
    return addresses


def decisions(
    base: Record, senders: list[str], count: int, rng: random.Random, *, first: int
) -> list[Record]:
    """``count`` decisions numbered from ``first``, each from a sender, at a time of the year."""
    start = datetime(YEAR, 1, 1, tzinfo=UTC)
    made = []
    for n in range(first, first + count):
        inbound = rng.random() < INBOUND
        sender = f"cd{rng.randrange(20_000)}@example.org" if inbound else rng.choice(senders)
        moment = start + timedelta(seconds=rng.randrange(365 * 86400))
        refused = rng.random() < 0.15
        made.append(
            dataclasses.replace(
                base,
                id=f"01SCALE{n:019d}",
                time=moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                envelope=dataclasses.replace(base.envelope, mail_from=sender),
                headers=dataclasses.replace(
                    base.headers, from_=(HeaderField(raw=sender, addresses=(sender,)),)
                ),
                verdict="reject" if refused else "accept",
                reasons=(rng.choice(REFUSALS),) if refused else (),
                authenticated=not inbound,
            )
        )
    return made


async def write_all(store: object, records: list[Record], concurrency: int = 256) -> None:
    """Through the store's group commit, as many sessions write at once."""
    queue = iter(records)

    async def writer() -> None:
        for record in queue:
            await store.write_async(record.to_dict())  # type: ignore[attr-defined]

    await asyncio.gather(*(writer() for _ in range(concurrency)))


def activity_rows(addresses: list[str], days: int, rng: random.Random) -> list[tuple[str, ...]]:
    rows = []
    for address in addresses:
        if rng.random() < 0.1:
            continue  # never logs in
        for day in rng.sample(range(365), days):
            when = date(YEAR, 1, 1) + timedelta(days=day)
            stamp = f"{when.isoformat()}T02:00:00Z"
            rows.append((address, when.isoformat(), "imap", stamp, stamp))
    return rows


def run(command: list[str], config: Path, folder: Path, code: str = "") -> tuple[float, float]:
    """(wall seconds, peak resident memory in MB) of one congvu command (with the code in
    folder ``code``, if given)."""
    env = {**os.environ, "CONGVU_CONFIG": str(config)}
    if code:
        env["PYTHONPATH"] = code
    started = time.perf_counter()
    with (folder / "out.txt").open("wb") as out, (folder / "err.txt").open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", *command],
            env=env,
            stdout=out,
            stderr=err,
            cwd=folder,  # not the checkout: -m would import the code found there first
        )
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        errors = (folder / "err.txt").read_text(errors="replace")[-500:]
        sys.exit(f"congvu {' '.join(command)} failed: {errors}")
    return wall, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--decisions", type=int, default=100_000)
    parser.add_argument("--accounts", type=int, default=6500)
    parser.add_argument("--units", type=int, default=200)
    parser.add_argument("--activity-days", type=int, default=20, help="logins per account")
    parser.add_argument("--postgres", help="a PostgreSQL URL (default: an SQLite file)")
    parser.add_argument(
        "--skip-records", action="store_true", help="do not time the report --from-records"
    )
    parser.add_argument(
        "--keep",
        metavar="DIR",
        help="write the store (and its congvu.toml) into DIR and keep it; a DIR that holds "
        "one already is reused as it is, not written again (bench/console_pages.py reads it)",
    )
    parser.add_argument(
        "--baseline",
        default="",
        help="also time the reports with the code of this folder (a checkout of an older commit)",
    )
    args = parser.parse_args()
    rng = random.Random(16)
    kept = Path(args.keep).resolve() if args.keep else None
    if kept is not None:
        kept.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="congvu-scale-") as tmp:
        folder = kept or Path(tmp)
        if (folder / "written").exists():
            print(f"store: {folder} (kept, {(folder / 'written').read_text().strip()})")
            time_reports(args, folder / "congvu.toml", folder)
            return
        config = folder / "congvu.toml"
        store_line = (
            f'url = "{args.postgres}"' if args.postgres else f'sqlite = "{folder / "d.sqlite"}"'
        )
        config.write_text(f"[store]\n{store_line}\n")
        addresses = directory(folder / "danh-ba.csv", args.accounts, args.units)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "gateway.cli",
                "directory",
                "import",
                str(config.parent / "danh-ba.csv"),
            ],
            env={**os.environ, "CONGVU_CONFIG": str(config)},
            check=True,
            capture_output=True,
        )
        base = template()
        senders = rng.sample(addresses, int(len(addresses) * 0.7))
        store = open_store(load_config(config))
        written = 0
        started = time.perf_counter()
        try:
            if store.tail(1):
                sys.exit("report_scale: the store is not empty (give an empty database)")
            while written < args.decisions:
                count = min(50_000, args.decisions - written)
                batch = decisions(base, senders, count, rng, first=written)
                asyncio.run(write_all(store, batch))
                written += len(batch)
                print(f"\r{written} decisions written", end="", file=sys.stderr, flush=True)
            write_seconds = time.perf_counter() - started
            rows = activity_rows(addresses, args.activity_days, rng)
            for start in range(0, len(rows), 10_000):
                store.record_activity(rows[start : start + 10_000])  # type: ignore[attr-defined]
        finally:
            store.close()
        if args.postgres:
            # What autovacuum does on its own some time after a bulk load: without the
            # tables' statistics, PostgreSQL's plans for the reports are poor (at 5 million:
            # the province's year 11.2 s instead of 5.4, one unit's 3.3 s instead of 0.8).
            import psycopg  # noqa: PLC0415 - only for this store

            with psycopg.connect(args.postgres, autocommit=True) as db:
                db.execute("ANALYZE")
        print(file=sys.stderr)
        (folder / "written").write_text(f"{written} decisions\n")
        size = (folder / "d.sqlite").stat().st_size if not args.postgres else 0
        print(f"store: {'PostgreSQL' if args.postgres else 'SQLite'}; {os.cpu_count()} cores")
        print(
            f"wrote {written} decisions in {write_seconds:.1f} s "
            f"({written / write_seconds:.0f}/s); {len(rows)} activity rows"
            + (f"; {size / written / 1024:.1f} KB per decision" if size else "")
        )
        time_reports(args, config, folder)


def time_reports(args: argparse.Namespace, config: Path, folder: Path) -> None:
    """Time each report (with this code, and the baseline's if given)."""
    print(f"{'report':<40} {'code':<9} {'wall s':>8} {'peak MB':>8}")
    year = ["--from", f"{YEAR}-01-01", "--to", f"{YEAR}-12-31"]
    reports = [
        ("province, a year (table)", ["report", *year]),
        ("one unit, a year (table)", ["report", *year, "--unit", "Don vi 007"]),
        ("idle accounts (90 days)", ["report", "idle"]),
        (
            "province, a year, by month (csv)",
            ["report", *year, "--by", "month", "--format", "csv"],
        ),
    ]
    if not args.skip_records:
        reports.append(("province, a year, --from-records", ["report", *year, "--from-records"]))
    printed: dict[str, bytes] = {}
    for label, command in reports:
        outputs = []
        for code in ([args.baseline] if args.baseline else []) + [""]:
            if code and "--from-records" in command:
                continue  # an older version has no such option
            wall, peak = run(command, config, folder, code)
            outputs.append((folder / "out.txt").read_bytes())
            name = "baseline" if code else "this"
            print(f"{label:<40} {name:<9} {wall:>8.1f} {peak:>8.0f}", flush=True)
        printed[label] = outputs[-1]
        if "--from-records" in command:  # the same table as from the rollups
            outputs = [printed[reports[0][0]], outputs[-1]]
        if len(outputs) == 2:
            print(f"{'':<40} {'same output' if outputs[0] == outputs[1] else 'OUTPUT DIFFERS'}")


if __name__ == "__main__":
    main()
