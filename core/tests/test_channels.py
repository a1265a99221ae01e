"""Channels as the runtime uses them: a half-duplex line held for a multi-step exchange,
answer times along a meter's route, a channel that reads several meters at once (one per
lane), frames nobody asked for and far-end requests, routes in readings and statistics,
and channels that cannot be made or opened.

The concurrent channel here implements :class:`meterhub.api.Channel` itself, as a carrier
module's or a multiplexer's transport would; the runtime finds it, the toy driver and the
observer through a real ``Plugins`` object, as it finds a vendor's plugin.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable, Hashable
from decimal import Decimal
from typing import Any

import pytest
from meterhub import plugins as plugins_module
from meterhub.api import ChannelSink, Exchange, LateAnswer, Unsolicited
from meterhub.channels.halfduplex import HalfDuplexChannel
from meterhub.timing import relay_time
from meterhub.config import parse_site
from meterhub.errors import FrameError, LinkError, MeterTimeout, NotSupported
from meterhub.hookspecs import hookimpl
from meterhub.model import (
    ChannelConfig,
    Hop,
    Measurement,
    Meter,
    Quality,
    RoundReport,
    Schedule,
    SerialSettings,
    Site,
    meter_key,
)
from meterhub.plugins import STRICT_ENV, Plugins
from meterhub.runtime import Concentrator
from meterhub.store import open_store

E_IMPORT = "1-0:1.8.0"
VOLTAGE = "1-0:32.7.0"
CURRENT = "1-0:31.7.0"

#: The line's own format (a DL/T 645 bus) and the two of an IEC 62056-21 exchange: the
#: sign-on at 300 Bd 7E1, then the readout after the baud-rate switch.
DEFAULT = SerialSettings(2400, 8, "E", 1)
IEC_300 = SerialSettings(300, 7, "E", 1)
IEC_9600 = SerialSettings(9600, 8, "N", 1)

BASE_TIMEOUT = 0.25  #: what the toy protocol needs on a direct line, seconds
ANSWER_TIMEOUT = 1.0  #: transactions in the half-duplex tests; the fake far end answers at once
REPLY_DELAY = 0.005  #: how long the fake far ends take to answer: long enough for other tasks to run
QUEUE_WAIT = 0.02  #: how long a session holder waits so that another task is surely queued behind it
LIMIT = 10.0  #: a test that takes this long is stuck (a deadlock), not slow

SIGN_ON = b"/?!\r\n"  # IEC 62056-21 request message
IDENTIFICATION = b"/ISK5MT174-0001\r\n"  # the meter's identification message
READOUT = b"R1\r\n"  # the readout request, at the new speed
DATA = b"1.8.0(001234.5*kWh)\r\n"
OTHER = b"R 12 1-0:1.8.0\n"  # another meter's request on the same line


@pytest.fixture(autouse=True)
def isolated_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the test's plugins: the runtime must not depend on any built-in driver."""
    monkeypatch.setattr(plugins_module, "DEFAULT_PLUGINS", ())
    monkeypatch.delenv(STRICT_ENV, raising=False)


# --- a toy protocol: "R <addr> <obis>\n" -> "A <addr> <obis> <value>\n" ---------------------


def toy_request(address: str, obis: str) -> bytes:
    return f"R {address} {obis}\n".encode()


def toy_answer(request: bytes, values: dict[tuple[str, str], str]) -> bytes:
    """The far end of the toy protocol: every meter answers, 123.45 unless told otherwise."""
    words = request.decode().split()
    if len(words) != 3 or words[0] != "R":
        return request  # not a toy request: echoed
    _, address, obis = words
    return f"A {address} {obis} {values.get((address, obis), '123.45')}\n".encode()


class LineDecoder:
    """A StreamDecoder for line protocols: each line (without its CR LF) is a frame."""

    def __init__(self) -> None:
        self.skipped = 0
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Any]:
        self._buffer += data
        frames: list[Any] = []
        while b"\n" in self._buffer:
            line, _, rest = bytes(self._buffer).partition(b"\n")
            self._buffer = bytearray(rest)
            frames.append(line.rstrip(b"\r") if line.strip() else FrameError("empty line"))
        return frames


