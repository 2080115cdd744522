"""What a policy is: the validated policy and its parts (documents, trust, notices,
advisories, rules), as :mod:`policies.loader` builds them from a policy file, and their
defaults. The rules and the pipeline read these types; nothing here reads a file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from importlib import resources
from typing import Any

from policies.addresses import AddressError, canonical_domain, domain_in
from policies.model import Mode
from policies.reasons import REASONS

__all__ = [
    "VIETNAM_TIME",
    "AdvisoryPolicy",
    "DocumentPolicy",
    "NoticePolicy",
    "Policy",
    "RuleConfig",
    "TrustPolicy",
    "builtin_personal_providers",
    "builtin_template",
]

VIETNAM_TIME = timezone(timedelta(hours=7), "ICT")  # enforce_from dates are local dates; no DST


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


def builtin_template(name: str) -> str:
    """The text of a built-in notice template (``policies/data/notices/NAME``)."""
    return resources.files("policies").joinpath("data", "notices", name).read_text("utf-8")


@dataclass(frozen=True)
class NoticePolicy:
    """Refusal notices to internal senders: on or off, rate, sender, templates."""

    enabled: bool = True
    advisory_in_monitor: bool = False  # monitor mode: "this will be refused from <date>"
    rate_per_hour: int = 10  # notices to one address per hour, at most
    from_address: str = ""  # "" = MAILER-DAEMON@<the gateway's host name>
    templates: str = "builtin"  # or a folder with notice.txt.j2 and notice.html.j2
    text_template: str = field(default_factory=lambda: builtin_template("notice.txt.j2"))
    html_template: str = field(default_factory=lambda: builtin_template("notice.html.j2"))


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
