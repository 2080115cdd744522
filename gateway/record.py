"""The decision record: one typed, versioned structure for what the gateway decided and why.

One record is written per SMTP transaction (:func:`build_record`, called by the SMTP layer);
the store keeps it as JSON with sorted keys and chains the hash over that text; the report,
the CLI and auditors' tools read it. This module is the one place that knows the layout:
:meth:`Record.to_dict` is the only serializer and :meth:`Record.from_dict` the only reader.

Each field says in which schema version it appeared (:data:`SCHEMA_VERSION` is the current
one). The reader takes every version since 1: a field an older record lacks gets its empty
value, while a field that the record's own version carries and this record lacks is an error
(:class:`RecordError`), never a guess. The serializer writes a record in the layout of its own
version, so that a record read back serializes to exactly what was stored.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from policies import MessageFacts, Policy
from policies.identity import sender_authenticated
from policies.model import AddressField, DocumentEvidence, SignatureCheck
from policies.rules.documents import exemption

if TYPE_CHECKING:
    from gateway.judge import Judgement
    from gateway.transaction import RecipientOutcome

__all__ = [
    "SCHEMA_VERSION",
    "AttachmentRecord",
    "Client",
    "DkimRecord",
    "Envelope",
    "FindingRecord",
    "HeaderField",
    "Headers",
    "InnerDocument",
    "NoticeRecord",
    "PolicyRef",
    "RecipientRecord",
    "Record",
    "RecordError",
    "SignatureRecord",
    "SignerRecord",
    "build_record",
    "notice_record",
    "record_time",
]

SCHEMA_VERSION = 6  # see build_record for what each version added


class RecordError(ValueError):
    """A stored record this reader cannot read: not the layout of the version it claims."""


def _added(version: int, *, sure: int = 0) -> dict[str, int]:
    """Field metadata: added in schema ``version``. ``sure``: the first version that always
    carries it, when records of ``version`` itself may lack it (added before the number moved)."""
    return {"since": version, "sure": sure or version}


@dataclass(frozen=True, kw_only=True)
class Client:
    """The SMTP client: the real one's address and name when Postfix sent XFORWARD."""

    ip: str = ""
    helo: str = ""
    tls: bool = False  # the gateway's own session used STARTTLS
    login: str = field(default="", metadata=_added(6))  # SASL login at the MTA, "" when none


@dataclass(frozen=True, kw_only=True)
class RecipientRecord:
    """One RCPT TO and the answer it got; ``reason`` is the code of a refusal."""

    address: str
    accepted: bool
    reply: str
    reason: str | None = None


@dataclass(frozen=True, kw_only=True)
class Envelope:
    """MAIL FROM ("" for the null sender) and every RCPT TO."""

    mail_from: str = ""
    recipients: tuple[RecipientRecord, ...] = ()


@dataclass(frozen=True, kw_only=True)
class HeaderField:
    """One From, Sender or Reply-To field as written, its mailboxes, or why it did not parse."""

    raw: str
    addresses: tuple[str, ...] = ()
    error: str | None = None


@dataclass(frozen=True, kw_only=True)
class Headers:
    """The header fields a decision reads; empty when the message was not judged."""

    from_: tuple[HeaderField, ...] = field(default=(), metadata={"key": "from"})
    sender: tuple[HeaderField, ...] = ()
    reply_to: tuple[HeaderField, ...] = ()
    subject: str = ""
    message_id: str = ""


@dataclass(frozen=True, kw_only=True)
class SignerRecord:
    """Who made one signature, as an auditor names them.

    This and :class:`SignatureRecord` repeat :class:`policies.model.Signer` and
    :class:`~policies.model.SignatureCheck` on purpose: a field added to the evidence must not
    change the record's layout without a new schema version (building a record then fails).
    """

    subject: str
    organisation: str
    serial: str
    fingerprint: str
    signing_time: str
    timestamped: bool
    not_after: str


@dataclass(frozen=True, kw_only=True)
class SignatureRecord:
    """One signature check: a PDF's signatures, a detached CMS signature, or S/MIME."""

    method: str
    result: str
    problem: str = ""
    detail: str = ""
    signers: tuple[SignerRecord, ...] = ()
    elapsed_ms: float = 0.0
    cached: bool = False


