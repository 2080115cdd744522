"""Signature evidence for the documents attached to a message (the I/O half of the rules).

Which attachments are documents is policy: their type as detected from the content (a PDF
named ``.sig`` is still a PDF), an exempt file type (so the exemption is recorded), or a
container the gateway cannot open (TNEF, RAR, 7z: judged unreadable). Zip and tar archives
and gzip, bzip2 and xz files (a tar inside one too) are opened one level and their documents
judged like any other. For each document the applicable checks are gathered: a PDF's own
signatures, a detached CMS signature (``.p7s``/``.sig``, recognised by its content) sent
beside it, and an S/MIME signature, which covers exactly the documents found inside the
bytes it signs (``multipart/signed``, or opaque ``application/pkcs7-mime``).
"""

from __future__ import annotations

import asyncio
import bz2
import hashlib
import io
import lzma
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Protocol

from asn1crypto import cms, pem

from gateway.checks.validation import SignatureValidator
from gateway.message import FilePart, ParsedMessage, detect_type, file_parts, smime_parts
from policies import MessageFacts, Policy
from policies.model import Attachment, DocumentEvidence, SignatureCheck

__all__ = ["gather_documents"]

_SIGNATURE_TYPES = ("application/pkcs7-signature", "application/x-pkcs7-signature")
_SIGNATURE_EXTENSIONS = (".p7s", ".sig")
_OPAQUE_SMIME_TYPES = ("application/pkcs7-mime", "application/x-pkcs7-mime")
_ZIP_MEMBERS = 200  # more members than this: the archive is judged unreadable
_ZIP_BYTES = 50 * 1024 * 1024  # total uncompressed size read from one archive


# What asn1crypto raises on hostile DER besides ValueError: an empty BIT STRING is an
# IndexError, a length beyond the data an OverflowError, nesting a RecursionError (the fuzzer
# found the first: the message got 451 [internal.check_error] though it could never pass).
_ASN1_ERRORS = (
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    OverflowError,
    RecursionError,
)


def _signed_data(data: bytes) -> cms.SignedData | None:
    """The CMS SignedData in ``data`` (DER or PEM), or None if it is not one."""
    try:
        der = pem.unarmor(data)[2] if pem.detect(data) else data
        info = cms.ContentInfo.load(der)
        if info["content_type"].native != "signed_data":
            return None
        signed: cms.SignedData = info["content"]
        signed.native  # noqa: B018 - parse fully now: lazy parsing would fail later instead
    except _ASN1_ERRORS:
        return None
    return signed


def _is_detached_signature(part: FilePart, policy: Policy) -> bool:
    # Only a file whose bytes are a CMS signature counts: a PDF named ".sig" or declared
    # "application/pkcs7-signature" is still a document and must carry its own signature.
    if part.attachment.detected_type in policy.documents.types:
        return False
    name = part.attachment.filename.lower()
    declared = part.attachment.declared_type
    if not (name.endswith(_SIGNATURE_EXTENSIONS) or declared in _SIGNATURE_TYPES):
        return False
    return _signed_data(part.data) is not None


def _is_document(part: FilePart, policy: Policy) -> bool:
    name = part.attachment.filename.lower()
    return (
        part.attachment.detected_type in policy.documents.types
        or _is_opaque(part, policy)
        or name.endswith(policy.documents.exempt_extensions)
    )


def _is_opaque(part: FilePart, policy: Policy) -> bool:
    opaque = policy.documents.opaque_types
    return part.attachment.detected_type in opaque or part.attachment.declared_type in opaque


def _targets(signature: FilePart, documents: list[FilePart]) -> list[FilePart]:
    """The documents a detached signature may belong to: by name, else the only document."""
    name = signature.attachment.filename.lower()
    stem = PurePosixPath(name).stem  # "cv.pdf.p7s" -> "cv.pdf", "cv.p7s" -> "cv"
    named = [
        doc
        for doc in documents
        if stem
        and stem
        in (doc.attachment.filename.lower(), PurePosixPath(doc.attachment.filename.lower()).stem)
    ]
    if named:
        return named
    return documents[:1] if len(documents) == 1 else []


def _single_from(facts: MessageFacts) -> str:
    boxes = [mb for field in facts.from_fields for mb in field.mailboxes]
    return boxes[0].address if len(boxes) == 1 else ""


def _unreadable(method: str, why: str) -> SignatureCheck:
    return SignatureCheck(method, "permerror", "unreadable", why)


@dataclass
class _Found:
    part: FilePart
    preset: SignatureCheck | None = None  # a verdict reached without validating (opaque)


