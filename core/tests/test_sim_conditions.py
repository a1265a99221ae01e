"""The conditions alarms must catch, injected into simulated meters and seen through real
reads: DL/T 645 meters (tamper counters, battery, voltage and frequency, reverse energy,
clock drift, history) and CJ/T 188 meters (battery, leak), over a pseudo-terminal and the
real RS485 SerialLink."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import pytest

from meterhub.channels.halfduplex import HalfDuplexChannel
from meterhub.model import Command, Meter, SerialSettings
from meterhub.protocols import cjt188_sim, dlt645_sim
from meterhub.protocols.cjt188_driver import Cjt188Driver
from meterhub.protocols.cjt188_sim import SimulatedCjt188Meter, UsageProfile
from meterhub.protocols.dlt645_data import ITEMS, item_for_obis
from meterhub.protocols.dlt645_driver import Dlt645Driver
from meterhub.protocols.dlt645_sim import FORWARD, REVERSE, SimulatedMeter, make_meters
from meterhub.quantities import resolve
from meterhub.simulator import PtyBus

link_module = pytest.importorskip("meterhub.channels.serial", reason="the end-to-end tests run over the rs485 plugin's SerialLink")
SerialLink = link_module.SerialLink

SETTINGS = SerialSettings(115200, 8, "E", 1)
START = datetime(2024, 3, 5, 12, 0)  # noon: a household draws power, PV generates
NIGHT = datetime(2024, 3, 5, 2, 0)  # nobody draws water at 2 a.m.
DLT = Dlt645Driver()
CJT = Cjt188Driver()
DLT_TIMEOUT = DLT.transaction_timeout(SETTINGS)
CJT_TIMEOUT = CJT.transaction_timeout(SETTINGS)

T = TypeVar("T")


class Clock:
    """The wall clock the simulated meters live by; tests move it."""

    def __init__(self, start: datetime = START) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def _over_pty(devices: Sequence[Any], scenario: Callable[[HalfDuplexChannel], Awaitable[T]]) -> T:
    async def go() -> T:
        async with SerialLink("bus1", pty.port, SETTINGS) as link:
            return await scenario(HalfDuplexChannel("bus1", link))

    pty = PtyBus(devices, settings=SETTINGS, turnaround=0.01, slow_delay=dlt645_sim.slow_delay(SETTINGS))
    with pty:
        return asyncio.run(go())


def _dlt(sim: SimulatedMeter) -> Meter:
    return Meter(address=sim.address, protocol="dlt645", channel="bus1")


def _household(clock: Clock, **kw: Any) -> SimulatedMeter:
    """A single-phase household without PV: it draws power all day, so it never exports."""
    return SimulatedMeter("000000000011", seed=3, clock=clock, **kw)


def _reads(sim: SimulatedMeter, steps: Sequence[str | Callable[[], object]]) -> list[Any]:
    """Over one pty session, read each quantity named in ``steps`` and run each callable
    in between (a condition injected while the meter is on the line); the values read."""

    async def scenario(bus: HalfDuplexChannel) -> list[Any]:
        values = []
        for step in steps:
            if callable(step):
                step()
            else:
                values.append((await DLT.read(bus, _dlt(sim), resolve(step), DLT_TIMEOUT)).value)
        return values

    return _over_pty([sim], scenario)


# --- tamper counters ------------------------------------------------------------------------


def test_opening_the_cover_counts_one_more_cover_opening():
    sim = _household(Clock())
    before, after = _reads(sim, ["cover_open_count", sim.open_cover, "cover_open_count"])
    assert after == before + 1


def test_a_magnet_counts_one_interference_each_time():
    sim = _household(Clock())
    assert _reads(sim, ["magnetic_count", sim.magnetic_interference, sim.magnetic_interference, "magnetic_count"]) \
        == [Decimal(0), Decimal(2)]


def test_the_tamper_counters_are_mapped_to_their_quantities():
    assert item_for_obis("0-0:96.20.0") is ITEMS[0x03300D00]
    assert item_for_obis("0-0:96.20.1") is ITEMS[0x03350000]
    assert (ITEMS[0x03350000].fmt, ITEMS[0x03350000].unit) == ("XXXXXX", "")


# --- status word 1: battery and reverse ----------------------------------------------------


def test_a_low_battery_sets_bits_2_and_3_of_status_word_1():
    sim = _household(Clock())
    sim_low = _household(Clock(), battery_low=True)
    assert _reads(sim, ["status_word_1"]) + _reads(sim_low, ["status_word_1"]) == [Decimal(0), Decimal(0b1100)]


def test_a_battery_going_low_on_the_line_shows_at_the_next_read():
    sim = _household(Clock())
    assert _reads(sim, ["status_word_1", lambda: setattr(sim, "battery_low", True), "status_word_1"]) \
        == [Decimal(0), Decimal(0b1100)]


def test_a_meter_wired_backwards_sets_the_reverse_bit_and_measures_negative_power():
    sim = _household(Clock(), reverse=True)
    word, power = _reads(sim, ["status_word_1", "power_import"])
    assert (word, power < 0) == (Decimal(0b1_0000), True)


def test_a_meter_wired_backwards_counts_the_load_as_export():
    clock = Clock()
    sim = _household(clock, reverse=True)
    twin = _household(Clock())  # the same household wired the right way round
    import_before, export_before = sim.energy(FORWARD), sim.energy(REVERSE)
    twin_before = twin.energy(FORWARD)
    clock.advance(hours=1)
    twin.clock.advance(hours=1)  # type: ignore[attr-defined]
    import_after, export_after = _reads(sim, ["energy_import", "energy_export"])
    assert import_after == import_before
    # what the twin imported the backwards meter exported (each shown truncated to 0.01)
    assert abs((export_after - export_before) - (twin.energy(FORWARD) - twin_before)) <= Decimal("0.01")


def test_turning_a_meter_round_on_the_line_starts_the_export():
    clock = Clock()
    sim = _household(clock)
    export_before = sim.energy(REVERSE)
    sim.reverse = True
    clock.advance(minutes=30)
    assert _reads(sim, ["energy_export"])[0] > export_before


# --- voltage and frequency -----------------------------------------------------------------


def test_an_overridden_voltage_is_read_back():
    sim = _household(Clock())
    sim.set_voltage(1, Decimal("187.5"))
    assert _reads(sim, ["voltage_l1"]) == [Decimal("187.5")]


def test_a_voltage_given_back_to_the_profile_reads_the_profiles_value():
    sim = _household(Clock())
    sim.set_voltage(1, Decimal("187.5"))
    sim.set_voltage(1, None)
    assert _reads(sim, ["voltage_l1"]) == [Decimal(f"{sim.profile.voltage(START, 0):.1f}")]


def test_a_lost_phase_carries_no_current_and_no_power():
    sim = SimulatedMeter("000000000012", seed=3, phases=3, clock=Clock())
    sim.set_voltage(2, Decimal(0))
    voltage, current, power, other = _reads(sim, ["voltage_l2", "current_l2", "power_l2", "current_l1"])
    assert (voltage, current, power) == (Decimal("0.0"), Decimal("0.000"), Decimal("0.0000"))
    assert other > 0


def test_a_lost_phase_draws_no_energy():
    clock = Clock()
    sim = SimulatedMeter("000000000012", seed=3, phases=3, clock=clock)
    sim.set_voltage(3, Decimal("12.0"))  # below half the nominal voltage: lost
    before = sim.energy(FORWARD, phase=3), sim.energy(FORWARD, phase=1)
    clock.advance(hours=1)
    after = _reads(sim, ["energy_import_l3", "energy_import_l1"])
    assert after[0] == before[0] and after[1] > before[1]


def test_a_phase_back_from_loss_carries_current_again():
    sim = SimulatedMeter("000000000012", seed=3, phases=3, clock=Clock())
    sim.set_voltage(2, Decimal(0))
    sim.set_voltage(2, None)
    assert _reads(sim, ["current_l2"])[0] > 0


def test_a_single_phase_meter_has_no_phase_b_to_override():
    with pytest.raises(ValueError, match="phase must be 1..1"):
        _household(Clock()).set_voltage(2, Decimal(230))


def test_an_overridden_frequency_is_read_back():
    sim = _household(Clock())
    sim.set_frequency(Decimal("49.50"))
    assert _reads(sim, ["frequency"]) == [Decimal("49.50")]


# --- clock drift ---------------------------------------------------------------------------


def _time_sync(sim: SimulatedMeter, clock: Clock) -> list[Any]:
    """Read the meter's clock, broadcast the true time (the wall clock), read it again."""

    async def scenario(bus: HalfDuplexChannel) -> list[Any]:
        before = (await DLT.read(bus, _dlt(sim), resolve("clock"), DLT_TIMEOUT)).value
        await DLT.execute(bus, _dlt(sim), Command(sim.address, "dlt645", "time_sync", {"time": clock().isoformat()}),
                          DLT_TIMEOUT)
        after = (await DLT.read(bus, _dlt(sim), resolve("clock"), DLT_TIMEOUT)).value
        return [before, after]

    return _over_pty([sim], scenario)


