"""The uplink runtime and the terminal facade an uplink is given, in-process: a real SQLite
store file, a Concentrator over an in-test transport, and a recording uplink registered
through a real ``Plugins`` object, as a vendor's uplink plugin is."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import pytest

from meterhub.api import Exchange, LateAnswer, Terminal
from meterhub.default_plugins.jsonl import _append, item_line
from meterhub.errors import CommandRefused, FrameError, MeterTimeout, NotSupported
from meterhub.hookspecs import hookimpl
from meterhub.model import (
    ChannelConfig,
    Command,
    CommandState,
    Event,
    Measurement,
    Meter,
    Origin,
    Quality,
    Reading,
    Schedule,
    SerialSettings,
    Site,
    UplinkConfig,
)
from meterhub.plugins import Plugins
from meterhub.runtime import Concentrator
from meterhub.store import open_store
from meterhub.store.sqlite import SqliteStore
from meterhub.uplinks import HEALTHY_RUN_S, RESTART_MAX_S, UplinkRunner

E_IMPORT = "1-0:1.8.0"
E_EXPORT = "1-0:2.8.0"  #: the toy meters give it as a frozen value of billing period 1
VOLTAGE = "1-0:32.7.0"
SETTINGS = SerialSettings(9600, 8, "N", 1)
#: The day the toy meters froze their first billing value.
FROZEN_T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
#: How long a test waits for something that happens within a few event-loop turns
#: (a guard against a hang, not a speed requirement).
WAIT_S = 10.0


# --- a toy protocol over an in-memory medium: "R<addr>|<obis>\n" -> "A<addr>|<value>\n" ------


class LineDecoder:
    """A StreamDecoder of the toy protocol: one ``<kind><addr>|<payload>`` frame per line."""

    def __init__(self) -> None:
        self.skipped = 0
        self._buffer = b""

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Any]:
        self._buffer += data
        frames: list[Any] = []
        while b"\n" in self._buffer:
            line, _, self._buffer = self._buffer.partition(b"\n")
            head, sep, payload = line.decode().partition("|")
            frames.append((head[:1], head[1:], payload) if sep and head else FrameError(f"not a frame: {line!r}"))
        return frames


class Field:
    """The toy meters at the far end of every channel: they answer reads with a value that
    grows by one per request, and log every request they get (reads and commands)."""

    def __init__(self) -> None:
        self.silent: set[str] = set()
        self.requests: list[tuple[str, str]] = []  #: (address, what: an OBIS code or "cmd:<name>")

    def answer(self, request: bytes) -> bytes | None:
        head, _, what = request.rstrip(b"\n").decode().partition("|")
        kind, address = head[:1], head[1:]
        self.requests.append((address, what if kind == "R" else f"cmd:{what}"))
        if address in self.silent:
            return None
        if kind == "C":
            return f"K{address}|ok\n".encode()
        return f"A{address}|{100 + len(self.requests)}.5\n".encode()

    def asked(self, address: str) -> list[str]:
        return [what for a, what in self.requests if a == address]


class MemoryConduit:
    """A :class:`meterhub.api.Conduit` whose far end is the Field."""

    def __init__(self, name: str, field: Field) -> None:
        self.name = name
        self.settings = SETTINGS
        self.field = field

    async def transact(self, request: bytes, decoder: Any, *, timeout: float,
                       accept: Callable[[Any], bool] = lambda frame: True, settings: SerialSettings | None = None,
                       guard: bool = True) -> Exchange:
        await asyncio.sleep(0)  # a medium takes time: other tasks (the uplinks) run meanwhile
        reply = self.field.answer(request)
        for frame in decoder.feed(reply or b""):
            if not isinstance(frame, Exception) and accept(frame):
                return Exchange(frame, latency=0.001)
        raise MeterTimeout(f"no answer on {self.name} within {timeout} s")

    async def send(self, request: bytes, *, settings: SerialSettings | None = None) -> None:
        self.field.answer(request)

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[None]:
        yield

    async def settle(self) -> list[LateAnswer]:
        return []


class MemoryChannel:
    """A :class:`meterhub.api.Channel` with nothing between the runtime and the Field."""

    in_flight = 1

    def __init__(self, name: str, field: Field) -> None:
        self.name = name
        self.settings = SETTINGS
        self.field = field

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    def lane(self, meter: Meter) -> str:
        return self.name

    def towards(self, meter: Meter | None) -> MemoryConduit:
        return MemoryConduit(self.name, self.field)

    def answer_time(self, meter: Meter, base: float) -> float:
        return base

    def listen(self, sink: Any) -> None: ...


class MemoryTransport:
    name = "mem"
    description = "in-test channels to the Field"

    def __init__(self, field: Field) -> None:
        self.field = field

    def validate(self, channel: ChannelConfig) -> list[tuple[str, str]]:
        return []

    def create_channel(self, channel: ChannelConfig) -> MemoryChannel:
        return MemoryChannel(channel.name, self.field)


class ToyDriver:
    """A MeterDriver of the toy protocol: addresses are two digits; energy export comes
    back as a frozen value (billing period 1, frozen one day later per read)."""

    name = "toy"
    description = "in-test line protocol"
    default_settings = SETTINGS

    def __init__(self) -> None:
        self.executed: list[Command] = []
        self.frozen_reads = 0

    def normalize_address(self, address: str) -> str:
        if len(address) != 2 or not address.isdigit():
            raise ValueError(f"a toy meter address is two digits, got {address!r}")
        return address

    def supported_quantities(self) -> set[str]:
        return {E_IMPORT, E_EXPORT, VOLTAGE}

    def transaction_timeout(self, settings: SerialSettings) -> float:
        return 0.05

    async def read(self, bus: Any, meter: Meter, quantity: Any, timeout: float) -> Measurement:
        exchange = await bus.transact(f"R{meter.address}|{quantity.obis}\n".encode(), LineDecoder(), timeout=timeout,
                                      accept=lambda f: f[:2] == ("A", meter.address))
        value = Decimal(exchange.frame[2])
        if quantity.obis == E_EXPORT:
            self.frozen_reads += 1
            return Measurement(value, "kWh", data_time=FROZEN_T0 + timedelta(days=self.frozen_reads), period=1)
        return Measurement(value, quantity.unit)

    async def scan(self, bus: Any, timeout: float) -> list[str]:
        raise NotSupported("no scan")

    async def execute(self, bus: Any, meter: Meter, command: Command, timeout: float) -> dict[str, Any]:
        self.executed.append(command)
        await bus.transact(f"C{meter.address}|{command.name}\n".encode(), LineDecoder(), timeout=timeout,
                           accept=lambda f: f[:2] == ("K", meter.address))
        return {"done": command.name}


# --- the recording uplink ---------------------------------------------------------------------

#: What one run of a probe uplink does: "serve" (until cancelled), "raise", "return", or a
#: coroutine function taking the uplink.
Behaviour = str | Callable[["ProbeUplink"], Awaitable[None]]


class ProbeUplink:
    """A running probe uplink (:class:`meterhub.api.Uplink`)."""

    def __init__(self, driver: ProbeDriver, config: UplinkConfig, terminal: Terminal) -> None:
        self.driver = driver
        self.config = config
        self.terminal = terminal

    async def run(self) -> None:
        behaviour = self.driver.script.pop(0) if self.driver.script else "serve"
        self.driver.runs.append(self.config.name)
        if behaviour == "raise":
            raise ConnectionError("master station unreachable")
        if behaviour == "return":
            return
        if behaviour == "serve":
            await asyncio.get_running_loop().create_future()  # until cancelled
            return
        assert callable(behaviour)
        await behaviour(self)


class ProbeDriver:
    """The ``probe`` uplink protocol (:class:`meterhub.api.UplinkDriver`): records every
    configuration and terminal it is given; each run follows :attr:`script`."""

    name = "probe"
    description = "in-test uplink that records what it is given"

    def __init__(self) -> None:
        self.script: list[Behaviour] = []
        self.created: list[tuple[UplinkConfig, Terminal]] = []
        self.runs: list[str] = []

    def validate(self, config: UplinkConfig) -> list[tuple[str, str]]:
        return []

    def create(self, config: UplinkConfig, terminal: Terminal) -> ProbeUplink:
        self.created.append((config, terminal))
        return ProbeUplink(self, config, terminal)

    def terminal(self, name: str) -> Terminal:
        return next(t for c, t in self.created if c.name == name)


class HubPlugin:
    """The test's plugin: the toy meter driver, the in-memory transport, the probe uplink
    and a command policy that refuses while :attr:`refusal` is set."""

    def __init__(self) -> None:
        self.field = Field()
        self.driver = ToyDriver()
        self.uplink = ProbeDriver()
        self.refusal: str | None = None
        self.asked: list[Command] = []
        self.events: list[Any] = []  #: every event observers were told of

    @hookimpl
    def meterhub_register_meter_drivers(self, register: Any) -> None:
        register(self.driver)

    @hookimpl
    def meterhub_register_transports(self, register: Any) -> None:
        register(MemoryTransport(self.field))

    @hookimpl
    def meterhub_register_uplinks(self, register: Any) -> None:
        register(self.uplink)

    @hookimpl
    def meterhub_before_command(self, command: Any) -> str | None:
        self.asked.append(command)
        return self.refusal

    @hookimpl
    def meterhub_event(self, event: Any) -> None:
        self.events.append(event)


class Sleeps:
    """The runner's injected ``sleep``: records each back-off; the first ``free`` pass at
    once, the later ones wait until the test :meth:`release`\\ s them."""

    def __init__(self, free: int) -> None:
        self.delays: list[float] = []
        self.free = free
        self._gate: asyncio.Semaphore | None = None

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        if len(self.delays) <= self.free:
            await asyncio.sleep(0)
            return
        await self._semaphore().acquire()

    def _semaphore(self) -> asyncio.Semaphore:
        if self._gate is None:
            self._gate = asyncio.Semaphore(0)
        return self._gate

    def release(self) -> None:
        self._semaphore().release()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- the rig ------------------------------------------------------------------------------------


def toy(address: str, *quantities: str, point: int | None = None) -> Meter:
    return Meter(address=address, protocol="toy", channel="bus1", quantities=quantities or (E_IMPORT,), point=point)


class Rig:
    """A site of toy meters with uplinks, its plugin, a SQLite store file and a concentrator."""

    def __init__(self, tmp_path: Path, meters: list[Meter], uplinks: list[UplinkConfig]) -> None:
        self.plugin = HubPlugin()
        self.plugins = Plugins(load_entry_points=False, extra=[("testplugin", self.plugin)])
        self.store: SqliteStore = open_store(f"sqlite:///{tmp_path / 'hub.db'}")  # type: ignore[assignment]
        self.site = Site(
            channels={"bus1": ChannelConfig("bus1", "mem", "mem://bus1", SETTINGS)},
            meters=tuple(meters),
            schedule=Schedule(interval=60, retries=0, backoff_initial=60, backoff_max=60),
            uplinks=tuple(uplinks),
            store=f"sqlite:///{tmp_path / 'hub.db'}",
        )
        self.concentrator = Concentrator(self.site, plugins=self.plugins, store=self.store)

    @property
    def field(self) -> Field:
        return self.plugin.field

    @property
    def probe(self) -> ProbeDriver:
        return self.plugin.uplink

    @contextlib.asynccontextmanager
    async def running(self, *, sleep: Callable[[float], Any] | None = None,
                      clock: Callable[[], float] = time.monotonic) -> AsyncIterator[UplinkRunner]:
        """The concentrator open and its uplinks started through the plugin registry."""
        async with self.concentrator as conc:
            runner = UplinkRunner(conc, self.plugins.uplinks(), clock=clock, sleep=sleep or asyncio.sleep)
            async with runner:
                yield runner


@pytest.fixture
def make_rig(tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    made: list[Rig] = []

    def make(meters: list[Meter] | None = None, uplinks: list[UplinkConfig] | None = None) -> Rig:
        rig = Rig(tmp_path, meters if meters is not None else [toy("01", E_IMPORT, VOLTAGE, point=1)],
                  uplinks if uplinks is not None else [UplinkConfig("probe", "probe")])
        made.append(rig)
        return rig

    yield make
    for rig in made:
        rig.store.close()


async def until(condition: Callable[[], bool], what: str) -> None:
    """Let the event loop run until ``condition()`` holds (fail after WAIT_S: a hang)."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)