def _zip_members(part: FilePart) -> tuple[list[FilePart], str]:
    """The files inside a zip archive (one level), or why it cannot be read."""
    members: list[FilePart] = []
    try:
        with zipfile.ZipFile(io.BytesIO(part.data)) as archive:
            # Not is_dir(): it fails on a member with an empty name (found by bench/fuzz.py).
            infos = [i for i in archive.infolist() if not i.filename.endswith("/")]
            if len(infos) > _ZIP_MEMBERS:
                return [], f"archive has {len(infos)} files (limit {_ZIP_MEMBERS})"
            total = 0
            for info in infos:
                if info.flag_bits & 0x1:
                    return [], f"archive member {info.filename} is encrypted"
                total += info.file_size
                if total > _ZIP_BYTES:
                    return [], "archive expands beyond the size limit"
                members.append(_member(part, info.filename, archive.read(info)))
    except (
        zipfile.BadZipFile,
        zlib.error,  # a damaged deflate stream
        EOFError,  # a member cut short
        OSError,
        ValueError,
        RuntimeError,
        NotImplementedError,
    ) as exc:
        return [], f"archive cannot be read: {exc}"
    return members, ""


def _member(part: FilePart, name: str, data: bytes) -> FilePart:
    return FilePart(
        Attachment(
            filename=f"{part.attachment.filename}/{name}",
            declared_type="application/octet-stream",
            detected_type=detect_type(data, "application/octet-stream"),
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
        ),
        data,
    )


class _Inflater(Protocol):
    def decompress(self, data: bytes, max_length: int = ..., /) -> bytes: ...


# A compressed file's decompressor, and the suffixes its name ends in (dropped for the file's
# own name): gzip, bzip2 and xz, each also around a tar.
_COMPRESSED: dict[str, tuple[Callable[[], _Inflater], tuple[str, ...]]] = {
    "application/gzip": (lambda: zlib.decompressobj(wbits=31), (".gz", ".gzip")),
    "application/x-bzip2": (bz2.BZ2Decompressor, (".bz2",)),
    "application/x-xz": (lzma.LZMADecompressor, (".xz",)),
}


def _inflate(inflater: _Inflater, data: bytes) -> bytes:
    """The content of a compressed file, never more than the archive size limit (a bomb is
    an error, not memory); ValueError if it is damaged or too large."""
    try:
        content = inflater.decompress(data, _ZIP_BYTES + 1)
    except (zlib.error, OSError, lzma.LZMAError, EOFError) as exc:
        raise ValueError(f"damaged compressed stream: {exc}") from None
    if len(content) > _ZIP_BYTES:
        raise ValueError("archive expands beyond the size limit")
    return content


def _tar_members(part: FilePart, data: bytes) -> tuple[list[FilePart], str]:
    """The regular files of a tar archive (one level), or why it cannot be read."""
    members: list[FilePart] = []
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
            infos = [i for i in archive.getmembers() if i.isfile()]
            if len(infos) > _ZIP_MEMBERS:
                return [], f"archive has {len(infos)} files (limit {_ZIP_MEMBERS})"
            for info in infos:
                extracted = archive.extractfile(info)
                if extracted is None:  # pragma: no cover - a regular file always has content
                    continue
                members.append(_member(part, info.name, extracted.read()))
    except (tarfile.TarError, EOFError, OSError, ValueError, OverflowError) as exc:
        # OverflowError: a header declaring a size beyond 2**63 (found by the fuzzer)
        return [], f"archive cannot be read: {exc}"
    return members, ""


def _compressed_members(part: FilePart) -> tuple[list[FilePart], str]:
    """A compressed file's content: a tar archive's files (.tar.gz, .tar.xz...), or the one
    file it holds."""
    make_inflater, suffixes = _COMPRESSED[part.attachment.detected_type]
    try:
        content = _inflate(make_inflater(), part.data)
    except ValueError as exc:
        return [], str(exc)
    if detect_type(content, "application/octet-stream") == "application/x-tar":
        return _tar_members(part, content)
    name = part.attachment.filename.rsplit("/", 1)[-1]
    for suffix in suffixes:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return [_member(part, name or "content", content)], ""


def _tar_file_members(part: FilePart) -> tuple[list[FilePart], str]:
    return _tar_members(part, part.data)


# The archives a click opens (Windows, and the archive managers of desktop Linux): their
# files are judged as if attached; an archive inside one is not opened (judged unreadable).
_ARCHIVES: dict[str, Callable[[FilePart], tuple[list[FilePart], str]]] = {
    "application/zip": _zip_members,
    "application/x-tar": _tar_file_members,
    **dict.fromkeys(_COMPRESSED, _compressed_members),
}


