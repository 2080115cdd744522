"""Scoring the units' use of official mail, from a period's totals and the directory.

What the district office writes: "152 of 629 accounts used = 24.17%", the list of units not
fulfilling their duty (with the evidence), and the mailboxes unused for 90 days. The records
reach here added up by sender (:mod:`.tally`: from the store's rollups, or folded from the
records); here each sender is credited to an account of today's directory
(:meth:`Directory.credit`). Nothing here touches the SMTP path. Rendering is :mod:`.render`.

A record is credited to an account by the MTA login, by the sender's official address (From,
else the envelope sender) when the gateway authenticated it, or by a personal address an
officer is known to use when its provider's DKIM signature passed. Only judged transactions
(accepted or refused) count as "sent".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from gateway.directory import Account
from gateway.record import record_time
from gateway.report.tally import JUDGED, Mark, Sender, Tally, Totals

__all__ = [
    "COUNTS",
    "CRITERIA",
    "AccountUse",
    "Directory",
    "IdleReport",
    "ReviewRow",
    "UnitScore",
    "account_use",
    "build_report",
    "idle_report",
    "rate",
    "review",
    "total_of",
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


class Directory:
    """The account directory, indexed the ways a sender is credited."""

    def __init__(self, accounts: list[Account]) -> None:
        self.accounts = accounts
        self.by_address = {a.address: a for a in accounts}
        self.by_personal = {p: a for a in accounts for p in a.personal_addresses}
        self.local_parts = by_local_part(accounts)

    def holder(self, login: str) -> Account | None:
        """The account a login names: its address, or its local part when that names one
        account only (SASL at the MTA, or a login the mail server logged)."""
        return self.by_address.get(login) or self.local_parts.get(login)

    def credit(self, sender: Sender) -> tuple[Account | None, bool]:
        """The account credited with ``sender``'s records, and whether through a personal
        address.

        Only proven senders are credited: first the account that logged in at the MTA (an
        officer's own sending through the milter: the login is the account's address, or its
        local part when that names one account only); else an official address when the
        gateway authenticated the sender (trusted network, or aligned DKIM), or a known
        personal address when that provider's DKIM signature passed. A forged From credits
        (or blames) no one.
        """
        holder = self.holder(sender.login) if sender.login else None
        if holder is not None:
            return holder, False
        if sender.authenticated:
            for address in sender.candidates:
                if address in self.by_address:
                    return self.by_address[address], False
        for address in sender.proven:
            if address in self.by_personal:
                return self.by_personal[address], True
        return None, False


def by_local_part(accounts: Iterable[Account]) -> dict[str, Account | None]:
    """Accounts by the local part of their address, for servers whose logins are bare user
    names; None where several accounts share one (such a login credits no one)."""
    index: dict[str, Account | None] = {}
    for account in accounts:
        local = account.address.rpartition("@")[0]
        index[local] = None if local in index else account
    return index


def _add_sent(figures: UnitScore | AccountUse, verdict: str, tally: Tally, personal: bool) -> None:
    """Count a judged tally as sent mail (a unit's, or an account's): ``personal``, credited
    through a personal address (then all of it was sent from a personal provider)."""
    figures.messages_sent += tally.records
    figures.documents_signed += tally.signed
    figures.documents_unsigned += tally.unsigned
    figures.from_personal_providers += tally.records if personal else tally.personal_domain
    if verdict == "accept":
        figures.accepted += tally.records
    else:
        figures.refused += tally.records


def build_report(
    totals: Totals,
    marks: Iterable[Mark],
    directory: Directory,
    *,
    period_end: date,
    unit: str | None = None,
    min_rate: float = 0.0,
    activity: Iterable[tuple[str, str, str]] = (),
    used: set[str] | None = None,
) -> tuple[list[UnitScore], UnitScore]:
    """Per-unit scores (ranked: non-compliant first) and the district total, from a period's
    :class:`~gateway.report.tally.Totals` and the marks of its records (the evidence).

    Only judged records (accepted or refused) credited to an account count as sent. An
    account is used when such a record is credited to it (not through a personal address),
    or when ``activity`` (login, kind, last seen: the mail server's logins in the period)
    shows its holder logged in; the two kinds of evidence are counted apart. ``used``, if
    given, gets the addresses of the accounts used (of ``unit`` only, if given).
    """
    units: dict[str, UnitScore] = {}
    active: dict[str, set[str]] = {}
    returned_unsigned: dict[str, int] = {}

    def score_of(account: Account) -> UnitScore:
        return units.setdefault(account.unit, UnitScore(account.unit))

    for issued in directory.accounts:
        if issued.issued <= period_end:
            score_of(issued).accounts_issued += 1
    for rcpt, count in totals.registrations.items():
        registered = directory.by_address.get(rcpt)  # counted against the registering unit
        if registered is not None:
            score_of(registered).advisories += count
    credited: dict[Sender, tuple[Account, bool]] = {}
    for sender, by_verdict in totals.tallies.items():
        account, personal = directory.credit(sender)
        judged = [(v, t) for v, t in by_verdict.items() if v in JUDGED]
        if account is None or not judged:
            continue  # inbound mail, or a sender nobody proved: it scores no unit
        credited[sender] = (account, personal)
        score = score_of(account)
        if not personal and account.issued <= period_end:
            active.setdefault(account.unit, set()).add(account.address)
        for verdict, tally in judged:
            _add_sent(score, verdict, tally, personal)
            score.documents_exempted += tally.exempted
            score.advisories += tally.contact_advisories
            if verdict != "accept" and tally.returned_unsigned:
                returned_unsigned[account.unit] = (
                    returned_unsigned.get(account.unit, 0) + tally.returned_unsigned
                )
        for reason, count in sorted(totals.reasons.get(sender, {}).items()):
            score.refused_by_reason[reason] = score.refused_by_reason.get(reason, 0) + count
    _add_evidence(marks, credited, units)
    logged: dict[str, set[str]] = {}
    for login, _kind, _last in activity:
        holder = directory.holder(login)
        if holder is not None and holder.issued <= period_end:
            logged.setdefault(holder.unit, set()).add(holder.address)
            score_of(holder)
    if used is not None:  # of the units shown
        used.update(*(a for u, a in [*active.items(), *logged.items()] if unit in (None, u)))
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
    return ranked, total_of(ranked)


def total_of(scores: Iterable[UnitScore]) -> UnitScore:
    """The total line of the units ``scores`` (the units a report shows)."""
    total = UnitScore("TỔNG CỘNG / TOTAL")
    for score in scores:
        for key in COUNTS:
            setattr(total, key, getattr(total, key) + getattr(score, key))
        for reason, count in score.refused_by_reason.items():
            total.refused_by_reason[reason] = total.refused_by_reason.get(reason, 0) + count
    total.usage_rate = rate(total.accounts_active, total.accounts_issued)
    return total


@dataclass
class AccountUse:
    """One account's mail in a period, credited as :func:`build_report` credits it."""

    address: str
    full_name: str
    role: str
    unit: str
    messages_sent: int = 0  # judged records credited to the account (personal addresses too)
    accepted: int = 0
    refused: int = 0
    documents_signed: int = 0
    documents_unsigned: int = 0
    from_personal_providers: int = 0
    last_mail: str = ""  # the latest such record's time (UTC)
    last_login: str = ""  # the latest login the mail server logged (UTC)
    by_mail: bool = False  # mail credited to it, not through a personal address

    @property
    def used(self) -> bool:
        """Used in the period as the report counts it: its own mail, or a login."""
        return self.by_mail or bool(self.last_login)


def account_use(
    totals: Totals,
    directory: Directory,
    unit: str | None,
    activity: Iterable[tuple[str, str, str]] = (),
) -> list[AccountUse]:
    """Each account of ``unit`` (of every unit if None): what was credited to it in the
    period of ``totals`` (and ``activity``, the logins of that period), by address."""
    rows = {
        a.address: AccountUse(a.address, a.full_name, a.role, a.unit)
        for a in directory.accounts
        if unit in (None, a.unit)
    }
    for sender, by_verdict in totals.tallies.items():
        account, personal = directory.credit(sender)
        row = rows.get(account.address) if account is not None else None
        if row is None:
            continue
        for verdict, tally in by_verdict.items():
            if verdict not in JUDGED:
                continue
            row.by_mail = row.by_mail or not personal
            _add_sent(row, verdict, tally, personal)
            row.last_mail = max(row.last_mail, tally.last_time)
    for login, _kind, last in activity:
        holder = directory.holder(login)
        if holder is not None and holder.address in rows:
            row = rows[holder.address]
            row.last_login = max(row.last_login, last)
    return sorted(rows.values(), key=lambda r: r.address)


def _add_evidence(
    marks: Iterable[Mark],
    credited: dict[Sender, tuple[Account, bool]],
    units: dict[str, UnitScore],
) -> None:
    """The decision ids behind each unit's findings, in the records' order: a refusal that
    returned unsigned documents, then (the same record again, if both) a record sent through
    a personal address or refused (or, in monitor mode, flagged) for a personal provider."""
    last: tuple[str, str] | None = None
    counted_personal = False
    for time, ident, sender, mark in marks:
        if sender not in credited:
            continue
        account, personal = credited[sender]
        if (time, ident) != last:
            last, counted_personal = (time, ident), False
        if mark == "unsigned":
            units[account.unit].evidence.append(ident)
        elif not counted_personal and (mark == "personal_domain" or personal):
            counted_personal = True
            units[account.unit].evidence.append(ident)


@dataclass
class IdleReport:
    """Revocation candidates and mailboxes nobody accounts for."""

    idle: list[dict[str, str]]  # in the directory, not seen for N days
    never_seen: list[dict[str, str]]  # in the directory, never seen at all
    unknown_senders: list[dict[str, str]]  # official addresses seen sending, not in the directory


def idle_report(
    senders_seen: dict[Sender, str],
    directory: Directory,
    *,
    now: datetime,
    days: int,
    is_official: Any,
    activity: Iterable[tuple[str, str, str]] = (),
) -> IdleReport:
    """Accounts with no activity in the last ``days`` days, never seen, or unknown.

    Activity is mail through the gateway (a judged record naming the address: ``senders_seen``
    holds each sender's latest) or a login the mail server logged (``activity``: login,
    kind, last seen); each row says which was last (``seen_by``: ``mail``, or the login's
    kind).
    """
    last_seen: dict[str, str] = {}
    seen_by: dict[str, str] = {}
    accounts = directory.accounts

    def seen(address: str, when: str, how: str) -> None:
        if when > last_seen.get(address, ""):
            last_seen[address] = when
            seen_by[address] = how

    for sender, when in senders_seen.items():
        holder = directory.holder(sender.login) if sender.login else None
        login = [holder.address] if holder is not None else []
        for address in [*sender.candidates, *login]:
            seen(address, when, "mail")
    for login_name, kind, when in activity:
        holder = directory.holder(login_name)
        if holder is not None:
            seen(holder.address, when, kind)
    cutoff = record_time(now - timedelta(days=days))
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
