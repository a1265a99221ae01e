"""The CJ/T 188 driver end to end: simulated meters on a PtyBus, reached through the real
RS485 SerialLink and meterhub's Bus, exactly as a concentrator reaches a USB-RS485 adapter.

Meter clocks are injected, so every register is known when it is read. Lines run at
115200 Bd to keep the tests quick; the timing logic is the same at 2400 Bd.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import attrs
import pytest
from meterhub import plugins as plugins_module
from meterhub.api import MeterDriver
from meterhub.channels.halfduplex import HalfDuplexChannel
from meterhub.errors import (
    ChecksumError,
    FrameError,
    MeterError,
    MeterTimeout,
    NotSupported,
    TruncatedFrame,
    UnexpectedReply,
)
from meterhub.hookspecs import hookimpl
from meterhub.model import (
    ChannelConfig,
    Command,
    Measurement,
    Meter,
    Quality,
    Schedule,
    SerialSettings,
    Site,
)
from meterhub.plugins import STRICT_ENV, Plugins
from meterhub.protocols import cjt188, dlt645_sim
from meterhub.protocols import cjt188_data as data
from meterhub.protocols.cjt188 import STANDARD_TYPES, DiOrder, Frame, StreamDecoder
from meterhub.protocols.cjt188_driver import (
    MAX_RESPONSE_DELAY,
    Cjt188Driver,
    MeterOptions,
)
from meterhub.protocols.cjt188_sim import (
    SimulatedCjt188Meter,
    UsageProfile,
    make_meters,
    slow_delay,
)
from meterhub.protocols.dlt645_driver import Dlt645Driver
from meterhub.quantities import VOCABULARY, resolve
from meterhub.runtime import Concentrator
from meterhub.simulator import Fault, PtyBus
from meterhub.store import open_store
from meterhub.timing import answer_deadline

link_module = pytest.importorskip("meterhub.channels.serial", reason="the end-to-end tests run over the rs485 plugin's SerialLink")
SerialLink = link_module.SerialLink

BAUD = 115200
SETTINGS = SerialSettings(BAUD, 8, "E", 1)
START = datetime(2024, 3, 5, 12, 0, 0)
TURNAROUND = 0.01  # seconds the simulated meters take to answer (real ones: 20-500 ms)
VECTORS = json.loads((Path(__file__).parent / "data" / "cjt188.json").read_text("utf-8"))["vectors"]

T = TypeVar("T")


class Clock:
    """The wall clock the simulated meters live by; tests move it."""

    def __init__(self, start: datetime = START) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def _pty(devices: Sequence[Any], **kw: Any) -> PtyBus:
    kw.setdefault("turnaround", TURNAROUND)
    kw.setdefault("slow_delay", slow_delay(SETTINGS))
    return PtyBus(devices, settings=SETTINGS, **kw)


def _over_pty(pty: PtyBus, scenario: Callable[[Bus], Awaitable[T]]) -> T:
    """Run ``scenario(bus)`` against the simulated bus through a real SerialLink."""

    async def go() -> T:
        async with SerialLink("bus1", pty.port, SETTINGS) as link:
            return await scenario(HalfDuplexChannel("bus1", link))

    with pty:
        return asyncio.run(go())


def _meter(sim: SimulatedCjt188Meter | str, meter_type: int | str | None = None, **options: Any) -> Meter:
    address = sim if isinstance(sim, str) else sim.address
    if meter_type is None and not isinstance(sim, str):
        meter_type = sim.meter_type
    if meter_type is not None:
        options["meter_type"] = meter_type
    return Meter(address=address, protocol="cjt188", channel="bus1", options=options)


DRIVER = Cjt188Driver()
TIMEOUT = DRIVER.transaction_timeout(SETTINGS)


def _read_all(sim: SimulatedCjt188Meter, quantities: Sequence[str] | None = None, *, driver: Cjt188Driver = DRIVER,
              timeout: float = TIMEOUT, pty_kw: dict | None = None) -> tuple[list, PtyBus]:
    quantities = list(quantities if quantities is not None else data.quantities_for(sim.meter_type))
    pty = _pty([sim], **(pty_kw or {}))
    result = _over_pty(pty, lambda bus: driver.read_many(bus, _meter(sim), quantities, timeout))
    return result, pty


# --- every quantity of every kind of meter ----------------------------------------------------


@pytest.mark.parametrize(("meter_type", "current", "settlement"), [
    (0x10, "8-0:1.0.0", "8-0:1.0.1"),
    (0x11, "9-0:1.0.0", "9-0:1.0.1"),
    (0x30, "7-0:3.0.0", "7-0:3.0.1"),
])
def test_every_quantity_of_a_water_or_gas_meter_in_one_transaction(meter_type, current, settlement):
    clock = Clock()
    sim = SimulatedCjt188Meter("00000000001234", meter_type=meter_type, seed=3, clock=clock, clock_offset=timedelta(seconds=-42))
    clock.advance(hours=5)  # the registers have moved since the meter was installed
    expected = sim.record()
    results, pty = _read_all(sim)
    got = dict(zip(data.quantities_for(meter_type), results, strict=True))
    assert got == {
        current: Measurement(expected.current.value, "m3"),
        settlement: Measurement(expected.settlement.value, "m3"),
        "0-0:1.0.0": Measurement("2024-03-05T16:59:18", ""),  # the meter's clock, 42 s slow
        "0-0:96.3.10": Measurement("open", ""),
        "0-0:96.6.0": Measurement("false", ""),
        "0-0:97.97.0": Measurement("0000", ""),
    }
    assert expected.current.value > expected.settlement.value > 0
    assert pty.frames_in == 1  # one 901F read answered all six quantities


def test_every_quantity_of_a_heat_meter():
    clock = Clock()
    sim = SimulatedCjt188Meter("78330000000020", meter_type=0x20, seed=5, clock=clock)
    clock.advance(hours=30)
    r = sim.record()
    results, pty = _read_all(sim)
    got = dict(zip(data.quantities_for(0x20), results, strict=True))
    assert got == {
        "6-0:1.0.0": Measurement(r.current_heat.value, "kWh"),
        "6-0:1.0.1": Measurement(r.settlement_heat.value, "kWh"),
        "6-0:2.0.0": Measurement(r.volume.value, "m3"),
        "6-0:8.0.0": Measurement(r.heat_power.value, "kW"),
        "6-0:9.0.0": Measurement(r.flow_rate.value, "m3/h"),
        "6-0:10.0.0": Measurement(r.flow_temperature, "°C"),
        "6-0:11.0.0": Measurement(r.return_temperature, "°C"),
        "6-0:12.0.0": Measurement(r.flow_temperature - r.return_temperature, "K"),
        "0-0:96.8.0": Measurement(r.operating_hours, "h"),
        "0-0:1.0.0": Measurement("2024-03-06T18:00:00", ""),
        "0-0:96.3.10": Measurement("open", ""),
        "0-0:96.6.0": Measurement("false", ""),
        "0-0:97.97.0": Measurement("0000", ""),
    }
    assert r.heat_power.value > 0 and r.flow_temperature > r.return_temperature
    assert pty.frames_in == 1
    assert all(isinstance(m.value, (Decimal, str)) for m in results)
    assert all(VOCABULARY.resolve(obis) for obis in got)


@pytest.mark.parametrize(("energy_unit", "factor", "unit"), [
    (data.UNIT_MWH, Decimal(1000), "kWh"),
    (data.UNIT_GJ, Decimal(1), "GJ"),
])
def test_heat_in_other_units_is_reported_exactly(energy_unit, factor, unit):
    clock = Clock()
    sim = SimulatedCjt188Meter("00000000000021", meter_type=0x20, seed=6, clock=clock, energy_unit=energy_unit, energy_kwh=123456.0)
    shown = sim.record().current_heat.value
    (heat,), _ = _read_all(sim, ["6-0:1.0.0"])
    assert heat == Measurement(shown * factor, unit)


def test_a_cooling_meter_reports_on_the_heat_codes():
    sim = SimulatedCjt188Meter("00000000000022", meter_type=0x21, seed=7, clock=Clock())
    (difference, energy), _ = _read_all(sim, ["6-0:12.0.0", "6-0:1.0.0"])
    assert difference.value < 0 and difference.unit == "K"
    assert energy == Measurement(sim.record().current_heat.value, "kWh")


def test_litres_are_reported_as_cubic_metres():
    sim = SimulatedCjt188Meter("00000000000023", seed=8, clock=Clock(), volume_unit=data.UNIT_LITRE, volume_m3=12.5)
    (volume,), _ = _read_all(sim, ["8-0:1.0.0"])
    assert sim.record().current == data.Amount(Decimal("12500.00"), data.UNIT_LITRE)
    assert volume == Measurement(Decimal("12.50000"), "m3")


def test_a_quantity_the_meter_type_lacks_costs_no_transaction():
    sim = SimulatedCjt188Meter("00000000000024", seed=9, clock=Clock())
    results, pty = _read_all(sim, ["6-0:1.0.0", "1-0:1.8.0"])
    assert all(isinstance(r, NotSupported) for r in results)
    assert "cold water meter (10h) has no 6-0:1.0.0" in str(results[0])
    assert pty.frames_in == 0


def test_meter_type_given_as_a_hex_string():
    sim = SimulatedCjt188Meter("00000000000025", meter_type=0x30, seed=10, clock=Clock())
    pty = _pty([sim])
    got = _over_pty(pty, lambda bus: DRIVER.read(bus, _meter(sim, "30"), resolve("gas_volume"), TIMEOUT))
    assert got == Measurement(sim.record().current.value, "m3")


def test_the_settlement_value_is_the_register_at_the_settlement_date():
    clock = Clock(datetime(2024, 3, 31, 23, 0))
    sim = SimulatedCjt188Meter("00000000000029", seed=30, clock=clock, settlement_day=1, profile=UsageProfile("water", mean_flow=2.0))
    meter, quantities = _meter(sim), [resolve("water_volume"), resolve("water_volume_settlement")]

    async def scenario(bus: Bus) -> list:
        before = await DRIVER.read_many(bus, meter, quantities, TIMEOUT)
        clock.advance(hours=1)  # midnight into 1 April, the settlement day
        at_midnight = sim.record().current.value
        clock.advance(hours=2)
        return [before, at_midnight, await DRIVER.read_many(bus, meter, quantities, TIMEOUT)]

    (current_before, settlement_before), at_midnight, (current, settlement) = _over_pty(_pty([sim]), scenario)
    assert settlement_before.value < current_before.value < at_midnight  # March's settlement value; water flowed
    assert settlement.value == at_midnight < current.value  # the new settlement value: the register at 00:00


def test_a_meter_answering_in_the_other_di_order_is_read():
    sim = SimulatedCjt188Meter("00000000000026", seed=11, clock=Clock(), di_order="lsb_first")
    pty = _pty([sim])
    got = _over_pty(pty, lambda bus: DRIVER.read(bus, _meter(sim), resolve("water_volume"), TIMEOUT))
    assert got.value == sim.record().current.value


def test_lsb_first_meters_are_asked_in_their_order():
    class Recorder(SimulatedCjt188Meter):
        def handle(self, frame: Frame) -> list[bytes]:
            self.seen.append(frame)
            return super().handle(frame)

    sim = Recorder("00000000000027", seed=12, clock=Clock())
    sim.seen = []
    _over_pty(_pty([sim]), lambda bus: DRIVER.read(bus, _meter(sim, di_order="lsb_first"), resolve("water_volume"), TIMEOUT))
    assert sim.seen[0].data[:2] == b"\x1F\x90"


def test_an_unset_meter_clock_is_not_supported_but_the_volume_is_read():
    sim = SimulatedCjt188Meter("00000000000028", seed=13, clock=Clock(), clock_set=False)
    (clock, volume), _ = _read_all(sim, ["0-0:1.0.0", "8-0:1.0.0"])
    assert isinstance(clock, NotSupported) and "not set" in str(clock)
    assert volume.value == sim.record().current.value


# --- faults, abnormal replies ------------------------------------------------------------------

FAULT_ERRORS = {
    Fault.SILENCE: MeterTimeout,
    Fault.BAD_CHECKSUM: ChecksumError,
    Fault.TRUNCATED: TruncatedFrame,
    Fault.SLOW: MeterTimeout,
    Fault.WRONG_ADDRESS: UnexpectedReply,
}


@pytest.mark.parametrize("fault", list(FAULT_ERRORS), ids=lambda f: f.value)
def test_each_fault_fails_every_quantity_with_its_error(fault):
    sim = SimulatedCjt188Meter("00000000000031", meter_type=0x20, seed=14, clock=Clock(), fault=fault)
    results, _ = _read_all(sim, ["6-0:1.0.0", "0-0:96.3.10"])
    assert [type(r) for r in results] == [FAULT_ERRORS[fault]] * 2
    assert results[0] is results[1]


def test_noise_around_the_answer_is_skipped():
    sim = SimulatedCjt188Meter("00000000000032", seed=15, clock=Clock(), fault=Fault.NOISE)
    (volume,), _ = _read_all(sim, ["8-0:1.0.0"], pty_kw={"seed": 4})
    assert volume == Measurement(sim.record().current.value, "m3")


def test_slow_meter_answers_after_any_sane_timeout():
    assert slow_delay(SETTINGS) > TIMEOUT > MAX_RESPONSE_DELAY


def test_abnormal_reply_is_a_meter_error_with_the_status_word():
    sim = SimulatedCjt188Meter("00000000000033", seed=16, clock=Clock(), battery_low=True)
    sim.unsupported_dis.add(0x901F)
    results, _ = _read_all(sim, ["8-0:1.0.0", "0-0:96.6.0"])
    assert all(isinstance(r, MeterError) for r in results)
    assert results[0].code == 0x0004 and "battery low" in results[0].reason


def test_battery_low_and_stuck_valve_show_in_the_status():
    sim = SimulatedCjt188Meter("00000000000034", seed=17, clock=Clock(), battery_low=True)
    sim.valve_fault = True
    results, _ = _read_all(sim, ["0-0:96.6.0", "0-0:96.3.10", "0-0:97.97.0"])
    assert results == [Measurement("true", ""), Measurement("abnormal", ""), Measurement("0007", "")]


class _Plugin:
    """The CJ/T 188 driver registered through the public hook, as the built-in plugin will."""

    @hookimpl
    def meterhub_register_meter_drivers(self, register: Callable[[Any], None]) -> None:
        register(Cjt188Driver())


def test_a_reading_round_records_every_fault_with_its_quality(monkeypatch):
    from meterhub_rs485 import plugin as rs485_plugin

    monkeypatch.setattr(plugins_module, "DEFAULT_PLUGINS", ())
    monkeypatch.delenv(STRICT_ENV, raising=False)
    clock = Clock()
    faults = {  # the slow meter goes last: its late answer would hold the line for the next one
        "00000000000041": (None, Quality.OK),
        "00000000000042": (Fault.NOISE, Quality.OK),
        "00000000000043": (Fault.SILENCE, Quality.TIMEOUT),
        "00000000000044": (Fault.BAD_CHECKSUM, Quality.CHECKSUM_ERROR),
        "00000000000045": (Fault.TRUNCATED, Quality.FRAME_ERROR),
        "00000000000046": (Fault.WRONG_ADDRESS, Quality.UNEXPECTED_REPLY),
        "00000000000047": ("abnormal", Quality.METER_ERROR),
        "00000000000048": (Fault.SLOW, Quality.TIMEOUT),
    }
    sims = [SimulatedCjt188Meter(a, meter_type=0x30, seed=18, clock=clock, fault=f if isinstance(f, Fault) else None)
            for a, (f, _) in faults.items()]
    sims[6].unsupported_dis.add(0x901F)
    quantities = ("7-0:3.0.0", "0-0:96.3.10")
    sims[6].battery_low = True
    meters = tuple(Meter(address=s.address, protocol="cjt188", channel="bus1", quantities=quantities, timeout=0.4,
                         options={"meter_type": 0x30}) for s in sims)
    meters = (attrs.evolve(meters[0], quantities=(*quantities, "6-0:1.0.0")), *meters[1:])  # a gas meter has no heat
    pty = _pty(sims, seed=2)

    async def go():
        plugins = Plugins(load_entry_points=False, extra=[("cjt188-test", _Plugin()), ("rs485", rs485_plugin)])
        site = Site(channels={"bus1": ChannelConfig("bus1", "rs485", pty.port, SETTINGS)}, meters=meters,
                    schedule=Schedule(interval=60, retries=0, backoff_initial=100, backoff_max=300))
        async with Concentrator(site, plugins=plugins, store=open_store("sqlite:///:memory:")) as concentrator:
            return await concentrator.run_round()

    with pty:
        report = asyncio.run(go())
    qualities: dict[str, set[Quality]] = {}
    for reading in report.readings:
        qualities.setdefault(f"{reading.meter}/{reading.quantity}", set()).add(reading.quality)
    for address, (_fault, quality) in faults.items():
        got = qualities[f"{address}/7-0:3.0.0"]
        assert quality in got and got <= {quality, Quality.BACKED_OFF}, (address, got)
    assert qualities["00000000000041/6-0:1.0.0"] == {Quality.NOT_SUPPORTED}
    ok = {r.quantity: r for r in report.readings if r.meter == "00000000000041" and r.quality is Quality.OK}
    assert ok["7-0:3.0.0"].value == sims[0].record().current.value and ok["7-0:3.0.0"].unit == "m3"
    errors = [r for r in report.readings if r.quality is Quality.METER_ERROR]
    assert errors and errors[0].error_code == 0x0004  # ST of the abnormal reply: battery low


# --- the valve ----------------------------------------------------------------------------------


def test_closing_the_valve_stops_the_flow_and_opening_it_restarts_it():
    clock = Clock(datetime(2024, 3, 5, 6, 0))
    sim = SimulatedCjt188Meter("00000000000051", seed=19, clock=clock, profile=UsageProfile("water", mean_flow=0.5))
    meter = _meter(sim)
    quantities = [resolve("water_volume"), resolve("valve_state")]

    async def scenario(bus: Bus) -> list:
        seen = [await DRIVER.read_many(bus, meter, quantities, TIMEOUT)]
        clock.advance(hours=2)
        seen.append(await DRIVER.read_many(bus, meter, quantities, TIMEOUT))
        seen.append(await DRIVER.execute(bus, meter, Command(meter.address, "cjt188", "valve", {"action": "close"}), TIMEOUT))
        clock.advance(hours=3)
        seen.append(await DRIVER.read_many(bus, meter, quantities, TIMEOUT))
        seen.append(await DRIVER.execute(bus, meter, Command(meter.address, "cjt188", "valve", {"action": "open"}), TIMEOUT))
        clock.advance(hours=3)
        seen.append(await DRIVER.read_many(bus, meter, quantities, TIMEOUT))
        return seen

    first, flowing, closed, stopped, opened, again = _over_pty(_pty([sim]), scenario)
    assert flowing[0].value > first[0].value  # two morning hours of water
    assert closed == {"command": "valve", "meter": meter.address, "action": "close", "ok": True, "valve_state": "closed"}
    assert stopped == [flowing[0], Measurement("closed", "")]  # three hours later: not a drop more
    assert opened["valve_state"] == "open"
    assert again[0].value > stopped[0].value and again[1] == Measurement("open", "")


def test_valve_command_checks_its_action_before_sending():
    with pytest.raises(ValueError, match="'open' or 'close'"):
        asyncio.run(DRIVER.execute(None, _meter("00000000000052"), Command("x", "cjt188", "valve", {"action": "shut"}), 0.1))


def test_a_stuck_valve_refuses_the_command():
    sim = SimulatedCjt188Meter("00000000000053", seed=20, clock=Clock())
    sim.valve_fault = True
    command = Command(sim.address, "cjt188", "valve", {"action": "open"})
    with pytest.raises(MeterError, match="valve abnormal"):
        _over_pty(_pty([sim]), lambda bus: DRIVER.execute(bus, _meter(sim), command, TIMEOUT))


def test_read_and_write_address_commands():
    sim = SimulatedCjt188Meter("00000000000054", meter_type=0x20, seed=21, clock=Clock())

    async def scenario(bus: Bus) -> list:
        wildcard = _meter(cjt188.WILDCARD, 0x20)
        read = await DRIVER.execute(bus, wildcard, Command("-", "cjt188", "read_address", {}), TIMEOUT)
        written = await DRIVER.execute(bus, _meter(sim), Command("-", "cjt188", "write_address", {"address": "78330000000099"}), TIMEOUT)
        volume = await DRIVER.read(bus, _meter("78330000000099", 0x20), resolve("heat_volume"), TIMEOUT)
        return [read, written, volume]

    read, written, volume = _over_pty(_pty([sim]), scenario)
    assert read == {"command": "read_address", "meter": cjt188.WILDCARD, "address": "00000000000054", "meter_type": "20"}
    assert written == {"command": "write_address", "meter": "00000000000054", "address": "78330000000099",
                       "previous": "00000000000054", "ok": True}
    assert sim.address == "78330000000099" and volume.unit == "m3"


def test_unknown_command_is_not_supported():
    with pytest.raises(NotSupported, match="no command 'relay'; it knows read_address, valve, write_address"):
        asyncio.run(DRIVER.execute(None, _meter("00000000000055"), Command("x", "cjt188", "relay", {}), 0.1))


# --- scanning -------------------------------------------------------------------------------


def test_scan_finds_the_one_meter_on_a_point_to_point_link():
    sim = SimulatedCjt188Meter("78330011223344", meter_type=0x20, seed=22, clock=Clock())
    driver = Cjt188Driver(scan_types=(0x10, 0x20, 0x30))
    assert _over_pty(_pty([sim]), lambda bus: driver.scan(bus, 0.3)) == ["78330011223344"]


def test_scan_of_a_silent_line_is_empty():
    driver = Cjt188Driver(scan_types=(0x10, 0x30))
    assert _over_pty(_pty([]), lambda bus: driver.scan(bus, 0.1)) == []


def test_scan_finds_all_32_meters_of_a_multi_drop_bus():
    clock = Clock()
    types = STANDARD_TYPES[:32]  # one meter per type: 10h-19h, 20h-29h, 30h-39h, 40h, 41h
    sims = make_meters(32, first_address="00000000000100", meter_types=types, seed=23, clock=clock)
    found = _over_pty(_pty(sims), lambda bus: DRIVER.discover(bus, 0.25))
    assert found == [(s.meter_type, s.address) for s in sims]


# --- a bus shared with DL/T 645 meters --------------------------------------------------------


def test_dlt645_and_cjt188_meters_share_one_bus():
    clock = Clock()
    electricity = dlt645_sim.make_meters(3, seed=24, clock=clock)
    water = make_meters(3, first_address="00000000000200", meter_types=(0x10, 0x30, 0x20), seed=24, clock=clock)
    clock.advance(hours=7)
    dlt = Dlt645Driver()
    dlt_timeout = dlt.transaction_timeout(SETTINGS)

    async def scenario(bus: Bus) -> tuple[list, list]:
        energies, volumes = [], []
        for e, w in zip(electricity, water, strict=True):  # interleaved, so each driver reads right after the other
            energies.append(await dlt.read(bus, Meter(e.address, "dlt645", "bus1"), resolve("energy_import"), dlt_timeout))
            quantity = "6-0:2.0.0" if w.meter_type == 0x20 else data.quantities_for(w.meter_type)[0]
            volumes.append(await DRIVER.read(bus, _meter(w), resolve(quantity), TIMEOUT))
        return energies, volumes

    energies, volumes = _over_pty(_pty([*electricity, *water]), scenario)
    assert energies == [Measurement(e.energy(), "kWh") for e in electricity]
    expected = [w.record().volume.value if w.meter_type == 0x20 else w.record().current.value for w in water]
    assert [v.value for v in volumes] == expected


# --- interop: the meter's answers are captured frames -------------------------------------------


class ReplayMeter:
    """A SimDevice that answers requests with frames captured from real meters.

    ``answers`` maps a request function (01h read data, 03h read address) to the
    captured reply bytes; requests are kept so a test can compare them with captures.
    """

    protocol = "cjt188"

    def __init__(self, address: str, answers: dict[int, bytes], meter_type: int = 0x10) -> None:
        self.address = address
        self.meter_type = meter_type
        self.answers = answers
        self.fault = None
        self.requests: list[Frame] = []

    def new_decoder(self) -> StreamDecoder:
        return StreamDecoder()

    def handle(self, frame: Frame) -> list[bytes]:
        if frame.is_reply or frame.meter_type != self.meter_type or not cjt188.address_matches(frame.address, self.address):
            return []
        self.requests.append(frame)
        answer = self.answers.get(frame.function)
        return [answer] if answer is not None else []


def _vector(index: int) -> bytes:
    return bytes.fromhex(VECTORS[index]["hex"])


METERING_REPLIES = [i for i, v in enumerate(VECTORS) if v["checksum_verified"] and v["checker"]["C"] == "81"]


@pytest.mark.parametrize("index", METERING_REPLIES)
def test_captured_metering_replies_read_through_the_driver(index):
    reply = cjt188.decode(_vector(index))
    body = cjt188.parse_body(reply)
    replay = ReplayMeter(reply.address, {0x01: _vector(index)})
    driver = Cjt188Driver(ser=body.ser)  # the SER the capture's master used
    quantities = list(data.quantities_for(0x10))
    results = _over_pty(_pty([replay]), lambda bus: driver.read_many(bus, _meter(reply.address, 0x10), quantities, TIMEOUT))
    expected = data.measurements(0x10, data.decode_record(cjt188.Family.WATER, body.payload), quantities)
    assert [repr(r) for r in results] == [repr(e) for e in expected]
    assert isinstance(results[0], Measurement) and results[0].unit == "m3"
    assert len(replay.requests) == 1 and cjt188.parse_body(replay.requests[0]).ser == body.ser


def test_captured_exchange_with_a_meter_that_swaps_the_di_order():
    """FoxEdge: the master asked 1F 90 (vector 5), the meter answered 90 1F with 123.00 m³ (vector 6)."""
    request = cjt188.decode(_vector(5))
    replay = ReplayMeter(request.address, {0x01: _vector(6)})
    driver = Cjt188Driver(ser=0)
    meter = _meter(request.address, 0x10, di_order="lsb_first")
    volume = _over_pty(_pty([replay]), lambda bus: driver.read(bus, meter, resolve("water_volume"), TIMEOUT))
    assert volume == Measurement(Decimal("123.00"), "m3")
    assert replay.requests == [request]  # byte for byte the captured request


def test_captured_friendcom_exchange():
    """The Friendcom test pair: request vector 1, reply vector 3 (0.00 m³, 2017-01-09 17:20:06)."""
    request = cjt188.decode(_vector(1))
    replay = ReplayMeter(request.address, {0x01: _vector(3)})
    driver = Cjt188Driver(ser=1)
    meter = _meter(request.address, 0x10)
    got = _over_pty(_pty([replay]), lambda bus: driver.read_many(bus, meter, [resolve("water_volume"), resolve("clock")], TIMEOUT))
    assert got == [Measurement(Decimal("0.00"), "m3"), Measurement("2017-01-09T17:20:06", "")]
    assert replay.requests == [request]


def test_captured_read_address_reply_is_found_by_a_scan():
    """The wildcard read-address request (vector 21) and a meter's reply (vector 22)."""
    replay = ReplayMeter("34129078563412", {0x03: _vector(22)})
    driver = Cjt188Driver(ser=1, scan_types=(0x10,))
    assert _over_pty(_pty([replay]), lambda bus: driver.scan(bus, 0.3)) == ["34129078563412"]
    assert replay.requests == [cjt188.decode(_vector(21))]


