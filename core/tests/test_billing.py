"""Bills from frozen readings in a real SQLite store, every figure worked out by hand in
the test; boundaries, missing and ambiguous readings, head-end readings, tariff schemes."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal as D
from typing import Any
from zoneinfo import ZoneInfo

import attrs
import pytest
from meterhub import jsonout
from meterhub.billing import (
    BillingError,
    bill_meter,
    billing_boundaries,
    billing_settings,
    find_site_meter,
    frozen_registers,
    setup_from_settings,
)
from meterhub.model import FreezeConfig, Meter, Reading, Site
from meterhub.store import open_store
from meterhub.tariffs import (
    STANDARD_SCHEME,
    Bill,
    BillLine,
    Consumption,
    PricedTariff,
    Tariff,
    TariffScheme,
    tariff_from_mapping,
    tariffs_from_config,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")

RESIDENTIAL = {  # the tariffs module's example: October is in the "other" season
    "commodity": "electricity",
    "schedule": {
        "weekdays": ["00:00 valley", "08:00 peak", "11:00 flat", "18:00 peak", "19:00 sharp", "21:00 flat", "22:00 valley"],
        "weekends": ["00:00 valley", "08:00 flat", "22:00 valley"],
    },
    "seasons": [
        {"name": "summer", "months": "6-9", "prices": {"sharp": "1.2283", "peak": "1.0228", "flat": "0.5583", "valley": "0.2888"}},
        {"name": "other", "months": "10-5", "prices": {"sharp": "1.1283", "peak": "0.9228", "flat": "0.5583", "valley": "0.3088"}},
    ],
    "tier_basis": "monthly",
    "tiers": [{"upto": 200, "adder": 0}, {"upto": 400, "adder": "0.05"}, {"adder": "0.30"}],
    "fixed": [{"description": "meter service fee", "amount": "2.00"}],
}
WATER = {
    "commodity": "water",
    "tier_basis": "annual",
    "tiers": [{"upto": 180, "price": "3.45"}, {"upto": 260, "price": "4.83"}, {"price": "5.83"}],
}
GAS = {"commodity": "gas", "price": "2.61", "fixed": [{"description": "service fee", "amount": "5"}]}

ENERGY = ("1-0:1.8.0", "1-0:1.8.1", "1-0:1.8.2", "1-0:1.8.3", "1-0:1.8.4")


def local(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    """A Shanghai wall-clock time as the aware UTC instant the store keeps."""
    return datetime(year, month, day, hour, minute, tzinfo=SHANGHAI).astimezone(UTC)


def frozen(meter: str, quantity: str, value: str, at: datetime, *, read: datetime | None = None, unit: str = "kWh",
           channel: str = "bus1", protocol: str = "dlt645", terminal: str = "") -> Reading:
    return Reading(meter, quantity, D(value), unit, at, channel=channel, protocol=protocol, data_time=read or at,
                   period=1, terminal=terminal, detail="back-filled" if read else "")


def energy(meter: str, at: datetime, *values: str, **kw: Any) -> list[Reading]:
    """Total, sharp, peak, flat, valley registers of ``meter`` frozen at ``at``."""
    return [frozen(meter, q, v, at, **kw) for q, v in zip(ENERGY, values, strict=True)]


@pytest.fixture
def store(tmp_path: Any) -> Iterator[Any]:
    s = open_store("sqlite:///" + str(tmp_path / "m.db"))
    yield s
    s.close()


def lines(bill: Bill) -> list[tuple[str, D, D, D]]:
    return [(line.description, line.quantity, line.price, line.amount) for line in bill.lines]


# -- boundaries ---------------------------------------------------------------------------------


def test_a_month_runs_from_the_local_midnight_of_its_first_to_that_of_the_next() -> None:
    start, end = billing_boundaries("2026-10", SHANGHAI)
    assert start == datetime(2026, 9, 30, 16, 0, tzinfo=UTC)  # 2026-10-01 00:00 +08:00
    assert end == datetime(2026, 10, 31, 16, 0, tzinfo=UTC)


def test_december_closes_in_january_and_the_settlement_day_and_freeze_time_move_the_boundaries() -> None:
    start, end = billing_boundaries("2026-12", SHANGHAI, daily=time(1, 30), settlement_day=25)
    assert start == datetime(2026, 12, 24, 17, 30, tzinfo=UTC)  # 2026-12-25 01:30 +08:00
    assert end == datetime(2027, 1, 24, 17, 30, tzinfo=UTC)


@pytest.mark.parametrize("period", ["2026-13", "2026-1", "October", ""])
def test_a_period_that_is_no_month_is_refused(period: str) -> None:
    with pytest.raises(ValueError, match="YYYY-MM"):
        billing_boundaries(period, SHANGHAI)


def test_a_settlement_day_past_the_28th_is_refused() -> None:
    with pytest.raises(ValueError, match="1..28"):
        billing_boundaries("2026-02", SHANGHAI, settlement_day=31)


# -- bills -------------------------------------------------------------------------------------


def test_electricity_time_of_use_with_monthly_tiers(store: Any) -> None:
    # Oct 1: total 1234.56 = sharp 100.10 + peak 400.20 + flat 434.16 + valley 300.10
    # Nov 1: total 1686.06 = sharp 120.60 + peak 580.45 + flat 534.16 + valley 450.85
    store.add_readings(energy("1", local(2026, 10, 1), "1234.56", "100.10", "400.20", "434.16", "300.10")
                       + energy("1", local(2026, 11, 1), "1686.06", "120.60", "580.45", "534.16", "450.85"))
    bill = bill_meter(store, tariff_from_mapping("residential", RESIDENTIAL), meter="1", period="2026-10", zone=SHANGHAI)
    assert lines(bill) == [
        ("sharp", D("20.50"), D("1.1283"), D("23.13")),  # 23.13015
        ("peak", D("180.25"), D("0.9228"), D("166.33")),  # 166.3347
        ("flat", D("100.00"), D("0.5583"), D("55.83")),  # 55.83
        ("valley", D("150.75"), D("0.3088"), D("46.55")),  # 46.5516
        ("tier 2 surcharge", D("200"), D("0.05"), D("10.00")),  # 200–400 of the month's 451.50
        ("tier 3 surcharge", D("51.50"), D("0.30"), D("15.45")),  # 451.50 − 400
        ("meter service fee", D("1"), D("2.00"), D("2.00")),
    ]
    # 23.13 + 166.33 + 55.83 + 46.55 + 10.00 + 15.45 + 2.00
    assert bill.total == D("319.29")
    assert bill.meter == "bus1/dlt645:1"


def test_the_bill_lists_the_register_values_it_used(store: Any) -> None:
    store.add_readings(energy("1", local(2026, 10, 1), "1234.56", "100.10", "400.20", "434.16", "300.10")
                       + energy("1", local(2026, 11, 1), "1686.06", "120.60", "580.45", "534.16", "450.85"))
    bill = bill_meter(store, tariff_from_mapping("residential", RESIDENTIAL), meter="1", period="2026-10", zone=SHANGHAI)
    used = [(r.edge, r.quantity, r.value, f"{r.boundary:%Y-%m-%d %H:%M}") for r in bill.registers]
    assert used[0] == ("start", "1-0:1.8.0", D("1234.56"), "2026-10-01 00:00")
    assert used[5] == ("end", "1-0:1.8.0", D("1686.06"), "2026-11-01 00:00")
    assert len(used) == 10 and bill.notes == ()
    assert "start 2026-10-01 00:00  1-0:1.8.0         1234.56 kWh" in bill.render()


def test_water_annual_tiers_count_the_year_from_the_january_freeze(store: Any) -> None:
    water = {"unit": "m3"}
    store.add_readings([
        frozen("9", "8-0:1.0.0", "512.340", local(2026, 1, 1), **water),
        frozen("9", "8-0:1.0.0", "682.340", local(2026, 10, 1), **water),  # 170.000 used Jan..Sep
        frozen("9", "8-0:1.0.0", "712.840", local(2026, 11, 1), **water),  # 30.500 in October
    ])
    bill = bill_meter(store, tariff_from_mapping("water", WATER), meter="9", period="2026-10", zone=SHANGHAI)
    assert lines(bill) == [
        ("tier 1", D("10.000"), D("3.45"), D("34.50")),  # 170 → 180 of the year
        ("tier 2", D("20.500"), D("4.83"), D("99.02")),  # 180 → 200.5: 99.015, half up
    ]
    assert bill.total == D("133.52")
    assert "year to date before 2026-10: 170.000" in bill.notes[0]


def test_january_starts_the_year_with_nothing_before_it(store: Any) -> None:
    store.add_readings([frozen("9", "8-0:1.0.0", "512.340", local(2026, 1, 1), unit="m3"),
                        frozen("9", "8-0:1.0.0", "712.340", local(2026, 2, 1), unit="m3")])
    bill = bill_meter(store, tariff_from_mapping("water", WATER), meter="9", period="2026-01", zone=SHANGHAI)
    # 200: 180 × 3.45 = 621.00, 20 × 4.83 = 96.60
    assert lines(bill) == [("tier 1", D(180), D("3.45"), D("621.00")), ("tier 2", D("20.000"), D("4.83"), D("96.60"))]
    assert bill.total == D("717.60")


def test_annual_tiers_without_the_january_freeze_name_it(store: Any) -> None:
    store.add_readings([frozen("9", "8-0:1.0.0", "682.340", local(2026, 10, 1), unit="m3"),
                        frozen("9", "8-0:1.0.0", "712.840", local(2026, 11, 1), unit="m3")])
    with pytest.raises(BillingError, match=r"no frozen 8-0:1.0.0 of meter bus1/dlt645:9 at 2026-01-01 00:00 \(the year's"):
        bill_meter(store, tariff_from_mapping("water", WATER), meter="9", period="2026-10", zone=SHANGHAI)


def test_gas_single_rate_and_a_fixed_fee(store: Any) -> None:
    store.add_readings([frozen("7", "7-0:3.0.0", "100.125", local(2026, 10, 1), unit="m3", protocol="cjt188"),
                        frozen("7", "7-0:3.0.0", "123.456", local(2026, 11, 1), unit="m3", protocol="cjt188")])
    bill = bill_meter(store, tariff_from_mapping("gas", GAS), meter="7", period="2026-10", zone=SHANGHAI)
    # 23.331 × 2.61 = 60.89391 → 60.89; + 5
    assert lines(bill) == [("gas", D("23.331"), D("2.61"), D("60.89")), ("service fee", D(1), D(5), D("5.00"))]
    assert bill.total == D("65.89")


def test_heat_is_billed_from_its_energy_register(store: Any) -> None:
    store.add_readings([frozen("5", "6-0:1.0.0", "1200", local(2026, 10, 1), protocol="cjt188"),
                        frozen("5", "6-0:1.0.0", "1450", local(2026, 11, 1), protocol="cjt188")])
    heat = tariff_from_mapping("heat", {"commodity": "heat", "price": "0.35"})
    bill = bill_meter(store, heat, meter="5", period="2026-10", zone=SHANGHAI)
    assert lines(bill) == [("heat", D(250), D("0.35"), D("87.50"))] and bill.tariff.unit == "kWh"  # 250 × 0.35


def test_the_settlement_day_and_freeze_time_pick_the_readings(store: Any) -> None:
    store.add_readings([frozen("7", "7-0:3.0.0", "100", local(2026, 10, 1), unit="m3"),  # the 1st: not used
                        frozen("7", "7-0:3.0.0", "104", local(2026, 10, 25, 1, 30), unit="m3"),
                        frozen("7", "7-0:3.0.0", "114", local(2026, 11, 25, 1, 30), unit="m3")])
    bill = bill_meter(store, tariff_from_mapping("gas", GAS), meter="7", period="2026-10", zone=SHANGHAI,
                      daily=time(1, 30), settlement_day=25)
    assert lines(bill)[0] == ("gas", D(10), D("2.61"), D("26.10"))  # 114 − 104


def test_a_back_filled_start_reading_is_noted(store: Any) -> None:
    boundary = local(2026, 10, 1)
    store.add_readings([
        frozen("7", "7-0:3.0.0", "100.125", boundary, read=boundary + timedelta(hours=5, minutes=12), unit="m3"),
        frozen("7", "7-0:3.0.0", "123.456", local(2026, 11, 1), unit="m3"),
    ])
    bill = bill_meter(store, tariff_from_mapping("gas", GAS), meter="7", period="2026-10", zone=SHANGHAI)
    assert bill.notes == ("start reading back-filled, read 2026-10-01 05:12",)
    assert "note: start reading back-filled, read 2026-10-01 05:12" in bill.render()
    start = bill.as_dict()["registers"][0]
    assert start["backfilled"] is True and start["read"].isoformat() == "2026-10-01T05:12:00+08:00"
    assert bill.as_dict()["registers"][1]["backfilled"] is False


def test_a_missing_end_freeze_names_the_quantity_the_meter_the_boundary_and_what_is_there(store: Any) -> None:
    store.add_readings(energy("1", local(2026, 10, 1), "1234.56", "100.10", "400.20", "434.16", "300.10")
                       + [frozen("1", "1-0:1.8.0", "1690.00", local(2026, 11, 2))])  # a day late
    with pytest.raises(BillingError) as caught:
        bill_meter(store, tariff_from_mapping("residential", RESIDENTIAL), meter="1", period="2026-10", zone=SHANGHAI)
    assert str(caught.value) == (
        "no frozen 1-0:1.8.0 of meter bus1/dlt645:1 at 2026-11-01 00:00 (the end of 2026-10); "
        "nearest frozen: 2026-10-01 00:00 = 1234.56, 2026-11-02 00:00 = 1690.00"
    )


def test_a_missing_tariff_register_at_one_end_is_named(store: Any) -> None:
    store.add_readings(energy("1", local(2026, 10, 1), "1234.56", "100.10", "400.20", "434.16", "300.10")
                       + energy("1", local(2026, 11, 1), "1686.06", "120.60", "580.45", "534.16", "450.85")[:4])
    with pytest.raises(BillingError, match=r"no frozen 1-0:1.8.4 of meter bus1/dlt645:1 at 2026-11-01 00:00"):
        bill_meter(store, tariff_from_mapping("residential", RESIDENTIAL), meter="1", period="2026-10", zone=SHANGHAI)


def test_a_time_of_use_tariff_on_totals_alone_names_the_missing_tariff_registers(store: Any) -> None:
    store.add_readings([frozen("1", "1-0:1.8.0", "1234.56", local(2026, 10, 1)),
                        frozen("1", "1-0:1.8.0", "1686.06", local(2026, 11, 1))])
    with pytest.raises(BillingError, match=r"time-of-use: the consumption must be given by period \(no frozen tariff "
                                           r"registers 1-0:1.8.1, 1-0:1.8.2, 1-0:1.8.3, 1-0:1.8.4 at 2026-10-01 00:00"):
        bill_meter(store, tariff_from_mapping("residential", RESIDENTIAL), meter="1", period="2026-10", zone=SHANGHAI)


def test_current_readings_at_the_boundary_are_not_taken_for_frozen_ones(store: Any) -> None:
    at = local(2026, 10, 1)
    store.add_readings([Reading("7", "7-0:3.0.0", D("99"), "m3", at, channel="bus1", protocol="dlt645"),
                        frozen("7", "7-0:3.0.0", "100.125", at, unit="m3")])
    assert frozen_registers(store, meter="7", at=at)["7-0:3.0.0"].value == D("100.125")
    assert frozen_registers(store, meter="7", at=at + timedelta(seconds=1)) == {}


def test_registers_going_backwards_are_a_billing_error_naming_the_meter(store: Any) -> None:
    store.add_readings([frozen("7", "7-0:3.0.0", "123.456", local(2026, 10, 1), unit="m3"),
                        frozen("7", "7-0:3.0.0", "100.125", local(2026, 11, 1), unit="m3")])
    with pytest.raises(BillingError, match=r"meter bus1/dlt645:7, 2026-10: register 7-0:3.0.0 went backwards"):
        bill_meter(store, tariff_from_mapping("gas", GAS), meter="7", period="2026-10", zone=SHANGHAI)


def test_an_address_shared_by_two_stored_meters_is_ambiguous(store: Any) -> None:
    for channel in ("bus1", "bus2"):
        store.add_readings([frozen("7", "7-0:3.0.0", "1", local(2026, 10, 1), unit="m3", channel=channel)])
    with pytest.raises(BillingError, match="meter 7 names 2 stored meters: bus1/dlt645:7, bus2/dlt645:7"):
        bill_meter(store, tariff_from_mapping("gas", GAS), meter="7", period="2026-10", zone=SHANGHAI)


def test_an_unknown_meter_is_a_billing_error(store: Any) -> None:
    with pytest.raises(BillingError, match="meter 8: no readings of it in the store"):
        bill_meter(store, tariff_from_mapping("gas", GAS), meter="8", period="2026-10", zone=SHANGHAI)


# -- a head-end's readings: terminal and measuring point -----------------------------------------


def headend(store: Any) -> None:
    """Point 3 of two terminals, frozen as a head-end stores what terminals send."""
    for terminal, start, end in (("32010001", "1000.00", "1100.00"), ("32010002", "5000.00", "5300.00")):
        store.add_readings([
            frozen("3", "1-0:1.8.0", start, local(2026, 10, 1), channel="", protocol="gdw1376.1", terminal=terminal),
            frozen("3", "1-0:1.8.0", end, local(2026, 11, 1), channel="", protocol="gdw1376.1", terminal=terminal),
        ])


def test_a_head_end_bills_a_measuring_point_of_the_terminal_named(store: Any) -> None:
    headend(store)
    flat = tariff_from_mapping("flat", {"commodity": "electricity", "price": "0.5"})
    bill = bill_meter(store, flat, meter="3", terminal="32010002", period="2026-10", zone=SHANGHAI)
    assert lines(bill) == [("electricity", D("300.00"), D("0.5"), D("150.00"))]  # 5300 − 5000
    assert bill.meter == "gdw1376.1:3 of terminal 32010002"


def test_a_point_of_several_terminals_needs_the_terminal(store: Any) -> None:
    headend(store)
    flat = tariff_from_mapping("flat", {"commodity": "electricity", "price": "0.5"})
    with pytest.raises(BillingError, match="by 2 meters: gdw1376.1:3 of terminal 32010001, gdw1376.1:3 of terminal "
                                           "32010002; name the terminal"):
        bill_meter(store, flat, meter="3", period="2026-10", zone=SHANGHAI)


# -- the settings run keeps for bill ------------------------------------------------------------


def test_billing_settings_keep_zone_freeze_times_tariffs_and_assignments() -> None:
    site = Site(meters=(Meter("1", "dlt645", "bus1", tariff="residential"), Meter("2", "dlt645", "bus1")),
                timezone="Asia/Shanghai", tariff_sources={"gas": GAS}, freeze=FreezeConfig(daily=time(0, 30), monthly_day=5))
    assert billing_settings(site) == {"timezone": "Asia/Shanghai", "daily": "00:30", "settlement_day": 5,
                                      "tariffs": {"gas": GAS}, "meters": {"bus1/dlt645:1": "residential"}}
    assert jsonout.dumps(billing_settings(Site())) == (
        '{"timezone": "", "daily": "00:00", "settlement_day": 1, "tariffs": {}, "meters": {}}')


def test_the_settings_round_trip_through_the_store_into_a_setup(store: Any) -> None:
    site = Site(meters=(Meter("1", "dlt645", "bus1", tariff="gas"),), timezone="Asia/Shanghai",
                tariff_sources={"gas": GAS}, freeze=FreezeConfig(daily=time(0, 30), monthly_day=5))
    store.put_settings("billing", billing_settings(site))
    setup = setup_from_settings(store.settings("billing"), {"standard": STANDARD_SCHEME})
    assert (setup.zone, setup.daily, setup.settlement_day) == (SHANGHAI, time(0, 30), 5)
    assert setup.tariff_of("bus1/dlt645:1") == "gas" and setup.tariffs["gas"] == tariff_from_mapping("gas", GAS)


@pytest.mark.parametrize(("settings", "message"), [
    ({"daily": "24:00"}, "billing.daily: a time of day HH:MM, not '24:00'"),
    ({"settlement_day": 31}, "billing.settlement_day: a day of the month 1..28, not 31"),
    ({"timezone": "Mars/Olympus"}, "billing.timezone: unknown time zone 'Mars/Olympus'"),
    ({"tariffs": {"gas": {"commodity": "steam"}}}, "tariffs.gas.commodity: expected one of"),
])
def test_kept_settings_that_cannot_be_used_name_the_setting(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        setup_from_settings(settings, {"standard": STANDARD_SCHEME})


def test_a_site_meter_is_found_by_name_key_or_lone_address() -> None:
    meters = [Meter("1", "dlt645", "bus1", name="flat-3a"), Meter("1", "modbus", "bus2"), Meter("9", "cjt188", "bus1")]
    assert find_site_meter(meters, "flat-3a") is meters[0]
    assert find_site_meter(meters, "bus2/modbus:1") is meters[1]
    assert find_site_meter(meters, "9") is meters[2] and find_site_meter(meters, "5") is None
    with pytest.raises(BillingError, match="meter 1 names 2 meters of the site: bus1/dlt645:1, bus2/modbus:1"):
        find_site_meter(meters, "1")


# -- tariff schemes --------------------------------------------------------------------------


@attrs.frozen
class PerUnit:
    """A plugin's tariff: one rate per unit, nothing else."""

    name: str
    commodity: str
    rate: D
    unit: str = "m³"
    currency: str = "EUR"
    tier_basis: str = "monthly"

    def bill(self, meter: str, period: str, consumption: Consumption, *, year_to_date_before: D = D(0)) -> Bill:
        amount = (consumption.total * self.rate).quantize(D("0.01"))
        line = BillLine("use", consumption.total, self.unit, self.rate, amount, f"{consumption.total} at {self.rate}")
        return Bill(meter, period, self, (line,), amount)


