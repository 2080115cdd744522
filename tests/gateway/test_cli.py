"""The `congvu` command: check's JSON contract and exit codes, policy and log commands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import main
from policies.rules import RULES, rule
from tests.support.gateway import CLERK, OFFICIAL, message


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = main(argv)
    out = capsys.readouterr()
    return status, out.out, out.err


@pytest.fixture
def eml(tmp_path: Path) -> Path:
    path = tmp_path / "msg.eml"
    path.write_bytes(message(from_="Nguyen Van A <nguyenvana@gmail.com>"))
    return path


def test_check_json_contract_for_a_reject(eml: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """verdict, reasons, smtp_reply and per-rule findings; exit 1; envelope from the headers."""
    status, out, _ = run(["check", "--json", str(eml)], capsys)
    result = json.loads(out)
    assert status == 1
    assert result["verdict"] == "reject"
    assert result["reasons"] == ["sender.personal_domain"]
    assert result["smtp_reply"].startswith("550 5.7.1 [sender.personal_domain] ")
    assert result["envelope"]["mail_from"] == "nguyenvana@gmail.com"  # from the From header
    assert [r["address"] for r in result["envelope"]["recipients"]] == [CLERK]  # from To
    assert {f["id"]: f["outcome"] for f in result["findings"]} == {
        "sender-malformed-identity": "pass",
        "sender-lookalike-identity": "pass",
        "sender-personal-domain": "reject",
        "sender-official-unauthenticated": "pass",
        "advisory-public-service-registration": "pass",
        "advisory-public-contact-in-body": "pass",
        "document-exemption": "pass",
        "document-signature-required": "pass",
    }
    assert all(set(f) >= {"id", "outcome", "reason", "detail"} for f in result["findings"])


def test_check_accept_and_return_path_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Clean mail exits 0 with an empty reason list; Return-Path gives the envelope sender."""
    path = tmp_path / "ok.eml"
    path.write_bytes(b"Return-Path: <bounce@lamdong.gov.vn>\r\n" + message())
    status, out, _ = run(["check", "--json", str(path)], capsys)
    result = json.loads(out)
    assert (status, result["verdict"], result["reasons"]) == (0, "accept", [])
    assert result["envelope"]["mail_from"] == "bounce@lamdong.gov.vn"
    assert result["smtp_reply"].startswith("250 2.0.0 ")


