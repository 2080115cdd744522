"""The console's guards: nothing without a session, CSRF tokens on every form, the login rate
limit, a manager confined to their unit whatever URL they type, no decision data in an error
page, the access log, sign-on from a trusted proxy only."""

from __future__ import annotations

import dataclasses
import json
import urllib.parse

import pytest
import structlog

from gateway.web.users import UserFile, hash_password
from tests.gateway.web.conftest import Site, csrf_of, log_in, write_config
from tests.support.console import GIA_HIEP, PASSWORD, TAN_HA

UNIT = "/unit/" + urllib.parse.quote(GIA_HIEP, safe="")
OTHER_UNIT = "/unit/" + urllib.parse.quote(TAN_HA, safe="")


def pages(site: Site) -> list[str]:
    """Every page and export that shows decision data."""
    refused = site.district.refused_id
    return [
        "/",
        UNIT,
        "/account/canbo1@giahiep.lamdong.gov.vn",
        f"/decision/{refused}",
        "/search?sender=canbo1@giahiep.lamdong.gov.vn",
        "/chain",
        "/export/report.xlsx",
        "/export/report.csv",
        "/export/report.html",
        "/export/search.csv?verdict=reject",
        "/export/idle.csv",
        f"/export/decision/{refused}.json",
    ]


def test_no_page_without_a_session(site: Site) -> None:
    """Every page and export sends a stranger to the login page, and shows nothing."""
    client = site.client()
    for path in pages(site):
        response = client.get(path)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/login?next="), path
        assert "giahiep" not in response.text and "WEBTEST" not in response.text, path


def test_the_health_check_needs_no_session_and_shows_nothing(site: Site) -> None:
    """/healthz answers "ok" while the store answers, 503 when it fails: nothing else."""
    client = site.client()
    response = client.get("/healthz")
    assert (response.status_code, response.text) == (200, "ok\n")

    def failing(decision_id: str) -> None:
        raise RuntimeError("database is locked")

    site.store.get = failing  # type: ignore[method-assign]
    response = client.get("/healthz")
    assert (response.status_code, response.text) == (503, "store unavailable\n")


def test_a_forged_or_stale_cookie_is_no_session(site: Site) -> None:
    """A session cookie not signed with the console's secret is ignored."""
    client = site.client()
    client.cookies.set("congvu_session", "eyJ1c2VyIjogInRoYW5odHJhIn0=.forged.sig")
    assert client.get("/").status_code == 303


def test_the_session_cookie_is_httponly_samesite_and_new_at_login(site: Site) -> None:
    """The cookie is HttpOnly and SameSite=Lax, and a login gets a new one (no fixation)."""
    client = site.client()
    client.get("/login")
    before = client.cookies.get("congvu_session")
    token = csrf_of(client.get("/login").text)
    response = client.post(
        "/login", data={"csrf": token, "user": "thanhtra", "password": PASSWORD, "next": "/"}
    )
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "secure" not in cookie
    assert client.cookies.get("congvu_session") != before


def test_the_cookie_is_secure_behind_tls(site: Site) -> None:
    """With ``behind_tls``, the session cookie is sent over HTTPS only."""
    write_config(site.folder, "behind_tls = true\n")
    client = site.client()
    token = csrf_of(client.get("/login").text)
    response = client.post(
        "/login", data={"csrf": token, "user": "thanhtra", "password": PASSWORD, "next": "/"}
    )
    assert "secure" in response.headers["set-cookie"].lower()


@pytest.mark.parametrize("token", [None, "", "not-the-token"])
def test_a_login_without_the_forms_token_is_refused(site: Site, token: str | None) -> None:
    """CSRF: a login posted without the session's token is 403, and signs no one in."""
    client = site.client()
    client.get("/login")
    data = {"user": "thanhtra", "password": PASSWORD}
    if token is not None:
        data["csrf"] = token
    response = client.post("/login", data=data)
    assert response.status_code == 403
    assert client.get("/").status_code == 303


