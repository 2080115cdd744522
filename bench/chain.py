"""Benchmark: Postfix alone against Postfix with congvu in front (proxy) or beside it (milter).

    .venv/bin/python bench/chain.py            # about 6 minutes on 2 cores
    .venv/bin/python bench/chain.py --quick    # fewer messages, one round: about 1 minute

Needs root and Debian's ``postfix`` (private Postfix instances, as the end-to-end tests start
them with tests/support/postfix.py); ``rspamd`` (Debian's package) is measured as a peer if
it is installed, and left out with a note if it is not.

Where bench/run.py compares the gateway with a bare SMTP sink, this one measures what a mail
administrator sees: Postfix's throughput with and without congvu, in the layouts the
documentation shows, in the same run:

- **Postfix alone**: a stock public ``smtpd`` that queues the mail and delivers it into a
  Maildir (``virtual``), with one ``header_checks`` line so that it refuses the gmail mail
  itself, at the same point (end of ``DATA``) as congvu does;
- **congvu proxy**: docs/admin/postfix.md's ``master.cf``, ``main.cf`` and ``congvu.toml``
  (read from the page, as tests/gateway/test_postfix_e2e.py does): Postfix's public
  ``smtpd`` with congvu as its ``smtpd_proxy_filter``, congvu delivering to the re-injection
  ``smtpd``;
- **congvu milter**: docs/admin/milter.md's ``main.cf`` and ``congvu.toml``, ``congvu
  milter``;
- **rspamd milter**: Debian's rspamd behind the same Postfix, its proxy worker as a milter
  scanning by itself, the modules that need DNS or other servers off, no redis;
- **null milter**: bench/null_milter.py behind the milter page's Postfix: it negotiates as
  congvu does and lets everything through at once, so its chain is the floor of any milter
  chain (Postfix's own cost of the protocol) and the gap to congvu's is congvu's own work.

Only ports and paths differ from the pages, and two settings explained where they are made:
congvu's ``trusted_networks`` on the milter page (the load comes from 127.0.0.1 but plays
senders from the Internet) and the Postfix instances' test-only timings (back to Postfix's
defaults here).

Load: ``smtp-source`` (C), 20 sessions, a new connection for every message, as mail servers
send; 4 KB messages. Accepted mail is official mail (congvu accepts it: the policies run
``sender-official-unauthenticated`` in monitor mode); refused mail comes from a gmail
address and is refused with ``550`` at the end of ``DATA``, twice: under Postfix's flow
control as it ships (``in_flow_delay = 1s``), which holds refused mail back whatever the
filter does (see KINDS), and with ``in_flow_delay = 0`` in main.cf (``postfix reload``
before the run and after it). An accepted run is timed until the last message is in the
Maildir, so queueing and delivery count and a queue that backs up cannot flatter a chain; a
refused run is timed until the client is done. Every figure is the best of ``--rounds``
alternating rounds. CPU is counted per message over all the processes
of congvu (or rspamd) and of Postfix, with the children they have reaped (Postfix's ``smtpd``
processes come and go). Numbers, not pass/fail: it is not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script (python bench/chain.py): import from the repository
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import cpu_seconds, free_port, load_by_path, wait_listening

ROOT = Path(__file__).resolve().parent.parent
PROXY_PAGE = ROOT / "docs" / "admin" / "postfix.md"
MILTER_PAGE = ROOT / "docs" / "admin" / "milter.md"
OFFICIAL = "a.nguyen@dilinh.lamdong.gov.vn"
CLERK = "vanthu@lamdong.gov.vn"
PERSONAL = "nguoidan@gmail.com"
DOMAINS = ["lamdong.gov.vn", "dilinh.lamdong.gov.vn"]
SESSIONS = 20

# tests/support/postfix.py tunes its instances for tests (no flow control, quick retries);
# a benchmark of Postfix runs with Postfix's defaults instead.
POSTFIX_DEFAULTS = {
    "in_flow_delay": "1s",
    "smtpd_error_sleep_time": "1s",
    "queue_run_delay": "300s",
    "minimal_backoff_time": "300s",
    "maximal_backoff_time": "4000s",
}


def plain(size: int, sender: str) -> bytes:
    """A plain-text message of about ``size`` bytes from ``sender`` to the clerk."""
    head = (
        f"From: Nguyen Van A <{sender}>\r\nTo: {CLERK}\r\nSubject: Bao cao tuan\r\n"
        "Message-ID: <bench@dilinh.lamdong.gov.vn>\r\n"
        "Date: Sun, 22 Nov 2026 10:00:00 +0700\r\n\r\n"
    )
    line = "Noi dung van ban bao cao tuan cua don vi, dong " + "x" * 20 + "\r\n"
    return (head + line * max(1, (size - len(head)) // len(line))).encode()


# -- the chains -------------------------------------------------------------------------------


@dataclass
class Chain:
    """One Postfix instance with (or without) a filter, ready for load on ``port``."""

    name: str
    postfix: Any  # tests/support/postfix.py's PostfixDownstream
    port: int  # the public smtpd
    filter_pid: int | None = None  # congvu's (or rspamd's) main process
    refuses: bool = True  # whether it refuses the gmail mail (rspamd does not)
    filter_command: list[str] = field(default_factory=list)  # to start congvu again
    filter_dir: Path | None = None  # congvu's folder: its congvu.toml, store and log

    @property
    def postfix_pid(self) -> int:
        return int((self.postfix.queue_dir / "pid" / "master.pid").read_text().strip())

    def delivered(self) -> int:
        return sum(
            len(os.listdir(self.postfix.maildir / sub))
            for sub in ("new", "cur")
            if (self.postfix.maildir / sub).is_dir()
        )

    def set_in_flow_delay(self, value: str) -> None:
        """``in_flow_delay`` in main.cf, and ``postfix reload``."""
        conf = self.postfix.conf_dir
        subprocess.run(["postconf", "-c", conf, "-e", f"in_flow_delay = {value}"], check=True)
        # Postfix waits for a main.cf changed in the last seconds to "cool down".
        past = time.time() - 10
        os.utime(conf / "main.cf", (past, past))
        subprocess.run(["postfix", "-c", conf, "reload"], capture_output=True, check=True)
        time.sleep(1)  # the daemons restart with the new value

    def clear_mailbox(self) -> None:
        for sub in ("new", "cur"):
            folder = self.postfix.maildir / sub
            if folder.is_dir():
                for name in os.listdir(folder):
                    (folder / name).unlink()


class Layouts:
    """Starts the chains in ``folder`` and stops everything it started, in reverse order."""

    def __init__(self, folder: Path, workers: str) -> None:
        self.folder = folder
        self.workers = workers
        self.postfix = load_by_path("bench_postfix", ROOT / "tests" / "support" / "postfix.py")
        self._stops: list[Callable[[], None]] = []
        self.reinjection = 0  # the proxy layout's re-injection smtpd

    def close(self) -> None:
        while self._stops:
            with contextlib.suppress(Exception):
                self._stops.pop()()

    def _start_postfix(
        self, name: str, port: int, settings: dict[str, str], services: str | None = None
    ) -> Any:
        mta = self.postfix.PostfixDownstream(
            self.folder / name,
            port,
            DOMAINS,
            services=services,
            settings={**POSTFIX_DEFAULTS, **settings},
        )
        self._stops.append(mta.stop)
        mta.start(timeout=60)
        return mta

    def start_process(self, command: list[str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
        """``command`` in ``cwd``, its output appended to ``log``; stopped (SIGTERM, then
        SIGKILL after 30 s) by :meth:`close`."""
        with open(log, "ab") as out:
            process = subprocess.Popen(
                command, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )

        def stop() -> None:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)

        self._stops.append(stop)
        return process

    def _congvu(self, command: str, config: Path) -> subprocess.Popen[bytes]:
        congvu = str(Path(sys.executable).parent / "congvu")
        return self.start_process(
            [congvu, command, "--config", str(config)], config.parent, config.parent / "congvu.log"
        )

    def alone(self) -> Chain:
        """Stock Postfix. ``header_checks`` refuses the gmail mail at the end of ``DATA``, as
        congvu does, so that refused mail has a baseline too; one regular expression per
        header line costs the accepted mail next to nothing."""
        checks = self.folder / "header_checks"
        checks.write_text("/^From:.*@gmail\\.com/ REJECT 5.7.1 personal mailbox\n")
        port = free_port()
        mta = self._start_postfix("alone", port, {"header_checks": f"regexp:{checks}"})
        return Chain("Postfix alone", mta, port)

    def proxy(self, *, downstream: int | None = None) -> Chain:
        """docs/admin/postfix.md: the page's master.cf entries, main.cf lines and congvu.toml;
        with ``downstream``, congvu delivers to that port (bench/faults.py's fault relay,
        which forwards to the re-injection ``smtpd`` on :attr:`Layouts.reinjection`)."""
        public, gateway, reinjection = free_port(), free_port(), free_port()
        self.reinjection = reinjection
        services = self.postfix.shown(PROXY_PAGE, "postfix-e2e: master.cf")
        services = self.postfix.replace_once(services, r"^smtp(?=\s+inet\s)", f"127.0.0.1:{public}")
        services = self.postfix.replace_once(
            services,
            r"smtpd_proxy_filter=127\.0\.0\.1:2525$",
            f"smtpd_proxy_filter=127.0.0.1:{gateway}",
        )
        services = self.postfix.replace_once(
            services, r"^127\.0\.0\.1:10025(?=\s)", f"127.0.0.1:{reinjection}"
        )
        settings = self.postfix.main_cf(self.postfix.shown(PROXY_PAGE, "postfix-e2e: main.cf"))
        mta = self._start_postfix("proxy", public, settings, services)

        etc = self.folder / "proxy-congvu"
        etc.mkdir()
        shutil.copy(ROOT / "examples" / "policy.toml", etc / "policy.toml")
        text = self.postfix.shown(PROXY_PAGE, "file: congvu.toml")
        text = self.postfix.replace_once(text, r'"127\.0\.0\.1:2525"', f'"127.0.0.1:{gateway}"')
        text = self.postfix.replace_once(
            text, r'"smtp://127\.0\.0\.1:10025"', f'"smtp://127.0.0.1:{downstream or reinjection}"'
        )
        text = self.postfix.replace_once(text, r'"127\.0\.0\.1:9125"', f'"127.0.0.1:{free_port()}"')
        text = self.postfix.replace_once(
            text, r'"/var/lib/congvu/decisions\.sqlite"', '"decisions.sqlite"'
        )
        text = self._with_workers(text)
        (etc / "congvu.toml").write_text(text, "utf-8")
        gw = self._congvu("serve", etc / "congvu.toml")
        wait_listening(gateway, timeout=60)
        return Chain("Postfix + congvu proxy", mta, public, gw.pid, True, gw.args, etc)

    def milter(self) -> Chain:
        """docs/admin/milter.md: the page's main.cf and congvu.toml, ``congvu milter``."""
        public, milter = free_port(), free_port()
        settings = self._milter_main_cf(milter)
        etc = self.folder / "milter-congvu"
        etc.mkdir()
        text = self.postfix.shown(MILTER_PAGE, "milter-e2e: congvu.toml")
        text = self.postfix.replace_once(text, r'"127\.0\.0\.1:8891"', f'"127.0.0.1:{milter}"')
        text = self.postfix.replace_once(
            text, r'"smtp://127\.0\.0\.1:25"', f'"smtp://127.0.0.1:{public}"'
        )
        # The page trusts loopback (programs on the server). The load comes from 127.0.0.1 but
        # plays senders from the Internet, as on the proxy page, where loopback is not
        # trusted: trusted, the gmail sender would count as internal and get a refusal
        # notice for every message, which mail from outside never gets.
        text = self.postfix.replace_once(
            text, r'trusted_networks = \["127\.0\.0\.0/8"\]', 'trusted_networks = ["10.20.0.0/16"]'
        )
        text = self.postfix.replace_once(
            text, r'"/var/lib/congvu/decisions\.sqlite"', '"decisions.sqlite"'
        )
        text = self._with_workers(text) + f'\n[metrics]\nlisten = "127.0.0.1:{free_port()}"\n'
        (etc / "congvu.toml").write_text(text, "utf-8")
        gw = self._congvu("milter", etc / "congvu.toml")
        wait_listening(milter, timeout=60)
        mta = self._start_postfix("milter", public, settings)
        return Chain("Postfix + congvu milter", mta, public, gw.pid, True, gw.args, etc)

    def null_milter(self) -> Chain:
        """The milter page's main.cf, with bench/null_milter.py instead of congvu: a milter
        that negotiates as congvu does and lets everything through at once. The floor of
        any milter chain here: Postfix's own cost of the protocol."""
        public, port = free_port(), free_port()
        settings = self._milter_main_cf(port)
        base = self.folder / "null-milter"
        base.mkdir()
        command = [sys.executable, str(ROOT / "bench" / "null_milter.py"), str(port)]
        process = self.start_process(command, base, base / "null-milter.log")
        wait_listening(port, timeout=60)
        mta = self._start_postfix("null-milter", public, settings)
        return Chain("Postfix + null milter", mta, public, process.pid, refuses=False)

    def _milter_main_cf(self, port: int) -> dict[str, str]:
        """docs/admin/milter.md's main.cf lines, its milter on ``port``."""
        settings = self.postfix.main_cf(self.postfix.shown(MILTER_PAGE, "milter-e2e: main.cf"))
        settings["smtpd_milters"] = self.postfix.replace_once(
            settings["smtpd_milters"], r"127\.0\.0\.1:8891$", f"127.0.0.1:{port}"
        )
        return settings

    def _with_workers(self, text: str) -> str:
        if self.workers == "page":
            return text
        value = '"auto"' if self.workers == "auto" else self.workers
        if "[server]\n" in text:
            return text.replace("[server]\n", f"[server]\nworkers = {value}\n", 1)
        return f"[server]\nworkers = {value}\n" + text

    def rspamd(self) -> tuple[Chain | None, str]:
        """Debian's rspamd as a milter: its proxy worker in milter mode scanning by itself
        (``self_scan``), no normal or controller worker, no redis; the modules that ask DNS
        or other servers (RBLs, SPF, DKIM, DMARC, ARC, ASN, fuzzy, phishing, hfilter...) off,
        and a resolver on a closed loopback port, so that a lookup left over fails at once
        instead of waiting. What stays is rspamd's local work: MIME parsing, the regular
        expression rules (hyperscan), the scores."""
        binary = shutil.which("rspamd")
        if binary is None or not Path("/etc/rspamd/rspamd.conf").exists():
            return None, "rspamd: left out, it is not installed (apt-get install -y rspamd)"
        base = self.folder / "rspamd"
        local = base / "local"
        for sub in ("local.d", "override.d", "db", "run", "log"):
            (local if sub.endswith(".d") else base).joinpath(sub).mkdir(parents=True)
        for module in (
            "rbl", "spf", "dkim", "dmarc", "arc", "asn", "fuzzy_check", "phishing",
            "hfilter", "mx_check", "dcc", "spamassassin", "antivirus", "dkim_signing",
            "external_services", "url_redirector",
        ):  # fmt: skip
            (local / "local.d" / f"{module}.conf").write_text("enabled = false;\n")
        port = free_port()
        override = local / "override.d"
        override.joinpath("worker-proxy.inc").write_text(
            f'bind_socket = "127.0.0.1:{port}";\nmilter = yes;\ntimeout = 120s;\ncount = 1;\n'
            'upstream "local" {\n  default = yes;\n  self_scan = yes;\n}\n'
        )
        for worker in ("normal", "controller"):
            override.joinpath(f"worker-{worker}.inc").write_text(
                f'enabled = false;\nbind_socket = "127.0.0.1:{free_port()}";\n'
            )
        (local / "local.d" / "options.inc").write_text(
            f'dns {{\n  nameserver = ["127.0.0.1:{free_port()}"];\n  timeout = 0.2s;\n'
            "  retransmits = 1;\n}\n"
        )
        override.joinpath("logging.inc").write_text(
            f'type = "file";\nfilename = "{base}/log/rspamd.log";\nlevel = "notice";\n'
        )
        for sub in ("db", "run", "log"):
            shutil.chown(base / sub, "_rspamd", "_rspamd")
        command = [binary, "-f", "-u", "_rspamd", "-g", "_rspamd", "-c", "/etc/rspamd/rspamd.conf"]
        command += [f"--var=LOCAL_CONFDIR={local}", f"--var=DBDIR={base / 'db'}"]
        command += [f"--var=RUNDIR={base / 'run'}", f"--var=LOGDIR={base / 'log'}"]
        process = self.start_process(command, base, base / "stderr.log")
        try:
            wait_listening(port, timeout=120)
        except RuntimeError:
            return None, f"rspamd: left out, it did not listen within 120 s (see {base}/log)"
        public = free_port()
        settings = {
            # rspamd's own advice for Postfix: https://rspamd.com/doc/integration.html
            "smtpd_milters": f"inet:127.0.0.1:{port}",
            "milter_protocol": "6",
            "milter_mail_macros": "i {mail_addr} {client_addr} {client_name} {auth_authen}",
            "milter_default_action": "accept",
        }
        mta = self._start_postfix("rspamd", public, settings)
        return Chain("Postfix + rspamd milter", mta, public, process.pid, refuses=False), ""