class ToyDriver:
    """A MeterDriver for the toy protocol; records the timeout each read was given."""

    name = "toy"
    description = "in-test line protocol"
    default_settings = DEFAULT

    def __init__(self) -> None:
        self.timeouts: list[tuple[str, float]] = []

    def normalize_address(self, address: str) -> str:
        return address

    def supported_quantities(self) -> set[str]:
        return {E_IMPORT, VOLTAGE, CURRENT}

    def transaction_timeout(self, settings: SerialSettings) -> float:
        return BASE_TIMEOUT

    async def read(self, bus: Any, meter: Meter, quantity: Any, timeout: float) -> Measurement:
        self.timeouts.append((meter.address, timeout))
        asked = ["A", meter.address, quantity.obis]
        exchange = await bus.transact(toy_request(meter.address, quantity.obis), LineDecoder(), timeout=timeout,
                                      accept=lambda line: line.decode().split()[:3] == asked)
        return Measurement(Decimal(exchange.frame.decode().split()[3]), quantity.unit)

    async def scan(self, bus: Any, timeout: float) -> list[str]:
        raise NotSupported("no scan")

    async def execute(self, bus: Any, meter: Meter, command: Any, timeout: float) -> dict[str, Any]:
        raise NotSupported("no commands")


# --- a half-duplex line's far end ---------------------------------------------------------------


class RecordingLink:
    """A Link whose far end answers each request after REPLY_DELAY (``answers`` by request,
    else the toy protocol). It records in order the formats it is switched to, the frames
    written and the test's own notes."""

    def __init__(self, settings: SerialSettings, answers: dict[bytes, bytes] | None = None) -> None:
        self.name = "probe"
        self.settings = settings
        self.answers = answers or {}
        self.log: list[tuple[str, Any]] = []
        self._rx = bytearray()
        self._arrived = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    async def open(self) -> None: ...

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()

    async def write(self, data: bytes) -> None:
        self.log.append(("tx", bytes(data)))
        reply = self.answers.get(bytes(data)) or toy_answer(bytes(data), {})

        async def deliver() -> None:
            await asyncio.sleep(REPLY_DELAY)
            self._rx += reply
            self._arrived.set()

        task = asyncio.get_running_loop().create_task(deliver())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def read(self, timeout: float) -> bytes:
        if not self._rx:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), timeout)
            except TimeoutError:
                return b""
        data = bytes(self._rx)
        self._rx.clear()
        return data

    async def reset_input(self) -> None:
        self._rx.clear()

    async def apply_settings(self, settings: SerialSettings) -> None:
        self.log.append(("settings", settings))
        self.settings = settings

    def note(self, what: str) -> None:
        self.log.append(("note", what))


def _ask(bus: HalfDuplexChannel, request: bytes, settings: SerialSettings) -> Any:
    return bus.transact(request, LineDecoder(), timeout=ANSWER_TIMEOUT, settings=settings)


def _frames(log: list[tuple[str, Any]]) -> list[Any]:
    """What went out and the test's notes, in order; format switches left out."""
    return [what for kind, what in log if kind != "settings"]


# --- HalfDuplexChannel.session() ------------------------------------------------------------------


def test_a_session_keeps_another_tasks_transaction_out_until_it_ends() -> None:
    async def scenario() -> list[tuple[str, Any]]:
        link = RecordingLink(DEFAULT, {SIGN_ON: IDENTIFICATION, READOUT: DATA})
        bus = HalfDuplexChannel("probe", link)
        signed_on, queued = asyncio.Event(), asyncio.Event()

        async def iec_reader() -> None:
            async with bus.session():
                await _ask(bus, SIGN_ON, IEC_300)
                signed_on.set()
                await queued.wait()
                await asyncio.sleep(QUEUE_WAIT)  # the other request now waits for the line
                await _ask(bus, READOUT, IEC_9600)

        async def other_meter() -> None:
            await signed_on.wait()
            link.note("other queued")
            queued.set()
            await _ask(bus, OTHER, DEFAULT)

        await asyncio.wait_for(asyncio.gather(iec_reader(), other_meter()), LIMIT)
        return link.log

    log = asyncio.run(scenario())
    assert _frames(log) == [SIGN_ON, "other queued", READOUT, OTHER]