def test_captured_reply_with_the_wrong_ser_is_not_taken():
    replay = ReplayMeter("00201510270588", {0x01: _vector(3)})  # SER 1
    driver = Cjt188Driver(ser=2)
    with pytest.raises(UnexpectedReply):
        _over_pty(_pty([replay]), lambda bus: driver.read(bus, _meter("00201510270588", 0x10), resolve("water_volume"), 0.3))
    lenient = _meter("00201510270588", 0x10, check_ser=False)
    got = _over_pty(_pty([replay]), lambda bus: driver.read(bus, lenient, resolve("water_volume"), 0.3))
    assert got == Measurement(Decimal("0.00"), "m3")


# --- the wildcard search, in memory ----------------------------------------------------------------


#: How long an in-memory scan probe waits. The Bus counts a transaction's timeout from
#: the start of its write, and this link's write runs the simulated meters: 3 ms was
#: sometimes spent in the write alone on a loaded machine, and a collision went unheard.
SCAN_WAIT = 0.03


class SimLink:
    """A Link whose far end is simulated meters in this process: answers arrive at once,
    and answers of several meters to one request collide into an unreadable burst."""

    def __init__(self, devices: Sequence[Any]) -> None:
        self.name = "sim"
        self.settings = SETTINGS
        self.devices = list(devices)
        self.requests = 0
        self._decoder = StreamDecoder()
        self._rx = bytearray()

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def write(self, raw: bytes) -> None:
        for frame in self._decoder.feed(raw):
            if not isinstance(frame, Frame):
                continue
            self.requests += 1
            answers = [a for d in self.devices for a in d.handle(frame)]
            if len(answers) == 1:
                self._rx += answers[0]
            elif answers:  # wired-AND of the drivers, and the end byte lost in the fight
                burst = bytearray(b"\xff" * max(map(len, answers)))
                for a in answers:
                    for i, b in enumerate(a):
                        burst[i] &= b
                burst[-1] = 0x00
                self._rx += burst

    async def read(self, timeout: float) -> bytes:
        if not self._rx:
            await asyncio.sleep(timeout)
            return b""
        out, self._rx = bytes(self._rx), bytearray()
        return out

    async def reset_input(self) -> None:
        self._rx.clear()

    async def apply_settings(self, settings: SerialSettings) -> None:
        self.settings = settings