@pytest.mark.parametrize("path", ["/logout", "/language", "/chain"])
def test_every_form_wants_the_sessions_token(site: Site, path: str) -> None:
    """CSRF: logging out, changing the language, verifying the chain: 403 without the token,
    and nothing done."""
    client = site.client()
    assert log_in(client, "thanhtra") == 303
    response = client.post(path, data={"csrf": "forged"})
    assert response.status_code == 403
    assert client.get("/").status_code == 200  # still signed in, still in Vietnamese
    assert 'lang="vi"' in client.get("/").text
    token = csrf_of(client.get("/").text)
    assert client.post("/language", data={"csrf": token, "next": "/"}).status_code == 303
    assert 'lang="en"' in client.get("/").text


def test_wrong_passwords_are_rate_limited(site: Site) -> None:
    """After five wrong passwords a user is refused (429, Retry-After) even with the right
    one, until fifteen minutes have passed; the log says so."""
    client = site.client()
    for _ in range(5):
        assert log_in(client, "thanhtra", "wrong password!") == 401
    token = csrf_of(client.get("/login").text)
    response = client.post("/login", data={"csrf": token, "user": "thanhtra", "password": PASSWORD})
    assert response.status_code == 429
    assert 0 < int(response.headers["retry-after"]) <= 900
    assert client.get("/").status_code == 303  # not signed in
    assert log_in(client, "giahiep") == 303  # another user is not locked out
    site.clock[0] += 901
    client = site.client()
    assert log_in(client, "thanhtra") == 303
    outcomes = [
        json.loads(line).get("outcome")
        for line in (site.folder / "access.log").read_text().splitlines()
    ]
    assert outcomes.count("failed") == 5 and "rate-limited" in outcomes


def test_an_unknown_user_is_answered_as_a_wrong_password(site: Site) -> None:
    """No telling which user names exist: the same 401 and the same words."""
    client = site.client()
    token = csrf_of(client.get("/login").text)
    unknown = client.post("/login", data={"csrf": token, "user": "nobody", "password": "x" * 12})
    wrong = client.post("/login", data={"csrf": token, "user": "thanhtra", "password": "x" * 12})
    assert unknown.status_code == wrong.status_code == 401
    assert unknown.text == wrong.text


def test_a_manager_sees_their_unit_and_nothing_else(site: Site) -> None:
    """Gia Hiệp's manager: their unit's pages and decisions; Tân Hà's are 403 by URL too, and
    the province's overview and exports are not theirs."""
    client = site.client()
    assert log_in(client, "giahiep") == 303
    assert client.get("/").headers["location"] == UNIT
    assert client.get(UNIT).status_code == 200
    assert client.get(f"/decision/{site.district.refused_id}").status_code == 200
    other = site.district.other_unit_id
    for path in [
        OTHER_UNIT,
        "/account/canbo@tanha.lamdong.gov.vn",
        f"/decision/{other}",
        f"/export/decision/{other}.json",
        "/export/report.xlsx",
        "/export/report.csv?unit=" + urllib.parse.quote(TAN_HA),
        "/search?unit=" + urllib.parse.quote(TAN_HA),
        "/chain",
    ]:
        response = client.get(path)
        assert response.status_code == 403, path
        assert "tanha" not in response.text and other not in response.text, path
    found = client.get("/search?sender=vanthu@tanha.lamdong.gov.vn").text
    assert other not in found and "01WEBTEST" not in found  # another unit's sender: nothing
    idle = client.get("/export/idle.csv").text
    assert "giahiep" in idle and "tanha" not in idle


def test_a_removed_user_is_signed_out_at_the_next_page(site: Site) -> None:
    """The users file is read again when it changes: a removed user's session ends."""
    client = site.client()
    assert log_in(client, "giahiep") == 303
    assert client.get(UNIT).status_code == 200
    users = UserFile(site.folder / "users.toml")
    remaining = {k: v for k, v in users.users().items() if k != "giahiep"}
    users.save(remaining)
    assert client.get(UNIT).status_code == 303


def test_a_new_password_ends_the_sessions_opened_with_the_old(site: Site) -> None:
    """A session stolen or left open elsewhere ends when the user's password is changed."""
    client = site.client()
    assert log_in(client, "thanhtra") == 303
    assert client.get("/").status_code == 200
    users = UserFile(site.folder / "users.toml")
    changed = dict(users.users())
    changed["thanhtra"] = dataclasses.replace(
        changed["thanhtra"], password=hash_password("mot-mat-khau-moi")
    )
    users.save(changed)
    assert client.get("/").status_code == 303
    assert log_in(client, "thanhtra", "mot-mat-khau-moi") == 303
    assert client.get("/").status_code == 200


