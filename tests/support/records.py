"""Decision records for the report's tests, made with the record's own types
(:mod:`gateway.record`): their layout is what the gateway writes, every field present."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from gateway.record import (
    AttachmentRecord,
    Client,
    DkimRecord,
    Envelope,
    HeaderField,
    Headers,
    RecipientRecord,
    Record,
    SignatureRecord,
)
from gateway.report.scoring import Directory, IdleReport, UnitScore, build_report, idle_report
from gateway.report.tally import fold

if TYPE_CHECKING:
    from gateway.directory import Account


def pdf(name: str, result: str, **fields: Any) -> AttachmentRecord:
    """An attached PDF whose one signature check gave ``result`` (``pass``, ``none``, …)."""
    return AttachmentRecord(
        filename=name,
        declared_type="application/pdf",
        detected_type="application/pdf",
        size=1000,
        sha256=hashlib.sha256(name.encode()).hexdigest(),
        document=True,
        signatures=(
            SignatureRecord(
                method="pdf", result=result, problem="" if result == "pass" else "unsigned"
            ),
        ),
        **fields,
    )


def sent(
    ident: str,
    time: str,
    sender: str,
    verdict: str = "accept",
    reasons: Iterable[str] = (),
    *,
    documents: Iterable[str] = (),
    recipients: Iterable[str] = (),
) -> Record:
    """Mail from ``sender``, proven (trusted network, or DKIM of the sender's domain), with one
    PDF per result in ``documents``."""
    return Record(
        id=ident,
        time=time,
        client=Client(ip="10.0.0.1", helo="mail.lamdong.gov.vn"),
        envelope=Envelope(
            mail_from=sender,
            recipients=tuple(
                RecipientRecord(address=r, accepted=True, reply="250 2.1.5 Recipient ok")
                for r in recipients
            ),
        ),
        headers=Headers(from_=(HeaderField(raw=sender, addresses=(sender,)),)),
        attachments=tuple(pdf(f"cv{i}.pdf", result) for i, result in enumerate(documents)),
        dkim=(DkimRecord(domain=sender.rpartition("@")[2], selector="s", result="pass"),),
        verdict=verdict,
        reasons=tuple(reasons),
        authenticated=True,
    )


def score_records(
    records: Iterable[Record], accounts: list[Account], **options: Any
) -> tuple[list[UnitScore], UnitScore]:
    """The units' scores of ``records`` in hand, added up as ``congvu report --from-records``
    adds them (:func:`gateway.report.tally.fold`, then :func:`build_report`)."""
    directory = Directory(accounts)
    folding = {k: options.pop(k) for k in ("progress", "every") if k in options}
    totals, marks = fold(records, keep=lambda s: directory.credit(s)[0] is not None, **folding)
    return build_report(totals, marks, directory, **options)


def idle_records(records: Iterable[Record], accounts: list[Account], **options: Any) -> IdleReport:
    """The idle list of ``records`` in hand (as ``congvu report idle --from-records``)."""
    totals, _ = fold(records)
    return idle_report(totals.last_seen(), Directory(accounts), **options)