def test_a_drifting_clock_is_set_right_by_a_broadcast_time_within_five_minutes():
    clock = Clock()
    sim = _household(clock)
    sim.drift(+120)
    assert _time_sync(sim, clock) == ["2024-03-05T12:02:00", "2024-03-05T12:00:00"]


def test_a_clock_drifted_beyond_five_minutes_ignores_the_broadcast_time():
    clock = Clock()
    sim = _household(clock)
    sim.drift(-400)
    assert _time_sync(sim, clock) == ["2024-03-05T11:53:20", "2024-03-05T11:53:20"]


# --- history -------------------------------------------------------------------------------


def test_forty_days_of_history_hold_forty_daily_freezes_at_the_meters_midnights():
    sim = SimulatedMeter("000000000013", seed=3, phases=3, pv=True, clock=Clock(), history=timedelta(days=40))
    times = [at for at, _, _ in sim.daily_freezes()]
    assert (len(times), times[0], times[-1]) == (40, datetime(2024, 3, 5, 0, 0), datetime(2024, 1, 26, 0, 0))


def test_history_passes_through_make_meters():
    meters = make_meters(2, clock=Clock(), history=timedelta(days=3))
    assert [len(m.daily_freezes()) for m in meters] == [3, 3]


def test_a_meter_with_history_has_integrated_its_load_since_installation():
    fresh = _household(Clock(START - timedelta(days=2)))  # installed two days ago, read now
    fresh.clock.advance(days=2)  # type: ignore[attr-defined]
    installed = _household(Clock(), history=timedelta(days=2))
    assert _reads(installed, ["energy_import"]) == [fresh.energy(FORWARD)]


