"""The office's report, rendered: a table, CSV or JSON text, an XLSX workbook, an HTML page.

What is rendered is worked out in :mod:`.scoring`; the page's chart of refusals over time
reads the records' verdict, time and reasons.
"""

from __future__ import annotations

import csv
import html
import io
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

from gateway.report.scoring import COUNTS, ReviewRow, UnitScore

__all__ = [
    "HEADINGS",
    "REVIEW_HEADINGS",
    "RefusalsByWeek",
    "refusals_chart",
    "render",
    "render_html",
    "render_review",
    "render_trend",
    "safe_cell",
    "usage_chart",
    "write_xlsx",
]


def safe_cell(value: Any) -> Any:
    """Text that a spreadsheet would run as a formula (=, +, -, @) is kept as text."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@"):
        return "'" + value
    return value


def _rows(scores: list[UnitScore], total: UnitScore) -> list[dict[str, Any]]:
    rows = []
    for s in [*scores, total]:
        row = asdict(s)
        row["refused_by_reason"] = "; ".join(
            f"{k}={v}" for k, v in sorted(s.refused_by_reason.items())
        )
        row["non_compliant"] = "; ".join(s.non_compliant)
        row["evidence"] = " ".join(s.evidence[:20])
        rows.append({k: safe_cell(v) for k, v in row.items()})
    return rows


HEADINGS = {
    "unit": "Đơn vị",
    "accounts_issued": "Tài khoản được cấp",
    "accounts_active": "Tài khoản sử dụng",
    "usage_rate": "Tỉ lệ (%)",
    "messages_sent": "Thư gửi",
    "accepted": "Được nhận",
    "refused": "Bị trả về",
    "refused_by_reason": "Lý do trả về",
    "documents_signed": "Văn bản ký số",
    "documents_unsigned": "Văn bản không ký số",
    "documents_exempted": "Văn bản được miễn",
    "from_personal_providers": "Gửi từ thư cá nhân",
    "advisories": "Cảnh báo (đăng ký dịch vụ, ghi thư cá nhân)",
    "non_compliant": "Không hoàn thành nhiệm vụ",
    "evidence": "Mã quyết định (bằng chứng)",
    "active_by_mail": "Sử dụng: gửi thư",
    "active_by_login_only": "Sử dụng: chỉ đăng nhập",
    "unsigned_returned": "Văn bản không ký số bị trả về",
}


def _csv(headings: dict[str, str], rows: list[dict[str, Any]]) -> str:
    """``rows`` as CSV, under a row of (Vietnamese) headings for the keys of ``headings``."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(headings), lineterminator="\n")
    writer.writerow(headings)
    writer.writerows(rows)
    return out.getvalue()


def render(scores: list[UnitScore], total: UnitScore, fmt: str) -> str:
    """The report as ``table``, ``csv`` or ``json`` text."""
    rows = _rows(scores, total)
    if fmt == "json":
        return json.dumps({"units": rows[:-1], "total": rows[-1]}, ensure_ascii=False, indent=2)
    if fmt == "csv":
        return _csv(HEADINGS, rows)
    lines = [
        f"{'Đơn vị / unit':<34} {'cấp':>5} {'dùng':>5} {'tỉ lệ %':>8} {'gửi':>5} "
        f"{'nhận':>5} {'trả':>5} {'không ký':>8}  không hoàn thành"
    ]
    for r in rows:
        lines.append(
            f"{r['unit'][:34]:<34} {r['accounts_issued']:>5} {r['accounts_active']:>5} "
            f"{r['usage_rate']:>8} {r['messages_sent']:>5} {r['accepted']:>5} {r['refused']:>5} "
            f"{r['documents_unsigned']:>8}  {r['non_compliant']}"
        )
    return "\n".join(lines) + "\n"


def render_trend(rows: list[tuple[str, UnitScore]], fmt: str) -> str:
    """One unit's (or the total's) figures per period, as ``table``, ``csv`` or ``json``."""
    records = [{"period": period, **_rows([], score)[0]} for period, score in rows]
    if fmt == "json":
        return json.dumps(records, ensure_ascii=False, indent=2) + "\n"
    if fmt == "csv":
        return _csv({"period": "Kỳ", **HEADINGS}, records)
    lines = [
        f"{'Kỳ / period':<12} {'cấp':>5} {'dùng':>5} {'tỉ lệ %':>8} {'gửi':>6} {'nhận':>6} "
        f"{'trả':>6} {'không ký':>8}"
    ]
    for r in records:
        lines.append(
            f"{r['period']:<12} {r['accounts_issued']:>5} {r['accounts_active']:>5} "
            f"{r['usage_rate']:>8} {r['messages_sent']:>6} {r['accepted']:>6} "
            f"{r['refused']:>6} {r['documents_unsigned']:>8}"
        )
    return "\n".join(lines) + "\n"


