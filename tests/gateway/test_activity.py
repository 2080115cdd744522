"""Mailbox activity (issue 16, part 1): the logins in the mail server's logs are read (real
Dovecot log lines, Postfix's and Zimbra's documented formats), imported idempotently, and make
an account used in the report and not idle in the idle list."""

from __future__ import annotations

import gzip
import imaplib
import json
import os
import poplib
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from test_postfix_e2e import postfix_dir, start_or_skip

from gateway.activity import ImportSummary, merge, parse_line, read_activity
from gateway.cli import main
from gateway.store import SqliteStore
from tests.support.dovecot import DovecotAuth
from tests.support.records import sent
from tests.support.smtp import free_port

HANOI = timezone(timedelta(hours=7))
NOW = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)

# (line, login, kind, UTC time) as each server writes it.
LOGINS = [
    (  # Dovecot through syslog (Debian's rsyslog, classic format)
        "Dec  7 08:02:11 mail dovecot: imap-login: Login: user=<C.Le@dilinh.lamdong.gov.vn>, "
        "method=PLAIN, rip=192.0.2.15, lip=192.0.2.1, mpid=4121, TLS, session=<x1>",
        "c.le@dilinh.lamdong.gov.vn",
        "imap",
        "2026-12-07T01:02:11Z",
    ),
    (  # Dovecot through rsyslog's high-precision format
        "2026-12-06T23:59:58.123456+07:00 mail dovecot: pop3-login: Login: user=<giahiep>, "
        "method=PLAIN, rip=192.0.2.16, lip=192.0.2.1, mpid=77, session=<x2>",
        "giahiep",
        "pop3",
        "2026-12-06T16:59:58Z",
    ),
    (  # Dovecot's own log file (log_path)
        "Dec 07 17:59:20 imap-login: Info: Login: user=<a@x.gov.vn>, method=PLAIN, "
        "rip=127.0.0.1, lip=127.0.0.1, mpid=5857, secured, session=<BGE4/A5i5N9/AAAB>",
        "a@x.gov.vn",
        "imap",
        "2026-12-07T10:59:20Z",
    ),
    (  # Dovecot's submission service
        "Dec  7 08:03:00 mail dovecot: submission-login: Login: user=<b@x.gov.vn>, "
        "method=PLAIN, rip=192.0.2.9, lip=192.0.2.1, mpid=1, TLS",
        "b@x.gov.vn",
        "submission",
        "2026-12-07T01:03:00Z",
    ),
    (  # Postfix: an officer's authenticated submission
        "Dec  7 08:07:02 mail postfix/submission/smtpd[5120]: 4QX1Z2: client=unknown"
        "[192.0.2.17], sasl_method=PLAIN, sasl_username=tckh@dilinh.lamdong.gov.vn",
        "tckh@dilinh.lamdong.gov.vn",
        "submission",
        "2026-12-07T01:07:02Z",
    ),
    (  # Zimbra audit.log: the web client
        "2026-12-07 08:10:00,123 INFO  [qtp1-55:https://mail.x.gov.vn/service/soap/AuthRequest] "
        "[name=vp@x.gov.vn;oip=192.0.2.30;ua=ZimbraWebClient - FF120 (Win)/8.8.15_GA;] "
        "security - cmd=Auth; account=vp@x.gov.vn; protocol=soap;",
        "vp@x.gov.vn",
        "webmail",
        "2026-12-07T01:10:00Z",
    ),
    (  # Zimbra mailbox.log: IMAP
        "2026-12-07 08:11:00,001 INFO  [ImapSSLServer-12] [name=kt@x.gov.vn;ip=192.0.2.31;] "
        "security - cmd=Auth; account=kt@x.gov.vn; protocol=imap;",
        "kt@x.gov.vn",
        "imap",
        "2026-12-07T01:11:00Z",
    ),
]

NOT_LOGINS = [
    "Dec  7 08:05:40 mail dovecot: imap-login: Aborted login (auth failed, 1 attempts in 2 "
    "secs): user=<d@x.gov.vn>, method=PLAIN, rip=192.0.2.16",
    "Dec  7 08:05:41 mail dovecot: imap(c@x.gov.vn)<1><s>: Disconnected: Logged out in=12",
    "Dec  7 08:05:42 mail postfix/smtpd[1]: warning: unknown[192.0.2.5]: SASL LOGIN "
    "authentication failed: UGFzc3dvcmQ6",
    "2026-12-07 08:12:00,000 WARN  [qtp1-56:] [name=vp@x.gov.vn;oip=192.0.2.30;] security - "
    "cmd=Auth; account=vp@x.gov.vn; protocol=soap; error=authentication failed for "
    "[vp@x.gov.vn], invalid password;",
    "Dec  7 08:06:00 mail postfix/smtpd[2]: connect from unknown[192.0.2.5]",
]


