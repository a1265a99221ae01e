"""Tariffs and bills: every scheme against bills computed by hand (the arithmetic is in the
comments), register checks, configuration errors, and a tier property."""

from __future__ import annotations

from datetime import datetime, time
from decimal import Decimal as D

import pytest
from hypothesis import given
from hypothesis import strategies as st
from meterhub import jsonout
from meterhub.tariffs import (
    Consumption,
    Season,
    Tariff,
    Tier,
    TouSchedule,
    bill,
    consumption_from_registers,
    period_at,
    tariff_from_mapping,
)

RESIDENTIAL = {  # as YAML gives it: unquoted decimals are floats, dates are dates
    "commodity": "electricity",
    "schedule": {
        "weekdays": ["00:00 valley", "08:00 peak", "11:00 flat", "18:00 peak", "19:00 sharp", "21:00 flat", "22:00 valley"],
        "weekends": ["00:00 valley", "08:00 flat", "22:00 valley"],
        "holidays": ["00:00 valley"],
        "holiday_dates": [datetime(2026, 10, 1).date(), "2026-10-02"],
        "workdays": ["2026-10-10"],
    },
    "seasons": [
        {"name": "summer", "months": "6-9", "prices": {"sharp": "1.2283", "peak": 1.0228, "flat": "0.5583", "valley": "0.2888"}},
        {"name": "other", "months": "10-5", "prices": {"sharp": "1.1283", "peak": "0.9228", "flat": "0.5583", "valley": "0.3088"}},
    ],
    "tiers": [{"upto": 200, "adder": 0}, {"upto": 400, "adder": "0.05"}, {"adder": "0.30"}],
    "fixed": [{"description": "meter service fee", "amount": "2.00"}],
}
WATER = {
    "commodity": "water",
    "tier_basis": "annual",
    "tiers": [{"upto": 180, "price": "3.45"}, {"upto": 260, "price": "4.83"}, {"price": "5.83"}],
}
JULY_USE = Consumption(D(450), {"sharp": D(20), "peak": D(180), "flat": D(100), "valley": D(150)})


def amounts(b) -> list[tuple[str, D]]:
    return [(line.description, line.amount) for line in b.lines]


def simple_tou(**prices: str) -> Tariff:
    periods = list(prices)
    schedule = TouSchedule([(time(5 * i), p) for i, p in enumerate(periods)])
    return Tariff("tou", "electricity", "kWh", seasons=[Season("all year", range(1, 13), {k: D(v) for k, v in prices.items()})],
                  schedule=schedule)


def test_pure_time_of_use() -> None:
    tariff = simple_tou(sharp="1.2", peak="1.0", flat="0.6", valley="0.3")
    use = Consumption(D("240.75"), {"sharp": D(10), "peak": D("50.5"), "flat": D(100), "valley": D("80.25")})
    b = bill(tariff, "m1", "2026-03", use)
    assert amounts(b) == [
        ("sharp", D("12.00")),   # 10 × 1.2
        ("peak", D("50.50")),    # 50.5 × 1.0
        ("flat", D("60.00")),    # 100 × 0.6
        ("valley", D("24.08")),  # 80.25 × 0.3 = 24.075 → 24.08 half up
    ]
    assert b.total == D("146.58")  # 12 + 50.50 + 60 + 24.08


def test_monthly_tiers_crossing_two_thresholds() -> None:
    tariff = tariff_from_mapping("flat", {"commodity": "electricity", "price": "0.5283", "tiers": RESIDENTIAL["tiers"]})
    b = bill(tariff, "m1", "2026-03", Consumption(D(450)))
    assert amounts(b) == [
        ("electricity", D("237.74")),       # 450 × 0.5283 = 237.735 → 237.74
        ("tier 2 surcharge", D("10.00")),   # 200 kWh in 200–400 × 0.05
        ("tier 3 surcharge", D("15.00")),   # 50 kWh above 400 × 0.30
    ]
    assert b.total == D("262.74")


def test_annual_water_tiers_place_october_across_a_threshold() -> None:
    water = tariff_from_mapping("water", WATER)
    b = bill(water, "w1", "2026-10", Consumption(D(30)), year_to_date_before=D(170))
    assert amounts(b) == [
        ("tier 1", D("34.50")),  # 170..180: 10 m³ × 3.45
        ("tier 2", D("96.60")),  # 180..200: 20 m³ × 4.83
    ]
    assert b.total == D("131.10")
    assert "170 m³ before this month" in b.lines[0].basis
    later = bill(water, "w1", "2026-11", Consumption(D(20)), year_to_date_before=D(250))
    assert amounts(later) == [("tier 2", D("48.30")), ("tier 3", D("58.30"))]  # 10 × 4.83, 10 × 5.83


