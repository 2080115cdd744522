"""Real SMTP on loopback for the tests: an event loop in a thread, a downstream server that
records what it is sent (with knobs for failure injection), and free ports."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Downstream", "LoopThread", "Received", "RecordingHandler", "free_port"]


class LoopThread:
    """An asyncio event loop running in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.run(cancel_all())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes


@dataclass
class RecordingHandler:
    """aiosmtpd handler for the downstream: records messages; knobs inject failures."""

    messages: list[Received] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    refuse_rcpt: dict[str, str] = field(default_factory=dict)
    data_reply: str | None = None
    drop_on_data: bool = False  # after the whole message (before any answer)
    drop_on_rcpt: bool = False
    data_delay: float = 0.0
    reply_delay: float = 0.0  # after the message is taken (queued), before saying so
    quits: int = 0  # sessions ended politely

    async def handle_QUIT(self, server: Any, session: Any, envelope: Any) -> str:
        self.quits += 1
        return "221 2.0.0 Bye"

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        self.commands.append(f"MAIL {address}")
        envelope.mail_from = address
        return "250 2.1.0 Ok"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        self.commands.append(f"RCPT {address}")
        if self.drop_on_rcpt:
            server.transport.close()
            return "421 4.3.0 gone"
        if address in self.refuse_rcpt:
            return self.refuse_rcpt[address]
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_RSET(self, server: Any, session: Any, envelope: Any) -> str:
        self.commands.append("RSET")
        return "250 2.0.0 Ok"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.commands.append("DATA")
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        if self.drop_on_data:
            server.transport.close()
            return "421 4.3.0 gone"
        if self.data_reply:
            return self.data_reply
        self.messages.append(
            Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
        )
        if self.reply_delay:
            await asyncio.sleep(self.reply_delay)
        return "250 2.0.0 Ok: queued as DS1"


@dataclass
class Downstream:
    handler: RecordingHandler
    port: int


def free_port() -> int:
    """A TCP port nothing listens on, below the ephemeral range.

    A port the kernel hands out for binding port 0 comes from the range it also uses for the
    local end of outgoing connections: between this call and the gateway's bind, one of the
    many client or downstream connections of the suite could take it (seen: a worker that
    "could not start"). Ports under ``ip_local_port_range`` are never taken that way.
    """
    import random
    import socket

    low = 32768
    with contextlib.suppress(OSError, ValueError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(200):
        port = random.randrange(max(1024, low - 12000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # pragma: no cover - a crowded machine: any free port
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