def _expand(files: list[FilePart], policy: Policy) -> list[_Found]:
    """Every file to consider, archive members included; archives that cannot be read are
    judged."""
    found: list[_Found] = []
    for part in files:
        open_archive = _ARCHIVES.get(part.attachment.detected_type)
        if open_archive is None:
            found.append(_Found(part))
            continue
        members, problem = open_archive(part)
        if problem:
            found.append(_Found(part, _unreadable("pdf", problem)))
            continue
        for member in members:
            if member.attachment.detected_type in _ARCHIVES:
                found.append(_Found(member, _unreadable("pdf", "archive inside an archive")))
            else:
                found.append(_Found(member))
    return found


async def _opaque_smime(
    part: FilePart, facts: MessageFacts, validator: SignatureValidator
) -> tuple[SignatureCheck, list[FilePart]]:
    """An opaque S/MIME part (smime.p7m): its signature, and the files inside what it signs."""
    signed = _signed_data(part.data)
    if signed is None:
        return _unreadable("smime", "encrypted or unreadable S/MIME: cannot be checked"), []
    inner = signed["encap_content_info"]["content"].native
    if not isinstance(inner, bytes) or not inner:
        return _unreadable("smime", "S/MIME signed data without content"), []
    # Validate it as the detached signature it becomes without its content: the signature
    # (over the signed attributes and their message digest of the content) is unchanged.
    detached = signed.copy()
    detached["encap_content_info"] = cms.ContentInfo(
        {"content_type": signed["encap_content_info"]["content_type"].native}
    )
    der = cms.ContentInfo({"content_type": "signed_data", "content": detached}).dump(force=True)
    check = await validator.smime(inner, der, _single_from(facts))
    return check, file_parts(inner)


async def gather_documents(
    parsed: ParsedMessage,
    files: list[FilePart],
    facts: MessageFacts,
    policy: Policy,
    validator: SignatureValidator,
) -> tuple[tuple[DocumentEvidence, ...], SignatureCheck | None]:
    """The documents of the message with their signature checks, and the S/MIME check."""
    smime_check: SignatureCheck | None = None
    covered: set[str] = set()  # sha256 of files inside content a valid S/MIME signature signs
    signed = smime_parts(parsed)
    if signed is not None:
        smime_check = await validator.smime(signed.signed, signed.signature, _single_from(facts))
        if smime_check.result == "pass":
            covered = {f.attachment.sha256 for f in file_parts(signed.signed)}
    found = _expand(files, policy)
    for item in list(found):
        declared = item.part.attachment.declared_type
        if declared in _OPAQUE_SMIME_TYPES or item.part.attachment.filename.lower().endswith(
            ".p7m"
        ):
            found.remove(item)
            check, inner = await _opaque_smime(item.part, facts, validator)
            if check.problem == "unreadable" and not inner:
                # Encrypted or broken: nothing inside can be seen, so it is judged as a
                # document that cannot be checked (not as a bad signature).
                found.append(_Found(item.part, _unreadable("pdf", check.detail)))
                continue
            if smime_check is None or check.result != "pass":
                smime_check = check
            if check.result == "pass":
                covered |= {f.attachment.sha256 for f in inner}
            found.extend(_Found(f) for f in inner)
    signature_files = [
        f.part
        for f in found
        if f.preset is None
        and _is_detached_signature(f.part, policy)
        and not (signed is not None and f.part.data == signed.signature)
    ]
    documents = [
        f
        for f in found
        if f.part not in signature_files
        and not (signed is not None and f.part.data == signed.signature)
        and (f.preset is not None or _is_document(f.part, policy))
    ]
    if not documents:
        return (), smime_check
    pairs: dict[int, list[FilePart]] = {}
    for sig in signature_files:
        for target in _targets(sig, [d.part for d in documents]):
            pairs.setdefault(id(target), []).append(sig)

    async def checks_for(item: _Found) -> tuple[SignatureCheck, ...]:
        if item.preset is not None:
            return (item.preset,)
        if _is_opaque(item.part, policy):
            kind = item.part.attachment.declared_type or item.part.attachment.detected_type
            return (_unreadable("pdf", f"{kind} container cannot be inspected"),)
        jobs = []
        if item.part.attachment.detected_type == "application/pdf":
            jobs.append(validator.pdf(item.part.data))
        jobs.extend(
            validator.detached(item.part.data, sig.data) for sig in pairs.get(id(item.part), [])
        )
        return tuple(await asyncio.gather(*jobs))

    all_checks = await asyncio.gather(*(checks_for(d) for d in documents))
    evidence = tuple(
        DocumentEvidence(d.part.attachment, checks, d.part.attachment.sha256 in covered)
        for d, checks in zip(documents, all_checks, strict=True)
    )
    return evidence, smime_check
