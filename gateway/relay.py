"""Downstream delivery, in step with the client (a before-queue proxy, like Postfix's).

For each client session the gateway holds one downstream session. MAIL FROM and each RCPT TO
are forwarded as the client sends them, so the downstream's verdict on each recipient reaches
the client; the message is sent at DATA and the client hears 250 only after the downstream
said 250. The gateway never queues: if the downstream cannot take the message now, the
client keeps it and retries (4xx).

Exceptions::

    DownstreamError            the downstream cannot be used now (always temporary: 4xx)
      .reason                  "downstream.unavailable" (connect/greeting failed),
                               "downstream.lost" (broke mid-transaction),
                               "downstream.unconfirmed" (no answer to the end of DATA)

A downstream *refusal* (4xx/5xx reply) is not an exception: it is a :class:`DownstreamReply`
passed back to the client as it came.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import mailbox
import os
import time
from collections.abc import Awaitable, Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import aiosmtplib

from gateway.config import DownstreamConfig
from gateway.logs import get_logger
from gateway.message import normalize_line_endings

__all__ = [
    "DownstreamError",
    "DownstreamReply",
    "DownstreamSession",
    "DownstreamWatch",
    "MaildirDownstream",
    "Relay",
    "SmtpDownstream",
    "make_relay",
]

T = TypeVar("T")


class DownstreamError(Exception):
    """The downstream server cannot be used now; ``reason`` is the reason code to answer."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class DownstreamReply:
    """A reply from the downstream server, cleaned to one printable ASCII line."""

    code: int
    text: str
    reason: str | None = None  # our reason code when the refusal is ours, not the server's

    @classmethod
    def of(cls, code: int, message: str) -> DownstreamReply:
        """Build from aiosmtplib's code and (possibly multi-line) message."""
        text = " ".join(message.split())
        text = "".join(c for c in text if " " <= c <= "~")[:400]
        return cls(code, text)

    @property
    def ok(self) -> bool:
        """True for a 2xx reply."""
        return 200 <= self.code < 300


class DownstreamSession(Protocol):
    """One client session's view of the downstream: an SMTP transaction at a time."""

    async def mail(
        self,
        sender: str,
        *,
        size: int | None,
        smtputf8: bool,
        about: Mapping[str, str] | None = None,
    ) -> DownstreamReply:
        """Start a transaction (connecting first if needed)."""

    async def rcpt(self, address: str) -> DownstreamReply:
        """Add a recipient."""

    async def data(self, message: bytes) -> DownstreamReply:
        """Send the message; the transaction ends either way."""

    async def rset(self) -> None:
        """Abandon the current transaction; on any doubt, drop the connection instead."""

    async def close(self) -> None:
        """End the session."""


class Relay(Protocol):
    """A downstream target that opens sessions."""

    def session(self) -> DownstreamSession:
        """A new downstream session for one client session."""

    def describe(self) -> str:
        """The target, for logs."""

    async def close(self) -> None:
        """Close the connections kept for reuse (at shutdown)."""


REUSE_TIME_LIMIT = 300.0  # a cached connection older than this is not used again (Postfix's)
CACHE_SIZE = 64  # idle connections kept, at most


class ConnectionCache:
    """Idle downstream connections, kept a short while for the next client session (as
    Postfix's SMTP client caches connections): a new client then costs no TCP handshake,
    greeting and EHLO downstream. Only a connection with no transaction open is kept, the
    freshest is used first, and one that idled past ``idle_time`` or is older than
    :data:`REUSE_TIME_LIMIT` is closed with QUIT.
    """

    def __init__(self, idle_time: float) -> None:
        self.idle_time = idle_time
        self._idle: list[tuple[float, float, aiosmtplib.SMTP]] = []  # (opened, parked, client)
        self._sweep: asyncio.TimerHandle | None = None
        self._closing: set[asyncio.Task[None]] = set()

    def take(self) -> tuple[aiosmtplib.SMTP, float] | None:
        """A connected idle connection and when it was opened, or None."""
        now = time.monotonic()
        while self._idle:
            opened, parked, client = self._idle.pop()
            if self._usable(parked, client, now):
                return client, opened
            self._quit(client)
        return None

    def _usable(self, parked: float, client: aiosmtplib.SMTP, now: float) -> bool:
        """Still connected, and idle for less than ``idle_time``."""
        return client.is_connected and now - parked < self.idle_time

    def give(self, client: aiosmtplib.SMTP, opened: float) -> bool:
        """Keep ``client`` (with no transaction open) for reuse; False if it cannot be kept."""
        now = time.monotonic()
        if (
            not self.idle_time
            or not client.is_connected
            or now - opened >= REUSE_TIME_LIMIT
            or len(self._idle) >= CACHE_SIZE
        ):
            return False
        self._idle.append((opened, now, client))
        if self._sweep is None:
            self._sweep = asyncio.get_running_loop().call_later(self.idle_time, self._expire)
        return True

    def _expire(self) -> None:
        self._sweep = None
        now = time.monotonic()
        keep = []
        for entry in self._idle:
            if self._usable(entry[1], entry[2], now):
                keep.append(entry)
            else:
                self._quit(entry[2])
        self._idle = keep
        if keep:
            oldest = min(parked for _, parked, _ in keep)
            self._sweep = asyncio.get_running_loop().call_later(
                max(0.01, oldest + self.idle_time - now), self._expire
            )

    def _quit(self, client: aiosmtplib.SMTP) -> None:
        task = asyncio.get_running_loop().create_task(_quit(client))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """QUIT every idle connection."""
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        idle, self._idle = self._idle, []
        for _, _, client in idle:
            self._quit(client)
        await asyncio.gather(*list(self._closing), return_exceptions=True)


