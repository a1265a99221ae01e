"""The concentrator against in-test meters: a line-based toy protocol over a fake link.

The driver, transport and observers are registered through a real ``Plugins`` object,
so the runtime finds them exactly as it finds a vendor's plugin.
"""

from __future__ import annotations

import asyncio
import json
import threading
from decimal import Decimal
from typing import Any

import attrs
import pytest

from meterhub import plugins as plugins_module
from meterhub.api import Conduit
from meterhub.channels.halfduplex import HalfDuplexChannel
from meterhub.errors import ChecksumError, CommandRefused, FrameError, LinkError, MeterError, NotSupported
from meterhub.hookspecs import hookimpl
from meterhub.model import ChannelConfig, Command, CommandState, Measurement, Meter, Quality, Schedule, SerialSettings, Site
from meterhub.plugins import STRICT_ENV, Plugins
from meterhub.runtime import DETAIL_SILENT, Concentrator, RoundReport, next_round_start
from meterhub.store import StoreError, open_store

E_IMPORT = "1-0:1.8.0"
VOLTAGE = "1-0:32.7.0"
CURRENT = "1-0:31.7.0"
POWER = "1-0:1.7.0"  # the toy driver does not support it
TIMEOUT = 0.03  # seconds the toy driver waits for an answer
SETTINGS = SerialSettings(9600, 8, "N", 1)


# --- a toy protocol: "R<addr>|<obis>*CS\n" -> "A<addr>|<obis>=<value>*CS\n" -------------


def frame(body: str) -> bytes:
    raw = body.encode()
    return raw + b"*" + f"{sum(raw) & 0xFF:02X}".encode() + b"\n"


def decode(line: bytes) -> tuple[str, str, str]:
    body, sep, checksum = line.rpartition(b"*")
    if not sep or not body:
        raise FrameError(f"no checksum in {line!r}")
    if f"{sum(body) & 0xFF:02X}".encode() != checksum:
        raise ChecksumError(f"bad checksum in {line!r}")
    address, _, payload = body[1:].decode().partition("|")
    return body[:1].decode(), address, payload


class LineDecoder:
    """A StreamDecoder for the toy protocol: one frame per line."""

    def __init__(self) -> None:
        self.skipped = 0
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Any]:
        self._buffer += data
        out: list[Any] = []
        while b"\n" in self._buffer:
            line, _, rest = bytes(self._buffer).partition(b"\n")
            self._buffer = bytearray(rest)
            try:
                out.append(decode(line))
            except FrameError as exc:
                out.append(exc)
        return out


class Field:
    """The simulated meters of a site, by channel and address, with switchable faults.

    Modes: ``ok``, ``silent``, ``garbage`` (bad checksum), ``error`` (abnormal reply with
    code 2), ``silent-then-ok:N`` (silent for the first N requests).
    """

    def __init__(self) -> None:
        self.modes: dict[str, str] = {}
        self.values: dict[tuple[str, str], str] = {}
        self.requests: dict[str, int] = {}
        self.broken_ports: set[str] = set()
        self.links: dict[str, FakeLink] = {}

    def respond(self, request: bytes) -> bytes | None:
        kind, address, obis = decode(request.rstrip(b"\n"))
        count = self.requests[address] = self.requests.get(address, 0) + 1
        mode = self.modes.get(address, "ok")
        if mode.startswith("silent-then-ok:"):
            mode = "silent" if count <= int(mode.split(":")[1]) else "ok"
        if mode == "silent":
            return None
        if mode == "error":
            return frame(f"E{address}|2")
        reply = frame(f"A{address}|{self.values.get((address, obis), '123.45')}")
        if mode == "garbage":
            return reply[:-3] + b"00\n"
        return reply