def test_a_session_switches_the_links_format_between_its_steps() -> None:
    async def scenario() -> list[tuple[str, Any]]:
        link = RecordingLink(DEFAULT, {SIGN_ON: IDENTIFICATION, READOUT: DATA})
        bus = HalfDuplexChannel("probe", link)
        async with bus.session():
            await _ask(bus, SIGN_ON, IEC_300)
            await _ask(bus, READOUT, IEC_9600)
        return link.log

    log = asyncio.run(asyncio.wait_for(scenario(), LIMIT))
    assert log == [("settings", IEC_300), ("tx", SIGN_ON), ("settings", IEC_9600), ("tx", READOUT)]


def test_a_nested_session_in_the_same_task_does_not_deadlock() -> None:
    async def scenario() -> list[bytes]:
        bus = HalfDuplexChannel("probe", RecordingLink(DEFAULT, {SIGN_ON: IDENTIFICATION, READOUT: DATA}))
        async with bus.session():
            async with bus.session():
                first = await _ask(bus, SIGN_ON, IEC_300)
            second = await _ask(bus, READOUT, IEC_9600)
        return [first.frame, second.frame]

    frames = asyncio.run(asyncio.wait_for(scenario(), LIMIT))
    assert frames == [IDENTIFICATION.rstrip(), DATA.rstrip()]


def test_the_end_of_a_nested_session_does_not_release_the_line() -> None:
    async def scenario() -> list[tuple[str, Any]]:
        link = RecordingLink(DEFAULT, {SIGN_ON: IDENTIFICATION, READOUT: DATA})
        bus = HalfDuplexChannel("probe", link)
        inner_done, queued = asyncio.Event(), asyncio.Event()

        async def iec_reader() -> None:
            async with bus.session():
                async with bus.session():
                    await _ask(bus, SIGN_ON, IEC_300)
                inner_done.set()
                await queued.wait()
                await asyncio.sleep(QUEUE_WAIT)
                await _ask(bus, READOUT, IEC_9600)

        async def other_meter() -> None:
            await inner_done.wait()
            link.note("other queued")
            queued.set()
            await _ask(bus, OTHER, DEFAULT)

        await asyncio.wait_for(asyncio.gather(iec_reader(), other_meter()), LIMIT)
        return link.log

    log = asyncio.run(scenario())
    assert _frames(log) == [SIGN_ON, "other queued", READOUT, OTHER]


# --- answer_time ------------------------------------------------------------------------------------


def _line() -> HalfDuplexChannel:
    return HalfDuplexChannel("b", RecordingLink(DEFAULT))


def test_a_meter_wired_straight_to_the_line_gets_the_base_answer_time() -> None:
    assert _line().answer_time(Meter("07", "toy", "b"), BASE_TIMEOUT) == BASE_TIMEOUT


def test_each_relay_adds_its_given_delay() -> None:
    meter = Meter("07", "toy", "b", hops=(Hop("hub", delay=0.2), Hop("relay2", delay=0.35)))
    assert _line().answer_time(meter, BASE_TIMEOUT) == pytest.approx(BASE_TIMEOUT + 0.2 + 0.35)


def test_a_relay_without_a_delay_adds_the_store_and_forward_time_at_the_meters_format() -> None:
    meter = Meter("07", "toy", "b", settings=IEC_9600, hops=(Hop("hub"),))
    assert relay_time(IEC_9600) != relay_time(DEFAULT)  # else the test could not tell them apart
    assert _line().answer_time(meter, BASE_TIMEOUT) == pytest.approx(BASE_TIMEOUT + relay_time(IEC_9600))


def test_a_relay_without_a_delay_on_a_meter_without_a_format_uses_the_lines() -> None:
    meter = Meter("07", "toy", "b", hops=(Hop("hub"),))
    assert _line().answer_time(meter, BASE_TIMEOUT) == pytest.approx(BASE_TIMEOUT + relay_time(DEFAULT))


