"""The trust store: the real Vietnamese certificates shipped in certs/, and the loader's rules."""

from __future__ import annotations

import asyncio
import pickle
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from asn1crypto import pem as asn1_pem
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pyhanko_certvalidator import CertificateValidator, ValidationContext
from pyhanko_certvalidator.policy_decl import NO_REVOCATION, CertRevTrustPolicy
from pyhanko_certvalidator.sig_validate import DefaultSignatureValidator

from gateway.checks.trust import (
    LEGACY_SHA1_ROOTS,
    PINNED_FILES,
    TrustStore,
    TrustStoreError,
    default_trust_store,
    fingerprint,
    load_trust_store,
    shipped_certs,
)
from tests.support.pki import TestPKI

CERTS = Path(__file__).resolve().parents[2] / "certs"

# From certs/README.md and shared/trust-anchors/README.md (checked against published pins).
EXPECTED = {
    "trust/vgca-root-g2.pem": "f04ba4b459a7c9a1b971ad9b1cb833e695a80c79aea63b174b66a70edfe2fdb8",
    "trust/vgca-root-g1.pem": "f7bc89054cec7f12730d7b8cd3eb7955b163835087e5eb873edfb584763b3f90",
    "trust/neac-vietnam-national-root-ca.pem": (
        "bac8bf609ab420a8ee1780d74f4de5c7f7184959d2a7375b0a75e4c29f0908e7"
    ),
    "intermediates/vgca-ca-co-quan-nha-nuoc-g2.pem": (
        "d8cab7a4aef92e6bb2509d7c61cee7b44f3731b2d21074963530277b366fae4b"
    ),
    "intermediates/vnpt-ca-sha2.pem": (
        "7d6ba5245317f9ed5d8bc765a4634d26ac6340d36b9f584df3b52d9c4a81a306"
    ),
}
G1 = EXPECTED["trust/vgca-root-g1.pem"]
# Inside the validity of every shipped certificate (VNPT-CA SHA2: 2024-08-30 to 2029-08-30).
MOMENT = datetime(2026, 6, 1, tzinfo=UTC)


def der_of(relative: str) -> bytes:
    """The DER of one shipped PEM."""
    _, _, der = asn1_pem.unarmor((CERTS / relative).read_bytes())
    return der


# --- the shipped certificates -----------------------------------------------------------------


@pytest.mark.parametrize(("relative", "pin"), EXPECTED.items())
def test_shipped_certificate_matches_its_pin(relative: str, pin: str) -> None:
    """Each shipped PEM has the SHA-256 fingerprint published for it."""
    assert fingerprint(der_of(relative)) == pin
    assert PINNED_FILES[Path(relative).name] == pin


def test_shipped_folders_hold_exactly_the_pinned_files() -> None:
    """No unpinned certificate slipped into certs/trust or certs/intermediates."""
    shipped = {
        f"{folder}/{p.name}"
        for folder in ("trust", "intermediates")
        for p in (CERTS / folder).iterdir()
        if not p.name.startswith(".")
    }
    assert shipped == set(EXPECTED)


@pytest.mark.parametrize(
    "relative", [r for r in EXPECTED if r.startswith("trust/")], ids=lambda r: Path(r).stem
)
def test_roots_are_self_signed_cas(relative: str) -> None:
    """Each root is a CA whose signature verifies under its own key (G1's with SHA-1)."""
    cert = asn1_x509.Certificate.load(der_of(relative))
    assert cert.ca
    assert cert.issuer == cert.subject
    assert "key_cert_sign" in cert.key_usage_value.native
    DefaultSignatureValidator().validate_signature(
        cert["signature_value"].native,
        cert["tbs_certificate"].dump(),
        cert.public_key,
        cert["signature_algorithm"],
    )


def test_g1_is_the_only_sha1_root() -> None:
    """Only the G1 root is SHA-1 signed, and only it gets the scoped SHA-1 allowance."""
    algorithms = {
        r: x509.load_der_x509_certificate(der_of(r)).signature_hash_algorithm for r in EXPECTED
    }
    sha1 = {r for r, h in algorithms.items() if h is not None and h.name == "sha1"}
    assert sha1 == {"trust/vgca-root-g1.pem"}
    assert frozenset({G1}) == LEGACY_SHA1_ROOTS
    assert default_trust_store().sha1_roots == LEGACY_SHA1_ROOTS