class _Document:
    """What the report asks of any document on record, top-level or inside a container."""

    signatures: tuple[SignatureRecord, ...]
    in_signed_smime: bool

    @property
    def signed(self) -> bool:
        """Carries a signature the gateway accepted, or lies inside valid S/MIME content."""
        return self.in_signed_smime or any(s.result == "pass" for s in self.signatures)


@dataclass(frozen=True, kw_only=True)
class AttachmentRecord(_Document):
    """A MIME part that carries a file; ``document`` says whether it counts as a document."""

    filename: str = ""
    declared_type: str = ""
    detected_type: str = ""
    size: int = 0
    sha256: str = ""
    document: bool = field(default=False, metadata=_added(2))
    signatures: tuple[SignatureRecord, ...] = field(default=(), metadata=_added(2))
    in_signed_smime: bool = field(default=False, metadata=_added(5))
    # Why it needs no signature (a declared class, an exempt file type); "" when it does.
    exempt: str = field(default="", metadata=_added(5))


@dataclass(frozen=True, kw_only=True)
class InnerDocument(_Document):
    """A document found inside a container: a ZIP member, or inside opaque S/MIME content."""

    filename: str = ""
    detected_type: str = ""
    size: int = 0
    sha256: str = ""
    signatures: tuple[SignatureRecord, ...] = ()
    in_signed_smime: bool = False
    exempt: str = field(default="", metadata=_added(5))


@dataclass(frozen=True, kw_only=True)
class DkimRecord:
    """One DKIM-Signature checked (``domain`` "" on the entry saying how many were not)."""

    domain: str
    selector: str
    result: str
    detail: str = ""


@dataclass(frozen=True, kw_only=True)
class FindingRecord:
    """What one rule or built-in check concluded (``id`` is the rule's id)."""

    id: str
    mode: str
    outcome: str
    reason: str | None = None
    detail: str = ""


@dataclass(frozen=True, kw_only=True)
class PolicyRef:
    """The policy that judged: its name, its file, the file's SHA-256."""

    name: str = ""
    source: str = ""
    sha256: str = ""