async def started(rig: Rig, name: str = "probe") -> Terminal:
    """The terminal the probe uplink ``name`` was given, once it was made."""
    await until(lambda: any(c.name == name for c, _ in rig.probe.created), f"uplink {name} to start")
    return rig.probe.terminal(name)


def failures(rig: Rig) -> list[dict[str, Any]]:
    return [dict(e.data, source=e.source, severity=e.severity) for e in rig.store.events(kind="uplink_failed")]


# --- restarts with back-off -------------------------------------------------------------------


def test_an_uplink_that_raises_is_restarted_with_a_doubling_capped_back_off(make_rig) -> None:
    rig = make_rig()
    rig.probe.script = ["raise"] * 13
    sleeps = Sleeps(free=12)

    async def go() -> None:
        async with rig.running(sleep=sleeps):
            await until(lambda: len(sleeps.delays) == 13, "13 failures")

    asyncio.run(go())
    assert sleeps.delays == [1, 2, 4, 8, 16, 32, 64, 128, 256, RESTART_MAX_S, RESTART_MAX_S, RESTART_MAX_S,
                             RESTART_MAX_S]
    assert len(rig.probe.created) == 13  # made afresh for every run
    stored = failures(rig)
    assert [e["failures"] for e in stored] == list(range(1, 14))
    assert [e["retry_in"] for e in stored] == sleeps.delays
    assert {(e["uplink"], e["protocol"], e["source"], e["severity"], e["reason"]) for e in stored} == {
        ("probe", "probe", "uplink/probe", "warning", "ConnectionError: master station unreachable")}


