"""Scoring the units' use of official mail, from the decision log and the directory.

What the district office writes: "152 of 629 accounts used = 24.17%", the list of units not
fulfilling their duty (with the evidence), and the mailboxes unused for 90 days. Everything
here reads records; nothing here touches the SMTP path.

A record is attributed to an account by the sender's official address (From, else the
envelope sender) or by a personal address an officer is known to use. Only judged
transactions (accepted or refused) count as "sent".
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from gateway.directory import Account

__all__ = ["IdleReport", "UnitScore", "build_report", "idle_report", "render"]

UNKNOWN_UNIT = "(không rõ đơn vị / unknown unit)"


def rate(active: int, issued: int) -> str:
    """A percentage with two decimals, rounded half up as the office writes it (24.17)."""
    if not issued:
        return "0.00"
    value = Decimal(active * 100) / Decimal(issued)
    return str(value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


@dataclass
class UnitScore:
    """One unit's figures for the period (or the district's, for the total)."""

    unit: str
    accounts_issued: int = 0
    accounts_active: int = 0
    usage_rate: str = "0.00"
    messages_sent: int = 0
    accepted: int = 0
    refused: int = 0
    refused_by_reason: dict[str, int] = field(default_factory=dict)
    documents_signed: int = 0
    documents_unsigned: int = 0
    documents_exempted: int = 0
    from_personal_providers: int = 0
    non_compliant: list[str] = field(default_factory=list)  # why, if the unit falls short
    evidence: list[str] = field(default_factory=list)  # decision ids behind the findings


def _candidates(record: dict[str, Any]) -> list[str]:
    found = [a.lower() for f in record["headers"]["from"] for a in f["addresses"]]
    if record["envelope"]["mail_from"]:
        found.append(record["envelope"]["mail_from"].lower())
    return found


def attribute(
    record: dict[str, Any], accounts: dict[str, Account], personal: dict[str, Account]
) -> tuple[Account | None, bool]:
    """The account that sent ``record`` and whether it was sent from a personal address."""
    for address in _candidates(record):
        if address in accounts:
            return accounts[address], False
    for address in _candidates(record):
        if address in personal:
            return personal[address], True
    return None, False


def _documents(record: dict[str, Any]) -> tuple[int, int, int]:
    """(signed, unsigned, exempted) documents in one record."""
    exempted_text = " ".join(f["detail"] for f in record["findings"] if f["outcome"] == "note")
    signed = unsigned = exempted = 0
    docs = [a for a in record["attachments"] if a.get("document")]
    docs += record.get("inner_documents", [])
    for doc in docs:
        if any(s["result"] == "pass" for s in doc.get("signatures", [])) or doc.get(
            "in_signed_smime"
        ):
            signed += 1
        elif f"{doc['filename']} exempt by" in exempted_text:
            exempted += 1
        else:
            unsigned += 1
    return signed, unsigned, exempted


def build_report(
    records: Iterable[dict[str, Any]],
    accounts: list[Account],
    *,
    period_end: date,
    unit: str | None = None,
    min_rate: float = 0.0,
) -> tuple[list[UnitScore], UnitScore]:
    """Per-unit scores (ranked: non-compliant first) and the district total."""
    by_address = {a.address: a for a in accounts}
    by_personal = {p: a for a in accounts for p in a.personal_addresses}
    units: dict[str, UnitScore] = {}
    active: dict[str, set[str]] = {}
    for account in accounts:
        if account.issued <= period_end:
            units.setdefault(account.unit, UnitScore(account.unit)).accounts_issued += 1
    for record in records:
        if record["verdict"] not in ("accept", "reject"):
            continue
        sender, personal = attribute(record, by_address, by_personal)
        name = sender.unit if sender else UNKNOWN_UNIT
        score = units.setdefault(name, UnitScore(name))
        score.messages_sent += 1
        if sender is not None and not personal:
            active.setdefault(name, set()).add(sender.address)
        if record["verdict"] == "accept":
            score.accepted += 1
        else:
            score.refused += 1
            for reason in record["reasons"]:
                score.refused_by_reason[reason] = score.refused_by_reason.get(reason, 0) + 1
            if "document.unsigned" in record["reasons"]:
                score.evidence.append(record["id"])
        if personal or "sender.personal_domain" in record["reasons"] + record["monitor_reasons"]:
            score.from_personal_providers += 1
            score.evidence.append(record["id"])
        signed, unsigned, exempted = _documents(record)
        score.documents_signed += signed
        score.documents_unsigned += unsigned
        score.documents_exempted += exempted
    total = UnitScore("TỔNG CỘNG / TOTAL")
    for name, score in units.items():
        score.accounts_active = len(active.get(name, set()))
        score.usage_rate = rate(score.accounts_active, score.accounts_issued)
        if score.refused_by_reason.get("document.unsigned"):
            score.non_compliant.append(
                f"{score.refused_by_reason['document.unsigned']} văn bản không ký số bị trả về "
                "/ unsigned documents returned"
            )
        if score.accounts_issued and float(score.usage_rate) < min_rate:
            score.non_compliant.append(
                f"tỉ lệ sử dụng {score.usage_rate}% < {min_rate:g}% / usage below threshold"
            )
        for key in (
            "accounts_issued",
            "accounts_active",
            "messages_sent",
            "accepted",
            "refused",
            "documents_signed",
            "documents_unsigned",
            "documents_exempted",
            "from_personal_providers",
        ):
            setattr(total, key, getattr(total, key) + getattr(score, key))
        for reason, count in score.refused_by_reason.items():
            total.refused_by_reason[reason] = total.refused_by_reason.get(reason, 0) + count
    total.usage_rate = rate(total.accounts_active, total.accounts_issued)
    ranked = sorted(
        units.values(),
        key=lambda s: (not s.non_compliant, -len(s.non_compliant), float(s.usage_rate), s.unit),
    )
    if unit is not None:
        ranked = [s for s in ranked if s.unit == unit]
    return ranked, total


@dataclass
class IdleReport:
    """Revocation candidates and mailboxes nobody accounts for."""

    idle: list[dict[str, str]]  # in the directory, not seen for N days
    never_seen: list[dict[str, str]]  # in the directory, never seen at all
    unknown_senders: list[dict[str, str]]  # official addresses seen sending, not in the directory


def idle_report(
    records: Iterable[dict[str, Any]],
    accounts: list[Account],
    *,
    now: datetime,
    days: int,
    is_official: Any,
) -> IdleReport:
    """Accounts with no activity in the last ``days`` days, never seen, or unknown."""
    last_seen: dict[str, str] = {}
    for record in records:
        if record["verdict"] not in ("accept", "reject"):
            continue
        for address in _candidates(record):
            if record["time"] > last_seen.get(address, ""):
                last_seen[address] = record["time"]
    cutoff = (now - timedelta(days=days)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    known = {a.address for a in accounts}
    idle, never = [], []
    for account in accounts:
        seen = last_seen.get(account.address)
        row = {
            "address": account.address,
            "full_name": account.full_name,
            "unit": account.unit,
            "role": account.role,
            "last_seen": seen or "",
        }
        if seen is None:
            never.append(row)
        elif seen < cutoff:
            idle.append(row)
    unknown = [
        {"address": address, "last_seen": seen}
        for address, seen in sorted(last_seen.items())
        if address not in known and is_official(address.rpartition("@")[2])
    ]
    return IdleReport(idle, never, unknown)


def _rows(scores: list[UnitScore], total: UnitScore) -> list[dict[str, Any]]:
    rows = []
    for s in [*scores, total]:
        row = asdict(s)
        row["refused_by_reason"] = "; ".join(
            f"{k}={v}" for k, v in sorted(s.refused_by_reason.items())
        )
        row["non_compliant"] = "; ".join(s.non_compliant)
        row["evidence"] = " ".join(s.evidence[:20])
        rows.append(row)
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
    "non_compliant": "Không hoàn thành nhiệm vụ",
    "evidence": "Mã quyết định (bằng chứng)",
}


def render(scores: list[UnitScore], total: UnitScore, fmt: str) -> str:
    """The report as ``table``, ``csv`` or ``json`` text."""
    rows = _rows(scores, total)
    if fmt == "json":
        return json.dumps({"units": rows[:-1], "total": rows[-1]}, ensure_ascii=False, indent=2)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(HEADINGS), lineterminator="\n")
        writer.writerow(HEADINGS)
        writer.writerows(rows)
        return out.getvalue()
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
