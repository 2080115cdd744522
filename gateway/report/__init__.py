"""Scoring the units' use of official mail (:mod:`.scoring`) and rendering the office's
report (:mod:`.render`), from the decision records and the account directory."""

from gateway.report.render import (
    RefusalsByWeek,
    render,
    render_html,
    render_review,
    render_trend,
    write_xlsx,
)
from gateway.report.scoring import (
    Directory,
    IdleReport,
    ReviewRow,
    UnitScore,
    build_report,
    idle_report,
    review,
)

__all__ = [
    "Directory",
    "IdleReport",
    "RefusalsByWeek",
    "ReviewRow",
    "UnitScore",
    "build_report",
    "idle_report",
    "render",
    "render_html",
    "render_review",
    "render_trend",
    "review",
    "write_xlsx",
]
