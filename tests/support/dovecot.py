"""A private, real Dovecot on loopback, only as Postfix's SASL authentication service (the
submission port's logins), with a password file of test accounts.

Usage::

    with DovecotAuth(tmp_path / "dovecot", port, {"a@lamdong.gov.vn": "secret"}) as auth:
        ...  # Postfix: smtpd_sasl_type = dovecot, smtpd_sasl_path = inet:127.0.0.1:PORT

Needs Debian's ``dovecot-core`` and root (Dovecot's master starts as root and drops to its
own users). Without them :meth:`DovecotAuth.start` raises :class:`DovecotUnavailable`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

__all__ = ["DovecotAuth", "DovecotUnavailable"]


class DovecotUnavailable(Exception):
    """Dovecot is not installed, or we are not root."""


class DovecotAuth:
    """Dovecot's auth service on ``127.0.0.1:port``, for the accounts given."""

    def __init__(
        self,
        workdir: Path,
        port: int,
        accounts: dict[str, str],
        *,
        imap_port: int = 0,
        pop3_port: int = 0,
    ) -> None:
        self.workdir = workdir.resolve()
        self.port = port
        self.accounts = dict(accounts)
        self.imap_port = imap_port  # with a port: also an IMAP (POP3) server, for its logins
        self.pop3_port = pop3_port
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        """Dovecot's own log file (``log_path``): logins, as a mail server writes them."""
        return self.workdir / "dovecot.log"

    def _mail_services(self) -> str:
        """Configuration for the IMAP and POP3 servers asked for (none by default)."""
        protocols = [p for p, port in (("imap", self.imap_port), ("pop3", self.pop3_port)) if port]
        if not protocols:
            return "protocols = none\n"
        (self.workdir / "home").mkdir(exist_ok=True)
        (self.workdir / "home").chmod(0o777)  # written by the mail processes, as nobody
        text = f"protocols = {' '.join(protocols)}\nmail_location = maildir:~/Maildir\n"
        for protocol in protocols:
            port = self.imap_port if protocol == "imap" else self.pop3_port
            text += (
                f"service {protocol}-login {{\n  inet_listener {protocol} {{\n"
                f"    address = 127.0.0.1\n    port = {port}\n  }}\n"
                + (f"  inet_listener {protocol}s {{\n    port = 0\n  }}\n")
                + "}\n"
            )
        return text

    def start(self, timeout: float = 15.0) -> None:
        """Write the configuration and start ``dovecot -F``; wait until the port answers."""
        if shutil.which("dovecot") is None:
            raise DovecotUnavailable("dovecot not found on PATH (apt-get install dovecot-core)")
        if os.geteuid() != 0:
            raise DovecotUnavailable("a private Dovecot must be started as root")
        for name in ("run", "state"):
            (self.workdir / name).mkdir(parents=True, exist_ok=True)
        users = self.workdir / "users"
        users.write_text(
            "".join(f"{login}:{{PLAIN}}{password}\n" for login, password in self.accounts.items())
        )
        users.chmod(0o644)  # read by the auth worker, which runs as dovecot
        config = self.workdir / "dovecot.conf"
        config.write_text(
            f"base_dir = {self.workdir}/run\n"
            f"state_dir = {self.workdir}/state\n"
            f"log_path = {self.workdir}/dovecot.log\n"
            + self._mail_services()
            + "listen = 127.0.0.1\n"
            "ssl = no\n"
            "disable_plaintext_auth = no\n"
            "auth_mechanisms = plain login\n"
            "passdb {\n  driver = passwd-file\n"
            f"  args = scheme=PLAIN username_format=%u {users}\n}}\n"
            "userdb {\n  driver = static\n"
            f"  args = uid=nobody gid=nogroup home={self.workdir}/home/%u\n}}\n"
            "service auth {\n  inet_listener {\n    address = 127.0.0.1\n"
            f"    port = {self.port}\n  }}\n}}\n"
        )
        with open(self.workdir / "stdout.log", "ab") as out:
            self._proc = subprocess.Popen(
                ["dovecot", "-c", str(config), "-F"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self._proc.poll() is not None or time.monotonic() > deadline:
                log = self.workdir / "dovecot.log"
                tail = log.read_text()[-2000:] if log.exists() else ""
                self.stop()
                raise RuntimeError(f"dovecot did not start on {self.port}:\n{tail}")
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop the master we started (it stops its own children)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def __enter__(self) -> DovecotAuth:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