def _build_path(store: TrustStore, relative: str) -> list[str]:
    """Subjects (root first) of the path pyhanko-certvalidator builds for a shipped cert."""
    context = ValidationContext(
        trust_roots=[asn1_x509.Certificate.load(d) for d in store.roots],
        other_certs=[asn1_x509.Certificate.load(d) for d in store.intermediates],
        moment=MOMENT,
        allow_fetching=False,
        revinfo_policy=CertRevTrustPolicy(NO_REVOCATION),
    )
    validator = CertificateValidator(
        asn1_x509.Certificate.load(der_of(relative)), validation_context=context
    )
    path = asyncio.run(validator.async_validate_path())
    return [fingerprint(c.dump()) for c in path.iter_certs(include_root=True)]


def test_vgca_state_agency_ca_chains_to_g2_root() -> None:
    """CA phục vụ các cơ quan Nhà nước G2 → RootCA chuyên dùng Chính phủ G2."""
    path = _build_path(default_trust_store(), "intermediates/vgca-ca-co-quan-nha-nuoc-g2.pem")
    assert path == [
        EXPECTED["trust/vgca-root-g2.pem"],
        EXPECTED["intermediates/vgca-ca-co-quan-nha-nuoc-g2.pem"],
    ]


def test_vnpt_ca_chains_to_national_root() -> None:
    """VNPT-CA SHA2 → Vietnam National Root CA (NEAC)."""
    path = _build_path(default_trust_store(), "intermediates/vnpt-ca-sha2.pem")
    assert path == [
        EXPECTED["trust/neac-vietnam-national-root-ca.pem"],
        EXPECTED["intermediates/vnpt-ca-sha2.pem"],
    ]


def test_default_store_loads_the_shipped_folder() -> None:
    """The default store has the three roots as anchors and the two CAs for path building."""
    store = default_trust_store()
    assert {fingerprint(d) for d in store.roots} == {
        v for k, v in EXPECTED.items() if k.startswith("trust/")
    }
    assert {fingerprint(d) for d in store.intermediates} == {
        v for k, v in EXPECTED.items() if k.startswith("intermediates/")
    }
    assert store.revocation == "soft-fail"
    assert shipped_certs().joinpath("trust").is_dir()


# --- version ----------------------------------------------------------------------------------


def test_version_is_stable_and_follows_every_input(pki: TestPKI) -> None:
    """The version is the same for the same inputs and changes with any input or setting."""
    base = default_trust_store()
    assert base.version == default_trust_store().version
    assert len(base.version) == 64
    variants = [
        default_trust_store(revocation="hard-fail"),
        default_trust_store(max_crl_age_days=7),
        TrustStore(roots=base.roots, intermediates=base.intermediates, crls=(pki.root_crl,)),
        TrustStore(roots=base.roots, intermediates=base.intermediates[:1]),
        TrustStore(roots=base.roots, intermediates=base.intermediates, sha1_roots=frozenset()),
    ]
    versions = {v.version for v in variants}
    assert base.version not in versions
    assert len(versions) == len(variants)


@pytest.mark.parametrize(
    "settings",
    [{"revocation": "require"}, {"max_crl_age_days": 0}],
)
def test_bad_settings_are_refused(settings: dict[str, object]) -> None:
    """Out-of-range settings fail loudly, naming the setting."""
    with pytest.raises(TrustStoreError, match=next(iter(settings))):
        TrustStore(roots=(), **settings)  # type: ignore[arg-type]


# --- the loader -------------------------------------------------------------------------------


@pytest.fixture
def base(tmp_path: Path) -> Path:
    """A copy of the shipped certs/ folder to break."""
    shutil.copytree(CERTS, tmp_path / "certs")
    return tmp_path / "certs"


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def test_several_certificates_per_pem_and_der_files_load(base: Path, pki: TestPKI) -> None:
    """A PEM bundle yields every certificate; a DER .cer loads too."""
    (base / "trust" / "bundle.pem").write_bytes(_pem(pki.root.cert) + _pem(pki.rogue_root.cert))
    (base / "intermediates" / "issuing.cer").write_bytes(pki.issuing.der)
    store = load_trust_store(base)
    assert pki.root.der in store.roots
    assert pki.rogue_root.der in store.roots
    assert pki.issuing.der in store.intermediates
    assert len(store.roots) == 5