@dataclass(frozen=True, kw_only=True)
class NoticeRecord:
    """What happened about a refusal notice or advisory to the sender."""

    kind: str | None = None
    sent: bool = False
    to: str | None = None
    message_id: str | None = None
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class Record:
    """The decision record of one SMTP transaction (docs/reference/record.md, field by field).

    Fields that do not apply are still present, empty; a record built here is always of the
    current schema, a record read by :meth:`from_dict` keeps the version it was written with.
    """

    schema: int = SCHEMA_VERSION
    id: str
    time: str  # UTC, ISO 8601 with milliseconds and a final Z
    client: Client = field(default_factory=Client)
    envelope: Envelope = field(default_factory=Envelope)
    headers: Headers = field(default_factory=Headers)
    size: int = 0
    attachments: tuple[AttachmentRecord, ...] = ()
    # The first records of schema 2 were written before inner documents were on record.
    inner_documents: tuple[InnerDocument, ...] = field(default=(), metadata=_added(2, sure=3))
    smime: SignatureRecord | None = field(default=None, metadata=_added(2))
    dkim: tuple[DkimRecord, ...] = field(default=(), metadata=_added(2))
    document_class: str = field(default="", metadata=_added(2))
    findings: tuple[FindingRecord, ...] = ()
    verdict: str
    reasons: tuple[str, ...] = ()
    monitor_reasons: tuple[str, ...] = ()
    mode: str = "enforce"
    reply: str = ""
    policy: PolicyRef = field(default_factory=PolicyRef)
    processing_ms: float = 0.0
    notice: NoticeRecord | None = field(default=None, metadata=_added(3))
    authenticated: bool = field(default=False, metadata=_added(4))

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON values, in the layout of its schema version."""
        return _dump(Record, self, self.schema)

    def to_json(self) -> str:
        """The record as the store keeps it and hashes it: sorted keys, UTF-8, not escaped."""
        return json.dumps(self.to_dict(), ensure_ascii=False, sort_keys=True)

    @staticmethod
    def from_dict(data: Any) -> Record:
        """Read a record of any schema version (a newer one: the fields this version knows).

        Raises :class:`RecordError` when ``data`` is not the layout of the version it claims.
        """
        ident = data.get("id", "?") if isinstance(data, dict) else "?"
        schema = data.get("schema") if isinstance(data, dict) else None
        if not isinstance(schema, int) or isinstance(schema, bool) or schema < 1:
            raise RecordError(f"decision {ident}: no schema version")
        try:
            record: Record = _load(Record, data, schema)
        except _Bad as exc:
            raise RecordError(f"decision {ident}: {'.'.join(exc.path)}: {exc}") from None
        return _with_claimed_exemptions(record) if schema < 5 else record

    def documents(self) -> list[AttachmentRecord | InnerDocument]:
        """Every document on record: attachments that count as one, then inner documents."""
        return [*(a for a in self.attachments if a.document), *self.inner_documents]


# The reader and the writer, driven by the dataclasses above: the two cannot drift apart.


class _Bad(Exception):
    """A value that is not what its field holds; ``path`` is completed on the way out."""

    def __init__(self, problem: str, *path: str) -> None:
        super().__init__(problem)
        self.path = list(path)


_Convert = Callable[[Any, int], Any]  # (value, schema version) -> value


@dataclass(frozen=True)
class _Codec:
    """How a value of one type is read from JSON and written back. A plain value (text, a
    number, a flag, or null where allowed) is of one of ``kinds`` and kept as it is."""

    what: str
    read: _Convert
    write: _Convert
    kinds: frozenset[type] = frozenset()


@dataclass(frozen=True)
class _Slot:
    name: str
    key: str  # in JSON
    since: int  # the version that added it
    sure: int  # the first version that always carries it
    codec: _Codec


def _as_is(value: Any, schema: int) -> Any:
    return value


def _plain(what: str, kinds: frozenset[type]) -> _Codec:
    def read(value: Any, schema: int) -> Any:
        if type(value) not in kinds:  # exact types: true is no number here
            raise _Bad(f"{value!r} is not {what}")
        return value

    return _Codec(what, read, _as_is, kinds)


_PLAIN: dict[Any, frozenset[type]] = {
    bool: frozenset({bool}),
    int: frozenset({int}),
    float: frozenset({int, float}),
    str: frozenset({str}),
}


@functools.cache
def _codec(hint: Any) -> _Codec:
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        read = functools.partial(_load, hint)
        return _Codec(hint.__name__, read, functools.partial(_dump, hint))
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (types.UnionType, typing.Union):  # X | None
        some = _codec(next(a for a in args if a is not type(None)))
        if some.kinds:
            return _plain(f"{some.what} or null", some.kinds | {type(None)})
        return _Codec(
            f"{some.what} or null",
            lambda value, schema: None if value is None else some.read(value, schema),
            lambda value, schema: None if value is None else some.write(value, schema),
        )
    if typing.get_origin(hint) is tuple:
        item = _codec(args[0])

        def read_list(value: Any, schema: int) -> tuple[Any, ...]:
            if type(value) is not list:
                raise _Bad(f"{value!r} is not a list")
            items = []
            for index, v in enumerate(value):
                try:
                    items.append(item.read(v, schema))
                except _Bad as exc:
                    exc.path.insert(0, str(index))
                    raise
            return tuple(items)

        def write_list(value: tuple[Any, ...], schema: int) -> list[Any]:
            return list(value) if item.kinds else [item.write(v, schema) for v in value]

        return _Codec(f"a list of {item.what}", read_list, write_list)
    return _plain(hint.__name__, _PLAIN[hint])


@functools.cache
def _layout(cls: Any) -> tuple[_Slot, ...]:
    hints = typing.get_type_hints(cls)
    slots = []
    for f in dataclasses.fields(cls):
        since = f.metadata.get("since", 1)
        key = f.metadata.get("key", f.name)
        slots.append(
            _Slot(f.name, key, since, f.metadata.get("sure", since), _codec(hints[f.name]))
        )
    return tuple(slots)


def _dump(cls: Any, value: Any, schema: int) -> dict[str, Any]:
    """``value`` (of dataclass ``cls``) as JSON values: the fields its schema version has."""
    out = {}
    for slot in _layout(cls):
        if slot.since <= schema:
            field_value = getattr(value, slot.name)
            codec = slot.codec
            out[slot.key] = field_value if codec.kinds else codec.write(field_value, schema)
    return out


def _load(cls: Any, data: Any, schema: int) -> Any:
    """An instance of dataclass ``cls`` from JSON ``data`` of schema version ``schema``."""
    if type(data) is not dict:
        raise _Bad(f"{data!r} is not an object")
    values = {}
    for slot in _layout(cls):
        if slot.key not in data:
            if schema >= slot.sure:
                raise _Bad(f"missing (schema {schema} has it)", slot.key)
            continue
        value, codec = data[slot.key], slot.codec
        if codec.kinds:
            if type(value) not in codec.kinds:
                raise _Bad(f"{value!r} is not {codec.what}", slot.key)
        else:
            try:
                value = codec.read(value, schema)
            except _Bad as exc:
                exc.path.insert(0, slot.key)
                raise
        values[slot.name] = value
    return cls(**values)


_Doc = TypeVar("_Doc", AttachmentRecord, InnerDocument)


def _with_claimed_exemptions(record: Record) -> Record:
    """A record before schema 5 with ``exempt`` read from its ``document.exempted`` note.

    Those records say which documents were exempt only in the note's words ("NAME exempt by
    WHY", claims joined by "; "). Each document's own name is looked for at the start of a
    claim, so a name holding "; " is still found; the note is never split blindly.
    """
    notes = [
        "; " + f.detail
        for f in record.findings
        if f.outcome == "note" and f.reason == "document.exempted"
    ]
    if not notes:
        return record

    def claimed(doc: _Doc) -> _Doc:
        claim = f"; {doc.filename or '(unnamed)'} exempt by "
        for note in notes:
            at = note.find(claim)
            if at >= 0:
                why = note[at + len(claim) :].split("; ", 1)[0]
                return dataclasses.replace(doc, exempt=why)
        return doc

    return dataclasses.replace(
        record,
        attachments=tuple(claimed(a) if a.document else a for a in record.attachments),
        inner_documents=tuple(claimed(d) for d in record.inner_documents),
    )


# Building a record from a judgement.


def _signature(check: SignatureCheck) -> SignatureRecord:
    return SignatureRecord(
        method=check.method,
        result=check.result,
        problem=check.problem,
        detail=check.detail,
        signers=tuple(SignerRecord(**dataclasses.asdict(s)) for s in check.signers),
        elapsed_ms=check.elapsed_ms,
        cached=check.cached,
    )


def _fields(fields: tuple[AddressField, ...]) -> tuple[HeaderField, ...]:
    return tuple(
        HeaderField(raw=f.raw, addresses=tuple(m.address for m in f.mailboxes), error=f.error)
        for f in fields
    )


def _attachments(facts: MessageFacts, policy: Policy) -> tuple[AttachmentRecord, ...]:
    """Every file part; a document carries its checks and whether and why it is exempt, as
    the document rules see it (the same :func:`exemption`, from the same facts)."""
    documents = {d.attachment.sha256: d for d in facts.documents}
    records = []
    for a in facts.attachments:
        doc = documents.get(a.sha256)
        if doc is not None:
            doc = dataclasses.replace(doc, attachment=a)  # the same bytes, under this name
        records.append(
            AttachmentRecord(
                filename=a.filename,
                declared_type=a.declared_type,
                detected_type=a.detected_type,
                size=a.size,
                sha256=a.sha256,
                document=doc is not None,
                signatures=tuple(_signature(c) for c in doc.checks) if doc else (),
                in_signed_smime=doc.in_signed_smime if doc else False,
                exempt=exemption(doc, facts, policy) if doc else "",
            )
        )
    return tuple(records)


def _inner_documents(facts: MessageFacts, policy: Policy) -> tuple[InnerDocument, ...]:
    """Documents found inside containers (zip members, signed S/MIME content): who signed
    them is on record like any attachment's signer. One identical to an attachment is not."""
    top_level = {a.sha256 for a in facts.attachments}
    return tuple(
        _inner(d, facts, policy) for d in facts.documents if d.attachment.sha256 not in top_level
    )