def test_given_and_derived_relay_delays_add_up() -> None:
    meter = Meter("07", "toy", "b", hops=(Hop("hub", delay=0.2), Hop("relay2")))
    assert _line().answer_time(meter, BASE_TIMEOUT) == pytest.approx(BASE_TIMEOUT + 0.2 + relay_time(DEFAULT))


# --- the runtime's side: a plugin, transports and a rig ---------------------------------------------


class Plugin:
    """The test's plugin: the driver and a transport, and an observer of collected readings."""

    def __init__(self, driver: ToyDriver, transport: Any) -> None:
        self.driver = driver
        self.transport = transport
        self.on_collected: Callable[[list[Any]], None] = lambda readings: None

    @hookimpl
    def meterhub_register_meter_drivers(self, register: Any) -> None:
        register(self.driver)

    @hookimpl
    def meterhub_register_transports(self, register: Any) -> None:
        register(self.transport)

    @hookimpl
    def meterhub_readings_collected(self, readings: list[Any], channel: str) -> None:
        self.on_collected(readings)


class LineTransport:
    """Half-duplex channels over RecordingLinks that speak the toy protocol."""

    name = "line"
    description = "in-test half-duplex lines"

    def validate(self, channel: ChannelConfig) -> list[tuple[str, str]]:
        return []

    def create_channel(self, channel: ChannelConfig) -> HalfDuplexChannel:
        return HalfDuplexChannel(channel.name, RecordingLink(channel.settings))


class PortChannel:
    """A :class:`~meterhub.api.Channel` implemented directly, as a multiplexer's or a carrier
    module's transport would: up to ``in_flight`` transactions at once, a lane per meter's
    ``port`` option. It counts overlapping transactions, overall and per lane, and pushes
    the reports queued for an address (``pushes``) to the runtime in the middle of that
    meter's transaction, as a module does with an event report."""

    def __init__(self, name: str, settings: SerialSettings, in_flight: int, *, values: dict[tuple[str, str], str],
                 pushes: dict[str, list[Unsolicited]], broken_lanes: bool = False,
                 open_error: Exception | None = None) -> None:
        self.name = name
        self.settings = settings
        self.in_flight = in_flight
        self.values = values
        self.pushes = pushes
        self.broken_lanes = broken_lanes
        self.open_error = open_error
        self.sink: ChannelSink | None = None
        self.requests: list[bytes] = []
        self.closed = False
        self.peak = 0  #: most transactions under way at once
        self.peak_per_lane = 0  #: most transactions under way at once on one lane
        self._active: Counter[Hashable] = Counter()

    async def open(self) -> None:
        if self.open_error is not None:
            raise self.open_error

    async def close(self) -> None:
        self.closed = True

    def lane(self, meter: Meter) -> Hashable:
        if self.broken_lanes:
            raise RuntimeError("the port map is lost")
        return meter.options.get("port", "")

    def towards(self, meter: Meter | None) -> PortConduit:
        return PortConduit(self, meter)

    def answer_time(self, meter: Meter, base: float) -> float:
        return base

    def listen(self, sink: ChannelSink) -> None:
        self.sink = sink

    @contextlib.contextmanager
    def under_way(self, lane: Hashable) -> Any:
        self._active[lane] += 1
        self.peak = max(self.peak, sum(self._active.values()))
        self.peak_per_lane = max(self.peak_per_lane, self._active[lane])
        try:
            yield
        finally:
            self._active[lane] -= 1