def test_crls_load_from_der_and_pem(base: Path, pki: TestPKI) -> None:
    """CRLs in DER (.crl) and PEM are read into the store."""
    (base / "crl" / "root.crl").write_bytes(pki.root_crl)
    crl = x509.load_der_x509_crl(pki.issuing_crl)
    (base / "crl" / "issuing.pem").write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    store = load_trust_store(base, revocation="hard-fail")
    assert set(store.crls) == {pki.root_crl, pki.issuing_crl}
    assert store.revocation == "hard-fail"


def test_notes_and_dotfiles_are_skipped(base: Path) -> None:
    """README.md, notes and dot-files beside the certificates are not errors."""
    (base / "trust" / "README.md").write_text("notes")
    (base / "crl" / ".gitkeep").write_text("")
    assert len(load_trust_store(base).roots) == 3


@pytest.mark.parametrize(
    ("folder", "name", "content", "message"),
    [
        ("trust", "junk.pem", b"hello", "PEM file without"),
        ("trust", "junk.der", b"\x30\x03\x02\x01\x01", "not an X.509 certificate"),
        (
            "trust",
            "bad64.pem",
            b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
            "bad base64",
        ),
        (
            "trust",
            "key.pem",
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            "not a certificate",
        ),
        ("trust", "root.exe", b"MZ", "unexpected file"),
        ("intermediates", "junk.crt", b"\x00\x01", "not an X.509 certificate"),
        ("crl", "junk.crl", b"not a crl", "not a CRL"),
    ],
)
def test_garbage_files_are_refused_by_name(
    base: Path, folder: str, name: str, content: bytes, message: str
) -> None:
    """An unreadable or foreign file stops loading, and the error names it."""
    (base / folder / name).write_bytes(content)
    with pytest.raises(TrustStoreError, match=re.escape(message)) as raised:
        load_trust_store(base)
    assert name in str(raised.value)


def test_end_entity_certificate_in_trust_is_refused(base: Path, pki: TestPKI) -> None:
    """A signer's certificate dropped into trust/ is refused: anchors must be CAs."""
    (base / "trust" / "person.pem").write_bytes(_pem(pki.person.cert))
    with pytest.raises(TrustStoreError, match="not a CA certificate") as raised:
        load_trust_store(base)
    assert "person.pem" in str(raised.value)


def test_end_entity_certificate_in_intermediates_is_refused(base: Path, pki: TestPKI) -> None:
    """intermediates/ only takes CA certificates too."""
    (base / "intermediates" / "clerk.pem").write_bytes(_pem(pki.clerk.cert))
    with pytest.raises(TrustStoreError, match=r"clerk\.pem"):
        load_trust_store(base)


def test_substituted_pinned_file_is_refused(base: Path) -> None:
    """A file named like a shipped root but holding another certificate stops loading."""
    shutil.copy(base / "trust" / "vgca-root-g2.pem", base / "trust" / "vgca-root-g1.pem")
    with pytest.raises(TrustStoreError, match="does not match the pin") as raised:
        load_trust_store(base)
    assert "vgca-root-g1.pem" in str(raised.value)


def test_missing_or_empty_trust_folder_is_refused(base: Path, tmp_path: Path) -> None:
    """No trust/ folder, an empty one, or no folder at all: loading fails loudly."""
    with pytest.raises(TrustStoreError, match="not a directory"):
        load_trust_store(tmp_path / "nowhere")
    for pem in (base / "trust").iterdir():
        pem.unlink()
    with pytest.raises(TrustStoreError, match="no root certificates"):
        load_trust_store(base)
    (base / "trust").rmdir()
    with pytest.raises(TrustStoreError, match="missing"):
        load_trust_store(base)


def test_missing_optional_folders_are_empty(base: Path) -> None:
    """Without intermediates/ and crl/ the store simply has none."""
    shutil.rmtree(base / "intermediates")
    shutil.rmtree(base / "crl", ignore_errors=True)
    store = load_trust_store(base)
    assert store.intermediates == ()
    assert store.crls == ()


def test_store_survives_pickling() -> None:
    """The store crosses into worker processes intact, version included."""
    store = default_trust_store(revocation="hard-fail")
    copy = pickle.loads(pickle.dumps(store))
    assert copy == store
    assert copy.version == store.version
