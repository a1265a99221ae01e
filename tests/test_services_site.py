"""The data services end to end (what ``meterhub demo --services`` shows): simulated meters
on a pty read by the real concentrator over the RS485 transport, a month of freezes turned
into a bill, a prepaid meter cut off and restored through DL/T 645 relay control, an alarm
for every injected fault, a time sync. What was stored is checked against the simulators'
own state, not against what the concentrator says of itself."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from meterhub import prepay, simservices
from meterhub.billing import bill_meter
from meterhub.config import parse_site
from meterhub.model import CommandState, Quality, local_zone
from meterhub.plugins import Plugins
from meterhub.store import open_store
from meterhub.tariffs import bill, consumption_from_registers
from meterhub.testing import clear_of_midnight

pytestmark = pytest.mark.timeout(180)

ZONE = local_zone(simservices.TIMEZONE)
ENERGY = ("1-0:1.8.0", "1-0:1.8.1", "1-0:1.8.2", "1-0:1.8.3", "1-0:1.8.4")


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One run of the demo's steps; the store and the simulators, kept for the checks."""
    mp = pytest.MonkeyPatch()
    mp.setenv("METERHUB_DISABLE_PLUGINS", "acme")  # the vendor example's policy wants confirm: true
    plugins = Plugins()
    db = Path(tmp_path_factory.mktemp("services")) / "site.db"
    today = clear_of_midnight(simservices.site_clock)  # the rounds must not straddle the site's midnight
    with simservices.start_services_sim(today=today) as sim:
        site = parse_site(sim.site_yaml(f"sqlite:///{db}"), filename="<test>", drivers=plugins.meter_drivers(),
                          transports=plugins.transports())
        with open_store(site.store) as store:
            steps = asyncio.run(simservices.run_services_demo(site, sim, store, plugins=plugins))
            yield {"site": site, "sim": sim, "store": store, "steps": steps, "today": today}
    mp.undo()


def kinds(ran: dict[str, Any], source_address: str) -> set[str]:
    return {e.kind for step in ran["steps"] for e in step.events if e.source.endswith(":" + source_address)}


def local_midnight(day: date | datetime) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=ZONE).astimezone(UTC)


def test_the_month_is_back_filled_from_the_meters_own_freeze_records(ran: dict[str, Any]) -> None:
    sim_meter = ran["sim"].meters[simservices.HOME]
    records = {at: forward for at, forward, _ in sim_meter.daily_freezes()}
    frozen = [r for r in ran["store"].readings(meter=simservices.HOME) if r.period == 1]
    by_day = {(r.timestamp, r.quantity): r for r in frozen}
    month_start = datetime.strptime(simservices.last_full_month(ran["today"]), "%Y-%m")
    day = month_start
    while day.date() <= ran["today"]:
        values = records[day]  # the meter froze at its own midnight: the exact value, not a later one
        for quantity, value in zip(ENERGY, values, strict=True):
            reading = by_day[(local_midnight(day), quantity)]
            assert reading.value == value and reading.quality is Quality.OK
            assert reading.data_time == local_midnight(day)
        day += timedelta(days=1)


def test_last_months_bill_is_the_tariff_applied_to_the_meters_own_freezes(ran: dict[str, Any]) -> None:
    period = simservices.last_full_month(ran["today"])
    start = datetime.strptime(period, "%Y-%m")
    end = (start + timedelta(days=32)).replace(day=1)
    records = {at: forward for at, forward, _ in ran["sim"].meters[simservices.HOME].daily_freezes()}
    expected = bill(ran["site"].tariffs["residential"], "x", period, consumption_from_registers(
        dict(zip(ENERGY, records[start], strict=True)), dict(zip(ENERGY, records[end], strict=True))))
    made = bill_meter(ran["store"], ran["site"].tariffs["residential"], meter=simservices.HOME, period=period, zone=ZONE)
    assert made.total == expected.total and [line.amount for line in made.lines] == [l.amount for l in expected.lines]
    assert made.total > Decimal(0)