def test_rounds_go_on_while_an_uplink_keeps_failing_and_its_items_wait_in_the_outbox(make_rig) -> None:
    rig = make_rig()
    rig.probe.script = ["raise"] * 3
    sleeps = Sleeps(free=0)  # every back-off holds until the test has run a round

    async def go() -> list[Any]:
        reports = []
        async with rig.running(sleep=sleeps) as runner:
            for failed in range(1, 4):
                await until(lambda n=failed: len(sleeps.delays) == n, f"failure {failed}")
                reports.append(await rig.concentrator.run_round())  # while the uplink waits to be run again
                sleeps.release()
            await until(lambda: len(rig.probe.runs) == 4, "the fourth run")
            assert runner.failures == {"probe": 3}
        return reports

    reports = asyncio.run(go())
    assert sleeps.delays == [1, 2, 4]
    assert [[r.quality for r in report.readings] for report in reports] == [[Quality.OK, Quality.OK]] * 3
    assert len(rig.store.rounds()) == 3
    assert [e["failures"] for e in failures(rig)] == [1, 2, 3]
    # nothing was lost meanwhile: every reading of the three rounds waits for the uplink
    waiting = [i.item for i in rig.store.outbox_items("probe") if isinstance(i.item, Reading)]
    assert waiting == [r for report in reports for r in report.readings]


def test_a_run_that_returns_is_a_failure_and_is_run_again(make_rig) -> None:
    rig = make_rig()
    rig.probe.script = ["return", "return"]  # then it serves
    sleeps = Sleeps(free=2)

    async def go() -> None:
        async with rig.running(sleep=sleeps):
            await until(lambda: len(rig.probe.runs) == 3, "the third run")

    asyncio.run(go())
    assert sleeps.delays == [1, 2]
    assert [(e["reason"], e["failures"]) for e in failures(rig)] == [
        ("stopped on its own (run returned)", 1), ("stopped on its own (run returned)", 2)]
    assert [c.name for c, _ in rig.probe.created] == ["probe"] * 3


def test_an_uplink_cancelled_from_within_is_a_failure_and_is_run_again(make_rig) -> None:
    rig = make_rig()

    async def request_cancelled(uplink: ProbeUplink) -> None:
        # what a connection library does to a request pending when its connection closes
        pending = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(pending.cancel)
        await pending

    rig.probe.script = [request_cancelled]
    sleeps = Sleeps(free=1)

    async def go() -> None:
        async with rig.running(sleep=sleeps):
            await until(lambda: len(rig.probe.runs) == 2, "the second run")

    asyncio.run(go())
    assert sleeps.delays == [1]
    assert [(e["failures"], "cancel" in e["reason"].lower()) for e in failures(rig)] == [(1, True)]


