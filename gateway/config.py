"""The gateway's own configuration (listening, relaying, logging): one TOML file, or defaults.

Deployment settings live here; what is allowed lives in the policy file it names. With no file
at all the embedded defaults run a working gateway on 127.0.0.1:2525 that delivers into
``./var/maildir`` and records decisions in ``./var/decisions.sqlite``.

Relative paths in a configuration file are resolved against that file's folder (so a config
and its policy can travel together); the defaults are relative to the working directory.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from policies.addresses import AddressError, canonical_domain
from policies.reader import ConfigError, TomlReader

__all__ = [
    "CONFIG_ENV",
    "SYSTEM_CONFIG",
    "ConfigError",
    "DownstreamConfig",
    "GatewayConfig",
    "WebConfig",
    "find_config",
    "in_networks",
    "load_config",
]

CONFIG_ENV = "CONGVU_CONFIG"
SYSTEM_CONFIG = Path("/etc/congvu/congvu.toml")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_HOSTNAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)


def _default_hostname() -> str:
    name = socket.getfqdn()
    return name if _HOSTNAME.fullmatch(name) else "localhost"


@dataclass(frozen=True)
class Limits:
    """Bounds on what one client may ask of the gateway (each refused with a clear code)."""

    max_recipients: int = 100  # RCPT TO per message; more get 452 4.5.3 (RFC 5321: at least 100)
    max_received: int = 30  # Received headers; more means a mail loop (554 5.4.6)
    max_header_bytes: int = 256 * 1024  # header section size
    max_header_fields: int = 1000
    max_errors: int = 10  # error replies in one session before it is closed (421)
    max_sessions: int = 500  # concurrent sessions in all
    max_sessions_per_ip: int = 20  # concurrent sessions from one client address
    data_timeout: float = 600.0  # seconds for the whole DATA section (RFC 5321 4.5.3.2.6)
    greet_pause: float = 0.0  # seconds to wait before the greeting; talking first: 554


@dataclass(frozen=True)
class DownstreamConfig:
    """Where accepted mail goes: ``smtp://host:port`` or a local Maildir."""

    kind: str  # "smtp" or "maildir"
    host: str = ""
    port: int = 25
    maildir: Path = Path("var/maildir")
    timeout: float = 60.0
    starttls: str = "none"  # none | opportunistic | required
    helo: str = ""
    xforward: bool = False  # tell the downstream the real client (XFORWARD), if it offers it
    connection_cache: float = 2.0  # seconds an idle connection is kept for reuse (0: never)

    def describe(self) -> str:
        """The target in URL form, for logs."""
        return (
            f"smtp://{self.host}:{self.port}" if self.kind == "smtp" else f"maildir:{self.maildir}"
        )


@dataclass(frozen=True)
class WebConfig:
    """``congvu web``, the auditors' console (:mod:`gateway.web`)."""

    listen: str = "127.0.0.1:8026"
    users: Path = Path("var/web-users.toml")  # accounts: ``congvu web user add``
    secret: Path = Path("var/web-secret")  # signs the session cookies; made when missing
    access_log: Path = Path("var/web-access.log")  # every page seen, by whom; "-": stdout
    behind_tls: bool = False  # served as https (a TLS proxy in front): cookies are Secure
    session_hours: float = 8.0  # a login lasts this long at most
    refresh: float = 300.0  # seconds between readings of the figures kept ready
    trusted_header: str = ""  # e.g. X-Remote-User: the proxy's single sign-on names the user
    trusted_proxies: tuple[IPNetwork, ...] = ()  # the only clients that header is taken from