def _inner(doc: DocumentEvidence, facts: MessageFacts, policy: Policy) -> InnerDocument:
    return InnerDocument(
        filename=doc.attachment.filename,
        detected_type=doc.attachment.detected_type,
        size=doc.attachment.size,
        sha256=doc.attachment.sha256,
        signatures=tuple(_signature(c) for c in doc.checks),
        in_signed_smime=doc.in_signed_smime,
        exempt=exemption(doc, facts, policy),
    )


def record_time(moment: datetime) -> str:
    """A moment as records write their time (and as stores compare it): UTC, ISO 8601 with
    milliseconds and a final Z."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def notice_record(notice: dict[str, Any] | None) -> NoticeRecord | None:
    """What the notifier reported (``{kind, sent, to, message_id, reason}``), as recorded."""
    return NoticeRecord(**notice) if notice is not None else None


def build_record(
    *,
    decision_id: str,
    when: datetime,
    client_ip: str,
    helo: str,
    tls: bool,
    login: str = "",
    mail_from: str,
    recipients: list[RecipientOutcome],
    judgement: Judgement | None,
    verdict: str,
    reasons: list[str],
    reply: str,
    policy: Policy,
    processing_ms: float,
    notice: dict[str, Any] | None = None,
) -> Record:
    """The decision record for one SMTP transaction (see :data:`SCHEMA_VERSION`).

    Version 2 added, per attachment, ``document`` and ``signatures`` (each check: method,
    result, problem, detail, signers, elapsed_ms, cached), and ``inner_documents`` (documents
    found inside zip archives or S/MIME content), ``smime``, ``dkim`` and ``document_class`` at
    the top level. Version 3 added ``notice``: ``{kind, sent, to, message_id, reason}`` (or
    null when the message was not judged), whether a refusal notice or advisory was sent.
    Version 4 added ``authenticated``: whether the sender was proven internal.
    Version 5 added, per attachment, ``in_signed_smime`` (inner documents had it already), and
    per attachment and inner document ``exempt``: why it needs no signature (the declared
    class or the exempt file type, as the document rules decided), or "". Until then the
    exemption was only in the words of the ``document.exempted`` note. Version 6 added
    ``client.login``: the login (SASL) the client authenticated with at the MTA, as a milter
    is told it, or "".
    """
    decision = judgement.decision if judgement else None
    facts = judgement.facts if judgement else None
    monitor = tuple(decision.monitor_reasons) if decision else ()
    return Record(
        id=decision_id,
        time=record_time(when),
        client=Client(ip=client_ip, helo=helo, tls=tls, login=login),
        envelope=Envelope(
            mail_from=mail_from,
            recipients=tuple(
                RecipientRecord(
                    address=r.address, accepted=r.accepted, reply=r.reply, reason=r.reason
                )
                for r in recipients
            ),
        ),
        headers=Headers(
            from_=_fields(facts.from_fields),
            sender=_fields(facts.sender_fields),
            reply_to=_fields(facts.reply_to_fields),
            subject=facts.subject,
            message_id=facts.message_id,
        )
        if facts
        else Headers(),
        size=facts.size if facts else 0,
        attachments=_attachments(facts, policy) if facts else (),
        inner_documents=_inner_documents(facts, policy) if facts else (),
        smime=_signature(facts.smime) if facts and facts.smime else None,
        dkim=tuple(
            DkimRecord(domain=d.domain, selector=d.selector, result=d.result, detail=d.detail)
            for d in (facts.dkim if facts else ())
        ),
        document_class=facts.document_class if facts else "",
        findings=tuple(
            FindingRecord(
                id=f.rule, mode=f.mode.value, outcome=f.outcome, reason=f.reason, detail=f.detail
            )
            for f in (decision.findings if decision else ())
        ),
        verdict=verdict,
        reasons=tuple(reasons),
        monitor_reasons=monitor,
        mode="monitor" if monitor and verdict == "accept" else "enforce",
        reply=reply,
        policy=PolicyRef(name=policy.name, source=policy.source, sha256=policy.sha256),
        processing_ms=round(processing_ms, 3),
        notice=notice_record(notice),
        # Proven internal sender (trusted client, or official From with aligned DKIM): only
        # such records credit an account in the office's report; a forged From credits no one.
        authenticated=bool(facts and sender_authenticated(facts, policy)),
    )