def test_monthly_tiers_refuse_a_year_to_date() -> None:
    tariff = tariff_from_mapping("flat", {"commodity": "electricity", "price": "0.5", "tiers": RESIDENTIAL["tiers"]})
    with pytest.raises(ValueError, match="monthly"):
        bill(tariff, "m1", "2026-03", Consumption(D(1)), year_to_date_before=D(5))


def test_time_of_use_and_tiers_combined_in_summer() -> None:
    b = bill(tariff_from_mapping("residential", RESIDENTIAL), "m1", "2026-07", JULY_USE)
    assert amounts(b) == [
        ("sharp", D("24.57")),              # 20 × 1.2283 = 24.566 → 24.57
        ("peak", D("184.10")),              # 180 × 1.0228 = 184.104 → 184.10
        ("flat", D("55.83")),               # 100 × 0.5583
        ("valley", D("43.32")),             # 150 × 0.2888
        ("tier 2 surcharge", D("10.00")),   # 200 of the 450 kWh in 200–400 × 0.05
        ("tier 3 surcharge", D("15.00")),   # 50 kWh above 400 × 0.30
        ("meter service fee", D("2.00")),
    ]
    assert b.total == D("334.82")  # 24.57 + 184.10 + 55.83 + 43.32 + 10 + 15 + 2
    assert b.lines[1].basis.startswith("peak 08:00–11:00 and 18:00–19:00 on weekdays")
    assert "summer prices" in b.lines[1].basis


def test_winter_season_prices() -> None:
    b = bill(tariff_from_mapping("residential", RESIDENTIAL), "m1", "2026-01", JULY_USE)
    assert amounts(b)[:4] == [
        ("sharp", D("22.57")),    # 20 × 1.1283 = 22.566 → 22.57
        ("peak", D("166.10")),    # 180 × 0.9228 = 166.104 → 166.10
        ("flat", D("55.83")),     # 100 × 0.5583
        ("valley", D("46.32")),   # 150 × 0.3088
    ]
    assert b.total == D("317.82")  # 22.57 + 166.10 + 55.83 + 46.32 + 10 + 15 + 2


@pytest.mark.parametrize(
    ("when", "period"),
    [
        (datetime(2026, 12, 3, 0, 0), "valley"),   # Thursday
        (datetime(2026, 12, 3, 9, 0), "peak"),
        (datetime(2026, 12, 3, 19, 30), "sharp"),
        (datetime(2026, 12, 3, 21, 59), "flat"),
        (datetime(2026, 12, 3, 23, 0), "valley"),
        (datetime(2026, 12, 5, 9, 0), "flat"),     # Saturday: weekend schedule
        (datetime(2026, 10, 1, 9, 0), "valley"),   # a Thursday, but a holiday
        (datetime(2026, 10, 2, 12, 0), "valley"),  # holiday given as text
        (datetime(2026, 10, 10, 9, 0), "peak"),    # a Saturday worked in exchange (调休)
    ],
)
def test_period_at(when: datetime, period: str) -> None:
    assert period_at(tariff_from_mapping("residential", RESIDENTIAL), when) == period


def test_period_at_without_time_of_use() -> None:
    assert period_at(tariff_from_mapping("water", WATER), datetime(2026, 1, 1)) == "all"


def test_fixed_charge() -> None:
    gas = tariff_from_mapping("gas", {"commodity": "gas", "price": "2.61", "fixed": [{"description": "service fee", "amount": 5}]})
    b = bill(gas, "g1", "2026-02", Consumption(D("12.5")))
    assert amounts(b) == [("gas", D("32.63")), ("service fee", D("5.00"))]  # 12.5 × 2.61 = 32.625 → 32.63
    assert b.total == D("37.63")
    assert b.lines[0].unit == "m³"


def test_rounding_is_per_line_half_up_and_the_total_adds_the_lines() -> None:
    b = bill(simple_tou(peak="0.125", valley="0.125"), "m1", "2026-03", Consumption(D(2), {"peak": D(1), "valley": D(1)}))
    assert amounts(b) == [("peak", D("0.13")), ("valley", D("0.13"))]  # 0.125 → 0.13 (half up, not half even)
    assert b.total == D("0.26")  # the sum of the printed lines, not round(0.25)


