"""The decision counters the admin graphs: by verdict, reason and unit."""

from __future__ import annotations

from typing import Any

from gateway.metrics import Metrics


def record(verdict: str, reasons: list[str], sender: str, authenticated: bool) -> dict[str, Any]:
    return {
        "verdict": verdict,
        "reasons": reasons,
        "headers": {"from": [{"raw": sender, "addresses": [sender], "error": None}]},
        "authenticated": authenticated,
        "processing_ms": 12.0,
    }


def test_decisions_are_counted_per_proven_unit_only() -> None:
    """A forged From names no unit (label "-"): it must not make a unit's graph move."""
    metrics = Metrics()
    metrics.observe(record("accept", [], "vanthu@DiLinh.LamDong.gov.vn", authenticated=True))
    metrics.observe(record("reject", ["document.unsigned"], "a@dilinh.lamdong.gov.vn", True))
    metrics.observe(record("accept", [], "a@dilinh.lamdong.gov.vn", authenticated=False))
    text = metrics.exposition().decode()
    assert 'reason="none",unit="dilinh.lamdong.gov.vn",verdict="accept"} 1.0' in text
    assert 'reason="document.unsigned",unit="dilinh.lamdong.gov.vn",verdict="reject"} 1.0' in text
    assert 'reason="none",unit="-",verdict="accept"} 1.0' in text
    assert "congvu_transaction_seconds_count 3.0" in text
