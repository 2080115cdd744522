"""A private, real Postfix instance on loopback, used as the downstream MTA in end-to-end tests.

Usage::

    with PostfixDownstream(tmp_path / "pf", port, ["lamdong.gov.vn"]) as pf:
        ...  # send through the gateway, which relays to 127.0.0.1:port
        raw = pf.wait_for_messages(1)[0]

Every message accepted for one of ``domains`` (any local part) lands in the single Maildir
``workdir/mail/inbox/``.  Mail for other domains is refused with ``554 Relay access denied``.

``services`` (master.cf entries) replaces the stock public ``smtp inet`` service, e.g. with a
public smtpd that uses the gateway as its ``smtpd_proxy_filter`` plus the re-injection smtpd
(the caller puts the test ports in; ``port`` is then the one to wait for), and ``settings``
adds or overrides ``main.cf`` parameters: so a test can run the very configuration a page of
the documentation shows.

Requirements: Debian's ``postfix`` package and root (the master daemon must start as root).
Without them :meth:`PostfixDownstream.start` raises :class:`PostfixUnavailable`, which
fixtures can turn into ``pytest.skip``.

Everything lives under ``workdir`` (etc/, queue/, data/, mail/inbox/, maillog) except:

* our config dir is listed in ``alternate_config_directories`` of the default
  ``/etc/postfix/main.cf`` while the instance runs (removed again by :meth:`stop`), and that
  file's mtime is set 10 s into the past after each edit (see :func:`_backdate`);
* parent directories of ``workdir`` that are not searchable by "other" (pytest's
  ``tmp_path`` lies below 0700 directories) get ``o+x`` (search only, no listing), because
  the virtual delivery agent writes the Maildir as uid 65534 and must reach it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pathlib
import re
import shutil
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from types import TracebackType

__all__ = ["PostfixDownstream", "PostfixUnavailable", "main_cf", "replace_once", "shown"]

# Serialises edits of the shared default main.cf between parallel test processes.
_LOCK_FILE = "/tmp/congvu-postfix-downstream.lock"
_DEFAULT_CONF = "/etc/postfix"
_DELIVERY_UID = 65534  # nobody/nogroup: virtual(8) refuses to deliver as root
_MAIL_OWNER = "postfix"


def shown(page: pathlib.Path, marker: str) -> str:
    """The text of the fenced block that follows ``<!-- MARKER -->`` on a docs page: the
    configuration a test (or the chain benchmark) runs is the one the page shows."""
    pattern = rf"^<!--\s*{re.escape(marker)}\s*-->\n+(```+)[^\n]*\n(.*?)^\1[ ]*$"
    found = re.search(pattern, page.read_text("utf-8"), re.MULTILINE | re.DOTALL)
    if not found:
        raise RuntimeError(f"{page}: no block after <!-- {marker} -->")
    return found.group(2)


def replace_once(text: str, old: str, new: str) -> str:
    """``text`` with ``old`` (a regular expression) replaced; it must occur exactly once, so a
    change of the page that the caller cannot follow fails loudly."""
    result, count = re.subn(old, new, text, flags=re.MULTILINE)
    if count != 1:
        raise RuntimeError(f"{old!r} occurs {count} times in the page's snippet, not once")
    return result


def main_cf(text: str) -> dict[str, str]:
    """``name = value`` lines of a main.cf snippet (comments skipped)."""
    pairs = (
        line.split("=", 1)
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )
    return {name.strip(): value.strip() for name, value in pairs}


class PostfixUnavailable(Exception):
    """Postfix is not installed (``postfix``/``postconf`` not on PATH) or we are not root."""


@contextlib.contextmanager
def _default_conf_lock() -> Iterator[None]:
    with open(_LOCK_FILE, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _split_list(value: str) -> list[str]:
    return [item for item in value.replace(",", " ").split() if item]


def _is_postfix_process(pid: int) -> bool:
    """True if ``pid`` runs a Postfix daemon binary (guards against reused PIDs)."""
    try:
        return "/postfix/" in os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return False


def _unchrooted(lines: list[str]) -> list[str]:
    """master.cf lines with every service entry's chroot column set to ``n``."""
    out = []
    for line in lines:
        fields = line.split()
        if line[:1].strip() and not line.startswith("#") and len(fields) >= 8:
            fields[4] = "n"
            out.append("  ".join(fields))
        else:
            out.append(line)
    return out


