"""Loading a policy file: TOML, validated strictly, errors naming the file, the line and the key.

A policy file looks like ``policies/data/default.toml`` (which ships as the default)::

    [policy]            name, help_contact
    [domains]           official, personal, personal_add, personal_remove
    [documents]         which attachments are documents, which are exempt
    [trust]             the trust store and revocation
    [notices]           refusal notices: on or off, rate, sender, templates
    [advisories]        monitor-mode advisories
    [scoring]           min_usage_rate
    [retention]         keep_days
    [citations]         reason code = directive text (overrides the reason table's default)
    [[rules]]           id, mode, enforce_from, the rule's own options (file order = run order)

Unknown keys are errors: a misspelt option must never silently fall back to a default. The
loader depends on the rules (their options are read here) and on the notices (templates are
compiled here); the policy's types (:mod:`policies.schema`) depend on neither, so the rules
can use them without a circle.
"""

from __future__ import annotations

import hashlib
import re
from importlib import resources
from pathlib import Path

from policies.addresses import AddressError, canonical_domain, domain_in, parse_addr_spec
from policies.model import Mode
from policies.notices import compile_template
from policies.reader import ConfigError, TomlReader
from policies.reasons import REASONS
from policies.rules import RULES
from policies.schema import (
    DOCUMENT_CLASSES,
    DOCUMENT_TYPES,
    EXEMPT_EXTENSIONS,
    OPAQUE_TYPES,
    SERVICE_DOMAINS,
    AdvisoryPolicy,
    DocumentPolicy,
    NoticePolicy,
    Policy,
    RuleConfig,
    TrustPolicy,
    builtin_personal_providers,
    builtin_template,
)

__all__ = ["load_policy", "parse_policy"]


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
        text, html = builtin_template("notice.txt.j2"), builtin_template("notice.html.j2")
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