def test_an_error_page_shows_no_decision_data(site: Site) -> None:
    """A store that fails mid-page gives a 500 page with no record, no exception text; the
    traceback goes to the gateway's log."""
    client = site.client()
    assert log_in(client, "thanhtra") == 303
    secret = "canbo1@giahiep.lamdong.gov.vn subject Báo cáo mật"

    def failing(decision_id: str) -> None:
        raise RuntimeError(secret)

    site.store.get = failing  # type: ignore[method-assign]
    with structlog.testing.capture_logs() as logs:
        response = client.get(f"/decision/{site.district.refused_id}")
    assert response.status_code == 500
    assert "canbo1" not in response.text and "RuntimeError" not in response.text
    assert "Traceback" not in response.text
    assert [e["event"] for e in logs] == ["web.error"]
    assert response.headers["content-security-policy"].startswith("default-src 'none'")


def test_a_missing_decision_is_a_plain_404(site: Site) -> None:
    client = site.client()
    assert log_in(client, "thanhtra") == 303
    response = client.get("/decision/01NOSUCHDECISION0000000000")
    assert response.status_code == 404
    assert "01NOSUCHDECISION" not in response.text


def test_every_view_of_a_decision_is_in_the_access_log(site: Site) -> None:
    """Who opened which decision, from where, is written to the access log."""
    client = site.client()
    assert log_in(client, "thanhtra") == 303
    refused = site.district.refused_id
    client.get(f"/decision/{refused}")
    client.get("/search?sender=canbo1@giahiep.lamdong.gov.vn")
    lines = [json.loads(x) for x in (site.folder / "access.log").read_text().splitlines()]
    opened = [x for x in lines if x.get("decision") == refused]
    assert opened and opened[0]["user"] == "thanhtra" and opened[0]["client"]
    searched = [x for x in lines if x.get("path", "").startswith("/search?sender=canbo1")]
    assert searched and searched[0]["status"] == 200 and searched[0]["role"] == "auditor"


def test_pages_allow_no_script_and_no_framing(site: Site) -> None:
    """Every answer forbids scripts, framing, caching and referrers; no page has a script."""
    client = site.client()
    assert log_in(client, "thanhtra") == 303
    for path in pages(site):
        response = client.get(path)
        assert response.status_code == 200, path
        headers = response.headers
        assert "script-src" not in headers["content-security-policy"]  # default-src 'none'
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert headers["x-frame-options"] == "DENY" and headers["cache-control"] == "no-store"
        assert "<script" not in response.text


def test_after_login_only_this_sites_paths(site: Site) -> None:
    """``next`` after the login goes to a path of this site, never elsewhere."""
    client = site.client()
    token = csrf_of(client.get("/login").text)
    for target, expected in [
        ("//evil.example/", "/"),
        ("https://evil.example/", "/"),
        ("/search?x=1", "/search?x=1"),
    ]:
        client.cookies.clear()
        token = csrf_of(client.get("/login").text)
        response = client.post(
            "/login",
            data={"csrf": token, "user": "thanhtra", "password": PASSWORD, "next": target},
        )
        assert response.headers["location"] == expected


def test_single_sign_on_from_the_trusted_proxy_only(site: Site) -> None:
    """The proxy's header signs a user on when it comes from a trusted proxy; the same
    header from anyone else is ignored, as is a user the users file does not know."""
    write_config(
        site.folder, 'trusted_header = "X-Remote-User"\ntrusted_proxies = ["10.9.0.0/16"]\n'
    )
    stranger = site.client()
    assert stranger.get("/", headers={"X-Remote-User": "thanhtra"}).status_code == 303
    write_config(
        site.folder, 'trusted_header = "X-Remote-User"\ntrusted_proxies = ["127.0.0.1/32"]\n'
    )
    proxy = site.client()
    response = proxy.get("/", headers={"X-Remote-User": "thanhtra"})
    assert response.status_code == 200 and "thanhtra" in response.text
    proxy.cookies.clear()
    assert proxy.get("/", headers={"X-Remote-User": "nobody"}).status_code == 303