class PortConduit:
    """A PortChannel as one meter's driver sees it (:class:`~meterhub.api.Conduit`)."""

    def __init__(self, channel: PortChannel, meter: Meter | None) -> None:
        self.channel = channel
        self.meter = meter
        self.name = channel.name
        self.settings = channel.settings

    async def transact(self, request: bytes, decoder: Any, *, timeout: float,
                       accept: Callable[[Any], bool] = lambda frame: True, settings: SerialSettings | None = None,
                       guard: bool = True) -> Exchange:
        ch = self.channel
        with ch.under_way(self.meter.options.get("port", "") if self.meter else ""):
            ch.requests.append(request)
            address = request.decode().split()[1]
            for report in ch.pushes.pop(address, []):
                assert ch.sink is not None
                ch.sink.unsolicited(report)
            await asyncio.sleep(REPLY_DELAY)
            for frame in decoder.feed(toy_answer(request, ch.values)):
                if not isinstance(frame, FrameError) and accept(frame):
                    return Exchange(frame, REPLY_DELAY)
        raise MeterTimeout(f"no answer within {timeout:.3f} s")

    async def send(self, request: bytes, *, settings: SerialSettings | None = None) -> None:
        self.channel.requests.append(request)

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[None]:
        yield

    async def settle(self) -> list[LateAnswer]:
        return []


class PortTransport:
    """Makes PortChannels; keeps the last one made per channel name for the test to look at."""

    name = "ports"
    description = "in-test multiplexer"

    def __init__(self, *, in_flight: int = 3, broken_lanes: bool = False, create_error: Exception | None = None,
                 open_error: Exception | None = None) -> None:
        self.in_flight = in_flight
        self.broken_lanes = broken_lanes
        self.create_error = create_error
        self.open_error = open_error
        self.values: dict[tuple[str, str], str] = {}
        self.pushes: dict[str, list[Unsolicited]] = {}
        self.channels: dict[str, PortChannel] = {}

    def validate(self, channel: ChannelConfig) -> list[tuple[str, str]]:
        return []

    def create_channel(self, channel: ChannelConfig) -> PortChannel:
        if self.create_error is not None:
            raise self.create_error
        made = self.channels[channel.name] = PortChannel(
            channel.name, channel.settings, self.in_flight, values=self.values, pushes=self.pushes,
            broken_lanes=self.broken_lanes, open_error=self.open_error)
        return made


class Rig:
    """A concentrator over the test's plugin, with an in-memory store."""

    def __init__(self, meters: list[Meter], transport: Any, *, site: Site | None = None) -> None:
        self.driver = ToyDriver()
        self.transport = transport
        self.plugin = Plugin(self.driver, transport)
        self.plugins = Plugins(load_entry_points=False, extra=[("channeltest", self.plugin)])
        self.store = open_store("sqlite:///:memory:")
        self.site = site or Site(
            channels={"bus": ChannelConfig("bus", transport.name, "/dev/bus", DEFAULT)},
            meters=tuple(meters),
            schedule=Schedule(interval=60, retries=0, backoff_initial=100, backoff_max=300),
        )
        self.concentrator = Concentrator(self.site, plugins=self.plugins, store=self.store)
        self.channel_errors: dict[str, str] = {}

    def round(self) -> RoundReport:
        async def go() -> RoundReport:
            async with self.concentrator:
                report = await self.concentrator.run_round()
                self.channel_errors = self.concentrator.channel_errors()
                return report

        return asyncio.run(asyncio.wait_for(go(), LIMIT))

    def run(self, scenario: Callable[[Concentrator], Any]) -> Any:
        """Run ``scenario(concentrator)`` (a coroutine function) with the concentrator open."""

        async def go() -> Any:
            async with self.concentrator:
                return await scenario(self.concentrator)

        return asyncio.run(asyncio.wait_for(go(), LIMIT))


def meter(address: str, *quantities: str, **kw: Any) -> Meter:
    return Meter(address=address, protocol="toy", channel="bus", quantities=quantities or (E_IMPORT,), **kw)


def on_port(address: str, port: str) -> Meter:
    return meter(address, options={"port": port})


# --- the runtime gives the driver the route's answer time ----------------------------------------------


def test_the_concentrator_gives_the_driver_the_answer_time_along_the_route() -> None:
    rig = Rig([meter("07", hops=(Hop("hub", delay=0.2), Hop("relay2")))], LineTransport())
    rig.round()
    assert rig.driver.timeouts == [("07", pytest.approx(BASE_TIMEOUT + 0.2 + relay_time(DEFAULT)))]