@pytest.mark.parametrize("on_cancel", ["raise", "return"])
def test_stopping_ends_an_uplink_that_fails_or_returns_as_it_is_cancelled(make_rig, on_cancel) -> None:
    rig = make_rig()

    async def closes_badly(uplink: ProbeUplink) -> None:
        try:
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            if on_cancel == "raise":
                raise ConnectionError("connection reset while saying goodbye") from None
            return

    rig.probe.script = [closes_badly]

    async def go() -> None:
        async with rig.concentrator as conc:
            runner = UplinkRunner(conc, rig.plugins.uplinks(), sleep=Sleeps(free=100))
            await runner.start()
            await until(lambda: rig.probe.runs == ["probe"], "the uplink to run")
            await asyncio.wait_for(runner.stop(), WAIT_S)  # stopped, not run again

    asyncio.run(go())
    assert rig.probe.runs == ["probe"]
    assert failures(rig) == []


def test_an_uplink_that_ran_long_before_failing_starts_its_back_off_afresh(make_rig) -> None:
    rig = make_rig()
    clock = FakeClock()

    async def healthy_then_fail(uplink: ProbeUplink) -> None:
        clock.now += HEALTHY_RUN_S  # it worked for a long while
        raise ConnectionError("link lost")

    rig.probe.script = ["raise", "raise", healthy_then_fail, "raise"]
    sleeps = Sleeps(free=4)

    async def go() -> None:
        async with rig.running(sleep=sleeps, clock=clock):
            await until(lambda: len(sleeps.delays) == 4, "four failures")

    asyncio.run(go())
    assert sleeps.delays == [1, 2, 1, 2]
    assert [e["failures"] for e in failures(rig)] == [1, 2, 1, 2]


def test_an_uplink_without_an_installed_driver_is_an_uplink_failed_event(make_rig) -> None:
    rig = make_rig(uplinks=[UplinkConfig("hq", "nosuch")])
    sleeps = Sleeps(free=1)

    async def go() -> None:
        async with rig.running(sleep=sleeps):
            await until(lambda: len(sleeps.delays) == 2, "two failures")
            report = await rig.concentrator.run_round()
            assert [r.quality for r in report.readings] == [Quality.OK, Quality.OK]

    asyncio.run(go())
    assert failures(rig)[0]["reason"] == "no uplink driver 'nosuch' is installed"


# --- the terminal facade --------------------------------------------------------------------------


def test_the_uplink_gets_a_terminal_named_after_it_with_the_sites_identity(make_rig) -> None:
    rig = make_rig()
    rig.site = rig.concentrator.site = attrs.evolve(rig.site, terminal="T-0042")

    async def go() -> Terminal:
        async with rig.running():
            return await started(rig)

    terminal = asyncio.run(go())
    assert isinstance(terminal, Terminal)
    assert (terminal.name, terminal.terminal) == ("probe", "T-0042")


def test_points_are_the_meters_that_have_a_measuring_point(make_rig) -> None:
    one, two, loose = toy("01", point=1), toy("02", point=7), toy("03")
    rig = make_rig([one, two, loose])

    async def go() -> Any:
        async with rig.running():
            return (await started(rig)).points()

    assert asyncio.run(go()) == {1: one, 7: two}


def test_latest_is_the_newest_ok_reading_of_each_quantity(make_rig) -> None:
    rig = make_rig([toy("01", E_IMPORT, VOLTAGE, point=1), toy("02", E_IMPORT, point=2), toy("03")])

    async def go() -> tuple[list[Any], list[Reading], list[Reading]]:
        async with rig.running():
            terminal = await started(rig)
            reports = [await rig.concentrator.run_round() for _ in range(2)]
            rig.field.silent.add("01")
            reports.append(await rig.concentrator.run_round())  # 01 fails: its values stay the last good ones
            return reports, await terminal.latest(1), await terminal.latest()

    reports, of_one, of_all = asyncio.run(go())
    assert [r.quality for r in reports[2].readings if r.meter == "01"] == [Quality.TIMEOUT, Quality.BACKED_OFF]
    second = {(r.meter, r.quantity): r for r in reports[1].readings}
    third = {(r.meter, r.quantity): r for r in reports[2].readings}
    assert of_one == [second["01", E_IMPORT], second["01", VOLTAGE]]
    assert sorted(of_all, key=lambda r: r.meter) == [second["01", E_IMPORT], second["01", VOLTAGE],
                                                     third["02", E_IMPORT]]  # 03 has no point


def test_frozen_values_are_the_readings_with_a_billing_period_newest_first(make_rig) -> None:
    rig = make_rig([toy("01", E_IMPORT, point=1), toy("02", E_IMPORT, E_EXPORT, point=2)])

    async def go() -> tuple[list[Any], list[Reading], list[Reading], list[Reading]]:
        async with rig.running():
            terminal = await started(rig)
            reports = [await rig.concentrator.run_round() for _ in range(2)]
            return reports, await terminal.frozen(2), await terminal.frozen(2, period=2), await terminal.frozen(1)

    reports, frozen, other_period, none = asyncio.run(go())
    exported = [r for report in reports for r in report.readings if r.quantity == E_EXPORT]
    assert [r.period for r in exported] == [1, 1]
    assert frozen == exported[::-1]
    assert frozen[0].data_time == FROZEN_T0 + timedelta(days=2)
    assert other_period == [] and none == []


