"""The trust store for document signatures: roots, path-building intermediates, offline CRLs.

A :class:`TrustStore` is plain data (DER bytes and settings), so it pickles cheaply into the
worker process that validates signatures, and its :attr:`TrustStore.version` (a SHA-256 over
every input and setting) keys any cache of validation results: change a root, a CRL or the
revocation mode and every cached verdict is void.

On disk (``certs/`` in the repository, ``/etc/congvu/certs`` in production)::

    trust/           root certificates (PEM, several per file allowed, or DER): trust anchors
    intermediates/   CA certificates used to build paths, never trusted by themselves
    crl/             CRLs (DER or PEM), refreshed by the administrator; nothing is fetched

Files named in :data:`PINNED_FILES` must have the pinned SHA-256 fingerprint, so a corrupted
or substituted copy of a national root stops start-up instead of silently changing trust.

Exceptions::

    TrustStoreError   a file is unreadable, not a certificate/CRL, a non-CA in trust/, a pin
                      mismatch, or a setting is out of range (always names the file or setting)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7

from policies.schema import Policy

__all__ = [
    "LEGACY_SHA1_ROOTS",
    "PINNED_FILES",
    "REVOCATION_MODES",
    "TrustStore",
    "TrustStoreError",
    "default_trust_store",
    "fingerprint",
    "load_trust_store",
    "shipped_certs",
    "trust_for",
]

REVOCATION_MODES = ("hard-fail", "soft-fail", "off")

# The SHA-256 pins of the shipped public certificates (certs/README.md, checked against pins
# published independently of the files). A file with one of these names must match its pin.
PINNED_FILES: Mapping[str, str] = {
    "vgca-root-g2.pem": "f04ba4b459a7c9a1b971ad9b1cb833e695a80c79aea63b174b66a70edfe2fdb8",
    "vgca-root-g1.pem": "f7bc89054cec7f12730d7b8cd3eb7955b163835087e5eb873edfb584763b3f90",
    "neac-vietnam-national-root-ca.pem": (
        "bac8bf609ab420a8ee1780d74f4de5c7f7184959d2a7375b0a75e4c29f0908e7"
    ),
    "vgca-ca-co-quan-nha-nuoc-g2.pem": (
        "d8cab7a4aef92e6bb2509d7c61cee7b44f3731b2d21074963530277b366fae4b"
    ),
    "vnpt-ca-sha2.pem": "7d6ba5245317f9ed5d8bc765a4634d26ac6340d36b9f584df3b52d9c4a81a306",
}

# Roots whose chains may still use SHA-1 *certificate* signatures. The VGCA G1 root is SHA-1
# self-signed and its intermediates are SHA-1 signed; many signing tokens in use chain to it.
# The allowance is scoped: only certificates (and CRLs) signed by the key of one of these roots,
# or by a CA key that root's chain verifiably certified, may use SHA-1. Everything else, and the
# document signatures themselves, must use SHA-2.
LEGACY_SHA1_ROOTS = frozenset({"f7bc89054cec7f12730d7b8cd3eb7955b163835087e5eb873edfb584763b3f90"})

_CERT_SUFFIXES = (".pem", ".crt", ".cer", ".der", ".p7b", ".p7c")
_CRL_SUFFIXES = (".crl", ".pem", ".der")
_IGNORED_SUFFIXES = (".md", ".txt")
_DER = Encoding.DER
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\s*(.*?)\s*-----END \1-----", re.DOTALL)


class TrustStoreError(Exception):
    """The trust store cannot be loaded as configured; the message names the file or setting."""


def fingerprint(der: bytes) -> str:
    """SHA-256 of a DER certificate, lower-case hex (``openssl x509 -fingerprint -sha256``)."""
    return hashlib.sha256(der).hexdigest()


@dataclass(frozen=True)
class TrustStore:
    """What a document signature must chain to, and how revocation is judged.

    ``revocation``:
      - ``hard-fail``: every certificate below the root must have its status established by a
        current CRL in ``crls`` (whether or not it names a distribution point); a CRL we hold
        that is out of date gives ``revocation_unavailable`` (temporary), no CRL at all gives
        ``revocation_unknown`` (temporary too: the policy's ``unknown_revocation`` says what it
        comes to, in the document rules, not here).
      - ``soft-fail``: a certificate listed on any CRL we hold is revoked; no CRL is no problem.
      - ``off``: CRLs are not consulted.

    ``max_crl_age_days``: a CRL issued longer ago than this counts as out of date even before
    its nextUpdate (None: nextUpdate alone decides).
    ``sha1_roots``: SHA-256 fingerprints of roots whose chains may use SHA-1 certificate
    signatures (see :data:`LEGACY_SHA1_ROOTS`).
    """

    roots: tuple[bytes, ...]
    intermediates: tuple[bytes, ...] = ()
    crls: tuple[bytes, ...] = ()
    revocation: str = "soft-fail"
    max_crl_age_days: int | None = None
    sha1_roots: frozenset[str] = LEGACY_SHA1_ROOTS
    version: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        if self.revocation not in REVOCATION_MODES:
            raise TrustStoreError(
                f"revocation must be one of {', '.join(REVOCATION_MODES)}, not {self.revocation!r}"
            )
        if self.max_crl_age_days is not None and self.max_crl_age_days < 1:
            raise TrustStoreError(
                f"max_crl_age_days must be at least 1, not {self.max_crl_age_days}"
            )
        object.__setattr__(self, "version", self._digest())

    def _digest(self) -> str:
        h = hashlib.sha256(b"congvu-trust-store/1\0")

        def put(label: str, items: Iterable[bytes]) -> None:
            items = tuple(items)
            h.update(f"{label}:{len(items)}\0".encode())
            for item in items:
                h.update(len(item).to_bytes(8, "big"))
                h.update(item)

        put("roots", self.roots)
        put("intermediates", self.intermediates)
        put("crls", self.crls)
        put("sha1_roots", (fp.encode() for fp in sorted(self.sha1_roots)))
        settings = f"{self.revocation}|{self.max_crl_age_days}"
        put("settings", (settings.encode(),))
        return h.hexdigest()

    def describe(self) -> str:
        """One line for logs: counts, mode and the version prefix."""
        return (
            f"{len(self.roots)} roots, {len(self.intermediates)} intermediates, "
            f"{len(self.crls)} CRLs, revocation {self.revocation}, version {self.version[:12]}"
        )


def load_trust_store(
    base: Path | Traversable,
    *,
    revocation: str = "soft-fail",
    max_crl_age_days: int | None = None,
    sha1_roots: frozenset[str] = LEGACY_SHA1_ROOTS,
    pins: Mapping[str, str] = PINNED_FILES,
) -> TrustStore:
    """Read ``base/trust``, ``base/intermediates`` and ``base/crl`` into a :class:`TrustStore`.

    Certificates may be PEM (several per file), DER or PKCS#7 (``.p7b``); CRLs DER or PEM.
    ``trust/`` must exist and hold at least one CA certificate; the other two may be absent.
    Dot-files, ``*.md`` and ``*.txt`` are skipped; any other unexpected file is an error rather
    than silently ignored, so a misnamed root is noticed.
    """
    if not base.is_dir():
        raise TrustStoreError(f"{base}: not a directory")
    trust_dir = base / "trust"
    if not trust_dir.is_dir():
        raise TrustStoreError(f"{trust_dir}: missing (the trust anchors live there)")
    roots = _load_certs(trust_dir, pins, role="trust anchor")
    if not roots:
        raise TrustStoreError(f"{trust_dir}: no root certificates")
    intermediates = _load_certs(base / "intermediates", pins, role="intermediate")
    crls = _load_crls(base / "crl")
    return TrustStore(
        roots=tuple(roots),
        intermediates=tuple(der for der in intermediates if der not in roots),
        crls=tuple(crls),
        revocation=revocation,
        max_crl_age_days=max_crl_age_days,
        sha1_roots=sha1_roots,
    )


def shipped_certs() -> Traversable:
    """The certificate folder shipped with the package.

    Installed: ``gateway/data/certs`` inside the package (package data). In a source checkout
    (editable install) that folder may be absent, and the repository's top-level ``certs/`` is
    used: one copy of the certificates, wherever the code runs from.
    """
    packaged = resources.files("gateway").joinpath("data", "certs")
    if packaged.joinpath("trust").is_dir():
        return packaged
    checkout = Path(__file__).resolve().parent.parent / "certs"
    if (checkout / "trust").is_dir():
        return checkout
    raise TrustStoreError(
        "no shipped certificates: neither gateway/data/certs nor the checkout's certs/ exists"
    )


def default_trust_store(
    *,
    revocation: str = "soft-fail",
    max_crl_age_days: int | None = None,
) -> TrustStore:
    """The store shipped with congvu-gateway: VGCA G1/G2 and the national root, pinned."""
    return load_trust_store(
        shipped_certs(),
        revocation=revocation,
        max_crl_age_days=max_crl_age_days,
    )


# --- reading files ----------------------------------------------------------------------------


def _entries(folder: Traversable, suffixes: tuple[str, ...]) -> list[Traversable]:
    if not folder.is_dir():
        return []
    found = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        name = entry.name
        if name.startswith(".") or name.lower().endswith(_IGNORED_SUFFIXES):
            continue
        if entry.is_dir():
            raise TrustStoreError(f"{entry}: unexpected folder")
        if not name.lower().endswith(suffixes):
            raise TrustStoreError(f"{entry}: unexpected file (expected {', '.join(suffixes)})")
        found.append(entry)
    return found


def _read(entry: Traversable) -> bytes:
    try:
        return entry.read_bytes()
    except OSError as exc:
        raise TrustStoreError(f"{entry}: cannot read ({exc.strerror or exc})") from exc


def _pem_blocks(data: bytes, entry: Traversable) -> list[tuple[str, bytes]]:
    blocks = []
    for match in _PEM_BLOCK.finditer(data):
        label = match.group(1).decode("ascii")
        body = b"".join(
            line
            for line in match.group(2).splitlines()
            if b":" not in line  # skip PEM headers
        )
        try:
            blocks.append((label, base64.b64decode(body, validate=True)))
        except (binascii.Error, ValueError) as exc:
            raise TrustStoreError(f"{entry}: bad base64 in a {label} block") from exc
    if not blocks:
        raise TrustStoreError(f"{entry}: PEM file without any -----BEGIN block")
    return blocks


def _load_certs(folder: Traversable, pins: Mapping[str, str], *, role: str) -> list[bytes]:
    ders: list[bytes] = []
    for entry in _entries(folder, _CERT_SUFFIXES):
        data = _read(entry)
        certs = _parse_certs(data, entry)
        if not certs:
            raise TrustStoreError(f"{entry}: no certificate in the file")
        pinned = pins.get(entry.name)
        if pinned is not None:
            got = [fingerprint(der) for der, _ in certs]
            if got != [pinned.lower()]:
                raise TrustStoreError(
                    f"{entry}: SHA-256 fingerprint {', '.join(got)} does not match the pin "
                    f"{pinned} (a corrupted or substituted copy)"
                )
        for der, cert in certs:
            _require_ca(cert, entry, role)
            if der not in ders:
                ders.append(der)
    return ders


def _parse_certs(data: bytes, entry: Traversable) -> list[tuple[bytes, x509.Certificate]]:
    if entry.name.lower().endswith((".p7b", ".p7c")):
        try:
            loaded = (
                pkcs7.load_pem_pkcs7_certificates(data)
                if b"-----BEGIN" in data
                else pkcs7.load_der_pkcs7_certificates(data)
            )
        except ValueError as exc:
            raise TrustStoreError(f"{entry}: not a PKCS#7 certificate bundle ({exc})") from exc
        return [(c.public_bytes(_DER), c) for c in loaded]
    if b"-----BEGIN" in data or entry.name.lower().endswith(".pem"):
        ders = []
        for label, der in _pem_blocks(data, entry):
            if label not in ("CERTIFICATE", "X509 CERTIFICATE"):
                raise TrustStoreError(f"{entry}: unexpected PEM block {label!r}, not a certificate")
            ders.append(der)
    else:
        ders = [data]
    out = []
    for der in ders:
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError as exc:
            raise TrustStoreError(f"{entry}: not an X.509 certificate ({exc})") from exc
        out.append((cert.public_bytes(_DER), cert))
    return out


def _require_ca(cert: x509.Certificate, entry: Traversable, role: str) -> None:
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        is_ca = constraints.ca
    except x509.ExtensionNotFound:
        # RFC 5280 4.2.1.9: a v1 certificate (no extensions) can only be a trust anchor.
        is_ca = role == "trust anchor" and cert.version == x509.Version.v1
    except ValueError as exc:
        raise TrustStoreError(f"{entry}: unreadable extensions ({exc})") from exc
    if not is_ca:
        raise TrustStoreError(
            f"{entry}: {cert.subject.rfc4514_string()} is not a CA certificate and cannot be "
            f"a {role}"
        )


def _load_crls(folder: Traversable) -> list[bytes]:
    ders: list[bytes] = []
    for entry in _entries(folder, _CRL_SUFFIXES):
        data = _read(entry)
        if b"-----BEGIN" in data or entry.name.lower().endswith(".pem"):
            blocks = _pem_blocks(data, entry)
            for label, _ in blocks:
                if label != "X509 CRL":
                    raise TrustStoreError(f"{entry}: unexpected PEM block {label!r} (not a CRL)")
            raw = [der for _, der in blocks]
        else:
            raw = [data]
        for der in raw:
            try:
                crl = x509.load_der_x509_crl(der)
                crl.next_update_utc  # noqa: B018 -- parse the fields pyHanko will read
            except ValueError as exc:
                raise TrustStoreError(f"{entry}: not a CRL ({exc})") from exc
            if der not in ders:
                ders.append(der)
    return ders


def trust_for(policy: Policy) -> TrustStore:
    """The trust store the policy names ("builtin", or a folder relative to the policy file)."""
    settings = policy.trust
    if settings.store == "builtin":
        return default_trust_store(revocation=settings.revocation)
    base = Path(settings.store).expanduser()
    if not base.is_absolute() and not policy.source.startswith("<"):
        base = Path(policy.source).resolve().parent / base
    return load_trust_store(base, revocation=settings.revocation)
