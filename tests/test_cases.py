"""Golden decision cases: tests/data/cases/NAME.eml + NAME.json, judged by `congvu check`.

A regression is a new pair of files. NAME.json holds the envelope (mail_from, rcpt,
client_ip; defaults as `congvu check` has them), an optional policy from tests/data/policies,
and the expected verdict and reason codes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.cli import main

DATA = Path(__file__).parent / "data"
CASES = sorted(DATA.glob("cases/*.eml"))
EXIT = {"accept": 0, "reject": 1, "tempfail": 75}


@pytest.mark.parametrize("eml", CASES, ids=[c.stem for c in CASES])
def test_case(eml: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """The decision for each stored message is the expected one, with a matching SMTP reply."""
    spec = json.loads(eml.with_suffix(".json").read_text("utf-8"))
    config = (DATA / "gateway.toml").read_text("utf-8")
    if "policy" in spec:
        config += f'\n[policy]\nfile = "{DATA / "policies" / spec["policy"]}"\n'
    (tmp_path / "gateway.toml").write_text(config, "utf-8")
    argv = ["check", "--json", "--config", str(tmp_path / "gateway.toml"), str(eml)]
    if "mail_from" in spec:
        argv += ["--mail-from", spec["mail_from"]]
    for rcpt in spec.get("rcpt", []):
        argv += ["--rcpt", rcpt]
    if "client_ip" in spec:
        argv += ["--client-ip", spec["client_ip"]]

    status = main(argv)
    result = json.loads(capsys.readouterr().out)
    expect = spec["expect"]
    assert (result["verdict"], sorted(result["reasons"])) == (
        expect["verdict"],
        sorted(expect["reasons"]),
    )
    assert status == EXIT[expect["verdict"]]
    assert result["monitor_reasons"] == expect.get("monitor_reasons", [])
    if "notes" in expect:
        notes = [f["reason"] for f in result["findings"] if f["outcome"] == "note"]
        assert notes == expect["notes"]
    first = {"accept": "250 2.0.0", "reject": "5", "tempfail": "4"}[expect["verdict"]]
    assert result["smtp_reply"].startswith(first)
    if expect["reasons"]:
        assert f"[{result['reasons'][0]}]" in result["smtp_reply"]


def test_every_case_has_an_expectation() -> None:
    """No .eml without its .json (and so no case silently skipped)."""
    assert len(CASES) >= 15
    for eml in CASES:
        assert eml.with_suffix(".json").exists(), eml
