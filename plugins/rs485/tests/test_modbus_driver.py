"""The ``modbus`` driver against simulated meters on a PtyBus, over the real SerialLink.

Every shipped profile is simulated and read back exactly; batching is checked by counting
the requests on the wire (the Bus trace); exception responses, every fault mode, a mixed
DL/T 645 + Modbus line and a unit-id sweep of 32 meters run end to end.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from meterhub.channels.halfduplex import HalfDuplexChannel, WireRecord
from meterhub.errors import ChecksumError, ConfigError, MeterError, MeterTimeout, NotSupported, TruncatedFrame, UnexpectedReply
from meterhub.model import Measurement, Meter, SerialSettings
from meterhub.protocols.dlt645_driver import Dlt645Driver
from meterhub.protocols.dlt645_sim import SimulatedMeter as Dlt645Meter
from meterhub.quantities import resolve
from meterhub.simulator import Fault, PtyBus
from meterhub.channels.serial import SerialLink
from meterhub_rs485.modbus import DEFAULT_MAX_GAP, ModbusDriver, StreamDecoder, plan_reads, read_request
from meterhub_rs485.modbus_profiles import parse_profile, shipped_profiles
from meterhub_rs485.modbus_sim import SimulatedModbusMeter, make_modbus_meters

FAST = SerialSettings(115200, 8, "N", 1)
FIXED = datetime(2024, 6, 1, 19, 30, 0)  # an evening: the households draw power
TIMEOUT = 0.3  # per transaction; only the silent cases wait it out
TURNAROUND = 0.002
SHIPPED = sorted(shipped_profiles())


def fixed_clock() -> datetime:
    return FIXED


@contextmanager
def pty_bus(devices: Sequence[Any], **options: Any) -> Iterator[PtyBus]:
    options.setdefault("turnaround", TURNAROUND)
    with PtyBus(devices, settings=FAST, **options) as bus:
        yield bus


def on_the_wire(ptybus: PtyBus, scenario: Callable[[Bus, list[WireRecord]], Awaitable[Any]]) -> Any:
    """Run ``scenario(bus, trace)`` on a Bus over the real SerialLink to the pty."""

    async def main() -> Any:
        trace: list[WireRecord] = []
        async with SerialLink("bus1", ptybus.port, FAST) as link:
            return await scenario(HalfDuplexChannel("bus1", link, trace=trace.append), trace)

    return asyncio.run(main())


def requests(trace: list[WireRecord]) -> int:
    return sum(1 for record in trace if record.direction == "tx")


def meter_for(sim: SimulatedModbusMeter, profile: str | None = None, **options: Any) -> Meter:
    return Meter(
        address=sim.address,
        protocol="modbus",
        channel="bus1",
        quantities=tuple(sim.profile.points),
        options={"profile": profile or sim.profile.name, **options},
    )


def read_all(ptybus: PtyBus, sim: SimulatedModbusMeter, driver: ModbusDriver | None = None, **options: Any):
    driver = driver or ModbusDriver()
    meter = meter_for(sim, **options)

    async def scenario(bus: Bus, trace: list[WireRecord]):
        results = await driver.read_many(bus, meter, [resolve(q) for q in meter.quantities], TIMEOUT)
        return results, requests(trace)

    return on_the_wire(ptybus, scenario)


# --- every shipped profile, read exactly ----------------------------------------------


@pytest.mark.parametrize("name", SHIPPED)
def test_each_shipped_profile_reads_every_quantity_exactly(name):
    sim = SimulatedModbusMeter(7, name, clock=fixed_clock, seed=3)
    with pty_bus([sim]) as ptybus:
        results, sent = read_all(ptybus, sim)
    expected = sim.values()
    points = sim.profile.points
    got = dict(zip(points, results, strict=True))
    assert got == {obis: Measurement(expected[obis], points[obis].unit) for obis in points}
    assert all(isinstance(m.value, Decimal) for m in results)
    assert sent == len(plan_reads(points.values(), sim.profile, max_gap=sim.profile.max_gap or DEFAULT_MAX_GAP))


def test_the_simulated_values_are_plausible_readings():
    sim = SimulatedModbusMeter(1, "eastron-sdm630", clock=fixed_clock)
    values = sim.values()
    assert all(220 < values[q] < 235 for q in ("1-0:32.7.0", "1-0:52.7.0", "1-0:72.7.0"))
    assert Decimal("49.9") < values["1-0:14.7.0"] < Decimal("50.1")
    assert Decimal("0.85") < values["1-0:13.7.0"] <= 1
    assert values["1-0:1.7.0"] == pytest.approx(sum(values[q] for q in ("1-0:21.7.0", "1-0:41.7.0", "1-0:61.7.0")), rel=Decimal("0.0001"))


def test_one_quantity_through_read():
    sim = SimulatedModbusMeter(12, "chint-ddsu666", clock=fixed_clock)
    meter = meter_for(sim)
    with pty_bus([sim]) as ptybus:
        measurement = on_the_wire(ptybus, lambda bus, trace: ModbusDriver().read(bus, meter, resolve("voltage_l1"), TIMEOUT))
    assert measurement == Measurement(sim.values()["1-0:32.7.0"], "V")


def test_energy_registers_advance_with_the_clock():
    now = [FIXED]
    sim = SimulatedModbusMeter(3, "abb-b23", clock=lambda: now[0])
    meter = meter_for(sim)
    driver = ModbusDriver()

    async def scenario(bus: Bus, trace):
        first = await driver.read(bus, meter, resolve("energy_import"), TIMEOUT)
        now[0] += timedelta(hours=2)
        second = await driver.read(bus, meter, resolve("energy_import"), TIMEOUT)
        return first.value, second.value

    with pty_bus([sim]) as ptybus:
        before, after = on_the_wire(ptybus, scenario)
    assert after > before + 1  # two evening hours of a small business load
    assert after == sim.values()["1-0:1.8.0"]


# --- batching ------------------------------------------------------------------------------


def test_neighbouring_registers_share_one_request():
    sim = SimulatedModbusMeter(1, "eastron-sdm630", clock=fixed_clock)
    with pty_bus([sim]) as ptybus:
        results, sent = read_all(ptybus, sim)
    assert not [r for r in results if isinstance(r, Exception)]
    # 29 quantities in three reads: 0x0000..0x004F, the neutral current, 0x0156..0x0165
    assert sent == 3
    assert sim.reads == [(4, 0x0000, 80), (4, 0x00E0, 2), (4, 0x0156, 16)]


def test_only_the_quantities_asked_for_are_read():
    sim = SimulatedModbusMeter(1, "eastron-sdm630", clock=fixed_clock)
    meter = meter_for(sim)

    async def scenario(bus: Bus, trace):
        wanted = [resolve(q) for q in ("voltage_l1", "voltage_l2", "voltage_l3", "energy_import")]
        return await ModbusDriver().read_many(bus, meter, wanted, TIMEOUT), requests(trace)

    with pty_bus([sim]) as ptybus:
        results, sent = on_the_wire(ptybus, scenario)
    assert [r.unit for r in results] == ["V", "V", "V", "kWh"]
    # voltages 0x0000..0x0005 and import 0x0048: a 66-register gap is beyond max_gap 32
    assert sent == 2
    assert sim.reads == [(4, 0x0000, 6), (4, 0x0048, 2)]


ACME = """
vendor: Acme
max_registers: {max_registers}
batching: {batching}
max_gap: 4
forbidden: [{{function: 3, start: 0x0010, end: 0x0010}}]
defaults: {{function: 3, type: u16, scale: 0.1}}
quantities:
  "1-0:32.7.0": {{address: 0x0000}}
  "1-0:52.7.0": {{address: 0x0001}}
  "1-0:72.7.0": {{address: 0x0002}}
  "1-0:31.7.0": {{address: 0x0004, scale: 0.01}}
  "1-0:51.7.0": {{address: 0x000F, scale: 0.01}}
  "1-0:71.7.0": {{address: 0x0011, scale: 0.01}}
