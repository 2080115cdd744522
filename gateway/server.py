"""Running the gateway: build the parts from configuration, listen, reload, shut down.

``Gateway`` wires configuration, policy, relay, store and handler together; ``serve`` runs it
until SIGTERM/SIGINT (stop accepting, let open sessions finish for a grace period, exit) and
reloads the policy on SIGHUP (an invalid policy is refused loudly and the old one kept).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import socket
import ssl
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from gateway.checks.dns import TxtResolver, make_resolver
from gateway.checks.trust import TrustStoreError, trust_for
from gateway.checks.validation import PoolValidator, make_validator
from gateway.config import GatewayConfig
from gateway.judge import Judge
from gateway.logs import get_logger
from gateway.metrics import Metrics, serve_http
from gateway.notices import Notifier
from gateway.relay import DownstreamWatch, Relay, make_relay
from gateway.smtp import GatewayHandler, GatewaySMTP
from gateway.store import AuditLog, DecisionStore, Journal, journal_path, open_store, reconcile
from gateway.workers import take_stop_signals
from policies import ConfigError, Policy, load_policy

if TYPE_CHECKING:
    from gateway.milter import MilterServer

__all__ = [
    "Gateway",
    "ListenError",
    "bind",
    "listen_address",
    "serve",
]

SHUTDOWN_GRACE = 30.0  # seconds open sessions get to finish after SIGTERM


class ListenError(OSError):
    """The listening socket could not be opened (port taken, address not ours, no permission)."""


def listen_address(config: GatewayConfig, port: int | None = None) -> str:
    """``HOST:PORT`` (``[IPv6]:PORT``) of the SMTP listener, ``port`` replacing the configured."""
    host = config.listen_host
    port = config.listen_port if port is None else port
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind(address: str, *, reuse_port: bool = False, backlog: int = 100) -> socket.socket:
    """A listening TCP socket on ``HOST:PORT`` (``[IPv6]:PORT``), or :class:`ListenError`.

    ``congvu serve`` binds its ports before anything else (the store, the validation pool),
    so that a port already taken is one clear error, with nothing created on the way.
    ``reuse_port``: worker processes share one port (``SO_REUSEPORT``); a bind without it
    fails while anyone, another gateway included, holds the port.
    """
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        family, kind, proto, _, where = socket.getaddrinfo(
            host, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(where)
            sock.listen(backlog)
        except OSError:
            sock.close()
            raise
    except OSError as exc:
        raise ListenError(f"cannot listen on {address}: {exc.strerror or exc}") from exc
    sock.setblocking(False)
    return sock


def _tls_context(config: GatewayConfig) -> ssl.SSLContext | None:
    if config.tls_cert is None or config.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.tls_cert, config.tls_key)
    return context


@dataclass
class Gateway:
    """The assembled gateway; ``start`` listens, ``stop`` closes."""

    config: GatewayConfig
    policy: Policy
    store: DecisionStore
    relay: Relay
    validator: PoolValidator
    resolver: TxtResolver

    @classmethod
    def from_config(
        cls,
        config: GatewayConfig,
        policy: Policy | None = None,
        *,
        store: DecisionStore | None = None,
        relay: Relay | None = None,
        resolver: TxtResolver | None = None,
        validator: PoolValidator | None = None,
    ) -> Gateway:
        """Build every part from ``config``; parts passed in replace the configured ones."""
        policy = policy or load_policy(config.policy_file)
        return cls(
            config,
            policy,
            store or open_store(config),
            relay or make_relay(config.downstream),
            validator or make_validator(config, policy),
            resolver or make_resolver(config),
        )

    def __post_init__(self) -> None:
        self.judge = Judge(
            self.config, self.policy, validator=self.validator, resolver=self.resolver
        )
        self.metrics = Metrics()
        # What a previous run handed downstream but could not record (killed in between)
        # is recorded now, before any new mail: see gateway.store.journal.
        journal = journal_path(self.config)
        reconcile(journal, self.store)
        self.journal = Journal(journal)
        self.handler = GatewayHandler(
            self.judge,
            self.relay,
            AuditLog(self.store, self.metrics),
            Notifier(
                make_relay(self.config.notice_relay) if self.config.notice_relay else self.relay,
                self.config.hostname,
            ),
            self.metrics,
            journal=self.journal,
        )
        self.metrics.watch(
            sessions=lambda: len(self.handler.protocols),
            hits=lambda: self.validator.hits,
            misses=lambda: self.validator.misses,
        )
        self._http: asyncio.Server | None = None
        self._stopping = False
        self.tls = _tls_context(self.config)
        self._server: asyncio.Server | None = None
        self._milter: asyncio.Server | None = None
        self.milter: MilterServer | None = None
        self.downstream = DownstreamWatch(self.config.downstream)
        self.log = get_logger()

    def _protocol(self) -> GatewaySMTP:
        return GatewaySMTP(
            self.handler,
            hostname=self.config.hostname,
            ident="congvu-gateway",
            data_size_limit=self.config.max_message_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            tls_context=self.tls,
            require_starttls=False,
            timeout=self.config.timeout,
            # No AUTH: aiosmtpd would advertise LOGIN and PLAIN after STARTTLS with nothing
            # behind them. The gateway relays by address (trusted_networks), not by login.
            auth_exclude_mechanism=["LOGIN", "PLAIN"],
        )

    def health(self) -> dict[str, object]:
        """What /health says: accepting mail or not, the downstream, sessions, policy in force.

        ``ok``; ``degraded`` while the downstream does not answer (every message would get
        451); ``stopping``. Anything but ``ok`` is HTTP 503, which load balancers understand.
        """
        status = "ok" if self.downstream.problem is None else "degraded"
        return {
            "status": "stopping"
            if self._stopping or (self._server is None and self._milter is None)
            else status,
            "downstream": self.downstream.health(),
            "sessions": len(self.handler.protocols),
            "policy_sha256": self.policy.sha256,
            "trust_store": self.validator.trust.version,
        }

    async def start_http(
        self, port: int | None = None, *, sock: socket.socket | None = None
    ) -> int | None:
        """Serve /metrics and /health if configured; return the port (``port`` 0: any;
        ``sock``: a socket :func:`bind` made)."""
        if not self.config.metrics_listen:
            return None
        host, _, configured = self.config.metrics_listen.rpartition(":")
        try:
            self._http = await serve_http(
                host.strip("[]"),
                int(configured) if port is None else port,
                self.metrics.exposition,
                self.health,
                sock=sock,
            )
        except OSError as exc:
            raise ListenError(
                f"cannot serve metrics on {self.config.metrics_listen}: {exc}"
            ) from exc
        bound: int = self._http.sockets[0].getsockname()[1]
        return bound

    async def start(self, port: int | None = None, *, sock: socket.socket | None = None) -> int:
        """Listen (``port`` 0 picks a free one, for tests; ``sock``: a socket :func:`bind`
        made); return the port."""
        loop = asyncio.get_running_loop()
        if sock is None:
            # Worker processes each listen on the same port; the kernel spreads clients.
            sock = bind(
                listen_address(self.config, port), reuse_port=self.config.worker_index is not None
            )
        self._server = await loop.create_server(partial(self._protocol), sock=sock)
        bound: int = self._server.sockets[0].getsockname()[1]
        self.log.info(
            "gateway.started",
            listen=f"{self.config.listen_host}:{bound}",
            downstream=self.relay.describe(),
            policy=self.policy.source,
            policy_sha256=self.policy.sha256,
            config=self.config.source,
            worker=self.config.worker_index,
            store=self.store.describe(),
            trust_store=self.validator.trust.describe(),
        )
        return bound

    async def start_milter(
        self, port: int | None = None, *, sock: socket.socket | None = None
    ) -> int | None:
        """Serve the milter protocol if configured (``[milter] listen``); return the port."""
        if not self.config.milter_listen and sock is None:
            return None
        from gateway.milter import MilterServer  # noqa: PLC0415 - kilter only where a milter runs

        self.milter = MilterServer(
            self.judge, self.handler.audit, self.handler.notifier, self.metrics
        )
        if sock is None:
            host, _, configured = self.config.milter_listen.rpartition(":")
            address = f"{host}:{configured if port is None else port}"
            sock = bind(address, reuse_port=self.config.worker_index is not None)
        self._milter = await asyncio.start_server(self.milter.handle, sock=sock)
        bound: int = self._milter.sockets[0].getsockname()[1]
        self.log.info("milter.started", listen=f"{sock.getsockname()[0]}:{bound}")
        return bound

    async def warm_up(self) -> bool:
        """Judge one built-in message before the first client: lazy imports, the public
        suffix list and the parsers' caches load now, not during an officer's transaction
        (they cost the first message tens of milliseconds). Then what is loaded is moved out
        of the garbage collector's sight (``gc.freeze``): a full collection over it stalled
        every session for 50-70 ms at a time. A judgement that raises is logged: the
        installation is broken, and every message would be answered 451."""
        sender = f"postmaster@{self.config.hostname}"
        sample = (
            f"From: <{sender}>\r\nTo: <{sender}>\r\nSubject: warm-up\r\n"
            f"Message-ID: <warm-up@{self.config.hostname}>\r\n\r\nwarm-up\r\n"
        ).encode()
        judgement = await self.judge.decide(
            sample, mail_from=sender, recipients=(sender,), client_ip="127.0.0.1"
        )
        gc.collect()
        gc.freeze()
        if judgement.decision.errors:
            self.log.error("gateway.self_test_failed", traceback=judgement.decision.errors[0])
            return False
        return True

    def reload_policy(self) -> bool:
        """Re-read the policy and its trust store together; on any error keep both old ones."""
        try:
            policy = load_policy(self.config.policy_file)
            trust = trust_for(policy)
        except (ConfigError, TrustStoreError) as exc:
            self.log.error("policy.reload_refused", error=str(exc), kept=self.policy.sha256)
            return False
        self.validator.replace_trust(trust, allow_hybrid_xrefs=policy.documents.allow_hybrid_xref)
        self.policy = self.judge.policy = policy
        self.log.info(
            "policy.reloaded",
            policy=policy.source,
            policy_sha256=policy.sha256,
            trust_store=trust.version,
        )
        return True

    async def stop(self, grace: float = SHUTDOWN_GRACE) -> None:
        """Drain, then close: no new sessions; idle ones get 421; open transactions may finish.

        Sessions with a transaction open get up to ``grace`` seconds to complete it (each is
        closed with 421 at its next transaction boundary); then every remaining connection is
        closed, in-flight work (delivery and its record) is awaited, and the store closed.
        Python 3.11's ``Server.wait_closed`` does not wait for connections, hence the loop.
        """
        self._stopping = True
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._milter is not None:
            self._milter.close()
            self._milter = None
        if self.milter is not None:
            # The MTA keeps its milter connections open between sessions: give what is under
            # way the grace period, then close the rest (their open transactions are recorded).
            loop = asyncio.get_running_loop()
            deadline = loop.time() + grace
            while self.milter.busy() and loop.time() < deadline:  # noqa: ASYNC110 - polled
                await asyncio.sleep(0.05)
            for session in list(self.milter.sessions.values()):
                session.writer.close()  # its reader ends; what is open is recorded
            await asyncio.gather(*self.milter.sessions, return_exceptions=True)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while True:
            for protocol in list(self.handler.protocols):
                protocol.shut_idle()
            if not self.handler.protocols or loop.time() >= deadline:
                break
            await asyncio.sleep(0.05)
        if self.handler.protocols:
            self.log.warning(
                "gateway.shutdown_forced", grace=grace, sessions=len(self.handler.protocols)
            )
        for protocol in list(self.handler.protocols):
            if protocol.transport is not None:
                protocol.transport.close()
        await asyncio.sleep(0)  # let connection_lost callbacks schedule their clean-ups
        await self.handler.drain()
        await self.relay.close()  # QUIT the downstream connections kept for reuse
        if self.handler.notifier is not None and self.handler.notifier.relay is not self.relay:
            await self.handler.notifier.relay.close()
        if self._http is not None:
            self._http.close()
        self.validator.close()
        self.journal.close()
        self.store.close()
        self.log.info("gateway.stopped")


async def serve(
    gateway: Gateway,
    listener: socket.socket | None = None,
    http_listener: socket.socket | None = None,
    milter_listener: socket.socket | None = None,
) -> None:
    """Run ``gateway`` until SIGTERM or SIGINT; SIGHUP reloads the policy.

    ``listener``, ``http_listener`` and ``milter_listener``: sockets :func:`bind` made before
    the gateway was built (else they are bound here, as configured).
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    take_stop_signals(loop, stop)
    loop.add_signal_handler(signal.SIGHUP, gateway.reload_policy)
    supervised = gateway.config.worker_index is not None  # the supervisor serves /health
    # The downstream is checked once before the first client, beside the self-test, so that
    # /health and the log say from the start whether mail can be delivered.
    await asyncio.gather(gateway.warm_up(), *([] if supervised else [gateway.downstream.check()]))
    if gateway.config.proxy:
        await gateway.start(sock=listener)
    await gateway.start_milter(sock=milter_listener)
    background = []
    if not supervised:
        await gateway.start_http(sock=http_listener)
        background.append(asyncio.create_task(gateway.downstream.run()))
    # Spawn the validation workers now rather than on the first signed document.
    background.append(asyncio.create_task(gateway.validator.warm_up()))
    await stop.wait()
    for task in background:
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(*background)
    await gateway.stop()