REVIEW_HEADINGS = {
    "rank": "Xếp hạng",
    "unit": "Đơn vị",
    "usage_rate": "(1) Tỉ lệ sử dụng (%)",
    "from_personal_providers": "(2) Gửi từ thư cá nhân",
    "unsigned_returned": "(3) Văn bản không ký số bị trả về",
    "advisories": "(4) Đăng ký dịch vụ, ghi thư cá nhân",
    "idle_accounts": "(5) Hộp thư không dùng 90 ngày",
    "clerk_used": "(6) Hộp thư văn thư được dùng",
    "criteria_met": "Số tiêu chí đạt",
    "criteria_missed": "Tiêu chí không đạt",
}


def render_review(rows: list[ReviewRow], fmt: str) -> str:
    """The emulation review as ``table``, ``csv`` or ``json``."""
    plain = []
    for row in rows:
        item = asdict(row)
        item["criteria_missed"] = " ".join(row.criteria_missed)
        plain.append({k: safe_cell(v) for k, v in item.items()})
    if fmt == "json":
        return json.dumps(plain, ensure_ascii=False, indent=2) + "\n"
    if fmt == "csv":
        return _csv(REVIEW_HEADINGS, plain)
    lines = [
        f"{'hạng':>4} {'Đơn vị / unit':<34} {'(1) %':>7} {'(2)':>4} {'(3)':>4} {'(4)':>4} "
        f"{'(5)':>4} {'(6)':>4} {'đạt':>4}"
    ]
    for r in plain:
        lines.append(
            f"{r['rank']:>4} {r['unit'][:34]:<34} {r['usage_rate']:>7} "
            f"{r['from_personal_providers']:>4} {r['unsigned_returned']:>4} {r['advisories']:>4} "
            f"{r['idle_accounts']:>4} {'có' if r['clerk_used'] else 'không':>4} "
            f"{r['criteria_met']:>2}/6"
        )
    return "\n".join(lines) + "\n"


def write_xlsx(path: Any, scores: list[UnitScore], total: UnitScore, *, title: str) -> None:
    """The report as an Excel workbook for the office: Vietnamese headings, one sheet per
    table (units, refusals by reason, non-compliant units), numbers stored as numbers."""
    from openpyxl import Workbook  # noqa: PLC0415 - only the xlsx format needs it
    from openpyxl.styles import Font  # noqa: PLC0415

    book = Workbook()
    units = book.active
    units.title = "Đơn vị"
    units.append([title])
    units["A1"].font = Font(bold=True, size=13)
    units.append(list(HEADINGS.values()))
    for cell in units[2]:
        cell.font = Font(bold=True)
    for row in _rows(scores, total):
        values: list[Any] = []
        for key in HEADINGS:
            value = row[key]
            if key in COUNTS:
                value = int(value)
            elif key == "usage_rate":
                value = float(value)  # a number, shown with two decimals
            values.append(value)
        units.append(values)
        units.cell(units.max_row, list(HEADINGS).index("usage_rate") + 1).number_format = "0.00"
    units.freeze_panes = "B3"

    reasons = book.create_sheet("Lý do trả về")
    reasons.append(["Đơn vị", "Mã lý do", "Số thư"])
    for score in [*scores, total]:
        for reason, count in sorted(score.refused_by_reason.items()):
            reasons.append([score.unit, reason, count])

    failing = book.create_sheet("Không hoàn thành")
    failing.append(["Đơn vị", "Tỉ lệ (%)", "Không hoàn thành nhiệm vụ", "Mã quyết định"])
    for score in scores:
        if score.non_compliant:
            failing.append(
                [
                    score.unit,
                    float(score.usage_rate),
                    "; ".join(score.non_compliant),
                    " ".join(score.evidence),
                ]
            )
    for sheet in book.worksheets:
        for column in sheet.columns:
            width = max(len(str(c.value or "")) for c in column)
            sheet.column_dimensions[column[0].column_letter].width = min(60, max(10, width + 2))
    book.save(path)


_COLOURS = ("#b00020", "#1565c0", "#2e7d32", "#ef6c00", "#6a1b9a", "#00838f", "#5d4037", "#546e7a")


def usage_chart(scores: list[UnitScore]) -> str:
    """Usage rate per unit as horizontal bars (inline SVG: no script, no network)."""
    row, label_w, bar_w = 26, 260, 360
    height = row * len(scores) + 30
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + bar_w + 70}" '
        f'height="{height}" role="img" aria-label="Tỉ lệ sử dụng theo đơn vị">'
    ]
    for i, s in enumerate(scores):
        y = 10 + i * row
        width = bar_w * float(s.usage_rate) / 100
        colour = "#b00020" if s.non_compliant else "#1565c0"
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 16}" text-anchor="end" font-size="13">'
            f"{html.escape(s.unit[:40])}</text>"
            f'<rect x="{label_w}" y="{y + 3}" width="{width:.1f}" height="18" fill="{colour}"/>'
            f'<text x="{label_w + width + 6:.1f}" y="{y + 16}" font-size="13">'
            f"{s.usage_rate}%</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


