"""Value types shared by rules, the pipeline and the gateway: facts in, decisions out.

Everything here is immutable and free of I/O; the gateway builds :class:`MessageFacts` from
what it received, the pipeline returns a :class:`Decision`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from policies.addresses import AddressError, Mailbox, parse_mailbox_list

__all__ = [
    "MAX_REPLY_LINE",
    "SIGNATURE_PROBLEMS",
    "Action",
    "AddressField",
    "Attachment",
    "Decision",
    "DkimResult",
    "DocumentEvidence",
    "Finding",
    "MessageFacts",
    "Mode",
    "Reply",
    "SignatureCheck",
    "Signer",
    "Verdict",
    "problem_rank",
]


class Action(StrEnum):
    """What happens to the message; ordered from least to most severe by :attr:`severity`."""

    ACCEPT = "accept"
    TEMPFAIL = "tempfail"
    REJECT = "reject"

    @property
    def severity(self) -> int:
        """Reject beats tempfail beats accept when several rules speak."""
        return {"accept": 0, "tempfail": 1, "reject": 2}[self.value]


class Mode(StrEnum):
    """How a rule's verdict is applied."""

    ENFORCE = "enforce"  # the verdict refuses the message
    MONITOR = "monitor"  # the message is delivered; "would refuse" is recorded
    OFF = "off"  # the rule does not run


MAX_REPLY_LINE = 510  # RFC 5321 4.5.3.1.5: 512 octets including the code and CRLF


@dataclass(frozen=True)
class Reply:
    """An SMTP reply: code, enhanced status code (RFC 3463) and one line of text."""

    code: int
    enhanced: str
    text: str
    ref: str = ""  # the decision id, shown as "(ref ID)"

    def line(self, ref: str = "") -> str:
        """The reply as sent: ``550 5.7.1 text (ref ID)``, cut to the SMTP line limit.

        The decision id (``ref``, else :attr:`ref`) lets an officer or admin find the record
        of a refusal.
        """
        ref = ref or self.ref
        head = f"{self.code} {self.enhanced} " if self.enhanced else f"{self.code} "
        tail = f" (ref {ref})" if ref else ""
        text = self.text
        room = MAX_REPLY_LINE - len(head) - len(tail)
        if len(text) > room:
            text = text[: room - 3].rstrip() + "..."
        return f"{head}{text}{tail}".rstrip()


@dataclass(frozen=True)
class AddressField:
    """One address header (From, Sender, Reply-To) as received, parsed strictly."""

    name: str
    raw: str
    mailboxes: tuple[Mailbox, ...] = ()
    error: str | None = None

    @classmethod
    def parse(cls, name: str, raw: str) -> AddressField:
        """Parse ``raw``; a parse failure is kept as :attr:`error`, never guessed around."""
        try:
            return cls(name, raw, tuple(parse_mailbox_list(raw)))
        except AddressError as exc:
            return cls(name, raw, (), str(exc))


@dataclass(frozen=True)
class Attachment:
    """A MIME part that carries a file."""

    filename: str
    declared_type: str
    detected_type: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Signer:
    """Who made a signature, as an auditor needs to name them."""

    subject: str  # RFC 4514 distinguished name
    organisation: str  # O= of the subject, "" if none
    serial: str  # certificate serial number, hex
    fingerprint: str  # SHA-256 of the certificate (DER), hex
    signing_time: str  # ISO 8601 UTC; from a trusted timestamp when there is one, else claimed
    timestamped: bool  # signing_time is proven by a trusted timestamp
    not_after: str  # certificate expiry, ISO 8601 UTC


# What a signature check found, in RFC 8601 vocabulary: the problems, most telling first.
# This order is the one precedence among signature failures: it chooses which problem speaks
# for a check over several signatures (gateway.checks.signatures) and for a document with several
# checks (the document rules). What the signer did wrong before what is wrong with the
# certificate, the definitive before the temporary, and a missing signature last (any other
# finding says more about what the sender must fix).
SIGNATURE_PROBLEMS = (
    "modified",  # content added or changed after the (last) signature
    "invalid",  # broken or malformed signature, or digest mismatch
    "revoked",  # certificate revoked (CRL) before signing time
    "expired",  # certificate not valid at signing time
    "untrusted",  # does not chain to a root in the trust store
    "unreadable",  # corrupt, encrypted, over the size or time limit
    "revocation_unknown",  # status cannot be established: temporary, the policy decides
    "revocation_unavailable",  # revocation data stale under hard-fail: temporary
    "unsigned",  # no signature at all (result "none")
)


