"""Signature evidence for the documents attached to a message (the I/O half of the rules).

Which attachments are documents is policy (their detected type, or an exempt file type so the
exemption is recorded). For each document the applicable checks are gathered: a PDF's own
signatures, and a detached CMS signature (``.p7s``/``.sig``) sent beside it; and, for a
top-level S/MIME message, the message's signature, which covers every part inside it.
"""

from __future__ import annotations

import asyncio
from pathlib import PurePosixPath

from gateway.message import FilePart, ParsedMessage, smime_parts
from gateway.validation import SignatureValidator
from policies import MessageFacts, Policy
from policies.model import DocumentEvidence, SignatureCheck

__all__ = ["gather_documents"]

_SIGNATURE_TYPES = ("application/pkcs7-signature", "application/x-pkcs7-signature")
_SIGNATURE_EXTENSIONS = (".p7s", ".sig")


def _is_signature(part: FilePart) -> bool:
    name = part.attachment.filename.lower()
    return name.endswith(_SIGNATURE_EXTENSIONS) or part.attachment.declared_type in _SIGNATURE_TYPES


def _is_document(part: FilePart, policy: Policy) -> bool:
    name = part.attachment.filename.lower()
    return part.attachment.detected_type in policy.documents.types or name.endswith(
        policy.documents.exempt_extensions
    )


def _target(signature: FilePart, documents: list[FilePart]) -> FilePart | None:
    """The document a detached signature belongs to: by name, else the only document."""
    name = signature.attachment.filename.lower()
    stem = PurePosixPath(name).stem  # "cv.pdf.p7s" -> "cv.pdf", "cv.p7s" -> "cv"
    for doc in documents:
        doc_name = doc.attachment.filename.lower()
        if stem and stem in (doc_name, PurePosixPath(doc_name).stem):
            return doc
    return documents[0] if len(documents) == 1 else None


def _single_from(facts: MessageFacts) -> str:
    boxes = [mb for field in facts.from_fields for mb in field.mailboxes]
    return boxes[0].address if len(boxes) == 1 else ""


async def gather_documents(
    parsed: ParsedMessage,
    files: list[FilePart],
    facts: MessageFacts,
    policy: Policy,
    validator: SignatureValidator,
) -> tuple[tuple[DocumentEvidence, ...], SignatureCheck | None]:
    """The documents of the message with their signature checks, and the S/MIME check."""
    smime_check: SignatureCheck | None = None
    signed = smime_parts(parsed)
    if signed is not None:
        smime_check = await validator.smime(signed.signed, signed.signature, _single_from(facts))
    signature_files = [
        f
        for f in files
        if _is_signature(f) and not (signed is not None and f.data == signed.signature)
    ]
    documents = [f for f in files if f not in signature_files and _is_document(f, policy)]
    if not documents:
        return (), smime_check
    pairs: dict[int, list[FilePart]] = {}
    for sig in signature_files:
        target = _target(sig, documents)
        if target is not None:
            pairs.setdefault(id(target), []).append(sig)

    async def checks_for(doc: FilePart) -> tuple[SignatureCheck, ...]:
        jobs = []
        if doc.attachment.detected_type == "application/pdf":
            jobs.append(validator.pdf(doc.data))
        jobs.extend(validator.detached(doc.data, sig.data) for sig in pairs.get(id(doc), []))
        return tuple(await asyncio.gather(*jobs))

    covered = smime_check is not None and smime_check.result == "pass"
    all_checks = await asyncio.gather(*(checks_for(d) for d in documents))
    evidence = tuple(
        DocumentEvidence(doc.attachment, checks, covered)
        for doc, checks in zip(documents, all_checks, strict=True)
    )
    return evidence, smime_check