SAME_TYPE = ["00000000000001", "00000000000002", "00000000000101", "00000000000201", "78330000000301"]


def _search(addresses: list[str], **driver_kw: Any) -> tuple[list[tuple[int, str]], SimLink]:
    clock = Clock()
    sims = [SimulatedCjt188Meter(a, seed=25, clock=clock) for a in addresses]
    sims.append(SimulatedCjt188Meter("00000000000777", meter_type=0x20, seed=25, clock=clock))
    link = SimLink(sims)
    driver = Cjt188Driver(scan_types=(0x10, 0x20), **driver_kw)
    return asyncio.run(driver.discover(HalfDuplexChannel("sim", link), SCAN_WAIT)), link


def test_several_meters_of_one_type_are_singled_out_by_wildcard_search():
    found, link = _search(SAME_TYPE)
    assert sorted(found) == sorted([(0x10, a) for a in SAME_TYPE] + [(0x20, "00000000000777")])
    # AA×7 (garbled), A0 = 00..99 (01 garbled: four meters end in 01), A1 = 00..99, one for 20h
    assert link.requests == 1 + 100 + 100 + 1


def test_without_the_search_a_collision_is_reported():
    with pytest.raises(FrameError, match="several meters answering at once"):
        asyncio.run(Cjt188Driver(scan_types=(0x10,), scan_search=False).discover(
            HalfDuplexChannel("sim", SimLink([SimulatedCjt188Meter(a, seed=26, clock=Clock()) for a in SAME_TYPE[:2]])), SCAN_WAIT))


