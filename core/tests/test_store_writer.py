"""The store writer: writes leave the event loop for one thread, queued reading writes
share a transaction, and every caller hears about its own write alone."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pytest

from meterhub.model import Event, Reading, RoundReport
from meterhub.store import SqliteStore, StoreError, open_store
from meterhub.store.writer import StoreWriter

T0 = datetime(2024, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
#: Seconds a test waits for something that happens at once unless the writer is broken.
PATIENCE_S = 10.0
T = TypeVar("T")


def reading(meter: str = "1", minute: int = 0, value: str = "1.5", **kw: Any) -> Reading:
    return Reading(meter=meter, quantity="1-0:1.8.0", value=Decimal(value), unit="kWh",
                   timestamp=T0 + timedelta(minutes=minute), **kw)


def run(main: Callable[[], Awaitable[T]]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(main(), PATIENCE_S)
    return asyncio.run(bounded())


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'm.db'}"


class Gate:
    """Holds the writer thread inside a call until opened, so writes queue up behind it."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()

    def hold(self, store: SqliteStore) -> None:
        self.entered.set()
        if not self.opened.wait(PATIENCE_S):
            raise TimeoutError("the gate was never opened")

    async def close_on(self, writer: StoreWriter) -> asyncio.Task[None]:
        """Start holding the writer thread; return once it is held."""
        held = asyncio.ensure_future(writer.call(self.hold))
        await asyncio.get_running_loop().run_in_executor(None, self.entered.wait, PATIENCE_S)
        return held


async def queued(*writes: Awaitable[T]) -> list[asyncio.Task[T]]:
    """Start writes as tasks and let each run until it waits on the writer thread."""
    tasks = [asyncio.ensure_future(w) for w in writes]
    await asyncio.sleep(0)
    return tasks


async def commits(writer: StoreWriter) -> int:
    return await writer.call(lambda store: store.commits)


# --- every write lands, durably --------------------------------------------------------------


def test_many_tasks_writing_at_once_are_all_stored_and_each_sees_its_own(url: str) -> None:
    async def main() -> None:
        with open_store(url) as reader:  # a second connection, as `meterhub export` would be
            async with StoreWriter(lambda: open_store(url)) as writer:

                async def one_meter(meter: str) -> None:
                    batch = [reading(meter, minute) for minute in range(3)]
                    assert await writer.add_readings(batch) == 3
                    assert reader.readings(meter=meter) == batch  # committed before the await returned

                await asyncio.gather(*(one_meter(f"{n:012d}") for n in range(40)))
            assert len(reader.readings()) == 40 * 3

    run(main)


def test_events_rounds_and_outbox_go_through_the_writer(url: str) -> None:
    event = Event("meter_dead", source="bus1/dlt645:1", timestamp=T0, data={"rounds": 3})

    async def main() -> None:
        async with StoreWriter(lambda: open_store(url)) as writer:
            await writer.add_readings([reading()], outbox=["hes"])
            await writer.add_event(event, outbox=["hes"])
            await writer.add_round(RoundReport(started=T0, finished=T0 + timedelta(seconds=1), readings=(reading(),)))
            items = await writer.call(lambda store: store.outbox_items("hes"))
            assert [item.item for item in items] == [reading(), event]
            assert await writer.call(lambda store, ids: store.ack("hes", ids), [item.id for item in items]) == 2
        with open_store(url) as s:
            assert (len(s.rounds()), s.events(), s.outbox_size("hes")) == (1, [event], 0)

    run(main)


def test_the_store_lives_on_one_thread_that_is_not_the_event_loops(url: str) -> None:
    made_on: list[int] = []

    def factory() -> SqliteStore:
        made_on.append(threading.get_ident())
        return open_store(url)

    async def main() -> None:
        async with StoreWriter(factory) as writer:
            used_on = {await writer.call(lambda store: threading.get_ident()) for _ in range(3)}
            await writer.add_readings([reading()])  # sqlite3 refuses a connection used off its thread
        assert used_on == set(made_on)
        assert made_on != [threading.get_ident()]

    run(main)


