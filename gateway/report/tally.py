"""What each record adds to the scores, kept without the directory: the rollups' unit.

A report must not read every record of a province-year (about 5 million). So each record is
boiled down, as it commits, to an :class:`Entry`: the day (Vietnam time), the evidence of who
may have sent it (:class:`Sender`, never the account: the directory changes, and a report
credits by the directory of the day it runs), its verdict and its counts. The stores add the
entries up per day and sender (:mod:`gateway.store.tallies`); a report reads the sums of its
days (:class:`Totals`) and :mod:`.scoring` credits them to accounts.

:func:`fold` adds up records in memory exactly as the stores do: ``congvu report
--from-records`` recomputes a report from the hash-chained records themselves (the rollups
are not chained), and a test compares both on a generated log.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gateway.record import Record
from policies.identity import proven_by_dkim
from policies.schema import VIETNAM_TIME

__all__ = [
    "JUDGED",
    "MARKS",
    "TALLY_COUNTS",
    "Entry",
    "Mark",
    "Sender",
    "Tally",
    "Totals",
    "entry",
    "fold",
    "vietnam_day",
]

JUDGED = ("accept", "reject")  # the verdicts that count as sent mail
# The reasons the scores count apart from refusals (docs/auditor/reports.md, the figures).
CONTACT = "advisory.public_contact_in_body"  # a public contact address in the body
PERSONAL_DOMAIN = "sender.personal_domain"  # an official sender with a personal-provider address
REGISTRATION = "advisory.public_service_registration"  # an official mailbox registered somewhere
# Marks keep the ids of the records behind a unit's findings (the report's evidence):
# "unsigned", a refusal that returned unsigned documents; "personal_domain", a record a
# personal-provider rule refused (or would have); "proven", a record whose sender may be
# credited through a personal address (then every such record is evidence).
MARKS = ("unsigned", "personal_domain", "proven")


def vietnam_day(time: str) -> str:
    """The Vietnam date (ISO) of a record's UTC time: the office's days, not UTC's."""
    moment = datetime.fromisoformat(time.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(VIETNAM_TIME).date().isoformat()


@dataclass(frozen=True, slots=True)
class Sender:
    """Who may have sent a record, as proven by the record alone (see
    :func:`gateway.report.scoring.attribute` for how it is credited)."""

    login: str = ""  # the SASL login at the MTA, lowercased
    authenticated: bool = False  # the gateway proved the sender internal
    candidates: tuple[str, ...] = ()  # From addresses, then the envelope sender; lowercased
    proven: tuple[str, ...] = ()  # those whose domain has a passing, aligned DKIM signature

    @classmethod
    def of(cls, record: Record) -> Sender:
        found = [a.lower() for f in record.headers.from_ for a in f.addresses]
        if record.envelope.mail_from:
            found.append(record.envelope.mail_from.lower())
        candidates = tuple(dict.fromkeys(found))  # the first of each: order decides credit
        proven = tuple(a for a in candidates if proven_by_dkim(a.rpartition("@")[2], record.dkim))
        return cls(record.client.login.lower(), record.authenticated, candidates, proven)

    def key(self) -> str:
        """The sender as the stores keep it (one row per distinct sender)."""
        return json.dumps(
            [self.login, self.authenticated, self.candidates, self.proven],
            ensure_ascii=False,
            separators=(",", ":"),
        )

    @classmethod
    def from_key(cls, text: str) -> Sender:
        login, authenticated, candidates, proven = json.loads(text)
        return cls(login, authenticated, tuple(candidates), tuple(proven))


# The counted columns of a tally, in the stores' column order.
TALLY_COUNTS = (
    "records",
    "signed",
    "unsigned",
    "exempted",
    "contact_advisories",
    "personal_domain",
    "returned_unsigned",
    "no_reason",
)


@dataclass(slots=True)
class Tally:
    """Records of one sender and verdict added up (a day's, or a period's)."""

    records: int = 0
    signed: int = 0  # documents
    unsigned: int = 0
    exempted: int = 0
    contact_advisories: int = 0  # records with a public contact address in the body
    personal_domain: int = 0  # records a sender.personal_domain rule refused or would have
    returned_unsigned: int = 0  # unsigned documents in refused records
    no_reason: int = 0  # refused records that name no reason
    last_time: str = ""  # the latest record's time

    def add(self, other: Tally) -> None:
        for name in TALLY_COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.last_time = max(self.last_time, other.last_time)

    @classmethod
    def of(cls, counts: Iterable[Any], last_time: str) -> Tally:
        """From the counted columns in :data:`TALLY_COUNTS` order."""
        tally = cls(last_time=last_time)
        for name, value in zip(TALLY_COUNTS, counts, strict=True):
            setattr(tally, name, int(value))
        return tally

    def counts(self) -> tuple[int, ...]:
        return tuple(getattr(self, name) for name in TALLY_COUNTS)


@dataclass(frozen=True, slots=True)
class Entry:
    """What one record adds: to its day's tally, reasons, registrations and marks."""

    id: str
    time: str
    day: str
    sender: Sender
    verdict: str
    tally: Tally
    reasons: tuple[str, ...]  # a refusal's reasons (each counted)
    registrations: tuple[str, ...]  # recipients of a public-service registration, per finding
    marks: tuple[str, ...]  # of MARKS


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


def entry(record: Record) -> Entry:
    """What ``record`` adds to the scores."""
    signed, unsigned, exempted = _documents(record)
    found = {f.reason for f in record.findings}
    refused = record.verdict == "reject"
    personal_domain = PERSONAL_DOMAIN in record.reasons + record.monitor_reasons
    tally = Tally(
        records=1,
        signed=signed,
        unsigned=unsigned,
        exempted=exempted,
        contact_advisories=int(CONTACT in found),
        personal_domain=int(personal_domain),
        returned_unsigned=unsigned if refused else 0,
        no_reason=int(refused and not record.reasons),
        last_time=record.time,
    )
    sender = Sender.of(record)
    registrations = tuple(
        rcpt.address.lower()
        for f in record.findings
        if f.reason == REGISTRATION
        for rcpt in record.envelope.recipients
    )
    marks: tuple[str, ...] = ()
    if record.verdict in JUDGED:
        wanted = (refused and unsigned > 0, personal_domain, bool(sender.proven))
        marks = tuple(mark for mark, on in zip(MARKS, wanted, strict=True) if on)
    return Entry(
        id=record.id,
        time=record.time,
        day=vietnam_day(record.time),
        sender=sender,
        verdict=record.verdict,
        tally=tally,
        reasons=record.reasons if refused else (),
        registrations=registrations,
        marks=marks,
    )


@dataclass
class Totals:
    """A period's entries added up, by sender (what a report reads from a store)."""

    tallies: dict[Sender, dict[str, Tally]] = field(default_factory=dict)  # by verdict
    reasons: dict[Sender, Counter[str]] = field(default_factory=dict)  # refusals' reasons
    registrations: Counter[str] = field(default_factory=Counter)  # by recipient
    refusals_by_day: dict[str, Counter[str]] = field(default_factory=dict)  # "(other)": none

    def add(self, item: Entry) -> None:
        by_verdict = self.tallies.setdefault(item.sender, {})
        by_verdict.setdefault(item.verdict, Tally()).add(item.tally)
        if item.reasons:
            self.reasons.setdefault(item.sender, Counter()).update(item.reasons)
        self.registrations.update(item.registrations)
        if item.verdict == "reject":
            day = self.refusals_by_day.setdefault(item.day, Counter())
            day.update(item.reasons or ("(other)",))

    def last_seen(self) -> dict[Sender, str]:
        """Each sender's latest judged record."""
        return {
            sender: max(t.last_time for v, t in by_verdict.items() if v in JUDGED)
            for sender, by_verdict in self.tallies.items()
            if any(v in JUDGED for v in by_verdict)
        }

    @property
    def records(self) -> int:
        return sum(t.records for by in self.tallies.values() for t in by.values())


# A record behind a finding: (time, id, sender, mark).
Mark = tuple[str, str, Sender, str]


def fold(
    records: Iterable[Record],
    *,
    keep: Callable[[Sender], bool] = lambda _: True,
    progress: Callable[[int], None] | None = None,
    every: int = 10_000,
) -> tuple[Totals, list[Mark]]:
    """``records`` added up as the stores add them up, with the marks of the senders ``keep``
    takes (in the records' order). ``progress`` hears the count read every ``every``."""
    totals, marks = Totals(), list[Mark]()
    for count, record in enumerate(records, start=1):
        if progress is not None and count % every == 0:
            progress(count)
        item = entry(record)
        totals.add(item)
        if item.marks and keep(item.sender):
            marks.extend((item.time, item.id, item.sender, mark) for mark in item.marks)
    return totals, marks
