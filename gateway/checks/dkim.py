"""DKIM verification (dkimpy) with keys fetched through our own DNS resolver (dnspython).

``dkim.verify()`` turns a DNS timeout into "signature invalid". Here the key is fetched first,
by an asynchronous resolver that tells a temporary failure (timeout, SERVFAIL: ``temperror``,
answered 4xx) from a missing key (``permerror``); only then does dkimpy check the signature,
with the fetched key handed to it. Every signature is reported, in RFC 8601 vocabulary.

The keys come through :mod:`gateway.checks.dns`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import types
from typing import Any

import dkim
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from gateway.checks.dns import DnsNoData, DnsTempError, TxtResolver
from policies.model import DkimResult

__all__ = [
    "INLINE_BYTES",
    "MAX_SIGNATURES",
    "GatewayDKIM",
    "verify_dkim",
]

MAX_SIGNATURES = 8  # more signatures than this are not checked (each costs a DNS lookup)
INLINE_BYTES = 256 * 1024  # messages up to this size are parsed and verified on the event loop
# What dkimpy raises on hostile input besides its own exceptions (found by the fuzzer: a
# folded first header line gives IndexError, a non-base64 bh= binascii.Error, a ValueError).
# Any of them makes that signature a permerror: never a pass, never a crashed check.
_DKIMPY_ERRORS = (dkim.DKIMException, ValueError, IndexError, KeyError, TypeError, UnicodeError)


@functools.lru_cache(maxsize=256)
def _rsa_key(modulus: int, exponent: int) -> rsa.RSAPublicKey:
    return rsa.RSAPublicNumbers(exponent, modulus).public_key()


def _rsa_verify(digest: Any, signature: bytes, public_key: dict[str, int]) -> bool:
    """dkimpy's RSASSA-PKCS1-v1_5 check, done by ``cryptography`` (OpenSSL) instead of in pure
    Python (about 0.6 ms less per signature). Same contract: the finished hash object, the
    signature, dkimpy's parsed key; True if the signature is valid."""
    algorithm = {"sha256": hashes.SHA256(), "sha1": hashes.SHA1()}.get(digest.name)  # noqa: S303
    if algorithm is None:
        return False
    key = _rsa_key(public_key["modulus"], public_key["publicExponent"])
    # dkimpy reads the signature as a number, so a signer that drops a leading zero byte is
    # still valid there; OpenSSL wants the key's length: put the zeros back.
    signature = signature.rjust((key.key_size + 7) // 8, b"\0")
    try:
        key.verify(signature, digest.digest(), padding.PKCS1v15(), Prehashed(algorithm))
    except (InvalidSignature, ValueError):
        return False
    return True


_rfc822_parse = dkim.rfc822_parse


def _split_message(message: bytes) -> tuple[list[list[bytes]], bytes]:
    """dkimpy's ``rfc822_parse`` without splitting the body into lines and joining them again:
    the same result when every line ends in CRLF (as the gateway's messages do), at a fraction
    of the cost (a 1.4 MB body is 19,000 lines). Anything else goes to dkimpy's own."""
    end = message.find(b"\r\n\r\n")
    if end <= 0 or message.startswith(b"\r\n") or message.count(b"\n") != message.count(b"\r\n"):
        return _rfc822_parse(message)  # type: ignore[no-any-return]
    headers, _ = _rfc822_parse(message[: end + 2])
    return headers, message[end + 4 :]


# dkimpy also parses the key record (tags, base64, ASN.1 in pure Python) for every signature,
# and here twice (our check of the record, then its own), though a few keys sign most mail. A
# record that does not parse raises each time (lru_cache keeps only results).
_evaluate_pk = functools.lru_cache(maxsize=256)(dkim.evaluate_pk)


def _with_helpers(function: Any, **helpers: Any) -> Any:
    """dkimpy's own ``function``, run with some of the module-level helpers it calls replaced.

    dkimpy looks its helpers up in its module's namespace at call time; a copy of the function
    over a copy of that namespace changes them for :class:`GatewayDKIM` alone. The dkim module
    itself is left as it is, for every other user of the library in the process.
    """
    namespace = {**vars(dkim), **helpers}
    missing = set(helpers) - set(vars(dkim))
    if missing:  # a dkimpy that renamed its helpers: fail at import, not silently
        raise ImportError(f"dkimpy has no {', '.join(sorted(missing))}")
    copy = types.FunctionType(
        function.__code__, namespace, function.__name__, function.__defaults__, function.__closure__
    )
    copy.__kwdefaults__ = function.__kwdefaults__
    return copy


class GatewayDKIM(dkim.DKIM):  # type: ignore[misc]
    """dkimpy's verifier with three faster helpers, each checked against dkimpy's own by a
    test: RSA by OpenSSL (:func:`_rsa_verify`), the header/body split without copying the body
    line by line (:func:`_split_message`), parsed key records cached (:data:`_evaluate_pk`)."""

    set_message = _with_helpers(dkim.DKIM.set_message, rfc822_parse=_split_message)
    verify_sig = _with_helpers(
        dkim.DKIM.verify_sig,
        load_pk_from_dns=_with_helpers(dkim.load_pk_from_dns, evaluate_pk=_evaluate_pk),
    )
    verify_sig_process = _with_helpers(
        dkim.DKIM.verify_sig_process, RSASSA_PKCS1_v1_5_verify=_rsa_verify
    )


_quiet = logging.getLogger("congvu.dkim")
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False


def _signature_count(raw: bytes) -> int:
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    return sum(1 for line in head.splitlines() if line[:15].lower() == b"dkim-signature:")


async def verify_dkim(raw: bytes, resolver: TxtResolver) -> tuple[DkimResult, ...]:
    """Verify every DKIM-Signature of ``raw`` (up to :data:`MAX_SIGNATURES`)."""
    count = _signature_count(raw)
    # Lookups in parallel: eight signatures must not cost eight DNS timeouts in a row.
    results = list(
        await asyncio.gather(
            *(_verify_one(raw, idx, resolver) for idx in range(min(count, MAX_SIGNATURES)))
        )
    )
    if count > MAX_SIGNATURES:
        results.append(DkimResult("", "", "policy", f"{count - MAX_SIGNATURES} more not checked"))
    return tuple(results)


async def _verify_one(raw: bytes, idx: int, resolver: TxtResolver) -> DkimResult:
    try:
        checker = GatewayDKIM(raw, logger=_quiet)  # parses the header: MessageFormatError
        prep = checker.verify_headerprep(idx)
    except _DKIMPY_ERRORS as exc:
        return DkimResult("", "", "permerror", f"malformed signature: {str(exc)[:150]}")
    if not prep:
        return DkimResult("", "", "permerror", "malformed signature")
    sig = prep[0]
    domain = sig[b"d"].decode("ascii", "replace").lower()
    selector = sig[b"s"].decode("ascii", "replace")
    if b"l" in sig:
        # A body length limit lets anyone append content under the signature.
        return DkimResult(domain, selector, "policy", "l= body length limit not accepted")
    name = f"{selector}._domainkey.{domain}"
    try:
        record = await resolver.txt(name)
    except DnsTempError as exc:
        return DkimResult(domain, selector, "temperror", f"key lookup: {exc}")
    except DnsNoData:
        return DkimResult(domain, selector, "permerror", f"no key at {name}")
    try:
        _evaluate_pk(name.encode(), record)  # a malformed key record is permerror, not fail
    except (dkim.DKIMException, ValueError, TypeError) as exc:
        return DkimResult(domain, selector, "permerror", f"bad key record: {str(exc)[:150]}")

    def verify() -> bool:
        return bool(checker.verify(idx, dnsfunc=lambda _name, timeout=5: record))

    try:
        # Hashing a large body goes to a thread so that other sessions are not held up; a
        # small one costs less than the hand-over to a thread and back.
        ok = await asyncio.to_thread(verify) if len(raw) > INLINE_BYTES else verify()
    except dkim.ValidationError as exc:  # body hash mismatch, expired signature, ...
        return DkimResult(domain, selector, "fail", str(exc)[:200])
    except _DKIMPY_ERRORS as exc:  # malformed key or signature, key too small
        return DkimResult(domain, selector, "permerror", str(exc)[:200])
    if ok:
        return DkimResult(domain, selector, "pass")
    return DkimResult(domain, selector, "fail", "signature does not verify")
