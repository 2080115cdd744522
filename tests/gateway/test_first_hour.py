"""A new admin's first hour: the installed `congvu` command as it is typed, in real processes.

It finds the configuration the running service uses, says its version, shows examples in its
help, prints no dependency warnings, and fails clearly (exit 2, one line) instead of looping.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.smtp import free_port

CONGVU = Path(sys.executable).parent / "congvu"
SUBCOMMANDS = [
    ["serve"],
    ["check"],
    ["policy", "check"],
    ["policy", "explain"],
    ["config", "check"],
    ["directory", "import"],
    ["report"],
    ["audit", "verify"],
    ["audit", "prune"],
    ["log", "tail"],
    ["log", "show"],
]


def congvu(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the installed command as a user would, without any CONGVU_ variable of ours."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CONGVU_")}
    return subprocess.run(
        [str(CONGVU), *args],
        cwd=cwd,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def write_config(folder: Path, port: int, *, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "congvu.toml"
    path.write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\n[metrics]\nlisten = ""\n'
        f'[store]\nsqlite = "records.sqlite"\n{extra}',
        "utf-8",
    )
    return path


def test_version() -> None:
    result = congvu("--version", cwd=Path.cwd())
    assert result.returncode == 0
    assert result.stdout.startswith("congvu ") and result.stdout.strip() != "congvu unknown"


@pytest.mark.parametrize("words", SUBCOMMANDS, ids=" ".join)
def test_each_subcommand_shows_an_example(words: list[str]) -> None:
    """`--help` of each subcommand shows how it is typed, with the subcommand's own words."""
    result = congvu(*words, "--help", cwd=Path.cwd())
    assert result.returncode == 0
    examples = result.stdout.partition("examples:\n")[2]
    assert f"congvu {' '.join(words)}" in examples


@pytest.mark.parametrize(
    "args", [["--help"], ["policy", "check"], ["policy", "explain"], ["config", "check"]]
)
def test_no_dependency_warnings(tmp_path: Path, args: list[str]) -> None:
    """Nothing on standard error but what the command itself has to say (pyHanko's import
    used to print cryptography's DSA deprecation on every call)."""
    result = congvu(*args, cwd=tmp_path)
    assert result.returncode == 0
    assert result.stderr == ""


def test_every_command_finds_the_same_configuration(tmp_path: Path) -> None:
    """--config, else $CONGVU_CONFIG, else ./congvu.toml: `log tail` reads the store the
    configuration names, wherever it is typed from."""
    service = tmp_path / "srv"
    write_config(service, free_port())
    store = service / "records.sqlite"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    found_here = congvu("config", "check", cwd=service)
    assert found_here.stdout == "congvu.toml: ok\n"
    named = congvu(
        "config", "check", cwd=elsewhere, env={"CONGVU_CONFIG": str(service / "congvu.toml")}
    )
    assert named.stdout == f"{service / 'congvu.toml'}: ok\n"
    assert congvu("config", "check", cwd=elsewhere).stdout == "<embedded defaults>: ok\n"

    # No store yet: the message names the store and the configuration it came from.
    missing = congvu("log", "tail", cwd=service)
    assert missing.returncode == 2
    assert missing.stderr == (
        f"congvu: no decision store at {store} (configuration: congvu.toml; give --config or "
        "set CONGVU_CONFIG to read another)\n"
    )
    directory = service / "danh-ba.csv"
    directory.write_text(
        "address,full_name,unit,role,issued\n"
        "vt@dilinh.lamdong.gov.vn,Van thu,UBND,clerk,2026-01-01\n"
    )
    imported = congvu("directory", "import", "danh-ba.csv", cwd=service)
    assert imported.returncode == 0, imported.stderr
    assert store.exists()
    env = {"CONGVU_CONFIG": str(service / "congvu.toml")}
    assert congvu("audit", "verify", cwd=elsewhere, env=env).stdout == (
        f"sqlite:{store}: every decision chain is intact\n"
    )
    by_flag = congvu("audit", "verify", "--config", str(service / "congvu.toml"), cwd=elsewhere)
    assert by_flag.returncode == 0
    # A named file that does not exist is an error, never a silent fall-back to the defaults.
    typo = congvu("log", "tail", cwd=elsewhere, env={"CONGVU_CONFIG": "/nonexistent.toml"})
    assert typo.returncode == 2
    assert typo.stderr.startswith("congvu: configuration error: /nonexistent.toml: cannot read")


