"""What the console's pages show, read from the decision store: no HTTP here (that is
:mod:`.app`), so each page's content can be tested, and timed, on its own.

The report's figures come from :class:`~gateway.report.figures.RollupFigures`, as
``congvu report`` reads them (the same scores, the same files to export); they are kept a
minute (``FIGURES_SECONDS``), so paging through units does not add up a period again.
Decisions are read one page at a time (:meth:`DecisionStore.search`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

from gateway.record import Record, RecordError
from gateway.report.figures import RollupFigures, utc_bound
from gateway.report.periods import parse_period
from gateway.report.render import RefusalsByWeek
from gateway.report.scoring import AccountUse, IdleReport, UnitScore
from gateway.report.tally import Sender
from gateway.store.base import DecisionStore, Search
from gateway.store.base import Record as Stored
from gateway.store.chain import ChainLink, ChainProblem
from policies import Policy
from policies.reasons import REASONS
from policies.schema import VIETNAM_TIME

__all__ = ["Console", "Period", "SearchPage", "VerifyStatus", "period_of"]

FIGURES_SECONDS = 60.0  # how long figures read from the rollups are shown again
PAGE = 50  # decisions per page
IDLE_DAYS = 90  # the directives' three months

T = TypeVar("T")


@dataclass(frozen=True)
class Period:
    """The days [first, last] a page shows (Vietnam dates)."""

    first: date
    last: date

    @property
    def start(self) -> str:
        return utc_bound(self.first)

    @property
    def end(self) -> str:
        return utc_bound(self.last + timedelta(days=1))

    def query(self) -> str:
        return f"from={self.first.isoformat()}&to={self.last.isoformat()}"


def period_of(params: dict[str, str], today: date) -> Period:
    """The period a page's query asks for: ``period`` (2026, 2026-11, 2026-Q4), or ``from``
    and ``to``; this month so far when neither (as ``congvu report``). ValueError when bad."""
    if params.get("period"):
        first, last = parse_period(params["period"])
        return Period(first, last)
    first = date.fromisoformat(params["from"]) if params.get("from") else today.replace(day=1)
    last = date.fromisoformat(params["to"]) if params.get("to") else today
    if last < first:
        raise ValueError("the period ends before it starts")
    return Period(first, last)


@dataclass
class VerifyStatus:
    """The last walk of the hash chains (``congvu audit verify``), run in the background."""

    running: bool = False
    finished: str = ""  # UTC time the last walk ended
    problems: list[ChainProblem] = field(default_factory=list)
    error: str = ""


@dataclass
class SearchPage:
    """One page of a search's decisions, newest first, and where the next page starts."""

    records: list[Stored]
    next_cursor: str  # "" when this is the last page


def _cursor(record: Stored) -> str:
    return f"{record['time']}~{record['id']}"


def _parse_cursor(text: str) -> tuple[str, str] | None:
    time_, sep, ident = text.partition("~")
    return (time_, ident) if sep and time_ and ident else None


