"""`congvu serve` as an admin runs it: a real process, JSON logs, SIGHUP reload, SIGTERM stop."""

from __future__ import annotations

import json
import signal
import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.gateway import CLERK, message
from tests.support.smtp import free_port

CONGVU = Path(sys.executable).parent / "congvu"
RULE = '[[rules]]\nid = "sender-personal-domain"\nmode = "{mode}"\n'


def write_policy(path: Path, mode: str) -> None:
    path.write_text('[domains]\nofficial = ["lamdong.gov.vn"]\n' + RULE.format(mode=mode), "utf-8")


def wait_for(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, Path, Path, int]]:
    port, metrics_port = free_port(), free_port()
    write_policy(tmp_path / "policy.toml", "enforce")
    (tmp_path / "congvu.toml").write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\nhostname = "gw.lamdong.gov.vn"\n'
        '[relay]\nlocal_domains = ["lamdong.gov.vn"]\ntrusted_networks = []\n'
        '[downstream]\nurl = "maildir:maildir"\n[policy]\nfile = "policy.toml"\n'
        '[log]\nfile = "gateway.log"\n[store]\nsqlite = "decisions.sqlite"\n'
        f'[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n',
        "utf-8",
    )
    proc = subprocess.Popen([CONGVU, "serve", "--config", str(tmp_path / "congvu.toml")])
    try:
        wait_for(lambda: listening(port))
        yield proc, port, tmp_path / "policy.toml", tmp_path / "gateway.log", metrics_port
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def send_gmail(port: int) -> int:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.ehlo("client.test")
        smtp.mail("x@gmail.com")
        smtp.rcpt(CLERK)
        return smtp.data(message(from_="x@gmail.com"))[0]


def events(log: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.read_text("utf-8").splitlines() if line.strip()]


def test_serve_reloads_policy_on_sighup_and_stops_cleanly_on_sigterm(served) -> None:  # type: ignore[no-untyped-def]
    """SIGHUP swaps in a valid policy, refuses an invalid one (old kept); SIGTERM exits 0."""
    proc, port, policy, log, _ = served
    assert send_gmail(port) == 550

    write_policy(policy, "monitor")
    proc.send_signal(signal.SIGHUP)
    wait_for(lambda: any(e["event"] == "policy.reloaded" for e in events(log)))
    assert send_gmail(port) == 250

    policy.write_text("[domains]\nofficial = []\n", "utf-8")
    proc.send_signal(signal.SIGHUP)
    wait_for(lambda: any(e["event"] == "policy.reload_refused" for e in events(log)))
    refused = next(e for e in events(log) if e["event"] == "policy.reload_refused")
    assert "domains.official" in str(refused["error"])
    assert send_gmail(port) == 250  # the monitor policy is still in force

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    decisions = [e for e in events(log) if e["event"] == "policy.decision"]
    assert [d["decision"]["verdict"] for d in decisions] == ["reject", "accept", "accept"]  # type: ignore[index]
    assert all(e["level"] and e["timestamp"] for e in events(log))


def test_metrics_and_health_for_the_admin(served) -> None:  # type: ignore[no-untyped-def]
    """/metrics counts decisions by verdict and reason; /health says the gateway is up."""
    import urllib.request

    proc, port, _, _, metrics_port = served
    assert send_gmail(port) == 550
    base = f"http://127.0.0.1:{metrics_port}"
    with urllib.request.urlopen(f"{base}/health", timeout=5) as response:
        health = json.loads(response.read())
    assert response.status == 200 and health["status"] == "ok"
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
        text = response.read().decode()
    assert (
        'congvu_decisions_total{reason="sender.personal_domain",unit="-",verdict="reject"} 1.0'
        in text
    )
    assert "congvu_transaction_seconds_bucket" in text and "congvu_sessions" in text
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0


def test_a_stop_while_starting_is_a_clean_stop(tmp_path: Path) -> None:
    """systemd may stop a unit that is still starting. SIGTERM as soon as the port listens
    (the ports are bound first, before the store and the validation pool) ends the gateway
    as any stop does: exit 0 and ``gateway.stopped``, never killed by the signal."""
    port = free_port()
    write_policy(tmp_path / "policy.toml", "enforce")
    (tmp_path / "congvu.toml").write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\n[downstream]\nurl = "maildir:maildir"\n'
        '[policy]\nfile = "policy.toml"\n[log]\nfile = "gateway.log"\n'
        '[store]\nsqlite = "decisions.sqlite"\n',
        "utf-8",
    )
    proc = subprocess.Popen([CONGVU, "serve", "--config", str(tmp_path / "congvu.toml")])
    try:
        deadline = time.monotonic() + 10
        while not listening(port):
            assert time.monotonic() < deadline, "never listened"
            time.sleep(0.005)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "gateway.stopped" in [e["event"] for e in events(tmp_path / "gateway.log")]