@attrs.frozen
class PerUnitScheme:
    name: str = "per-unit"
    description: str = "one rate per unit"

    def make(self, name: str, mapping: Mapping[str, Any]) -> PricedTariff:
        if set(mapping) != {"commodity", "rate"}:
            raise ValueError("give commodity and rate, nothing else")
        return PerUnit(name, mapping["commodity"], D(str(mapping["rate"])))


SCHEMES = {"standard": STANDARD_SCHEME, "per-unit": PerUnitScheme()}


def test_the_standard_scheme_and_tariff_fulfil_the_protocols() -> None:
    assert isinstance(STANDARD_SCHEME, TariffScheme) and STANDARD_SCHEME.name == "standard"
    assert isinstance(tariff_from_mapping("gas", GAS), PricedTariff)
    assert isinstance(PerUnitScheme(), TariffScheme) and isinstance(PerUnit("x", "water", D(1)), PricedTariff)


def test_entries_are_made_by_the_scheme_they_name_standard_by_default() -> None:
    made = tariffs_from_config({"gas": GAS, "water": {"scheme": "per-unit", "commodity": "water", "rate": "1.5"}}, SCHEMES)
    assert made["gas"] == tariff_from_mapping("gas", GAS)
    assert made["water"] == PerUnit("water", "water", D("1.5"))  # the scheme never sees "scheme"


