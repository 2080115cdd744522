"""The fault run: Postfix with congvu as the pages deploy it, under load, while things fail.

    .venv/bin/python bench/faults.py            # about 2 minutes on 2 cores
    .venv/bin/python bench/faults.py --rate 0   # no pacing: more in flight when it fails
    .venv/bin/python bench/faults.py --keep     # keep the folder: configurations, logs, mail

Needs root and Debian's ``postfix``, as bench/chain.py (whose layouts it starts: the proxy
of docs/admin/postfix.md and the milter of docs/admin/milter.md, only ports and paths
changed). It prints an account of every message; nothing in it passes or fails, but a line
that does not add up says so.

Each fault runs during a load of its own: ``--messages`` messages (default 600), each in a
new connection to Postfix's public ``smtpd``, ``--rate`` a second (default 100, so that
the load outlasts the fault), 10 at a time at most, one in five from a gmail address
(congvu refuses it with 550), the rest official mail. When a quarter of them are answered,
the fault starts:

- **kill -9**: congvu is killed (SIGKILL) and started again a second later, as systemd's
  ``Restart=`` would;
- **SIGTERM**: congvu is stopped as ``systemctl stop`` stops it (it finishes the sessions
  open, then exits) and started again;
- **downstream stopped** (proxy): the re-injection ``smtpd`` stops answering for 2 seconds
  (connections refused, those open cut);
- **downstream refusing** (proxy): for 2 seconds it greets every connection with ``421``;
- **downstream slow** (proxy): for 2 seconds it holds each ``250 ... queued`` answer for
  longer than congvu's ``[downstream] timeout`` (30 s on the page), after it has queued the
  message: congvu answers 451, and the copy is delivered all the same.

The re-injection faults come from a small relay between congvu and the re-injection
``smtpd`` (congvu's ``[downstream] url`` points at it): failure injection, not a fake of
Postfix, which still queues and delivers everything.

Then every message answered 4xx (or cut off) is sent once more, as the sending server would
retry it once the fault is over, and the account is made from what the client saw, the
Maildir and congvu's store:

- **in = 250 + 5xx + 4xx**: every message got an answer (a cut connection counts as 4xx:
  the sender keeps the message);
- **lost**: a message the client saw 250 for that is not in the Maildir (must be 0);
- **copies**: messages delivered more than once (a 451 while the copy was delivered);
- **unexplained**: a delivered copy whose decision id (in our ``Authentication-Results``)
  has no record in the store (must be 0): every copy is explained by a record;
- **refusals without a record**: a 550 from congvu whose message has no refusal record
  (must be 0);
- **records**: the records congvu wrote during the run (transactions that ended before the
  message, a 4xx at MAIL FROM, included), by verdict, with the reasons of the tempfails;
  **attempts**: the sessions the client opened (the messages and the retries).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script (python bench/faults.py)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.chain import CLERK, OFFICIAL, PERSONAL, Chain, Layouts, workdir
from bench.common import free_port, wait_listening

CONCURRENCY = 10
HEAL_AFTER = 2.0  # seconds a downstream fault lasts
RESTART_AFTER = 1.0  # seconds between congvu's death and its new start
SLOW_BY = 35.0  # seconds the slow downstream holds its answer (congvu waits 30)
DECISION = re.compile(rb"policy\.decision=([0-9A-Z]{26})")


# -- the fault relay: congvu -> relay -> the re-injection smtpd ------------------------------


class FaultRelay:
    """A TCP relay in its own thread with an event loop; ``mode`` says how it fails."""

    def __init__(self, port: int, target: int) -> None:
        self.port, self.target = port, target
        self.mode = "ok"  # ok | stopped | refusing | slow
        self.loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.call(self._listen)

    def call(self, factory: Callable[[], object]) -> None:
        asyncio.run_coroutine_threadsafe(factory(), self.loop).result(10)  # type: ignore[arg-type]

    def set(self, mode: str) -> None:
        """Switch to ``mode``; ``stopped`` closes the port and cuts what is open."""

        async def switch() -> None:
            self.mode = mode
            if mode in ("stopped", "refusing"):  # what is open is cut, as by a restart
                for writer in list(self._writers):
                    writer.transport.abort()
            if mode == "stopped" and self._server is not None:
                self._server.close()
                self._server = None
            elif mode != "stopped" and self._server is None:
                await self._listen()

        self.call(switch)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._client, "127.0.0.1", self.port, reuse_address=True
        )

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "refusing":
            writer.write(b"421 4.3.2 fault injection: service not available\r\n")
            await writer.drain()
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        try:
            await asyncio.gather(
                self._pipe(reader, up_writer, slow=False),
                self._pipe(up_reader, writer, slow=True),
            )
        finally:
            self._writers.difference_update((writer, up_writer))
            for w in (writer, up_writer):
                w.close()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, slow: bool
    ) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                if slow and self.mode == "slow" and b" queued as " in data:
                    await asyncio.sleep(SLOW_BY)
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(ConnectionError, OSError):
            writer.close()

    def close(self) -> None:
        self.set("stopped")

        async def cancel() -> None:
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        self.call(cancel)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


# -- the load -------------------------------------------------------------------------------


def message(run: str, n: int, sender: str) -> bytes:
    return (
        f"From: <{sender}>\r\nTo: {CLERK}\r\nSubject: fault run {run} {n}\r\n"
        f"Message-ID: <{run}.{n}@faults.bench>\r\nDate: Mon, 07 Dec 2026 10:00:00 +0700\r\n\r\n"
        + "Noi dung van ban, dong x\r\n"
        * 150
    ).encode()


async def send(port: int, sender: str, data: bytes) -> str:
    """One message in its own session; the class of the last answer: 2xx, 4xx or 5xx (a
    connection cut or timed out: 4xx, the sender keeps the message)."""

    async def answer(reader: asyncio.StreamReader) -> int:
        while True:
            line = await reader.readline()
            if not line:
                raise ConnectionError("closed")
            if line[3:4] != b"-":
                return int(line[:3])

    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return "4xx"
    try:
        async with asyncio.timeout(SLOW_BY + 120):
            steps = [b"", b"EHLO client.faults.bench", f"MAIL FROM:<{sender}>".encode()]
            steps += [f"RCPT TO:<{CLERK}>".encode(), b"DATA", data + b"."]
            for step in steps:
                if step:
                    writer.write(step + b"\r\n")
                code = await answer(reader)
                if code >= 400:
                    return f"{code // 100}xx"
            writer.write(b"QUIT\r\n")
            return "2xx" if code == 250 else "4xx"
    except (ConnectionError, OSError, TimeoutError, ValueError):
        return "4xx"
    finally:
        writer.close()


@dataclass
class Sent:
    sender: str
    data: bytes
    first: str = ""  # the first answer's class
    last: str = ""  # after the retry of a 4xx


async def load(
    port: int, messages: dict[str, Sent], fault: Callable[[], None], rate: float
) -> None:
    """Send everything, ``rate`` messages a second (0: as fast as CONCURRENCY sessions go),
    CONCURRENCY at a time at most; ``fault`` runs (in a thread) once a quarter is answered;
    then each 4xx is sent once more."""
    queue = list(enumerate(messages.values()))
    done = 0
    fault_task: asyncio.Future[None] | None = None
    start = time.monotonic()

    async def worker() -> None:
        nonlocal done, fault_task
        while queue:
            n, item = queue.pop(0)
            if rate:
                await asyncio.sleep(start + n / rate - time.monotonic())  # on schedule
            item.first = item.last = await send(port, item.sender, item.data)
            done += 1
            if fault_task is None and done >= len(messages) // 4:
                fault_task = asyncio.get_running_loop().run_in_executor(None, fault)

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    if fault_task is not None:
        await fault_task
    retry = [m for m in messages.values() if m.first == "4xx"]
    for item in retry:  # once the fault is over, as the sending server's queue would
        item.last = await send(port, item.sender, item.data)


# -- the account ----------------------------------------------------------------------------


@dataclass
class Account:
    layout: str
    fault: str
    sent: int = 0
    first: Counter[str] = field(default_factory=Counter)
    last: Counter[str] = field(default_factory=Counter)
    delivered: int = 0  # distinct messages in the Maildir
    copies: int = 0  # deliveries beyond the first
    lost: int = 0
    unexplained: int = 0
    refused_unrecorded: int = 0
    attempts: int = 0  # sessions the client opened: the messages, and the retries
    records: Counter[str] = field(default_factory=Counter)
    tempfail_reasons: Counter[str] = field(default_factory=Counter)


def records_since(store: Path, since: str) -> list[dict[str, Any]]:
    """The records congvu wrote from ``since`` (ISO UTC) on: those of the run, including
    transactions that ended before the message (a 4xx at MAIL FROM has no Message-ID)."""
    with contextlib.closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT record FROM decisions WHERE time >= ?", (since,)).fetchall()
    return [json.loads(text) for (text,) in rows]


def account(chain: Chain, run: str, messages: dict[str, Sent], fault: str, since: str) -> Account:
    acc = Account(chain.name.removeprefix("Postfix + congvu "), fault, len(messages))
    acc.first = Counter(m.first for m in messages.values())
    acc.last = Counter(m.last for m in messages.values())
    acc.attempts = len(messages) + acc.first["4xx"]
    delivered: Counter[str] = Counter()
    decisions: set[str] = set()
    parser = BytesHeaderParser()
    for raw in chain.postfix.messages():
        headers = parser.parsebytes(raw)
        mid = str(headers.get("Message-ID", ""))
        if f"<{run}." not in mid:
            continue
        delivered[mid] += 1
        found = DECISION.search(raw.split(b"\n\n", 1)[0].replace(b"\n\t", b" "))
        decisions.add(found.group(1).decode() if found else "none")
        if not found:
            acc.unexplained += 1
    assert chain.filter_dir is not None
    records = records_since(chain.filter_dir / "decisions.sqlite", since)
    by_id = {str(r["id"]): r for r in records}
    acc.unexplained += sum(1 for d in decisions if d != "none" and d not in by_id)
    acc.records = Counter(str(r["verdict"]) for r in records)
    acc.tempfail_reasons = Counter(
        reason for r in records if r["verdict"] == "tempfail" for reason in r["reasons"]
    )
    refused_recorded = {
        str(r["headers"]["message_id"]) for r in records if r["verdict"] == "reject"
    }
    for mid, sent in messages.items():
        if "2xx" in (sent.first, sent.last) and delivered[mid] == 0:
            acc.lost += 1
        if sent.last == "5xx" and mid not in refused_recorded:
            acc.refused_unrecorded += 1
    acc.delivered = len(delivered)
    acc.copies = sum(delivered.values()) - len(delivered)
    return acc


def utc_now() -> str:
    """Now, as records write their time (ISO 8601, UTC, milliseconds, Z)."""
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    return now.replace("+00:00", "Z")


def wait_settled(chain: Chain, timeout: float = 60) -> None:
    """Until Postfix's queue is empty (every queued message delivered)."""
    deadline = time.monotonic() + timeout
    conf = str(chain.postfix.conf_dir)
    while time.monotonic() < deadline:
        listing = subprocess.run(
            ["postqueue", "-c", conf, "-j"], capture_output=True, text=True, check=False
        ).stdout
        if not listing.strip():
            return
        subprocess.run(["postqueue", "-c", conf, "-f"], capture_output=True, check=False)
        time.sleep(0.5)


