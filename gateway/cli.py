"""The ``congvu`` command.

    congvu serve
    congvu check [--mail-from ADDR] [--rcpt ADDR ...] [--client-ip IP] [--json] MESSAGE.eml
    congvu policy check [FILE] | congvu policy explain [FILE]
    congvu config check [FILE]
    congvu log tail [-n N] [--json] | congvu log show ID
    congvu audit verify | congvu audit prune
    congvu report [units|idle] | congvu directory import FILE

Every command finds the gateway configuration the same way (:func:`gateway.config.find_config`):
``--config FILE``, else ``$CONGVU_CONFIG``, else ``./congvu.toml``, else
``/etc/congvu/congvu.toml``, else the embedded defaults.

``check`` exits 0 (accept), 1 (reject), 75 (tempfail, as sysexits EX_TEMPFAIL) or 2 (usage or
configuration error); other tools rely on that contract.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ctypes.util
import dataclasses
import importlib.metadata
import ipaddress
import json
import os
import signal
import sys
import textwrap
from contextlib import closing
from datetime import UTC, date, datetime, timedelta
from email.utils import getaddresses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.config import CONFIG_ENV, SYSTEM_CONFIG, GatewayConfig, find_config, load_config
from policies import ConfigError, Policy, load_policy

# Each command imports what it uses, inside its function: `congvu --help` and a plain
# `congvu check` need neither the SMTP server, pyHanko, openpyxl nor psycopg.
if TYPE_CHECKING:
    from gateway.store import DecisionStore

__all__ = ["main"]

EXIT_OK, EXIT_REJECT, EXIT_USAGE, EXIT_TEMPFAIL = 0, 1, 2, 75


_DISCOVERY = (
    f"The configuration: --config FILE, else ${CONFIG_ENV}, else ./congvu.toml, else "
    f"{SYSTEM_CONFIG}, else the embedded defaults (listen on 127.0.0.1:2525, deliver into "
    "./var/maildir, record in ./var/decisions.sqlite)."
)


def _version() -> str:
    try:
        return importlib.metadata.version("congvu-gateway")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout, not installed
        return "unknown"


class _Parsers:
    """Adds subcommands that share the layout of their help: examples, then where the
    configuration comes from."""

    def __init__(self, parent: argparse.ArgumentParser, dest: str) -> None:
        self.sub = parent.add_subparsers(dest=dest, required=True)

    def add(
        self,
        name: str,
        help: str,
        examples: str = "",
        *,
        config: bool = True,
        discovery: bool | None = None,
    ) -> argparse.ArgumentParser:
        """A subcommand; ``config``: it takes ``--config``; ``discovery``: its help says how
        the configuration is found (default: when it takes ``--config``)."""
        epilog = f"examples:\n{textwrap.indent(examples.strip(), '  ')}" if examples else ""
        if config if discovery is None else discovery:
            epilog += "\n\n" + textwrap.fill(_DISCOVERY, 78)
        parser = self.sub.add_parser(
            name,
            help=help,
            description=help[:1].upper() + help[1:] + ".",
            epilog=epilog.strip() or None,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if config:
            _config_option(parser)
        return parser


def _config_option(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` on a subcommand; SUPPRESS: given before the command (`congvu
    --config F log tail`) it is kept."""
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="the gateway configuration (TOML)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="congvu",
        description="SMTP gateway enforcing Vietnamese official-mail directives.",
        epilog=textwrap.fill(_DISCOVERY, 78) + "\n\ncongvu COMMAND --help shows examples.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"congvu {_version()}")
    parser.add_argument(
        "--config", type=Path, metavar="FILE", help="the gateway configuration (TOML)"
    )
    commands = _Parsers(parser, "command")

    serve = commands.add(
        "serve",
        "run the gateway",
        """
congvu serve                     # the configuration found as below
congvu serve --config /etc/congvu/congvu.toml
kill -HUP PID                    # re-read the policy; SIGTERM drains and stops
""",
    )
    serve.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # set by the supervisor

    milter = commands.add(
        "milter",
        "run the gateway as a milter for Postfix or Sendmail (smtpd_milters)",
        """
congvu milter                    # on [milter] listen, else 127.0.0.1:8891
congvu milter --listen 127.0.0.1:8891
kill -HUP PID                    # re-read the policy; SIGTERM drains and stops
""",
    )
    milter.add_argument(
        "--listen", metavar="HOST:PORT", help="where the MTA connects ([milter] listen)"
    )
    milter.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # set by the supervisor

    check = commands.add(
        "check",
        "judge a stored message exactly as serve would (exit 0 accept, 1 reject, 75 tempfail)",
        """
congvu check message.eml
congvu check --json --mail-from vt@dilinh.lamdong.gov.vn --rcpt vt@lamdong.gov.vn m.eml
""",
    )
    check.add_argument("message", type=Path, help="the message (.eml, raw RFC 5322 bytes)")
    check.add_argument("--mail-from", help="envelope sender (default: Return-Path, else From)")
    check.add_argument("--rcpt", action="append", default=[], help="envelope recipient (repeat)")
    check.add_argument(
        "--client-ip", default="127.0.0.1", help="the client's address (default 127.0.0.1)"
    )
    check.add_argument("--helo", default="", help="the client's HELO name")
    check.add_argument("--json", action="store_true", help="print one JSON object")

    policy = commands.add("policy", "validate or explain a policy file", config=False)
    policies = _Parsers(policy, "action")
    pcheck = policies.add(
        "check",
        "validate a policy file and load its trust store",
        """
congvu policy check                # the policy the configuration names
congvu policy check policy.toml
""",
    )
    pcheck.add_argument("file", type=Path, nargs="?", help="default: the configuration's policy")
    pexplain = policies.add(
        "explain",
        "print the rules of a policy in plain words",
        """
congvu policy explain              # the policy in force (the configuration's, or built in)
congvu policy explain policy.toml
""",
    )
    pexplain.add_argument(
        "file", type=Path, nargs="?", help="default: the configuration's policy, else built in"
    )

    config = commands.add("config", "validate a gateway configuration file", config=False)
    configs = _Parsers(config, "action")
    ccheck = configs.add(
        "check",
        "validate a configuration, its policy and its trust store",
        """
congvu config check                # the configuration found as below
congvu config check /etc/congvu/congvu.toml
""",
        config=False,
        discovery=True,
    )
    ccheck.add_argument("file", type=Path, nargs="?", help="default: found as below")

    directory = commands.add("directory", "the account directory", config=False)
    directories = _Parsers(directory, "action")
    dimport = directories.add(
        "import",
        "replace the directory from a CSV file",
        "congvu directory import danh-ba.csv",
    )
    dimport.add_argument(
        "file",
        type=Path,
        help="CSV with a header row: address, full_name, unit, role, issued[, personal_addresses]",
    )

    activity = commands.add(
        "activity", "mailbox activity from the mail server's logs", config=False
    )
    activities = _Parsers(activity, "action")
    aimport = activities.add(
        "import",
        "record the logins in mail server logs (Dovecot, Postfix, Zimbra; .gz too)",
        """
congvu activity import /var/log/mail.log /var/log/mail.log.1 mail.log.2.gz
congvu activity import /opt/zimbra/log/audit.log --timezone Asia/Ho_Chi_Minh
""",
    )
    aimport.add_argument("files", type=Path, nargs="+", help="log files, in any order")
    afollow = activities.add(
        "follow",
        "record the logins of a live log as they are written (across rotation)",
        "congvu activity follow /var/log/mail.log",
    )
    afollow.add_argument("files", type=Path, nargs=1, metavar="file", help="the live log file")
    afollow.add_argument(
        "--interval", type=float, default=5.0, help="seconds between reads (default 5)"
    )
    for sub in (aimport, afollow):
        sub.add_argument(
            "--timezone",
            help="zone of log times written without one (default: this machine's), "
            "e.g. Asia/Ho_Chi_Minh",
        )

    report = commands.add(
        "report",
        "score units' use of official mail",
        """
congvu report                                   # this month so far, a table
congvu report --period 2026-Q4 --format xlsx -o q4.xlsx
congvu report --from 2026-10-01 --to 2026-12-31 --unit "UBND xa Gia Hiep"
congvu report --period 2026 --by month --unit "UBND xa Gia Hiep"   # over time
congvu report idle --days 90                    # accounts unused for 90 days
congvu report review --period 2026              # the emulation review, units ranked
""",
    )
    report.add_argument("kind", nargs="?", choices=("units", "idle", "review"), default="units")
    report.add_argument("--from", dest="start", type=date.fromisoformat, help="first day")
    report.add_argument("--to", dest="end", type=date.fromisoformat, help="last day")
    report.add_argument(
        "--period", help="a year, month or quarter instead of --from/--to: 2026, 2026-11, 2026-Q4"
    )
    report.add_argument(
        "--by",
        choices=("month", "quarter", "year"),  # gateway.report.periods.BY
        help="the figures of each month, quarter or year of the period, one line each "
        "(of --unit, else the total)",
    )
    report.add_argument("--unit", help="one unit only")
    report.add_argument(
        "--format", choices=("table", "csv", "json", "xlsx", "html"), default="table"
    )
    report.add_argument("--output", "-o", type=Path, help="file for xlsx/html (required for them)")
    report.add_argument(
        "--min-rate",
        type=float,
        default=None,
        help="usage rate (%%) below which a unit is non-compliant "
        "(default: the policy's [scoring] min_usage_rate)",
    )
    report.add_argument("--days", type=int, default=90, help="idle: days without activity")
    report.add_argument(
        "--from-records",
        action="store_true",
        help="recompute from the records themselves, not the daily rollups (slow; the "
        "figures must be the same)",
    )

    audit = commands.add("audit", "check the decision log for tampering", config=False)
    audits = _Parsers(audit, "action")
    audits.add(
        "verify",
        "walk every hash chain; name the first bad record (exit 1)",
        "congvu audit verify",
    )
    audits.add(
        "prune",
        "delete records older than the policy's [retention] keep_days",
        "congvu audit prune",
    )
    audits.add(
        "rollup",
        "rebuild the reports' daily rollups from the records (gateway stopped)",
        "congvu audit rollup",
    )

    web = commands.add(
        "web",
        "run the auditors' web console (read-only), or manage its users",
        """
congvu web                                      # on [web] listen, else 127.0.0.1:8026
congvu web user add thanhtra --role auditor
congvu web user add vt-giahiep --role manager --unit "UBND xa Gia Hiep"
congvu web user list
congvu web user remove vt-giahiep
""",
    )
    web.add_argument("--listen", metavar="HOST:PORT", help="where to listen ([web] listen)")
    webs = web.add_subparsers(dest="action")
    user = webs.add_parser("user", help="the console's users ([web] users)")
    users = user.add_subparsers(dest="user_action", required=True)
    uadd = users.add_parser(
        "add", help="add a user, or set a user's password, role and unit (asks the password)"
    )
    uadd.add_argument("name", help="the user name (letters, digits, . _ @ -)")
    uadd.add_argument(
        "--role",
        choices=("auditor", "manager"),
        required=True,
        help="auditor: every unit; manager: --unit only",
    )
    uadd.add_argument("--unit", default="", help="the unit a manager sees (as in the directory)")
    uadd.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from standard input (one line) instead of asking",
    )
    uadd.add_argument(
        "--sso-only",
        action="store_true",
        help="no password: the user signs on only through [web] trusted_header",
    )
    uremove = users.add_parser("remove", help="remove a user (their sessions end at once)")
    uremove.add_argument("name")
    ulist = users.add_parser("list", help="the users, their roles and units")
    for sub in (uadd, uremove, ulist):
        _config_option(sub)

    log = commands.add("log", "read the decision log", config=False)
    logs = _Parsers(log, "action")
    tail = logs.add(
        "tail",
        "the newest decisions, oldest first",
        """
congvu log tail
congvu log tail -n 100 --json
""",
    )
    tail.add_argument("-n", type=int, default=20, help="how many (default 20)")
    tail.add_argument("--json", action="store_true", help="one record a line, in full")
    show = logs.add(
        "show",
        "one decision in full, by the id an SMTP reply or notice quotes (ref ...)",
        "congvu log show 01M8268G4WHGNB25S70XZF3E9N",
    )
    show.add_argument("id", help="the decision id (case does not matter)")
    return parser