def test_bill_as_dict_and_render() -> None:
    b = bill(tariff_from_mapping("water", WATER), "w1", "2026-10", Consumption(D(30)), year_to_date_before=D(170))
    data = b.as_dict()
    assert data["total"] == D("131.10") and isinstance(data["lines"][0]["amount"], D)
    assert '"total": 131.10' in jsonout.dumps(data)
    text = b.render()
    assert "tier 2" in text and "131.10 CNY" in text


def test_registers_going_backwards_are_an_error() -> None:
    with pytest.raises(ValueError, match="went backwards"):
        consumption_from_registers({"8-0:1.0.0": D("120.5")}, {"8-0:1.0.0": D("3.2")})


def test_rollover() -> None:
    use = consumption_from_registers({"1-0:1.8.0": D("999990.00")}, {"1-0:1.8.0": D("10.50")}, rollover=D(1000000))
    assert use.total == D("20.50")  # 1000000 − 999990.00 + 10.50


def test_tou_registers_not_summing_give_an_unattributed_line() -> None:
    start = {"1-0:1.8.0": D("1000.00"), "1-0:1.8.1": D("100.00"), "1-0:1.8.2": D("300.00"),
             "1-0:1.8.3": D("400.00"), "1-0:1.8.4": D("200.00")}
    end = {"1-0:1.8.0": D("1100.02"), "1-0:1.8.1": D("110.00"), "1-0:1.8.2": D("330.00"),
           "1-0:1.8.3": D("440.00"), "1-0:1.8.4": D("220.00")}
    use = consumption_from_registers(start, end)
    assert use.by_period == {"sharp": D(10), "peak": D(30), "flat": D(40), "valley": D(20)}
    assert use.unattributed == D("0.02")  # 100.02 − 100, within 4 registers × 0.01
    b = bill(tariff_from_mapping("residential", RESIDENTIAL), "m1", "2026-03", use)
    line = b.lines[4]
    assert (line.description, line.quantity, line.amount) == ("unattributed", D("0.02"), D("0.01"))  # 0.02 × 0.5583
    end["1-0:1.8.0"] = D("1100.05")
    with pytest.raises(ValueError, match="resolution"):
        consumption_from_registers(start, end)


