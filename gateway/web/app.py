"""The console's web application (Starlette): its routes, who may see what, and its answers.

Every page needs a signed-in user (:func:`_signed_in`); an auditor sees every unit, a unit's
manager their own unit's pages, accounts and decisions (a decision belongs to the unit its
sender is credited to, as the scores credit it), and nothing of another's, whatever URL they
type (403). Every form carries the session's CSRF token; every answer says not to be cached,
framed or sent elsewhere (headers below); an error page names no decision data.
"""

from __future__ import annotations

import contextlib
import csv
import inspect
import io
import json
import re
import unicodedata
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from gateway.config import GatewayConfig, in_networks
from gateway.logs import get_logger
from gateway.record import Record, RecordError
from gateway.report.render import (
    refusals_chart,
    render,
    render_html,
    safe_cell,
    usage_chart,
    write_xlsx,
)
from gateway.store.base import DecisionStore, Search
from gateway.store.base import Record as Stored
from gateway.store.chain import ChainLink
from gateway.web.access import AccessLog
from gateway.web.i18n import translate
from gateway.web.pages import (
    IDLE_DAYS,
    Console,
    Period,
    period_of,
    standard_periods,
    vietnam_time,
)
from gateway.web.security import LoginLimiter, csrf_token, load_secret, same_token, trusted_user
from gateway.web.users import UserFile, WebUser
from policies import Policy
from policies.reasons import REASONS
from policies.schema import VIETNAM_TIME

__all__ = ["create_app"]

_HERE = Path(__file__).parent
_FORMATS = {
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "csv": "text/csv; charset=utf-8",
    "html": "text/html; charset=utf-8",
}
# No script at all, nothing from elsewhere, never framed (clickjacking), no referrer (a
# decision id in a URL stays here).
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
EXPORT_LIMIT = 10_000  # decisions in a search's CSV at most


class _Refused(Exception):
    """Answer with the error page: ``status`` and the words of ``key``."""

    def __init__(self, status: int, key: str) -> None:
        super().__init__(key)
        self.status, self.key = status, key