def test_read_now_reads_stores_and_queues_a_points_meter(make_rig) -> None:
    rig = make_rig([toy("01", E_IMPORT, VOLTAGE, point=1), toy("02", point=2)])

    async def go() -> list[Reading]:
        async with rig.running():
            return await (await started(rig)).read_now(1)

    readings = asyncio.run(go())
    assert [(r.meter, r.quantity, r.quality) for r in readings] == [("01", E_IMPORT, Quality.OK),
                                                                    ("01", VOLTAGE, Quality.OK)]
    assert [what for _, what in rig.field.requests] == [E_IMPORT, VOLTAGE]  # meter 02 was not read
    assert rig.store.readings() == readings
    assert [i.item for i in rig.store.outbox_items("probe")] == readings


def test_an_unknown_point_is_a_key_error(make_rig) -> None:
    rig = make_rig()

    async def go() -> None:
        async with rig.running():
            terminal = await started(rig)
            with pytest.raises(KeyError, match="no meter at measuring point 9"):
                await terminal.read_now(9)
            with pytest.raises(KeyError, match="no meter at measuring point 9"):
                await terminal.latest(9)

    asyncio.run(go())


def test_set_meter_adds_changes_and_removes_a_meter_read_from_the_next_round(make_rig) -> None:
    rig = make_rig([toy("01", point=1)])

    async def go() -> list[list[str]]:
        met = []
        async with rig.running():
            terminal = await started(rig)
            await terminal.set_meter(3, toy("03"))
            assert terminal.points()[3] == toy("03", point=3)
            met.append([r.meter for r in (await rig.concentrator.run_round()).readings])
            await terminal.set_meter(3, toy("04", E_IMPORT, VOLTAGE))
            met.append([r.meter for r in (await rig.concentrator.run_round()).readings])
            await terminal.set_meter(3, None)
            assert sorted(terminal.points()) == [1]
            met.append([r.meter for r in (await rig.concentrator.run_round()).readings])
        return met

    assert asyncio.run(go()) == [["01", "03"], ["01", "04", "04"], ["01"]]
    assert rig.field.asked("03") == [E_IMPORT]
    assert rig.field.asked("04") == [E_IMPORT, VOLTAGE]
    changes = [(e.data["point"], e.data["old"], e.data["new"]) for e in rig.store.events(kind="meter_archive_changed")]
    assert changes == [(3, None, "bus1/toy:03"), (3, "bus1/toy:03", "bus1/toy:04"), (3, "bus1/toy:04", None)]


@pytest.mark.parametrize(("point", "meter", "why"), [
    (2, Meter("05", "toy", "bus9"), "channel 'bus9' is not configured"),
    (2, Meter("05", "nosuch", "bus1"), "no meter driver for protocol 'nosuch'"),
    (2, Meter("5x", "toy", "bus1"), "a toy meter address is two digits, got '5x'"),
    (2, Meter("01", "toy", "bus1"), "meter bus1/toy:01 is already at measuring point 1"),
    (0, Meter("05", "toy", "bus1"), "measuring point must be 1..2040"),
    (2, None, "measuring point 2 has no meter"),
])
def test_set_meter_refuses_a_meter_it_cannot_take_and_says_why(make_rig, point, meter, why) -> None:
    rig = make_rig([toy("01", point=1)])

    async def go() -> Any:
        async with rig.running():
            terminal = await started(rig)
            with pytest.raises(ValueError, match=why):
                await terminal.set_meter(point, meter)
            return terminal.points(), await rig.concentrator.run_round()

    points, report = asyncio.run(go())
    assert points == {1: toy("01", point=1)}
    assert [r.meter for r in report.readings] == ["01"]
    assert rig.store.events(kind="meter_archive_changed") == []


def test_events_since_a_time_oldest_first(make_rig) -> None:
    rig = make_rig()
    now = datetime.now(timezone.utc)
    old = Event("door_open", source="cabinet", timestamp=now - timedelta(hours=2))
    new = Event("door_closed", source="cabinet", timestamp=now - timedelta(hours=1))

    async def go() -> tuple[list[Event], list[Event], list[Event]]:
        async with rig.running():
            terminal = await started(rig)
            rig.concentrator.raise_event(new)
            rig.concentrator.raise_event(old)
            await rig.concentrator.flush()
            return (await terminal.events(), await terminal.events(since=now - timedelta(minutes=90)),
                    await terminal.events(limit=1))

    everything, since, first = asyncio.run(go())
    assert everything == [old, new]
    assert since == [new]
    assert first == [old]


def test_an_uplinks_event_is_stored_and_queued_for_every_uplink(make_rig) -> None:
    rig = make_rig()
    event = Event("uplink_password_refused", source="gdw1376.1", severity="warning", data={"afn": 5})

    async def go() -> tuple[list[Event], list[Any]]:
        async with rig.running():
            terminal = await started(rig)
            terminal.raise_event(event)
            await rig.concentrator.flush()
            return await terminal.events(), [item.item for item in await terminal.outbox()]

    stored, queued = asyncio.run(go())
    assert stored == [event]
    assert event in queued