# -- load -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """What a run sends, and whether Postfix's flow control is on."""

    label: str
    refused: bool
    flow_control: bool = True  # in_flow_delay as Postfix ships it (1s), else 0
    share: float = 1.0  # of the run's message count
    at_least: int = 1

    def count(self, messages: int) -> int:
        return max(self.at_least, int(messages * self.share))


# Postfix's flow control: its cleanup daemon takes a token for each message it opens (at
# MAIL FROM, for every smtpd: an `-o in_flow_delay=0` on an smtpd service does not reach it),
# and the queue manager gives one back for each message it takes from the queue, or refills
# them all when it finds the incoming queue empty. A message refused after RCPT (a milter's,
# a proxy filter's, a header check's refusal at the end of DATA) spends a token that nothing
# gives back: once the 100 tokens are spent, every refused message waits in_flow_delay (1 s)
# at MAIL FROM, and the throughput is the number of sessions per second, whatever the filter
# does. So refused mail is measured both ways, under flow control with a quarter of the
# messages (it tells as much, in less time), but enough to spend the tokens.
KINDS = (
    Kind("accepted", refused=False),
    Kind("refused", refused=True, share=0.25, at_least=300),
    Kind("refused, in_flow_delay=0", refused=True, flow_control=False),
)


@dataclass
class Result:
    msg_s: float = 0.0
    filter_ms: float | None = None
    postfix_ms: float = 0.0
    wrong: list[str] = field(default_factory=list)