def test_an_explicit_meter_timeout_is_given_to_the_driver_as_it_is() -> None:
    rig = Rig([meter("07", timeout=0.75, hops=(Hop("hub", delay=0.2), Hop("relay2")))], LineTransport())
    rig.round()
    assert rig.driver.timeouts == [("07", 0.75)]


# --- several meters at once, one per lane ---------------------------------------------------------------

#: Nine meters on three ports of a multiplexer, listed port by port.
NINE_ON_THREE_PORTS = [on_port(f"{port}{n}", port) for port in "ABC" for n in (1, 2, 3)]


def test_a_channel_with_three_in_flight_reads_three_meters_at_once() -> None:
    rig = Rig(NINE_ON_THREE_PORTS, PortTransport(in_flight=3))
    rig.round()
    assert rig.transport.channels["bus"].peak == 3


def test_meters_on_one_lane_are_never_read_at_once() -> None:
    rig = Rig(NINE_ON_THREE_PORTS, PortTransport(in_flight=3))
    rig.round()
    assert rig.transport.channels["bus"].peak_per_lane == 1


def test_a_channel_with_one_in_flight_reads_one_meter_at_a_time() -> None:
    rig = Rig(NINE_ON_THREE_PORTS, PortTransport(in_flight=1))
    rig.round()
    assert rig.transport.channels["bus"].peak == 1


def test_a_channel_whose_lanes_fail_is_read_one_meter_at_a_time() -> None:
    rig = Rig(NINE_ON_THREE_PORTS, PortTransport(in_flight=3, broken_lanes=True))
    rig.round()
    assert rig.transport.channels["bus"].peak == 1


def test_a_channel_whose_lanes_fail_still_gets_every_meter_read() -> None:
    rig = Rig(NINE_ON_THREE_PORTS, PortTransport(in_flight=3, broken_lanes=True))
    report = rig.round()
    assert sorted((r.meter, r.quality) for r in report.readings) == [
        (m.address, Quality.OK) for m in NINE_ON_THREE_PORTS
    ]


# --- frames nobody asked for ---------------------------------------------------------------------------------


def _pushing(report: Unsolicited, *, during: str = "07") -> Rig:
    """A rig whose channel pushes ``report`` in the middle of meter ``during``'s transaction;
    meter 07 (behind collector hub) reads energy and voltage, meter 08 energy."""
    transport = PortTransport()
    transport.pushes[during] = [report]
    return Rig([meter("07", E_IMPORT, VOLTAGE, hops=(Hop("hub"),)), meter("08")], transport)


def _cover_open(address: str = "07", **kw: Any) -> Unsolicited:
    """A meter's event report that carries two values: energy (configured) and current (not).
    It names no protocol, as a carrier module relaying the report may not know it."""
    measurements = kw.pop("measurements", {E_IMPORT: Measurement(Decimal("42.00"), "kWh"),
                                           CURRENT: Measurement(Decimal("1.5"), "A")})
    return Unsolicited("meter_event", address=address, data={"alarm": "cover_open"}, measurements=measurements,
                       **kw)


def _pushed_readings(rig: Rig, address: str = "07") -> list[Any]:
    """Readings that came from a pushed report: no transaction was tried for them."""
    return [r for r in rig.store.readings(meter=address) if r.attempts == 0]


def test_a_pushed_report_is_stored_as_an_event_of_its_meter() -> None:
    rig = _pushing(_cover_open())
    rig.round()
    [event] = rig.store.events(kind="meter_event")
    assert (event.source, event.data["alarm"], event.data["known"]) == ("bus/toy:07", "cover_open", True)


def test_a_pushed_value_of_a_configured_quantity_is_stored_as_a_reading() -> None:
    rig = _pushing(_cover_open())
    rig.round()
    assert [(r.quantity, r.value, r.quality, r.attempts, r.route) for r in _pushed_readings(rig)] == [
        (E_IMPORT, Decimal("42.00"), Quality.OK, 0, ("hub",))
    ]