def test_execute_refused_by_a_policy_sends_nothing_and_is_journalled_as_the_uplinks(make_rig) -> None:
    rig = make_rig()
    rig.plugin.refusal = "relay control is locked during billing"

    async def go() -> None:
        async with rig.running():
            terminal = await started(rig)
            with pytest.raises(CommandRefused, match="locked during billing"):
                await terminal.execute(1, Command("", "", "relay", {"action": "trip"}))

    asyncio.run(go())
    assert rig.field.requests == [] and rig.plugin.driver.executed == []
    (asked,) = rig.plugin.asked
    assert (asked.origin, asked.issuer, asked.meter, asked.protocol, asked.channel) == (
        Origin.UPLINK, "probe", "01", "toy", "bus1")
    (record,) = rig.store.commands()
    assert record.state is CommandState.REFUSED and "locked during billing" in record.reason
    assert (record.command.origin, record.command.issuer, record.command.name) == (Origin.UPLINK, "probe", "relay")
    assert [e.data["origin"] for e in rig.store.events(kind="command_refused")] == ["uplink"]


def test_execute_allowed_reaches_the_meter_and_keeps_the_masters_issuer(make_rig) -> None:
    rig = make_rig()

    async def go() -> Any:
        async with rig.running():
            terminal = await started(rig)
            return await terminal.execute(1, Command("", "", "time_sync", issuer="master A=0x1234"))

    assert asyncio.run(go()) == {"done": "time_sync"}
    assert rig.field.requests == [("01", "cmd:time_sync")]
    (record,) = rig.store.commands()
    assert (record.state, record.command.origin, record.command.issuer) == (
        CommandState.ANSWERED, Origin.UPLINK, "master A=0x1234")


def test_outbox_gives_items_in_id_order_and_ack_removes_only_the_ids_given(make_rig) -> None:
    rig = make_rig()

    async def go() -> tuple[Any, ...]:
        async with rig.running():
            terminal = await started(rig)
            report = await rig.concentrator.run_round()
            items = await terminal.outbox()
            first = await terminal.outbox(limit=1)
            removed = await terminal.ack([items[0].id, items[2].id])
            again = await terminal.ack([items[0].id])
            left = await terminal.outbox()
            return report, items, first, removed, again, left

    report, items, first, removed, again, left = asyncio.run(go())
    ids = [i.id for i in items]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert [i.item for i in items] == [*report.readings, *rig.store.events()]  # round_finished last
    assert first == items[:1]
    assert (removed, again) == (2, 0)
    assert left == [items[1], *items[3:]]


def test_wait_outbox_times_out_when_nothing_comes_and_wakes_when_a_round_queues(make_rig) -> None:
    rig = make_rig()

    async def go() -> tuple[bool, bool]:
        async with rig.running():
            terminal = await started(rig)
            idle = await terminal.wait_outbox(0.01)
            waiter = asyncio.ensure_future(terminal.wait_outbox(WAIT_S * 10))
            await asyncio.sleep(0)
            assert not waiter.done()
            await rig.concentrator.run_round()
            return idle, await asyncio.wait_for(waiter, WAIT_S)

    idle, woke = asyncio.run(go())
    assert idle is False
    assert woke is True


def test_wait_outbox_without_waiting_says_whether_something_was_queued_since_the_last_call(make_rig) -> None:
    rig = make_rig()

    async def go() -> list[bool]:
        async with rig.running():
            terminal = await started(rig)
            seen = [await terminal.wait_outbox(0)]
            rig.concentrator.raise_event(Event("door_open", source="cabinet"))
            await rig.concentrator.flush()
            seen += [await terminal.wait_outbox(0), await terminal.wait_outbox(0)]
            return seen

    assert asyncio.run(go()) == [False, True, False]


# --- the outbox: once per configured uplink ----------------------------------------------------------


def test_every_reading_and_event_reaches_each_uplink_once_and_their_queues_are_independent(make_rig) -> None:
    rig = make_rig([toy("01", E_IMPORT, VOLTAGE, point=1), toy("02", point=2)],
                   uplinks=[UplinkConfig("a", "probe"), UplinkConfig("b", "probe")])
    rig.field.silent.add("02")  # a failed reading and a meter_dead event are sent too

    async def go() -> tuple[Any, ...]:
        async with rig.running():
            a, b = await started(rig, "a"), await started(rig, "b")
            reports = [await rig.concentrator.run_round() for _ in range(2)]
            of_a, of_b = await a.outbox(10_000), await b.outbox(10_000)
            acked = await a.ack([i.id for i in of_a])
            wrong = await b.ack([i.id for i in of_a])  # a's ids are not b's items
            return reports, of_a, of_b, acked, wrong, await a.outbox(), await b.outbox(10_000)

    reports, of_a, of_b, acked, wrong, a_left, b_left = asyncio.run(go())
    readings = [r for report in reports for r in report.readings]
    events = rig.store.events()
    assert {e.kind for e in events} >= {"meter_dead", "round_finished"}
    assert any(r.quality is not Quality.OK for r in readings)
    for items in (of_a, of_b):
        assert [i.item for i in items if isinstance(i.item, Reading)] == readings
        assert [i.item for i in items if isinstance(i.item, Event)] == events
    assert {i.uplink for i in of_a} == {"a"} and {i.uplink for i in of_b} == {"b"}
    assert not {i.id for i in of_a} & {i.id for i in of_b}
    assert (acked, wrong) == (len(of_a), 0)
    assert a_left == [] and b_left == of_b


# --- the jsonl uplink --------------------------------------------------------------------------------


def _feed(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line, parse_float=Decimal) for line in path.read_text(encoding="utf-8").splitlines()]


def _jsonl_rig(make_rig: Callable[..., Rig], path: Path) -> Rig:
    return make_rig([toy("01", E_IMPORT, VOLTAGE, point=1), toy("02", point=2)],
                    uplinks=[UplinkConfig("feed", "jsonl", {"path": str(path)})])