def test_collision_left_unresolved_still_returns_the_others(caplog):
    found, _ = _search(SAME_TYPE[:2], scan_search=False)
    assert found == [(0x20, "00000000000777")]
    assert "stayed garbled" in caplog.text


# --- configuration and contract -------------------------------------------------------------


def test_driver_satisfies_the_meter_driver_protocol():
    assert isinstance(DRIVER, MeterDriver)
    assert DRIVER.name == "cjt188" and DRIVER.default_settings == SerialSettings(2400, 8, "E", 1)


@pytest.mark.parametrize(("given", "expected"), [
    ("12345678901234", "12345678901234"),
    (1234, "00000000001234"),
    (" 78330011223344 ", "78330011223344"),
    ("4B440011223344", "4B440011223344"),  # a manufacturer code in hex
    ("aaaaaaaaaaaaaa", cjt188.WILDCARD),
])
def test_normalize_address(given, expected):
    assert DRIVER.normalize_address(given) == expected


@pytest.mark.parametrize(("given", "message"), [
    ("", "empty"),
    ("123456789012345", "at most 14"),
    ("00000000001A34", "serial \\(last 10 characters\\) must be decimal digits, found '1A'"),
    ("G0000000001234", "manufacturer code"),
])
def test_normalize_address_says_why(given, message):
    with pytest.raises(ValueError, match=message):
        DRIVER.normalize_address(given)