def _default_envelope(raw: bytes) -> tuple[str, list[str]]:
    """Envelope sender from Return-Path (``<>`` is the null sender), else From; rcpts To/Cc."""
    from gateway.message import normalize_line_endings, parse_message
    from policies.addresses import AddressError, parse_mailbox_list

    parsed = parse_message(normalize_line_endings(raw))
    return_path = parsed.all("Return-Path")
    if return_path:
        sender = return_path[0].value.strip().removeprefix("<").removesuffix(">").strip()
    else:
        try:
            sender = parse_mailbox_list(parsed.first("From"))[0].address
        except AddressError:
            sender = ""
    rcpts = [
        addr
        for _, addr in getaddresses([h.value for h in parsed.headers if h.lname in ("to", "cc")])
        if "@" in addr
    ]
    return sender, rcpts


def _check(args: argparse.Namespace, config: GatewayConfig, policy: Policy) -> int:
    """Judge a stored message through the same Judge calls, in the same order, as serve."""
    from gateway.checks.dns import make_resolver
    from gateway.checks.validation import make_validator
    from gateway.judge import Judge
    from gateway.transaction import Client, run_offline

    try:
        raw = args.message.read_bytes()
        ipaddress.ip_address(args.client_ip)
    except OSError as exc:
        print(f"congvu check: cannot read {args.message}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError:
        print(f"congvu check: --client-ip {args.client_ip!r} is not an IP address", file=sys.stderr)
        return EXIT_USAGE
    default_from, default_rcpts = _default_envelope(raw)
    mail_from = default_from if args.mail_from is None else args.mail_from
    rcpts = args.rcpt or default_rcpts
    if not rcpts:
        print("congvu check: no recipients (give --rcpt, or To/Cc headers)", file=sys.stderr)
        return EXIT_USAGE
    # The same judge and transaction as serve; validation in threads (one message: no
    # worker processes); no downstream: what the policy accepts counts as delivered.
    validator = make_validator(config, policy, processes=False)
    judge = Judge(config, policy, validator=validator, resolver=make_resolver(config))
    client = Client(args.client_ip, helo=args.helo)
    try:
        txn = asyncio.run(run_offline(judge, client, mail_from, rcpts, raw))
    finally:
        validator.close()
    record = txn.record().to_dict()
    result: dict[str, Any] = {
        "verdict": record["verdict"],
        "reasons": record["reasons"],
        "monitor_reasons": record["monitor_reasons"],
        "smtp_reply": record["reply"],
        "findings": record["findings"],
        "envelope": record["envelope"],
        "policy": record["policy"],
    }
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        print(f"verdict: {result['verdict']}")
        print(f"reply:   {result['smtp_reply']}")
        for f in result["findings"]:
            line = f"  {f['id']:<32} {f['mode']:<8} {f['outcome']}"
            if f["reason"]:
                line += f"  [{f['reason']}] {f['detail']}"
            print(line)
        if result["monitor_reasons"]:
            print(f"monitor: would refuse for {', '.join(result['monitor_reasons'])}")
    return {"accept": EXIT_OK, "reject": EXIT_REJECT}.get(result["verdict"], EXIT_TEMPFAIL)


def _activity(args: argparse.Namespace, config: GatewayConfig) -> int:
    """Import (or follow) mail server logs into the store's mailbox activity."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from gateway.activity import follow, import_files
    from gateway.store import open_store

    try:
        local = ZoneInfo(args.timezone) if args.timezone else datetime.now().astimezone().tzinfo
    except (ZoneInfoNotFoundError, ValueError):
        print(f"congvu activity: unknown time zone {args.timezone!r}", file=sys.stderr)
        return EXIT_USAGE
    assert local is not None
    for path in args.files:
        if not path.is_file():
            print(f"congvu activity: no such file: {path}", file=sys.stderr)
            return EXIT_USAGE
    with closing(open_store(config)) as store:
        if args.action == "follow":
            return follow(store, args.files[0], local=local, interval=args.interval)
        for path, summary in import_files(store, args.files, local=local):
            line = f"{path}: {summary.lines} lines, {summary.logins} logins"
            if summary.unreadable:
                line += f", {summary.unreadable} login lines without a readable time"
            print(line)
            for example in summary.examples:
                print(f"  unreadable: {example}")
    return EXIT_OK


def _report(args: argparse.Namespace, config: GatewayConfig) -> int:
    from gateway.report import render, render_html, render_trend, write_xlsx
    from gateway.report.periods import parse_period, split
    from policies.schema import VIETNAM_TIME

    today = datetime.now(VIETNAM_TIME).date()
    with closing(_store(config)) as store:
        figures = _figures(args, store)
        if args.kind == "idle":
            policy = load_policy(config.policy_file)
            idle = figures.idle(
                until=None, now=datetime.now(UTC), days=args.days, is_official=policy.is_official
            )
            if args.format == "json":
                print(json.dumps(dataclasses.asdict(idle), ensure_ascii=False, indent=2))
            else:
                for title, rows in (
                    (f"Không hoạt động {args.days} ngày / idle {args.days} days", idle.idle),
                    ("Chưa từng sử dụng / never seen", idle.never_seen),
                    (
                        "Địa chỉ công vụ ngoài danh bạ / official senders not in the directory",
                        idle.unknown_senders,
                    ),
                ):
                    print(f"{title}: {len(rows)}")
                    for row in rows:
                        print("  " + "  ".join(str(v) for v in row.values()))
            return EXIT_OK
        if args.period:
            if args.start or args.end:
                print("congvu report: --period or --from/--to, not both", file=sys.stderr)
                return EXIT_USAGE
            try:
                args.start, args.end = parse_period(args.period)
            except ValueError as exc:
                print(f"congvu report: {exc}", file=sys.stderr)
                return EXIT_USAGE
        start = args.start or today.replace(day=1)
        end = args.end or today
        if end < start:
            print("congvu report: --to is before --from", file=sys.stderr)
            return EXIT_USAGE
        min_rate = (
            args.min_rate
            if args.min_rate is not None
            else load_policy(config.policy_file).min_usage_rate
        )
        if args.kind == "review":
            if args.format not in ("table", "csv", "json"):
                print("congvu report: review prints table, csv or json", file=sys.stderr)
                return EXIT_USAGE
            return _review(args, figures, start=start, end=end, min_rate=min_rate)
        if args.by:
            if args.format not in ("table", "csv", "json"):
                print("congvu report: --by prints table, csv or json", file=sys.stderr)
                return EXIT_USAGE
            trend = []
            for label, first, last in split(start, end, args.by):
                scores, total = figures.scores(first, last, unit=args.unit, min_rate=min_rate)
                trend.append((label, scores[0] if args.unit and scores else total))
            print(render_trend(trend, args.format), end="")
            return EXIT_OK
        scores, total = figures.scores(start, end, unit=args.unit, min_rate=min_rate)
        refusals = figures.refusals(start, end) if args.format in ("xlsx", "html") else None
    title = f"Tình hình sử dụng thư công vụ từ {start:%d/%m/%Y} đến {end:%d/%m/%Y}"
    if refusals is not None:
        if args.output is None:
            print(f"congvu report: --format {args.format} needs --output FILE", file=sys.stderr)
            return EXIT_USAGE
        if args.format == "xlsx":
            write_xlsx(args.output, scores, total, title=title)
        else:
            args.output.write_text(
                render_html(scores, total, refusals, title=title), encoding="utf-8"
            )
        print(f"{args.output}: {len(scores)} units, {refusals.records} decisions")
        return EXIT_OK
    print(render(scores, total, args.format), end="")
    return EXIT_OK


def _figures(args: argparse.Namespace, store: DecisionStore) -> Any:
    """Where the report's figures come from: the store's rollups, or (``--from-records``)
    the records themselves, read a page at a time (saying how far, on a terminal)."""
    from gateway.report.figures import RecordFigures, RollupFigures

    if not args.from_records:
        return RollupFigures(store, store.accounts())

    def progress(count: int) -> None:
        print(f"\r{count} decisions read", end="", file=sys.stderr, flush=True)

    return RecordFigures(store, store.accounts(), progress if sys.stderr.isatty() else None)


def _review(
    args: argparse.Namespace, figures: Any, *, start: date, end: date, min_rate: float
) -> int:
    """The emulation review of [start, end]: the period's scores and the accounts idle at its
    end (no mail and no login in the ``--days`` before it; never-seen accounts issued before
    then count too)."""
    from gateway.report import render_review, review
    from policies.schema import VIETNAM_TIME

    used: set[str] = set()
    scores, _ = figures.scores(start, end, unit=args.unit, min_rate=min_rate, used=used)
    ending = datetime.combine(end + timedelta(days=1), datetime.min.time(), tzinfo=VIETNAM_TIME)
    idle = figures.idle(
        until=end, now=ending.astimezone(UTC), days=args.days, is_official=lambda _: False
    )
    issued_before = (ending - timedelta(days=args.days)).date()
    by_address = figures.directory.by_address
    idle_addresses = {row["address"] for row in idle.idle} | {
        row["address"]
        for row in idle.never_seen
        if by_address[row["address"]].issued < issued_before
    }
    accounts = figures.directory.accounts
    rows = review(scores, accounts, used=used, idle=idle_addresses, min_rate=min_rate)
    print(render_review(rows, args.format), end="")
    return EXIT_OK


def _web(args: argparse.Namespace, config: GatewayConfig) -> int:
    """``congvu web``: the console, on its own port (bound first: a taken port is one line
    and exit status 2), until SIGTERM or SIGINT."""
    import uvicorn

    from gateway.logs import get_logger
    from gateway.server import ListenError, bind
    from gateway.web.app import create_app
    from gateway.web.users import read_users

    if config.web.users.exists():
        read_users(config.web.users)  # a broken users file: one line, exit 2, as a config
    listen = args.listen or config.web.listen
    try:
        sock = bind(listen)
    except ListenError as exc:
        print(f"congvu web: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_USAGE
    policy = load_policy(config.policy_file)
    # Three connections: the pages' reads never wait behind the report's sums (seconds at
    # province scale), nor the sums behind the walk of every chain (minutes).
    with (
        closing(_store(config)) as store,
        closing(_store(config)) as sums,
        closing(_store(config)) as walk,
    ):
        app = create_app(config, store, policy, figures_store=sums, verify_store=walk)
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                log_level="warning",
                access_log=False,  # the console's own access log says who saw what
                server_header=False,
                proxy_headers=False,  # X-Forwarded-For is read from trusted proxies only
                timeout_graceful_shutdown=10,  # a page still being made then is cut off
            )
        )
        get_logger().info("web.started", listen=listen, store=store.describe())
        server.run(sockets=[sock])
        get_logger().info("web.stopped")
    return EXIT_OK


def _web_user(args: argparse.Namespace, config: GatewayConfig) -> int:
    """``congvu web user add|remove|list``: the users file ([web] users)."""
    import getpass

    from gateway.web.users import UserFile, WebUser, hash_password, valid_name

    file = UserFile(config.web.users)
    users = dict(file.users())
    if args.user_action == "list":
        for user in sorted(users.values(), key=lambda u: u.name):
            sign_on = "password" if user.password else "sso only"
            print(f"{user.name}  {user.role}  {user.unit or '-'}  ({sign_on})")
        return EXIT_OK
    if args.user_action == "remove":
        if users.pop(args.name, None) is None:
            print(f"congvu web user: no user {args.name}", file=sys.stderr)
            return EXIT_REJECT
        file.save(users)
        print(f"{file.path}: {args.name} removed")
        return EXIT_OK
    if not valid_name(args.name):
        print("congvu web user: a user name is letters, digits and . _ @ -", file=sys.stderr)
        return EXIT_USAGE
    if args.role == "manager" and not args.unit:
        print("congvu web user: a manager sees one unit: give --unit", file=sys.stderr)
        return EXIT_USAGE
    if args.role == "auditor" and args.unit:
        print("congvu web user: an auditor sees every unit: no --unit", file=sys.stderr)
        return EXIT_USAGE
    password = ""
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif not args.sso_only:
        password = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("again: ") != password:
            print("congvu web user: the passwords differ", file=sys.stderr)
            return EXIT_USAGE
    if not args.sso_only and len(password) < 10:
        print("congvu web user: a password has 10 characters at least", file=sys.stderr)
        return EXIT_USAGE
    users[args.name] = WebUser(
        args.name, args.role, args.unit, hash_password(password) if password else ""
    )
    file.save(users)
    print(f"{file.path}: {args.name} ({args.role}{', ' + args.unit if args.unit else ''}) saved")
    return EXIT_OK


def _store(config: GatewayConfig) -> DecisionStore:
    from gateway.store import StoreError, open_store

    if not config.store_url and not config.store_path.exists():
        raise StoreError(
            f"no decision store at {config.store_path.resolve()} (configuration: "
            f"{config.source}; give --config or set {CONFIG_ENV} to read another)"
        )
    return open_store(config)


def _summary(stored: dict[str, Any]) -> str:
    """One line of ``congvu log tail``: time, id, verdict, reasons, envelope, subject."""
    from gateway.record import Record

    record = Record.from_dict(stored)
    rcpts = ",".join(r.address for r in record.envelope.recipients)
    reasons = ",".join([*record.reasons, *(f"monitor:{m}" for m in record.monitor_reasons)])
    return (
        f"{record.time}  {record.id}  {record.verdict:<9} {reasons or '-':<28} "
        f"<{record.envelope.mail_from}> -> {rcpts}  {record.headers.subject[:40]!r}"
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``congvu``; returns the exit status."""
    try:
        return _main(argv)
    except BrokenPipeError:
        # The reader went away (`congvu log tail | head`): stop quietly, as a shell tool does,
        # not with a traceback. Later flushes go nowhere; the status is the shell's for SIGPIPE.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    from gateway.checks.trust import TrustStoreError, trust_for
    from gateway.logs import configure_logging
    from gateway.record import RecordError
    from gateway.store import StoreError

    try:
        if args.command == "policy":
            policy_file = args.file or load_config(find_config(args.config)).policy_file
            policy = load_policy(policy_file)
            trust = trust_for(policy)
            if args.action == "check":
                print(
                    f"{policy.source}: ok ({len(policy.rules)} rules, sha256 {policy.sha256}; "
                    f"trust store {policy.trust.store}: {len(trust.roots)} roots, "
                    f"{len(trust.intermediates)} intermediates, {len(trust.crls)} CRLs)"
                )
            else:
                from policies.explain import explain

                print(explain(policy))
            return EXIT_OK
        if args.command == "config":
            config = load_config(args.file or find_config(args.config))
            trust_for(load_policy(config.policy_file))
            if config.web.users.exists():
                from gateway.web.users import read_users

                read_users(config.web.users)
            print(f"{config.source}: ok")
            return EXIT_OK
        config_file = find_config(args.config)
        config = load_config(config_file)
        if args.command == "directory":
            from gateway.directory import DirectoryError, parse_directory_csv
            from gateway.store import open_store

            configure_logging("error", "-")
            try:
                accounts = parse_directory_csv(args.file.read_text("utf-8-sig"), str(args.file))
            except (OSError, UnicodeDecodeError) as exc:
                print(f"congvu directory: cannot read {args.file}: {exc}", file=sys.stderr)
                return EXIT_USAGE
            except DirectoryError as exc:
                print(str(exc), file=sys.stderr)
                return EXIT_USAGE
            with closing(open_store(config)) as store:
                store.replace_accounts(accounts)
            units = len({a.unit for a in accounts})
            print(f"{args.file}: {len(accounts)} accounts in {units} units imported")
            return EXIT_OK
        if args.command == "activity":
            configure_logging("error", "-")
            return _activity(args, config)
        if args.command == "report":
            configure_logging("error", "-")
            return _report(args, config)
        if args.command == "audit":
            configure_logging("error", "-")
            if args.action == "prune":
                keep = load_policy(config.policy_file).keep_days
                from gateway.record import record_time

                before = record_time(datetime.now(UTC) - timedelta(days=keep))
                with closing(_store(config)) as store:
                    count = store.prune(before)
                    where = store.describe()
                print(f"{where}: {count} decisions older than {keep} days removed")
                return EXIT_OK
            if args.action == "rollup":
                with closing(_store(config)) as store:
                    count = store.rebuild_rollups()
                    where = store.describe()
                print(f"{where}: daily rollups rebuilt from {count} decisions")
                return EXIT_OK
            with closing(_store(config)) as store:
                problems = store.verify()
                where = store.describe()
            if not problems:
                print(f"{where}: every decision chain is intact")
                return EXIT_OK
            print(f"{where}: {len(problems)} problem(s); the first:", file=sys.stderr)
            for problem in problems[:20]:
                print(f"  {problem}", file=sys.stderr)
            return EXIT_REJECT
        if args.command == "web":
            if args.action == "user":
                return _web_user(args, config)
            configure_logging(config.log_level, config.log_file)
            return _web(args, config)
        if args.command == "log":
            configure_logging("error", "-")
            with closing(_store(config)) as store:
                if args.action == "tail":
                    for record in store.tail(args.n):
                        print(
                            json.dumps(record, ensure_ascii=False)
                            if args.json
                            else _summary(record)
                        )
                    return EXIT_OK
                found = store.get(args.id)
                if found is None:
                    print(f"congvu log show: no decision {args.id}", file=sys.stderr)
                    return EXIT_REJECT
                print(json.dumps(found, ensure_ascii=False, indent=2))
                return EXIT_OK
        policy = load_policy(config.policy_file)
        if args.command == "check":
            configure_logging("error", "-")
            return _check(args, config, policy)
        configure_logging(config.log_level, config.log_file)
        return _serve(args, config, config_file, policy)
    except (ConfigError, TrustStoreError) as exc:
        print(f"congvu: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (StoreError, RecordError) as exc:
        print(f"congvu: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _serve(
    args: argparse.Namespace, config: GatewayConfig, config_file: Path | None, policy: Policy
) -> int:
    """``congvu serve``: a supervisor with workers, a worker, or one gateway process.

    The ports are bound first: a port already taken (by another gateway too) is one line on
    standard error and exit status 2, before the store or anything else is created; the
    supervisor starts no worker then, so nothing respawns. A store that cannot be opened is
    exit status 75 (try again later).
    """
    from gateway.logs import get_logger
    from gateway.server import SHUTDOWN_GRACE, Gateway, ListenError, bind, listen_address, serve
    from gateway.store import StoreError
    from gateway.workers import Supervisor, hold_stop_signals

    hold_stop_signals()  # the ports are bound next: a stop from then on is a clean stop

    worker = args.worker is not None
    if args.command == "milter":  # the milter alone: no SMTP proxy listener
        listen = args.listen or config.milter_listen or "127.0.0.1:8891"
        config = dataclasses.replace(config, proxy=False, milter_listen=listen)
    try:
        if worker:
            config = dataclasses.replace(config, worker_index=args.worker)
            _die_with_parent()
        # Without SO_REUSEPORT (but in a worker): fails while anyone holds the port; the
        # workers then share it, each binding it with SO_REUSEPORT.
        listener = bind(listen_address(config), reuse_port=worker) if config.proxy else None
        milter = bind(config.milter_listen, reuse_port=worker) if config.milter_listen else None
        http = bind(config.metrics_listen) if config.metrics_listen and not worker else None
        if config.workers > 1 and not worker:
            for sock in (listener, milter):
                if sock is not None:
                    sock.close()  # the workers bind it
            supervisor = Supervisor(
                config,
                config_file and config_file.resolve(),
                policy_sha256=policy.sha256,
                http_listener=http,
                command=args.command,
                options=("--listen", config.milter_listen) if args.command == "milter" else (),
            )
            return asyncio.run(supervisor.run(grace=SHUTDOWN_GRACE))
        gateway = Gateway.from_config(config, policy)
        asyncio.run(serve(gateway, listener, http, milter))
    except (ListenError, StoreError) as exc:
        if config.log_file != "-" or worker:
            # In the log file too (a worker's standard error is easy to lose); on a terminal
            # or the journal the line below says it once.
            get_logger().error("gateway.cannot_start", worker=config.worker_index, error=str(exc))
        print(f"congvu {args.command}: {' '.join(str(exc).split())}", file=sys.stderr)
        # A store that cannot be opened may come back (PostgreSQL still starting at boot):
        # EX_TEMPFAIL, which systemd restarts. A taken port is the admin's to resolve: 2,
        # which the unit does not restart (RestartPreventExitStatus=2).
        return EXIT_TEMPFAIL if isinstance(exc, StoreError) else EXIT_USAGE
    return EXIT_OK


def _die_with_parent() -> None:
    """A worker gets SIGTERM if its supervisor dies, even by SIGKILL (Linux prctl), so no
    orphan keeps accepting mail on the shared port."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
