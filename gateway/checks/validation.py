"""Signature validation off the event loop: worker processes, a time limit, and a cache.

PDF validation costs tens of milliseconds of CPU (more for large or hostile files), so it runs
in a process pool sized to the cores. Each job has a wall-clock limit; a job over it is
answered ``permerror``/``unreadable`` and the pool is replaced (a stuck worker cannot be
cancelled, only killed). Results are cached by (what was validated, trust-store version), so
a circular sent to fifty units is validated once.

A worker that dies makes :class:`ValidationUnavailable` rise: the engine answers 4xx.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import hashlib
import multiprocessing
import os
import signal
import threading
import time
from collections import OrderedDict
from concurrent.futures.process import BrokenProcessPool
from datetime import UTC, datetime
from typing import Any, Protocol

from gateway.checks.trust import TrustStore, trust_for
from gateway.config import GatewayConfig
from policies.model import SignatureCheck
from policies.schema import Policy

__all__ = ["PoolValidator", "SignatureValidator", "ValidationUnavailable", "make_validator"]


class ValidationUnavailable(Exception):
    """A validation worker failed (crashed, killed): temporary, answer 4xx."""


class SignatureValidator(Protocol):
    """What the engine asks of a validator."""

    async def pdf(self, data: bytes) -> SignatureCheck:
        """Validate a PDF's embedded signatures."""

    async def detached(self, content: bytes, signature: bytes) -> SignatureCheck:
        """Validate a detached CMS signature over ``content``."""

    async def smime(self, signed: bytes, signature: bytes, from_address: str) -> SignatureCheck:
        """Validate an S/MIME signature over the signed part, for ``from_address``."""


# -- worker side -------------------------------------------------------------------------------

_TRUST: TrustStore | None = None


def _init_worker(trust: TrustStore) -> None:
    global _TRUST  # noqa: PLW0603 - one trust store per worker process, set once at start
    _TRUST = trust
    # pyHanko (a third of a second to import) is loaded where documents are validated: in the
    # worker, at its start; a command that judges no document never loads it.
    from gateway.checks import signatures  # noqa: PLC0415

    signatures.quiet_library_logs()  # pyHanko logs every failed signature with a traceback


class _TimeUp(BaseException):  # BaseException: it must get past "except Exception"
    """The per-document time limit ran out inside the worker."""


def _alarm(signum: int, frame: object) -> None:
    raise _TimeUp


def _work(kind: str, args: tuple[Any, ...], limit: float) -> SignatureCheck:
    """Validate in the worker; the time limit starts when the worker starts the job.

    In a worker process a SIGALRM interrupts a validation that runs too long, and the worker
    survives for the next job. (In threads, for ``congvu check``, only the caller's wait
    bounds the time.)
    """
    use_alarm = threading.current_thread() is threading.main_thread()
    if use_alarm:
        signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        return _validate(kind, args)
    except _TimeUp:
        return SignatureCheck(
            kind, "permerror", "unreadable", f"validation took longer than {limit:g} s"
        )
    finally:
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)


def _validate(kind: str, args: tuple[Any, ...]) -> SignatureCheck:
    from gateway.checks import signatures  # noqa: PLC0415 - loaded by _init_worker already

    trust = _TRUST
    if trust is None:  # pragma: no cover - the initializer always runs first
        raise RuntimeError("worker has no trust store")
    now = datetime.now(UTC)
    started = time.perf_counter()
    if kind == "pdf":
        check = signatures.validate_pdf(args[0], trust, now, allow_hybrid_xrefs=args[1])
    elif kind == "cms":
        check = signatures.validate_detached(args[0], args[1], trust, now)
    else:
        check = signatures.validate_smime(args[0], args[1], trust, now, args[2])
    elapsed = (time.perf_counter() - started) * 1000
    return dataclasses.replace(check, elapsed_ms=round(elapsed, 3))


def _noop() -> None:
    """Nothing: submitted once per worker to make it start."""


# -- gateway side ------------------------------------------------------------------------------