def test_the_event_loop_runs_on_while_the_writer_is_busy(url: str) -> None:
    async def main() -> None:
        gate = Gate()
        async with StoreWriter(lambda: open_store(url)) as writer:
            held = await gate.close_on(writer)
            (write,) = await queued(writer.add_readings([reading()]))
            await asyncio.sleep(0.01)  # the loop is free: this returns though the write waits
            assert not write.done()
            gate.opened.set()
            await asyncio.gather(held, write)

    run(main)


# --- group commit ----------------------------------------------------------------------------


def test_reading_writes_queued_behind_a_busy_writer_share_one_transaction(url: str) -> None:
    async def main() -> None:
        gate = Gate()
        async with StoreWriter(lambda: open_store(url)) as writer:
            before = await commits(writer)
            held = await gate.close_on(writer)
            writes = await queued(*(writer.add_readings([reading(f"{n}")], outbox=["hes"]) for n in range(20)))
            gate.opened.set()
            await held
            assert await asyncio.gather(*writes) == [1] * 20
            assert await commits(writer) == before + 1
            assert writer.merged_writes == 1
            assert await writer.call(lambda store: store.outbox_size("hes")) == 20

    run(main)


def test_each_merged_caller_gets_its_own_count(url: str) -> None:
    async def main() -> None:
        gate = Gate()
        async with StoreWriter(lambda: open_store(url)) as writer:
            await writer.add_readings([reading("a")])
            held = await gate.close_on(writer)
            writes = await queued(
                writer.add_readings([reading("a"), reading("b")]),  # a is stored already
                writer.add_readings([reading("b"), reading("c")]),  # b, just now, by the call before
                writer.add_readings([reading("d", 0), reading("d", 1), reading("d", 2)]),
            )
            gate.opened.set()
            await held
            assert await asyncio.gather(*writes) == [1, 1, 3]

    run(main)


def test_the_callers_of_a_merged_write_are_told_with_one_wake_up_of_their_loop(url: str) -> None:
    async def main() -> None:
        gate = Gate()
        loop = asyncio.get_running_loop()
        wake_ups: list[int] = []
        call_soon_threadsafe = loop.call_soon_threadsafe

        def counted(*args: Any, **kw: Any) -> Any:
            if threading.current_thread().name == "meterhub-store-writer":
                wake_ups.append(1)
            return call_soon_threadsafe(*args, **kw)

        async with StoreWriter(lambda: open_store(url)) as writer:
            held = await gate.close_on(writer)
            loop.call_soon_threadsafe = counted  # type: ignore[method-assign]
            writes = await queued(*(writer.add_readings([reading(f"{n}")]) for n in range(8)))
            writes[3].cancel()  # a caller that gives up does not keep the others from hearing
            gate.opened.set()
            await held
            results = await asyncio.gather(*writes, return_exceptions=True)
            assert results[:3] + results[4:] == [1] * 7 and isinstance(results[3], asyncio.CancelledError)
            assert writer.merged_writes == 1
            assert len(wake_ups) == 2  # the held call's answer, then all eight writes at once
            assert await writer.call(lambda store: len(store.readings())) == 8  # the cancelled one too

    run(main)


def test_a_call_between_reading_writes_keeps_its_place(url: str) -> None:
    async def main() -> None:
        gate = Gate()
        async with StoreWriter(lambda: open_store(url)) as writer:
            held = await gate.close_on(writer)
            first, seen, last = await queued(
                writer.add_readings([reading("a")]),
                writer.call(lambda store: [r.meter for r in store.readings()]),
                writer.add_readings([reading("b")]),
            )
            gate.opened.set()
            await held
            assert await seen == ["a"]
            assert await asyncio.gather(first, last) == [1, 1]

    run(main)


# --- errors reach their own caller -----------------------------------------------------------