class FakeLink:
    """A Link whose far end is the Field; it records how many transactions overlap."""

    REPLY_DELAY = 0.002  # seconds; long enough for another task to run meanwhile

    def __init__(self, name: str, port: str, settings: SerialSettings, field: Field) -> None:
        self.name = name
        self.port = port
        self.settings = settings
        self.field = field
        self.in_flight = 0
        self.max_in_flight = 0
        self.fail_writes = False
        self.closed = False
        self._rx = bytearray()
        self._data = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    async def open(self) -> None:
        if self.port in self.field.broken_ports:
            raise LinkError(f"could not open port {self.port}: no such device")
        self.field.links[self.name] = self

    async def close(self) -> None:
        self.closed = True
        for task in self._tasks:
            task.cancel()

    async def write(self, data: bytes) -> None:
        if self.fail_writes:
            raise LinkError(f"{self.port}: device disconnected")
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        task = asyncio.get_running_loop().create_task(self._answer(bytes(data)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, request: bytes) -> None:
        await asyncio.sleep(self.REPLY_DELAY)
        reply = self.field.respond(request)
        if reply:
            self._rx += reply
            self._data.set()

    def _done(self) -> None:
        self.in_flight = max(self.in_flight - 1, 0)

    async def read(self, timeout: float) -> bytes:
        if not self._rx:
            self._data.clear()
            try:
                await asyncio.wait_for(self._data.wait(), timeout)
            except TimeoutError:
                self._done()
                return b""
        data = bytes(self._rx)
        self._rx.clear()
        self._done()
        return data

    async def reset_input(self) -> None:
        self._rx.clear()

    async def apply_settings(self, settings: SerialSettings) -> None:
        self.settings = settings


class FakeTransport:
    name = "fake"
    description = "in-test links to the Field"

    def __init__(self, field: Field) -> None:
        self.field = field

    def validate(self, channel: ChannelConfig) -> list[tuple[str, str]]:
        return []

    def create_channel(self, channel: ChannelConfig) -> HalfDuplexChannel:
        return HalfDuplexChannel(channel.name, FakeLink(channel.name, channel.port, channel.settings, self.field))


class LineDriver:
    """A MeterDriver for the toy protocol; logs when each transaction starts and ends."""

    name = "line"
    description = "in-test line protocol"
    default_settings = SETTINGS

    def __init__(self) -> None:
        self.log: list[tuple[str, str, str]] = []
        self.executed: list[Command] = []

    def normalize_address(self, address: str) -> str:
        return address

    def supported_quantities(self) -> set[str]:
        return {E_IMPORT, VOLTAGE, CURRENT}

    def transaction_timeout(self, settings: SerialSettings) -> float:
        return TIMEOUT

    async def read(self, bus: Conduit, meter: Meter, quantity: Any, timeout: float) -> Measurement:
        behaviour = meter.options.get("driver")
        if behaviour == "crash":
            raise RuntimeError("boom")
        if behaviour == "float":
            return Measurement(1.5, "kWh")  # type: ignore[arg-type]
        if quantity.obis not in self.supported_quantities():
            raise NotSupported(f"line protocol has no {quantity.obis}")
        self.log.append(("start", bus.name, meter.address))
        try:
            exchange = await bus.transact(
                frame(f"R{meter.address}|{quantity.obis}"),
                LineDecoder(),
                timeout=timeout,
                accept=lambda f: f[1] == meter.address,
            )
        finally:
            self.log.append(("end", bus.name, meter.address))
        kind, _, payload = exchange.frame
        if kind == "E":
            raise MeterError("abnormal reply", code=int(payload), reason="no requested data")
        return Measurement(Decimal(payload), quantity.unit)

    async def scan(self, bus: Conduit, timeout: float) -> list[str]:
        raise NotSupported("no scan")

    async def execute(self, bus: Conduit, meter: Meter, command: Command, timeout: float) -> dict[str, Any]:
        self.executed.append(command)
        # Commands are transactions too: they share the bus with the reading round.
        await bus.transact(frame(f"R{meter.address}|{E_IMPORT}"), LineDecoder(), timeout=timeout,
                           accept=lambda f: f[1] == meter.address)
        return {"done": command.name}


class Recorder:
    """The test's plugin: provides the driver and transport, and observes everything."""

    def __init__(self, driver: LineDriver, transport: FakeTransport) -> None:
        self.driver = driver
        self.transport = transport
        self.collected: list[tuple[str, list[Any]]] = []
        self.events: list[Any] = []
        self.refusal: str | None = None
        self.commands_seen: list[Command] = []

    @hookimpl
    def meterhub_register_meter_drivers(self, register: Any) -> None:
        register(self.driver)

    @hookimpl
    def meterhub_register_transports(self, register: Any) -> None:
        register(self.transport)

    @hookimpl
    def meterhub_readings_collected(self, readings: list[Any], channel: str) -> None:
        self.collected.append((channel, readings))

    @hookimpl
    def meterhub_event(self, event: Any) -> None:
        self.events.append(event)

    @hookimpl
    def meterhub_before_command(self, command: Any) -> str | None:
        self.commands_seen.append(command)
        return self.refusal


class Broken:
    """A plugin whose observers raise."""

    @hookimpl
    def meterhub_readings_collected(self, readings: list[Any], channel: str) -> None:
        raise ValueError("observer bug")

    @hookimpl
    def meterhub_event(self, event: Any) -> None:
        raise ValueError("event observer bug")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- fixtures ----------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def isolated_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the test's plugins: the runtime must not depend on any built-in driver."""
    monkeypatch.setattr(plugins_module, "DEFAULT_PLUGINS", ())
    monkeypatch.delenv(STRICT_ENV, raising=False)


class Rig:
    """Everything one test needs: the field, the plugin, the store and a concentrator."""

    def __init__(self, meters: list[Meter], *, channels: tuple[str, ...] = ("bus1",), schedule: Schedule | None = None,
                 extra: list[tuple[str, Any]] | None = None, progress: Any = None) -> None:
        self.field = Field()
        self.driver = LineDriver()
        self.recorder = Recorder(self.driver, FakeTransport(self.field))
        self.plugins = Plugins(load_entry_points=False, extra=[("testplugin", self.recorder), *(extra or [])])
        self.store = open_store("sqlite:///:memory:")
        self.clock = FakeClock()
        self.site = Site(
            channels={name: ChannelConfig(name, "fake", f"/dev/fake-{name}", SETTINGS) for name in channels},
            meters=tuple(meters),
            schedule=schedule or Schedule(interval=60, retries=2, backoff_initial=100, backoff_max=300),
        )
        self.concentrator = Concentrator(self.site, plugins=self.plugins, store=self.store, progress=progress,
                                         clock=self.clock)

    def round(self) -> RoundReport:
        return asyncio.run(self._round())

    async def _round(self) -> RoundReport:
        async with self.concentrator:
            return await self.concentrator.run_round()

    def rounds(self, count: int, advance: float = 0.0) -> list[RoundReport]:
        async def go() -> list[RoundReport]:
            reports = []
            async with self.concentrator:
                for _ in range(count):
                    reports.append(await self.concentrator.run_round())
                    self.clock.now += advance
            return reports

        return asyncio.run(go())


def meter(address: str, *quantities: str, channel: str = "bus1", **kw: Any) -> Meter:
    return Meter(address=address, protocol="line", channel=channel, quantities=quantities or (E_IMPORT,), **kw)


def by_key(report: RoundReport) -> dict[tuple[str, str], Any]:
    return {(r.meter, r.quantity): r for r in report.readings}


# --- a round -------------------------------------------------------------------------------


def test_a_round_stores_every_outcome() -> None:
    rig = Rig([
        meter("01", E_IMPORT, VOLTAGE),
        meter("02", E_IMPORT),
        meter("03", E_IMPORT),
        meter("04", E_IMPORT, POWER),
    ])
    rig.field.modes.update({"02": "silent", "03": "error"})
    report = rig.round()
    stored = rig.store.readings()
    assert sorted((r.meter, r.quantity, r.quality) for r in stored) == [
        ("01", E_IMPORT, Quality.OK),
        ("01", VOLTAGE, Quality.OK),
        ("02", E_IMPORT, Quality.TIMEOUT),
        ("03", E_IMPORT, Quality.METER_ERROR),
        ("04", POWER, Quality.NOT_SUPPORTED),
        ("04", E_IMPORT, Quality.OK),
    ]
    assert sorted(stored, key=lambda r: (r.meter, r.quantity)) == sorted(report.readings, key=lambda r: (r.meter, r.quantity))


def test_report_keeps_site_meter_order_across_channels() -> None:
    rig = Rig([meter("01", channel="b"), meter("02", channel="a"), meter("03", channel="b")], channels=("a", "b"))
    report = rig.round()
    assert [r.meter for r in report.readings] == ["01", "02", "03"]


def test_successful_reading_carries_value_unit_and_bookkeeping() -> None:
    rig = Rig([meter("01", VOLTAGE)])
    rig.field.values[("01", VOLTAGE)] = "230.10"
    (reading,) = rig.round().readings
    assert reading.value == Decimal("230.10") and str(reading.value) == "230.10"
    assert reading.unit == "V"
    assert (reading.channel, reading.protocol, reading.attempts) == ("bus1", "line", 1)
    assert reading.latency is not None and reading.latency > 0
    assert reading.timestamp.tzinfo is not None


def test_report_counts_ok_and_failed() -> None:
    rig = Rig([meter("01", E_IMPORT, VOLTAGE), meter("02")])
    rig.field.modes["02"] = "error"
    report = rig.round()
    assert (report.ok_count, report.failed_count) == (2, 1)


# --- retries -------------------------------------------------------------------------------


def test_a_retry_that_succeeds_counts_its_attempts() -> None:
    rig = Rig([meter("01")])
    rig.field.modes["01"] = "silent-then-ok:2"
    (reading,) = rig.round().readings
    assert reading.quality is Quality.OK
    assert reading.attempts == 3


def test_retries_are_bounded_by_the_meter_setting() -> None:
    rig = Rig([meter("01", retries=1)])
    rig.field.modes["01"] = "garbage"
    (reading,) = rig.round().readings
    assert reading.quality is Quality.CHECKSUM_ERROR
    assert reading.attempts == 2
    assert rig.field.requests["01"] == 2


def test_retries_default_to_the_site_schedule() -> None:
    rig = Rig([meter("01")], schedule=Schedule(retries=4))
    rig.field.modes["01"] = "silent"
    (reading,) = rig.round().readings
    assert reading.attempts == 5
    assert rig.field.requests["01"] == 5


def test_meter_error_is_not_retried_and_keeps_its_code() -> None:
    rig = Rig([meter("01")])
    rig.field.modes["01"] = "error"
    (reading,) = rig.round().readings
    assert reading.quality is Quality.METER_ERROR
    assert (reading.error_code, reading.detail, reading.value) == (2, "no requested data", None)
    assert rig.field.requests["01"] == 1


def test_not_supported_is_not_retried() -> None:
    rig = Rig([meter("01", POWER)])
    (reading,) = rig.round().readings
    assert reading.quality is Quality.NOT_SUPPORTED
    assert reading.attempts == 1
    assert "01" not in rig.field.requests


# --- silent and dead meters ---------------------------------------------------------------


def test_silent_meter_times_out_then_its_other_quantities_are_backed_off() -> None:
    rig = Rig([meter("01", E_IMPORT, VOLTAGE, CURRENT)])
    rig.field.modes["01"] = "silent"
    first, *rest = rig.round().readings
    assert (first.quality, first.attempts) == (Quality.TIMEOUT, 3)
    assert [(r.quality, r.detail, r.attempts) for r in rest] == [(Quality.BACKED_OFF, DETAIL_SILENT, 0)] * 2
    assert rig.field.requests["01"] == 3


def test_garbling_meter_is_still_tried_for_every_quantity() -> None:
    rig = Rig([meter("01", E_IMPORT, VOLTAGE)])
    rig.field.modes["01"] = "garbage"
    report = rig.round()
    assert [r.quality for r in report.readings] == [Quality.CHECKSUM_ERROR] * 2


def test_other_meters_on_the_same_channel_are_still_read() -> None:
    rig = Rig([meter("01", E_IMPORT, VOLTAGE), meter("02", E_IMPORT, VOLTAGE)])
    rig.field.modes["01"] = "silent"
    readings = by_key(rig.round())
    assert readings[("02", E_IMPORT)].ok and readings[("02", VOLTAGE)].ok


def test_dead_meter_is_skipped_in_the_next_round() -> None:
    rig = Rig([meter("01", E_IMPORT, VOLTAGE)])
    rig.field.modes["01"] = "silent"
    _, second = rig.rounds(2, advance=60)  # back-off is 100 s
    assert [r.quality for r in second.readings] == [Quality.BACKED_OFF] * 2
    assert all(r.detail.startswith("back-off until ") for r in second.readings)
    assert rig.field.requests["01"] == 3  # only the first round's attempts


def test_dead_meter_is_tried_again_after_its_back_off() -> None:
    rig = Rig([meter("01")])
    rig.field.modes["01"] = "silent"
    reports = rig.rounds(3, advance=60)  # t = 0 fail, 60 skipped, 120 >= 100 tried again
    assert [r.readings[0].quality for r in reports] == [Quality.TIMEOUT, Quality.BACKED_OFF, Quality.TIMEOUT]


def test_back_off_doubles_per_failed_round() -> None:
    rig = Rig([meter("01")])
    rig.field.modes["01"] = "silent"
    # fail at 0 (back-off 100), fail at 100 (back-off 200 -> 300), skip 200, try 300
    reports = rig.rounds(4, advance=100)
    assert [r.readings[0].quality for r in reports] == [
        Quality.TIMEOUT, Quality.TIMEOUT, Quality.BACKED_OFF, Quality.TIMEOUT,
    ]


def test_back_off_stops_growing_at_backoff_max() -> None:
    rig = Rig([meter("01")], schedule=Schedule(retries=0, backoff_initial=100, backoff_max=150))
    rig.field.modes["01"] = "silent"
    # fail at 0 (back-off 100), skip 50, fail at 100 (200 capped to 150 -> 250), skip 150
    reports = rig.rounds(4, advance=50)
    tried = [r.readings[0].quality is Quality.TIMEOUT for r in reports]
    assert tried == [True, False, True, False]
    reports = rig.rounds(3, advance=50)  # skip 200, try 250 (uncapped: skipped until 300), skip 300
    assert [r.readings[0].quality is Quality.TIMEOUT for r in reports] == [False, True, False]


def test_meter_dead_and_recovered_events() -> None:
    rig = Rig([meter("01")])
    rig.field.modes["01"] = "silent"
    rig.rounds(1)
    rig.field.modes["01"] = "ok"
    rig.clock.now += 100
    (reading,) = rig.round().readings
    assert reading.ok
    kinds = [e.kind for e in rig.recorder.events if e.kind.startswith("meter_")]
    assert kinds == ["meter_dead", "meter_recovered"]
    dead = rig.store.events(kind="meter_dead")[0]
    assert (dead.source, dead.severity, dead.data["meter"]) == ("bus1/line:01", "warning", "01")


def test_meter_dead_is_raised_once_while_it_stays_dead() -> None:
    rig = Rig([meter("01")])
    rig.field.modes["01"] = "silent"
    rig.rounds(3, advance=1000)
    assert len(rig.store.events(kind="meter_dead")) == 1


def test_meter_that_answers_with_errors_is_alive() -> None:
    rig = Rig([meter("01")])
    rig.field.modes["01"] = "error"
    reports = rig.rounds(2)
    assert [r.readings[0].quality for r in reports] == [Quality.METER_ERROR] * 2
    assert rig.store.events(kind="meter_dead") == []


# --- concurrency -------------------------------------------------------------------------------


def test_channels_are_read_concurrently() -> None:
    rig = Rig([meter("01", channel="a"), meter("02", channel="b")], channels=("a", "b"))
    rig.round()
    first_end = next(i for i, entry in enumerate(rig.driver.log) if entry[0] == "end")
    started_before = {entry[1] for entry in rig.driver.log[:first_end] if entry[0] == "start"}
    assert started_before == {"a", "b"}


def test_meters_of_one_channel_are_read_one_after_another() -> None:
    rig = Rig([meter(f"0{i}", E_IMPORT, VOLTAGE) for i in range(1, 5)] + [meter("09", channel="c")],
              channels=("bus1", "c"))
    rig.round()
    bus1 = [kind for kind, channel, _ in rig.driver.log if channel == "bus1"]
    assert bus1 == ["start", "end"] * 8


def test_one_transaction_in_flight_per_channel() -> None:
    rig = Rig([meter(f"0{i}", E_IMPORT, VOLTAGE) for i in range(1, 5)])
    rig.field.modes["02"] = "silent"
    rig.round()
    assert rig.field.links["bus1"].max_in_flight == 1


def test_a_command_during_a_round_shares_the_channel_bus() -> None:
    rig = Rig([meter(f"0{i}", E_IMPORT, VOLTAGE) for i in range(1, 5)])

    async def go() -> None:
        async with rig.concentrator:
            await asyncio.gather(
                rig.concentrator.run_round(),
                rig.concentrator.execute(rig.site.meters[3], Command("04", "line", "time_sync")),
            )

    asyncio.run(go())
    assert rig.driver.executed
    assert rig.field.links["bus1"].max_in_flight == 1


# --- failures that are not the meter's -----------------------------------------------------


def test_driver_exception_is_a_driver_error_and_the_round_goes_on() -> None:
    rig = Rig([meter("01", options={"driver": "crash"}), meter("02")])
    readings = by_key(rig.round())
    crashed = readings[("01", E_IMPORT)]
    assert crashed.quality is Quality.DRIVER_ERROR
    assert crashed.detail == "RuntimeError: boom"
    assert readings[("02", E_IMPORT)].ok


def test_driver_returning_a_float_is_a_driver_error() -> None:
    rig = Rig([meter("01", options={"driver": "float"})])
    (reading,) = rig.round().readings
    assert reading.quality is Quality.DRIVER_ERROR
    assert reading.value is None


def test_unknown_protocol_gives_driver_error_readings() -> None:
    rig = Rig([Meter("01", "nosuch", "bus1", (E_IMPORT, VOLTAGE))])
    report = rig.round()
    assert [r.quality for r in report.readings] == [Quality.DRIVER_ERROR] * 2
    assert "nosuch" in report.readings[0].detail


def test_channel_that_fails_to_open_gives_link_error_readings() -> None:
    rig = Rig([meter("01", E_IMPORT, VOLTAGE, channel="a"), meter("02", channel="b")], channels=("a", "b"))
    rig.field.broken_ports.add("/dev/fake-a")
    readings = by_key(rig.round())
    assert readings[("01", E_IMPORT)].quality is Quality.LINK_ERROR
    assert readings[("01", VOLTAGE)].quality is Quality.LINK_ERROR
    assert "no such device" in readings[("01", E_IMPORT)].detail
    assert readings[("02", E_IMPORT)].ok


def test_failed_channel_is_retried_next_round() -> None:
    rig = Rig([meter("01")])
    rig.field.broken_ports.add("/dev/fake-bus1")

    async def go() -> list[RoundReport]:
        async with rig.concentrator:
            first = await rig.concentrator.run_round()
            rig.field.broken_ports.clear()
            return [first, await rig.concentrator.run_round()]

    first, second = asyncio.run(go())
    assert first.readings[0].quality is Quality.LINK_ERROR
    assert second.readings[0].ok
    assert [e.kind for e in rig.store.events() if e.kind.startswith("link_")] == ["link_down", "link_up"]


def test_open_never_raises_for_a_missing_transport() -> None:
    rig = Rig([meter("01")])
    rig.site = Site(channels={"x": ChannelConfig("x", "nosuch", "/dev/x")}, meters=(meter("01", channel="x"),))
    c = Concentrator(rig.site, plugins=rig.plugins, store=rig.store)

    async def go() -> RoundReport:
        await c.open()
        try:
            return await c.run_round()
        finally:
            await c.close()

    (reading,) = asyncio.run(go()).readings
    assert reading.quality is Quality.LINK_ERROR
    assert "nosuch" in reading.detail
    assert "x" in c.channel_errors()


def test_link_failing_mid_round_fails_the_channel_and_reopens_next_round() -> None:
    rig = Rig([meter("01", E_IMPORT, VOLTAGE), meter("02")])

    async def go() -> list[RoundReport]:
        async with rig.concentrator:
            await rig.concentrator.open()
            rig.field.links["bus1"].fail_writes = True
            first = await rig.concentrator.run_round()
            return [first, await rig.concentrator.run_round()]

    first, second = asyncio.run(go())
    assert [r.quality for r in first.readings] == [Quality.LINK_ERROR] * 3
    assert all(r.ok for r in second.readings)


# --- observers, events, progress -------------------------------------------------------------


def test_observers_get_every_reading_per_meter_with_its_channel() -> None:
    rig = Rig([meter("01", E_IMPORT, VOLTAGE), meter("02", channel="b")], channels=("bus1", "b"))
    rig.field.modes["02"] = "silent"
    report = rig.round()
    collected = sorted(rig.recorder.collected, key=lambda c: c[0])
    assert [(channel, [r.meter for r in readings]) for channel, readings in collected] == [
        ("b", ["02"]), ("bus1", ["01", "01"]),
    ]
    seen = [r for _, readings in collected for r in readings]
    assert sorted(seen, key=lambda r: r.meter) == sorted(report.readings, key=lambda r: r.meter)


def test_a_raising_observer_does_not_break_the_round() -> None:
    rig = Rig([meter("01"), meter("02")], extra=[("broken", Broken())])
    report = rig.round()
    assert report.ok_count == 2
    assert len(rig.recorder.collected) == 2
    assert len(rig.store.readings()) == 2
    info = {i.name: i for i in rig.plugins.info()}
    assert "observer bug" in info["broken"].error


def test_round_finished_event_is_stored_and_published() -> None:
    rig = Rig([meter("01"), meter("02")])
    rig.field.modes["02"] = "error"
    rig.round()
    (stored,) = rig.store.events(kind="round_finished")
    assert (stored.data["ok"], stored.data["failed"], stored.data["readings"]) == (1, 1, 2)
    assert stored in rig.recorder.events


def test_round_summary_is_stored() -> None:
    rig = Rig([meter("01"), meter("02")])
    rig.field.modes["02"] = "silent"
    rig.round()
    (summary,) = rig.store.rounds()
    assert (summary["readings"], summary["ok"], summary["failed"]) == (2, 1, 1)
    assert summary["meter_stats"]["bus1/line:02"]["failures"] == {"timeout": 1}


def test_progress_reports_round_meters_and_end() -> None:
    seen: list[tuple[str, dict[str, Any]]] = []
    rig = Rig([meter("01"), meter("02")], progress=lambda kind, info: seen.append((kind, info)))
    rig.field.modes["02"] = "silent"
    rig.round()
    assert [kind for kind, _ in seen] == ["round_started", "meter_done", "meter_done", "round_finished"]
    assert seen[0][1]["meters"] == 2
    assert [(i["meter"], i["ok"], i["failed"]) for k, i in seen if k == "meter_done"] == [
        ("line:01", 1, 0), ("line:02", 0, 1),
    ]


def test_a_failing_progress_callback_does_not_stop_reading() -> None:
    def progress(kind: str, info: dict[str, Any]) -> None:
        raise RuntimeError("display gone")

    rig = Rig([meter("01")], progress=progress)
    assert rig.round().ok_count == 1


def test_the_line_reads_the_next_meter_while_the_last_ones_readings_are_committed() -> None:
    # The first commit waits (a slow flash) until meter 02 has been asked: a runtime that
    # held the line until the commit was done would never ask it, and the wait would fail.
    rig = Rig([meter("01"), meter("02")])
    asked_02 = threading.Event()
    respond, commit = rig.field.respond, rig.store.add_reading_batches
    waited: list[bool] = []

    def respond_noting(request: bytes) -> bytes | None:
        if request.startswith(b"R02|"):
            asked_02.set()
        return respond(request)

    def slow_commit(batches: Any) -> list[int]:
        if not waited:
            waited.append(asked_02.wait(5.0))
        return commit(batches)

    rig.field.respond = respond_noting  # type: ignore[method-assign]
    rig.store.add_reading_batches = slow_commit  # type: ignore[method-assign]
    report = rig.round()
    assert waited == [True]
    assert report.ok_count == 2
    assert sorted(r.meter for r in rig.store.readings()) == ["01", "02"]  # both stored before the round ended


def test_store_failure_raises_out_of_the_round() -> None:
    rig = Rig([meter("01")])
    rig.store.close()
    with pytest.raises(StoreError):
        rig.round()


# --- statistics ------------------------------------------------------------------------------


def test_stats_count_transactions_retries_and_failures_across_rounds() -> None:
    rig = Rig([meter("01", E_IMPORT, VOLTAGE), meter("02", retries=1)])
    rig.field.modes["01"] = "silent-then-ok:1"
    rig.field.modes["02"] = "garbage"
    rig.rounds(2, advance=1000)  # past 02's back-off
    m1 = rig.concentrator.stats.meters["bus1/line:01"].snapshot()
    assert (m1["readings"], m1["successes"], m1["transactions"], m1["retries"]) == (4, 4, 5, 1)
    m2 = rig.concentrator.stats.meters["bus1/line:02"].snapshot()
    assert (m2["transactions"], m2["failures"], m2["success_rate"]) == (4, {"checksum_error": 2}, 0.0)
    channel = rig.concentrator.stats.channels["bus1"].snapshot()
    assert (channel["readings"], channel["successes"], channel["transactions"]) == (6, 4, 9)


def test_round_report_stats_are_for_that_round_only() -> None:
    rig = Rig([meter("01")])
    first, second = rig.rounds(2)
    assert second.meter_stats["bus1/line:01"]["readings"] == 1
    assert rig.concentrator.stats.meters["bus1/line:01"].readings == 2
    json.dumps(dict(second.meter_stats))


# --- commands --------------------------------------------------------------------------------


def test_policy_hook_refusal_raises_and_the_driver_is_not_called() -> None:
    rig = Rig([meter("01")])
    rig.recorder.refusal = "relay control is locked during billing"
    command = Command("01", "line", "relay", {"action": "trip"})

    async def go() -> None:
        async with rig.concentrator:
            await rig.concentrator.execute(rig.site.meters[0], command)

    with pytest.raises(CommandRefused, match="locked during billing"):
        asyncio.run(go())
    assert rig.driver.executed == []
    assert rig.recorder.commands_seen == [attrs.evolve(command, channel="bus1")]
    assert rig.store.events(kind="command_refused")[0].data["reason"] == (
        "refused by policy plugin 'testplugin': relay control is locked during billing")
    (record,) = rig.store.commands()
    assert record.state is CommandState.REFUSED and "locked during billing" in record.reason


def test_allowed_command_reaches_the_driver() -> None:
    rig = Rig([meter("01")])
    command = Command("01", "line", "time_sync")

    async def go() -> Any:
        async with rig.concentrator:
            return await rig.concentrator.execute(rig.site.meters[0], command)

    assert asyncio.run(go()) == {"done": "time_sync"}
    assert rig.driver.executed == [attrs.evolve(command, channel="bus1")]
    (record,) = rig.store.commands()
    assert (record.command.id, record.state, dict(record.answer or {})) == (command.id, CommandState.ANSWERED,
                                                                          {"done": "time_sync"})


def test_command_on_a_down_channel_raises_link_error() -> None:
    rig = Rig([meter("01")])
    rig.field.broken_ports.add("/dev/fake-bus1")

    async def go() -> None:
        async with rig.concentrator:
            await rig.concentrator.execute(rig.site.meters[0], Command("01", "line", "time_sync"))

    with pytest.raises(LinkError):
        asyncio.run(go())
    assert rig.driver.executed == []


# --- the schedule ----------------------------------------------------------------------------


def test_run_stops_after_the_given_number_of_rounds() -> None:
    rig = Rig([meter("01")], schedule=Schedule(interval=0.01))
    rig.concentrator = Concentrator(rig.site, plugins=rig.plugins, store=rig.store)

    async def go() -> None:
        async with rig.concentrator:
            await rig.concentrator.run(stop=asyncio.Event(), rounds=3)

    asyncio.run(go())
    assert len(rig.store.rounds()) == 3


def test_next_round_starts_one_interval_after_the_last_start_not_after_its_end() -> None:
    assert next_round_start(1000.0, 900.0, now=1000.0 + 300) == 1900.0


def test_a_round_longer_than_the_interval_is_followed_at_once() -> None:
    assert next_round_start(1000.0, 900.0, now=1000.0 + 1200) == 2200.0


def stop_when(rig: Rig, condition: Any) -> None:
    """Run the site's schedule, set ``stop`` once ``condition()`` holds, and wait for run() to return."""
    rig.concentrator = Concentrator(rig.site, plugins=rig.plugins, store=rig.store)

    async def go() -> None:
        stop = asyncio.Event()
        async with rig.concentrator:
            runner = asyncio.ensure_future(rig.concentrator.run(stop=stop))
            while not condition():
                await asyncio.sleep(0.01)
            stop.set()
            await asyncio.wait_for(runner, 30)  # not the hour of the schedule or the meter's timeout

    asyncio.run(go())


def test_run_stops_while_waiting_for_the_next_round() -> None:
    rig = Rig([meter("01")], schedule=Schedule(interval=3600))
    stop_when(rig, rig.store.rounds)
    assert len(rig.store.rounds()) == 1


def test_run_stops_in_the_middle_of_a_round() -> None:
    rig = Rig([meter("01"), meter("02", timeout=3600.0)], schedule=Schedule(interval=3600))
    rig.field.modes["02"] = "silent"
    stop_when(rig, rig.store.readings)
    assert [r.meter for r in rig.store.readings()] == ["01"]  # what was read stays stored
    assert rig.store.rounds() == []


# --- drivers that read a meter's quantities together (read_many) -------------------------


class BatchDriver(LineDriver):
    """A LineDriver that also offers ``read_many``, answering from a script of outcomes."""

    name = "batch"

    def __init__(self, script: list[list[Any]]) -> None:
        super().__init__()
        self.script = script
        self.calls: list[list[str]] = []

    async def read_many(self, bus: Conduit, meter: Meter, quantities: list[Any], timeout: float) -> list[Any]:
        self.calls.append([q.obis for q in quantities])
        outcomes = self.script.pop(0)
        if isinstance(outcomes, Exception):
            raise outcomes
        return outcomes


def _batch_rig(script: list[Any], *, quantities: tuple[str, ...] = (E_IMPORT, VOLTAGE, CURRENT)) -> tuple[Rig, BatchDriver]:
    rig = Rig([Meter(address="7", protocol="batch", channel="bus1", quantities=quantities)])
    driver = BatchDriver(script)
    rig.recorder.driver = driver
    return rig, driver


def test_a_batching_driver_reads_a_meter_in_one_call():
    rig, driver = _batch_rig([[Measurement(Decimal("1.5"), "kWh"), Measurement(Decimal("230.1"), "V"),
                               Measurement(Decimal("2"), "A")]])
    report = rig.round()
    assert driver.calls == [[E_IMPORT, VOLTAGE, CURRENT]]
    assert [(r.quantity, r.value, r.quality, r.attempts) for r in report.readings] == [
        (E_IMPORT, Decimal("1.5"), Quality.OK, 1), (VOLTAGE, Decimal("230.1"), Quality.OK, 1),
        (CURRENT, Decimal("2"), Quality.OK, 1),
    ]


def test_only_the_quantities_that_failed_on_the_wire_are_retried():
    from meterhub.errors import MeterTimeout

    rig, driver = _batch_rig([
        [Measurement(Decimal("1.5"), "kWh"), MeterTimeout("no answer"), MeterError("abnormal", code=2, reason="no data")],
        [Measurement(Decimal("230.1"), "V")],
    ])
    report = rig.round()
    assert driver.calls == [[E_IMPORT, VOLTAGE, CURRENT], [VOLTAGE]]
    assert [(r.quantity, r.quality, r.attempts, r.error_code) for r in report.readings] == [
        (E_IMPORT, Quality.OK, 1, None), (VOLTAGE, Quality.OK, 2, None), (CURRENT, Quality.METER_ERROR, 1, 2),
    ]


def test_retries_of_a_batch_are_bounded():
    from meterhub.errors import MeterTimeout

    rig, driver = _batch_rig([[MeterTimeout("no answer")]] * 3, quantities=(E_IMPORT,))  # the schedule allows 2 retries
    report = rig.round()
    assert len(driver.calls) == 3
    assert [(r.quality, r.attempts) for r in report.readings] == [(Quality.TIMEOUT, 3)]
    assert rig.store.readings()[0].quality is Quality.TIMEOUT  # stored, not dropped


def test_a_batch_with_the_wrong_number_of_outcomes_is_a_driver_error():
    rig, _ = _batch_rig([[Measurement(Decimal("1"), "kWh")]])
    report = rig.round()
    assert {r.quality for r in report.readings} == {Quality.DRIVER_ERROR}
    assert "3 quantities" in report.readings[0].detail


def test_a_link_error_from_a_batch_fails_every_quantity_as_a_link_error():
    rig, _ = _batch_rig([LinkError("/dev/fake-bus1: device disconnected")])
    report = rig.round()
    assert [r.quality for r in report.readings] == [Quality.LINK_ERROR] * 3