@pytest.mark.parametrize(("line", "login", "kind", "when"), LOGINS)
def test_a_login_line_is_read(line: str, login: str, kind: str, when: str) -> None:
    """Who, which kind of access, and when in UTC (a time without a zone is the server's)."""
    found = parse_line(line, local=HANOI, now=NOW)
    assert found is not None
    assert (found.login, found.kind) == (login, kind)
    assert found.time == datetime.fromisoformat(when)


@pytest.mark.parametrize("line", NOT_LOGINS)
def test_failed_logins_and_other_lines_are_not_activity(line: str) -> None:
    assert parse_line(line, local=HANOI, now=NOW) is None


def test_a_syslog_time_takes_the_latest_year_not_in_the_future() -> None:
    """A classic syslog time has no year: 31 December read on 5 January is last year's."""
    line = LOGINS[0][0].replace("Dec  7", "Dec 31")
    found = parse_line(line, local=HANOI, now=datetime(2027, 1, 5, tzinfo=UTC))
    assert found is not None and found.time.year == 2026


def test_a_login_line_without_a_readable_time_is_counted_never_fatal() -> None:
    summary = ImportSummary()
    lines = ["garbled " + LOGINS[0][0][16:], LOGINS[4][0], "\x00\xff nonsense"]
    found = list(read_activity(lines, summary, local=HANOI, now=NOW))
    assert [a.login for a in found] == ["tckh@dilinh.lamdong.gov.vn"]
    assert (summary.lines, summary.logins, summary.unreadable) == (3, 1, 1)
    assert summary.examples == [lines[0]]


def test_one_row_per_login_day_and_kind_with_first_and_last_time() -> None:
    summary = ImportSummary()
    lines = [LOGINS[0][0], LOGINS[0][0].replace("08:02:11", "16:30:00"), LOGINS[4][0]]
    rows = merge(read_activity(lines, summary, local=HANOI, now=NOW))
    assert rows == [
        (
            "c.le@dilinh.lamdong.gov.vn",
            "2026-12-07",
            "imap",
            "2026-12-07T01:02:11Z",
            "2026-12-07T09:30:00Z",
        ),
        (
            "tckh@dilinh.lamdong.gov.vn",
            "2026-12-07",
            "submission",
            "2026-12-07T01:07:02Z",
            "2026-12-07T01:07:02Z",
        ),
    ]


# --- through the command, into the report --------------------------------------------------

DIRECTORY = (
    "address,full_name,unit,role,issued,personal_addresses\n"
    "reader@dilinh.lamdong.gov.vn,Doc Thu,UBND xa Gia Hiep,officer,2025-01-01,\n"
    "sender@dilinh.lamdong.gov.vn,Gui Thu,UBND xa Gia Hiep,officer,2025-01-01,\n"
    "idle@dilinh.lamdong.gov.vn,Khong Dung,UBND xa Gia Hiep,officer,2025-01-01,\n"
)


@pytest.fixture
def district(tmp_path: Path) -> Path:
    """A configuration with a store and a three-account directory; the path of the config."""
    config = tmp_path / "congvu.toml"
    config.write_text(f'[store]\nsqlite = "{tmp_path / "decisions.sqlite"}"\n')
    directory = tmp_path / "danh-ba.csv"
    directory.write_text(DIRECTORY)
    assert main(["directory", "import", str(directory), "--config", str(config)]) == 0
    return config


def _dovecot_line(login: str, when: datetime) -> str:
    stamp = when.astimezone(HANOI).strftime("%b %d %H:%M:%S")
    return (
        f"{stamp} imap-login: Info: Login: user=<{login}>, method=PLAIN, rip=192.0.2.4, "
        "lip=192.0.2.1, mpid=9, secured, session=<s>\n"
    )


