"""Mailbox activity from the mail server's own logs: who logged in, and when.

The directives revoke a mailbox *not accessed* for three months, and count an account as used
when its holder uses it: reading mail and logging in count, not only sending through the
gateway. So ``congvu activity import`` reads the mail server's logs and keeps, per login and
day, which kinds of access were seen:

- ``imap`` / ``pop3``: Dovecot's ``imap-login: Login: user=<...>`` and ``pop3-login`` lines
  (webmail such as Roundcube logs in over IMAP, so it counts here too);
- ``submission``: Postfix's ``smtpd ... sasl_username=...`` (an officer sending with a mail
  program through the submission port) and Dovecot's ``submission-login: Login``;
- ``webmail`` / ``imap`` / ``pop3`` from Zimbra's ``audit.log`` and ``mailbox.log``
  (``security - cmd=Auth; account=...; protocol=soap|imap|pop3;``), failed logins excepted.

Failed logins never count. A line that holds none of these is not activity and is skipped; a
line whose time cannot be read is counted as unreadable and reported, never fatal. Importing
is idempotent: a day's entry for a login and kind keeps the earliest and latest times seen,
so importing a file twice, or overlapping rotated files, changes nothing.
"""

from __future__ import annotations

import gzip
import os
import re
import signal
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import IO, Any

__all__ = [
    "Activity",
    "ImportSummary",
    "follow",
    "import_files",
    "merge",
    "open_log",
    "parse_line",
    "read_activity",
]

KINDS = ("imap", "pop3", "submission", "webmail")


@dataclass(frozen=True)
class Activity:
    """One login seen: the login name as the server logged it (lower case), the kind of
    access, and when (UTC)."""

    login: str
    kind: str
    time: datetime


@dataclass
class ImportSummary:
    """What one import read."""

    lines: int = 0
    logins: int = 0  # activity lines recorded
    unreadable: int = 0  # lines whose time could not be read
    examples: list[str] = field(default_factory=list)  # a few unreadable lines, for the admin


# --- what a line says -------------------------------------------------------------------------

_DOVECOT = re.compile(
    r"\b(?P<service>imap|pop3|submission)-login: (?:Info: )?Login: user=<(?P<user>[^>]*)>"
)
_POSTFIX = re.compile(r"postfix(?:/[\w.-]+)*/smtpd\[\d+\]: .*\bsasl_username=(?P<user>[^\s,]+)")
_ZIMBRA = re.compile(
    r"security - cmd=Auth; account=(?P<user>[^;\s]+);(?: [^;]*;)*? protocol=(?P<protocol>\w+);"
)
_ZIMBRA_KINDS = {"soap": "webmail", "http": "webmail", "imap": "imap", "pop3": "pop3"}
_DOVECOT_KINDS = {"imap": "imap", "pop3": "pop3", "submission": "submission"}


def _login_of(line: str) -> tuple[str, str] | None:
    """(login, kind) for a successful login line, else None."""
    if match := _DOVECOT.search(line):
        return match["user"], _DOVECOT_KINDS[match["service"]]
    if match := _POSTFIX.search(line):
        return match["user"], "submission"
    if (match := _ZIMBRA.search(line)) and "error=" not in line[match.end() :]:
        kind = _ZIMBRA_KINDS.get(match["protocol"].lower())
        return (match["user"], kind) if kind else None
    return None


# --- when -------------------------------------------------------------------------------------

_ISO = re.compile(
    r"^(?:<\d+>\d? ?)?(?P<date>\d{4}-\d{2}-\d{2})[T ](?P<clock>\d{2}:\d{2}:\d{2})"
    r"(?P<fraction>[.,]\d+)?(?P<zone>Z|[+-]\d{2}:?\d{2})?"
)
_SYSLOG = re.compile(r"^(?P<month>[A-Z][a-z]{2}) +(?P<day>\d{1,2}) (?P<clock>\d{2}:\d{2}:\d{2})")
_MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTHS = {name: number for number, name in enumerate(_MONTH_NAMES, 1)}


def _time_of(line: str, local: tzinfo, now: datetime) -> datetime | None:
    """When the line was logged, in UTC. ISO 8601 (rsyslog's high-precision format, Zimbra's
    ``2026-12-07 10:00:01,123``) with or without a zone; or the classic syslog stamp
    (``Dec  7 10:00:01``), which has no year: the latest year that does not put it after
    ``now``. A time without a zone is the mail server's local time, ``local``."""
    if match := _ISO.match(line):
        zone = match["zone"]
        text = f"{match['date']}T{match['clock']}"
        moment = datetime.fromisoformat(text)
        if zone:
            offset = "+00:00" if zone == "Z" else zone if ":" in zone else f"{zone[:3]}:{zone[3:]}"
            moment = datetime.fromisoformat(text + offset)
        else:
            moment = moment.replace(tzinfo=local)
        return moment.astimezone(UTC)
    if (match := _SYSLOG.match(line)) and match["month"] in _MONTHS:
        hour, minute, second = (int(n) for n in match["clock"].split(":"))
        month, day = _MONTHS[match["month"]], int(match["day"])
        for year in (now.year, now.year - 1):
            try:
                moment = datetime(year, month, day, hour, minute, second, tzinfo=local)
            except ValueError:  # 29 February of a year that has none
                continue
            if moment <= now.astimezone(local) + _SLACK:
                return moment.astimezone(UTC)
    return None


