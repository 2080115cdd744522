"""Group commit: one writer thread per store commits whatever records are waiting together,
in one transaction; each writer still hears only once its own record is committed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.report.tally import Entry
from gateway.store.base import Record, StoreError

__all__ = ["WRITE_TIMEOUT", "GroupCommitter", "PendingRecord"]


@dataclass
class PendingRecord:
    """A record waiting for its group commit (both stores commit in groups)."""

    record: Record
    text: str
    entry: Entry | None = None  # what it adds to the rollups, if the writer knows already
    done: bool = False
    digest: str = ""
    error: BaseException | None = None
    event: threading.Event | None = None  # set when done, for a waiting thread
    future: asyncio.Future[None] | None = None  # resolved when done, for a waiting coroutine

    @classmethod
    def of(
        cls, record: Record, text: str | None = None, entry: Entry | None = None, **waiter: Any
    ) -> PendingRecord:
        if text is None:
            text = json.dumps(record, ensure_ascii=False, sort_keys=True)
        return cls(record, text, entry, **waiter)

    def result(self) -> str:
        """The chain hash, or :class:`StoreError` if the record was not committed."""
        if not self.done:
            raise StoreError(
                f"decision {self.record['id']} not committed within {WRITE_TIMEOUT:g} s"
            )
        if self.error is not None:
            raise StoreError(f"cannot write decision {self.record['id']}: {self.error}")
        return self.digest


WRITE_TIMEOUT = 30.0  # a write not committed by then is a store failure (the client gets 4xx)


class GroupCommitter:
    """One writer thread for a store: whatever records are waiting when it is free are
    committed together, in one transaction and one fsync (group commit).

    ``commit`` must set each record's ``digest`` or ``error`` (a bad record fails alone). A
    waiting thread is woken by an event; waiting coroutines are woken by one call into their
    event loop per group, not one per record: at hundreds of decisions a second the handoff
    between threads costs more than the insert.
    """

    def __init__(
        self,
        commit: Callable[[list[PendingRecord]], None],
        name: str,
        *,
        batch_wait: float = 0.0,
        max_batch: int = 500,
    ) -> None:
        self._commit = commit
        self.batch_wait, self.max_batch = batch_wait, max_batch
        self._queue: queue.SimpleQueue[PendingRecord | None] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def write(self, record: Record) -> str:
        """Queue ``record`` and wait, in this thread, until its group is committed."""
        pending = self._submit(record, None, None, event=threading.Event())
        assert pending.event is not None
        pending.event.wait(WRITE_TIMEOUT)
        return pending.result()

    async def write_async(
        self, record: Record, text: str | None = None, entry: Entry | None = None
    ) -> str:
        """Queue ``record`` (``text``: as JSON, and ``entry``, if known) and await its
        group's commit."""
        loop = asyncio.get_running_loop()
        pending = self._submit(record, text, entry, future=loop.create_future())
        assert pending.future is not None
        # A cancelled or timed-out wait cancels only this future: the record is still
        # committed (or not) by the writer, which skips futures nobody waits for.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(WRITE_TIMEOUT):
                await pending.future
        return pending.result()

    def _submit(
        self, record: Record, text: str | None, entry: Entry | None, **waiter: Any
    ) -> PendingRecord:
        if self._closed:
            raise StoreError("the decision store is closed")
        pending = PendingRecord.of(record, text, entry, **waiter)
        self._queue.put(pending)
        return pending

    def close(self) -> None:
        """Commit what is queued, then stop the writer."""
        self._closed = True
        self._queue.put(None)
        self._thread.join(WRITE_TIMEOUT)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                return
            group = [first]
            try:
                while len(group) < self.max_batch:
                    item = (
                        self._queue.get(timeout=self.batch_wait)
                        if self.batch_wait
                        else self._queue.get_nowait()
                    )
                    if item is None:
                        stopping = True
                        break
                    group.append(item)
            except queue.Empty:
                pass
            try:
                self._commit(group)
            except BaseException as exc:  # noqa: BLE001 - no waiter may hang or hear "stored"
                for pending in group:
                    pending.error = pending.error or exc
            finally:
                self._settle(group)

    @staticmethod
    def _settle(group: list[PendingRecord]) -> None:
        loops: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
        for pending in group:
            pending.done = True
            if pending.event is not None:
                pending.event.set()
            if pending.future is not None:
                loops.setdefault(pending.future.get_loop(), []).append(pending.future)
        for loop, futures in loops.items():
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                loop.call_soon_threadsafe(_resolve, futures)


def _resolve(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)