def test_validate_meter_accepts_a_good_entry():
    meter = Meter("78330011223344", "cjt188", "bus1", quantities=("6-0:1.0.0", "6-0:10.0.0"), options={"meter_type": "20"})
    assert DRIVER.validate_meter(meter) == []
    assert DRIVER.validate_meter(Meter("1", "cjt188", "bus1", quantities=("8-0:1.0.0",))) == []  # default: cold water


def test_validate_meter_reports_every_problem_with_its_key():
    meter = Meter("12X", "cjt188", "bus1", quantities=("6-0:1.0.0",),
                  options={"meter_type": 0x10, "di_order": "big", "preamble": 99, "check_ser": "perhaps", "colour": 1})
    problems = DRIVER.validate_meter(meter)
    keys = [key for key, _ in problems]
    assert keys == ["address", "options.di_order", "options.preamble", "options.check_ser", "options.colour", "quantities"]
    assert "cold water meter (10h) cannot read 6-0:1.0.0 (it can read 8-0:1.0.0" in problems[-1][1]


@pytest.mark.parametrize(("meter_type", "message"), [
    (0x50, "the number 80 (50h), not a CJ/T 188 meter type"),
    ("50", "50h is not a CJ/T 188 meter type"),
    ("zz", "must be a type byte in hex"),
    (True, "must be a type byte"),
    (20, 'the number 20 (14h), not a CJ/T 188 meter type; types are hex: write "20" for the heat meter (20h)'),
    (0x40, "no metering-data layout for types 40h-49h"),
])
def test_validate_meter_checks_the_meter_type(meter_type, message):
    problems = DRIVER.validate_meter(Meter("1", "cjt188", "bus1", options={"meter_type": meter_type}))
    assert [key for key, _ in problems] == ["options.meter_type"] and message in problems[0][1]


