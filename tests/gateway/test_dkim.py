"""DKIM through a real DNS server on loopback; DNS failures are temporary, never 'fail'."""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import Iterator

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.checks.dkim import MAX_SIGNATURES, verify_dkim
from gateway.checks.dns import DnsResolver
from tests.support.dns import DnsServer

MESSAGE = (
    b"From: Van thu <vanthu@lamdong.gov.vn>\r\nTo: a@dilinh.lamdong.gov.vn\r\n"
    b"Subject: Cong van\r\nMessage-ID: <k1@lamdong.gov.vn>\r\n\r\nNoi dung cong van.\r\n"
)


class Key:
    def __init__(self, bits: int = 2048) -> None:
        if bits < 1024:  # cryptography will not make keys this weak; openssl will
            pem = subprocess.run(
                ["openssl", "genrsa", str(bits)], capture_output=True, check=True
            ).stdout
            private = serialization.load_pem_private_key(pem, None)
            assert isinstance(private, rsa.RSAPrivateKey)
            self.private = private
        else:
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        self.pem = self.private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        der = self.private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.record = "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()

    def sign(
        self, message: bytes, domain: str = "lamdong.gov.vn", selector: str = "s1", **kwargs: object
    ) -> bytes:
        return (
            dkim.sign(
                message,
                selector.encode(),
                domain.encode(),
                self.pem,
                include_headers=[b"from", b"to", b"subject"],
                **kwargs,
            )
            + message
        )


@pytest.fixture(scope="module")
def key() -> Key:
    return Key()


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    server = DnsServer()
    yield server
    server.close()


async def test_valid_signature_passes_through_real_dns(dns_server: DnsServer, key: Key) -> None:
    """A signature whose key is published verifies: pass, with d= and s= recorded."""
    dns_server.txt["s1._domainkey.lamdong.gov.vn"] = key.record
    resolver = DnsResolver([dns_server.address], timeout=2)
    [result] = await verify_dkim(key.sign(MESSAGE), resolver)
    assert (result.domain, result.selector, result.result) == ("lamdong.gov.vn", "s1", "pass")


async def test_cache_answers_the_second_time(dns_server: DnsServer, key: Key) -> None:
    """A circular to many units costs one key lookup."""
    dns_server.txt["s1._domainkey.lamdong.gov.vn"] = key.record
    resolver = DnsResolver([dns_server.address], timeout=2)
    signed = key.sign(MESSAGE)
    for _ in range(3):
        assert (await verify_dkim(signed, resolver))[0].result == "pass"
    assert dns_server.queries.count("s1._domainkey.lamdong.gov.vn") == 1


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        (lambda m: m.replace(b"Noi dung", b"Noi dung sua"), "fail"),  # body changed
        (lambda m: m.replace(b"Subject: Cong van", b"Subject: Cong van gia"), "fail"),
    ],
)
async def test_changed_message_fails(
    dns_server: DnsServer, key: Key, tamper, expected: str
) -> None:  # type: ignore[no-untyped-def]
    """Any change to the signed body or headers is a DKIM fail."""
    dns_server.txt["s1._domainkey.lamdong.gov.vn"] = key.record
    resolver = DnsResolver([dns_server.address], timeout=2)
    [result] = await verify_dkim(tamper(key.sign(MESSAGE)), resolver)
    assert result.result == expected


async def test_missing_key_is_permerror_and_dns_trouble_is_temperror(
    dns_server: DnsServer, key: Key
) -> None:
    """NXDOMAIN is a permanent error; SERVFAIL and silence are temporary (4xx), not 'fail'."""
    resolver = DnsResolver([dns_server.address], timeout=0.5)
    signed = key.sign(MESSAGE)
    assert (await verify_dkim(signed, resolver))[0].result == "permerror"
    dns_server.servfail.add("s2._domainkey.lamdong.gov.vn")
    assert (await verify_dkim(key.sign(MESSAGE, selector="s2"), resolver))[0].result == "temperror"
    dns_server.silent.add("s3._domainkey.lamdong.gov.vn")
    assert (await verify_dkim(key.sign(MESSAGE, selector="s3"), resolver))[0].result == "temperror"


async def test_length_limited_signatures_do_not_count(dns_server: DnsServer, key: Key) -> None:
    """l= lets anyone append to the signed body, so such a signature is 'policy', not 'pass'."""
    dns_server.txt["s1._domainkey.lamdong.gov.vn"] = key.record
    resolver = DnsResolver([dns_server.address], timeout=2)
    [limited] = await verify_dkim(key.sign(MESSAGE, length=True), resolver)
    assert limited.result == "policy"


