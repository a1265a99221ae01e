"""The store writer: the store's work leaves the asyncio event loop.

One dedicated thread makes the store and is the only one to use it (a SQLite connection
belongs to its thread); it runs what it is asked in the order asked, and each ``await``
returns once its own transaction has committed, so a meter's readings are as durable as
before. Group commit: ``add_readings`` calls that queue up while the thread is busy are
written in one transaction, so a round of many meters costs a few fsyncs, not one each.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any, Self, TypeVar

import attrs

from ..model import Event, Reading, RoundReport
from . import Store, StoreError

T = TypeVar("T")

_THREAD_NAME = "meterhub-store-writer"


@attrs.frozen
class _Job:
    """One caller's request: ``fn(store, *args)``, or a batch of readings to merge."""

    fn: Callable[..., Any] | None
    args: tuple[Any, ...]
    batch: tuple[Sequence[Reading], Sequence[str]] | None
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


_STOP = object()  # queued by close(): everything before it is written first


#: What a job came to: the job, its result, or the error it raised (then the result is None).
_Outcome = tuple[_Job, Any, BaseException | None]


def _set_outcomes(settled: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, error in settled:
        if future.cancelled():  # the caller gave up waiting; the write happened all the same
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


class StoreWriter:
    """Runs a store on its own thread for async callers, merging queued reading writes.

    ``store_factory`` is called on that thread (``lambda: open_store(url)``); with
    ``close_store=False`` the store is left open at :meth:`close` (its owner closes it: the
    concentrator writes through a store its caller opened and reads afterwards). Use it as
    ``async with StoreWriter(factory) as writer:`` or ``await start()`` … ``await close()``.
    An error is raised in the caller whose write it was (StoreError, or the ValueError of a
    reading the store cannot take). A caller cancelled while waiting does not stop its write.
    """

    def __init__(self, store_factory: Callable[[], Store], *, close_store: bool = True) -> None:
        self._factory = store_factory
        self._close_store = close_store
        self._jobs: queue.SimpleQueue[_Job | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopped: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._closing = False
        #: transactions that carried more than one caller's readings
        self.merged_writes = 0

    # -- life cycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Start the thread and open the store on it; the factory's error is raised here."""
        if self._thread is not None or self._closing:
            raise StoreError("the store writer was started already")
        opened: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._serve, args=(opened,), name=_THREAD_NAME, daemon=True)
        self._thread.start()
        try:
            await asyncio.wrap_future(opened)
        except BaseException:
            self._closing = True
            raise

    async def close(self) -> None:
        """Write everything asked so far, then close the store and end the thread."""
        if self._closing:
            if self._thread is not None:
                await asyncio.wrap_future(self._stopped)
            return
        self._closing = True
        if self._thread is None:
            return
        self._jobs.put(_STOP)
        await asyncio.wrap_future(self._stopped)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- what callers await -----------------------------------------------------------

    async def add_readings(self, readings: Sequence[Reading], *, outbox: Sequence[str] = ()) -> int:
        """Store readings (see :meth:`Store.add_readings`); the count of new ones, once committed."""
        result: int = await self._submit(None, (), (tuple(readings), outbox))
        return result

    async def add_event(self, event: Event, *, outbox: Sequence[str] = ()) -> None:
        """Store an event, queued for the uplinks in ``outbox``; returns once committed."""
        await self._submit(_add_event, (event, outbox), None)

    async def add_round(self, report: RoundReport) -> None:
        """Store a round's summary; returns once committed."""
        await self._submit(_add_round, (report,), None)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(store, *args)`` on the writer thread, in turn with the writes, and return
        its result: how async code reads (``latest``, ``outbox_items``) or acks."""
        result: T = await self._submit(fn, args, None)
        return result

    async def _submit(self, fn: Callable[..., Any] | None, args: tuple[Any, ...],
                      batch: tuple[Sequence[Reading], Sequence[str]] | None) -> Any:
        if self._closing:
            raise StoreError("the store writer is closed")
        if self._thread is None:
            raise StoreError("the store writer is not running: await start() or use `async with` first")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._jobs.put(_Job(fn, args, batch, future, loop))
        return await future

    # -- the writer thread ------------------------------------------------------------

    def _serve(self, opened: concurrent.futures.Future[None]) -> None:
        try:
            store = self._factory()
        except BaseException as exc:  # noqa: BLE001 - raised by start() in the event loop
            opened.set_exception(exc)
            self._stopped.set_result(None)
            return
        opened.set_result(None)
        try:
            stopping = False
            while not stopping:
                jobs = [self._jobs.get()]
                while True:  # all that queued up while the last jobs ran: one group
                    try:
                        jobs.append(self._jobs.get_nowait())
                    except queue.Empty:
                        break
                stopping = any(job is _STOP for job in jobs)
                self._run(store, [job for job in jobs if isinstance(job, _Job)])
        finally:
            self._fail_leftovers()
            try:
                if self._close_store:
                    store.close()
            except BaseException as exc:  # noqa: BLE001 - raised by close() in the event loop
                self._stopped.set_exception(exc)
            else:
                self._stopped.set_result(None)

    def _run(self, store: Store, jobs: list[_Job]) -> None:
        for merges, group in itertools.groupby(jobs, key=lambda job: job.batch is not None):
            if merges:
                self._write_readings(store, list(group))
            else:
                for job in group:
                    assert job.fn is not None
                    self._deliver([self._settle(job, job.fn, store, *job.args)])

    def _write_readings(self, store: Store, group: list[_Job]) -> None:
        batches = [job.batch for job in group if job.batch is not None]
        if len(group) > 1:
            try:
                counts = store.add_reading_batches(batches)
            except Exception:  # noqa: BLE001 - not swallowed: each batch is tried alone below
                counts = None  # and the one at fault fails its own caller, no other
            if counts is not None:
                self.merged_writes += 1
                self._deliver([(job, count, None) for job, count in zip(group, counts, strict=True)])
                return
        self._deliver([self._settle(job, _add_readings, store, readings, outbox)
                       for job, (readings, outbox) in zip(group, batches, strict=True)])

    @staticmethod
    def _settle(job: _Job, fn: Callable[..., Any], *args: Any) -> _Outcome:
        try:
            return job, fn(*args), None
        except BaseException as exc:  # noqa: BLE001 - the caller's to handle, whatever it is
            return job, None, exc

    @staticmethod
    def _deliver(outcomes: list[_Outcome]) -> None:
        """Tell each caller its outcome: one wake-up per event loop for all of them (a
        merged write settles many callers at once; a wake-up each would cost a syscall each)."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, BaseException | None]]] = {}
        for job, result, error in outcomes:
            by_loop.setdefault(job.loop, []).append((job.future, result, error))
        for loop, settled in by_loop.items():
            try:
                loop.call_soon_threadsafe(_set_outcomes, settled)
            except RuntimeError:
                pass  # the caller's event loop is closed: nobody is left to tell

    def _fail_leftovers(self) -> None:
        """Tell callers whose jobs were never run (the thread is ending) that they were not."""
        leftovers: list[_Outcome] = []
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if isinstance(job, _Job):
                leftovers.append((job, None, StoreError("the store writer stopped before this write")))
        self._deliver(leftovers)


def _add_readings(store: Store, readings: Sequence[Reading], outbox: Sequence[str]) -> int:
    return store.add_readings(readings, outbox=outbox)


def _add_event(store: Store, event: Event, outbox: Sequence[str]) -> None:
    store.add_event(event, outbox=outbox)


def _add_round(store: Store, report: RoundReport) -> None:
    store.add_round(report)