# -- the faults -----------------------------------------------------------------------------


class Congvu:
    """congvu of a chain: killed, stopped and started again as systemd would."""

    def __init__(self, layouts: Layouts, chain: Chain) -> None:
        self.layouts, self.chain = layouts, chain

    def kill(self, sig: int) -> None:
        pid = self.chain.filter_pid
        assert pid is not None
        os.kill(pid, sig)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)  # SIGTERM: it finishes the open sessions first

    def start(self) -> None:
        assert self.chain.filter_dir is not None
        folder = self.chain.filter_dir
        process = self.layouts.start_process(
            self.chain.filter_command, folder, folder / "congvu.log"
        )
        self.chain.filter_pid = process.pid
        text = (folder / "congvu.toml").read_text()
        port = re.search(r'listen = "127\.0\.0\.1:(\d+)"', text)
        assert port is not None
        wait_listening(int(port.group(1)), timeout=60)


def faults(
    layouts: Layouts, chain: Chain, relay: FaultRelay | None
) -> dict[str, Callable[[], None]]:
    congvu = Congvu(layouts, chain)

    def killed(sig: int) -> Callable[[], None]:
        def run() -> None:
            congvu.kill(sig)
            time.sleep(RESTART_AFTER)
            congvu.start()

        return run

    found: dict[str, Callable[[], None]] = {
        "kill -9": killed(signal.SIGKILL),
        "SIGTERM": killed(signal.SIGTERM),
    }
    if relay is not None:
        for name, mode in (
            ("downstream stopped", "stopped"),
            ("downstream refusing", "refusing"),
            ("downstream slow", "slow"),
        ):

            def run(mode: str = mode) -> None:
                relay.set(mode)
                time.sleep(HEAL_AFTER)
                relay.set("ok")

            found[name] = run
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=600, help="messages per fault")
    parser.add_argument(
        "--rate", type=float, default=100, help="messages a second (default 100; 0: no limit)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the folder with the logs")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench: a private Postfix instance must be started as root")
    if shutil.which("postfix") is None:
        sys.exit("bench: postfix not found (Debian package postfix)")

    with workdir(keep=args.keep) as folder:
        layouts = Layouts(folder, "page")
        relay: FaultRelay | None = None
        try:
            print("starting Postfix instances and congvu...", flush=True)
            relay_port = free_port()
            proxy = layouts.proxy(downstream=relay_port)
            relay = FaultRelay(relay_port, layouts.reinjection)
            milter = layouts.milter()
            accounts = []
            for chain, chain_relay in ((proxy, relay), (milter, None)):
                for n, (name, fault) in enumerate(faults(layouts, chain, chain_relay).items()):
                    run = f"{chain.name.split()[-1]}{n}"
                    messages = {}
                    for i in range(args.messages):
                        sender = PERSONAL if i % 5 == 4 else OFFICIAL
                        messages[f"<{run}.{i}@faults.bench>"] = Sent(
                            sender, message(run, i, sender)
                        )
                    started, since = time.monotonic(), utc_now()
                    asyncio.run(load(chain.port, messages, fault, args.rate))
                    wait_settled(chain)
                    acc = account(chain, run, messages, name, since)
                    accounts.append(acc)
                    print(
                        f"  {acc.layout:<7} {name:<20} {time.monotonic() - started:5.0f} s",
                        flush=True,
                    )
            report(accounts, args.messages, args.rate)
        finally:
            if relay is not None:
                relay.close()
            layouts.close()