async def test_no_signature_and_too_many_signatures(dns_server: DnsServer, key: Key) -> None:
    """No DKIM-Signature: no results. Beyond the limit, the rest are reported unchecked."""
    resolver = DnsResolver([dns_server.address], timeout=2)
    assert await verify_dkim(MESSAGE, resolver) == ()
    dns_server.txt["s1._domainkey.lamdong.gov.vn"] = key.record
    signed = MESSAGE
    for _ in range(MAX_SIGNATURES + 2):
        signed = key.sign(signed)
    results = await verify_dkim(signed, resolver)
    assert len(results) == MAX_SIGNATURES + 1
    assert results[-1].result == "policy" and "2 more not checked" in results[-1].detail


async def test_ed25519_signatures_verify(dns_server: DnsServer) -> None:
    """RFC 8463 Ed25519 keys work (dkimpy needs PyNaCl for them)."""
    import nacl.signing

    signing = nacl.signing.SigningKey.generate()
    seed = base64.b64encode(bytes(signing))
    public = base64.b64encode(bytes(signing.verify_key)).decode()
    dns_server.txt["ed._domainkey.lamdong.gov.vn"] = f"v=DKIM1; k=ed25519; p={public}"
    signed = (
        dkim.sign(
            MESSAGE,
            b"ed",
            b"lamdong.gov.vn",
            seed,
            signature_algorithm=b"ed25519-sha256",
            include_headers=[b"from", b"subject"],
        )
        + MESSAGE
    )
    [result] = await verify_dkim(signed, DnsResolver([dns_server.address], timeout=2))
    assert result.result == "pass"


async def test_a_malformed_key_record_is_permerror(dns_server: DnsServer, key: Key) -> None:
    """A key that is not base64 is the publisher's error (permerror), not a bad signature."""
    dns_server.txt["s1._domainkey.lamdong.gov.vn"] = "v=DKIM1; k=rsa; p=!!!not-base64!!!"
    [result] = await verify_dkim(key.sign(MESSAGE), DnsResolver([dns_server.address], timeout=2))
    assert result.result == "permerror"


async def test_a_key_under_1024_bits_is_refused_as_permerror(dns_server: DnsServer) -> None:
    """RFC 8301: verifiers must not accept RSA keys under 1024 bits (anyone can factor 512)."""
    small = Key(bits=512)
    dns_server.txt["s1._domainkey.lamdong.gov.vn"] = small.record
    resolver = DnsResolver([dns_server.address], timeout=2)
    [result] = await verify_dkim(small.sign(MESSAGE), resolver)
    assert result.result == "permerror" and "too small" in result.detail


@pytest.mark.parametrize("algorithm", [b"rsa-sha256", b"rsa-sha1"])
def test_the_gateways_verifier_agrees_with_dkimpys_own(key: Key, algorithm: bytes) -> None:
    """GatewayDKIM (RSA in OpenSSL, the fast split, cached keys) must give dkimpy's own verdict
    on good and on altered signatures, for SHA-256 and legacy SHA-1."""
    import dkim

    from gateway.checks.dkim import GatewayDKIM

    signed = key.sign(MESSAGE, signature_algorithm=algorithm)
    altered = signed.replace(b"Noi dung", b"Noi dung sua")  # the body hash fails
    forged = signed.replace(b"Subject: Cong van", b"Subject: Cong van gia")  # the RSA check fails

    def check(verifier: type[dkim.DKIM], message: bytes) -> bool:
        try:
            return bool(verifier(message).verify(0, dnsfunc=lambda *_a, **_k: key.record.encode()))
        except dkim.ValidationError:  # a body that does not match its hash
            return False

    ours = [check(GatewayDKIM, m) for m in (signed, altered, forged)]
    theirs = [check(dkim.DKIM, m) for m in (signed, altered, forged)]
    assert ours == theirs == [True, False, False]


