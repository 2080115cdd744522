"""DNS for the checks: an asynchronous TXT resolver (dnspython) with a small cache.

It tells a temporary failure from a missing record, which DKIM needs (``temperror``, answered
4xx, versus ``permerror``) and dkimpy's own lookup does not.

Exceptions::

    DnsTempError      timeout or server failure: try again later
    DnsNoData         the name has no TXT record (NXDOMAIN or no answer)
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.rdatatype
import dns.resolver

from gateway.config import GatewayConfig

__all__ = ["DnsNoData", "DnsResolver", "DnsTempError", "TxtResolver", "make_resolver"]


class DnsTempError(Exception):
    """A lookup failed for now (timeout, SERVFAIL): the answer may differ later."""


class DnsNoData(Exception):
    """The name exists nowhere with a TXT record (NXDOMAIN or no answer): a permanent fact."""


class TxtResolver(Protocol):
    """What DKIM needs from DNS."""

    async def txt(self, name: str) -> bytes:
        """The TXT record at ``name`` (strings joined); raise DnsTempError or DnsNoData."""


class DnsResolver:
    """dnspython's asynchronous resolver with a small TTL-bounded cache.

    ``nameservers`` are ``"IP"`` or ``"IP:PORT"``; empty means the system's resolv.conf.
    Temporary failures are never cached; missing records are, briefly.
    """

    def __init__(
        self,
        nameservers: Sequence[str] = (),
        timeout: float = 5.0,
        cache_size: int = 1024,
        max_ttl: float = 300.0,
        negative_ttl: float = 60.0,
    ) -> None:
        self._resolver = dns.asyncresolver.Resolver(configure=not nameservers)
        if nameservers:
            self._resolver.nameservers = [_nameserver(n) for n in nameservers]
        self._resolver.lifetime = timeout
        self._resolver.timeout = timeout
        self._cache: OrderedDict[str, tuple[float, bytes | None]] = OrderedDict()
        self._cache_size, self._max_ttl, self._negative_ttl = cache_size, max_ttl, negative_ttl

    async def txt(self, name: str) -> bytes:
        """The TXT record at ``name``; see :class:`TxtResolver`."""
        key = name.lower().rstrip(".")
        hit = self._cache.get(key)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            self._cache.move_to_end(key)
            if hit[1] is None:
                raise DnsNoData(name)
            return hit[1]
        try:
            answer = await self._resolver.resolve(key + ".", dns.rdatatype.TXT)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer) as exc:
            self._store(key, None, self._negative_ttl)
            raise DnsNoData(name) from exc
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
            raise DnsTempError(f"{name}: {type(exc).__name__}") from exc
        except dns.exception.DNSException as exc:
            raise DnsTempError(f"{name}: {exc}") from exc
        # A DKIM key record is one TXT record; its strings are concatenated (RFC 6376 3.6.2.2).
        value = b"".join(b"".join(rdata.strings) for rdata in answer)
        ttl = min(float(answer.rrset.ttl if answer.rrset else 0), self._max_ttl)
        self._store(key, value, ttl)
        return value

    def _store(self, key: str, value: bytes | None, ttl: float) -> None:
        if ttl <= 0:
            return
        self._cache[key] = (time.monotonic() + ttl, value)
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)


def _nameserver(spec: str) -> dns.nameserver.Nameserver:
    host, sep, port = spec.rpartition(":")
    if sep and port.isdigit() and host and (":" not in host or host.startswith("[")):
        return dns.nameserver.Do53Nameserver(host.strip("[]"), int(port))
    return dns.nameserver.Do53Nameserver(spec.strip("[]"), 53)


def make_resolver(config: GatewayConfig) -> DnsResolver:
    """The DNS resolver the configuration asks for."""
    return DnsResolver(config.dns_nameservers, timeout=config.dns_timeout)
