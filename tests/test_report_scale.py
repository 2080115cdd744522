"""The report's scale benchmark (bench/report_scale.py) runs: a small province through the
store's write path, and the three reports timed. The figures themselves are the benchmark's
to print (docs/design/benchmark.md), never asserted here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_scale_benchmark_runs_on_a_small_province() -> None:
    small = ["--decisions", "400", "--accounts", "60", "--units", "6", "--activity-days", "3"]
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "report_scale.py"), *small],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "wrote 400 decisions" in done.stdout
    assert "OUTPUT DIFFERS" not in done.stdout  # --from-records prints what the rollups did
    rows = [line for line in done.stdout.splitlines() if " this " in line]
    assert [row.split("  ")[0] for row in rows] == [
        "province, a year (table)",
        "one unit, a year (table)",
        "idle accounts (90 days)",
        "province, a year, by month (csv)",
        "province, a year, --from-records",
    ]