def test_options_given_as_command_line_text_are_read():
    meter = Meter("1", "cjt188", "bus1", options={"meter_type": "0x20", "di_order": "LSB_FIRST", "preamble": "2", "check_ser": "no"})
    assert DRIVER.validate_meter(meter) == []
    assert DRIVER.meter_options(meter) == MeterOptions(0x20, DiOrder.LSB_FIRST, 2, False)
    with pytest.raises(ValueError, match="meter 1: options.check_ser: must be true or false, not 'maybe'"):
        DRIVER.meter_options(Meter("1", "cjt188", "bus1", options={"check_ser": "maybe"}))


def test_scan_takes_meter_types_and_the_search_switch_as_options():
    found, link = _search(SAME_TYPE[:2])
    assert len(found) == 3 and link.requests == 1 + 100 + 1
    sims = [SimulatedCjt188Meter(a, seed=27, clock=Clock()) for a in SAME_TYPE[:2]]
    sims.append(SimulatedCjt188Meter("00000000000777", meter_type=0x30, seed=27, clock=Clock()))
    link = SimLink(sims)
    assert asyncio.run(DRIVER.scan(HalfDuplexChannel("sim", link), SCAN_WAIT, meter_type="30")) == ["00000000000777"]
    assert link.requests == 1
    with pytest.raises(FrameError, match="stayed garbled"):
        asyncio.run(DRIVER.scan(HalfDuplexChannel("sim", SimLink(sims)), SCAN_WAIT, meter_type="10", search="false"))
    link = SimLink(sims)
    assert asyncio.run(DRIVER.scan(HalfDuplexChannel("sim", link), SCAN_WAIT, meter_type=[0x30, "10"], search="no")) == ["00000000000777"]