def test_a_pushed_value_of_a_quantity_the_meter_does_not_read_is_not_stored() -> None:
    rig = _pushing(_cover_open())
    rig.round()
    assert CURRENT not in {r.quantity for r in rig.store.readings()}


def test_a_report_from_an_unknown_address_is_stored_as_an_event() -> None:
    rig = _pushing(_cover_open("99"))
    rig.round()
    [event] = rig.store.events(kind="meter_event")
    assert (event.source, event.data["known"]) == (meter_key("bus", "", "99"), False)


def test_a_report_from_an_unknown_address_gives_no_readings() -> None:
    rig = _pushing(_cover_open("99"))
    rig.round()
    assert rig.store.readings(meter="99") == []


def test_a_pushed_float_is_recorded_as_a_driver_error_not_as_a_value() -> None:
    # Floats would silently round a bill: the channel that pushed one has a bug to report.
    rig = _pushing(_cover_open(measurements={E_IMPORT: Measurement(1.5, "kWh")}))  # type: ignore[arg-type]
    rig.round()
    assert [(r.quantity, r.value, r.quality) for r in _pushed_readings(rig)] == [
        (E_IMPORT, None, Quality.DRIVER_ERROR)
    ]


def test_a_pushed_float_does_not_take_the_channel_down() -> None:
    rig = _pushing(_cover_open(measurements={E_IMPORT: Measurement(1.5, "kWh")}))  # type: ignore[arg-type]
    report = rig.round()
    assert [(r.meter, r.quantity, r.quality) for r in report.readings] == [
        ("07", E_IMPORT, Quality.OK), ("07", VOLTAGE, Quality.OK), ("08", E_IMPORT, Quality.OK)
    ]


def test_a_report_the_runtime_cannot_read_does_not_disturb_the_transaction_it_came_in() -> None:
    garbled = Unsolicited("meter_event", address="07", protocol="toy", data=42)  # type: ignore[arg-type]
    rig = _pushing(garbled)
    report = rig.round()
    assert [(r.meter, r.quantity, r.quality) for r in report.readings] == [
        ("07", E_IMPORT, Quality.OK), ("07", VOLTAGE, Quality.OK), ("08", E_IMPORT, Quality.OK)
    ]


def test_a_pushed_value_with_a_meter_time_that_is_no_time_is_a_driver_error_and_the_event_is_kept() -> None:
    unusable = Measurement(Decimal("42.00"), "kWh", data_time="yesterday")  # type: ignore[arg-type]
    rig = _pushing(_cover_open(measurements={E_IMPORT: unusable}))
    rig.round()
    pushed = [r for r in rig.store.readings() if r.attempts == 0]
    assert [(r.quality, "data_time" in r.detail) for r in pushed] == [(Quality.DRIVER_ERROR, True)]
    assert [e.kind for e in rig.store.events() if e.source.endswith(":07")].count("meter_event") == 1


# --- a far end that asks for a meter ---------------------------------------------------------------------------


def _asked_for(rig: Rig, address: str) -> None:
    """The channel asks for ``address``'s requests (a module's AFN 14); returns once the
    runtime has stored that meter's readings and told observers."""

    async def module_asks(concentrator: Concentrator) -> None:
        collected = asyncio.Event()
        rig.plugin.on_collected = lambda readings: collected.set()
        sink = rig.transport.channels["bus"].sink
        assert sink is not None
        sink.wanted(address)
        await collected.wait()

    rig.run(module_asks)


def test_a_meter_the_channel_asks_for_is_read_and_stored() -> None:
    rig = Rig([meter("07"), meter("08")], PortTransport())
    _asked_for(rig, "08")
    assert [(r.meter, r.quantity, r.quality) for r in rig.store.readings()] == [("08", E_IMPORT, Quality.OK)]


def test_a_meter_the_channel_asks_for_is_read_without_a_round() -> None:
    rig = Rig([meter("07"), meter("08")], PortTransport())
    _asked_for(rig, "08")
    assert (rig.transport.channels["bus"].requests, rig.store.rounds()) == ([toy_request("08", E_IMPORT)], [])


