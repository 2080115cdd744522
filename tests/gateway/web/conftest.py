"""The console's fixtures: a district's log in a real SQLite store, users made with
``congvu web user add``, and the application served by uvicorn on a loopback port in this
process (so that a test can break the store under it), read with httpx; the browser tests
run ``congvu web`` itself."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import uvicorn

from gateway.config import load_config
from gateway.store import SqliteStore
from gateway.web.app import create_app
from gateway.web.security import LoginLimiter
from policies import load_policy
from tests.support.console import GIA_HIEP, PASSWORD, District, add_user, write_district


@dataclass
class Site:
    """A console over the district's log, and the files it uses."""

    folder: Path
    config: Path
    district: District
    store: SqliteStore
    clock: list[float]  # the login limiter's time, moved by the tests
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def client(self, wait: float = 60.0) -> httpx.Client:
        """A new browser, as it were, on a console started now (with the configuration as
        it is now); ``wait``: how long a page waits for a period's figures (by default
        until they are read: the tests assert on the figures, not on a page saying they are
        being read)."""
        config = load_config(self.config)
        limiter = LoginLimiter(clock=lambda: self.clock[0])
        app = create_app(
            config, self.store, load_policy(config.policy_file), limiter=limiter, wait=wait
        )
        base = self.stack.enter_context(serving(app))
        return self.stack.enter_context(httpx.Client(base_url=base, timeout=30))


@contextlib.contextmanager
def serving(app: object) -> Iterator[str]:
    """``app`` served by uvicorn on a free loopback port, in a thread; its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="error", access_log=False))  # type: ignore[arg-type]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the console did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def write_config(folder: Path, extra: str = "") -> Path:
    config = folder / "congvu.toml"
    config.write_text(
        f'[store]\nsqlite = "d.sqlite"\n[web]\nusers = "users.toml"\nsecret = "secret"\n'
        f'access_log = "access.log"\n{extra}',
        "utf-8",
    )
    return config


@pytest.fixture(scope="session")
def users_file(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The users file ``congvu web user add`` writes for an auditor ``thanhtra`` and Gia
    Hiệp's manager ``giahiep`` (made once: Argon2 is slow on purpose)."""
    folder = tmp_path_factory.mktemp("users")
    config = write_config(folder)
    add_user(config, "thanhtra", "auditor")
    add_user(config, "giahiep", "manager", GIA_HIEP)
    return (folder / "users.toml").read_bytes()


@pytest.fixture
def site(tmp_path: Path, users_file: bytes) -> Iterator[Site]:
    """The district's log, an auditor ``thanhtra`` and Gia Hiệp's manager ``giahiep``."""
    district = write_district(tmp_path / "d.sqlite")
    config = write_config(tmp_path)
    (tmp_path / "users.toml").write_bytes(users_file)
    store = SqliteStore(tmp_path / "d.sqlite")
    site = Site(tmp_path, config, district, store, [1000.0])
    try:
        with site.stack:
            yield site
    finally:
        store.close()


def csrf_of(page: str) -> str:
    """The CSRF token in a page's forms."""
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, "no CSRF token in the page"
    return found.group(1)


def log_in(client: httpx.Client, user: str, password: str = PASSWORD) -> int:
    """Log in through the login form; the answer's status (303 when signed in)."""
    token = csrf_of(client.get("/login").text)
    response = client.post(
        "/login", data={"csrf": token, "user": user, "password": password, "next": "/"}
    )
    return response.status_code
