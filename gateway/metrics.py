"""Prometheus metrics and a health endpoint for the mail admin, on localhost by default.

``GET /metrics`` is the Prometheus text format; ``GET /health`` answers ``200`` with a small
JSON status while the gateway is accepting mail (``503`` while it shuts down). Each gateway
has its own registry (no module-level state), served by a minimal HTTP responder on the
gateway's own event loop.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["Metrics", "serve_http"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """The gateway's counters, gauges and histograms."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.decisions = Counter(
            "congvu_decisions",
            "Decisions by verdict, reason code (reason 'none' for a clean accept) and unit (the"
            " proven sender's From domain; '-' when the sender is not proven, e.g. inbound).",
            ["verdict", "reason", "unit"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "congvu_transaction_seconds",
            "Time from MAIL FROM to the decision record.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.downstream_errors = Counter(
            "congvu_downstream_errors",
            "Downstream failures (unreachable, lost) by reason code.",
            ["reason"],
            registry=self.registry,
        )
        # "livesum": with worker processes, the sum over the live ones.
        self.sessions = Gauge(
            "congvu_sessions",
            "Open SMTP sessions.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.closed = Counter(
            "congvu_sessions_closed",
            "Sessions the gateway closed itself, by why: sessions (too many), errors, timeout,"
            " early_talker, shutdown.",
            ["why"],
            registry=self.registry,
        )
        self.cache = Gauge(
            "congvu_validation_cache",
            "Signature validations answered from the cache (hits) or done (misses).",
            ["result"],
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self._watched: dict[str, Callable[[], int]] = {}

    def observe(self, record: dict[str, Any]) -> None:
        """Count one decision record."""
        unit = "-"
        senders = (record.get("headers") or {}).get("from") or []
        if record.get("authenticated") and senders and senders[0].get("addresses"):
            # Proven senders only: the label set stays the district's own domains.
            unit = senders[0]["addresses"][0].rpartition("@")[2].lower()
        for reason in record["reasons"] or ["none"]:
            self.decisions.labels(record["verdict"], reason, unit).inc()
        self.latency.observe(record["processing_ms"] / 1000)
        self.refresh()

    def watch(
        self, *, sessions: Callable[[], int], hits: Callable[[], int], misses: Callable[[], int]
    ) -> None:
        """Where the gauges' values come from (read by :meth:`refresh`)."""
        self._watched = {"sessions": sessions, "hit": hits, "miss": misses}

    def refresh(self) -> None:
        """Set the gauges: at each decision, each session change and each scrape (values set
        rather than read at scrape time, so that worker processes can share them)."""
        if self._watched:
            self.sessions.set(self._watched["sessions"]())
            self.cache.labels("hit").set(self._watched["hit"]())
            self.cache.labels("miss").set(self._watched["miss"]())

    def exposition(self) -> bytes:
        """The Prometheus text format."""
        self.refresh()
        return bytes(generate_latest(self.registry))


async def serve_http(
    host: str,
    port: int,
    exposition: Callable[[], bytes],
    health: Callable[[], dict[str, Any]],
    *,
    sock: socket.socket | None = None,
) -> asyncio.Server:
    """Serve ``/metrics`` and ``/health`` (GET only; anything else is 404), on ``host:port``
    or on ``sock``, a socket already bound."""

    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass  # headers: not needed
            parts = request.decode("latin-1").split()
            path = parts[1] if len(parts) >= 2 and parts[0] == "GET" else ""
            if path == "/metrics":
                status, ctype, body = "200 OK", CONTENT_TYPE_LATEST, exposition()
            elif path == "/health":
                state = health()
                status = "200 OK" if state.get("status") == "ok" else "503 Service Unavailable"
                ctype, body = "application/json", json.dumps(state).encode()
            else:
                status, ctype, body = "404 Not Found", "text/plain", b"not found\n"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, ConnectionError, UnicodeError):
            pass
        finally:
            writer.close()

    if sock is not None:
        return await asyncio.start_server(respond, sock=sock)
    return await asyncio.start_server(respond, host, port)