_SLACK = timedelta(days=1)  # a mail server's clock a day ahead of ours


def parse_line(line: str, *, local: tzinfo, now: datetime) -> Activity | None:
    """The successful login that one log line records, or None (not a login line, or a
    login line whose time cannot be read: :func:`read_activity` tells the two apart)."""
    found = _login_of(line)
    return _activity(line, found, local, now) if found is not None else None


def _activity(line: str, found: tuple[str, str], local: tzinfo, now: datetime) -> Activity | None:
    """The login ``found`` in ``line`` as an :class:`Activity`, or None if its time (or its
    name) cannot be read."""
    login, kind = found
    moment = _time_of(line, local, now)
    if moment is None or not login.strip():
        return None
    return Activity(login.strip().lower(), kind, moment)


# --- files ------------------------------------------------------------------------------------


def open_log(path: Path) -> IO[str]:
    """A log file as text, gzipped or not (rotated logs are: ``mail.log.2.gz``); bytes that
    are not UTF-8 are replaced, never fatal."""
    with path.open("rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    if gzipped:
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return path.open("r", encoding="utf-8", errors="replace")


def read_activity(
    lines: Iterable[str], summary: ImportSummary, *, local: tzinfo, now: datetime
) -> Iterator[Activity]:
    """The logins in ``lines``, counting what was read in ``summary``."""
    for line in lines:
        summary.lines += 1
        found = _login_of(line)  # most lines of a mail log are not logins: one search each
        if found is None:
            continue
        activity = _activity(line, found, local, now)
        if activity is not None:
            summary.logins += 1
            yield activity
        else:  # a login whose time (or name) cannot be read
            summary.unreadable += 1
            if len(summary.examples) < 3:
                summary.examples.append(line.rstrip("\n")[:200])


def merge(activity: Iterable[Activity]) -> list[tuple[str, str, str, str, str]]:
    """Rows for the store, one per login, UTC day and kind: (login, day, kind, first seen,
    last seen), the times as ISO 8601 UTC strings, as records write them."""
    rows: dict[tuple[str, str, str], tuple[str, str]] = {}
    for item in activity:
        stamp = item.time.isoformat(timespec="seconds").replace("+00:00", "Z")
        key = (item.login, stamp[:10], item.kind)
        first, last = rows.get(key, (stamp, stamp))
        rows[key] = (min(first, stamp), max(last, stamp))
    return [(*key, first, last) for key, (first, last) in sorted(rows.items())]


_BATCH = 5000  # activity rows per store transaction


def import_files(
    store: Any, paths: Iterable[Path], *, local: tzinfo, now: datetime | None = None
) -> Iterator[tuple[Path, ImportSummary]]:
    """Import each log file into ``store`` (one merge per file): what each one held."""
    moment = now or datetime.now(UTC)
    for path in paths:
        summary = ImportSummary()
        with open_log(path) as lines:
            rows = merge(read_activity(lines, summary, local=local, now=moment))
        for start in range(0, len(rows), _BATCH):
            store.record_activity(rows[start : start + _BATCH])
        yield path, summary


def follow(store: Any, path: Path, *, local: tzinfo, interval: float) -> int:
    """Read ``path`` as it grows, every ``interval`` seconds, and record its logins, until
    SIGTERM or SIGINT. It starts at the end of the file (import what is already there with
    ``import``); when the file is rotated (another file at the path, or a shorter one), it
    finishes the old file and starts the new one from its beginning."""
    stop = False

    def stopping(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, stopping)
    signal.signal(signal.SIGINT, stopping)
    handle = open_log(path)
    handle.seek(0, os.SEEK_END)
    identity = os.fstat(handle.fileno()).st_ino
    print(f"{path}: following", flush=True)
    pending = ""
    while True:
        summary = ImportSummary()
        chunk = pending + handle.read()
        lines = chunk.split("\n")
        pending = lines.pop()  # a line still being written
        rows = merge(read_activity(lines, summary, local=local, now=datetime.now(UTC)))
        if rows:
            store.record_activity(rows)
        if summary.logins or summary.unreadable:
            print(
                f"{path}: {summary.logins} logins, {summary.unreadable} unreadable",
                flush=True,
            )
        if stop:
            handle.close()
            return 0
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None  # between the rename and the new file: look again later
        if current is not None and (current.st_ino != identity or current.st_size < handle.tell()):
            handle.close()
            handle = open_log(path)
            identity = os.fstat(handle.fileno()).st_ino
            pending = ""
            print(f"{path}: rotated, reading the new file", file=sys.stderr, flush=True)
            continue
        time.sleep(interval)