class _Console:
    """The application's state: the console's content, its users, its guards, its log."""

    def __init__(
        self, config: GatewayConfig, pages: Console, limiter: LoginLimiter, secret: str
    ) -> None:
        self.config = config
        self.secret = secret
        self.pages = pages
        self.users = UserFile(config.web.users)
        self.limiter = limiter
        self.access = AccessLog(config.web.access_log)
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(_HERE / "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        env.filters["vntime"] = vietnam_time
        env.filters["q"] = lambda value: urllib.parse.quote(str(value), safe="")
        self.templates = Jinja2Templates(env=env)

    # -- who is asking ----------------------------------------------------------------------

    def client(self, request: Request) -> str:
        """The client's address: the proxy's X-Forwarded-For (its last hop) when the request
        comes from a trusted proxy, else the connection's."""
        peer = request.client.host if request.client else ""
        web = self.config.web
        forwarded = request.headers.get("x-forwarded-for", "")
        if forwarded and in_networks(peer, web.trusted_proxies):
            return forwarded.rsplit(",", 1)[-1].strip()
        return peer

    def user(self, request: Request) -> WebUser | None:
        """The signed-in user: named by the trusted proxy, or by the session."""
        web = self.config.web
        peer = request.client.host if request.client else ""
        named = trusted_user(web.trusted_header, web.trusted_proxies, peer, dict(request.headers))
        if named:
            user = self.users.get(named)
            if user is not None and request.session.get("user") != named:
                request.session.clear()
                request.session.update({"user": named, "csrf": csrf_token()})
        else:
            name = request.session.get("user")
            user = self.users.get(name) if isinstance(name, str) else None
            if user is not None and request.session.get("auth") != user.session_tag(self.secret):
                user = None  # the password was changed since this session logged in
            if user is None and name is not None:
                request.session.clear()  # removed from the users file, or a new password
        request.state.user = user
        return user

    def lang(self, request: Request) -> str:
        if "session" not in request.scope:  # a server error, outside the session's reach
            return "vi"
        return "en" if request.session.get("lang") == "en" else "vi"

    def csrf(self, request: Request) -> str:
        if "session" not in request.scope:
            return ""
        token = request.session.get("csrf")
        if not isinstance(token, str):
            token = csrf_token()
            request.session["csrf"] = token
        return token

    async def check_form(self, request: Request) -> dict[str, str]:
        """The form's fields, once its CSRF token is the session's (403 otherwise)."""
        form = await request.form()
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        if not same_token(request.session.get("csrf"), fields.get("csrf")):
            raise _Refused(403, "csrf")
        return fields

    # -- answers ----------------------------------------------------------------------------

    def page(self, request: Request, name: str, status: int = 200, **context: Any) -> Response:
        lang = self.lang(request)
        user = getattr(request.state, "user", None)
        return self.templates.TemplateResponse(
            request,
            name,
            {
                "t": lambda key, **values: translate(key, lang, **values),
                "lang": lang,
                "user": user,
                "csrf": self.csrf(request),
                "reasons": REASONS,
                "refresh_minutes": f"{self.pages.refresh / 60:g}",
                "quick": standard_periods(datetime.now(VIETNAM_TIME).date()),
                # Where the language form comes back to (an error page: the overview, so
                # that it repeats nothing of the URL asked for).
                "here": request.url.path + (f"?{request.url.query}" if request.url.query else ""),
                **context,
            },
            status_code=status,
        )


def _signed_in(
    handler: Callable[[_Console, Request, WebUser], Response | Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """A page or form for signed-in users only (anyone else is sent to the login page). A
    plain handler is run in a worker thread (the store's reads block, and the event loop
    must not wait on them); a coroutine (a form, which reads its body) is awaited."""

    async def endpoint(request: Request) -> Response:
        console: _Console = request.app.state.console
        user = console.user(request)
        if user is None:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(
                "/login?next=" + urllib.parse.quote(target, safe=""), status_code=303
            )
        if inspect.iscoroutinefunction(handler):
            return await handler(console, request, user)  # type: ignore[no-any-return]
        return await run_in_threadpool(handler, console, request, user)  # type: ignore[arg-type]

    return endpoint


def _period(request: Request) -> Period:
    try:
        return period_of(dict(request.query_params), datetime.now(VIETNAM_TIME).date())
    except ValueError as exc:
        raise _Refused(400, "bad_request") from exc


def _reading(console: _Console, request: Request, period: Period) -> Response:
    """The page of a period whose figures are being read: it says so, and asks the browser
    to come back in two seconds (a meta refresh: no script)."""
    return console.page(request, "reading.html", 202, period=period)


def _may_see(user: WebUser, unit: str | None) -> None:
    if not user.may_see(unit):
        raise _Refused(403, "forbidden")


# -- pages --------------------------------------------------------------------------------


async def health(request: Request) -> Response:
    """For load balancers and container health checks: up, and the store answers (no data,
    no session needed)."""
    console: _Console = request.app.state.console
    try:
        await run_in_threadpool(console.pages.store.get, "0")
    except Exception:  # noqa: BLE001 - any failure of the store is "not healthy"
        return PlainTextResponse("store unavailable\n", status_code=503)
    return PlainTextResponse("ok\n")


async def login_page(request: Request) -> Response:
    console: _Console = request.app.state.console
    if console.user(request) is not None:
        return RedirectResponse(_next(request.query_params.get("next")), status_code=303)
    return console.page(request, "login.html", next=_next(request.query_params.get("next")))


def _next(target: str | None) -> str:
    """Where to go after logging in: a path of this site only (no open redirect)."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


async def login(request: Request) -> Response:
    console: _Console = request.app.state.console
    fields = await console.check_form(request)
    name, password = fields.get("user", "").strip(), fields.get("password", "")
    client = console.client(request)
    wait = console.limiter.wait(name, client)
    if wait:
        console.access.write(user=name, client=client, event="login", outcome="rate-limited")
        response = console.page(
            request, "login.html", 429, next=_next(fields.get("next")), limited=wait
        )
        response.headers["Retry-After"] = str(wait)
        return response
    user = await run_in_threadpool(console.users.login, name, password)  # Argon2: ~0.1 s CPU
    if user is None:
        console.limiter.failed(name, client)
        console.access.write(user=name, client=client, event="login", outcome="failed")
        return console.page(request, "login.html", 401, next=_next(fields.get("next")), failed=True)
    console.limiter.succeeded(name)
    lang = console.lang(request)
    request.session.clear()  # a new session at each login (no fixation)
    request.session.update(
        {
            "user": user.name,
            "auth": user.session_tag(console.secret),
            "csrf": csrf_token(),
            "lang": lang,
        }
    )
    console.access.write(user=user.name, role=user.role, client=client, event="login", outcome="ok")
    return RedirectResponse(_next(fields.get("next")), status_code=303)


async def logout(request: Request) -> Response:
    console: _Console = request.app.state.console
    await console.check_form(request)
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


async def language(request: Request) -> Response:
    console: _Console = request.app.state.console
    fields = await console.check_form(request)
    request.session["lang"] = "vi" if console.lang(request) == "en" else "en"
    return RedirectResponse(_next(fields.get("next")), status_code=303)


@_signed_in
def overview(console: _Console, request: Request, user: WebUser) -> Response:
    if user.role != "auditor":
        return RedirectResponse(f"/unit/{urllib.parse.quote(user.unit, safe='')}", 303)
    period = _period(request)
    figures = console.pages.ready(period)
    if figures is None:
        return _reading(console, request, period)
    scores, total = figures.scores()
    refusals = figures.refusals
    idle, idle_as_of = console.pages.idle()
    by_reason: dict[str, int] = {}
    for week in refusals.weeks.values():
        for reason, count in week.items():
            by_reason[reason] = by_reason.get(reason, 0) + count
    return console.page(
        request,
        "overview.html",
        period=period,
        scores=scores,
        ranked=sorted(scores, key=lambda s: (-float(s.usage_rate), -s.messages_sent, s.unit)),
        total=total,
        # SVG drawn by gateway.report.render, every text in it escaped there.
        usage_chart=Markup(usage_chart(scores)),  # noqa: S704
        refusals_chart=Markup(refusals_chart(refusals.weeks)),  # noqa: S704
        by_reason=sorted(by_reason.items(), key=lambda item: (-item[1], item[0])),
        idle=idle,
        idle_as_of=idle_as_of,
        idle_days=IDLE_DAYS,
        as_of=figures.as_of,
    )


@_signed_in
def unit_page(console: _Console, request: Request, user: WebUser) -> Response:
    name = request.path_params["name"]
    _may_see(user, name)
    if name not in console.pages.units():
        raise _Refused(404, "not_found")
    period = _period(request)
    figures = console.pages.ready(period)
    if figures is None:
        return _reading(console, request, period)
    scores, _ = figures.scores(name)
    refused = console.pages.search(
        Search(
            senders=console.pages.unit_addresses(name),
            verdict="reject",
            start=period.start,
            end=period.end,
        ),
        unit=name,
        limit=20,
    )
    return console.page(
        request,
        "unit.html",
        unit=name,
        period=period,
        score=scores[0] if scores else None,
        as_of=figures.as_of,
        accounts=figures.accounts(name),
        refused=refused,
    )


@_signed_in
def account_page(console: _Console, request: Request, user: WebUser) -> Response:
    address = request.path_params["address"].lower()
    account = console.pages.figures().directory.by_address.get(address)
    if account is None:
        _may_see(user, None)  # whether an address exists is the province's business
        raise _Refused(404, "not_found")
    _may_see(user, account.unit)
    period = _period(request)
    figures = console.pages.ready(period)
    if figures is None:
        return _reading(console, request, period)
    use = next(a for a in figures.accounts(account.unit) if a.address == address)
    recent = console.pages.search(
        Search(senders=(address,), start=period.start, end=period.end), limit=20
    )
    return console.page(
        request, "account.html", account=account, use=use, period=period, recent=recent
    )


def _decision(
    console: _Console, request: Request, user: WebUser
) -> tuple[Stored, ChainLink | None, str | None]:
    """The decision the URL names, its chain link and its unit: 404 when there is none, 403
    when it is not the user's to see."""
    found = console.pages.decision(request.path_params["id"])
    if found is None:
        raise _Refused(404, "not_found")
    record, link = found
    unit = console.pages.unit_of(record)
    _may_see(user, unit)
    return record, link, unit


@_signed_in
def decision_page(console: _Console, request: Request, user: WebUser) -> Response:
    record, link, unit = _decision(console, request, user)
    console.access.write(
        user=user.name,
        role=user.role,
        client=console.client(request),
        event="decision",
        decision=record["id"],
    )
    codes = [*record.get("reasons", []), *record.get("monitor_reasons", [])]
    try:  # every field, an older schema's too, as the current schema has it
        shown = Record.from_dict(record).to_dict()
    except RecordError:
        shown = record
    return console.page(
        request,
        "decision.html",
        r=shown,
        link=link,
        unit=unit,
        explained=[console.pages.explain(c) for c in dict.fromkeys(codes)],
    )


def _search_of(request: Request, console: _Console, user: WebUser) -> tuple[Search, str | None]:
    """The search the query asks for, and the unit it is confined to."""
    params = request.query_params
    unit = params.get("unit", "").strip() or None
    if user.role != "auditor":
        if unit not in (None, user.unit):
            raise _Refused(403, "forbidden")
        unit = user.unit
    verdict = params.get("verdict", "")
    if verdict not in ("", "accept", "reject", "tempfail"):
        raise _Refused(400, "bad_request")
    period = (
        _period(request) if params.get("from") or params.get("to") or params.get("period") else None
    )
    sender = params.get("sender", "").strip()
    senders: tuple[str, ...] = (sender,) if sender else ()
    if unit is not None:
        addresses = console.pages.unit_addresses(unit)
        senders = tuple(s for s in senders if s.lower() in addresses) if senders else addresses
        if not senders:
            senders = ("",)  # the unit has no such sender: nothing is found
    search = Search(
        senders=senders,
        recipient=params.get("recipient", "").strip(),
        reason=params.get("reason", "").strip(),
        verdict=verdict,
        start=period.start if period else "",
        end=period.end if period else "",
    )
    return search, unit


@_signed_in
def search_page(console: _Console, request: Request, user: WebUser) -> Response:
    search, unit = _search_of(request, console, user)
    asked = any(
        request.query_params.get(k)
        for k in ("sender", "recipient", "unit", "reason", "verdict", "from", "to", "period")
    )
    result = console.pages.search(search, request.query_params.get("after", ""), unit=unit)
    query = {k: v for k, v in request.query_params.items() if k != "after" and v}
    return console.page(
        request,
        "search.html",
        asked=asked,
        result=result,
        params=query,
        query=urllib.parse.urlencode(query),
        units=console.pages.units() if user.role == "auditor" else [user.unit],
        codes=sorted(REASONS),
    )


@_signed_in
def chain_page(console: _Console, request: Request, user: WebUser) -> Response:
    _may_see(user, None)
    return console.page(
        request,
        "chain.html",
        verify=console.pages.verify_status,
        store=console.pages.store.describe(),
    )


@_signed_in
async def chain_verify(console: _Console, request: Request, user: WebUser) -> Response:
    _may_see(user, None)
    await console.check_form(request)
    console.pages.verify()
    return RedirectResponse("/chain", status_code=303)


# -- exports ------------------------------------------------------------------------------


@_signed_in
def export_report(console: _Console, request: Request, user: WebUser) -> Response:
    """The office's report, as ``congvu report --format xlsx|csv|html`` writes it."""
    fmt = request.path_params["fmt"]
    if fmt not in _FORMATS:
        raise _Refused(404, "not_found")
    unit = request.query_params.get("unit") or None
    _may_see(user, unit)
    period = _period(request)
    scores, total = console.pages.scores(period, unit)
    title = f"Tình hình sử dụng thư công vụ từ {period.first:%d/%m/%Y} đến {period.last:%d/%m/%Y}"
    if fmt == "csv":
        body = render(scores, total, "csv").encode("utf-8")
    elif fmt == "html":
        refusals = console.pages.refusals(period)
        body = render_html(scores, total, refusals, title=title).encode("utf-8")
    else:
        out = io.BytesIO()
        write_xlsx(out, scores, total, title=title)
        body = out.getvalue()
    name = f"congvu-{period.first}-{period.last}" + (f"-{_slug(unit)}" if unit else "")
    return _download(body, f"{name}.{fmt}", _FORMATS[fmt])


@_signed_in
def export_search(console: _Console, request: Request, user: WebUser) -> Response:
    """A search's decisions (up to :data:`EXPORT_LIMIT`) as CSV."""
    search, unit = _search_of(request, console, user)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["time", "id", "verdict", "reasons", "mail_from", "recipients", "subject"])
    cursor, written = "", 0
    while written < EXPORT_LIMIT:
        page = console.pages.search(search, cursor, unit=unit, limit=500)
        for r in page.records:
            writer.writerow(
                [
                    r["time"],
                    r["id"],
                    r["verdict"],
                    " ".join(r["reasons"]),
                    r["envelope"]["mail_from"],
                    " ".join(x["address"] for x in r["envelope"]["recipients"]),
                    safe_cell(r["headers"]["subject"]),
                ]
            )
        written += len(page.records)
        cursor = page.next_cursor
        if not cursor:
            break
    return _download(out.getvalue().encode("utf-8"), "congvu-search.csv", _FORMATS["csv"])


@_signed_in
def export_decision(console: _Console, request: Request, user: WebUser) -> Response:
    """A decision's record, as stored (the JSON the chain's hash covers)."""
    record, _, _ = _decision(console, request, user)
    body = json.dumps(record, ensure_ascii=False, sort_keys=True, indent=2).encode("utf-8")
    return _download(body, f"{record['id']}.json", "application/json")


@_signed_in
def export_idle(console: _Console, request: Request, user: WebUser) -> Response:
    """The idle mailboxes (as ``congvu report idle``), as CSV: a manager's, of their unit."""
    idle, _ = console.pages.idle()
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["state", "address", "full_name", "unit", "role", "last_seen", "seen_by"])
    for state, rows in (("idle", idle.idle), ("never_seen", idle.never_seen)):
        for row in rows:
            if user.may_see(row["unit"]):
                writer.writerow([state, *(safe_cell(str(v)) for v in row.values())])
    return _download(out.getvalue().encode("utf-8"), "congvu-idle.csv", _FORMATS["csv"])


def _slug(text: str) -> str:
    """``text`` as an ASCII file name (a header's plain ``filename``): Vietnamese letters
    lose their marks (Gia Hiệp: Gia-Hiep, đ: d)."""
    plain = unicodedata.normalize("NFKD", text.replace("đ", "d").replace("Đ", "D"))
    ascii_only = plain.encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^A-Za-z0-9.]+", "-", ascii_only).strip("-")