@dataclass
class RefusalsByWeek:
    """Refusals by reason per ISO week (of the Vietnam date), for the web page's chart, and
    how many records the period holds."""

    weeks: dict[str, dict[str, int]] = field(default_factory=dict)
    records: int = 0

    @classmethod
    def of(cls, by_day: Mapping[str, Mapping[str, int]], records: int) -> RefusalsByWeek:
        """From refusals per day (ISO date) by reason."""
        weeks: dict[str, dict[str, int]] = {}
        for day, reasons in by_day.items():
            year, week, _ = date.fromisoformat(day).isocalendar()
            bucket = weeks.setdefault(f"{year}-W{week:02d}", {})
            for reason, count in reasons.items():
                bucket[reason] = bucket.get(reason, 0) + count
        return cls(weeks, records)


def refusals_chart(weeks: dict[str, dict[str, int]]) -> str:
    """Refusals by reason per ISO week, as stacked bars with a legend (inline SVG)."""
    if not weeks:
        return "<p>Không có thư bị trả về trong kỳ / no refusals in the period.</p>"
    reasons = sorted({r for bucket in weeks.values() for r in bucket})
    colour = {r: _COLOURS[i % len(_COLOURS)] for i, r in enumerate(reasons)}
    peak = max(sum(b.values()) for b in weeks.values())
    col, chart_h = 46, 200
    # Wide enough for the legend's longest reason code even with a single week.
    width = max(col * len(weeks) + 60, 80 + 8 * max(len(r) for r in reasons))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{chart_h + 50 + 20 * len(reasons)}" role="img" '
        'aria-label="Thư bị trả về theo lý do và tuần">'
    ]
    for i, (label, bucket) in enumerate(sorted(weeks.items())):
        x = 40 + i * col
        base: float = chart_h + 10
        for reason in reasons:
            h = chart_h * bucket.get(reason, 0) / peak
            if h:
                base -= h
                parts.append(
                    f'<rect x="{x}" y="{base:.1f}" width="{col - 10}" height="{h:.1f}" '
                    f'fill="{colour[reason]}"><title>{html.escape(reason)}: '
                    f"{bucket[reason]}</title></rect>"
                )
        parts.append(f'<text x="{x}" y="{chart_h + 26}" font-size="10">{label}</text>')
    for j, reason in enumerate(reasons):
        y = chart_h + 44 + 20 * j
        parts.append(
            f'<rect x="40" y="{y - 11}" width="12" height="12" fill="{colour[reason]}"/>'
            f'<text x="58" y="{y}" font-size="12">{html.escape(reason)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def render_html(
    scores: list[UnitScore], total: UnitScore, refusals: RefusalsByWeek, *, title: str
) -> str:
    """A self-contained HTML report: tables and charts, no script, nothing fetched."""
    rows = _rows(scores, total)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADINGS.values())
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(r[k]))}</td>" for k in HEADINGS) + "</tr>"
        for r in rows
    )
    failing = (
        "".join(
            f"<li><strong>{html.escape(s.unit)}</strong>: {html.escape('; '.join(s.non_compliant))}"
            f" <small>({html.escape(' '.join(s.evidence[:10]))})</small></li>"
            for s in scores
            if s.non_compliant
        )
        or "<li>Không có / none</li>"
    )
    return f"""<!DOCTYPE html>
<html lang="vi"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: Arial, Helvetica, sans-serif; margin: 24px; color: #222 }}
table {{ border-collapse: collapse; font-size: 13px }}
th, td {{ border: 1px solid #ccc; padding: 4px 6px; text-align: left }}
th {{ background: #f0f0f0 }}
tr:last-child td {{ font-weight: bold }}
</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p>Tổng cộng / total: {total.accounts_active}/{total.accounts_issued} tài khoản được sử dụng =
<strong>{total.usage_rate}%</strong>; {total.messages_sent} thư, {total.refused} bị trả về.</p>
<h2>Tỉ lệ sử dụng theo đơn vị / usage rate per unit</h2>
{usage_chart(scores)}
<h2>Thư bị trả về theo lý do / refusals by reason</h2>
{refusals_chart(refusals.weeks)}
<h2>Đơn vị không hoàn thành nhiệm vụ / units not fulfilling their duty</h2>
<ol>{failing}</ol>
<h2>Chi tiết / details</h2>
<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
</body></html>
"""
