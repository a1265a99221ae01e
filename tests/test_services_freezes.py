"""Freezes, load profiles and prepaid charging across visits and restarts, through the real
concentrator and RS485 transport on simulated meters (see also test_services_site.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import attrs
import pytest

from meterhub import prepay, services
from meterhub.config import parse_site
from meterhub.model import Quality, Site
from meterhub.plugins import Plugins
from meterhub.protocols import cjt188_sim, dlt645_sim
from meterhub.runtime import Concentrator
from meterhub.simulator import PtyBus
from meterhub.store import open_store
from meterhub.testing import clear_of_midnight

pytestmark = pytest.mark.timeout(120)

METER, WATER = "000000000007", "00000000000301"
SETTINGS = attrs.evolve(dlt645_sim.Dlt645Simulator.default_settings, baudrate=19200)


@pytest.fixture
def bus() -> Iterator[dict[str, Any]]:
    """A DL/T 645 meter with five days of freeze records and a CJ/T 188 water meter; their
    clocks run ``shift`` ahead of the machine's (a test moves time on for them)."""
    shift = [timedelta(0)]

    def clock() -> datetime:
        return datetime.now() + shift[0]

    meters: dict[str, Any] = {
        METER: dlt645_sim.SimulatedMeter(METER, seed=3, clock=clock, history=timedelta(days=5, hours=1)),
        WATER: cjt188_sim.SimulatedCjt188Meter(WATER, seed=3, clock=clock),
    }
    for m in meters.values():
        m.settings = SETTINGS
    pty = PtyBus(list(meters.values()), settings=SETTINGS, seed=3, turnaround=(0.02, 0.03)).start()
    today = clear_of_midnight(datetime.now)  # the machine's zone: the site names none
    yield {"port": pty.port, "meters": meters, "shift": shift, "today": today}
    pty.stop()


def site_for(bus: dict[str, Any], db: Path, extra: str) -> Site:
    plugins = Plugins()
    text = "\n".join([
        "channels:",
        f"  bus1: {{transport: rs485, port: {bus['port']}, baudrate: 19200, parity: E}}",
        "meters:",
        "  - " + json.dumps({"address": METER, "protocol": "dlt645", "channel": "bus1", "tariff": "home",
                             "quantities": ["energy_import", "energy_import_t1", "energy_import_t2",
                                            "energy_import_t3", "energy_import_t4"]}),
        "  - " + json.dumps({"address": WATER, "protocol": "cjt188", "channel": "bus1",
                             "options": {"meter_type": "10"}, "quantities": ["water_volume"]}),
        "tariffs:",
        "  home: {commodity: electricity, price: \"0.5\"}",
        "  water: {commodity: water, price: \"3.45\"}",
        f"store: sqlite:///{db}",
        extra,
    ])
    return parse_site(text, filename="<test>", drivers=plugins.meter_drivers(), transports=plugins.transports())


def one_round(site: Site, store: Any) -> None:
    async def go() -> None:
        async with Concentrator(site, plugins=Plugins(), store=store) as concentrator:
            await concentrator.run_round()
            await concentrator.flush()

    asyncio.run(go())


def midnight(today: date, days_ago: int) -> datetime:
    """Local midnight (the machine's zone, with its DST rules: the site names none)
    ``days_ago`` days before ``today``, in UTC."""
    return datetime.combine(today - timedelta(days=days_ago), time(0)).astimezone(UTC)


def test_missed_days_come_from_the_meters_records_or_are_reported_missed(bus: dict[str, Any], tmp_path: Path) -> None:
    site = site_for(bus, tmp_path / "m.db", "freeze: {daily: \"00:00\"}")
    today = bus["today"]
    with open_store(site.store) as store:
        # the concentrator last froze both meters three days ago (then it was down)
        keys = {m.address: m.key for m in site.meters}
        store.put_settings(services.FREEZE_SCOPE, {key: {"daily": midnight(today, 3).isoformat()} for key in keys.values()})
        one_round(site, store)
        frozen = [r for r in store.readings(meter=METER) if r.period == 1 and r.quantity == "1-0:1.8.0"]
        water = [r for r in store.readings(meter=WATER) if r.period == 1]
        missed = store.events(kind="freeze_missed")
    records = {at: forward[0] for at, forward, _ in bus["meters"][METER].daily_freezes()}
    # the DL/T 645 meter: each missed day from its own record, the exact frozen value
    assert [(r.timestamp, r.value) for r in frozen] == [
        (midnight(today, n), records[midnight(today, n).astimezone().replace(tzinfo=None)]) for n in (2, 1, 0)]
    assert all(r.detail.startswith("back-filled from the meter's freeze record") for r in frozen[:2])
    # the water meter keeps no records: only today's boundary, the older two reported missed
    assert [r.timestamp for r in water] == [midnight(today, 0)]
    assert water[0].data_time is not None and water[0].data_time > midnight(today, 0)
    (event,) = missed
    assert event.source == keys[WATER] and event.data["boundaries"] == [midnight(today, 2).isoformat(), midnight(today, 1).isoformat()]