def _backdate(path: pathlib.Path | str) -> None:
    """Set a config file's mtime into the past.

    Postfix re-reads a main.cf modified within the last second or two in 0.3 s naps until
    it "cools down" (so it never reads a half-written file); without this every postfix
    command right after writing the config stalls ~2 s.
    """
    past = time.time() - 10
    os.utime(path, (past, past))


class PostfixDownstream:
    """One private Postfix instance listening on ``127.0.0.1:port``, delivering to a Maildir."""

    def __init__(
        self,
        workdir: pathlib.Path,
        port: int,
        domains: list[str],
        *,
        services: str | None = None,
        settings: dict[str, str] | None = None,
    ) -> None:
        self.workdir = pathlib.Path(workdir).resolve()
        self.port = port
        self.domains = list(domains)
        self.services = services
        self.settings = dict(settings or {})
        self.conf_dir = self.workdir / "etc"
        self.queue_dir = self.workdir / "queue"
        self.data_dir = self.workdir / "data"
        self.mail_dir = self.workdir / "mail"
        self.maildir = self.mail_dir / "inbox"
        self.log_path = self.workdir / "maillog"
        self._proc: subprocess.Popen[bytes] | None = None
        self._registered = False
        self._master: int | None = None
        # A per-instance token in the banner proves we reached *this* instance, not some
        # other process that happened to hold the port.
        self._banner_token = f"congvu-downstream-{port}-{os.getpid()}-{id(self):x}"

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 20.0) -> None:
        """Write the configuration, start ``postfix start-fg`` and wait until it answers SMTP.

        Raises :class:`PostfixUnavailable` without Postfix or root, and RuntimeError (with
        the maillog tail) if our instance does not greet on the port within ``timeout``.
        """
        if self._proc is not None:
            raise RuntimeError("PostfixDownstream already started")
        if shutil.which("postfix") is None or shutil.which("postconf") is None:
            raise PostfixUnavailable("postfix/postconf not found on PATH (apt-get install postfix)")
        if os.geteuid() != 0:
            raise PostfixUnavailable("a private Postfix instance must be started as root")

        for d in (self.conf_dir, self.queue_dir, self.data_dir, self.maildir):
            d.mkdir(parents=True, exist_ok=True)
        self._write_config()
        self._fix_permissions()
        self._register_alternate_conf(add=True)
        self._registered = True
        try:
            # No syslog here: maillog_file=/dev/stdout + start-fg, stdout appended to a file.
            # Own session: Ctrl-C in the test run must not hit Postfix before stop() does.
            with open(self.log_path, "ab") as log:
                self._proc = subprocess.Popen(
                    ["postfix", "-c", str(self.conf_dir), "start-fg"],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self._wait_listening(timeout)
            self._master = self._master_pid()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the master (and its children), wait for it, deregister the config dir.

        Idempotent; safe to call after a failed :meth:`start`.
        """
        proc, self._proc = self._proc, None
        if proc is not None:
            master_pid, self._master = self._master, None
            subprocess.run(
                ["postfix", "-c", str(self.conf_dir), "stop"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=30,
                check=False,
            )
            try:
                # start-fg (postfix -> postfix-script -> master -s) returns once master exits.
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                # master puts itself and its children in a process group of its own.
                for pgid in (master_pid, proc.pid):
                    if pgid:
                        with contextlib.suppress(ProcessLookupError):
                            os.killpg(pgid, signal.SIGKILL)
                proc.wait(timeout=5)
            if master_pid:
                self._reap_group(master_pid)
        if self._registered:
            self._register_alternate_conf(add=False)
            self._registered = False

    def __enter__(self) -> PostfixDownstream:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ results

    def messages(self) -> list[bytes]:
        """Raw bytes of every message delivered so far (Maildir new/ and cur/), oldest first."""
        files: list[pathlib.Path] = []
        for sub in ("new", "cur"):
            d = self.maildir / sub
            if d.is_dir():
                files.extend(p for p in d.iterdir() if p.is_file())
        files.sort(key=lambda p: (p.stat().st_mtime_ns, p.name))
        return [p.read_bytes() for p in files]

    def wait_for_messages(self, count: int, timeout: float = 15.0) -> list[bytes]:
        """Poll until >= ``count`` messages are delivered; AssertionError with the log if not."""
        deadline = time.monotonic() + timeout
        while True:
            msgs = self.messages()
            if len(msgs) >= count:
                return msgs
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"expected >= {count} delivered message(s) in {self.maildir} within "
                    f"{timeout}s, got {len(msgs)}; maillog tail:\n{self._log_tail()}"
                )
            time.sleep(0.1)

    def maillog(self) -> str:
        """Everything Postfix has logged for this instance so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # ------------------------------------------------------------------ internals

    def _master_pid(self) -> int | None:
        """PID of our running master (from its pid file), checked against /proc."""
        try:
            pid = int((self.queue_dir / "pid" / "master.pid").read_text().strip())
            if _is_postfix_process(pid):
                return pid
        except (OSError, ValueError):
            pass
        return None

    @staticmethod
    def _reap_group(pgid: int, timeout: float = 5.0) -> None:
        """Wait until master's children (same process group) have exited; SIGKILL stragglers.

        They exit by themselves once master is gone.  Orphans are reparented to PID 1, so
        they may linger as zombies for a while; zombies hold no sockets or files.
        """
        deadline = time.monotonic() + timeout
        while True:
            alive = False
            for stat_file in pathlib.Path("/proc").glob("[0-9]*/stat"):
                try:
                    # "pid (comm) state ppid pgrp ..." - comm may contain spaces.
                    fields = stat_file.read_text().rsplit(")", 1)[1].split()
                except (OSError, IndexError):
                    continue
                if fields[0] != "Z" and int(fields[2]) == pgid:
                    alive = _is_postfix_process(int(stat_file.parent.name))
                    if alive:
                        break
            if not alive:
                return
            if time.monotonic() >= deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
                return
            time.sleep(0.05)

    def _log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.maillog().splitlines()[-lines:])

    def _write_config(self) -> None:
        settings = {
            # Newer defaults without compatibility warnings in the log.
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue_dir),
            "data_directory": str(self.data_dir),
            "myhostname": "downstream.test",
            "mydomain": "downstream.test",
            "myorigin": "$myhostname",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mydestination": "",
            "mynetworks": "127.0.0.0/8",
            # The default (permit_mynetworks first) would let 127.0.0.1 relay anywhere;
            # the downstream must only take mail for its own domains.
            "smtpd_relay_restrictions": "reject_unauth_destination",
            "virtual_mailbox_domains": ", ".join(self.domains),
            "virtual_mailbox_base": str(self.mail_dir),
            # Every recipient in every domain goes to one Maildir (trailing / = Maildir).
            "virtual_mailbox_maps": "static:inbox/",
            "virtual_uid_maps": f"static:{_DELIVERY_UID}",
            "virtual_gid_maps": f"static:{_DELIVERY_UID}",
            # No syslog on these machines; start-fg's stdout goes to workdir/maillog.
            "maillog_file": "/dev/stdout",
            "smtpd_banner": f"$myhostname ESMTP {self._banner_token}",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "relayhost": "",
            "biff": "no",
            "append_dot_mydomain": "no",
            # No DNS in tests; bounces to outside senders must not hang on lookups.
            "smtp_dns_support_level": "disabled",
            "smtp_host_lookup": "native",
            # Tests send bursts and expect deferred mail to be retried quickly.
            "in_flow_delay": "0",
            "smtpd_error_sleep_time": "0",
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "5s",
        }
        # Reverse lookups of 127.0.0.1 only cost time (parameter exists since Postfix 3.4).
        probe = subprocess.run(
            ["postconf", "-d", "-h", "smtpd_peername_lookup"],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.returncode == 0 and probe.stdout.strip():
            settings["smtpd_peername_lookup"] = "no"
        settings.update(self.settings)
        main_cf, master_cf = self.conf_dir / "main.cf", self.conf_dir / "master.cf"
        main_cf.write_text("".join(f"{k} = {v}\n" for k, v in settings.items()))
        master_cf.write_text(
            self._rewrite_master_cf(pathlib.Path(_DEFAULT_CONF, "master.cf").read_text())
        )
        _backdate(main_cf)
        _backdate(master_cf)

    def _rewrite_master_cf(self, text: str) -> str:
        """Listen only on 127.0.0.1:port (or run ``services`` instead of the public smtpd);
        run every service unchrooted.

        Chrooted services would run inside our queue dir, which lacks the etc/ and lib/
        copies Debian's init script puts into /var/spool/postfix.
        """
        out: list[str] = []
        skipping = False  # inside the continuation lines of a dropped service
        for line in text.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                out.append(line)
                continue
            if line[0].isspace():  # continuation of the previous service entry
                if not skipping:
                    out.append(line)
                continue
            fields = line.split()
            skipping = False
            if len(fields) < 8:
                out.append(line)
                continue
            if fields[1] == "inet":
                skipping = True  # no submission/smtps/... listeners
                if fields[0] != "smtp":
                    continue
                if self.services is not None:
                    out.extend(_unchrooted(self.services.splitlines()))
                    continue
                skipping = False
                fields[0] = f"127.0.0.1:{self.port}"
            fields[4] = "n"
            out.append("  ".join(fields))
        return "\n".join(out) + "\n"

    def _fix_permissions(self) -> None:
        # virtual(8) creates the Maildir as uid/gid 65534.
        os.chown(self.mail_dir, _DELIVERY_UID, _DELIVERY_UID)
        os.chmod(self.mail_dir, 0o755)
        for path in [self.maildir, *self.maildir.rglob("*")]:
            os.chown(path, _DELIVERY_UID, _DELIVERY_UID)
        # postfix-script check-warn expects data_directory to belong to mail_owner.
        shutil.chown(self.data_dir, user=_MAIL_OWNER)
        os.chmod(self.data_dir, 0o700)
        # The queue directory must be root-owned and not group/other writable;
        # `postfix start` (post-install create-missing) creates its subdirectories.
        os.chown(self.queue_dir, 0, 0)
        os.chmod(self.queue_dir, 0o755)
        for d in (self.workdir, self.conf_dir):
            os.chmod(d, 0o755)
        # uid 65534 must be able to reach workdir/mail: grant search on ancestors.
        for parent in self.workdir.parents:
            mode = os.stat(parent).st_mode
            if not mode & stat.S_IXOTH:
                os.chmod(parent, stat.S_IMODE(mode) | stat.S_IXOTH)

    def _register_alternate_conf(self, *, add: bool) -> None:
        """Add/remove our conf dir in the default main.cf's ``alternate_config_directories``.

        ``postfix -c DIR`` refuses to run a configuration directory that the default
        configuration does not list there (a guard against privileged programs being
        pointed at untrusted config).  Other entries are kept as they are.
        """
        me = str(self.conf_dir)
        with _default_conf_lock():
            current = subprocess.run(
                ["postconf", "-c", _DEFAULT_CONF, "-h", "alternate_config_directories"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            entries = _split_list(current)
            if add and me not in entries:
                entries.append(me)
            elif not add and me in entries:
                entries = [e for e in entries if e != me]
            else:
                return
            subprocess.run(
                [
                    "postconf",
                    "-c",
                    _DEFAULT_CONF,
                    "-e",
                    f"alternate_config_directories = {', '.join(entries)}",
                ],
                capture_output=True,
                check=True,
            )
            _backdate(pathlib.Path(_DEFAULT_CONF, "main.cf"))

    def _wait_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last_error = "no attempt"
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"postfix start-fg exited with {self._proc.returncode}; "
                    f"maillog tail:\n{self._log_tail()}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    banner = s.recv(512).decode(errors="replace")
                    with contextlib.suppress(OSError):
                        s.sendall(b"QUIT\r\n")
                if self._banner_token in banner:
                    return
                last_error = f"foreign banner on port {self.port}: {banner.strip()!r}"
            except OSError as exc:
                last_error = str(exc)
            time.sleep(0.1)
        raise RuntimeError(
            f"postfix did not listen on 127.0.0.1:{self.port} within {timeout}s "
            f"({last_error}); maillog tail:\n{self._log_tail()}"
        )