def test_floats_are_refused() -> None:
    with pytest.raises(TypeError):
        Consumption(1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        consumption_from_registers({"8-0:1.0.0": 1.0}, {"8-0:1.0.0": D(2)})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        Tier(price=3.45)  # type: ignore[arg-type]
    water = tariff_from_mapping("water", WATER)
    with pytest.raises(TypeError):
        bill(water, "w1", "2026-10", Consumption(D(1)), year_to_date_before=170.0)  # type: ignore[arg-type]


def test_a_float_from_yaml_is_taken_by_its_written_digits() -> None:
    tariff = tariff_from_mapping("gas", {"commodity": "gas", "price": 2.61})
    assert tariff.seasons[0].prices["all"] == D("2.61")
    with pytest.raises(ValueError, match=r"tariffs\.gas\.price: .* quote it"):
        tariff_from_mapping("gas", {"commodity": "gas", "price": 0.1 + 0.2})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tiers": [{"upto": 200, "adder": 0}, {"upto": 150, "adder": "0.05"}, {"adder": "0.3"}]},
         "tariffs.residential.tiers[1].upto: must be above tiers[0].upto (200)"),
        ({"tiers": [{"upto": 200, "adder": 0}, {"upto": 400, "adder": "0.05"}]},
         "tariffs.residential.tiers[1].upto: the last tier has no upper bound"),
        ({"tiers": [{"upto": 200, "adder": 0}, {"price": "0.05"}]},
         "tariffs.residential.tiers[1].price: the tiers above give adders"),
        ({"commodity": "steam"}, "tariffs.residential.commodity: expected one of"),
        ({"tier_basis": "weekly"}, "tariffs.residential.tier_basis:"),
        ({"colour": "red"}, "tariffs.residential.colour: unknown key"),
        ({"seasons": [{"name": "summer", "months": "6-9", "prices": {"peak": "1"}}]},
         "tariffs.residential.seasons: no season has Jan, Feb, Mar, Apr, May, Oct, Nov, Dec"),
        ({"seasons": [{"months": "6-9", "prices": {"peek": "1"}}]}, "tariffs.residential.seasons[0].prices.peek: unknown period"),
        ({"seasons": [{"months": "6-9", "prices": {"peak": "x"}}]}, "tariffs.residential.seasons[0].prices.peak: must be a number"),
        ({"seasons": [{"months": [1, 2, 13], "prices": {"peak": "1"}}]}, "tariffs.residential.seasons[0].months[2]: a month is 1..12"),
        ({"schedule": {"weekdays": ["00:00 valley", "8:00peak"]}}, "tariffs.residential.schedule.weekdays[1]: write"),
        ({"schedule": {"weekdays": ["00:00 valley", "08:00 peak"]}},
         "tariffs.residential.schedule: uses peak, valley but the prices are for flat, peak, sharp, valley"),
        ({"schedule": {"weekdays": ["01:00 valley"]}}, "tariffs.residential.schedule.weekdays[0]: the first period starts at 00:00"),
        ({"fixed": [{"description": "fee", "amount": "-1"}]}, "tariffs.residential.fixed[0].amount: must be a non-negative"),
    ],
)
def test_configuration_errors_name_the_key_path(change: dict, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        tariff_from_mapping("residential", {**RESIDENTIAL, **change})
    assert str(caught.value).startswith(message)


def test_tou_prices_without_a_schedule() -> None:
    with pytest.raises(ValueError, match=r"^tariffs\.t\.schedule: missing"):
        tariff_from_mapping("t", {"commodity": "electricity", "prices": {"peak": "1", "valley": "0.3"}})


def test_time_of_use_needs_consumption_by_period() -> None:
    with pytest.raises(ValueError, match="by period"):
        bill(tariff_from_mapping("residential", RESIDENTIAL), "m1", "2026-07", Consumption(D(450)))


# Amounts in hundredths: any split of a month's consumption lands exactly on the tier
# boundaries' arithmetic; the property compares the exact (unrounded) sums quantity × price,
# because rounding each bill's lines to cents may differ by a cent between one bill and two.
quantities = st.decimals(min_value=0, max_value=2000, places=2)


def _exact(b) -> D:
    return sum((line.quantity * line.price for line in b.lines), D(0))


@given(before=quantities, first=quantities, second=quantities)
def test_annual_tiers_split_across_bills_add_up(before: D, first: D, second: D) -> None:
    water = tariff_from_mapping("water", WATER)
    electricity = tariff_from_mapping("e", {"commodity": "electricity", "price": "0.4883", "tier_basis": "annual",
                                            "tiers": [{"upto": 2760, "adder": 0}, {"upto": 4800, "adder": "0.05"},
                                                      {"adder": "0.3"}]})
    for tariff in (water, electricity):
        one = bill(tariff, "m", "2026-10", Consumption(first + second), year_to_date_before=before)
        a = bill(tariff, "m", "2026-10", Consumption(first), year_to_date_before=before)
        b = bill(tariff, "m", "2026-11", Consumption(second), year_to_date_before=before + first)
        assert _exact(a) + _exact(b) == _exact(one)


def test_water_registers_give_a_total_only() -> None:
    use = consumption_from_registers({"8-0:1.0.0": D("120.5")}, {"8-0:1.0.0": D("150.25")})
    assert (use.total, dict(use.by_period), use.unattributed) == (D("29.75"), {}, D(0))


def test_a_tariff_register_missing_from_one_reading_is_an_error() -> None:
    with pytest.raises(ValueError, match="not in both readings"):
        consumption_from_registers({"1-0:1.8.0": D(1), "1-0:1.8.2": D(1)}, {"1-0:1.8.0": D(2)})


def test_a_tariff_built_in_code_is_checked_too() -> None:
    with pytest.raises(ValueError, match="cover each month"):
        Tariff("t", "gas", "m³", seasons=[Season("summer", range(6, 10), {"all": D(1)})])
    with pytest.raises(ValueError, match="need a schedule"):
        Tariff("t", "electricity", "kWh", seasons=[Season("all year", range(1, 13), {"peak": D(1)})])
    with pytest.raises(ValueError, match="thresholds must rise"):
        Tariff("t", "water", "m³", tiers=[Tier(D(10), price=D(1)), Tier(D(5), price=D(2)), Tier(price=D(3))])
