"""Where a report's figures come from: the store's daily rollups (the default: a province-year
in seconds), or the hash-chained records themselves (``congvu report --from-records``: every
record read again, the auditor's check that the rollups tell the truth). Both give the same
figures: :mod:`.tally` adds records up one way for both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from gateway.record import Record, record_time
from gateway.report.render import RefusalsByWeek
from gateway.report.scoring import Directory, IdleReport, UnitScore, build_report, idle_report
from gateway.report.tally import Mark, Sender, Totals, fold
from policies.schema import VIETNAM_TIME

if TYPE_CHECKING:
    from gateway.directory import Account
    from gateway.store.base import DecisionStore

__all__ = ["RecordFigures", "RollupFigures", "utc_bound"]

Scores = tuple[list[UnitScore], UnitScore]
_FAR = date(9999, 12, 30)


def utc_bound(day: date) -> str:
    """Midnight (Vietnam time) starting ``day``, as the records' UTC time strings."""
    return record_time(datetime.combine(day, datetime.min.time(), tzinfo=VIETNAM_TIME))


class _Figures:
    """What both sources share: the store, its directory and its logins."""

    def __init__(self, store: DecisionStore, accounts: list[Account]) -> None:
        self.store = store
        self.directory = Directory(accounts)
        self._credit: dict[Sender, tuple[Account | None, bool]] = {}

    def credit(self, sender: Sender) -> tuple[Account | None, bool]:
        found = self._credit.get(sender)
        if found is None:
            found = self._credit[sender] = self.directory.credit(sender)
        return found

    def activity(self, first: date | None, last: date) -> list[tuple[str, str, str]]:
        """The mail server's logins seen in the days [first, last] (login, kind, last seen)."""
        start = utc_bound(first) if first is not None else ""
        return self.store.activity_between(start, utc_bound(last + timedelta(days=1)))

    def scores(
        self,
        first: date,
        last: date,
        *,
        unit: str | None = None,
        min_rate: float = 0.0,
        used: set[str] | None = None,
    ) -> Scores:
        """The units' scores for the days [first, last] (one ``unit``'s only, if given);
        ``used`` gets the addresses of the accounts used."""
        totals, marks = self.totals(first, last, unit)
        return build_report(
            totals,
            marks,
            self.directory,
            period_end=last,
            unit=unit,
            min_rate=min_rate,
            activity=self.activity(first, last),
            used=used,
        )

    def totals(self, first: date, last: date, unit: str | None = None) -> tuple[Totals, list[Mark]]:
        """The days' totals and marks (those of ``unit``'s senders at least): what
        :func:`build_report` scores."""
        raise NotImplementedError

    def idle(self, *, until: date | None, now: datetime, days: int, is_official: Any) -> IdleReport:
        """The idle list as of ``now``, from the mail and logins up to the day ``until``
        (everything if None)."""
        return idle_report(
            self.last_seen(until or _FAR),
            self.directory,
            now=now,
            days=days,
            is_official=is_official,
            activity=self.activity(None, until or _FAR),
        )

    def last_seen(self, last: date) -> dict[Sender, str]:
        raise NotImplementedError


class RollupFigures(_Figures):
    """Figures from the store's daily rollups (:mod:`gateway.store.tallies`)."""

    def __init__(self, store: DecisionStore, accounts: list[Account]) -> None:
        super().__init__(store, accounts)
        self.rollups = store.rollups()
        self.senders = self.rollups.senders()

    def totals(self, first: date, last: date, unit: str | None = None) -> tuple[Totals, list[Mark]]:
        wanted = self.senders
        if unit is not None:
            wanted = {
                n: s
                for n, s in self.senders.items()
                if (holder := self.credit(s)[0]) is not None and holder.unit == unit
            }
        totals = self.rollups.totals(
            first.isoformat(), last.isoformat(), wanted, every=unit is None
        )
        credited = {n: s for n, s in wanted.items() if self.credit(s)[0] is not None}
        marks = self.rollups.marks(
            utc_bound(first),
            utc_bound(last + timedelta(days=1)),
            credited,
            [n for n, s in credited.items() if self.credit(s)[1]],
        )
        return totals, marks

    def refusals(self, first: date, last: date) -> RefusalsByWeek:
        """Refusals by reason and week in the days [first, last]."""
        return RefusalsByWeek.of(*self.rollups.refusals(first.isoformat(), last.isoformat()))

    def last_seen(self, last: date) -> dict[Sender, str]:
        """Each sender's latest judged record up to the day ``last``."""
        return self.rollups.last_seen(last.isoformat(), self.senders)


class RecordFigures(_Figures):
    """Figures recomputed from the records themselves, read a page at a time."""

    def __init__(
        self,
        store: DecisionStore,
        accounts: list[Account],
        progress: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__(store, accounts)
        self.progress = progress
        self._totals: dict[tuple[date | None, date], tuple[Totals, list[Mark]]] = {}

    def _records(self, first: date | None, last: date) -> Iterator[Record]:
        start = utc_bound(first) if first is not None else ""
        end = utc_bound(last + timedelta(days=1))
        return (Record.from_dict(r) for r in self.store.iter_records_between(start, end))

    def _fold(self, first: date | None, last: date) -> tuple[Totals, list[Mark]]:
        if (first, last) not in self._totals:  # a report asks for scores, then refusals
            self._totals.clear()
            self._totals[first, last] = fold(
                self._records(first, last),
                keep=lambda s: self.credit(s)[0] is not None,
                progress=self.progress,
            )
        return self._totals[first, last]

    def totals(self, first: date, last: date, unit: str | None = None) -> tuple[Totals, list[Mark]]:
        return self._fold(first, last)

    def refusals(self, first: date, last: date) -> RefusalsByWeek:
        """Refusals by reason and week in the days [first, last]."""
        totals, _ = self._fold(first, last)
        return RefusalsByWeek.of(totals.refusals_by_day, totals.records)

    def last_seen(self, last: date) -> dict[Sender, str]:
        """Each sender's latest judged record up to the day ``last``."""
        totals, _ = self._fold(None, last)
        return totals.last_seen()