"""


def _acme(max_registers: int = 125, batching: bool = True):
    return parse_profile(ACME.format(max_registers=max_registers, batching=str(batching).lower()), "acme-m3.yaml")


@pytest.mark.parametrize(
    ("max_registers", "batching", "reads"),
    [
        # 0x0000..0x0004 in one (gap 1), 0x000F alone (gap 10), 0x0011 alone (0x0010 is forbidden)
        (125, True, [(3, 0x0000, 5), (3, 0x000F, 1), (3, 0x0011, 1)]),
        # at most 2 registers a request
        (2, True, [(3, 0x0000, 2), (3, 0x0002, 1), (3, 0x0004, 1), (3, 0x000F, 1), (3, 0x0011, 1)]),
        # batching off: one request per quantity
        (125, False, [(3, a, 1) for a in (0x0000, 0x0001, 0x0002, 0x0004, 0x000F, 0x0011)]),
    ],
)
def test_batches_respect_max_registers_gaps_forbidden_registers_and_batching(max_registers, batching, reads):
    profile = _acme(max_registers, batching)
    sim = SimulatedModbusMeter(5, profile, clock=fixed_clock, max_gap=16)
    driver = ModbusDriver(profiles={"acme-m3": profile})
    with pty_bus([sim]) as ptybus:
        results, sent = read_all(ptybus, sim, driver)
    assert sim.reads == reads and sent == len(reads)
    assert [r.value for r in results] == list(sim.values().values())


def test_a_meter_option_widens_the_gap():
    profile = _acme()
    sim = SimulatedModbusMeter(5, profile, clock=fixed_clock, max_gap=16)
    driver = ModbusDriver(profiles={"acme-m3": profile})
    with pty_bus([sim]) as ptybus:
        _, sent = read_all(ptybus, sim, driver, max_gap=12)
    assert sim.reads == [(3, 0x0000, 16), (3, 0x0011, 1)] and sent == 2


def test_a_batch_the_meter_refuses_is_read_quantity_by_quantity():
    # the meter answers exception 02 to a read over its unmapped registers
    sim = SimulatedModbusMeter(5, "chint-dtsu666", clock=fixed_clock, max_gap=0)
    with pty_bus([sim]) as ptybus:
        results, sent = read_all(ptybus, sim)
    expected = sim.values()
    assert [r.value for r in results] == [expected[q] for q in sim.profile.points]
    # the profile's max_gap 8 joins ImpEp 0x101E and ExpEp 0x1028 into one read of 12
    # registers; this meter refuses it, so the two are read alone: 1 refused + 6 served
    assert sim.reads == [(3, 0x101E, 2), (3, 0x1028, 2), (3, 0x2006, 16), (3, 0x2016, 6), (3, 0x202A, 8), (3, 0x2044, 2)]
    assert sent == 7


# --- exception responses --------------------------------------------------------------------


def test_an_exception_response_is_a_meter_error_with_its_code():
    sim = SimulatedModbusMeter(9, "eastron-sdm120", clock=fixed_clock)

    async def scenario(bus: Bus, trace):
        with pytest.raises(MeterError) as info:
            await ModbusDriver().read_registers(bus, 9, 4, 0x7000, 2, TIMEOUT)
        return info.value

    with pty_bus([sim]) as ptybus:
        error = on_the_wire(ptybus, scenario)
    assert (error.code, error.reason) == (2, "illegal data address")
    assert "exception 02 (illegal data address)" in str(error)


def test_a_meter_of_another_model_answers_exceptions_for_every_quantity():
    sim = SimulatedModbusMeter(4, "chint-ddsu666", clock=fixed_clock)  # configured as an SDM120
    meter = meter_for(sim, profile="eastron-sdm120")

    async def scenario(bus: Bus, trace):
        return await ModbusDriver().read_many(bus, meter, [resolve("voltage_l1"), resolve("frequency")], TIMEOUT)

    with pty_bus([sim]) as ptybus:
        results = on_the_wire(ptybus, scenario)
    assert [(type(r), r.code) for r in results] == [(MeterError, 2), (MeterError, 2)]


def test_a_read_too_long_for_the_meter_is_illegal_data_value():
    sim = SimulatedModbusMeter(2, "chint-ddsu666", clock=fixed_clock)  # max_registers 16

    async def scenario(bus: Bus, trace):
        with pytest.raises(MeterError) as info:
            await ModbusDriver().read_registers(bus, 2, 3, 0x2000, 20, TIMEOUT)
        return info.value.code

    with pty_bus([sim]) as ptybus:
        assert on_the_wire(ptybus, scenario) == 3


# --- faults ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (Fault.SILENCE, MeterTimeout),
        (Fault.BAD_CHECKSUM, ChecksumError),
        (Fault.TRUNCATED, TruncatedFrame),
        (Fault.SLOW, MeterTimeout),
        (Fault.WRONG_ADDRESS, UnexpectedReply),
    ],
)
def test_a_faulty_meter_gives_the_telling_error(fault, error):
    sim = SimulatedModbusMeter(6, "eastron-sdm630", clock=fixed_clock, fault=fault)
    meter = meter_for(sim)
    with pty_bus([sim], slow_delay=1.0) as ptybus, pytest.raises(error):
        on_the_wire(ptybus, lambda bus, trace: ModbusDriver().read(bus, meter, resolve("voltage_l1"), TIMEOUT))
    if fault is Fault.SILENCE:
        assert sim.requests == 0  # the bus keeps a silent device from even seeing requests
    else:
        assert sim.requests == 1


def test_noise_around_the_answer_is_skipped():
    sim = SimulatedModbusMeter(6, "eastron-sdm630", clock=fixed_clock, fault=Fault.NOISE)
    with pty_bus([sim], seed=11) as ptybus:
        results, _ = read_all(ptybus, sim)
    expected = sim.values()
    assert [r.value for r in results] == [expected[q] for q in sim.profile.points]


def test_a_failed_batch_fails_each_of_its_quantities_and_nothing_else_is_raised():
    sim = SimulatedModbusMeter(6, "chint-ddsu666", clock=fixed_clock, fault=Fault.BAD_CHECKSUM)
    with pty_bus([sim]) as ptybus:
        results, sent = read_all(ptybus, sim)
    assert len(results) == len(sim.profile.points) and all(isinstance(r, ChecksumError) for r in results)
    # 0x2000..0x200F in one request; the energies 0x4000 and 0x400A are 8 registers apart,
    # beyond the profile's max_gap 2: three requests, none retried as single reads
    assert sim.reads == [(3, 0x2000, 16), (3, 0x4000, 2), (3, 0x400A, 2)] and sent == 3


def test_broadcast_is_never_answered():
    sim = SimulatedModbusMeter(1, "eastron-sdm120", clock=fixed_clock)

    async def scenario(bus: Bus, trace):
        with pytest.raises(MeterTimeout):
            await bus.transact(read_request(0, 4, 0, 2), StreamDecoder(), timeout=0.1)
        with pytest.raises(ValueError, match="broadcast"):
            await ModbusDriver().read_registers(bus, 0, 4, 0, 2, TIMEOUT)

    with pty_bus([sim]) as ptybus:
        on_the_wire(ptybus, scenario)
        assert ptybus.frames_in == 1  # the broadcast was received, and deliberately not answered
    assert sim.requests == 0


# --- a mixed line, and a sweep ----------------------------------------------------------------


def test_modbus_and_dlt645_meters_share_one_line():
    dlt = [Dlt645Meter(f"00000000000{i}", clock=fixed_clock) for i in (1, 2)]
    mb = make_modbus_meters(3, ["eastron-sdm120", "chint-dtsu666", "abb-b23"], first_unit=10, clock=fixed_clock)
    dlt_settings = SerialSettings(115200, 8, "E", 1)  # the pty carries it as 8N1 (link notes)
    dlt_driver, mb_driver = Dlt645Driver(), ModbusDriver()

    async def scenario(bus: Bus, trace):
        out = []
        for _ in range(2):
            for meter in dlt:
                config = Meter(address=meter.address, protocol="dlt645", channel="bus1", settings=dlt_settings)
                out.append(await dlt_driver.read(bus, config, resolve("energy_import"), TIMEOUT))
            for sim in mb:
                out.append(await mb_driver.read_many(bus, meter_for(sim), [resolve(q) for q in sim.profile.points], TIMEOUT))
        return out, requests(trace)

    with pty_bus([*dlt, *mb]) as ptybus:
        results, sent = on_the_wire(ptybus, scenario)
        frames_in = ptybus.frames_in
    dlt_reads = [r for r in results if isinstance(r, Measurement)]
    mb_reads = [r for r in results if isinstance(r, list)]
    assert len(dlt_reads) == 4 and all(r.unit == "kWh" and r.value > 0 for r in dlt_reads)
    for sim, values in zip(itertools.cycle(mb), mb_reads):
        assert [m.value for m in values] == list(sim.values().values())
    # each request was decoded once, by its own protocol's decoder: DL/T 645 traffic made
    # no Modbus frames and Modbus traffic no DL/T 645 frames
    assert frames_in == sent
    assert sum(sim.requests for sim in mb) == sent - 4


def test_a_sweep_finds_all_32_meters_and_identifies_their_models():
    units = [1 + 7 * i for i in range(32)]  # 1, 8, ..., 218
    meters = [SimulatedModbusMeter(u, SHIPPED[i % len(SHIPPED)], clock=fixed_clock) for i, u in enumerate(units)]
    driver = ModbusDriver()
    with pty_bus(meters, turnaround=0.001) as ptybus:
        # 50 ms per unit id: a 20 ms wait lost a simulated answer now and then on a loaded machine
        found = on_the_wire(ptybus, lambda bus, trace: driver.scan(bus, 0.05))
    assert found == [str(u) for u in units]
    identified = {m.address: (m.profile.name if m.profile.identity else None) for m in meters}
    assert driver.last_scan == identified


def test_a_sweep_of_an_empty_line_finds_nothing():
    with pty_bus([SimulatedModbusMeter(200, "eastron-sdm120", clock=fixed_clock)]) as ptybus:
        assert on_the_wire(ptybus, lambda bus, trace: ModbusDriver().scan(bus, 0.025, units=range(1, 6))) == []


# --- configuration ------------------------------------------------------------------------------


def test_addresses_are_unit_ids():
    driver = ModbusDriver()
    assert [driver.normalize_address(a) for a in ("1", " 007", "247", 12)] == ["1", "7", "247", "12"]
    for bad, why in (("0", "broadcast"), ("248", "reserved"), ("x1", "unit id"), ("", "unit id")):
        with pytest.raises(ValueError, match=why):
            driver.normalize_address(bad)


def test_validate_meter_names_each_problem_by_key():
    driver = ModbusDriver()
    good = Meter("3", "modbus", "bus1", ("1-0:32.7.0",), options={"profile": "eastron-sdm120"})
    assert driver.validate_meter(good) == []
    bad = Meter("0", "modbus", "bus1", ("1-0:52.7.0",), options={"profile": "eastron-sdm120", "colour": "red", "max_gap": -1})
    problems = dict(driver.validate_meter(bad))
    assert "broadcast" in problems["address"]
    assert problems["quantities"] == "profile eastron-sdm120 cannot read 1-0:52.7.0"
    assert "unknown option" in problems["options.colour"]
    assert "0..125" in problems["options.max_gap"]
    missing = dict(driver.validate_meter(Meter("3", "modbus", "bus1")))
    assert "needs options: {profile: <name>}" in missing["options.profile"]
    unknown = dict(driver.validate_meter(Meter("3", "modbus", "bus1", options={"profile": "x"})))
    assert unknown["options.profile"].startswith("unknown profile 'x' (known: abb-b23, chint-ddsu666")


def test_a_meter_without_a_usable_profile_gets_not_supported_per_quantity():
    async def scenario():
        meter = Meter("3", "modbus", "bus1", options={"profile": "acme-nothing"})
        return await ModbusDriver().read_many(None, meter, [resolve("voltage_l1"), resolve("frequency")], TIMEOUT)  # type: ignore[arg-type]

    results = asyncio.run(scenario())
    assert all(isinstance(r, NotSupported) and "unknown profile 'acme-nothing'" in str(r) for r in results)


def test_profiles_come_from_folders_and_hooks(tmp_path):
    (tmp_path / "acme-m3.yaml").write_text(ACME.format(max_registers=125, batching="true"))
    driver = ModbusDriver(shipped=False)
    assert driver.load_profile_dir(tmp_path) == ["acme-m3"]
    driver.add_profile("acme-h1", {"quantities": {"frequency": {"function": 4, "address": 0, "type": "u16", "scale": "0.01"}}}, "acme plugin")
    assert sorted(driver.profiles) == ["acme-h1", "acme-m3"]
    assert "1-0:14.7.0" in driver.supported_quantities()
    with pytest.raises(ConfigError) as info:
        driver.add_profile("acme-h2", {"quantities": {"frequency": {"function": 5, "address": 0, "type": "u16"}}}, "acme plugin")
    assert info.value.issues[0].key == "quantities.frequency.function"


def test_timeouts_follow_the_baud_rate():
    driver = ModbusDriver()
    slow, fast = SerialSettings(2400, 8, "N", 1), FAST
    # request, turnaround, 200 ms, and the first byte of the answer (the rest is heard to its end)
    assert driver.transaction_timeout(slow) == pytest.approx(0.2 + (8 + 1 + 1) * 10 / 2400)
    assert driver.transaction_timeout(fast) < driver.transaction_timeout(slow)
    assert driver.scan_timeout(fast) < driver.transaction_timeout(fast)
    assert driver.default_settings == SerialSettings(9600, 8, "N", 1)