def report(accounts: list[Account], count: int, rate: float) -> None:
    pace = f"{rate:g} a second" if rate else "as fast as they go"
    print(
        f"\n{count} messages per fault (one in five refused by the policy), {pace}, "
        f"{CONCURRENCY} at a time at most; 4xx sent once more after the fault\n"
    )
    head = (
        f"{'layout':<7} {'fault':<20} {'first: 250/5xx/4xx':>19} {'after retry':>13} "
        f"{'delivered':>9} {'copies':>6} {'lost':>4} {'unexpl.':>7} {'5xx unrec.':>10} "
        f"{'attempts':>8}  records"
    )
    print(head)
    for a in accounts:
        first = f"{a.first['2xx']}/{a.first['5xx']}/{a.first['4xx']}"
        last = f"{a.last['2xx']}/{a.last['5xx']}/{a.last['4xx']}"
        verdicts = ", ".join(f"{v} {n}" for v, n in sorted(a.records.items()))
        if a.tempfail_reasons:
            verdicts += f" ({', '.join(f'{r} {n}' for r, n in a.tempfail_reasons.most_common())})"
        adds_up = sum(a.first.values()) == a.sent and sum(a.last.values()) == a.sent
        print(
            f"{a.layout:<7} {a.fault:<20} {first:>19} {last:>13} {a.delivered:>9} {a.copies:>6} "
            f"{a.lost:>4} {a.unexplained:>7} {a.refused_unrecorded:>10} {a.attempts:>8}  "
            f"{sum(a.records.values())}: {verdicts}" + ("" if adds_up else "  (does not add up)")
        )


if __name__ == "__main__":
    main()