def test_a_bad_batch_in_a_merged_write_fails_only_its_caller(url: str) -> None:
    async def main() -> None:
        gate = Gate()
        async with StoreWriter(lambda: open_store(url)) as writer:
            held = await gate.close_on(writer)
            naive = Reading(meter="bad", quantity="1-0:1.8.0", value=Decimal(1), unit="kWh",
                            timestamp=datetime(2024, 3, 1))
            writes = await queued(
                writer.add_readings([reading("a")]), writer.add_readings([naive]), writer.add_readings([reading("b")]),
            )
            gate.opened.set()
            await held
            good_a, bad, good_b = await asyncio.gather(*writes, return_exceptions=True)
            assert (good_a, good_b) == (1, 1)
            assert isinstance(bad, ValueError) and "timezone" in str(bad)
            assert await writer.call(lambda store: [r.meter for r in store.readings()]) == ["a", "b"]

    run(main)


def test_a_store_error_is_raised_in_the_caller_whose_write_failed(url: str) -> None:
    async def main() -> None:
        async with StoreWriter(lambda: open_store(url)) as writer:
            await writer.call(lambda store: store._conn.execute(
                "CREATE TRIGGER full BEFORE INSERT ON readings WHEN NEW.meter = 'bad'"
                " BEGIN SELECT RAISE(ABORT, 'disk full'); END"))
            with pytest.raises(StoreError, match="disk full"):
                await writer.add_readings([reading("bad")])
            assert await writer.add_readings([reading("good")]) == 1  # the writer carries on

    run(main)


def test_an_error_in_a_call_is_raised_in_its_caller(url: str) -> None:
    def broken(store: SqliteStore) -> None:
        raise KeyError("no such thing")

    async def main() -> None:
        async with StoreWriter(lambda: open_store(url)) as writer:
            with pytest.raises(KeyError, match="no such thing"):
                await writer.call(broken)

    run(main)


def test_a_store_that_cannot_open_fails_start(tmp_path: Path) -> None:
    async def main() -> None:
        writer = StoreWriter(lambda: open_store(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}"))
        with pytest.raises(StoreError, match="cannot open"):
            await writer.start()

    run(main)


# --- life cycle ------------------------------------------------------------------------------


def test_close_writes_everything_asked_before_it(url: str) -> None:
    async def main() -> None:
        gate = Gate()
        writer = StoreWriter(lambda: open_store(url))
        await writer.start()
        held = await gate.close_on(writer)
        writes = await queued(*(writer.add_readings([reading(f"{n}")]) for n in range(10)))
        closing = asyncio.ensure_future(writer.close())
        await asyncio.sleep(0)
        gate.opened.set()
        await closing
        assert all(w.done() for w in writes) and held.done()
        assert [w.result() for w in writes] == [1] * 10
        with open_store(url) as s:
            assert len(s.readings()) == 10

    run(main)


def test_a_write_after_close_is_refused(url: str) -> None:
    async def main() -> None:
        writer = StoreWriter(lambda: open_store(url))
        async with writer:
            pass
        with pytest.raises(StoreError, match="closed"):
            await writer.add_readings([reading()])
        await writer.close()  # closing twice is harmless

    run(main)


def test_a_write_before_start_is_refused(url: str) -> None:
    async def main() -> None:
        with pytest.raises(StoreError, match="not running"):
            await StoreWriter(lambda: open_store(url)).add_readings([reading()])

    run(main)


def test_close_closes_the_store(tmp_path: Path) -> None:
    class Recording(SqliteStore):
        closed_on: int | None = None

        def close(self) -> None:
            self.closed_on = threading.get_ident()
            super().close()

    stores: list[Recording] = []

    def factory() -> Recording:
        stores.append(Recording(str(tmp_path / "m.db")))
        return stores[-1]

    async def main() -> None:
        async with StoreWriter(factory) as writer:
            thread = await writer.call(lambda store: threading.get_ident())
        assert stores[0].closed_on == thread  # closed by the thread that made it

    run(main)
