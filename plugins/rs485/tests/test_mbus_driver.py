"""The M-Bus driver end to end: simulated slaves on a pty (meterhub.simulator.PtyBus), our
SerialLink, the core Bus. Primary and secondary reads, multi-telegram reads with FCB
toggling, every fault, the primary sweep and the secondary wildcard search of 32 slaves."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import attrs
import pytest

from meterhub.api import MeterDriver
from meterhub.channels.halfduplex import HalfDuplexChannel, WireRecord
from meterhub.errors import ChecksumError, FrameError, MeterTimeout, NotSupported, TruncatedFrame, UnexpectedReply
from meterhub.model import Command, Measurement, Meter, SerialSettings
from meterhub.protocols.dlt645_driver import Dlt645Driver
from meterhub.protocols.dlt645_sim import SimulatedMeter
from meterhub.quantities import resolve
from meterhub.simulator import Fault, PtyBus
from meterhub_rs485 import mbus
from meterhub.channels.serial import SerialLink
from meterhub_rs485.mbus import Coding, ShortFrame
from meterhub_rs485.mbus_driver import MbusDriver
from meterhub_rs485.mbus_sim import SimulatedMbusSlave, make_slaves, slow_delay

FAST = SerialSettings(115200, 8, "E", 1)
#: Quick slaves (1-3 ms turnaround) so a sweep of 251 addresses stays short in CI.
TURNAROUND = (0.001, 0.003)
#: Per read transaction: only spent in full when a test expects silence or a bad frame.
TIMEOUT = 0.25
#: Per scan query: long enough for the slowest simulated answer at 115200 Bd on a busy machine.
SCAN_TIMEOUT = 0.05  # per address; 20 ms lost a pty answer now and then under load (seen with Modbus)
NOW = datetime(2024, 5, 1, 12, 0)

HEAT = ["6-0:1.0.0", "6-0:2.0.0", "6-0:8.0.0", "6-0:9.0.0", "6-0:10.0.0", "6-0:11.0.0", "6-0:12.0.0"]


class Clock:
    """A settable wall clock for the simulated meters."""

    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def sim() -> Iterator[Callable[..., PtyBus]]:
    buses: list[PtyBus] = []

    def start(devices, **options: Any) -> PtyBus:
        options.setdefault("turnaround", TURNAROUND)
        bus = PtyBus(devices, settings=FAST, **options).start()
        buses.append(bus)
        return bus

    yield start
    for bus in buses:
        bus.stop()


def run(bus: PtyBus, job: Callable[[Bus], Awaitable[Any]], trace: list[WireRecord] | None = None) -> Any:
    async def go() -> Any:
        async with SerialLink("bus1", bus.port, FAST) as link:
            return await job(HalfDuplexChannel("bus1", link, trace=trace.append if trace is not None else None))

    return asyncio.run(go())


def read(bus: PtyBus, driver: MbusDriver, address: str, quantities: list[str], timeout: float = TIMEOUT, **meter: Any) -> list:
    target = Meter(address=address, protocol="mbus", channel="bus1", quantities=tuple(quantities), **meter)
    return run(bus, lambda wire: driver.read_many(wire, target, [resolve(q) for q in quantities], timeout))


def controls(slave: SimulatedMbusSlave) -> list[int]:
    return [f.control for f in slave.requests]


# --- primary and secondary reads ----------------------------------------------------------


def test_the_driver_is_a_meter_driver_with_the_optional_capabilities():
    driver = MbusDriver()
    assert isinstance(driver, MeterDriver)
    assert driver.name == "mbus" and str(driver.default_settings) == "2400 8E1"
    assert callable(driver.read_many) and callable(driver.validate_meter)


def test_every_kind_of_meter_reads_its_registers_by_primary_address(sim):
    slaves = make_slaves(5, clock=Clock())  # water, heat, electricity, gas, hot water at 1..5
    bus = sim(slaves)
    driver = MbusDriver()
    water, heat, power, gas, hot = slaves

    got = read(bus, driver, "1", ["8-0:1.0.0", "0-0:96.1.0", "0-0:1.0.0"])
    assert got == [Measurement(water.registers()["volume"], "m3"), Measurement(water.id, ""), Measurement("2024-05-01T12:00:00", "")]

    regs = heat.registers()
    got = read(bus, driver, "2", HEAT)
    assert got == [
        Measurement(regs["energy"], "kWh"),
        Measurement(regs["volume"], "m3"),
        Measurement(regs["power"], "kW"),
        Measurement(regs["flow"], "m3/h"),
        Measurement(regs["flow_temperature"], "°C"),
        Measurement(regs["return_temperature"], "°C"),
        Measurement(regs["temperature_difference"], "K"),
    ]
    regs = power.registers()
    assert read(bus, driver, "3", ["1-0:1.8.0", "1-0:1.8.1", "1-0:1.8.2"]) == [
        Measurement(regs["energy"], "kWh"), Measurement(regs["energy_t1"], "kWh"), Measurement(regs["energy_t2"], "kWh")
    ]
    assert read(bus, driver, "4", ["7-0:3.0.0"]) == [Measurement(gas.registers()["volume"], "m3")]
    assert read(bus, driver, "5", ["9-0:1.0.0"]) == [Measurement(hot.registers()["volume"], "m3")]


def test_values_are_exact_decimals_in_the_quantity_unit(sim):
    slave = SimulatedMbusSlave("12345678", primary=9, kind="heat", clock=Clock())
    bus = sim([slave])
    (energy,) = read(bus, MbusDriver(), "9", ["6-0:1.0.0"])
    assert isinstance(energy.value, Decimal) and energy.unit == "kWh"
    assert energy.value == slave.registers()["energy"] and energy.value.as_tuple().exponent == -3  # 100 Wh steps


def test_a_heat_meter_counting_in_joules_reads_in_gj_exactly(sim):
    slave = SimulatedMbusSlave("12345678", primary=9, kind="heat", energy_unit="J", clock=Clock())
    bus = sim([slave])
    assert read(bus, MbusDriver(), "9", ["6-0:1.0.0"]) == [Measurement(slave.registers()["energy"], "GJ")]


def test_quantities_of_another_medium_are_not_supported(sim):
    bus = sim(make_slaves(1, clock=Clock()))  # a water meter
    volume, heat, unknown = read(bus, MbusDriver(), "1", ["8-0:1.0.0", "6-0:1.0.0", "1-0:32.7.0"])
    assert isinstance(volume, Measurement)
    assert isinstance(heat, NotSupported) and "heat quantity" in str(heat) and "water" in str(heat)
    assert isinstance(unknown, NotSupported)


def test_the_medium_option_overrides_the_header(sim):
    bus = sim(make_slaves(1, clock=Clock()))  # says water
    got = read(bus, MbusDriver(), "1", ["9-0:1.0.0"], options={"medium": "hot_water"})
    assert isinstance(got[0], Measurement) and got[0].unit == "m3"


def test_a_meter_is_read_by_its_secondary_address_and_by_a_wildcard(sim):
    slaves = make_slaves(3, primary=False, clock=Clock())  # all at primary 0: only secondary works
    bus = sim(slaves)
    driver = MbusDriver()
    target = slaves[1]  # the heat meter
    trace: list[WireRecord] = []
    meter = Meter(address=target.address, protocol="mbus", channel="bus1")
    got = run(bus, lambda wire: driver.read_many(wire, meter, [resolve("6-0:1.0.0")], TIMEOUT), trace)
    assert got == [Measurement(target.registers()["energy"], "kWh")]
    # The first read deselects whoever was selected (SND_NKE to 253), selects, then asks 253.
    sent = [mbus.decode(r.data) for r in trace if r.direction == "tx"]
    assert sent == [mbus.snd_nke(mbus.ADDRESS_NETWORK), mbus.select_request(target.address), mbus.req_ud2(mbus.ADDRESS_NETWORK)]
    assert target.selected and not slaves[0].selected and not slaves[2].selected
    wildcard = target.id + "FFFFFFFF"
    assert read(bus, driver, wildcard, ["0-0:96.1.0"]) == [Measurement(target.id, "")]
    # A new address of the driver's: deselect (the target was still selected), select, read.
    assert target.requests[2:4] == [mbus.snd_nke(mbus.ADDRESS_NETWORK), mbus.select_request(wildcard)]
    assert target.requests[4] == mbus.req_ud2(mbus.ADDRESS_NETWORK)


def test_one_transaction_per_meter_per_round_after_the_first_snd_nke(sim):
    slave = make_slaves(1, clock=Clock())[0]
    bus = sim([slave])
    driver = MbusDriver()
    trace: list[WireRecord] = []
    target = Meter(address="1", protocol="mbus", channel="bus1")
    quantities = [resolve("8-0:1.0.0"), resolve("0-0:96.1.0"), resolve("0-0:1.0.0")]

    async def rounds(wire: Bus) -> None:
        for _ in range(3):
            outcomes = await driver.read_many(wire, target, quantities, TIMEOUT)
            assert all(isinstance(o, Measurement) for o in outcomes)

    run(bus, rounds, trace)
    sent = [r.data for r in trace if r.direction == "tx"]
    assert sent == [mbus.encode(f) for f in (mbus.snd_nke(1), mbus.req_ud2(1, fcb=True), mbus.req_ud2(1, fcb=False), mbus.req_ud2(1, fcb=True))]
    assert controls(slave) == [0x40, 0x7B, 0x5B, 0x7B]


def test_a_multi_telegram_readout_toggles_fcb_until_no_more_records_follow(sim):
    slave = SimulatedMbusSlave("87654321", primary=4, kind="heat", records_per_telegram=2, clock=Clock())
    bus = sim([slave])
    got = read(bus, MbusDriver(), "4", HEAT + ["0-0:1.0.0"])
    assert all(isinstance(g, Measurement) for g in got), got
    assert got[0] == Measurement(slave.registers()["energy"], "kWh")
    # 9 records, 2 a telegram: 5 telegrams, the first 4 ending in DIF 1F.
    assert controls(slave) == [0x40, 0x7B, 0x5B, 0x7B, 0x5B, 0x7B]
    assert slave.repeats == 0


def test_a_repeated_fcb_gets_the_same_telegram_again(sim):
    slave = SimulatedMbusSlave("87654321", primary=4, kind="heat", records_per_telegram=2, clock=Clock())
    bus = sim([slave])

    async def job(wire: Bus) -> list[bytes]:
        answers = []
        for request in (mbus.snd_nke(4), mbus.req_ud2(4, fcb=True), mbus.req_ud2(4, fcb=True), mbus.req_ud2(4, fcb=False)):
            exchange = await wire.transact(mbus.encode(request), mbus.StreamDecoder(), timeout=TIMEOUT)
            answers.append(mbus.encode(exchange.frame))
        return answers

    ack, first, again, second = run(bus, job)
    assert ack == b"\xE5" and first == again and second != first
    assert slave.repeats == 1
    records = mbus.parse_user_data(mbus.decode(second)).records
    assert records[0].quantity == "volume"  # the second telegram starts with record 3


def test_registers_advance_with_the_meters_clock(sim):
    clock = Clock()
    bus = sim(make_slaves(2, clock=clock))
    driver = MbusDriver()
    (before,) = read(bus, driver, "1", ["8-0:1.0.0"])
    (heat_before,) = read(bus, driver, "2", ["6-0:1.0.0"])
    clock.now += timedelta(days=2)
    (after,) = read(bus, driver, "1", ["8-0:1.0.0"])
    (heat_after,) = read(bus, driver, "2", ["6-0:1.0.0"])
    assert after.value > before.value and heat_after.value > heat_before.value
    assert read(bus, driver, "1", ["0-0:1.0.0"]) == [Measurement("2024-05-03T12:00:00", "")]


def test_a_record_with_an_unknown_vif_is_kept_and_flagged(sim):
    odd = mbus.raw_record(b"\x04", b"\x6F", (4242).to_bytes(4, "little"))  # VIF 6F is reserved
    fd = mbus.raw_record(b"\x01", b"\xFD\x7E", b"\x07")  # FD 7E: not in the table
    slave = SimulatedMbusSlave("11223344", primary=7, kind="water", extra_records=[odd, fd], clock=Clock())
    bus = sim([slave])
    driver = MbusDriver()
    target = Meter(address="7", protocol="mbus", channel="bus1")
    telegrams = run(bus, lambda wire: driver.read_telegrams(wire, target, TIMEOUT))
    unknown = [r for t in telegrams for r in t.records if not r.known]
    assert [(r.value, r.unit, r.data) for r in unknown] == [(Decimal(4242), "", odd.data), (Decimal(7), "", b"\x07")]
    assert all("unknown VIF" in r.description for r in unknown)
    result = run(bus, lambda wire: driver.execute(wire, target, Command("7", "mbus", "records"), TIMEOUT))
    shown = [r for r in result["records"] if not r["known"]]
    assert [r["value"] for r in shown] == ["4242", "7"] and shown[0]["raw"] == "04 6F 92 10 00 00"
    # ... and the known quantities still read.
    assert read(bus, driver, "7", ["8-0:1.0.0"]) == [Measurement(slave.registers()["volume"], "m3")]


# --- faults ---------------------------------------------------------------------------


def _faulty(sim, fault: Fault, **options: Any) -> tuple[PtyBus, SimulatedMbusSlave]:
    slave = SimulatedMbusSlave("55667788", primary=12, kind="water", clock=Clock())
    bus = sim([slave], **options)
    bus.set_fault(slave.address, fault)
    return bus, slave


def test_a_silent_meter_times_out_on_every_quantity(sim):
    bus, _ = _faulty(sim, Fault.SILENCE)
    got = read(bus, MbusDriver(), "12", ["8-0:1.0.0", "0-0:96.1.0"])
    assert all(isinstance(g, MeterTimeout) for g in got)


def test_a_bad_checksum_is_a_checksum_error(sim):
    bus, _ = _faulty(sim, Fault.BAD_CHECKSUM)
    (got,) = read(bus, MbusDriver(), "12", ["8-0:1.0.0"])
    assert isinstance(got, ChecksumError)


def test_an_answer_from_the_wrong_address_is_an_unexpected_reply(sim):
    bus, slave = _faulty(sim, Fault.WRONG_ADDRESS)
    (primary,) = read(bus, MbusDriver(), "12", ["8-0:1.0.0"])
    (secondary,) = read(bus, MbusDriver(), slave.address, ["8-0:1.0.0"])
    assert isinstance(primary, UnexpectedReply) and isinstance(secondary, UnexpectedReply)


def test_noise_around_the_answer_is_skipped(sim):
    bus, slave = _faulty(sim, Fault.NOISE, seed=5)
    driver = MbusDriver()
    for _ in range(3):
        assert read(bus, driver, "12", ["8-0:1.0.0"]) == [Measurement(slave.registers()["volume"], "m3")]


def test_a_truncated_answer_is_a_truncated_frame(sim):
    bus, _ = _faulty(sim, Fault.TRUNCATED)
    (got,) = read(bus, MbusDriver(), "12", ["8-0:1.0.0"])
    assert isinstance(got, TruncatedFrame)


def test_a_slow_meter_times_out(sim):
    bus, _ = _faulty(sim, Fault.SLOW, slow_delay=0.6)
    (got,) = read(bus, MbusDriver(), "12", ["8-0:1.0.0"], timeout=0.2)
    assert isinstance(got, MeterTimeout)


def test_after_a_failure_the_link_is_reset_before_the_next_read(sim):
    bus, slave = _faulty(sim, Fault.BAD_CHECKSUM)
    driver = MbusDriver()
    assert isinstance(read(bus, driver, "12", ["8-0:1.0.0"])[0], ChecksumError)
    bus.set_fault(slave.address, None)
    assert isinstance(read(bus, driver, "12", ["8-0:1.0.0"])[0], Measurement)
    assert controls(slave) == [0x40, 0x7B, 0x40, 0x7B]


def test_read_raises_what_read_many_returns(sim):
    bus, _ = _faulty(sim, Fault.SILENCE)
    target = Meter(address="12", protocol="mbus", channel="bus1")
    with pytest.raises(MeterTimeout):
        run(bus, lambda wire: MbusDriver().read(wire, target, resolve("water_volume"), 0.1))


# --- scanning -------------------------------------------------------------------------


def test_a_primary_sweep_of_32_slaves_reads_back_each_one_it_reports(sim):
    slaves = make_slaves(32, first_primary=1, clock=Clock())
    twin = make_slaves(1, first_primary=5, clock=Clock(), seed=9)  # shares address 5: their E5s collide
    bus = sim([*slaves, *twin])
    trace: list[WireRecord] = []
    found = run(bus, lambda wire: MbusDriver().scan(wire, SCAN_TIMEOUT), trace)
    assert found == [str(i) for i in range(1, 33) if i != 5]  # 5 names no one slave
    sent = [r.data for r in trace if r.direction == "tx"]
    assert [f for f in sent if f[1] == 0x40] == [mbus.encode(mbus.snd_nke(a)) for a in range(251)]  # 0..250
    # an E5 names no address: each address that acknowledged is read back before it is reported
    assert [f for f in sent if f[1] != 0x40] == [mbus.encode(mbus.req_ud2(a, fcb=True)) for a in range(1, 33) if a != 5]


def test_a_secondary_wildcard_search_of_32_slaves_finds_all_32(sim):
    slaves = make_slaves(32, primary=False, clock=Clock(), seed=3)  # all at primary 0
    bus = sim(slaves)
    found = run(bus, lambda wire: MbusDriver().scan(wire, SCAN_TIMEOUT, mode="secondary"))
    assert found == sorted(s.address for s in slaves)
    assert bus.collisions > 0  # the wildcard and shared first digits collided on the way
    assert not any(s.selected for s in slaves)  # the search leaves nobody selected


def test_slaves_that_share_leading_digits_are_separated_deeper(sim):
    ids = ["12300000", "12400000", "15000000", "12399999"]
    slaves = make_slaves(4, primary=False, ids=ids, clock=Clock())
    bus = sim(slaves)
    found = run(bus, lambda wire: MbusDriver(scan_mode="secondary").scan(wire, SCAN_TIMEOUT))
    assert found == sorted(s.address for s in slaves)


def test_a_silent_slave_is_not_found_and_the_others_are(sim):
    slaves = make_slaves(3, primary=False, ids=["10000000", "20000000", "30000000"], clock=Clock())
    bus = sim(slaves)
    bus.set_fault(slaves[1].address, Fault.SILENCE)
    found = run(bus, lambda wire: MbusDriver().scan(wire, SCAN_TIMEOUT, mode="secondary"))
    assert found == [slaves[0].address, slaves[2].address]


def test_two_slaves_on_one_primary_address_answer_garbled(sim):
    a = SimulatedMbusSlave("10000000", primary=3, clock=Clock())
    b = SimulatedMbusSlave("20000000", primary=3, clock=Clock())
    bus = sim([a, b])

    async def probe(wire: Bus) -> list[str]:
        outcomes = []
        for address in (2, 3, 4):
            try:
                await wire.transact(mbus.encode(mbus.snd_nke(address)), mbus.StreamDecoder(), timeout=SCAN_TIMEOUT)
                outcomes.append("ack")
            except MeterTimeout:
                outcomes.append("silence")
            except FrameError:
                outcomes.append("garbled")
        return outcomes

    assert run(bus, probe) == ["silence", "garbled", "silence"]  # both E5s at once: no valid E5
    assert bus.collisions == 1


# --- sharing a wire with DL/T 645 ---------------------------------------------------------


def test_mbus_slaves_and_dlt645_meters_share_one_bus(sim):
    slaves = make_slaves(2, clock=Clock())
    meters = [SimulatedMeter("000000000001", seed=1), SimulatedMeter("000000000002", seed=2)]
    bus = sim(slaves + meters)
    dlt = Dlt645Driver()
    mbus_driver = MbusDriver()

    async def job(wire: Bus) -> list:
        out = []
        for meter in meters:
            out.append(await dlt.read(wire, Meter(address=meter.address, protocol="dlt645", channel="bus1"), resolve("1-0:1.8.0"), TIMEOUT))
        out += await mbus_driver.read_many(wire, Meter(address="1", protocol="mbus", channel="bus1"), [resolve("8-0:1.0.0")], TIMEOUT)
        out += await mbus_driver.read_many(wire, Meter(address=slaves[1].address, protocol="mbus", channel="bus1"), [resolve("6-0:1.0.0")], TIMEOUT)
        return out

    got = run(bus, job)
    assert [g.unit for g in got] == ["kWh", "kWh", "m3", "kWh"]
    assert got[2] == Measurement(slaves[0].registers()["volume"], "m3")
    assert got[3] == Measurement(slaves[1].registers()["energy"], "kWh")


# --- configuration checks (no bus) --------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "canonical"),
    [("0", "0"), ("007", "7"), (250, "250"), ("1234567824400107", "1234567824400107"), ("12345678 2440 01 07", "1234567824400107"), ("12345678ffffffff", "12345678FFFFFFFF")],
)
def test_addresses_are_normalised(given, canonical):
    assert MbusDriver().normalize_address(given) == canonical


@pytest.mark.parametrize(("given", "reason"), [("251", "reserved"), ("253", "network-layer"), ("254", "broadcast"), ("", "empty"), ("12AB", "neither"), ("-1", "neither")])
def test_bad_addresses_say_why(given, reason):
    with pytest.raises(ValueError, match=reason):
        MbusDriver().normalize_address(given)


def test_validate_meter_names_the_keys_that_are_wrong():
    driver = MbusDriver()
    meter = Meter(
        address="300", protocol="mbus", channel="b", quantities=("8-0:1.0.0", "6-0:1.0.0", "1-0:32.7.0"),
        options={"medium": "water", "reset": "sometimes", "colour": "red", "max_telegrams": 0},
    )
    problems = dict(driver.validate_meter(meter))
    assert set(problems) == {"address", "options.reset", "options.colour", "options.max_telegrams", "quantities"}
    issues = driver.validate_meter(meter)
    assert ("quantities", "6-0:1.0.0 is a heat quantity but options.medium says otherwise") in issues
    assert any(k == "quantities" and "1-0:32.7.0" in m for k, m in issues)
    assert driver.validate_meter(Meter(address="5", protocol="mbus", channel="b", quantities=("8-0:1.0.0",))) == []
    assert dict(driver.validate_meter(Meter(address="5", protocol="mbus", channel="b", options={"medium": "lava"})))["options.medium"].startswith("unknown medium")


def test_the_transaction_timeout_covers_the_answer_window():
    settings = SerialSettings(2400, 8, "E", 1)
    timeout = MbusDriver().transaction_timeout(settings)
    assert timeout > 330 / 2400 + 0.050  # a long frame begun by then is heard to its end
    assert timeout < slow_delay(settings)  # a SLOW simulated slave is always too late


def test_request_frames_the_driver_sends_are_the_standard_ones():
    assert mbus.encode(ShortFrame(0x40, 1)) == bytes.fromhex("10 40 01 41 16")
    assert Coding.BCD8.size == 4


# --- device profiles ------------------------------------------------------------------

PHASES = {
    "medium": "electricity",
    "quantities": {
        "voltage_l1": {"vib": "FD 48"},  # FD 48h: 10^-1 V
        "1-0:31.7.0": {"vib": "FD 59"},  # FD 59h: 10^-3 A
        "1-0:1.7.0": {"quantity": "power", "unit": "kW"},  # W, converted exactly
    },
}


def test_a_profile_maps_further_quantities_onto_records(sim):
    slave = SimulatedMbusSlave("44556677", primary=8, kind="electricity", clock=Clock())
    bus = sim([slave])
    driver = MbusDriver()
    driver.add_profile("acme-e3", PHASES, source="test")
    assert {"1-0:32.7.0", "1-0:31.7.0", "1-0:1.7.0"} <= set(driver.supported_quantities())
    regs = slave.registers()
    got = read(bus, driver, "8", ["1-0:32.7.0", "1-0:31.7.0", "1-0:1.7.0", "1-0:1.8.0"], options={"profile": "acme-e3"})
    assert got == [Measurement(regs["voltage"], "V"), Measurement(regs["current"], "A"), Measurement(regs["power"], "kW"),
                   Measurement(regs["energy"], "kWh")]
    (without,) = read(bus, driver, "8", ["1-0:32.7.0"])
    assert isinstance(without, NotSupported)


def test_a_profile_names_its_medium_for_meters_that_report_other(sim):
    driver = MbusDriver()
    driver.add_profile("other-water", {"medium": "water", "quantities": {"8-0:2.0.0": {"quantity": "volume_flow"}}})
    meter = Meter(address="3", protocol="mbus", channel="b", quantities=("8-0:1.0.0", "8-0:2.0.0"), options={"profile": "other-water"})
    assert driver.validate_meter(meter) == []
    assert driver.validate_meter(attrs.evolve(meter, options={})) == [
        ("quantities", "8-0:2.0.0 is read only through a device profile; set options.profile")
    ]
    assert dict(driver.validate_meter(attrs.evolve(meter, options={"profile": "nope"})))["options.profile"].startswith(
        "unknown mbus profile 'nope' (known: other-water)"
    )


@pytest.mark.parametrize(
    ("profile", "message"),
    [
        ({"quantities": {}}, "needs 'quantities'"),
        ({"quantities": {"8-0:1.0.0": {"vib": "ZZ"}}}, "vib must be hex bytes"),
        ({"quantities": {"no_such_thing": {"vib": "13"}}}, "unknown quantity"),
        ({"quantities": {"8-0:1.0.0": {"tariff": 1}}}, "name the record by"),
        ({"quantities": {"8-0:1.0.0": {"vib": "13", "colour": 1}}}, "unknown key"),
        ({"quantities": {"8-0:1.0.0": {"vib": "13", "function": "average"}}}, "function must be one of"),
        ({"medium": "lava", "quantities": {"8-0:1.0.0": {"vib": "13"}}}, "unknown medium"),
        ({"units": 1, "quantities": {"8-0:1.0.0": {"vib": "13"}}}, "unknown key"),
        ("not a mapping", "must be a mapping"),
    ],
)
def test_a_bad_profile_is_refused_saying_what_is_wrong(profile, message):
    with pytest.raises(ValueError, match=message):
        MbusDriver().add_profile("bad", profile, source="plugin x")


# --- the simulator as the sim command and the demo see it ---------------------------------


def test_the_simulator_makes_slaves_and_the_site_entries_that_read_them(sim):
    from meterhub.api import MeterSimulator
    from meterhub_rs485.mbus_sim import MbusSimulator

    simulator = MbusSimulator()
    assert isinstance(simulator, MeterSimulator) and simulator.protocol == "mbus"
    devices = simulator.make(3, seed=4, options={"kinds": "heat,water"})
    assert [d.kind for d in devices] == ["heat", "water", "heat"]
    entries = [simulator.site_entry(d) for d in devices]
    assert [e["address"] for e in entries] == ["1", "2", "3"]
    secondary = simulator.make(2, options={"addressing": "secondary"})
    assert [simulator.site_entry(d)["address"] for d in secondary] == [d.address for d in secondary]
    bus = sim(devices + secondary)
    driver = MbusDriver()
    for entry in entries + [simulator.site_entry(d) for d in secondary]:
        got = read(bus, driver, entry["address"], [resolve(q).obis for q in entry["quantities"]])
        assert all(isinstance(g, Measurement) for g in got), (entry, got)
    with pytest.raises(ValueError, match="unknown mbus meter kind"):
        simulator.make(1, options={"kinds": "steam"})
    with pytest.raises(ValueError, match="unknown mbus simulator option"):
        simulator.make(1, options={"colour": "red"})