def test_a_channel_asking_for_an_unknown_meter_is_only_logged(caplog: pytest.LogCaptureFixture) -> None:
    rig = Rig([meter("07")], PortTransport())

    async def module_asks_for_99(concentrator: Concentrator) -> None:
        sink = rig.transport.channels["bus"].sink
        assert sink is not None
        sink.wanted("99")
        await asyncio.sleep(10 * REPLY_DELAY)  # time enough for a read, were one started

    with caplog.at_level(logging.WARNING, logger="meterhub.runtime"):
        rig.run(module_asks_for_99)
    assert "channel bus asks for meter 99, which is not configured on it" in caplog.text
    assert (rig.transport.channels["bus"].requests, rig.store.readings()) == ([], [])


# --- routes from a site file -----------------------------------------------------------------------------------

SITE = """\
channels:
  bus: {transport: ports, port: mux0}
collectors:
  hub: {channel: bus}
  relay2: {collector: hub}
meters:
  - {address: "07", protocol: toy, collector: relay2, quantities: ["1-0:1.8.0"]}
  - {address: "08", protocol: toy, channel: bus, quantities: ["1-0:1.8.0"]}
"""


def _site_rig() -> Rig:
    transport = PortTransport()
    site = parse_site(SITE, filename="site.yaml", drivers={"toy": ToyDriver()}, transports={"ports": transport})
    return Rig([], transport, site=site)


def test_a_reading_records_the_route_its_meter_is_reached_by() -> None:
    report = _site_rig().round()
    [relayed] = [r for r in report.readings if r.meter == "07"]
    assert (relayed.route, relayed.depth, relayed.collector) == (("hub", "relay2"), 2, "relay2")


def test_the_round_report_groups_readings_by_collector_and_depth() -> None:
    report = _site_rig().round()
    readings = ({key: s["readings"] for key, s in report.collector_stats.items()},
                {key: s["readings"] for key, s in report.depth_stats.items()})
    assert readings == ({"bus": 1, "bus/relay2": 1}, {"0": 1, "2": 1})


def test_the_store_keeps_a_rounds_collector_and_depth_statistics() -> None:
    rig = _site_rig()
    report = rig.round()
    [stored] = rig.store.rounds()
    assert (stored["collector_stats"], stored["depth_stats"]) == (dict(report.collector_stats),
                                                                 dict(report.depth_stats))


# --- channels that cannot be made or opened ------------------------------------------------------------------


def test_a_channel_the_transport_cannot_make_is_reported_down_with_its_reason() -> None:
    rig = Rig([meter("07")], PortTransport(create_error=LinkError("no carrier module answers on /dev/bus")))
    rig.round()
    assert rig.channel_errors == {"bus": "no carrier module answers on /dev/bus"}


def test_the_meters_of_a_channel_the_transport_cannot_make_get_link_errors() -> None:
    rig = Rig([meter("07"), meter("08")], PortTransport(create_error=LinkError("no carrier module answers")))
    report = rig.round()
    assert [(r.meter, r.quality) for r in report.readings] == [("07", Quality.LINK_ERROR), ("08", Quality.LINK_ERROR)]
    assert all("no carrier module answers" in r.detail for r in report.readings)


def test_a_channel_whose_open_has_a_bug_is_reported_down_naming_the_bug() -> None:
    rig = Rig([meter("07")], PortTransport(open_error=RuntimeError("port map is None")))
    rig.round()
    assert rig.channel_errors == {"bus": "cannot open /dev/bus: RuntimeError: port map is None"}


def test_the_meters_of_a_channel_whose_open_has_a_bug_get_link_errors() -> None:
    rig = Rig([meter("07"), meter("08")], PortTransport(open_error=RuntimeError("port map is None")))
    report = rig.round()
    assert [(r.meter, r.quality) for r in report.readings] == [("07", Quality.LINK_ERROR), ("08", Quality.LINK_ERROR)]


def test_a_channel_whose_open_fails_is_closed_again() -> None:
    rig = Rig([meter("07")], PortTransport(open_error=RuntimeError("port map is None")))
    rig.round()
    assert rig.transport.channels["bus"].closed