def _download(body: bytes, filename: str, media_type: str) -> Response:
    """``body`` as a file to save: its name in ASCII, and in UTF-8 for browsers that can
    (RFC 6266)."""
    quoted = urllib.parse.quote(filename)
    return Response(
        body,
        media_type=media_type,
        headers={
            "Content-Disposition": f'attachment; filename="{_slug(filename) or "export"}"; '
            f"filename*=UTF-8''{quoted}"
        },
    )


# -- the application ----------------------------------------------------------------------


async def _refused(request: Request, exc: Exception) -> Response:
    console: _Console = request.app.state.console
    if isinstance(exc, _Refused):
        status, key = exc.status, exc.key
    elif isinstance(exc, HTTPException):
        status = exc.status_code
        key = {404: "not_found", 403: "forbidden", 405: "bad_request"}.get(status, "bad_request")
    else:
        # The details go to the gateway's log, never to the page (it could show a record).
        get_logger().error("web.error", path=request.url.path, exc_info=exc)
        status, key = 500, "error"
    response = console.page(request, "error.html", status, message=key, here="/")
    for name, value in _HEADERS.items():  # a server error skips the middleware that adds them
        response.headers.setdefault(name, value)
    return response


def _security_headers(console: _Console) -> Callable[..., Any]:
    async def middleware(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        for name, value in _HEADERS.items():
            response.headers.setdefault(name, value)
        user = getattr(request.state, "user", None)
        if user is not None:  # every page a signed-in user saw (logins are logged apart)
            console.access.write(
                user=user.name,
                role=user.role,
                client=console.client(request),
                method=request.method,
                path=str(request.url.path) + (f"?{request.url.query}" if request.url.query else ""),
                status=response.status_code,
            )
        return response

    return middleware


def create_app(
    config: GatewayConfig,
    store: DecisionStore,
    policy: Policy,
    *,
    figures_store: DecisionStore | None = None,
    verify_store: DecisionStore | None = None,
    limiter: LoginLimiter | None = None,
    wait: float = 0.25,
) -> Starlette:
    """The console for ``store``, configured by ``config.web``; the report's sums are read
    from ``figures_store`` and the chains walked on ``verify_store`` (other connections to
    the same store), if given. ``wait``: how long a page waits for a period's figures being
    read before it answers that they are (the tests wait for them)."""
    from starlette.middleware.base import BaseHTTPMiddleware  # noqa: PLC0415

    web = config.web
    pages = Console(
        store,
        policy,
        figures_store=figures_store,
        verify_store=verify_store,
        refresh=web.refresh,
        wait=wait,
    )
    secret = load_secret(web.secret)
    console = _Console(config, pages, limiter or LoginLimiter(), secret)
    routes = [
        Route("/healthz", health),
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/language", language, methods=["POST"]),
        Route("/", overview),
        Route("/unit/{name:path}", unit_page),
        Route("/account/{address}", account_page),
        Route("/decision/{id}", decision_page),
        Route("/search", search_page),
        Route("/chain", chain_page, methods=["GET"]),
        Route("/chain", chain_verify, methods=["POST"]),
        Route("/export/report.{fmt}", export_report),
        Route("/export/search.csv", export_search),
        Route("/export/idle.csv", export_idle),
        Route("/export/decision/{id}.json", export_decision),
        Mount("/static", StaticFiles(directory=_HERE / "static"), name="static"),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        pages.verify()  # the chain page's first status, in the background
        pages.keep_warm()  # the standard periods' figures and the idle list
        try:
            yield
        finally:
            pages.stop()
            console.access.close()

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[
            Middleware(BaseHTTPMiddleware, dispatch=_security_headers(console)),
            Middleware(
                SessionMiddleware,
                secret_key=secret,
                session_cookie="congvu_session",
                max_age=int(web.session_hours * 3600),
                same_site="lax",
                https_only=web.behind_tls,
            ),
        ],
        exception_handlers={Exception: _refused, HTTPException: _refused, _Refused: _refused},
    )
    app.state.console = console
    return app
