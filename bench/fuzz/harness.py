"""What the dialogues are played against: two real gateways on 127.0.0.1 (one plain that
trusts no client; one with STARTTLS, XFORWARD from loopback and a trusted network), a real
aiosmtpd downstream that records what it is given or refuses, defers or drops it when the
message asks, and the event loop in a thread they all run in, apart from the client."""

from __future__ import annotations

import asyncio
import ipaddress
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from aiosmtpd.smtp import SMTP
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bench.fuzz.config import HOSTNAME, StubResolver, fuzz_config
from gateway.checks.validation import make_validator
from gateway.config import DownstreamConfig
from gateway.server import Gateway
from gateway.store import SqliteStore
from policies import Policy

T = TypeVar("T")


_FUZZ_MARK = b"X-Fuzz-Downstream: "  # dialogue messages ask the downstream to misbehave


class FuzzDownstream:
    """aiosmtpd handler of the downstream: records, or misbehaves when the message asks."""

    def __init__(self) -> None:
        self.delivered: list[bytes] = []

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        local = address.partition("@")[0].lower()
        if local == "refuse5":
            return "550 5.1.1 <refuse5@lamdong.gov.vn>: Recipient address rejected"
        if local == "refuse4":
            return "450 4.2.1 Mailbox busy"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        data: bytes = envelope.original_content
        if _FUZZ_MARK + b"drop" in data:
            server.transport.close()
            return "421 4.3.0 gone"
        if _FUZZ_MARK + b"reject" in data:
            return "554 5.7.1 Downstream refuses"
        if _FUZZ_MARK + b"defer" in data:
            return "451 4.3.0 Downstream busy"
        if _FUZZ_MARK + b"slow" in data:
            await asyncio.sleep(0.2)
        self.delivered.append(data)
        return "250 2.0.0 Ok: queued"


def _self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOSTNAME)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=2))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "tls.crt", folder / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class _ServerLoop:
    """An event loop in a thread for the gateways and the downstream, apart from the client's
    loop, so that what goes wrong in it is the server's."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.errors: list[dict[str, Any]] = []
        self.loop.set_exception_handler(lambda _loop, context: self.errors.append(context))
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` in the server loop; wait for it from the caller's loop."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def close(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(cancel_all(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()


@dataclass
class _Harness:
    downstream: FuzzDownstream
    gateways: list[Gateway]
    stores: list[SqliteStore]
    ports: list[int]
    servers: list[asyncio.Server]

    async def stop(self) -> None:
        for gateway in self.gateways:
            await gateway.stop(grace=2)
        for server in self.servers:
            server.close()


async def _start(folder: Path, policy: Policy) -> _Harness:
    """The downstream and the two gateways (runs in the server loop)."""
    loop = asyncio.get_running_loop()
    downstream = FuzzDownstream()
    ds_server = await loop.create_server(
        lambda: SMTP(
            downstream, hostname="downstream.fuzz", decode_data=False, enable_SMTPUTF8=True
        ),
        host="127.0.0.1",
        port=0,
    )
    ds_port = ds_server.sockets[0].getsockname()[1]
    cert, key = _self_signed(folder)
    common: dict[str, Any] = {
        "downstream": DownstreamConfig("smtp", host="127.0.0.1", port=ds_port, timeout=10),
        "trusted_networks": (),
        "max_message_size": 256 * 1024,
        "timeout": 60.0,
    }
    configs = [
        fuzz_config(store_path=folder / "plain.sqlite", **common),
        fuzz_config(
            store_path=folder / "tls.sqlite",
            **{
                **common,
                "trusted_networks": (ipaddress.ip_network("10.0.0.0/8"),),
                "xforward_hosts": (ipaddress.ip_network("127.0.0.0/8"),),
                "tls_cert": cert,
                "tls_key": key,
                "max_message_size": 1024 * 1024,
            },
        ),
    ]
    gateways, ports, stores = [], [], []
    for config in configs:
        stores.append(SqliteStore(config.store_path, instance=config.store_path.stem))
        gateway = Gateway.from_config(
            config,
            policy,
            store=stores[-1],
            resolver=StubResolver(),
            validator=make_validator(config, policy, processes=False),
        )
        ports.append(await gateway.start(port=0))
        gateways.append(gateway)
    return _Harness(downstream, gateways, stores, ports, [ds_server])


async def _drain(harness: _Harness) -> None:
    # Let the gateways finish each session (records are written after hang-ups).
    await asyncio.sleep(0.005)
    for gateway in harness.gateways:
        await gateway.handler.drain()
