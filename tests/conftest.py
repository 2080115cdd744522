"""The shared fixtures; what they are made of lives in tests/support/ (smtp.py, gateway.py,
pki.py, dns.py, postfix.py, postgres.py, records.py).

- ``downstream``: a real aiosmtpd server that records what it received (and can refuse a
  recipient or a message, or drop the connection mid-DATA, for failure injection).
- ``start_gateway``: the real gateway (``gateway.server.Gateway``) on a free port.
- ``pki``: the test PKI (tests/support/pki.py), made once per module.
Clients are Python's smtplib: a real SMTP client over TCP.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiosmtpd.smtp import SMTP

from gateway.config import GatewayConfig
from gateway.server import Gateway
from gateway.store import DecisionStore, SqliteStore
from policies import Policy, load_policy, parse_policy
from tests.support.gateway import RunningGateway, assert_records_read_back, make_config
from tests.support.pki import TestPKI, build_pki
from tests.support.postgres import fresh_schema
from tests.support.smtp import Downstream, LoopThread, RecordingHandler


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    """`congvu` commands configure structlog globally; each test starts from the defaults."""
    yield
    structlog.reset_defaults()


@pytest.fixture(scope="module")
def pki() -> TestPKI:
    """Keys, certificates and CRLs of the test PKI, made once for the module."""
    return build_pki()


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


@pytest.fixture
def downstream(loop_thread: LoopThread) -> Iterator[Downstream]:
    """A real aiosmtpd server on loopback that records what it is sent."""
    handler = RecordingHandler()

    async def start() -> asyncio.Server:
        return await loop_thread.loop.create_server(
            lambda: SMTP(
                handler, hostname="downstream.test", decode_data=False, enable_SMTPUTF8=True
            ),
            host="127.0.0.1",
            port=0,
        )

    server = loop_thread.run(start())
    yield Downstream(handler, server.sockets[0].getsockname()[1])

    async def stop() -> None:  # in the loop's own thread: asyncio objects are not thread-safe
        server.close()

    loop_thread.run(stop())


@pytest.fixture
def pg_url() -> Iterator[str]:
    """The PostgreSQL test server, in a schema of its own for this test (see
    :func:`tests.support.postgres.fresh_schema`)."""
    with fresh_schema() as url:
        yield url


@pytest.fixture
def start_gateway(
    loop_thread: LoopThread, tmp_path: Path
) -> Iterator[Callable[..., RunningGateway]]:
    """Start a real gateway: ``start_gateway(config=..., policy=..., store=..., relay=...)``.

    Afterwards every record a gateway wrote to its SQLite store is read back: the record's
    reader and serializer must give the stored text again (the text the chain hash covers).
    """
    started: list[Gateway] = []
    stores: list[Path] = []

    def start(
        config: GatewayConfig | None = None,
        policy: Policy | str | None = None,
        store: DecisionStore | None = None,
        **kwargs: Any,
    ) -> RunningGateway:
        config = config or make_config(tmp_path, None)
        if isinstance(policy, str):
            policy = parse_policy(policy, "test-policy.toml")
        if store is None:
            store = SqliteStore(config.store_path)
            stores.append(config.store_path)
        gw = Gateway.from_config(
            config, policy or load_policy(config.policy_file), store=store, **kwargs
        )
        port = loop_thread.run(gw.start(port=0))
        started.append(gw)
        return RunningGateway(gw, port, loop_thread)

    yield start
    for gw in started:
        loop_thread.run(gw.stop(grace=2))
    for path in stores:
        assert_records_read_back(path)
