"""Every Prometheus metric the pages name (alert rules, dashboards) is one the gateway serves."""

from __future__ import annotations

import re
from pathlib import Path

from gateway.metrics import Metrics

ROOT = Path(__file__).parents[2]
# A PostgreSQL table, a database name, the web console's session cookie.
NOT_METRICS = {"congvu_meta", "congvu_restore_check", "congvu_session"}


def served() -> set[str]:
    """Metric and sample names as /metrics shows them (counters get _total, histograms
    _bucket/_sum/_count)."""
    names = set()
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
    for family in Metrics().registry.collect():
        names.add(family.name)
        names.update(family.name + suffix for suffix in suffixes.get(family.type, []))
    return names


def test_every_metric_named_in_the_docs_is_served() -> None:
    known = served()
    named = {
        name
        for page in [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]
        for name in re.findall(r"\bcongvu_[a-z_]+", page.read_text("utf-8"))
    }
    assert named - NOT_METRICS - known == set()
    assert "congvu_decisions_total" in named  # the pages do name metrics