def test_check_tempfail_exits_75(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A rule that raises makes check answer tempfail with exit status 75, as serve would."""

    @rule("test-cli-raises")
    def raises(facts, ctx):  # type: ignore[no-untyped-def]
        """Raises."""
        raise RuntimeError

    try:
        policy = tmp_path / "p.toml"
        policy.write_text('[domains]\nofficial = ["gov.vn"]\n[[rules]]\nid = "test-cli-raises"\n')
        config = tmp_path / "c.toml"
        config.write_text(f'[policy]\nfile = "{policy}"\n')
        msg = tmp_path / "m.eml"
        msg.write_bytes(message())
        status, out, _ = run(["check", "--json", "--config", str(config), str(msg)], capsys)
    finally:
        del RULES["test-cli-raises"]
    assert status == 75
    assert json.loads(out)["smtp_reply"].startswith("451 4.3.0 [internal.check_error]")


def test_check_explicit_envelope_and_human_output(
    eml: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--mail-from/--rcpt override the headers; without --json a readable summary is printed."""
    status, out, _ = run(["check", "--rcpt", "friend@example.com", str(eml)], capsys)
    assert status == 0  # not a protected recipient, and loopback may relay by default
    assert out.startswith("verdict: accept\nreply:   250 2.0.0 ")


def test_check_usage_and_config_errors_exit_2(
    tmp_path: Path, eml: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Unreadable message, no recipients, or a bad config: exit 2 with a message naming it."""
    assert run(["check", str(tmp_path / "nope.eml")], capsys)[0] == 2
    bare = tmp_path / "bare.eml"
    bare.write_bytes(b"From: a@x.gov.vn\r\n\r\nhi\r\n")
    status, _, err = run(["check", str(bare)], capsys)
    assert status == 2 and "no recipients" in err
    bad = tmp_path / "bad.toml"
    bad.write_text('[relay]\nlocal_domain = ["x.gov.vn"]\n')
    status, _, err = run(["check", "--config", str(bad), str(eml)], capsys)
    assert status == 2 and f"{bad}:2: relay.local_domain: unknown key" in err


def test_policy_check_and_explain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """policy check validates (exit 0/2); explain prints the ordered rules in plain words."""
    status, out, _ = run(["policy", "explain"], capsys)
    assert status == 0
    assert "1. sender-malformed-identity [enforce]" in out
    assert "2. sender-lookalike-identity [enforce]" in out
    assert "3. sender-personal-domain [enforce]" in out
    assert "Official mail must be sent from an official mailbox" in out
    bad = tmp_path / "p.toml"
    bad.write_text(
        '[domains]\nofficial = ["gov.vn"]\n'
        '[[rules]]\nid = "sender-personal-domain"\nmode = "strict"\n'
    )
    status, _, err = run(["policy", "check", str(bad)], capsys)
    assert status == 2 and f"{bad}:5: rules[0].mode: must be one of enforce, monitor, off" in err


def test_log_tail_and_show_read_the_store(
    start_gateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The admin finds a decision by the id quoted in the SMTP reply."""
    gw = start_gateway()
    _, (code, text) = gw.send(message(), OFFICIAL, [CLERK])
    assert code == 250
    decision_id = text.decode().rsplit(" ", 1)[1]
    config = tmp_path / "c.toml"
    config.write_text(f'[store]\nsqlite = "{tmp_path / "decisions.sqlite"}"\n')
    status, out, _ = run(["log", "tail", "--config", str(config)], capsys)
    assert status == 0 and decision_id in out and "accept" in out
    status, out, _ = run(["log", "show", decision_id.lower(), "--config", str(config)], capsys)
    assert status == 0 and json.loads(out)["id"] == decision_id
    assert run(["log", "show", "NOPE", "--config", str(config)], capsys)[0] == 1


def test_console_script_is_installed() -> None:
    """`congvu` runs as a command (the installed entry point)."""
    congvu = Path(sys.executable).parent / "congvu"
    out = subprocess.run([congvu, "policy", "explain"], capture_output=True, text=True, check=True)
    assert "sender-personal-domain" in out.stdout


def test_check_follows_serve_on_null_sender_size_and_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Return-Path <> is the null sender; oversize is 552 as serve says; a bad IP exits 2."""
    bounce = tmp_path / "bounce.eml"
    bounce.write_bytes(b"Return-Path: <>\r\n" + message(from_="MAILER-DAEMON@mx.lamdong.gov.vn"))
    status, out, _ = run(["check", "--json", str(bounce)], capsys)
    assert json.loads(out)["envelope"]["mail_from"] == ""
    assert status == 0

    config = tmp_path / "small.toml"
    config.write_text("[server]\nmax_message_size = 1024\n")
    big = tmp_path / "big.eml"
    big.write_bytes(message(body="x" * 70 + "\r\n") * 20)
    status, out, _ = run(["check", "--json", "--config", str(config), str(big)], capsys)
    result = json.loads(out)
    assert status == 1 and result["reasons"] == ["message.too_large"]
    assert result["smtp_reply"].startswith("552 5.3.4 [message.too_large]")

    status, _, err = run(["check", "--client-ip", "banana", str(bounce)], capsys)
    assert status == 2 and "'banana' is not an IP address" in err


@pytest.mark.parametrize(
    ("text", "message_part"),
    [
        (
            '[server]\nhostname = "gw.x\\r\\nX-Injected: yes"\n',
            "server.hostname: must be a host name",
        ),
        ('[server]\ntls_cert = "nope.crt"\ntls_key = "nope.key"\n', "server.tls_cert: cannot load"),
        ('[downstream]\nurl = "smtp://user:secret@mx.local:25"\n', "downstream.url: credentials"),
        ('[downstream]\nurl = "http://mx.local"\n', "downstream.url: must be smtp://HOST:PORT"),
        ('[relay]\ntrusted_networks = ["10.0.0.1/8"]\n', "relay.trusted_networks: '10.0.0.1/8'"),
        ('[server]\nlisten = "2525"\n', "server.listen: must be HOST:PORT"),
        ('[log]\nlevel = "verbose"\n', "log.level: must be one of debug, info, warning, error"),
        ('[notices]\nurl = ""\n', "notices.url: give smtp://HOST:PORT"),
        ('[dns]\nnameservers = ["dns.google"]\n', "dns.nameservers: 'dns.google' is not IP"),
    ],
)
def test_config_errors_name_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message_part: str
) -> None:
    """`congvu config check` refuses what would break at run time, naming file and key."""
    path = tmp_path / "congvu.toml"
    path.write_text(text)
    status, _, err = run(["config", "check", str(path)], capsys)
    assert status == 2
    assert f"{path}:" in err and message_part in err


def test_serve_on_a_taken_port_says_so(tmp_path: Path) -> None:
    """A port already in use is a one-line error and exit 2, not a traceback."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "c.toml"
        config.write_text(
            f'[server]\nlisten = "127.0.0.1:{port}"\n[store]\nsqlite = "d.sqlite"\n'
            '[log]\nfile = "gw.log"\n'
        )
        congvu = Path(sys.executable).parent / "congvu"
        out = subprocess.run(
            [congvu, "serve", "--config", config],
            check=False,
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert out.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in out.stderr
    assert "Traceback" not in out.stderr