def problem_rank(problem: str) -> int:
    """Where ``problem`` stands in :data:`SIGNATURE_PROBLEMS` (lower speaks first); a failure
    without a known problem ranks as ``invalid``."""
    return SIGNATURE_PROBLEMS.index(problem if problem in SIGNATURE_PROBLEMS else "invalid")


@dataclass(frozen=True)
class SignatureCheck:
    """The outcome of validating one signed object (a PDF, a detached CMS, an S/MIME message).

    ``result`` is RFC 8601's ``pass``, ``fail``, ``none`` (unsigned), ``temperror`` or
    ``permerror``; ``problem`` is one of :data:`SIGNATURE_PROBLEMS` or "" on pass.
    """

    method: str  # "pdf", "cms" (detached .p7s/.sig) or "smime"
    result: str
    problem: str = ""
    detail: str = ""
    signers: tuple[Signer, ...] = ()
    elapsed_ms: float = 0.0
    cached: bool = False


@dataclass(frozen=True)
class DocumentEvidence:
    """One attachment that is a document, with every signature check that applies to it."""

    attachment: Attachment
    checks: tuple[SignatureCheck, ...] = ()  # the PDF's own, and/or a detached CMS over it
    in_signed_smime: bool = False  # inside the signed part of a valid, aligned S/MIME message


@dataclass(frozen=True)
class DkimResult:
    """One DKIM-Signature's verification, RFC 8601 vocabulary (pass/fail/temperror/permerror)."""

    domain: str  # d=
    selector: str  # s=
    result: str
    detail: str = ""


@dataclass(frozen=True)
class MessageFacts:
    """What the gateway knows about one SMTP transaction when it judges it."""

    mail_from: str  # envelope sender; "" for the null sender <>
    recipients: tuple[str, ...]  # envelope recipients the gateway accepted at RCPT
    client_ip: str
    client_trusted: bool  # client is in the configured trusted networks
    helo: str = ""
    login: str = ""  # the SASL login the client authenticated with at the MTA ("" when none)
    tls: bool = False
    from_fields: tuple[AddressField, ...] = ()  # one entry per From header
    sender_fields: tuple[AddressField, ...] = ()
    reply_to_fields: tuple[AddressField, ...] = ()
    subject: str = ""
    message_id: str = ""
    size: int = 0
    attachments: tuple[Attachment, ...] = ()
    header_defects: tuple[str, ...] = ()  # header lines that are not fields (see gateway)
    mime_ambiguities: tuple[str, ...] = ()  # MIME parts that read two ways, each named
    fragments: tuple[str, ...] = ()  # message/partial parts, each named
    document_class: str = ""  # the sender's declared exemption (X-Document-Class), lower case
    documents: tuple[DocumentEvidence, ...] = ()
    smime: SignatureCheck | None = None  # the message's own S/MIME signature, if any
    dkim: tuple[DkimResult, ...] = ()
    # What decides whether a refusal notice may be sent (no notices to lists or robots).
    auto_submitted: str = ""  # Auto-Submitted, lower case ("" when absent)
    precedence: str = ""  # Precedence, lower case
    list_id: str = ""
    content_type: str = ""  # top-level type/subtype, lower case
    body_addresses: tuple[str, ...] = ()  # addresses printed in the text (signature blocks)


@dataclass(frozen=True)
class Verdict:
    """A rule's opinion: the reason code (see :mod:`policies.reasons`) and what it saw."""

    reason: str
    detail: str


@dataclass(frozen=True)
class Finding:
    """What one rule concluded for one message, as recorded in the decision log.

    ``outcome`` is ``pass`` (no objection), ``note`` (recorded, e.g. an exemption claimed),
    ``reject``/``tempfail`` (enforced),
    ``would-reject``/``would-tempfail`` (monitor mode, or enforce before its start date),
    ``error`` (the rule raised in monitor mode) or ``off``.
    """

    rule: str
    mode: Mode
    outcome: str
    reason: str | None = None
    detail: str = ""


@dataclass(frozen=True)
class Decision:
    """The pipeline's answer for one message."""

    action: Action
    reasons: tuple[str, ...]  # enforced reason codes, most severe first
    monitor_reasons: tuple[str, ...]  # what monitor-mode rules would have refused for
    findings: tuple[Finding, ...]
    reply: Reply | None = None  # the refusal reply; None on accept (the relay decides)
    errors: tuple[str, ...] = field(default=())  # tracebacks of rules that raised, for the log