@dataclass(frozen=True)
class GatewayConfig:
    """Validated gateway configuration."""

    source: str = "<embedded defaults>"
    listen_host: str = "127.0.0.1"
    listen_port: int = 2525
    hostname: str = field(default_factory=_default_hostname)
    max_message_size: int = 35 * 1024 * 1024
    timeout: float = 300.0
    tls_cert: Path | None = None
    tls_key: Path | None = None
    local_domains: tuple[str, ...] = ("gov.vn",)
    trusted_networks: tuple[IPNetwork, ...] = (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
    xforward_hosts: tuple[IPNetwork, ...] = ()
    downstream: DownstreamConfig = DownstreamConfig("maildir")
    notice_relay: DownstreamConfig | None = None  # None: notices go through the downstream
    policy_file: Path | None = None
    validation_workers: int = 0  # 0: one per core
    validation_timeout: float = 10.0
    max_document_bytes: int = 25 * 1024 * 1024
    dns_nameservers: tuple[str, ...] = ()  # empty: the system's resolv.conf
    dns_timeout: float = 5.0
    limits: Limits = field(default_factory=Limits)
    metrics_listen: str = "127.0.0.1:9125"  # "" turns the metrics and health endpoint off
    milter_listen: str = ""  # HOST:PORT for Postfix's smtpd_milters; "" turns the milter off
    proxy: bool = True  # listen as the SMTP proxy ([server] listen); congvu milter: False
    workers: int = 1  # SMTP processes sharing the port (SO_REUSEPORT) under one supervisor
    worker_index: int | None = None  # set in a worker process: which one it is (from 1)
    log_file: str = "-"
    log_level: str = "info"
    store_path: Path = Path("var/decisions.sqlite")
    store_url: str = ""  # postgresql://...: one store shared by several gateways
    web: WebConfig = field(default_factory=WebConfig)

    def is_trusted(self, ip: str) -> bool:
        """True when ``ip`` is in a trusted network (may relay to any recipient)."""
        return in_networks(ip, self.trusted_networks)

    def may_xforward(self, ip: str) -> bool:
        """True when ``ip`` is a proxy (Postfix smtpd_proxy_filter) allowed to send XFORWARD."""
        return in_networks(ip, self.xforward_hosts)


@functools.lru_cache(maxsize=4096)  # asked for each RCPT; parsing the address is the cost
def in_networks(ip: str, networks: tuple[IPNetwork, ...]) -> bool:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return any(address in net for net in networks)


def _networks(reader: TomlReader, key: str, default: list[str]) -> list[IPNetwork]:
    networks: list[IPNetwork] = []
    for item in reader.strings(key, default):
        try:
            networks.append(ipaddress.ip_network(item, strict=True))
        except ValueError as exc:
            raise reader.error(key, f"{item!r}: {exc}") from exc
    return networks


def _path(reader: TomlReader, key: str, base: Path, default: Path | None) -> Path | None:
    value = reader.string(key, "")
    if not value:
        return default
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def _listen(reader: TomlReader) -> tuple[str, int]:
    return _listen_value(reader, "listen", reader.string("listen", "127.0.0.1:2525"))


def _listen_value(reader: TomlReader, key: str, value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise reader.error(key, f"must be HOST:PORT such as 127.0.0.1:2525, got {value!r}")
    return host, int(port)


def _downstream(
    reader: TomlReader, base: Path, hostname: str, *, forwards: bool = True
) -> DownstreamConfig:
    """``[downstream]``, or ``[notices]`` (``forwards`` False: a notice is the gateway's own
    mail, with no client to name in XFORWARD, so ``xforward`` there is an unknown key)."""
    url = reader.string("url", "")
    timeout = reader.number("timeout", 60.0, minimum=1.0)
    starttls = reader.choice("starttls", ("none", "opportunistic", "required"), "none")
    helo = reader.string("helo", hostname)
    xforward = reader.boolean("xforward", False) if forwards else False
    connection_cache = reader.number("connection_cache", 2.0, minimum=0.0)
    reader.finish()
    if not url:
        return DownstreamConfig("maildir", maildir=Path("var/maildir"), timeout=timeout, helo=helo)
    if url.startswith("maildir:"):
        path = Path(url.removeprefix("maildir:")).expanduser()
        return DownstreamConfig(
            "maildir",
            maildir=path if path.is_absolute() else base / path,
            timeout=timeout,
            helo=helo,
        )
    parts = urlsplit(url)
    try:
        port = parts.port or 25
    except ValueError as exc:
        raise reader.error("url", f"bad port in {url!r}") from exc
    if parts.username or parts.password or parts.query or parts.fragment:
        raise reader.error("url", "credentials, queries and fragments are not supported")
    if parts.scheme != "smtp" or not parts.hostname or parts.path not in ("", "/"):
        raise reader.error("url", f"must be smtp://HOST:PORT or maildir:PATH, got {url!r}")
    return DownstreamConfig(
        "smtp",
        host=parts.hostname,
        port=port,
        timeout=timeout,
        starttls=starttls,
        helo=helo,
        xforward=xforward,
        connection_cache=connection_cache,
    )


def find_config(explicit: Path | None = None) -> Path | None:
    """The configuration file every command uses: ``explicit`` (``--config``), else
    ``$CONGVU_CONFIG``, else ``./congvu.toml``, else ``/etc/congvu/congvu.toml``; None when
    there is none (the embedded defaults).

    One order for every command, so that ``congvu log tail`` on the server (or in the
    container) reads the store the running service writes, without being told where.
    A file named by ``--config`` or the variable must exist: a typo is an error, not a
    silent fall-back to the defaults.
    """
    if explicit is not None:
        return explicit
    if named := os.environ.get(CONFIG_ENV):
        return Path(named)
    for candidate in (Path("congvu.toml"), SYSTEM_CONFIG):
        if candidate.is_file():
            return candidate
    return None


def load_config(path: str | Path | None = None) -> GatewayConfig:
    """Read and validate the configuration at ``path``; None gives the embedded defaults."""
    if path is None:
        return GatewayConfig()
    source = str(path)
    try:
        text = Path(path).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(source, "", f"cannot read: {exc}") from exc
    base = Path(path).resolve().parent
    root = TomlReader.from_text(text, source)

    server = root.table("server")
    host, port = _listen(server)
    hostname = server.string("hostname", "") or _default_hostname()
    if not _HOSTNAME.fullmatch(hostname):
        # It goes into HELO, Received and Authentication-Results: nothing but a host name.
        raise server.error(
            "hostname", f"must be a host name such as gw.lamdong.gov.vn, got {hostname!r}"
        )
    max_size = server.integer("max_message_size", 35 * 1024 * 1024, minimum=1024)
    timeout = server.number("timeout", 300.0, minimum=1.0)
    raw_workers = server.get("workers", (int, str), 1, 'a number of processes, or "auto"')
    if raw_workers == "auto":
        smtp_workers = os.cpu_count() or 1
    elif isinstance(raw_workers, int) and 1 <= raw_workers <= 64:
        smtp_workers = raw_workers
    else:
        raise server.error("workers", f'must be 1 to 64 or "auto", got {raw_workers!r}')
    tls_cert = _path(server, "tls_cert", base, None)
    tls_key = _path(server, "tls_key", base, None)
    if (tls_cert is None) != (tls_key is None):
        raise server.error("tls_cert", "tls_cert and tls_key go together")
    if tls_cert is not None and tls_key is not None:
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(tls_cert, tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise server.error("tls_cert", f"cannot load {tls_cert} with {tls_key}: {exc}") from exc
    server.finish()

    relay = root.table("relay")
    local_domains = []
    for item in relay.strings("local_domains", ["gov.vn"]):
        try:
            local_domains.append(canonical_domain(item))
        except AddressError as exc:
            raise relay.error("local_domains", f"{item!r}: {exc}") from exc
    if not local_domains:
        raise relay.error("local_domains", "name at least one domain the gateway receives for")
    networks = _networks(relay, "trusted_networks", ["127.0.0.0/8", "::1/128"])
    xforward_hosts = _networks(relay, "xforward_hosts", [])
    relay.finish()

    downstream = _downstream(root.table("downstream"), base, hostname)
    # Refusal notices go through the downstream server unless a submission relay is named.
    notices_table = root.table("notices")
    if notices_table.has("url") and not notices_table.data["url"]:
        raise notices_table.error("url", "give smtp://HOST:PORT or maildir:PATH, or leave it out")
    notice_relay = (
        _downstream(notices_table, base, hostname, forwards=False)
        if notices_table.has("url")
        else None
    )
    if notice_relay is None:
        notices_table.finish()

    policy = root.table("policy")
    policy_file = _path(policy, "file", base, None)
    policy.finish()

    metrics_table = root.table("metrics")
    metrics_listen = metrics_table.string("listen", "127.0.0.1:9125")
    if metrics_listen:
        _listen(metrics_table)  # validates HOST:PORT (the key is read again: same value)
    metrics_table.finish()

    milter_table = root.table("milter")
    milter_listen = milter_table.string("listen", "")
    if milter_listen:
        _listen(milter_table)  # validates HOST:PORT (the key is read again: same value)
    milter_table.finish()

    limits_table = root.table("limits")
    defaults = Limits()
    limits = Limits(
        max_recipients=limits_table.integer("max_recipients", defaults.max_recipients, minimum=100),
        max_received=limits_table.integer("max_received", defaults.max_received, minimum=5),
        max_header_bytes=limits_table.integer(
            "max_header_bytes", defaults.max_header_bytes, minimum=8192
        ),
        max_header_fields=limits_table.integer(
            "max_header_fields", defaults.max_header_fields, minimum=50
        ),
        max_errors=limits_table.integer("max_errors", defaults.max_errors, minimum=1),
        max_sessions=limits_table.integer("max_sessions", defaults.max_sessions, minimum=1),
        max_sessions_per_ip=limits_table.integer(
            "max_sessions_per_ip", defaults.max_sessions_per_ip, minimum=1
        ),
        data_timeout=limits_table.number("data_timeout", defaults.data_timeout, minimum=1.0),
        greet_pause=limits_table.number("greet_pause", defaults.greet_pause, minimum=0.0),
    )
    limits_table.finish()

    validation = root.table("validation")
    workers = validation.integer("workers", 0)
    validation_timeout = validation.number("timeout", 10.0, minimum=0.5)
    max_document_bytes = validation.integer("max_document_bytes", 25 * 1024 * 1024, minimum=1024)
    validation.finish()

    dns_table = root.table("dns")
    nameservers = dns_table.strings("nameservers", [])
    for ns in nameservers:
        if ns.startswith("["):  # [IPv6]:PORT
            host, _, rest = ns[1:].partition("]")
            ns_port = rest.removeprefix(":")
        elif ns.count(":") == 1:  # IPv4:PORT
            host, _, ns_port = ns.partition(":")
        else:  # a bare IPv4 or IPv6 address
            host, ns_port = ns, "53"
        try:
            ipaddress.ip_address(host)
            if not (ns_port.isdigit() and 0 < int(ns_port) < 65536):
                raise ValueError(ns_port)
        except ValueError as exc:
            raise dns_table.error(
                "nameservers", f"{ns!r} is not IP, IPv4:PORT or [IPv6]:PORT"
            ) from exc
    dns_timeout = dns_table.number("timeout", 5.0, minimum=0.1)
    dns_table.finish()

    log = root.table("log")
    log_file = log.string("file", "-")
    if log_file != "-":
        log_file = str(_path(log, "file", base, None))
    log_level = log.choice("level", ("debug", "info", "warning", "error"), "info")
    log.finish()

    store = root.table("store")
    store_path = _path(store, "sqlite", base, Path("var/decisions.sqlite"))
    store_url = store.string("url", "")
    if store_url and not store_url.startswith(("postgresql://", "postgres://")):
        raise store.error("url", f"must be postgresql://..., got {store_url!r}")
    if store_url and store.has("sqlite"):
        raise store.error("url", "give either sqlite or url, not both")
    store.finish()
    web = _web(root.table("web"), base)
    root.finish()

    return GatewayConfig(
        source=source,
        listen_host=host,
        listen_port=port,
        hostname=hostname,
        max_message_size=max_size,
        timeout=timeout,
        workers=smtp_workers,
        tls_cert=tls_cert,
        tls_key=tls_key,
        local_domains=tuple(local_domains),
        trusted_networks=tuple(networks),
        xforward_hosts=tuple(xforward_hosts),
        downstream=downstream,
        notice_relay=notice_relay,
        policy_file=policy_file,
        validation_workers=workers,
        validation_timeout=validation_timeout,
        max_document_bytes=max_document_bytes,
        dns_nameservers=tuple(nameservers),
        dns_timeout=dns_timeout,
        limits=limits,
        metrics_listen=metrics_listen,
        milter_listen=milter_listen,
        log_file=log_file,
        log_level=log_level,
        store_path=store_path or Path("var/decisions.sqlite"),
        store_url=store_url,
        web=web,
    )


def _web(reader: TomlReader, base: Path) -> WebConfig:
    """``[web]``: the console's listening address, accounts, secret, log and sign-on."""
    defaults = WebConfig()
    listen = reader.string("listen", defaults.listen)
    _listen_value(reader, "listen", listen)
    access_log = (
        Path("-")
        if reader.string("access_log", "") == "-"
        else _path(reader, "access_log", base, None) or defaults.access_log
    )
    header = reader.string("trusted_header", "")
    if header and not re.fullmatch(r"[A-Za-z0-9-]+", header):
        raise reader.error("trusted_header", f"must be a header name, got {header!r}")
    proxies = _networks(reader, "trusted_proxies", [])
    if header and not proxies:
        raise reader.error(
            "trusted_proxies", "name the proxies trusted_header is taken from (it is forged else)"
        )
    web = WebConfig(
        listen=listen,
        users=_path(reader, "users", base, None) or defaults.users,
        secret=_path(reader, "secret", base, None) or defaults.secret,
        access_log=access_log,
        behind_tls=reader.boolean("behind_tls", defaults.behind_tls),
        session_hours=reader.number("session_hours", defaults.session_hours, minimum=0.1),
        refresh=reader.number("refresh", defaults.refresh, minimum=10.0),
        trusted_header=header,
        trusted_proxies=tuple(proxies),
    )
    reader.finish()
    return web
