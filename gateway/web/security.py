"""The console's guards: the session's secret, CSRF tokens, the login rate limit and the
trusted proxy's single sign-on.

Sessions are Starlette's signed cookies (itsdangerous, HMAC-SHA1 over the session and its
time; :class:`~starlette.middleware.sessions.SessionMiddleware`): HttpOnly, SameSite=Lax,
Secure when the console is served over TLS, and no older than ``session_hours``. They hold
the user's name, the CSRF token and the language, nothing else; the user's role and unit are
read from the users file at every page, so removing a user ends their sessions.
"""

from __future__ import annotations

import hmac
import math
import os
import secrets
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from gateway.config import IPNetwork, in_networks

__all__ = [
    "LoginLimiter",
    "csrf_token",
    "load_secret",
    "same_token",
    "trusted_user",
]


def load_secret(path: Path) -> str:
    """The key that signs session cookies: read from ``path``, or made there (mode 0600) the
    first time, so that sessions outlive a restart and every console process shares it."""
    try:
        return path.read_text("ascii").strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it meanwhile: use theirs
        return path.read_text("ascii").strip()
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(secret + "\n")
    return secret


def csrf_token() -> str:
    """A fresh token for a session's forms."""
    return secrets.token_urlsafe(32)


def same_token(expected: str | None, given: str | None) -> bool:
    """Whether a form's token is the session's (compared in constant time)."""
    return bool(expected) and bool(given) and hmac.compare_digest(str(expected), str(given))


def trusted_user(
    header: str, proxies: tuple[IPNetwork, ...], client: str, headers: dict[str, str]
) -> str:
    """The user the trusted proxy names in ``header``, when the request comes from one of
    ``proxies`` (anyone else could set the header); "" otherwise."""
    if not header or not in_networks(client, proxies):
        return ""
    return headers.get(header.lower(), "").strip()


class LoginLimiter:
    """Failed logins, counted per user name and per client address over a sliding window:
    past the limit, further attempts are refused (429) until the window has moved on, even
    with the right password (a guesser must not learn it was right)."""

    def __init__(
        self,
        per_user: int = 5,
        per_client: int = 20,
        window: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = {"user": per_user, "client": per_client}
        self.window = window
        self.clock = clock
        self._failures: dict[tuple[str, str], deque[float]] = {}

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        failures = self._failures.get(key)
        if failures is None:
            return deque()
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if not failures:
            del self._failures[key]
        return failures

    def wait(self, user: str, client: str) -> int:
        """Seconds before ``user`` may try again from ``client`` (0: now)."""
        now = self.clock()
        longest = 0.0
        for kind, value in (("user", user.lower()), ("client", client)):
            failures = self._recent((kind, value), now)
            if len(failures) >= self.limits[kind]:
                longest = max(longest, failures[0] + self.window - now)
        return math.ceil(longest)

    def failed(self, user: str, client: str) -> None:
        """Count a failed attempt."""
        now = self.clock()
        for key in (("user", user.lower()), ("client", client)):
            self._failures.setdefault(key, deque()).append(now)
            self._recent(key, now)

    def succeeded(self, user: str) -> None:
        """A right password (not rate-limited) forgets the user's failures."""
        self._failures.pop(("user", user.lower()), None)
