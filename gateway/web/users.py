"""The console's accounts: a TOML file of users, each with a role, a unit and an Argon2 hash.

::

    [users.thanhtra]
    role = "auditor"                 # the office's auditor: every unit
    password = "$argon2id$v=19$..."

    [users.vanthu-giahiep]
    role = "manager"                 # a unit's mailbox manager: that unit only
    unit = "UBND xa Gia Hiep"
    password = "$argon2id$v=19$..."

A user without a password signs on only through the trusted proxy's header (single sign-on).
``congvu web user add`` writes the file (mode 0600); the console reads it again when it
changes, so a user removed or demoted loses access at the next page, without a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from gateway.logs import get_logger
from policies.reader import ConfigError, TomlReader

__all__ = ["ROLES", "UserFile", "WebUser", "hash_password", "read_users", "valid_name"]

ROLES = ("auditor", "manager")
_NAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")
# argon2-cffi's defaults are RFC 9106's second recommended profile (argon2id, 64 MiB, t=3).
_HASHER = PasswordHasher()
# Verified against when the user is unknown, so that the answer takes as long either way.
_DUMMY = _HASHER.hash("congvu: no such user")


def valid_name(name: str) -> bool:
    """Whether ``name`` may name a user: letters, digits and . _ @ - (64 at most)."""
    return _NAME.fullmatch(name) is not None


def hash_password(password: str) -> str:
    """An Argon2id hash of ``password`` (with its own random salt)."""
    return _HASHER.hash(password)


@dataclass(frozen=True)
class WebUser:
    """One console account."""

    name: str
    role: str  # "auditor" (every unit) or "manager" (``unit`` only)
    unit: str = ""
    password: str = ""  # Argon2 hash; "" signs on only through the trusted header

    def may_see(self, unit: str | None) -> bool:
        """Whether this user may see ``unit``'s pages (None: the whole province's)."""
        return self.role == "auditor" or (unit is not None and unit == self.unit)

    def session_tag(self, secret: str) -> str:
        """What a session of this user carries of the password it logged in with (a keyed
        hash of its hash): a new password ends the sessions opened with the old one."""
        digest = hmac.new(secret.encode(), self.password.encode(), hashlib.sha256)
        return digest.hexdigest()[:32]

    def check(self, password: str) -> bool:
        """Whether ``password`` is this user's (False, too, when it has none)."""
        try:
            return bool(self.password) and _HASHER.verify(self.password, password)
        except (VerificationError, InvalidHashError):
            return False


class UserFile:
    """The users file, read again whenever it changes on disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[float, int] | None = None
        self._users: dict[str, WebUser] = {}

    def users(self) -> dict[str, WebUser]:
        """Every user by name (none when the file does not exist)."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._seen, self._users = None, {}
            return {}
        seen = (stat.st_mtime, stat.st_size)
        if seen != self._seen:
            try:
                self._users = read_users(self.path)
            except ConfigError as exc:
                # Edited by hand and broken: nobody is let in (fail closed) until it is
                # fixed; the admin reads why in the log (and from congvu config check).
                get_logger().error("web.users_invalid", error=str(exc))
                self._users = {}
            self._seen = seen
        return self._users

    def get(self, name: str) -> WebUser | None:
        return self.users().get(name)

    def login(self, name: str, password: str) -> WebUser | None:
        """The user whose name and password these are, else None (as slow either way)."""
        user = self.get(name)
        if user is None:
            WebUser("", "auditor", password=_DUMMY).check(password)
            return None
        return user if user.check(password) else None

    def save(self, users: dict[str, WebUser]) -> None:
        """Write ``users`` (mode 0600, atomically: the console never reads half a file)."""
        lines = []
        for user in sorted(users.values(), key=lambda u: u.name):
            lines.append(f"[users.{json.dumps(user.name)}]")
            lines.append(f"role = {json.dumps(user.role)}")
            if user.unit:
                lines.append(f"unit = {json.dumps(user.unit, ensure_ascii=False)}")
            if user.password:
                lines.append(f"password = {json.dumps(user.password)}")
            lines.append("")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".new")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write("\n".join(lines))
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, self.path)


def read_users(path: Path) -> dict[str, WebUser]:
    """Read and validate a users file (errors name the file and the key)."""
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), "", f"cannot read: {exc}") from exc
    root = TomlReader.from_text(text, str(path))
    table = root.table("users")
    users = {}
    for name in list(table.data):
        if not valid_name(name):
            raise table.error(name, "a user name is letters, digits and . _ @ - (64 at most)")
        entry = table.table(name)
        role = entry.choice("role", ROLES, "manager")
        unit = entry.string("unit", "")
        if role == "manager" and not unit:
            raise entry.error("unit", "a manager sees one unit: name it")
        password = entry.string("password", "")
        if password and not password.startswith("$argon2"):
            raise entry.error("password", "must be an Argon2 hash (congvu web user add)")
        entry.finish()
        users[name] = WebUser(name, role, unit, password)
    table.finish()
    root.finish()
    return users