async def _quit(client: aiosmtplib.SMTP) -> None:
    """QUIT politely (briefly), then close."""
    if client.is_connected:
        with contextlib.suppress(TimeoutError, aiosmtplib.SMTPException, OSError):
            await client.quit(timeout=5)
    client.close()


class SmtpDownstream:
    """A downstream SMTP session over aiosmtplib (never blocking the event loop)."""

    def __init__(self, config: DownstreamConfig, cache: ConnectionCache | None = None) -> None:
        self.config = config
        self.cache = cache
        self._client: aiosmtplib.SMTP | None = None
        self._opened = 0.0
        self._idle = True  # no transaction open downstream: the connection may be reused
        self._encoding = "ascii"

    async def _connect(self, *, fresh: bool = False) -> aiosmtplib.SMTP:
        """A cached connection if there is one (unless ``fresh``), else a new one."""
        cached = None if fresh or self.cache is None else self.cache.take()
        if cached is not None:
            client, self._opened = cached
            return client
        self._opened = time.monotonic()
        cfg = self.config
        client = aiosmtplib.SMTP(
            hostname=cfg.host,
            port=cfg.port,
            timeout=cfg.timeout,
            local_hostname=cfg.helo or None,
            start_tls={"none": False, "opportunistic": None, "required": True}[cfg.starttls],
            validate_certs=cfg.starttls == "required",
        )
        try:
            await client.connect()
            await client.ehlo()
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
            client.close()
            raise DownstreamError(
                "downstream.unavailable", f"{cfg.describe()}: {type(exc).__name__}: {exc}"
            ) from exc
        return client

    async def mail(
        self,
        sender: str,
        *,
        size: int | None,
        smtputf8: bool,
        about: Mapping[str, str] | None = None,
    ) -> DownstreamReply:
        """Send MAIL FROM (after XFORWARD ``about`` the client, if configured and offered),
        reconnecting once if an idle connection went stale."""
        for attempt in (1, 2):
            if self._client is None or not self._client.is_connected:
                # The second attempt gets a new connection: a cached one may have gone stale.
                self._client = await self._connect(fresh=attempt == 2)
            client = self._client
            options: list[str] = []
            if size and client.supports_extension("size"):
                options.append(f"SIZE={size}")
            if client.supports_extension("8bitmime"):
                options.append("BODY=8BITMIME")
            if smtputf8:
                if not client.supports_extension("smtputf8"):
                    return DownstreamReply(
                        550,
                        "5.6.7 downstream does not support SMTPUTF8",
                        "downstream.smtputf8_unsupported",
                    )
                options.append("SMTPUTF8")
            self._encoding = "utf-8" if smtputf8 else "ascii"
            self._idle = False
            try:
                if about is not None and self.config.xforward:
                    await self._step(self._xforward(client, about))
                response = await self._step(
                    client.mail(sender, options=options, encoding=self._encoding, timeout=None)
                )
            except aiosmtplib.SMTPResponseException as exc:
                self._idle = True  # refused: no transaction was opened
                return DownstreamReply.of(exc.code, exc.message)
            except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, OSError) as exc:
                self._drop()
                if attempt == 2:
                    raise DownstreamError("downstream.lost", f"MAIL FROM: {exc}") from exc
                continue
            return DownstreamReply.of(response.code, response.message)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _xforward(self, client: aiosmtplib.SMTP, about: Mapping[str, str]) -> None:
        """Postfix's XFORWARD: the attributes the downstream offers, xtext-encoded, one line.
        A refusal is logged by the downstream and changes nothing here."""
        offered = set(client.esmtp_extensions.get("xforward", "").upper().split())
        if not offered:
            return
        attributes = [
            f"{name}={_xtext(value)}".encode("ascii")
            for name, value in about.items()
            if name in offered and value
        ]
        if attributes:
            await client.execute_command(b"XFORWARD", *attributes, timeout=None)

    async def rcpt(self, address: str) -> DownstreamReply:
        """Send RCPT TO and return the downstream's reply as it is."""
        client = self._require()
        return await self._command(
            "RCPT TO", self._step(client.rcpt(address, encoding=self._encoding, timeout=None))
        )

    async def data(self, message: bytes) -> DownstreamReply:
        """Send DATA and the message; the reply is the downstream's final word.

        Line ends are made CRLF and lines starting with a dot get another (RFC 5321 4.5.2)
        here, with bytes operations: aiosmtplib's own two regular-expression passes cost more
        than everything else done to a 1.4 MB message.
        """
        client = self._require()
        message = normalize_line_endings(message)
        if not message.endswith(b"\r\n"):
            message += b"\r\n"
        stuffed = (b"." if message.startswith(b".") else b"") + message.replace(b"\r\n.", b"\r\n..")
        return await self._command("DATA", self._send_data(client, stuffed + b".\r\n"))

    async def _send_data(self, client: aiosmtplib.SMTP, stuffed: bytes) -> aiosmtplib.SMTPResponse:
        start = await self._step(client.execute_command(b"DATA", timeout=None))
        if start.code != 354:
            raise aiosmtplib.SMTPDataError(start.code, start.message)
        protocol = client.protocol
        if protocol is None:
            raise aiosmtplib.SMTPServerDisconnected("connection lost before the message")
        protocol.write(stuffed)
        try:
            response = await self._step(protocol.read_response(timeout=None))
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
            # Everything was handed over: the downstream may have queued it (a slow queue, a
            # reply lost). The client retries; the record says that a copy may exist.
            self._drop()
            raise DownstreamError("downstream.unconfirmed", f"end of DATA: {exc}") from exc
        self._idle = True  # the message has its final reply: the transaction is over
        if response.code != 250:
            raise aiosmtplib.SMTPDataError(response.code, response.message)
        return response

    async def _step(self, call: Awaitable[T]) -> T:
        """One exchange with the downstream, within ``timeout`` seconds. (asyncio.timeout
        rather than aiosmtplib's per-command wait_for, which costs an extra pass of the event
        loop for every command; on expiry the connection is dropped just the same.)"""
        async with asyncio.timeout(self.config.timeout):
            return await call

    async def _command(
        self, stage: str, call: Coroutine[Any, Any, aiosmtplib.SMTPResponse]
    ) -> DownstreamReply:
        """Await one command: a 4xx/5xx is a reply to pass back; a broken link is an error."""
        try:
            response = await call
        except aiosmtplib.SMTPResponseException as exc:
            return DownstreamReply.of(exc.code, exc.message)
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
            self._drop()
            raise DownstreamError("downstream.lost", f"{stage}: {exc}") from exc
        return DownstreamReply.of(response.code, response.message)

    async def rset(self) -> None:
        """RSET; if that fails the connection is dropped, which also abandons the transaction."""
        if self._client is None or not self._client.is_connected:
            self._drop()
            return
        try:
            await self._step(self._client.rset(timeout=None))
        except (TimeoutError, aiosmtplib.SMTPException, OSError):
            self._drop()
        else:
            self._idle = True

    async def close(self) -> None:
        """Hand the connection to the cache if it has no transaction open; else QUIT."""
        client, self._client = self._client, None
        if client is None:
            return
        if self._idle and self.cache is not None and self.cache.give(client, self._opened):
            return
        await _quit(client)

    def _require(self) -> aiosmtplib.SMTP:
        if self._client is None or not self._client.is_connected:
            raise DownstreamError("downstream.lost", "no downstream connection")
        return self._client

    def _drop(self) -> None:
        if self._client is not None:
            self._client.close()
        self._client = None