def smtp_source(port: int, eml: Path, count: int, *, refused: bool) -> int:
    """``count`` messages from smtp-source, 20 sessions, a new connection for each; its exit
    status."""
    command = ["smtp-source", "-s", str(SESSIONS), "-m", str(count), "-M", "client.bench"]
    command += ["-F", str(eml), "-f", PERSONAL if refused else OFFICIAL, "-t", CLERK]
    command += (["-A"] if refused else []) + [f"127.0.0.1:{port}"]
    return subprocess.run(command, capture_output=True, check=False).returncode


def wait_delivered(chain: Chain, count: int) -> int:
    """Wait until ``count`` messages are in the Maildir, or nothing has arrived for 10 s."""
    deadline, last = time.monotonic() + 10, -1
    while (seen := chain.delivered()) < count and time.monotonic() < deadline:
        if seen != last:
            deadline, last = time.monotonic() + 10, seen
        time.sleep(0.02)
    return seen


def load(chain: Chain, eml: dict[bool, Path], count: int, kind: Kind) -> Result:
    """One run: accepted mail is timed until the last message is delivered, refused mail until
    the client is done."""
    chain.clear_mailbox()
    if not kind.flow_control:
        chain.set_in_flow_delay("0")
    postfix_pid = chain.postfix_pid
    filter_cpu = cpu_seconds(chain.filter_pid, reaped=True) if chain.filter_pid else 0.0
    postfix_cpu = cpu_seconds(postfix_pid, reaped=True)
    started = time.perf_counter()
    status = smtp_source(chain.port, eml[kind.refused], count, refused=kind.refused)
    expected = 0 if kind.refused else count
    seen = 0 if kind.refused else wait_delivered(chain, count)
    wall = time.perf_counter() - started
    filter_cpu = (
        cpu_seconds(chain.filter_pid, reaped=True) - filter_cpu if chain.filter_pid else 0.0
    )
    postfix_cpu = cpu_seconds(postfix_pid, reaped=True) - postfix_cpu
    if kind.refused:
        time.sleep(0.5)  # nothing may arrive late either
        seen = chain.delivered()
    wrong = [f"smtp-source: exit {status}"] if status else []
    if seen != expected:
        wrong.append(f"{seen} delivered, {expected} expected")
    if not kind.flow_control:
        chain.set_in_flow_delay(POSTFIX_DEFAULTS["in_flow_delay"])
    elif kind.refused:
        # Give the tokens back, as a server that also receives mail has them: once a message
        # has been queued and the incoming queue is empty again, the queue manager refills
        # them. Otherwise the next run on this Postfix would start with every session
        # waiting a second.
        smtp_source(chain.port, eml[False], 1, refused=False)
        wait_delivered(chain, 1)
        time.sleep(0.5)
    return Result(
        count / wall,
        filter_cpu * 1000 / count if chain.filter_pid else None,
        postfix_cpu * 1000 / count,
        wrong,
    )