class Console:
    """The pages' content, read from one store."""

    def __init__(self, store: DecisionStore, policy: Policy) -> None:
        self.store = store
        self.policy = policy
        self.verify_status = VerifyStatus()
        self._lock = threading.RLock()  # one report computed at a time (figures inside)
        self._cache: dict[Any, tuple[float, Any]] = {}

    # -- the report's figures -------------------------------------------------------------

    def _cached(self, key: Any, make: Callable[[], T]) -> T:
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and now - hit[0] < FIGURES_SECONDS:
            return hit[1]  # type: ignore[no-any-return]
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and now - hit[0] < FIGURES_SECONDS:
                return hit[1]  # type: ignore[no-any-return]
            value = make()
            for old in [k for k, (t, _) in self._cache.items() if now - t >= FIGURES_SECONDS]:
                del self._cache[old]
            self._cache[key] = (time.monotonic(), value)
            return value

    def figures(self) -> RollupFigures:
        """The rollups and the directory, as ``congvu report`` reads them."""
        return self._cached("figures", lambda: RollupFigures(self.store, self.store.accounts()))

    def scores(self, period: Period, unit: str | None = None) -> tuple[list[UnitScore], UnitScore]:
        """The units' scores (or ``unit``'s), as ``congvu report`` gives them."""
        return self._cached(
            ("scores", period, unit),
            lambda: self.figures().scores(
                period.first, period.last, unit=unit, min_rate=self.policy.min_usage_rate
            ),
        )

    def refusals(self, period: Period) -> RefusalsByWeek:
        """Refusals by reason per week."""
        return self._cached(
            ("refusals", period), lambda: self.figures().refusals(period.first, period.last)
        )

    def idle(self, today: date) -> IdleReport:
        """The mailboxes idle for :data:`IDLE_DAYS` days, as ``congvu report idle``."""
        return self._cached(
            ("idle", today),
            lambda: self.figures().idle(
                until=None,
                now=datetime.now(UTC),
                days=IDLE_DAYS,
                is_official=self.policy.is_official,
            ),
        )

    def accounts(self, period: Period, unit: str) -> list[AccountUse]:
        """Each of ``unit``'s accounts' use in the period."""
        return self._cached(
            ("accounts", period, unit),
            lambda: self.figures().accounts(period.first, period.last, unit),
        )

    def units(self) -> list[str]:
        """Every unit of the directory."""
        return sorted({a.unit for a in self.figures().directory.accounts})

    def unit_addresses(self, unit: str) -> tuple[str, ...]:
        return tuple(a.address for a in self.figures().directory.accounts if a.unit == unit)

    # -- decisions ------------------------------------------------------------------------

    def unit_of(self, record: Stored) -> str | None:
        """The unit a decision is credited to (as the scores credit it), or None."""
        try:
            sender = Sender.of(Record.from_dict(record))
        except RecordError:
            return None
        account, _ = self.figures().directory.credit(sender)
        return account.unit if account is not None else None

    def search(
        self,
        search: Search,
        cursor: str = "",
        *,
        unit: str | None = None,
        limit: int = PAGE,
    ) -> SearchPage:
        """A page of ``search``'s decisions after ``cursor``; with ``unit``, only those
        credited to that unit."""
        before = _parse_cursor(cursor)
        found: list[Stored] = []
        scanned = 0
        while True:
            batch = self.store.search(search, before, limit + 1)
            for record in batch:
                before = (record["time"], record["id"])
                scanned += 1
                if unit is not None and self.unit_of(record) != unit:
                    continue
                found.append(record)
                if len(found) > limit:
                    return SearchPage(found[:limit], _cursor(found[limit - 1]))
            if len(batch) <= limit:
                return SearchPage(found, "")  # nothing older
            if scanned >= 20 * limit:
                # Few of the decisions read are this user's: show what was found, and go on
                # from the last one read (the page stays quick).
                assert before is not None
                return SearchPage(found, f"{before[0]}~{before[1]}")

    def decision(self, decision_id: str) -> tuple[Stored, ChainLink | None] | None:
        """A decision and its place in the chain."""
        record = self.store.get(decision_id)
        if record is None:
            return None
        return record, self.store.chain_link(record["id"])

    def explain(self, code: str) -> dict[str, str]:
        """What the officer's notice said of a reason code."""
        reason = REASONS.get(code)
        if reason is None:
            return {"code": code}
        return {
            "code": code,
            "explain_vi": reason.explain_vi,
            "explain_en": reason.explain_en,
            "fix_vi": reason.fix_vi,
            "fix_en": reason.fix_en,
            "directive": self.policy.citation(code),
        }

    # -- the chain ------------------------------------------------------------------------

    def verify(self, *, wait: bool = False) -> None:
        """Walk every chain again, in the background (unless one walk is under way)."""
        with self._lock:
            if self.verify_status.running:
                return
            self.verify_status.running = True

        def walk() -> None:
            try:
                problems, error = self.store.verify(), ""
            except Exception as exc:  # noqa: BLE001 - shown on the page, never a traceback
                problems, error = [], str(exc)
            self.verify_status = VerifyStatus(
                False,
                datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
                problems,
                error,
            )

        thread = threading.Thread(target=walk, name="congvu-web-verify", daemon=True)
        thread.start()
        if wait:
            thread.join()


def vietnam_time(stamp: str) -> str:
    """A record's UTC time as the office reads it: Vietnam time, to the second."""
    if not stamp:
        return ""
    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return moment.astimezone(VIETNAM_TIME).strftime("%d/%m/%Y %H:%M:%S")
