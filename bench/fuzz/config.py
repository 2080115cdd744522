"""What the gateways under fuzz are given: their host name and local domain, the fixed
"now" every message is judged at (so that verdicts do not drift by date), their
configuration, and a DNS stub that answers at once and never uses the network."""

from __future__ import annotations

import hashlib
import ipaddress
from datetime import UTC, datetime
from typing import Any

from gateway.checks.dns import DnsNoData, DnsTempError
from gateway.config import GatewayConfig

HOSTNAME = "gw.lamdong.gov.vn"
LOCAL_DOMAINS = ("lamdong.gov.vn",)
NOW = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)  # judged "now": verdicts do not drift by date


class StubResolver:
    """DNS without a network: NXDOMAIN for most names, fixed answers for a few selectors."""

    async def txt(self, name: str) -> bytes:
        """The TXT record at ``name``; see :class:`gateway.checks.dkim.TxtResolver`."""
        selector = name.partition(".")[0]
        if selector == "key-temp":
            raise DnsTempError(f"{name}: Timeout")
        if selector == "key-bad":
            return b"v=DKIM1; k=rsa; p=" + hashlib.sha256(name.encode()).hexdigest().encode()
        if selector == "key-ok":
            return b"v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
        raise DnsNoData(name)


def fuzz_config(**overrides: Any) -> GatewayConfig:
    """The configuration fuzzed: the golden cases' (tests/data/gateway.toml), no listeners."""
    values: dict[str, Any] = {
        "source": "<fuzz>",
        "hostname": HOSTNAME,
        "local_domains": LOCAL_DOMAINS,
        "trusted_networks": (ipaddress.ip_network("127.0.0.0/8"),),
        "metrics_listen": "",
        "validation_workers": 2,
    }
    values.update(overrides)
    return GatewayConfig(**values)
