"""``run_messages``: generates and checks a range of messages, in this process or in a pool
of worker processes (one ``CheckRunner`` each), and merges what each chunk found."""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections.abc import Callable

from bench.fuzz.messages import generate_message
from bench.fuzz.report import MessageReport
from bench.fuzz.runner import CheckRunner

_RUNNER: CheckRunner | None = None


def _worker_init() -> None:
    global _RUNNER  # noqa: PLW0603 - one runner per worker process
    logging.disable(logging.CRITICAL)  # pyHanko and friends log every broken file
    _RUNNER = CheckRunner()


def _worker_chunk(job: tuple[int, int, int]) -> MessageReport:
    seed, start, stop = job
    assert _RUNNER is not None
    report = MessageReport()
    began = time.perf_counter()
    for index in range(start, stop):
        _RUNNER.run(generate_message(seed, index), index, report)
    report.seconds = time.perf_counter() - began
    return report


def run_messages(
    count: int,
    seed: int,
    *,
    workers: int = 1,
    start: int = 0,
    chunk: int = 200,
    progress: Callable[[int, int], None] | None = None,
) -> MessageReport:
    """Generate and check messages ``start`` .. ``start + count - 1`` of run ``seed``."""
    total = MessageReport()
    began = time.perf_counter()
    jobs = [(seed, i, min(i + chunk, start + count)) for i in range(start, start + count, chunk)]
    if workers <= 1:
        global _RUNNER  # noqa: PLW0603
        previous = _RUNNER
        _RUNNER = CheckRunner()
        try:
            for job in jobs:
                total.merge(_worker_chunk(job))
                if progress:
                    progress(total.messages, count)
        finally:
            _RUNNER.close()
            _RUNNER = previous
    else:
        context = multiprocessing.get_context("spawn")
        with context.Pool(workers, initializer=_worker_init) as pool:
            for part in pool.imap_unordered(_worker_chunk, jobs):
                total.merge(part)
                if progress:
                    progress(total.messages, count)
    total.seconds = time.perf_counter() - began
    return total
