"""Scoring the units' use of official mail, from the decision records and the directory.

What the district office writes: "152 of 629 accounts used = 24.17%", the list of units not
fulfilling their duty (with the evidence), and the mailboxes unused for 90 days. Everything
here reads records, field by field (:class:`gateway.record.Record`); nothing here touches the
SMTP path. Rendering the figures is :mod:`.render`.

A record is attributed to an account by the sender's official address (From, else the
envelope sender) or by a personal address an officer is known to use. Only judged
transactions (accepted or refused) count as "sent".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from gateway.directory import Account
from gateway.record import Record
from policies.identity import proven_by_dkim

__all__ = [
    "COUNTS",
    "CRITERIA",
    "IdleReport",
    "ReviewRow",
    "UnitScore",
    "attribute",
    "build_report",
    "idle_report",
    "rate",
    "review",
]

# The counted fields of a UnitScore: summed into the total, stored as numbers in XLSX.
COUNTS = (
    "accounts_issued",
    "accounts_active",
    "messages_sent",
    "accepted",
    "refused",
    "documents_signed",
    "documents_unsigned",
    "documents_exempted",
    "from_personal_providers",
    "advisories",
    "active_by_mail",
    "active_by_login_only",
    "unsigned_returned",
)


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
    accounts_active: int = 0  # by mail through the gateway, or by a login the server logged
    usage_rate: str = "0.00"
    messages_sent: int = 0
    accepted: int = 0
    refused: int = 0
    refused_by_reason: dict[str, int] = field(default_factory=dict)
    documents_signed: int = 0
    documents_unsigned: int = 0
    documents_exempted: int = 0
    from_personal_providers: int = 0
    advisories: int = 0  # counted signs of misuse (registrations, personal contact addresses)
    non_compliant: list[str] = field(default_factory=list)  # why, if the unit falls short
    evidence: list[str] = field(default_factory=list)  # decision ids behind the findings
    # Added later (last, so that earlier columns keep their places): what made the accounts
    # active, and the unsigned documents returned (the count behind non_compliant's first).
    active_by_mail: int = 0  # a counted record attributed to the account
    active_by_login_only: int = 0  # no record, but a login the mail server logged
    unsigned_returned: int = 0  # unsigned documents in the unit's refused records


def _candidates(record: Record) -> list[str]:
    found = [a.lower() for f in record.headers.from_ for a in f.addresses]
    if record.envelope.mail_from:
        found.append(record.envelope.mail_from.lower())
    return found


def attribute(
    record: Record,
    accounts: dict[str, Account],
    personal: dict[str, Account],
    local_parts: dict[str, Account | None],
) -> tuple[Account | None, bool]:
    """The account that sent ``record`` and whether it was sent from a personal address.

    Only proven senders are credited: first the account that logged in at the MTA (an
    officer's own sending through the milter: the login is the account's address, or its
    local part when that names one account only); else an official address when the gateway
    authenticated the sender (trusted network, or aligned DKIM), or a known personal address
    when that provider's DKIM signature passed. A forged From credits (or blames) no one.
    """
    holder = logged_in(record, accounts, local_parts)
    if holder is not None:
        return holder, False
    if record.authenticated:
        for address in _candidates(record):
            if address in accounts:
                return accounts[address], False
    for address in _candidates(record):
        if address in personal and proven_by_dkim(address.rpartition("@")[2], record.dkim):
            return personal[address], True
    return None, False


def logged_in(
    record: Record, accounts: dict[str, Account], local_parts: dict[str, Account | None]
) -> Account | None:
    """The account whose login (SASL, at the MTA) sent ``record``: the login is its address,
    or its local part when that names one account only; None without a login."""
    login = record.client.login.lower()
    if not login:
        return None
    return _holder_of(login, accounts, local_parts)


def _holder_of(
    login: str, accounts: dict[str, Account], local_parts: dict[str, Account | None]
) -> Account | None:
    """The account a login names: its address, or its local part when that names one
    account only (SASL at the MTA, or a login the mail server logged)."""
    return accounts.get(login) or local_parts.get(login)


def by_local_part(accounts: Iterable[Account]) -> dict[str, Account | None]:
    """Accounts by the local part of their address, for servers whose logins are bare user
    names; None where several accounts share one (such a login credits no one)."""
    index: dict[str, Account | None] = {}
    for account in accounts:
        local = account.address.rpartition("@")[0]
        index[local] = None if local in index else account
    return index


def _documents(record: Record) -> tuple[int, int, int]:
    """(signed, unsigned, exempted) documents in one record: from each document's own fields.

    A record before schema 5 says which documents were exempt only in a note's words (the
    reader takes them from there) and not whether a top-level attachment lay inside a valid
    S/MIME signature: such attachments count as unsigned there.
    """
    signed = unsigned = exempt = 0
    for doc in record.documents():
        if doc.signed:
            signed += 1
        elif doc.exempt:
            exempt += 1
        else:
            unsigned += 1
    return signed, unsigned, exempt


def build_report(
    records: Iterable[Record],
    accounts: list[Account],
    *,
    period_end: date,
    unit: str | None = None,
    min_rate: float = 0.0,
    progress: Callable[[int], None] | None = None,
    every: int = 10_000,
    activity: Iterable[tuple[str, str, str]] = (),
    used: set[str] | None = None,
) -> tuple[list[UnitScore], UnitScore]:
    """Per-unit scores (ranked: non-compliant first) and the district total.

    An account is used when a counted record is attributed to it, or when ``activity``
    (login, kind, last seen: the mail server's logins in the period) shows its holder
    logged in; the two kinds of evidence are counted apart.

    ``progress`` is called with the count of records read every ``every`` records (a long
    run over a year of a province's mail should say it is alive). ``used``, if given, gets
    the addresses of the accounts used.
    """
    by_address = {a.address: a for a in accounts}
    by_personal = {p: a for a in accounts for p in a.personal_addresses}
    local_parts = by_local_part(accounts)
    units: dict[str, UnitScore] = {}
    active: dict[str, set[str]] = {}
    returned_unsigned: dict[str, int] = {}
    for account in accounts:
        if account.issued <= period_end:
            units.setdefault(account.unit, UnitScore(account.unit)).accounts_issued += 1
    for count, record in enumerate(records, start=1):
        if progress is not None and count % every == 0:
            progress(count)
        for finding in record.findings:
            if finding.reason == "advisory.public_service_registration":
                # Counted against the unit whose official mailbox registered.
                for rcpt in record.envelope.recipients:
                    holder = by_address.get(rcpt.address.lower())
                    if holder is not None:
                        units.setdefault(holder.unit, UnitScore(holder.unit)).advisories += 1
        if record.verdict not in ("accept", "reject"):
            continue
        sender, personal = attribute(record, by_address, by_personal, local_parts)
        if sender is None:
            continue  # inbound mail, or a sender nobody proved: it scores no unit
        score = units.setdefault(sender.unit, UnitScore(sender.unit))
        score.messages_sent += 1
        if not personal and sender.issued <= period_end:
            active.setdefault(sender.unit, set()).add(sender.address)
        signed, unsigned, exempted = _documents(record)
        score.documents_signed += signed
        score.documents_unsigned += unsigned
        score.documents_exempted += exempted
        if record.verdict == "accept":
            score.accepted += 1
        else:
            score.refused += 1
            for reason in record.reasons:
                score.refused_by_reason[reason] = score.refused_by_reason.get(reason, 0) + 1
            if unsigned:  # whatever the refusal's first reason, unsigned documents were returned
                returned_unsigned[sender.unit] = returned_unsigned.get(sender.unit, 0) + unsigned
                score.evidence.append(record.id)
        if any(f.reason == "advisory.public_contact_in_body" for f in record.findings):
            score.advisories += 1
        if personal or "sender.personal_domain" in record.reasons + record.monitor_reasons:
            score.from_personal_providers += 1
            score.evidence.append(record.id)
    logged: dict[str, set[str]] = {}
    for login, _kind, _last in activity:
        holder = _holder_of(login, by_address, local_parts)
        if holder is not None and holder.issued <= period_end:
            logged.setdefault(holder.unit, set()).add(holder.address)
            units.setdefault(holder.unit, UnitScore(holder.unit))
    if used is not None:
        used.update(*active.values(), *logged.values())
    for name, score in units.items():
        score.unsigned_returned = returned_unsigned.get(name, 0)
        by_mail = active.get(name, set())
        score.active_by_mail = len(by_mail)
        score.active_by_login_only = len(logged.get(name, set()) - by_mail)
        score.accounts_active = score.active_by_mail + score.active_by_login_only
        score.usage_rate = rate(score.accounts_active, score.accounts_issued)
        if returned_unsigned.get(name):
            score.non_compliant.append(
                f"{returned_unsigned[name]} văn bản không ký số bị trả về "
                "/ unsigned documents returned"
            )
        exact = 100 * score.accounts_active / score.accounts_issued if score.accounts_issued else 0
        if score.accounts_issued and exact < min_rate:  # compared before rounding
            score.non_compliant.append(
                f"tỉ lệ sử dụng {score.usage_rate}% < {min_rate:g}% / usage below threshold"
            )
    ranked = sorted(
        units.values(),
        key=lambda s: (not s.non_compliant, -len(s.non_compliant), float(s.usage_rate), s.unit),
    )
    if unit is not None:
        ranked = [s for s in ranked if s.unit == unit]
    total = UnitScore("TỔNG CỘNG / TOTAL")  # of the units shown
    for score in ranked:
        for key in COUNTS:
            setattr(total, key, getattr(total, key) + getattr(score, key))
        for reason, count in score.refused_by_reason.items():
            total.refused_by_reason[reason] = total.refused_by_reason.get(reason, 0) + count
    total.usage_rate = rate(total.accounts_active, total.accounts_issued)
    return ranked, total


@dataclass
class IdleReport:
    """Revocation candidates and mailboxes nobody accounts for."""

    idle: list[dict[str, str]]  # in the directory, not seen for N days
    never_seen: list[dict[str, str]]  # in the directory, never seen at all
    unknown_senders: list[dict[str, str]]  # official addresses seen sending, not in the directory


def idle_report(
    records: Iterable[Record],
    accounts: list[Account],
    *,
    now: datetime,
    days: int,
    is_official: Any,
    activity: Iterable[tuple[str, str, str]] = (),
) -> IdleReport:
    """Accounts with no activity in the last ``days`` days, never seen, or unknown.

    Activity is mail through the gateway (a record naming the address) or a login the mail
    server logged (``activity``: login, kind, last seen); each row says which was last
    (``seen_by``: ``mail``, or the login's kind).
    """
    last_seen: dict[str, str] = {}
    seen_by: dict[str, str] = {}
    by_address = {a.address: a for a in accounts}
    local_parts = by_local_part(accounts)

    def seen(address: str, when: str, how: str) -> None:
        if when > last_seen.get(address, ""):
            last_seen[address] = when
            seen_by[address] = how

    for record in records:
        if record.verdict not in ("accept", "reject"):
            continue
        holder = logged_in(record, by_address, local_parts)
        login = [holder.address] if holder is not None else []
        for address in [*_candidates(record), *login]:
            seen(address, record.time, "mail")
    for login_name, kind, when in activity:
        holder = _holder_of(login_name, by_address, local_parts)
        if holder is not None:
            seen(holder.address, when, kind)
    cutoff = (now - timedelta(days=days)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    known = {a.address for a in accounts}
    idle, never = [], []
    for account in accounts:
        last = last_seen.get(account.address)
        row = {
            "address": account.address,
            "full_name": account.full_name,
            "unit": account.unit,
            "role": account.role,
            "last_seen": last or "",
            "seen_by": seen_by.get(account.address, ""),
        }
        if last is None:
            never.append(row)
        elif last < cutoff:
            idle.append(row)
    unknown = [
        {"address": address, "last_seen": when}
        for address, when in sorted(last_seen.items())
        if address not in known and is_official(address.rpartition("@")[2])
    ]
    return IdleReport(idle, never, unknown)


@dataclass
class ReviewRow:
    """One unit in the emulation review (bình xét thi đua): the directives' criteria, each
    met or not, and the unit's rank."""

    rank: int
    unit: str
    usage_rate: str  # (1) accounts used / issued, at least the policy's min_usage_rate
    from_personal_providers: int  # (2) none: official mail only (Phù Mỹ 1; Phú Giáo 1)
    unsigned_returned: int  # (3) none: every document signed (Phù Mỹ 2)
    advisories: int  # (4) none: no registrations, no public contact addresses (Phú Giáo 2)
    idle_accounts: int  # (5) none unused for 90 days at the period's end (Di Linh)
    clerk_used: bool  # (6) the unit's clerk (văn thư) account was used (Vân Canh)
    criteria_met: int = 0
    criteria_missed: list[str] = field(default_factory=list)


CRITERIA = (
    "usage_rate",
    "from_personal_providers",
    "unsigned_returned",
    "advisories",
    "idle_accounts",
    "clerk_used",
)


def review(
    scores: list[UnitScore],
    accounts: list[Account],
    *,
    used: set[str],
    idle: set[str],
    min_rate: float,
) -> list[ReviewRow]:
    """The emulation review of the period's units, ranked: most criteria met first, then
    the higher usage rate, then by name. ``used``: accounts used in the period (mail or
    login); ``idle``: accounts with neither in the 90 days before the period's end."""
    rows = []
    clerks: dict[str, list[str]] = {}
    idle_by_unit: dict[str, int] = {}
    for account in accounts:
        if account.role == "clerk":
            clerks.setdefault(account.unit, []).append(account.address)
        if account.address in idle:
            idle_by_unit[account.unit] = idle_by_unit.get(account.unit, 0) + 1
    for score in scores:
        row = ReviewRow(
            rank=0,
            unit=score.unit,
            usage_rate=score.usage_rate,
            from_personal_providers=score.from_personal_providers,
            unsigned_returned=score.unsigned_returned,
            advisories=score.advisories,
            idle_accounts=idle_by_unit.get(score.unit, 0),
            clerk_used=any(a in used for a in clerks.get(score.unit, [])),
        )
        issued = score.accounts_issued
        met = {
            "usage_rate": bool(issued) and 100 * score.accounts_active / issued >= min_rate,
            "from_personal_providers": row.from_personal_providers == 0,
            "unsigned_returned": row.unsigned_returned == 0,
            "advisories": row.advisories == 0,
            "idle_accounts": row.idle_accounts == 0,
            "clerk_used": row.clerk_used,
        }
        row.criteria_met = sum(met.values())
        row.criteria_missed = [name for name in CRITERIA if not met[name]]
        rows.append(row)
    rows.sort(key=lambda r: (-r.criteria_met, -float(r.usage_rate), r.unit))
    for rank, row in enumerate(rows, start=1):
        row.rank = rank
    return rows
