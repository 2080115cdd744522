"""What the console's pages show, read from the decision store: no HTTP here (that is
:mod:`.app`), so each page's content can be tested, and timed, on its own.

The report's figures come from :class:`~gateway.report.figures.RollupFigures`, as
``congvu report`` reads them (the same scores, the same files to export). A period's
figures are read once (:class:`PeriodFigures`: every unit's page of that period is drawn from
them, in memory) and kept; the periods an office looks at most (this month, last month, this
quarter, this year) and the idle list are read again in the background every ``refresh``
seconds, so that their pages never wait on a province-year's sums. Decisions are read one
page at a time (:meth:`DecisionStore.search`).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

from gateway.logs import get_logger
from gateway.record import Record, RecordError
from gateway.report.figures import RollupFigures, utc_bound
from gateway.report.periods import parse_period
from gateway.report.render import RefusalsByWeek
from gateway.report.scoring import (
    AccountUse,
    Directory,
    IdleReport,
    UnitScore,
    account_use,
    build_report,
    total_of,
)
from gateway.report.tally import Mark, Sender, Totals
from gateway.store.base import DecisionStore, Search
from gateway.store.base import Record as Stored
from gateway.store.chain import ChainLink, ChainProblem
from policies import Policy
from policies.reasons import REASONS
from policies.schema import VIETNAM_TIME

__all__ = [
    "Console",
    "Period",
    "PeriodFigures",
    "SearchPage",
    "VerifyStatus",
    "period_of",
    "standard_periods",
]

PAGE = 50  # decisions per page
IDLE_DAYS = 90  # the directives' three months
KEPT_PERIODS = 8  # periods' figures kept at most (the least recently used go first)

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


def standard_periods(today: date) -> dict[str, Period]:
    """The periods kept ready, by their name in :mod:`.i18n`: this month so far (every
    page's default), last month, this quarter and this year so far."""
    this_month = today.replace(day=1)
    last_month = (this_month - timedelta(days=1)).replace(day=1)
    quarter = this_month.replace(month=3 * ((today.month - 1) // 3) + 1)
    return {
        "this_month": Period(this_month, today),
        "last_month": Period(last_month, this_month - timedelta(days=1)),
        "this_quarter": Period(quarter, today),
        "this_year": Period(today.replace(month=1, day=1), today),
    }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class PeriodFigures:
    """A period's totals, marks, logins and refusals, read once: the province's scores and
    every unit's (and its accounts') are worked out from them in memory, exactly as
    ``congvu report`` (with or without ``--unit``) works them out."""

    period: Period
    totals: Totals
    marks: list[Mark]
    activity: list[tuple[str, str, str]]
    refusals: RefusalsByWeek
    directory: Directory
    min_rate: float
    as_of: str  # when they were read (UTC)
    _scores: tuple[list[UnitScore], UnitScore] | None = None
    _accounts: dict[str, list[AccountUse]] | None = None

    def scores(self, unit: str | None = None) -> tuple[list[UnitScore], UnitScore]:
        """The units' scores (``unit``'s only, if given): a unit's score does not depend on
        the others', so it is taken from the province's, worked out once."""
        if self._scores is None:
            self._scores = build_report(
                self.totals,
                self.marks,
                self.directory,
                period_end=self.period.last,
                min_rate=self.min_rate,
                activity=self.activity,
            )
        if unit is None:
            return self._scores
        shown = [s for s in self._scores[0] if s.unit == unit]
        return shown, total_of(shown)

    def accounts(self, unit: str) -> list[AccountUse]:
        """Each of ``unit``'s accounts' use (every unit's worked out once)."""
        if self._accounts is None:
            by_unit: dict[str, list[AccountUse]] = {}
            for row in account_use(self.totals, self.directory, None, self.activity):
                by_unit.setdefault(row.unit, []).append(row)
            self._accounts = by_unit
        return self._accounts.get(unit, [])

    def prepare(self) -> PeriodFigures:
        """Work out every unit's scores and accounts now (the background reader does, so
        that no page waits for it)."""
        self.scores()
        self.accounts("")
        return self


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
    """The pages' content, read from one store.

    ``figures_store``: where the report's sums are read, ``verify_store``: where the chains
    are walked (the same store by default; the console opens one connection for each, so
    that a page never waits behind a province-year's sums, nor the sums behind a walk of
    every record, minutes at that scale).
    ``refresh``: seconds between the background readings of the standard periods and the
    idle list; other periods' figures are kept that long too. ``wait``: how long a page waits
    for a period's figures being read before it answers that they are (:meth:`ready`).
    """

    def __init__(
        self,
        store: DecisionStore,
        policy: Policy,
        *,
        figures_store: DecisionStore | None = None,
        verify_store: DecisionStore | None = None,
        refresh: float = 300.0,
        wait: float = 0.25,
    ) -> None:
        self.store = store
        self.figures_store = figures_store or store
        self.verify_store = verify_store or self.figures_store
        self.policy = policy
        self.refresh = refresh
        self.wait = wait
        self.verify_status = VerifyStatus()
        self._guard = threading.Lock()  # the tables below
        self._computing: dict[Any, threading.Lock] = {}
        # What was read, by key ("figures", "idle", or a Period): when, and what.
        self._kept: OrderedDict[Any, tuple[float, Any]] = OrderedDict()
        self._reading: dict[Period, threading.Thread] = {}  # read in the background now
        self._stop = threading.Event()

    # -- the report's figures -------------------------------------------------------------

    def _fresh(self, key: Any, age: float) -> Any | None:
        """What is kept under ``key`` if it was read less than ``age`` seconds ago."""
        with self._guard:
            kept = self._kept.get(key)
            if kept is None or time.monotonic() - kept[0] >= age:
                return None
            self._kept.move_to_end(key)
            return kept[1]

    def _cached(self, key: Any, age: float, make: Callable[[], T], *, renew: bool = False) -> T:
        """What is kept under ``key`` if fresh (and not ``renew``), else ``make()``, kept.
        One thread makes it at a time; others asking meanwhile wait, then find it kept. Of
        the periods, the :data:`KEPT_PERIODS` last used are kept."""
        if not renew and (kept := self._fresh(key, age)) is not None:
            return kept  # type: ignore[no-any-return]
        with self._guard:
            lock = self._computing.setdefault(key, threading.Lock())
        with lock:
            if not renew and (kept := self._fresh(key, age)) is not None:
                return kept  # type: ignore[no-any-return]
            made = make()
            with self._guard:
                self._kept[key] = (time.monotonic(), made)
                self._kept.move_to_end(key)
                periods = [k for k in self._kept if isinstance(k, Period)]
                for old in periods[: max(0, len(periods) - KEPT_PERIODS)]:
                    del self._kept[old]
            return made

    def figures(self, *, renew: bool = False) -> RollupFigures:
        """The rollups and the directory, as ``congvu report`` reads them (read again after
        ``refresh`` seconds: a directory imported meanwhile counts from then on)."""
        return self._cached(
            "figures",
            self.refresh,
            lambda: RollupFigures(self.figures_store, self.figures_store.accounts()),
            renew=renew,
        )

    def period(self, period: Period, *, renew: bool = False) -> PeriodFigures:
        """The period's figures: kept ones if read less than twice ``refresh`` seconds ago
        (the standard periods are renewed every ``refresh``), else read now."""

        def make() -> PeriodFigures:
            figures = self.figures()
            totals, marks = figures.totals(period.first, period.last)
            return PeriodFigures(
                period,
                totals,
                marks,
                figures.activity(period.first, period.last),
                figures.refusals(period.first, period.last),
                figures.directory,
                self.policy.min_usage_rate,
                _now(),
            )

        return self._cached(period, 2 * self.refresh, make, renew=renew)

    def ready(self, period: Period) -> PeriodFigures | None:
        """The period's figures if they are kept, or read within ``wait`` seconds; else
        None, and they go on being read (and prepared) in the background: a page of a period
        nobody asked for yet answers soon, saying its figures are being read, instead of
        holding the browser for the seconds a province's sums take."""
        kept: PeriodFigures | None = self._fresh(period, 2 * self.refresh)
        if kept is not None:
            return kept
        with self._guard:
            reading = self._reading.get(period)
            if reading is None:
                reading = self._reading[period] = threading.Thread(
                    target=self._read, args=(period,), name="congvu-web-period", daemon=True
                )
                reading.start()
        reading.join(self.wait)
        kept = self._fresh(period, 2 * self.refresh)
        if kept is None and not reading.is_alive():  # it failed (logged): an error page
            raise RuntimeError(f"the figures of {period.first} to {period.last} were not read")
        return kept

    def _read(self, period: Period) -> None:
        try:
            self.period(period).prepare()
        except Exception as exc:  # noqa: BLE001 - the page asks again, and it is read again
            get_logger().error("web.figures_failed", error=str(exc))
        finally:
            with self._guard:
                self._reading.pop(period, None)

    def scores(self, period: Period, unit: str | None = None) -> tuple[list[UnitScore], UnitScore]:
        """The units' scores (or ``unit``'s), as ``congvu report`` gives them."""
        return self.period(period).scores(unit)

    def refusals(self, period: Period) -> RefusalsByWeek:
        """Refusals by reason per week."""
        return self.period(period).refusals

    def idle(self, *, renew: bool = False) -> tuple[IdleReport, str]:
        """The mailboxes idle for :data:`IDLE_DAYS` days, as ``congvu report idle``, and
        when that was read (UTC)."""

        def make() -> tuple[IdleReport, str]:
            report = self.figures().idle(
                until=None,
                now=datetime.now(UTC),
                days=IDLE_DAYS,
                is_official=self.policy.is_official,
            )
            return report, _now()

        return self._cached("idle", 2 * self.refresh, make, renew=renew)

    def units(self) -> list[str]:
        """Every unit of the directory."""
        return sorted({a.unit for a in self.figures().directory.accounts})

    def unit_addresses(self, unit: str) -> tuple[str, ...]:
        return tuple(a.address for a in self.figures().directory.accounts if a.unit == unit)

    def warm(self, today: date | None = None) -> None:
        """Read the standard periods' figures and the idle list again."""
        today = today or datetime.now(VIETNAM_TIME).date()
        self.figures(renew=True)
        for period in standard_periods(today).values():
            self.period(period, renew=True).prepare()
        self.idle(renew=True)

    def keep_warm(self) -> threading.Thread:
        """Start the background reader (:meth:`warm` now, then every ``refresh`` seconds,
        until :meth:`stop`); a failure is logged and tried again at the next turn."""

        def loop() -> None:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    self.warm()
                    get_logger().info(
                        "web.figures_read", seconds=round(time.monotonic() - started, 2)
                    )
                except Exception as exc:  # noqa: BLE001 - the pages read on demand meanwhile
                    get_logger().error("web.figures_failed", error=str(exc))
                self._stop.wait(self.refresh)

        thread = threading.Thread(target=loop, name="congvu-web-figures", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()

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
        with self._guard:
            if self.verify_status.running:
                return
            self.verify_status.running = True

        def walk() -> None:
            started = time.monotonic()
            try:
                problems, error = self.verify_store.verify(), ""
            except Exception as exc:  # noqa: BLE001 - shown on the page, never a traceback
                problems, error = [], str(exc)
            logger = get_logger()
            (logger.error if problems or error else logger.info)(
                "web.chain_verified",
                seconds=round(time.monotonic() - started, 1),
                problems=len(problems),
                error=error,
            )
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