def test_a_plugin_tariff_bills_from_the_store(store: Any) -> None:
    store.add_readings([frozen("9", "8-0:1.0.0", "10.5", local(2026, 10, 1), unit="m3"),
                        frozen("9", "8-0:1.0.0", "14.0", local(2026, 11, 1), unit="m3")])
    tariff = tariffs_from_config({"w": {"scheme": "per-unit", "commodity": "water", "rate": "2"}}, SCHEMES)["w"]
    bill = bill_meter(store, tariff, meter="9", period="2026-10", zone=SHANGHAI)
    assert lines(bill) == [("use", D("3.5"), D(2), D("7.00"))] and bill.total == D("7.00")  # 3.5 × 2
    assert [r.value for r in bill.registers] == [D("10.5"), D("14.0")]


def test_an_unknown_scheme_is_named_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"^tariffs\.w\.scheme: unknown scheme 'flat'; known: per-unit, standard$"):
        tariffs_from_config({"w": {"scheme": "flat", "commodity": "water"}}, SCHEMES)


def test_a_schemes_error_gets_the_entrys_path() -> None:
    with pytest.raises(ValueError, match=r"^tariffs\.w: give commodity and rate, nothing else$"):
        tariffs_from_config({"w": {"scheme": "per-unit", "commodity": "water"}}, SCHEMES)


def test_a_standard_entrys_error_keeps_its_key_path() -> None:
    with pytest.raises(ValueError, match=r"^tariffs\.gas\.price: must be a non-negative number"):
        tariffs_from_config({"gas": {"commodity": "gas", "price": "-1"}}, SCHEMES)


def test_tariff_from_mapping_still_refuses_a_scheme_key() -> None:
    with pytest.raises(ValueError, match=r"tariffs\.gas\.scheme: unknown key"):
        tariff_from_mapping("gas", {**GAS, "scheme": "standard"})


def test_a_standard_tariff_bills_through_its_method_as_the_function_does() -> None:
    gas: Tariff = tariff_from_mapping("gas", GAS)
    assert gas.bill("7", "2026-10", Consumption(D(10))).total == D("31.10")  # 10 × 2.61 + 5