@contextlib.contextmanager
def workdir(*, keep: bool) -> Iterator[Path]:
    # Searchable by others: rspamd's workers and Postfix's delivery agent run as other users.
    folder = Path(tempfile.mkdtemp(prefix="congvu-chain-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        if keep:
            print(f"\nconfiguration and logs kept in {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer messages, one round")
    parser.add_argument("--messages", type=int, help="messages per run (default 2000, quick 300)")
    parser.add_argument("--rounds", type=int, help="alternating rounds (default 3, quick 1)")
    parser.add_argument(
        "--workers",
        default="page",
        help='congvu\'s [server] workers: "page" (as the pages: 1), a number, or "auto"',
    )
    parser.add_argument("--no-rspamd", action="store_true", help="leave the rspamd chain out")
    parser.add_argument("--keep", action="store_true", help="keep the folder with the logs")
    args = parser.parse_args()
    count = args.messages or (300 if args.quick else 2000)
    rounds = args.rounds or (1 if args.quick else 3)
    if os.geteuid() != 0:
        sys.exit("bench: a private Postfix instance must be started as root")
    for tool in ("smtp-source", "postfix"):
        if shutil.which(tool) is None:
            sys.exit(f"bench: {tool} not found (Debian package postfix)")

    with workdir(keep=args.keep) as folder:
        layouts = Layouts(folder, args.workers)
        try:
            print("starting Postfix instances, congvu and rspamd...", flush=True)
            chains, note = [layouts.alone(), layouts.proxy(), layouts.milter()], ""
            chains.append(layouts.null_milter())
            if args.no_rspamd:
                note = "rspamd: left out (--no-rspamd)"
            else:
                try:
                    peer, note = layouts.rspamd()
                except (OSError, LookupError, subprocess.SubprocessError) as exc:
                    peer, note = None, f"rspamd: left out, it did not start ({exc})"
                if peer is not None:
                    chains.append(peer)
            eml = {}
            for refused, sender in ((False, OFFICIAL), (True, PERSONAL)):
                eml[refused] = folder / f"{sender}.eml"
                # smtp-source adds the CRs back.
                eml[refused].write_bytes(plain(4096, sender).replace(b"\r\n", b"\n"))
            runs = [(c, kind) for c in chains for kind in KINDS if c.refuses or not kind.refused]
            print("warming up (100 messages each: workers, caches, rspamd's hyperscan)", flush=True)
            for chain, kind in runs:
                load(chain, eml, 100, kind)
            results: dict[tuple[str, str], list[Result]] = {}
            for n in range(rounds):
                print(f"round {n + 1} of {rounds}: {count} messages per run", flush=True)
                for chain, kind in runs:
                    result = load(chain, eml, kind.count(count), kind)
                    results.setdefault((chain.name, kind.label), []).append(result)
                    print(
                        f"  {chain.name:<24} {kind.label:<25} {result.msg_s:>6.0f} msg/s",
                        flush=True,
                    )
            report(
                chains, runs, results, count=count, rounds=rounds, workers=args.workers, note=note
            )
        finally:
            layouts.close()


def report(
    chains: list[Chain],
    runs: list[tuple[Chain, Kind]],
    results: dict[tuple[str, str], list[Result]],
    *,
    count: int,
    rounds: int,
    workers: str,
    note: str,
) -> None:
    best = {key: max(found, key=lambda r: r.msg_s) for key, found in results.items()}
    print(
        f"\n4 KB messages, a new connection each, {SESSIONS} sessions, {count} per run (refused "
        f"under flow control: {KINDS[1].count(count)}), best of {rounds}; congvu workers: "
        f"{workers}; {os.cpu_count()} cores\n"
    )
    print(
        f"{'chain':<24} {'mail':<25} {'msg/s':>6} {'vs alone':>8} "
        f"{'filter CPU ms/msg':>17} {'Postfix CPU ms/msg':>18}"
    )
    alone = chains[0].name
    for chain, kind in runs:
        r = best[(chain.name, kind.label)]
        ratio = r.msg_s / best[(alone, kind.label)].msg_s
        filter_ms = "-" if r.filter_ms is None else f"{r.filter_ms:.2f}"
        wrong = sorted({w for x in results[(chain.name, kind.label)] for w in x.wrong})
        print(
            f"{chain.name:<24} {kind.label:<25} {r.msg_s:>6.0f} {ratio:>8.2f} {filter_ms:>17} "
            f"{r.postfix_ms:>18.2f}" + (f"  ({'; '.join(wrong)})" if wrong else ""),
            flush=True,
        )
    print(
        "\ngoals (the issue): each congvu chain at least 0.7 of Postfix alone for accepted "
        "mail;\nrefused mail no slower than accepted mail"
    )
    for chain in chains[1:3]:
        accepted = best[(chain.name, "accepted")].msg_s
        ratio = accepted / best[(alone, "accepted")].msg_s
        print(f"  {chain.name:<24} accepted: {ratio:.2f} of alone, {_met(ratio >= 0.7)}")
        for kind in KINDS[1:]:
            speed = best[(chain.name, kind.label)].msg_s / accepted
            print(f"  {'':<24} {kind.label}: {speed:.2f} of accepted, {_met(speed >= 1.0)}")
    floor = next((c for c in chains if c.name == "Postfix + null milter"), None)
    if floor is not None:
        ratio = best[(floor.name, "accepted")].msg_s / best[(alone, "accepted")].msg_s
        print(f"  {floor.name:<24} accepted: {ratio:.2f} of alone: what any milter can reach here")
    if note:
        print(f"\n{note}")


def _met(met: bool) -> str:
    return "met" if met else "NOT met"


if __name__ == "__main__":
    main()