def test_importing_the_gateway_leaves_dkimpy_as_it_is_for_everyone_else() -> None:
    """The gateway's faster helpers live in its own subclass: a program that imports the
    gateway and uses dkimpy itself gets dkimpy's own functions."""
    script = (
        "import dkim, dkim.crypto\n"
        "before = (dkim.rfc822_parse, dkim.evaluate_pk, dkim.RSASSA_PKCS1_v1_5_verify)\n"
        "import gateway.cli, gateway.checks.dkim\n"
        "after = (dkim.rfc822_parse, dkim.evaluate_pk, dkim.RSASSA_PKCS1_v1_5_verify)\n"
        "assert after == before, after\n"
        "assert dkim.RSASSA_PKCS1_v1_5_verify is dkim.crypto.RSASSA_PKCS1_v1_5_verify\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)


@pytest.mark.parametrize(
    "raw",
    [
        # A folded first header line: IndexError inside dkimpy.
        b" x\r\nDKIM-Signature: v=1; a=rsa-sha256; d=lamdong.gov.vn; s=s1; h=from; bh=x; b=y\r\n"
        b"From: a@lamdong.gov.vn\r\n\r\nbody\r\n",
        # A header line dkimpy cannot read: MessageFormatError from its constructor.
        b"DKIM-Signature: v=1; a=rsa-sha256; d=lamdong.gov.vn; s=s1; h=from; bh=x; b=y\r\n"
        b"not a header\r\nFrom: a@lamdong.gov.vn\r\n\r\nbody\r\n",
    ],
    ids=["folded-first-line", "unparsable-header"],
)
async def test_input_dkimpy_chokes_on_is_permerror(dns_server: DnsServer, raw: bytes) -> None:
    """Found by bench/fuzz.py: these crashed the check (451 for ever); now permerror."""
    resolver = DnsResolver([dns_server.address], timeout=2)
    [result] = await verify_dkim(raw, resolver)
    assert result.result == "permerror"


async def test_a_non_base64_body_hash_is_permerror(dns_server: DnsServer, key: Key) -> None:
    """With a real key published, a bh= holding a non-base64 byte (binascii.Error in dkimpy)."""
    dns_server.txt["s1._domainkey.lamdong.gov.vn"] = key.record
    resolver = DnsResolver([dns_server.address], timeout=2)
    signed = key.sign(MESSAGE)
    start = signed.index(b"bh=") + 10
    broken = signed[:start] + b"\xd1" + signed[start + 1 :]
    [result] = await verify_dkim(broken, resolver)
    assert result.result in ("permerror", "fail")


def test_a_signature_missing_its_leading_zero_byte_still_verifies(key: Key) -> None:
    """Some signers drop a leading zero byte (1 signature in 256); dkimpy accepts that, so the
    OpenSSL check must too (found in review)."""
    import hashlib

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

    from gateway.checks.dkim import _rsa_verify

    numbers = key.private.public_key().public_numbers()
    public = {"modulus": numbers.n, "publicExponent": numbers.e}
    for n in range(5000):
        digest = hashlib.sha256(f"message {n}".encode())
        signature = key.private.sign(
            digest.digest(), padding.PKCS1v15(), Prehashed(hashes.SHA256())
        )
        if signature[0] == 0:
            break
    else:  # pragma: no cover - 5000 tries without a leading zero: (255/256)^5000
        raise AssertionError("no signature with a leading zero byte")
    assert _rsa_verify(digest, signature, public)
    assert _rsa_verify(digest, signature[1:], public)  # the zero dropped
    assert not _rsa_verify(digest, signature[2:], public)  # a real byte dropped


_PIECES = st.sampled_from(
    [
        b"From: a@b.gov.vn",
        b"Subject: x",
        b" folded",
        b"\tfolded",
        b"",
        b"body",
        b".",
        b"\r",
        b"From x",
        b"X-Y:z",
        b"bad header",
        b"\xff\x00",
    ]
)
_ENDS = st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r"])


@settings(max_examples=400)
@given(st.lists(st.tuples(_PIECES, _ENDS), max_size=20))
def test_the_fast_message_split_gives_dkimpy_exactly_what_its_own_does(
    lines: list[tuple[bytes, bytes]],
) -> None:
    """The gateway's replacement for dkimpy's header/body split (no line-by-line body copy)
    must hand dkimpy the same headers and body for any input, or raise where it raises:
    what is verified must not depend on which split ran."""
    from gateway.checks.dkim import _rfc822_parse, _split_message

    message = b"".join(text + end for text, end in lines)
    try:
        expected = _rfc822_parse(message)
    except Exception as exc:  # noqa: BLE001 - a folded first line is an IndexError there
        with pytest.raises(type(exc)):
            _split_message(message)
        return
    assert _split_message(message) == expected