def _xtext(value: str) -> str:
    """RFC 3461 xtext: printable ASCII but "+" and "=" as itself, every other byte +HH (so no
    CR, LF or space can reach the command line)."""
    return "".join(
        chr(b) if 0x21 <= b <= 0x7E and b not in (0x2B, 0x3D) else f"+{b:02X}"
        for b in value.encode("utf-8")
    )


def _maildir(path: Path) -> mailbox.Maildir:
    """The Maildir at ``path``, made with its parent folders if it is not there yet."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return mailbox.Maildir(path, create=True)


class MaildirDownstream:
    """The embedded default: deliver into a local Maildir, one copy per recipient."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._sender = ""
        self._recipients: list[str] = []

    async def mail(
        self,
        sender: str,
        *,
        size: int | None,
        smtputf8: bool,
        about: Mapping[str, str] | None = None,
    ) -> DownstreamReply:
        """Start a transaction."""
        self._sender, self._recipients = sender, []
        return DownstreamReply(250, "2.1.0 Ok")

    async def rcpt(self, address: str) -> DownstreamReply:
        """Every recipient goes to the one Maildir."""
        self._recipients.append(address)
        return DownstreamReply(250, "2.1.5 Ok")

    async def data(self, message: bytes) -> DownstreamReply:
        """Write one file per recipient (with Return-Path and Delivered-To, as an MDA does)."""
        sender, recipients = self._sender, list(self._recipients)
        self._recipients = []
        try:
            keys = await asyncio.to_thread(self._write, sender, recipients, message)
        except OSError as exc:
            raise DownstreamError("downstream.unavailable", f"maildir {self.path}: {exc}") from exc
        return DownstreamReply(250, f"2.0.0 Ok: delivered to maildir as {' '.join(keys)}")

    def _write(self, sender: str, recipients: list[str], message: bytes) -> list[str]:
        box = _maildir(self.path)
        keys = []
        for rcpt in recipients:
            head = f"Return-Path: <{sender}>\r\nDelivered-To: {rcpt}\r\n".encode()
            keys.append(box.add(head + message))
        return keys

    async def rset(self) -> None:
        """Forget the transaction."""
        self._recipients = []

    async def close(self) -> None:
        """Nothing to close."""