def test_a_scan_probe_waits_for_a_short_answer_only():
    slow = SerialSettings(2400, 8, "E", 1)
    assert MAX_RESPONSE_DELAY < DRIVER.scan_timeout(slow) < DRIVER.transaction_timeout(slow)


def test_transaction_timeout_allows_the_response_delay_and_the_start_of_the_reply():
    slow = SerialSettings(2400, 8, "E", 1)
    assert DRIVER.transaction_timeout(slow) == answer_deadline(
        slow, request_len=16 + 13 + 3 + 7, max_response_delay=0.5, header_len=4 + 1)
    assert DRIVER.transaction_timeout(slow) > DRIVER.transaction_timeout(SETTINGS) > MAX_RESPONSE_DELAY


def test_every_supported_quantity_is_in_the_vocabulary():
    assert all(obis in VOCABULARY for obis in DRIVER.supported_quantities())


# --- the simulator as `meterhub sim bus` and the demo use it -----------------------------------


def test_simulator_puts_meters_on_a_mixed_bus_that_their_site_entries_read():
    from meterhub.api import MeterSimulator
    from meterhub.protocols.cjt188_sim import Cjt188Simulator
    from meterhub.protocols.dlt645_sim import Dlt645Simulator
    from meterhub.simsite import MeterSpec, start_bus

    simulator = Cjt188Simulator()
    assert isinstance(simulator, MeterSimulator)
    specs = [MeterSpec.parse("cjt188=3:meter_type=10+20+30"), MeterSpec("dlt645", 2)]
    sim = start_bus({"cjt188": simulator, "dlt645": Dlt645Simulator()}, specs, seed=5, baudrate=BAUD)
    try:
        entries = [e for e in sim.entries if e["protocol"] == "cjt188"]
        assert [e["options"] for e in entries] == [{"meter_type": "10"}, {"meter_type": "20"}, {"meter_type": "30"}]
        meters = [Meter(e["address"], "cjt188", "bus1", quantities=tuple(resolve(q).obis for q in e["quantities"]),
                        options=e["options"]) for e in entries]
        assert [DRIVER.validate_meter(m) for m in meters] == [[], [], []]

        async def scenario() -> list:
            async with SerialLink("bus1", sim.port, SETTINGS) as link:
                bus = HalfDuplexChannel("bus1", link)
                return [await DRIVER.read_many(bus, m, [resolve(q) for q in m.quantities], TIMEOUT) for m in meters]

        results = asyncio.run(scenario())
    finally:
        sim.stop()
    assert [len(r) for r in results] == [6, 13, 6]
    assert all(isinstance(m, Measurement) for r in results for m in r), results


def test_simulator_refuses_what_it_cannot_make():
    from meterhub.protocols.cjt188_sim import Cjt188Simulator

    with pytest.raises(ValueError, match="unknown cjt188 simulator option\\(s\\): colour"):
        Cjt188Simulator().make(1, options={"colour": "red"})
    with pytest.raises(ValueError, match="cannot read a custom meter \\(40h\\)"):
        Cjt188Simulator().make(1, options={"meter_type": "40"})
    with pytest.raises(ValueError, match="not a CJ/T 188 meter type"):
        Cjt188Simulator().make(1, options={"meter_type": "55"})