class PoolValidator:
    """Validates in worker processes (or threads, for the one-shot ``congvu check``)."""

    def __init__(
        self,
        trust: TrustStore,
        *,
        workers: int = 0,
        timeout: float = 10.0,
        max_bytes: int = 25 * 1024 * 1024,
        processes: bool = True,
        allow_hybrid_xrefs: bool = True,
        cache_size: int = 2048,
        cache_ttl: float = 600.0,
        queue_wait: float = 30.0,
    ) -> None:
        self.trust = trust
        self.workers = workers or os.cpu_count() or 1
        self.timeout = timeout
        self.queue_wait = queue_wait
        self.max_bytes = max_bytes
        self.processes = processes
        self.allow_hybrid_xrefs = allow_hybrid_xrefs
        self._pool: concurrent.futures.Executor | None = None
        self._cache: OrderedDict[str, tuple[float, SignatureCheck]] = OrderedDict()
        self._cache_size, self._cache_ttl = cache_size, cache_ttl
        self.hits = 0
        self.misses = 0

    def _executor(self) -> concurrent.futures.Executor:
        if self._pool is None:
            if self.processes:
                # spawn: workers never inherit the event loop's threads or sockets.
                self._pool = concurrent.futures.ProcessPoolExecutor(
                    self.workers,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_init_worker,
                    initargs=(self.trust,),
                )
            else:
                _init_worker(self.trust)
                self._pool = concurrent.futures.ThreadPoolExecutor(self.workers)
        return self._pool

    def replace_trust(self, trust: TrustStore, *, allow_hybrid_xrefs: bool = True) -> None:
        """Use a new trust store (policy reload): new workers; cached results no longer match."""
        self.trust = trust
        self.allow_hybrid_xrefs = allow_hybrid_xrefs
        self._discard_pool()

    def _discard_pool(self, *, kill: bool = False) -> None:
        """Stop using the current pool; ``kill`` its processes only when one is stuck.

        Without ``kill`` (a reload) jobs already running finish in the old pool.
        """
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if kill and isinstance(pool, concurrent.futures.ProcessPoolExecutor):
            # A stuck worker ignores cancellation: kill the processes themselves.
            for process in list(getattr(pool, "_processes", {}).values()):
                process.kill()
        pool.shutdown(wait=False, cancel_futures=kill)

    async def warm_up(self) -> None:
        """Start the workers now, so the first document does not wait for them to spawn."""
        if not self.processes:
            return
        loop = asyncio.get_running_loop()
        pool = self._executor()
        await asyncio.gather(
            *(loop.run_in_executor(pool, _noop) for _ in range(self.workers)),
            return_exceptions=True,
        )

    def close(self) -> None:
        """Stop the workers."""
        self._discard_pool(kill=True)

    async def _run(self, kind: str, args: tuple[Any, ...], size: int) -> SignatureCheck:
        digest = hashlib.sha256(kind.encode())
        for arg in args:
            if isinstance(arg, bool):
                digest.update(b"1" if arg else b"0")
            else:
                digest.update(
                    hashlib.sha256(arg if isinstance(arg, bytes) else arg.encode()).digest()
                )
        key = f"{digest.hexdigest()}:{self.trust.version}"
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            self.hits += 1
            self._cache.move_to_end(key)
            return dataclasses.replace(hit[1], cached=True)
        self.misses += 1
        if size > self.max_bytes:
            return SignatureCheck(
                kind, "permerror", "unreadable", f"{size} bytes: over the {self.max_bytes} limit"
            )
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(self._executor(), _work, kind, args, self.timeout)
            # The worker enforces the document's own limit; this wait only catches a worker
            # that is stuck beyond it, or a queue too long to wait for: temporary, never 5xx.
            check = await asyncio.wait_for(future, self.timeout + self.queue_wait)
        except TimeoutError as exc:
            if not self.processes:
                return SignatureCheck(
                    kind,
                    "permerror",
                    "unreadable",
                    f"validation took longer than {self.timeout:g} s",
                )
            self._discard_pool(kill=True)
            raise ValidationUnavailable("validation workers overloaded or stuck") from exc
        except BrokenProcessPool as exc:
            self._discard_pool(kill=True)
            raise ValidationUnavailable("a validation worker died") from exc
        # Temporary outcomes and time-outs (which may come from load) are not remembered, but
        # for an unknown revocation status: no CRL of that issuer is in the store, which only a
        # new trust store (another version, so another key) changes.
        remembered = check.result != "temperror" or check.problem == "revocation_unknown"
        if remembered and not check.detail.startswith("validation took longer"):
            self._cache[key] = (now + self._cache_ttl, check)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return check

    async def pdf(self, data: bytes) -> SignatureCheck:
        """Validate a PDF's embedded signatures."""
        return await self._run("pdf", (data, self.allow_hybrid_xrefs), len(data))

    async def detached(self, content: bytes, signature: bytes) -> SignatureCheck:
        """Validate a detached CMS signature over ``content``."""
        return await self._run("cms", (content, signature), len(content))

    async def smime(self, signed: bytes, signature: bytes, from_address: str) -> SignatureCheck:
        """Validate an S/MIME signature over the signed part, for ``from_address``."""
        return await self._run("smime", (signed, signature, from_address), len(signed))


def make_validator(
    config: GatewayConfig, policy: Policy, *, processes: bool = True
) -> PoolValidator:
    """The signature validator the configuration and policy ask for."""
    return PoolValidator(
        trust_for(policy),
        allow_hybrid_xrefs=policy.documents.allow_hybrid_xref,
        # 0: the cores shared among the SMTP worker processes (each has its own pool).
        workers=config.validation_workers or max(1, (os.cpu_count() or 1) // config.workers),
        timeout=config.validation_timeout,
        max_bytes=config.max_document_bytes,
        processes=processes,
    )