class _SmtpRelay:
    def __init__(self, config: DownstreamConfig) -> None:
        self.config = config
        self.cache = ConnectionCache(config.connection_cache)

    def session(self) -> DownstreamSession:
        return SmtpDownstream(self.config, self.cache)

    def describe(self) -> str:
        return self.config.describe()

    async def close(self) -> None:
        await self.cache.close()


class _MaildirRelay:
    def __init__(self, config: DownstreamConfig) -> None:
        self.config = config

    def session(self) -> DownstreamSession:
        return MaildirDownstream(self.config.maildir)

    def describe(self) -> str:
        return self.config.describe()

    async def close(self) -> None:
        pass


def make_relay(config: DownstreamConfig) -> Relay:
    """The relay for a downstream configuration."""
    return _SmtpRelay(config) if config.kind == "smtp" else _MaildirRelay(config)


_PROBE_TIMEOUT = 10.0  # seconds a reachability check may take


async def probe(config: DownstreamConfig) -> str | None:
    """None when the downstream could take mail now (SMTP: it connects and answers EHLO, then
    gets QUIT; Maildir: the folder exists or can be made, and is writable), else why not."""
    if config.kind == "maildir":
        try:  # made as delivery makes it (cur/, new/, tmp/), so the probe changes nothing
            await asyncio.to_thread(_maildir, config.maildir)
        except OSError as exc:
            return f"{config.describe()}: {exc}"
        if not os.access(config.maildir / "tmp", os.W_OK | os.X_OK):
            return f"{config.describe()}: not writable"
        return None
    quick = dataclasses.replace(config, timeout=min(config.timeout, _PROBE_TIMEOUT))
    session = SmtpDownstream(quick)
    try:
        client = await session._connect(fresh=True)
    except DownstreamError as exc:
        return exc.detail
    await _quit(client)
    return None


class DownstreamWatch:
    """Whether the downstream answers, for ``/health`` and the log: checked at start, then
    every ``interval`` seconds (every ``retry`` seconds while it does not answer).

    A downstream that cannot be reached means every message gets 451: the gateway still
    runs (senders retry, nothing is lost), but a load balancer should send mail elsewhere
    and the admin should know, so ``/health`` turns ``degraded`` (HTTP 503) and the log says
    ``downstream.unreachable`` once, then ``downstream.reachable`` when it is back.
    """

    def __init__(
        self, config: DownstreamConfig, *, interval: float = 60.0, retry: float = 10.0
    ) -> None:
        self.config, self.interval, self.retry = config, interval, retry
        self.problem: str | None = None  # None: reachable at the last check (or not checked)
        self.checked = False
        self.log = get_logger()

    async def check(self) -> str | None:
        """Check once now; log a change; return the problem, if any."""
        problem = await probe(self.config)
        if problem and (self.problem is None):
            self.log.warning(
                "downstream.unreachable", downstream=self.config.describe(), error=problem
            )
        elif problem is None and (self.problem is not None or not self.checked):
            self.log.info("downstream.reachable", downstream=self.config.describe())
        self.problem, self.checked = problem, True
        return problem

    async def run(self) -> None:
        """Check until cancelled: now, unless a check was made already (``serve`` makes one
        before the first client), then every ``interval`` (``retry`` while down)."""
        if not self.checked:
            await self.check()
        while True:
            await asyncio.sleep(self.retry if self.problem else self.interval)
            await self.check()

    def health(self) -> str:
        """``ok``, ``unreachable: WHY``, or ``unknown`` before the first check."""
        if not self.checked:
            return "unknown"
        return "ok" if self.problem is None else f"unreachable: {self.problem}"