def test_the_empty_prepaid_meter_is_cut_off_and_restored_by_a_recharge(ran: dict[str, Any]) -> None:
    steps = ran["steps"]
    assert [s.prepaid_relay_open for s in steps[:2]] == [True, False]  # what the simulated meter says
    prepaid = next(m for m in ran["site"].meters if m.address == simservices.PREPAID)
    commands = ran["store"].commands(meter=simservices.PREPAID)
    assert [(c.command.name, dict(c.command.args), c.command.origin.value, c.state) for c in commands] == [
        ("relay", {"action": "trip"}, "schedule", CommandState.ANSWERED),
        ("relay", {"action": "close"}, "schedule", CommandState.ANSWERED),
    ]
    assert {"balance_exhausted", "supply_disconnected"} <= {e.kind for e in steps[0].events}
    assert {"balance_restored", "supply_reconnected"} <= {e.kind for e in steps[1].events}
    ledger = prepay.ledger(ran["store"], prepaid.key)
    assert ledger[0].kind == prepay.RECHARGE and ledger[0].amount == Decimal(50)
    charged = sum((e.amount for e in ledger if e.kind == prepay.CHARGE), Decimal(0))
    assert prepay.balance(ran["store"], prepaid.key) == Decimal(50) - charged


def test_every_injected_fault_raises_its_alarm(ran: dict[str, Any]) -> None:
    assert {"clock_drift", "reverse_energy", "battery_low", "cover_open", "magnetic_tamper",
            "clock_beyond_sync"} <= kinds(ran, simservices.TAMPERED)
    assert {"pq_voltage_sag", "pq_phase_loss", "pq_current_imbalance", "pq_frequency_deviation"} <= kinds(
        ran, simservices.WEAK)
    assert {"meter_dead", "meter_offline"} <= kinds(ran, simservices.DEAD)
    assert {"continuous_flow", "battery_low"} <= kinds(ran, simservices.WATER)
    assert {"balance_low", "balance_exhausted"} <= kinds(ran, simservices.PREPAID)
    # and no alarm where nothing was injected
    assert not {k for k in kinds(ran, simservices.HOME) | kinds(ran, simservices.DRIFTING)
                if k not in ("time_sync", "command_executed")}


def test_a_sag_ends_with_its_start_end_and_lowest_value(ran: dict[str, Any]) -> None:
    sag = [e for step in ran["steps"] for e in step.events if e.kind == "pq_voltage_sag"]
    start, end = sag
    assert start.data["state"] == "start" and start.data["phase"] == "L1" and start.data["value"] == "185.0"
    assert end.data["state"] == "end" and end.data["extreme"] == "185.0"
    assert end.data["start"] == start.data["start"] and end.data["end"] > end.data["start"]


def test_time_sync_corrects_a_clock_within_the_window_and_flags_one_beyond(ran: dict[str, Any]) -> None:
    synced = {e.data["meter"]: e.data for e in ran["steps"][-1].events if e.kind == "time_sync"}
    drifting = synced[simservices.DRIFTING]
    assert 117 <= int(drifting["drift_before"]) <= 122 and abs(int(drifting["drift_after"])) <= 2
    tampered = synced[simservices.TAMPERED]
    assert abs(int(tampered["drift_after"]) - 600) <= 2  # refused: beyond the broadcast window
    assert ran["sim"].meters[simservices.DRIFTING].clock_offset < timedelta(seconds=2)
    assert simservices.DEAD not in synced


def test_a_meter_without_freeze_records_is_frozen_by_the_concentrator(ran: dict[str, Any]) -> None:
    (frozen,) = [r for r in ran["store"].readings(meter=simservices.WATER) if r.period == 1]
    boundary = local_midnight(ran["today"])
    assert frozen.timestamp == boundary and frozen.quantity == "8-0:1.0.0"
    assert frozen.data_time is not None and frozen.data_time > boundary  # when it really was read
    late = frozen.data_time - boundary > timedelta(minutes=15)
    assert frozen.detail.startswith("back-filled: read ") == late


def test_no_value_is_stored_for_the_dead_meter_nor_for_a_quantity_a_meter_was_not_asked(ran: dict[str, Any]) -> None:
    store = ran["store"]
    assert not [r for r in store.readings(meter=simservices.DEAD) if r.quality is Quality.OK]
    asked = {m.address: set(m.quantities) for m in ran["site"].meters if m.address != simservices.DEAD}
    for address, quantities in asked.items():
        current = [r for r in store.readings(meter=address) if r.quality is Quality.OK and r.period is None]
        assert current and {r.quantity for r in current} <= quantities, address
