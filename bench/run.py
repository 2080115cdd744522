"""Benchmark: the gateway against a bare aiosmtpd sink, in the same run, on loopback.

    .venv/bin/python bench/run.py [--messages N] [--concurrency C]

Each scenario sends N messages over C concurrent SMTP sessions (aiosmtplib, the same client
for both targets) first straight into a bare aiosmtpd sink (accept and discard), then through
the gateway (full policy path, recording in SQLite) into an identical sink. It prints msg/s,
p50/p99 latency per message, CPU milliseconds per message of this process, and the ratio of
the gateway's throughput to the bare sink's. Numbers, not pass/fail: it is not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiosmtplib
from aiosmtpd.smtp import SMTP

sys.path[:0] = [str(Path(__file__).resolve().parent.parent)]

from gateway.audit import SqliteStore  # noqa: E402
from gateway.config import DownstreamConfig, GatewayConfig  # noqa: E402
from gateway.logs import configure_logging  # noqa: E402
from gateway.server import Gateway  # noqa: E402
from policies import load_policy  # noqa: E402

OFFICIAL = "a.nguyen@dilinh.lamdong.gov.vn"
CLERK = "vanthu@lamdong.gov.vn"


class Sink:
    """Accepts and discards."""

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        return "250 2.0.0 Ok"


def message(size: int, sender: str = OFFICIAL) -> bytes:
    head = (
        f"From: Nguyen Van A <{sender}>\r\nTo: {CLERK}\r\nSubject: Bao cao\r\n"
        "Message-ID: <bench@test>\r\nDate: Sun, 22 Nov 2026 10:00:00 +0700\r\n\r\n"
    )
    line = "Noi dung van ban bao cao tuan cua don vi, dong " + "x" * 20 + "\r\n"
    body = line * max(1, (size - len(head)) // len(line))
    return (head + body).encode()


async def start_sink() -> tuple[asyncio.Server, int]:
    server = await asyncio.get_running_loop().create_server(
        lambda: SMTP(Sink(), decode_data=False, enable_SMTPUTF8=True), "127.0.0.1", 0
    )
    return server, server.sockets[0].getsockname()[1]


async def load(
    port: int, data: bytes, sender: str, count: int, concurrency: int
) -> dict[str, float]:
    latencies: list[float] = []
    refused = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)

    async def worker() -> None:
        nonlocal refused
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=60)
        while True:
            try:
                queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            started = time.perf_counter()
            if not client.is_connected:
                # The gateway closes sessions after max_errors refusals, like Postfix.
                await client.connect()
            try:
                await client.sendmail(sender, [CLERK], data)
            except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused):
                refused += 1
            except aiosmtplib.SMTPServerDisconnected:
                refused += 1
            latencies.append(time.perf_counter() - started)
        if client.is_connected:
            with contextlib.suppress(aiosmtplib.SMTPException):
                await client.quit()

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    latencies.sort()
    return {
        "msg_s": count / wall,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "cpu_ms": cpu * 1000 / count,
        "refused": refused,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=20)
    args = parser.parse_args()
    configure_logging("error", "-")  # a log line per decision would measure the terminal
    bare, bare_port = await start_sink()
    downstream, downstream_port = await start_sink()
    with tempfile.TemporaryDirectory() as tmp:
        config = GatewayConfig(
            hostname="gw.bench",
            local_domains=("lamdong.gov.vn",),
            trusted_networks=(),
            downstream=DownstreamConfig("smtp", host="127.0.0.1", port=downstream_port),
            store_path=Path(tmp) / "d.sqlite",
            metrics_listen="",
        )
        gateway = Gateway.from_config(
            config, load_policy(), store=SqliteStore(config.store_path, instance="bench")
        )
        gw_port = await gateway.start(port=0)
        scenarios = [
            ("4 KB official mail", message(4096), OFFICIAL),
            ("4 KB refused (gmail sender)", message(4096, "x@gmail.com"), "x@gmail.com"),
            ("145 KB official mail", message(145 * 1024), OFFICIAL),
        ]
        print(f"{args.messages} messages per run, {args.concurrency} sessions; this process's CPU")
        print(
            f"{'scenario':<30} {'target':<8} {'msg/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
            f"{'CPU ms/msg':>10} {'ratio':>6}"
        )
        for name, data, sender in scenarios:
            base = await load(bare_port, data, sender, args.messages, args.concurrency)
            gw = await load(gw_port, data, sender, args.messages, args.concurrency)
            for target, result in (("bare", base), ("gateway", gw)):
                ratio = f"{result['msg_s'] / base['msg_s']:.2f}" if target == "gateway" else ""
                print(
                    f"{name:<30} {target:<8} {result['msg_s']:>8.0f} {result['p50_ms']:>8.1f} "
                    f"{result['p99_ms']:>8.1f} {result['cpu_ms']:>10.2f} {ratio:>6}"
                )
        await gateway.stop(grace=1)
    bare.close()
    downstream.close()


if __name__ == "__main__":
    asyncio.run(main())