def test_import_is_idempotent_reads_gzip_and_makes_readers_active(
    district: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same logins in a plain and a gzipped rotated file, imported twice: one reader
    active by login only; the idle list names only the account with no activity."""
    now = datetime.now(UTC)
    text = _dovecot_line("reader@dilinh.lamdong.gov.vn", now - timedelta(days=2))
    plain = tmp_path / "mail.log"
    plain.write_text(text)
    rotated = tmp_path / "mail.log.2.gz"
    rotated.write_bytes(gzip.compress(text.encode()))
    for _ in range(2):
        args = ["activity", "import", str(plain), str(rotated), "--config", str(district)]
        assert main([*args, "--timezone", "Asia/Ho_Chi_Minh"]) == 0
    assert capsys.readouterr().out.count("1 lines, 1 logins") == 4
    assert main(["report", "--format", "json", "--config", str(district)]) == 0
    total = json.loads(capsys.readouterr().out)["total"]
    assert (total["accounts_issued"], total["accounts_active"]) == (3, 1)
    assert (total["active_by_mail"], total["active_by_login_only"]) == (0, 1)
    assert main(["report", "idle", "--format", "json", "--config", str(district)]) == 0
    idle = json.loads(capsys.readouterr().out)
    assert {row["address"] for row in idle["never_seen"]} == {
        "sender@dilinh.lamdong.gov.vn",
        "idle@dilinh.lamdong.gov.vn",
    }
    assert idle["idle"] == []


def test_an_old_login_leaves_the_account_idle(
    district: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Idle means no mail and no login in the last N days: a login 120 days ago is idle at
    90 days and says what it was."""
    log = tmp_path / "dovecot.log"
    log.write_text(
        "2026-08-01T09:00:00+07:00 mail dovecot: imap-login: Login: "
        "user=<idle@dilinh.lamdong.gov.vn>, method=PLAIN, rip=192.0.2.4, lip=192.0.2.1\n"
    )
    assert main(["activity", "import", str(log), "--config", str(district)]) == 0
    capsys.readouterr()
    assert (
        main(["report", "idle", "--days", "90", "--format", "json", "--config", str(district)]) == 0
    )
    [row] = json.loads(capsys.readouterr().out)["idle"]
    assert row["address"] == "idle@dilinh.lamdong.gov.vn"
    assert (row["last_seen"], row["seen_by"]) == ("2026-08-01T02:00:00Z", "imap")


def test_the_idle_list_names_exactly_the_accounts_with_neither_mail_nor_login(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A district of six accounts, 90 days: mail 10 days ago, a login 10 days ago (by its
    bare user name), old mail but a recent login, old mail and an old login, only a refused
    record (refused mail is use too), and nothing at all. Idle: exactly the old-only one;
    never seen: exactly the silent one."""
    config = tmp_path / "congvu.toml"
    config.write_text(f'[store]\nsqlite = "{tmp_path / "d.sqlite"}"\n')
    names = ("mail", "login", "oldmail-newlogin", "old", "refused", "silent")
    directory = tmp_path / "danh-ba.csv"
    directory.write_text(
        "address,full_name,unit,role,issued,personal_addresses\n"
        + "".join(f"{n}@gh.gov.vn,{n},UBND xa Gia Hiep,officer,2025-01-01,\n" for n in names)
    )
    assert main(["directory", "import", str(directory), "--config", str(config)]) == 0
    now = datetime.now(UTC)

    def ago(days: int) -> str:
        return (now - timedelta(days=days)).isoformat(timespec="milliseconds")[:23] + "Z"

    store = SqliteStore(tmp_path / "d.sqlite", instance="gw")
    for n, (who, days, verdict) in enumerate(
        [
            ("mail", 10, "accept"),
            ("oldmail-newlogin", 200, "accept"),
            ("old", 120, "accept"),
            ("refused", 30, "reject"),
        ]
    ):
        store.write(sent(f"01IDLE{n:020d}", ago(days), f"{who}@gh.gov.vn", verdict).to_dict())
    store.close()
    log = tmp_path / "dovecot.log"
    log.write_text(
        _dovecot_line("login", now - timedelta(days=10))
        + _dovecot_line("oldmail-newlogin@gh.gov.vn", now - timedelta(days=5))
        + _dovecot_line("old@gh.gov.vn", now - timedelta(days=100))
    )
    args = ["--config", str(config)]
    assert main(["activity", "import", str(log), "--timezone", "Asia/Ho_Chi_Minh", *args]) == 0
    capsys.readouterr()
    for source in ([], ["--from-records"]):
        assert main(["report", "idle", "--days", "90", "--format", "json", *args, *source]) == 0
        idle = json.loads(capsys.readouterr().out)
        assert [row["address"] for row in idle["idle"]] == ["old@gh.gov.vn"]
        assert idle["idle"][0]["seen_by"] == "imap"  # the login, 100 days ago, came last
        assert [row["address"] for row in idle["never_seen"]] == ["silent@gh.gov.vn"]


def test_a_missing_file_or_unknown_zone_is_a_usage_error(district: Path, tmp_path: Path) -> None:
    assert main(["activity", "import", str(tmp_path / "nope.log"), "--config", str(district)]) == 2
    (tmp_path / "a.log").write_text("")
    args = ["activity", "import", str(tmp_path / "a.log"), "--timezone", "Mars/Olympus"]
    assert main([*args, "--config", str(district)]) == 2


# --- real servers ----------------------------------------------------------------------------


__all__ = ["postfix_dir"]  # the fixture: a folder Dovecot's unprivileged workers can reach


def test_real_dovecot_imap_and_pop3_logins_are_imported(
    district: Path, postfix_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real Dovecot on loopback: an IMAP login, a failed one and a POP3 login. Its own log
    file, imported, holds exactly the two successful logins."""
    accounts = {"reader@dilinh.lamdong.gov.vn": "mk1", "sender@dilinh.lamdong.gov.vn": "mk2"}
    postfix_dir.chmod(0o755)  # Dovecot's auth worker (user dovecot) reads the password file
    dovecot = DovecotAuth(
        postfix_dir / "dovecot", free_port(), accounts, imap_port=free_port(), pop3_port=free_port()
    )
    start_or_skip(dovecot)
    try:
        imap = imaplib.IMAP4("127.0.0.1", dovecot.imap_port)
        imap.login("reader@dilinh.lamdong.gov.vn", "mk1")
        imap.logout()
        imap = imaplib.IMAP4("127.0.0.1", dovecot.imap_port)
        with pytest.raises(imaplib.IMAP4.error):
            imap.login("sender@dilinh.lamdong.gov.vn", "wrong")
        imap.shutdown()
        pop = poplib.POP3("127.0.0.1", dovecot.pop3_port)
        pop.user("sender@dilinh.lamdong.gov.vn")
        pop.pass_("mk2")
        pop.quit()
    finally:
        dovecot.stop()
    assert main(["activity", "import", str(dovecot.log), "--config", str(district)]) == 0
    assert ", 2 logins" in capsys.readouterr().out
    assert main(["report", "--format", "json", "--config", str(district)]) == 0
    total = json.loads(capsys.readouterr().out)["total"]
    assert (total["accounts_active"], total["active_by_login_only"]) == (2, 2)


def test_follow_records_a_live_log_across_rotation(district: Path, tmp_path: Path) -> None:
    """``activity follow``: lines appended are recorded, the log is rotated (renamed, a new
    file in its place) and the new file's lines are recorded too; SIGTERM ends it cleanly."""
    log = tmp_path / "mail.log"
    log.write_text(_dovecot_line("idle@dilinh.lamdong.gov.vn", datetime.now(UTC)))  # before
    command = [sys.executable, "-m", "gateway.cli", "--config", str(district)]
    follower = subprocess.Popen(
        [*command, "activity", "follow", str(log), "--interval", "0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert follower.stdout is not None
        assert follower.stdout.readline().endswith("following\n")
        with log.open("a") as out:
            out.write(_dovecot_line("reader@dilinh.lamdong.gov.vn", datetime.now(UTC)))
        _wait_for_logins(district, 1)
        log.rename(tmp_path / "mail.log.1")
        log.write_text(_dovecot_line("sender@dilinh.lamdong.gov.vn", datetime.now(UTC)))
        _wait_for_logins(district, 2)
    finally:
        follower.send_signal(signal.SIGTERM)
        _, errors = follower.communicate(timeout=10)
    assert follower.returncode == 0, errors
    assert "rotated, reading the new file" in errors


def _wait_for_logins(config: Path, count: int) -> None:
    """Until the store holds ``count`` accounts active by login (the one before the follower
    started is not among them: follow starts at the end)."""
    deadline = time.monotonic() + 15
    while True:
        out = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "report", "--format", "json"],
            env={**os.environ, "CONGVU_CONFIG": str(config)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        if json.loads(out)["total"]["active_by_login_only"] == count:
            return
        assert time.monotonic() < deadline, out
        time.sleep(0.2)