def _queue_a_round(rig: Rig) -> None:
    """A round read with no uplink running: its items wait in the outbox."""
    async def go() -> None:
        async with rig.concentrator:
            await rig.concentrator.run_round()

    asyncio.run(go())


def _deliver(rig: Rig) -> bool:
    """A fresh jsonl uplink (the built-in plugin's) run until the outbox is empty."""
    async def go() -> bool:
        async with rig.running() as runner:
            return await runner.drain(WAIT_S)

    return asyncio.run(go())


def test_jsonl_writes_each_item_once_with_its_outbox_id_and_acks_it(make_rig, tmp_path) -> None:
    feed = tmp_path / "feed.jsonl"
    rig = _jsonl_rig(make_rig, feed)
    _queue_a_round(rig)
    items = rig.store.outbox_items("feed")
    assert _deliver(rig)
    lines = _feed(feed)
    assert [line["id"] for line in lines] == [i.id for i in items]
    assert [(line["kind"], line.get("meter"), line.get("quantity"), line.get("value")) for line in lines] == [
        ("reading", i.item.meter, i.item.quantity, i.item.value) if isinstance(i.item, Reading)
        else ("event", None, None, None) for i in items]
    events = [(line["event"], line["source"], datetime.fromisoformat(line["timestamp"]), line["data"])
              for line in lines if line["kind"] == "event"]
    assert events == [(e.kind, e.source, e.timestamp, json.loads(json.dumps(dict(e.data)), parse_float=Decimal))
                      for e in rig.store.events()]
    assert [e[0] for e in events] == ["round_finished"]
    assert rig.store.outbox_size("feed") == 0


def test_jsonl_does_not_write_twice_what_it_wrote_before_a_crash_kept_it_from_acking(make_rig, tmp_path) -> None:
    feed = tmp_path / "feed.jsonl"
    rig = _jsonl_rig(make_rig, feed)
    _queue_a_round(rig)
    items = rig.store.outbox_items("feed")
    _append(str(feed), [item_line(i) for i in items[:2]])  # written and fsynced; the crash came before the ack
    assert rig.store.outbox_size("feed") == len(items)  # so they are offered again
    assert _deliver(rig)
    assert [line["id"] for line in _feed(feed)] == [i.id for i in items]
    assert rig.store.outbox_size("feed") == 0


