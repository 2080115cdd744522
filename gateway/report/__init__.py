"""Scoring the units' use of official mail (:mod:`.scoring`) and rendering the office's
report (:mod:`.render`), from the decision records and the account directory."""

from gateway.report.render import (
    RefusalsByWeek,
    render,
    render_html,
    render_trend,
    write_xlsx,
)
from gateway.report.scoring import IdleReport, UnitScore, build_report, idle_report

__all__ = [
    "IdleReport",
    "RefusalsByWeek",
    "UnitScore",
    "build_report",
    "idle_report",
    "render",
    "render_html",
    "render_trend",
    "write_xlsx",
]