# --- CJ/T 188: battery and leak ------------------------------------------------------------


def _water(clock: Clock, **kw: Any) -> SimulatedCjt188Meter:
    """A cold-water meter at 100 m³ in a flat where nobody draws water: only a leak flows."""
    return SimulatedCjt188Meter("00000000000021", seed=5, clock=clock, profile=UsageProfile(kind="water", mean_flow=0.0),
                                volume_m3=100.0, **kw)


def _cjt_reads(sim: SimulatedCjt188Meter, quantities: Sequence[str]) -> list[Any]:
    meter = Meter(address=sim.address, protocol="cjt188", channel="bus1", options={"meter_type": sim.meter_type})
    outcomes = _over_pty([sim], lambda bus: CJT.read_many(bus, meter, [resolve(q) for q in quantities], CJT_TIMEOUT))
    return [outcome.value for outcome in outcomes]


def test_a_leak_advances_the_volume_at_night():
    clock = Clock(NIGHT)
    sim = _water(clock)
    sim.leak(Decimal("0.3"))
    clock.advance(hours=1)
    (volume,) = _cjt_reads(sim, ["water_volume"])
    assert abs(volume - Decimal("100.30")) <= Decimal("0.01")  # 0.3 m³/h for an hour, shown truncated


def test_a_closed_valve_stops_the_leak():
    clock = Clock(NIGHT)
    sim = _water(clock)
    sim.leak(Decimal("0.3"))
    sim.set_valve(False)
    clock.advance(hours=1)
    assert _cjt_reads(sim, ["water_volume", "valve_state"]) == [Decimal("100.00"), "closed"]


def test_a_stopped_leak_flows_no_more():
    clock = Clock(NIGHT)
    sim = _water(clock)
    sim.leak(Decimal("0.3"))
    sim.leak(None)
    clock.advance(hours=1)
    assert _cjt_reads(sim, ["water_volume"]) == [Decimal("100.00")]


def test_a_water_meter_battery_going_low_shows_in_its_status():
    sim = _water(Clock())
    before = _cjt_reads(sim, ["battery_low"])
    sim.battery_low = True
    assert before + _cjt_reads(sim, ["battery_low"]) == ["false", "true"]


def test_cjt188_make_meters_passes_battery_low_through():
    assert [m.battery_low for m in cjt188_sim.make_meters(2, clock=Clock(), battery_low=True)] == [True, True]