def test_policy_commands_use_the_configured_policy(tmp_path: Path) -> None:
    """Without a file, `policy check` and `policy explain` show the policy in force."""
    write_config(tmp_path, free_port(), extra='[policy]\nfile = "policy.toml"\n')
    (tmp_path / "policy.toml").write_text(
        '[policy]\nname = "Chinh sach huyen Di Linh"\n[domains]\nofficial = ["lamdong.gov.vn"]\n'
        '[[rules]]\nid = "sender-personal-domain"\nmode = "enforce"\n',
        "utf-8",
    )
    explained = congvu("policy", "explain", cwd=tmp_path)
    assert explained.stdout.startswith("Policy: Chinh sach huyen Di Linh\n")
    checked = congvu("policy", "check", cwd=tmp_path)
    assert checked.stdout.startswith(f"{tmp_path / 'policy.toml'}: ok (1 rules, ")


def test_a_configuration_error_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """File, line and key on one line; nothing created (systemd's RestartPreventExitStatus=2
    then keeps a broken service stopped instead of restarting it every 5 s)."""
    path = write_config(
        tmp_path, free_port(), extra="[downstream]\nurl = 'smtp://mail'\ntimout = 5\n"
    )
    result = congvu("serve", cwd=tmp_path)
    assert result.returncode == 2
    assert (
        result.stderr
        == f"congvu: configuration error: {path.name}:9: downstream.timout: unknown key\n"
    )
    assert result.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["congvu.toml"]


def test_the_systemd_unit_does_not_restart_on_exit_2() -> None:
    unit = (Path(__file__).parents[2] / "deploy" / "congvu.service").read_text()
    assert "\nRestartPreventExitStatus=2\n" in unit
    assert "\nRestart=on-failure\n" in unit