def test_jsonl_rewrites_a_line_a_crash_cut_short_instead_of_gluing_the_next_to_it(make_rig, tmp_path) -> None:
    feed = tmp_path / "feed.jsonl"
    rig = _jsonl_rig(make_rig, feed)
    _queue_a_round(rig)
    items = rig.store.outbox_items("feed")
    cut = item_line(items[2])
    _append(str(feed), [item_line(i) for i in items[:2]] + [cut[: len(cut) // 2]])  # killed in mid-write
    assert _deliver(rig)
    lines = _feed(feed)  # every line is whole JSON
    assert [line["id"] for line in lines] == [i.id for i in items]
    assert feed.read_text(encoding="utf-8").endswith("\n")


def test_jsonl_writes_a_new_stores_items_although_their_ids_are_already_in_the_feed(make_rig, tmp_path, caplog) -> None:
    # The database was replaced, the feed kept: the new store's ids start at 1 again, and
    # its items are other readings; none of them may be taken for one already written.
    feed = tmp_path / "feed.jsonl"
    first = _jsonl_rig(make_rig, feed)
    _queue_a_round(first)
    assert _deliver(first)
    before = _feed(feed)
    first.store.close()
    for leftover in tmp_path.glob("hub.db*"):
        leftover.unlink()
    second = _jsonl_rig(make_rig, feed)
    _queue_a_round(second)
    items = second.store.outbox_items("feed")
    assert {i.id for i in items} <= {line["id"] for line in before}  # the same ids again
    with caplog.at_level(logging.WARNING):
        assert _deliver(second)
    after = _feed(feed)[len(before):]
    assert [line["id"] for line in after] == [i.id for i in items]
    assert "other content" in caplog.text


def test_observers_hear_of_an_outbox_that_overflowed_by_the_end_of_the_round(make_rig, tmp_path) -> None:
    rig = make_rig([toy("01", E_IMPORT, VOLTAGE, point=1), toy("02", point=2)])
    rig.store.close()
    rig.store = open_store(f"sqlite:///{tmp_path / 'hub.db'}?outbox_max=2")  # type: ignore[assignment]
    rig.concentrator = Concentrator(rig.site, plugins=rig.plugins, store=rig.store)

    async def go() -> None:
        async with rig.concentrator as conc:
            await conc.run_round()
            assert [e.kind for e in rig.plugin.events].count("outbox_overflow") >= 1  # told before the round returns

    asyncio.run(go())
    told = [e for e in rig.plugin.events if e.kind == "outbox_overflow"]
    stored = rig.store.events(kind="outbox_overflow")
    assert [(e.source, dict(e.data)) for e in told] == [(e.source, dict(e.data)) for e in stored]
    assert rig.store.outbox_size("probe") == 2


# --- commands on the concentrator itself; what a master set, kept across restarts --------------------


def test_a_terminal_command_goes_through_the_policy_and_the_journal(make_rig) -> None:
    rig = make_rig()
    carried: list[Command] = []

    async def carry(command: Command) -> dict[str, Any]:
        carried.append(command)
        return {"offset_s": 2}

    async def go() -> Any:
        async with rig.running():
            terminal = await started(rig)
            return await terminal.command(Command("x", "y", "set_clock", {"time": "2030-01-01T00:00:00"},
                                                  issuer="master 1"), carry)

    assert asyncio.run(go()) == {"offset_s": 2}
    (command,) = carried
    assert (command.meter, command.protocol, command.channel, command.origin) == ("", "", "", Origin.UPLINK)
    (asked,) = rig.plugin.asked
    assert asked.name == "set_clock" and asked.meter == ""
    (record,) = rig.store.commands()
    assert (record.state, record.command.issuer, dict(record.answer)) == (
        CommandState.ANSWERED, "master 1", {"offset_s": 2})
    assert [e.source for e in rig.store.events(kind="command_executed")] == ["concentrator"]


def test_a_refused_terminal_command_is_not_carried_out(make_rig) -> None:
    rig = make_rig()
    rig.plugin.refusal = "clock changes only by NTP here"
    carried: list[Command] = []

    async def carry(command: Command) -> dict[str, Any]:
        carried.append(command)
        return {}

    async def go() -> None:
        async with rig.running():
            terminal = await started(rig)
            with pytest.raises(CommandRefused, match="only by NTP"):
                await terminal.command(Command("", "", "set_clock", {"time": "2030-01-01T00:00:00"}), carry)

    asyncio.run(go())
    assert carried == []
    (record,) = rig.store.commands()
    assert record.state is CommandState.REFUSED and "only by NTP" in record.reason
    assert [e.source for e in rig.store.events(kind="command_refused")] == ["concentrator"]


def test_a_terminal_command_that_fails_is_journalled_failed(make_rig) -> None:
    rig = make_rig()

    async def carry(command: Command) -> dict[str, Any]:
        raise ValueError("a heartbeat period of 0 minutes")

    async def go() -> None:
        async with rig.running():
            terminal = await started(rig)
            with pytest.raises(ValueError, match="0 minutes"):
                await terminal.command(Command("", "", "set_heartbeat", {"heartbeat_s": 0}), carry)

    asyncio.run(go())
    (record,) = rig.store.commands()
    assert record.state is CommandState.FAILED and "0 minutes" in record.reason


def test_an_uplinks_settings_are_its_own_and_outlive_the_concentrator(make_rig) -> None:
    rig = make_rig(uplinks=[UplinkConfig("probe", "probe"), UplinkConfig("other", "probe")])

    async def go() -> tuple[dict[str, Any], dict[str, Any]]:
        async with rig.running():
            terminal = await started(rig)
            await terminal.keep_settings({"heartbeat_s": {"value": 300, "given": 60}, "apn": "x"})
            await terminal.keep_settings({"apn": None})
            other = await started(rig, "other")
            return await terminal.settings(), await other.settings()

    assert asyncio.run(go()) == ({"heartbeat_s": {"value": 300, "given": 60}}, {})
    assert rig.store.settings("uplink/probe") == {"heartbeat_s": {"value": 300, "given": 60}}


def test_the_archive_set_while_running_is_put_back_after_a_restart(make_rig, tmp_path) -> None:
    rig = make_rig([toy("01", point=1), toy("02", point=2)])

    async def change() -> None:
        async with rig.running():
            terminal = await started(rig)
            await terminal.set_meter(3, toy("03"))
            await terminal.set_meter(2, None)
            await terminal.set_meter(1, toy("05", E_IMPORT, VOLTAGE))

    asyncio.run(change())
    again = Concentrator(rig.site, plugins=rig.plugins, store=rig.store)  # the site file as it was

    async def restart() -> list[str]:
        async with again:
            return sorted(r.meter for r in (await again.run_round()).readings)

    assert asyncio.run(restart()) == ["03", "05", "05"]
    assert {m.point: m.address for m in again.site.meters} == {1: "05", 3: "03"}


def test_a_point_the_site_file_changed_since_keeps_the_files_meter(make_rig, caplog) -> None:
    rig = make_rig([toy("01", point=1), toy("02", point=2)])

    async def change() -> None:
        async with rig.running():
            terminal = await started(rig)
            await terminal.set_meter(1, toy("05"))
            await terminal.set_meter(2, toy("06"))

    asyncio.run(change())
    edited = attrs.evolve(rig.site, meters=(toy("01", point=1), toy("07", point=2)))  # point 2 edited by hand
    again = Concentrator(edited, plugins=rig.plugins, store=rig.store)

    async def restart() -> dict[int | None, str]:
        async with again:
            return {m.point: m.address for m in again.site.meters}

    with caplog.at_level(logging.WARNING):
        assert asyncio.run(restart()) == {1: "05", 2: "07"}
    assert "measuring point 2: the site file changed it" in caplog.text
    assert set(rig.store.settings("archive")) == {"1"}


def test_a_kept_archive_change_that_no_longer_fits_is_dropped(make_rig, caplog) -> None:
    rig = make_rig([toy("01", point=1)])
    rig.store.put_settings("archive", {"4": {"meter": {"address": "09", "protocol": "toy", "channel": "gone",
                                                       "quantities": [E_IMPORT], "name": "", "credential": ""},
                                             "given": None}})
    again = Concentrator(rig.site, plugins=rig.plugins, store=rig.store)

    async def restart() -> list[int | None]:
        async with again:
            return [m.point for m in again.site.meters]

    with caplog.at_level(logging.WARNING):
        assert asyncio.run(restart()) == [1]
    assert "channel 'gone' is not configured" in caplog.text and rig.store.settings("archive") == {}
