"""The periods the office reports on: a month, a quarter, a year (Vietnam dates, both ends
included), and a span cut into them for a unit's figures over time."""

from __future__ import annotations

import re
from datetime import date, timedelta

__all__ = ["BY", "parse_period", "split"]

BY = ("month", "quarter", "year")

_PERIOD = re.compile(r"^(?P<year>\d{4})(?:-(?:(?P<month>\d{2})|Q(?P<quarter>[1-4])))?$")


def _month_end(year: int, month: int) -> date:
    following = date(year + month // 12, month % 12 + 1, 1)
    return following - timedelta(days=1)


def parse_period(text: str) -> tuple[date, date]:
    """``2026`` (a year), ``2026-11`` (a month) or ``2026-Q4`` (a quarter): its first and last
    day. ValueError for anything else."""
    match = _PERIOD.match(text.strip().upper())
    if match is None:
        raise ValueError(f"{text!r} is not a period: YYYY, YYYY-MM or YYYY-Qn")
    year = int(match["year"])
    if match["month"]:
        month = int(match["month"])
        if not 1 <= month <= 12:
            raise ValueError(f"{text!r}: no month {month}")
        return date(year, month, 1), _month_end(year, month)
    if match["quarter"]:
        first = 3 * int(match["quarter"]) - 2
        return date(year, first, 1), _month_end(year, first + 2)
    return date(year, 1, 1), date(year, 12, 31)


def _label(day: date, by: str) -> str:
    if by == "month":
        return f"{day:%Y-%m}"
    if by == "quarter":
        return f"{day.year}-Q{(day.month - 1) // 3 + 1}"
    return str(day.year)


def split(start: date, end: date, by: str) -> list[tuple[str, date, date]]:
    """[start, end] cut at month, quarter or year boundaries: (label, first, last day) each;
    the first and last pieces may be partial."""
    pieces = []
    day = start
    while day <= end:
        label = _label(day, by)
        last = parse_period(label)[1]
        pieces.append((label, day, min(last, end)))
        day = last + timedelta(days=1)
    return pieces