def test_a_port_in_use_is_one_line_exit_2_and_no_store(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        write_config(tmp_path, port)
        result = congvu("serve", cwd=tmp_path)
    assert result.returncode == 2
    assert (
        result.stderr
        == f"congvu serve: cannot listen on 127.0.0.1:{port}: Address already in use\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["congvu.toml"]  # no store, no maildir


def test_the_metrics_port_in_use_is_refused_the_same_way(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        metrics = taken.getsockname()[1]
        path = write_config(tmp_path, free_port())
        path.write_text(path.read_text().replace('listen = ""', f'listen = "127.0.0.1:{metrics}"'))
        result = congvu("serve", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == (
        f"congvu serve: cannot listen on 127.0.0.1:{metrics}: Address already in use\n"
    )
    assert not (tmp_path / "records.sqlite").exists()


def health(port: int) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def events(log: Path) -> list[dict[str, object]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text("utf-8").splitlines() if line.strip()]


@pytest.fixture
def unreachable_downstream(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A gateway whose downstream port nobody listens on; yields its metrics port and log."""
    metrics, nobody = free_port(), free_port()
    write_config(
        tmp_path,
        free_port(),
        extra=f'[downstream]\nurl = "smtp://127.0.0.1:{nobody}"\n[log]\nfile = "gateway.log"\n',
    )
    path = tmp_path / "congvu.toml"
    path.write_text(path.read_text().replace('listen = ""', f'listen = "127.0.0.1:{metrics}"'))
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CONGVU_")}
    proc = subprocess.Popen([str(CONGVU), "serve"], cwd=tmp_path, env=clean)
    try:
        yield metrics, tmp_path / "gateway.log"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def test_an_unreachable_downstream_is_a_warning_and_health_503(
    unreachable_downstream: tuple[int, Path],
) -> None:
    """The gateway runs (senders get 451 and retry) but says so: a warning in the log, and
    /health `degraded` with 503, which a load balancer reads as "send mail elsewhere"."""
    metrics, log = unreachable_downstream
    deadline = time.monotonic() + 20
    while not any(e["event"] == "downstream.unreachable" for e in events(log)):
        assert time.monotonic() < deadline, "no downstream.unreachable warning"
        time.sleep(0.1)
    warning = next(e for e in events(log) if e["event"] == "downstream.unreachable")
    assert warning["level"] == "warning"
    status, body = health(metrics)
    assert status == 503
    assert body["status"] == "degraded"
    assert str(body["downstream"]).startswith("unreachable: smtp://127.0.0.1:")
    started = next(e for e in events(log) if e["event"] == "gateway.started")
    assert started["store"] == f"sqlite:{log.parent / 'records.sqlite'}"


def test_output_cut_short_by_a_pipe_is_no_traceback(tmp_path: Path) -> None:
    """`congvu policy explain | true`: the reader is gone before congvu writes (it starts in
    half a second, `true` in a millisecond); congvu stops quietly."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CONGVU_")}
    result = subprocess.run(
        f"'{CONGVU}' policy explain | true",
        shell=True,
        cwd=tmp_path,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.stderr == ""


def test_a_store_that_cannot_be_opened_is_exit_75_which_systemd_retries(tmp_path: Path) -> None:
    """PostgreSQL still starting at boot is temporary: EX_TEMPFAIL (75), not the 2 that the
    unit never restarts."""
    path = write_config(tmp_path, free_port())
    path.write_text(
        path.read_text().replace(
            'sqlite = "records.sqlite"', f'url = "postgresql://127.0.0.1:{free_port()}/congvu"'
        )
    )
    result = congvu("serve", cwd=tmp_path)
    assert result.returncode == 75
    assert result.stderr.startswith("congvu serve: cannot open decision store postgresql://")
    assert len(result.stderr.splitlines()) == 1


def test_config_may_come_before_the_command(tmp_path: Path) -> None:
    """`congvu --config FILE log tail` as well as `congvu log tail --config FILE`."""
    path = write_config(tmp_path / "srv", free_port())
    before = congvu("--config", str(path), "config", "check", cwd=tmp_path)
    after = congvu("audit", "verify", "--config", str(path), cwd=tmp_path)
    assert before.stdout == f"{path}: ok\n"
    assert after.stderr.startswith(f"congvu: no decision store at {path.parent}")
    missing = congvu("--config", str(tmp_path / "typo.toml"), "log", "tail", cwd=tmp_path)
    assert missing.returncode == 2
    assert "typo.toml: cannot read" in missing.stderr


def test_commands_load_only_what_they_use() -> None:
    """`congvu --help` loads no SMTP server, database driver or pyHanko; the judging path
    loads pyHanko only when a document is validated (the time itself is in the benchmark);
    the decision store and the gateway on SQLite load no PostgreSQL driver."""
    script = (
        "import sys\n"
        "heavy = ('pyhanko', 'aiosmtpd', 'psycopg', 'openpyxl', 'gateway.server')\n"
        "def loaded():\n"
        "    return sorted({n for n in sys.modules if n.startswith(heavy)})\n"
        "import gateway.cli\n"
        "print(','.join(loaded()))\n"
        "import gateway.judge, gateway.checks.dkim, gateway.checks.validation\n"
        "print(','.join(n for n in loaded() if n.startswith('pyhanko')))\n"
        "import gateway.store, gateway.server\n"
        "print(','.join(n for n in loaded() if n.startswith('psycopg')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout == "\n\n\n"
