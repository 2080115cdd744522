"""The policy file: TOML, validated strictly, errors naming the file, the line and the key.

A policy file looks like ``policies/data/default.toml`` (which ships as the default)::

    [policy]            name, help_contact
    [domains]           official, personal, personal_add, personal_remove
    [citations]         reason code = directive text (overrides the reason table's default)
    [[rules]]           id, mode, enforce_from, the rule's own options (file order = run order)

Unknown keys are errors: a misspelt option must never silently fall back to a default.
:class:`TomlReader` is also what the gateway uses for its own configuration file.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from importlib import resources
from pathlib import Path
from typing import Any

from policies.addresses import AddressError, canonical_domain, domain_in, parse_addr_spec
from policies.model import Mode
from policies.reasons import REASONS

__all__ = [
    "VIETNAM_TIME",
    "AdvisoryPolicy",
    "ConfigError",
    "DocumentPolicy",
    "NoticePolicy",
    "Policy",
    "RuleConfig",
    "TomlReader",
    "TrustPolicy",
    "builtin_personal_providers",
    "load_policy",
    "parse_policy",
]

VIETNAM_TIME = timezone(timedelta(hours=7), "ICT")  # enforce_from dates are local dates; no DST


class ConfigError(ValueError):
    """A configuration or policy file is invalid; the message names file, line and key."""

    def __init__(self, source: str, key: str, problem: str, line: int | None = None) -> None:
        self.source, self.key, self.problem, self.line = source, key, problem, line
        where = f"{source}:{line}" if line else source
        super().__init__(f"{where}: {key}: {problem}" if key else f"{where}: {problem}")


def _locate(text: str, path: list[str | int]) -> int | None:
    """Best-effort line number of ``path`` (e.g. ``["rules", 1, "mode"]``) in TOML ``text``."""
    *table, last = path
    header: list[str | int] = []
    counts: dict[str, int] = {}
    table_line: int | None = None  # where the key's table starts: the answer if the key is absent
    header_re = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
    for number, line in enumerate(text.splitlines(), start=1):
        m = header_re.match(line)
        if m:
            names: list[str | int] = [p.strip().strip('"') for p in m.group(2).split(".")]
            if m.group(1) == "[[":
                key = ".".join(str(n) for n in names)
                counts[key] = counts.get(key, -1) + 1
                names.append(counts[key])
            header = names
            if header == path:
                return number
            if header == table:
                table_line = number
            continue
        if (
            header == table
            and isinstance(last, str)
            and re.match(rf'^\s*"?{re.escape(last)}"?\s*=', line)
        ):
            return number
    return table_line if table else None


class TomlReader:
    """Reads one TOML table, type-checking each key and refusing keys nobody asked for."""

    def __init__(
        self, data: Mapping[str, Any], source: str, text: str, path: list[str | int] | None = None
    ) -> None:
        self.data, self.source, self.text = data, source, text
        self.path: list[str | int] = path or []
        self._seen: set[str] = set()

    @classmethod
    def from_text(cls, text: str, source: str) -> TomlReader:
        """Parse TOML text; a syntax error becomes a :class:`ConfigError` with its line."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            # Python 3.11's TOMLDecodeError has no lineno attribute; its message has the line.
            found = re.search(r"at line (\d+)", str(exc))
            line = int(found.group(1)) if found else None
            raise ConfigError(source, "", f"not valid TOML: {exc}", line) from exc
        return cls(data, source, text)

    def _name(self, key: str | int | None = None) -> str:
        parts = [*self.path, key] if key is not None else self.path
        out = ""
        for p in parts:
            out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
        return out

    def error(self, key: str | int | None, problem: str) -> ConfigError:
        """A :class:`ConfigError` for ``key`` in this table, with its line when it can be found."""
        path = [*self.path, key] if key is not None else self.path
        return ConfigError(self.source, self._name(key), problem, _locate(self.text, path))

    def has(self, key: str) -> bool:
        """True when ``key`` is present."""
        return key in self.data

    def get(self, key: str, kind: type | tuple[type, ...], default: Any, what: str) -> Any:
        """The value of ``key`` if it is of ``kind`` (described as ``what``), else ``default``."""
        self._seen.add(key)
        if key not in self.data:
            return default
        value = self.data[key]
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise self.error(key, f"must be {what}, got {value!r}")
        if not isinstance(value, kind):
            raise self.error(key, f"must be {what}, got {value!r}")
        return value

    def string(self, key: str, default: str = "") -> str:
        """A string value."""
        value: str = self.get(key, str, default, "a string")
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        """A string that must be one of ``choices``."""
        value = self.string(key, default)
        if value not in choices:
            raise self.error(key, f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    def integer(self, key: str, default: int, minimum: int = 0) -> int:
        """An integer value not below ``minimum``."""
        value: int = self.get(key, int, default, "an integer")
        if value < minimum:
            raise self.error(key, f"must be at least {minimum}, got {value}")
        return value

    def number(self, key: str, default: float, minimum: float = 0.0) -> float:
        """A number (integer or float) not below ``minimum``."""
        value = float(self.get(key, (int, float), default, "a number"))
        if value < minimum:
            raise self.error(key, f"must be at least {minimum}, got {value}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        """A boolean value."""
        value: bool = self.get(key, bool, default, "true or false")
        return value

    def strings(self, key: str, default: list[str] | None = None) -> list[str]:
        """A list of strings."""
        value = self.get(key, list, list(default or []), "a list of strings")
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise self.error(key, f"item {i + 1} must be a string, got {item!r}")
        return list(value)

    def date(self, key: str) -> date | None:
        """A TOML local date (``2027-01-01``), or None when absent."""
        value = self.get(key, date, None, "a date such as 2027-01-01")
        if isinstance(value, datetime):
            raise self.error(key, f"must be a date such as 2027-01-01, got {value!r}")
        return value  # type: ignore[no-any-return]

    def table(self, key: str) -> TomlReader:
        """A sub-table (empty when absent)."""
        value = self.get(key, dict, {}, "a table")
        return TomlReader(value, self.source, self.text, [*self.path, key])

    def tables(self, key: str) -> list[TomlReader]:
        """An array of tables (``[[key]]``)."""
        value = self.get(key, list, [], "an array of tables ([[...]])")
        readers = []
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                raise self.error(key, f"item {i + 1} must be a table")
            readers.append(TomlReader(item, self.source, self.text, [*self.path, key, i]))
        return readers

    def unread(self) -> list[str]:
        """Keys present but not read so far."""
        return [k for k in self.data if k not in self._seen]

    def finish(self) -> None:
        """Refuse any key that was not read: unknown keys are errors."""
        for key in self.unread():
            raise self.error(key, "unknown key")


@dataclass(frozen=True)
class RuleConfig:
    """One ``[[rules]]`` entry: which rule, how it is applied, and its options."""

    id: str
    mode: Mode
    enforce_from: date | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    def effective_mode(self, now: datetime) -> Mode:
        """``enforce`` before ``enforce_from`` (Vietnam local date) acts as ``monitor``."""
        if self.mode is Mode.ENFORCE and self.enforce_from is not None:
            today = now.astimezone(VIETNAM_TIME).date()
            if today < self.enforce_from:
                return Mode.MONITOR
        return self.mode


DOCUMENT_TYPES = (
    "application/pdf",
    "application/msword",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.oasis.opendocument.text",
    "application/rtf",
    "application/vnd.ms-excel",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.oasis.opendocument.spreadsheet",
    "application/vnd.ms-powerpoint",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "application/vnd.oasis.opendocument.presentation",
)
# The directive's exempt kinds a sender may declare (secret documents are not sent by e-mail).
DOCUMENT_CLASSES = {
    "ban-do": "Bản đồ / map",
    "ban-ve-thiet-ke": "Bản vẽ thiết kế / design drawing",
    "quy-hoach": "Tài liệu quy hoạch / planning document",
    "an-pham": "Ấn phẩm, vật phẩm / publication",
}
EXEMPT_EXTENSIONS = (".dwg", ".dxf", ".dgn", ".kmz", ".kml", ".shp", ".shx", ".dbf", ".prj")
# Containers the gateway cannot look into: treated as documents that cannot be checked.
# (Zip archives are opened one level and their documents judged; OOXML/ODF are documents.)
OPAQUE_TYPES = (
    "application/ms-tnef",
    "application/vnd.ms-tnef",
    "application/x-rar-compressed",
    "application/vnd.rar",
    "application/x-7z-compressed",
)


# Senders whose mail to an official address shows the address was used to register on a
# social network or an e-banking service, which the directives forbid (counted, not refused).
SERVICE_DOMAINS = (
    "facebookmail.com",
    "facebook.com",
    "zalo.me",
    "tiktok.com",
    "account.tiktok.com",
    "twitter.com",
    "x.com",
    "instagram.com",
    "linkedin.com",
    "shopee.vn",
    "lazada.vn",
    "vietcombank.com.vn",
    "bidv.com.vn",
    "vietinbank.vn",
    "agribank.com.vn",
    "techcombank.com.vn",
    "mbbank.com.vn",
    "momo.vn",
    "zalopay.vn",
)


@dataclass(frozen=True)
class AdvisoryPolicy:
    """What is counted (never refused) as a sign of misuse of official addresses."""

    service_domains: tuple[str, ...] = SERVICE_DOMAINS


@dataclass(frozen=True)
class DocumentPolicy:
    """Which attachments are documents, and which the sender may declare exempt."""

    types: frozenset[str] = frozenset(DOCUMENT_TYPES)
    exempt_extensions: tuple[str, ...] = EXEMPT_EXTENSIONS
    classes: Mapping[str, str] = field(default_factory=lambda: dict(DOCUMENT_CLASSES))
    class_header: str = "X-Document-Class"
    # Word's "Save as PDF" writes hybrid cross-reference tables; readers could in theory
    # disagree on such a file's content, but refusing them would refuse most real documents.
    allow_hybrid_xref: bool = True
    opaque_types: frozenset[str] = frozenset(OPAQUE_TYPES)


@dataclass(frozen=True)
class TrustPolicy:
    """Which trust store signatures must chain to, and how revocation is treated.

    ``revocation``: ``hard-fail`` (status must be established: a stale CRL is a temporary
    failure, an unknown status is handled by ``unknown_revocation``), ``soft-fail`` (a
    revoked certificate fails; unknown status passes, recorded) or ``off``.
    """

    store: str = "builtin"  # or a folder with trust/, intermediates/ and crl/
    revocation: str = "soft-fail"
    unknown_revocation: str = "tempfail"  # under hard-fail: "tempfail" or "reject"


def _builtin_template(name: str) -> str:
    return resources.files("policies").joinpath("data", "notices", name).read_text("utf-8")


@dataclass(frozen=True)
class NoticePolicy:
    """Refusal notices to internal senders: on or off, rate, sender, templates."""

    enabled: bool = True
    advisory_in_monitor: bool = False  # monitor mode: "this will be refused from <date>"
    rate_per_hour: int = 10  # notices to one address per hour, at most
    from_address: str = ""  # "" = MAILER-DAEMON@<the gateway's host name>
    templates: str = "builtin"  # or a folder with notice.txt.j2 and notice.html.j2
    text_template: str = field(default_factory=lambda: _builtin_template("notice.txt.j2"))
    html_template: str = field(default_factory=lambda: _builtin_template("notice.html.j2"))


@dataclass(frozen=True)
class Policy:
    """A validated policy: what rules run, in which order and mode, with which data."""

    source: str
    sha256: str
    name: str
    help_contact: str
    official_domains: tuple[str, ...]
    personal_providers: frozenset[str]
    citations: Mapping[str, str]
    rules: tuple[RuleConfig, ...]
    documents: DocumentPolicy = DocumentPolicy()
    trust: TrustPolicy = TrustPolicy()
    notices: NoticePolicy = field(default_factory=NoticePolicy)
    advisories: AdvisoryPolicy = AdvisoryPolicy()
    keep_days: int = 400  # decision records kept at least this long (a scoring year and more)
    min_usage_rate: float = 0.0  # a unit below this usage rate (%) is listed as non-compliant

    def is_official(self, domain: str) -> bool:
        """True when ``domain`` is one of the official domains or a subdomain of one."""
        return domain_in(domain, self.official_domains)

    def is_personal(self, domain: str) -> bool:
        """True when ``domain`` belongs to a personal mail provider (or a subdomain of one)."""
        try:
            labels = canonical_domain(domain).split(".")
        except AddressError:
            return False
        return any(".".join(labels[i:]) in self.personal_providers for i in range(len(labels)))

    def citation(self, code: str) -> str:
        """The directive text cited for ``code``: the policy's override, else the table's."""
        return self.citations.get(code) or REASONS[code].directive


def builtin_personal_providers() -> frozenset[str]:
    """The maintained list of personal mail providers shipped in ``policies/data``."""
    text = resources.files("policies").joinpath("data/personal_providers.txt").read_text("utf-8")
    names = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return frozenset(canonical_domain(n) for n in names if n)


def _domains(reader: TomlReader, key: str, default: list[str] | None = None) -> list[str]:
    out = []
    for item in reader.strings(key, default):
        try:
            out.append(canonical_domain(item))
        except AddressError as exc:
            raise reader.error(key, f"{item!r}: {exc}") from exc
    return out


def _read_documents(reader: TomlReader) -> DocumentPolicy:
    types = reader.strings("types", list(DOCUMENT_TYPES))
    for t in types:
        if not re.fullmatch(r"[a-z0-9.+-]+/[a-z0-9.+-]+", t):
            raise reader.error("types", f"{t!r} is not a MIME type such as application/pdf")
    extensions = reader.strings("exempt_extensions", list(EXEMPT_EXTENSIONS))
    for e in extensions:
        if not re.fullmatch(r"\.[a-z0-9]{1,10}", e):
            raise reader.error("exempt_extensions", f"{e!r}: use lower-case '.ext' such as '.dwg'")
    header = reader.string("class_header", "X-Document-Class")
    hybrid = reader.boolean("allow_hybrid_xref", True)
    opaque = reader.strings("opaque_types", list(OPAQUE_TYPES))
    for t in opaque:
        if not re.fullmatch(r"[a-z0-9.+-]+/[a-z0-9.+-]+", t):
            raise reader.error("opaque_types", f"{t!r} is not a MIME type")
    if not re.fullmatch(r"[A-Za-z0-9-]+", header):
        raise reader.error("class_header", f"{header!r} is not a header field name")
    classes_reader = reader.table("classes") if reader.has("classes") else None
    classes = dict(DOCUMENT_CLASSES)
    if classes_reader is not None:
        classes = {}
        for name in list(classes_reader.data):
            if not re.fullmatch(r"[a-z0-9-]+", name):
                raise classes_reader.error(name, "class names are lower-case words joined by '-'")
            classes[name] = classes_reader.string(name)
        classes_reader.finish()
    reader.finish()
    return DocumentPolicy(
        frozenset(types), tuple(extensions), classes, header, hybrid, frozenset(opaque)
    )


def _read_trust(reader: TomlReader) -> TrustPolicy:
    store = reader.string("store", "builtin")
    revocation = reader.choice("revocation", ("hard-fail", "soft-fail", "off"), "soft-fail")
    unknown = reader.choice("unknown_revocation", ("tempfail", "reject"), "tempfail")
    reader.finish()
    return TrustPolicy(store, revocation, unknown)


def _read_notices(reader: TomlReader, source: str) -> NoticePolicy:
    # Imported here: policies.notices needs Policy for its signatures.
    from policies.notices import compile_template  # noqa: PLC0415

    enabled = reader.boolean("enabled", True)
    advisory = reader.boolean("advisory_in_monitor", False)
    rate = reader.integer("rate_per_hour", 10, minimum=0)
    sender = reader.string("from_address", "")
    if sender:
        try:
            parse_addr_spec(sender)
        except AddressError as exc:
            raise reader.error("from_address", f"{sender!r}: {exc}") from exc
    templates = reader.string("templates", "builtin")
    reader.finish()
    if templates == "builtin":
        text, html = _builtin_template("notice.txt.j2"), _builtin_template("notice.html.j2")
        where = "policies/data/notices"
    else:
        folder = Path(templates).expanduser()
        if not folder.is_absolute() and not source.startswith("<"):
            folder = Path(source).resolve().parent / folder
        where = str(folder)
        try:
            text = (folder / "notice.txt.j2").read_text("utf-8")
            html = (folder / "notice.html.j2").read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise reader.error("templates", f"cannot read the templates: {exc}") from exc
    for name, source_text, html_mode in (
        ("notice.txt.j2", text, False),
        ("notice.html.j2", html, True),
    ):
        try:
            # Each file on its own, so the error names the one that is wrong.
            compile_template(source_text, html=html_mode)
        except Exception as exc:  # any error in a district template is a configuration error
            line = getattr(exc, "lineno", None)
            raise ConfigError(
                f"{where}/{name}", "templates", f"template error: {type(exc).__name__}: {exc}", line
            ) from exc
    return NoticePolicy(enabled, advisory, rate, sender, templates, text, html)


def parse_policy(text: str, source: str) -> Policy:
    """Validate policy ``text`` (read from ``source``) and return the :class:`Policy`."""
    # Imported here: the rule modules import this module's types for their signatures.
    from policies.rules import RULES  # noqa: PLC0415

    root = TomlReader.from_text(text, source)
    meta = root.table("policy")
    name = meta.string("name", "unnamed policy")
    help_contact = meta.string("help_contact", "")
    meta.finish()

    domains = root.table("domains")
    official = _domains(domains, "official")
    if not official:
        raise domains.error("official", "name at least one official domain (e.g. 'gov.vn')")
    personal_setting = domains.get("personal", (str, list), "builtin", '"builtin" or a list')
    if isinstance(personal_setting, str):
        if personal_setting != "builtin":
            raise domains.error(
                "personal", f'must be "builtin" or a list, got {personal_setting!r}'
            )
        personal = set(builtin_personal_providers())
    else:
        personal = set(_domains(domains, "personal"))
    personal |= set(_domains(domains, "personal_add"))
    personal -= set(_domains(domains, "personal_remove"))
    overlap = sorted(p for p in personal if domain_in(p, official))
    if overlap:
        raise domains.error("official", f"also listed as personal providers: {', '.join(overlap)}")
    domains.finish()

    documents = _read_documents(root.table("documents"))
    trust = _read_trust(root.table("trust"))
    notices = _read_notices(root.table("notices"), source)
    advisory_table = root.table("advisories")
    advisories = AdvisoryPolicy(
        tuple(_domains(advisory_table, "service_domains", list(SERVICE_DOMAINS)))
    )
    advisory_table.finish()
    retention = root.table("retention")
    # Scores are annual: pruning inside the year being scored would falsify them.
    keep_days = retention.integer("keep_days", 400, minimum=366)
    retention.finish()
    scoring = root.table("scoring")
    min_usage_rate = scoring.number("min_usage_rate", 0.0)
    if min_usage_rate > 100:
        raise scoring.error("min_usage_rate", "is a percentage: at most 100")
    scoring.finish()

    cites = root.table("citations")
    citations: dict[str, str] = {}
    for code in list(cites.data):
        if code not in REASONS:
            raise cites.error(code, "not a reason code (see policies/reasons.py)")
        citations[code] = cites.string(code)
    cites.finish()

    rules: list[RuleConfig] = []
    seen: set[str] = set()
    for entry in root.tables("rules"):
        if not entry.has("id"):
            raise entry.error("id", "missing: every [[rules]] entry names its rule")
        rule_id = entry.string("id")
        if rule_id not in RULES:
            known = ", ".join(sorted(RULES))
            raise entry.error("id", f"unknown rule {rule_id!r} (known: {known})")
        if rule_id in seen:
            raise entry.error("id", f"rule {rule_id!r} is listed twice")
        seen.add(rule_id)
        mode = Mode(entry.choice("mode", tuple(m.value for m in Mode), "enforce"))
        enforce_from = entry.date("enforce_from")
        if enforce_from is not None and mode is not Mode.ENFORCE:
            # A monitor rule with a start date would never enforce: surely not what was meant.
            raise entry.error("enforce_from", 'only with mode = "enforce" (it starts enforcing)')
        options = RULES[rule_id].read_options(entry)
        entry.finish()
        rules.append(RuleConfig(rule_id, mode, enforce_from, options))
    if not rules:
        raise root.error("rules", "the policy names no rules ([[rules]] entries)")
    root.finish()
    return Policy(
        source=source,
        sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
        name=name,
        help_contact=help_contact,
        official_domains=tuple(official),
        personal_providers=frozenset(personal),
        citations=citations,
        rules=tuple(rules),
        documents=documents,
        trust=trust,
        notices=notices,
        advisories=advisories,
        keep_days=keep_days,
        min_usage_rate=min_usage_rate,
    )


def load_policy(path: str | Path | None = None) -> Policy:
    """Load the policy at ``path``, or the default policy shipped in ``policies/data``."""
    if path is None:
        text = resources.files("policies").joinpath("data/default.toml").read_text("utf-8")
        return parse_policy(text, "<builtin default policy>")
    try:
        text = Path(path).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), "", f"cannot read: {exc}") from exc
    return parse_policy(text, str(path))