def test_the_next_visit_freezes_nothing_twice(bus: dict[str, Any], tmp_path: Path) -> None:
    site = site_for(bus, tmp_path / "m.db", "freeze: {daily: \"00:00\", backfill_days: 2}")
    with open_store(site.store) as store:
        one_round(site, store)
        first = len([r for r in store.readings() if r.period == 1])
        one_round(site, store)
        second = len([r for r in store.readings() if r.period == 1])
    # a new meter: its records back two days (5 registers each), the water meter today's
    assert first == second == 2 * 5 + 1


def test_a_load_profile_point_stands_for_its_interval_boundary(bus: dict[str, Any], tmp_path: Path) -> None:
    site = site_for(bus, tmp_path / "m.db", "freeze: {profile: {interval: 1m, quantities: [energy_import]}}")
    with open_store(site.store) as store:
        one_round(site, store)
        points = [r for r in store.readings(meter=METER) if r.period == 0]
        read = [r for r in store.readings(meter=METER, quantity="1-0:1.8.0") if r.period is None]
    (point,) = points
    assert point.timestamp.second == 0 and point.timestamp.microsecond == 0
    assert point.data_time == read[0].timestamp and point.value == read[0].value
    assert timedelta(0) <= read[0].timestamp - point.timestamp < timedelta(minutes=1)


def test_a_prepaid_meter_is_charged_from_where_the_last_run_left_off(bus: dict[str, Any], tmp_path: Path) -> None:
    text_extra = "prepayment: {opening_balance: \"100\"}"
    site = site_for(bus, tmp_path / "m.db", text_extra)
    site = attrs.evolve(site, meters=tuple(attrs.evolve(m, prepaid=True) if m.address == METER else m
                                           for m in site.meters))
    with open_store(site.store) as store:
        one_round(site, store)  # the first visit: registers noted, nothing charged
        assert prepay.ledger(store, site.meters[0].key) == []
        before = store.readings(meter=METER, quantity="1-0:1.8.0")[-1].value
        bus["shift"][0] = timedelta(hours=3)  # three hours of load drawn before the next run
        one_round(site, store)  # a new Concentrator: the state comes from the store
        after = store.readings(meter=METER, quantity="1-0:1.8.0")[-1].value
        ledger = prepay.ledger(store, site.meters[0].key)
        balance = prepay.balance(store, site.meters[0].key, opening=Decimal(100))
    assert ledger and all(e.kind == prepay.CHARGE for e in ledger) and after > before
    charged = sum((e.amount for e in ledger), Decimal(0))
    # the month started at the first visit, so the charge is that stretch's bill: money is
    # rounded half up, as a bill rounds it (0.745 is 0.75, not the half-even 0.74)
    assert charged == ((after - before) * Decimal("0.5")).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    assert balance == Decimal(100) - charged
    assert not [r for r in store_quality(site)]  # both rounds read every quantity


def store_quality(site: Site) -> list[Any]:
    with open_store(site.store) as store:
        return [r for r in store.readings() if r.quality is not Quality.OK]


def test_a_prepaid_water_meter_has_its_valve_closed_and_opened_again(bus: dict[str, Any], tmp_path: Path) -> None:
    """CJ/T 188 valve control (write A017) through the command path, no credentials needed."""
    site = site_for(bus, tmp_path / "m.db", "prepayment: true")  # an opening balance of 0
    site = attrs.evolve(site, meters=tuple(attrs.evolve(m, prepaid=True, tariff="water") if m.address == WATER else m
                                           for m in site.meters))
    water = next(m for m in site.meters if m.address == WATER)
    valve = bus["meters"][WATER]
    with open_store(site.store) as store:
        one_round(site, store)
        closed = not valve.valve_open
        store.add_event(prepay.recharge_event(water.key, WATER, Decimal(10)))
        one_round(site, store)
        commands = [(c.command.name, dict(c.command.args), c.state.value) for c in store.commands(meter=WATER)]
    assert closed and valve.valve_open
    assert commands == [("valve", {"action": "close"}, "answered"), ("valve", {"action": "open"}, "answered")]


def test_a_prepaid_relay_closed_behind_the_concentrators_back_is_tripped_again(
        bus: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The meter's own status word 3 is believed over what was commanded: a relay that is
    closed while the balance is 0 (bridged by hand) raises supply_mismatch and is tripped."""
    monkeypatch.setenv("METERHUB_DLT645_PASSWORD", "02000000")
    monkeypatch.setenv("METERHUB_DLT645_OPERATOR", "00000001")
    monkeypatch.setenv("METERHUB_DISABLE_PLUGINS", "acme")  # the vendor example's policy wants confirm: true
    site = site_for(bus, tmp_path / "m.db", "prepayment: true")
    site = attrs.evolve(site, meters=tuple(
        attrs.evolve(m, prepaid=True, quantities=(*m.quantities, "0-0:96.5.3")) if m.address == METER else m
        for m in site.meters))
    relay = bus["meters"][METER]
    with open_store(site.store) as store:
        one_round(site, store)  # balance 0: tripped
        tripped = relay.relay_open
        relay.relay_open = False  # bridged
        one_round(site, store)
        mismatch = store.events(kind="supply_mismatch")
        trips = [c for c in store.commands(meter=METER) if dict(c.command.args) == {"action": "trip"}]
    assert tripped and relay.relay_open
    (event,) = mismatch
    assert (event.data["commanded"], event.data["meter_says"]) == ("off", "on")
    assert [c.state.value for c in trips] == ["answered", "answered"]
