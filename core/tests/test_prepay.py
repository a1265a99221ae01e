"""The prepayment ledger: charges computed by hand for time-of-use, tiers and water, the
month's charges adding up to its bill, balances from a real SQLite store (also with two
writers at once), and the supply decisions and the commands that carry them out."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from meterhub import prepay
from meterhub.errors import NotSupported
from meterhub.model import Event, Meter, Origin, PrepayConfig
from meterhub.store import open_store
from meterhub.tariffs import Bill, bill, consumption_from_registers, tariff_from_mapping

CST = timezone(timedelta(hours=8))
SINCE = datetime(2026, 12, 5, 2, 0, tzinfo=UTC)
UNTIL = datetime(2026, 12, 5, 3, 0, tzinfo=UTC)
KEY = "bus1/dlt645:000000000001"
ADDRESS = "000000000001"

TOU = tariff_from_mapping("tou", {
    "commodity": "electricity",
    "schedule": {"weekdays": ["00:00 valley", "08:00 peak", "11:00 flat", "19:00 sharp", "21:00 flat", "22:00 valley"]},
    "prices": {"sharp": "1.2", "peak": "1.0", "flat": "0.6", "valley": "0.3"},
    "fixed": [{"description": "meter service fee", "amount": "2.00"}],
})
TIERED = tariff_from_mapping("tiered", {
    "commodity": "electricity",
    "price": "0.50",
    "tiers": [{"upto": 200, "adder": 0}, {"upto": 400, "adder": "0.05"}, {"adder": "0.30"}],
    "fixed": [{"description": "meter service fee", "amount": "2.00"}],
})
WATER = tariff_from_mapping("water", {
    "commodity": "water",
    "tier_basis": "annual",
    "tiers": [{"upto": 180, "price": "3.45"}, {"upto": 260, "price": "4.83"}, {"price": "5.83"}],
    "fixed": [{"description": "service fee", "amount": "5"}],
})
RESIDENTIAL = tariff_from_mapping("residential", {  # TOU with seasons and monthly tier surcharges
    "commodity": "electricity",
    "schedule": {"weekdays": ["00:00 valley", "08:00 peak", "11:00 flat", "18:00 peak", "19:00 sharp", "21:00 flat",
                              "22:00 valley"]},
    "seasons": [
        {"name": "summer", "months": "6-9", "prices": {"sharp": "1.2283", "peak": "1.0228", "flat": "0.5583",
                                                       "valley": "0.2888"}},
        {"name": "other", "months": "10-5", "prices": {"sharp": "1.1283", "peak": "0.9228", "flat": "0.5583",
                                                       "valley": "0.3088"}},
    ],
    "tiers": [{"upto": 200, "adder": 0}, {"upto": 400, "adder": "0.05"}, {"adder": "0.30"}],
    "fixed": [{"description": "meter service fee", "amount": "2.00"}],
})


def energy(total: str, sharp: str, peak: str, flat: str, valley: str) -> dict[str, D]:
    return {"1-0:1.8.0": D(total), "1-0:1.8.1": D(sharp), "1-0:1.8.2": D(peak), "1-0:1.8.3": D(flat),
            "1-0:1.8.4": D(valley)}


def total(value: str) -> dict[str, D]:
    return {"1-0:1.8.0": D(value)}


def charge_of(tariff, previous, current, month_start, **kw) -> prepay.Charge:
    return prepay.charge(tariff, meter=ADDRESS, previous=previous, current=current, month_start=month_start,
                         since=SINCE, until=UNTIL, zone=CST, **kw)


# --- charges by hand -------------------------------------------------------------------


def test_time_of_use_charge_prices_each_period_and_leaves_the_fixed_charge_out() -> None:
    start = energy("1000", "100", "300", "400", "200")
    previous = energy("1010", "102", "303", "404", "201")    # month to date: 2 sharp, 3 peak, 4 flat, 1 valley
    current = energy("1020.5", "102", "308", "409.5", "201")  # this stretch: 5 peak, 5.5 flat
    c = charge_of(TOU, previous, current, start)
    # before: 2×1.2 + 3×1.0 + 4×0.6 + 1×0.3 = 8.10; after: 2.40 + 8×1.0 + 9.5×0.6 + 0.30 = 16.40
    assert c.amount == D("8.30")  # = 5×1.0 + 5.5×0.6; the 2.00 fee is in neither difference
    assert c.consumption == D("10.5")
    assert c.unit == "kWh"
    assert c.basis == "2026-12 to date 10 → 20.5 kWh, priced 8.10 → 16.40 CNY without fixed charges"
    assert dict(c.registers) == current
    assert (c.since, c.until) == (SINCE, UNTIL)


def test_tiered_charge_splits_the_stretch_that_crosses_a_tier_boundary() -> None:
    start = total("5000")
    # 190 → 210 kWh this month: 10 kWh below 200 at 0.50, 10 above at 0.50 + 0.05
    c = charge_of(TIERED, total("5190"), total("5210"), start)
    assert c.amount == D("10.50")  # 20 × 0.50 + 10 × 0.05
    assert c.consumption == D(20)


def test_tiered_charges_before_and_after_the_boundary_are_priced_in_their_own_tier() -> None:
    start = total("5000")
    assert charge_of(TIERED, total("5100"), total("5150"), start).amount == D("25.00")  # 50 × 0.50
    assert charge_of(TIERED, total("5390"), total("5420"), start).amount == D("21.50")  # 30 × 0.50 + 10 × 0.05 (to 400) + 20 × 0.30 (above)


def test_water_charge_on_annual_tiers_uses_the_year_before_the_month() -> None:
    start, previous, current = {"8-0:1.0.0": D("1000.000")}, {"8-0:1.0.0": D("1005.000")}, {"8-0:1.0.0": D("1012.500")}
    c = charge_of(WATER, previous, current, start, year_to_date_before=D(170))
    # before: 170..175 m³ this year, 5 × 3.45 = 17.25; after: 170..182.5, 10 × 3.45 = 34.50
    # + 2.5 × 4.83 = 12.075 → 12.08, 46.58; the stretch 5 × 3.45 + 2.5 × 4.83 = 29.325 → 29.33
    assert c.amount == D("29.33")
    assert c.consumption == D("7.500")
    assert c.unit == "m³"
    assert c.registers == {"8-0:1.0.0": D("1012.500")}


class MeteredPlusRent:
    """A plugin scheme's priced tariff: the tiered tariff's bill plus a flat 7.00 rent."""

    name, commodity, unit, currency, tier_basis = "rent", "electricity", "kWh", "EUR", "monthly"

    def bill(self, meter: str, period: str, consumption, *, year_to_date_before: D = D(0)) -> Bill:
        inner = bill(TIERED, meter, period, consumption, year_to_date_before=year_to_date_before)
        return Bill(meter, period, TIERED, inner.lines, inner.total + D("7.00"))


def test_a_plugin_tariff_is_charged_through_its_own_bill() -> None:
    c = charge_of(MeteredPlusRent(), total("5190"), total("5210"), total("5000"))
    assert c.amount == D("10.50")  # the rent is a fixed charge: in neither difference
    assert c.basis.endswith("priced 95.00 → 105.50 EUR without fixed charges")


def test_month_is_that_of_the_end_in_the_zone_given() -> None:
    # 2026-11-30 16:30 UTC is 2026-12-01 00:30 in UTC+8: the December bill, with winter prices
    end = datetime(2026, 11, 30, 16, 30, tzinfo=UTC)
    c = prepay.charge(TIERED, meter=ADDRESS, previous=total("0"), current=total("1"), month_start=total("0"),
                      since=end - timedelta(minutes=15), until=end, zone=CST)
    assert c.basis.startswith("2026-12 ")


def test_a_stretch_that_starts_before_the_month_is_refused() -> None:
    with pytest.raises(ValueError, match="not within month 2026-12"):
        charge_of(TIERED, total("4990"), total("5010"), total("5000"))


def test_a_register_going_backwards_is_refused() -> None:
    with pytest.raises(ValueError, match="went backwards"):
        charge_of(TIERED, total("5010"), total("5005"), total("5000"))


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        prepay.charge(TIERED, meter=ADDRESS, previous=total("0"), current=total("1"), month_start=total("0"),
                      since=datetime(2026, 12, 5), until=UNTIL, zone=CST)


# --- the month's charges add up to its bill ---------------------------------------------------

cents = st.decimals(min_value=0, max_value=60, places=2)


@settings(max_examples=60, deadline=None)
@given(steps=st.lists(st.tuples(cents, cents, cents, cents), min_size=1, max_size=25))
def test_charges_of_a_month_add_up_to_its_bill_without_fixed_charges(steps) -> None:
    start = energy("1000.00", "100.00", "300.00", "400.00", "200.00")
    registers = dict(start)
    charged = D(0)
    for step in steps:
        current = dict(registers)
        for obis, advance in zip(("1-0:1.8.1", "1-0:1.8.2", "1-0:1.8.3", "1-0:1.8.4"), step, strict=True):
            current[obis] += advance
        current["1-0:1.8.0"] += sum(step, D(0))
        c = charge_of(RESIDENTIAL, registers, current, start)
        charged += c.amount
        registers = current
    month = bill(RESIDENTIAL, ADDRESS, "2026-12", consumption_from_registers(start, registers))
    assert charged == month.total - D("2.00")


def test_many_small_water_steps_add_up_to_the_bill_across_annual_tiers() -> None:
    start = {"8-0:1.0.0": D("0.000")}
    previous, charged = start, D(0)
    for i in range(1, 121):  # 0.125 m³ at a time, 15 m³ in all: from 170 m³ this year across the 180 m³ tier
        current = {"8-0:1.0.0": D("0.125") * i}
        charged += charge_of(WATER, previous, current, start, year_to_date_before=D(170)).amount
        previous = current
    # the bill: 10 × 3.45 = 34.50, 5 × 4.83 = 24.15; 58.65 without the 5.00 fee
    assert charged == D("58.65")


# --- recharges --------------------------------------------------------------------------


def test_recharge_event_carries_the_amount_to_the_cent() -> None:
    at = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)
    event = prepay.recharge_event(KEY, ADDRESS, D("25.5"), reference="R-7", issuer="alice", at=at)
    assert (event.kind, event.source, event.severity, event.timestamp) == ("prepay_recharge", KEY, "info", at)
    assert dict(event.data) == {"meter": ADDRESS, "amount": "25.50", "reference": "R-7", "issuer": "alice"}


@pytest.mark.parametrize(("amount", "message"), [
    (D(0), "more than 0"),
    (D(-5), "more than 0"),
    (D("1.005"), "at most 2 decimal places"),
    (D(1000000), "below 1000000"),
    (D("NaN"), "must be a number"),
])
def test_recharge_amounts_outside_the_rules_are_refused(amount: D, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        prepay.recharge_event(KEY, ADDRESS, amount)


def test_recharge_of_a_float_is_refused() -> None:
    with pytest.raises(TypeError, match="Decimal"):
        prepay.recharge_event(KEY, ADDRESS, 10.5)  # type: ignore[arg-type]


def test_largest_recharge_is_accepted() -> None:
    assert prepay.recharge_event(KEY, ADDRESS, D("999999.99")).data["amount"] == "999999.99"


# --- balances in a real store ------------------------------------------------------------------


@pytest.fixture
def store_url(tmp_path) -> str:
    return "sqlite:///" + str(tmp_path / "m.db")


def booked(c_amount: str) -> prepay.Charge:
    return prepay.Charge(D(c_amount), D(1), "kWh", "by hand", {"1-0:1.8.0": D(1)}, SINCE, UNTIL)


def test_balance_is_opening_plus_recharges_minus_charges(store_url: str) -> None:
    with open_store(store_url) as store:
        store.add_event(prepay.recharge_event(KEY, ADDRESS, D(100)))
        store.add_event(prepay.charge_event(KEY, ADDRESS, booked("12.34")))
        store.add_event(prepay.recharge_event(KEY, ADDRESS, D("50.50")))
        store.add_event(prepay.charge_event(KEY, ADDRESS, booked("0.16")))
        # neither another meter's ledger nor another kind of event on this meter counts
        store.add_event(prepay.recharge_event("bus2/dlt645:000000000001", ADDRESS, D(999)))
        store.add_event(Event("meter_offline", KEY, data={"amount": "7"}))
    with open_store(store_url) as store:
        assert prepay.balance(store, KEY, opening=D(10)) == D("148.00")  # 10 + 100 + 50.50 − 12.34 − 0.16
        assert prepay.balance(store, KEY) == D("138.00")


def test_ledger_lists_entries_oldest_first_with_their_sign(store_url: str) -> None:
    t0 = datetime(2026, 12, 5, 8, 0, tzinfo=UTC)
    with open_store(store_url) as store:
        store.add_event(prepay.charge_event(KEY, ADDRESS, booked("3.00"), at=t0 + timedelta(hours=1)))
        store.add_event(prepay.recharge_event(KEY, ADDRESS, D(20), reference="R-1", at=t0))
        entries = prepay.ledger(store, KEY)
    assert [(e.kind, e.amount, e.signed, e.at) for e in entries] == [
        ("prepay_recharge", D("20.00"), D("20.00"), t0),
        ("prepay_charge", D("3.00"), D("-3.00"), t0 + timedelta(hours=1)),
    ]
    assert entries[0].data["reference"] == "R-1"
    assert entries[1].data["registers"] == {"1-0:1.8.0": "1"}


def test_ledger_sources_are_the_meters_with_entries(store_url: str) -> None:
    with open_store(store_url) as store:
        store.add_event(prepay.recharge_event("b/cjt188:7", "7", D(1)))
        store.add_event(prepay.charge_event(KEY, ADDRESS, booked("1")))
        store.add_event(Event("meter_offline", "c/dlt645:9"))
        assert prepay.ledger_sources(store) == ["b/cjt188:7", KEY]


def test_a_damaged_ledger_entry_is_an_error_naming_the_meter(store_url: str) -> None:
    with open_store(store_url) as store:
        store.add_event(Event(prepay.RECHARGE, KEY, data={"meter": ADDRESS, "amount": "ten"}))
        with pytest.raises(ValueError, match=f"ledger of {KEY}: .* amount 'ten'"):
            prepay.balance(store, KEY)


def test_a_recharge_while_charges_are_written_is_never_lost(store_url: str) -> None:
    open_store(store_url).close()  # the schema, before two writers race for it
    ready = threading.Barrier(2)
    failures: list[BaseException] = []

    def write(make) -> None:
        try:
            with open_store(store_url) as store:
                ready.wait()
                for i in range(60):
                    store.add_event(make(i))
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            failures.append(exc)

    charges = threading.Thread(target=write, args=(lambda i: prepay.charge_event(KEY, ADDRESS, booked("0.25")),))
    recharges = threading.Thread(target=write, args=(lambda i: prepay.recharge_event(KEY, ADDRESS, D(1),
                                                                                     reference=f"R-{i}"),))
    for thread in (charges, recharges):
        thread.start()
    for thread in (charges, recharges):
        thread.join()
    assert failures == []
    with open_store(store_url) as store:
        assert len(prepay.ledger(store, KEY)) == 120
        assert prepay.balance(store, KEY) == D("45.00")  # 60 × 1.00 − 60 × 0.25


# --- the running balance a visit keeps (prepay.tally) -----------------------------------------


def test_a_tally_reads_only_the_last_hour_and_keeps_the_sum_of_what_is_older(store_url: str) -> None:
    t0 = datetime(2026, 12, 5, 8, 0, tzinfo=UTC)
    with open_store(store_url) as store:
        store.add_event(prepay.recharge_event(KEY, ADDRESS, D(100), at=t0))
        store.add_event(prepay.charge_event(KEY, ADDRESS, booked("1.25"), at=t0 + timedelta(minutes=30)))
        total, kept = prepay.tally(store, KEY, prepay.Tally(), now=t0 + timedelta(minutes=45))
        assert (total, kept) == (D("98.75"), prepay.Tally(t0 - timedelta(minutes=15), D(0)))
        store.add_event(prepay.charge_event(KEY, ADDRESS, booked("0.50"), at=t0 + timedelta(hours=2)))
        total, kept = prepay.tally(store, KEY, kept, now=t0 + timedelta(hours=2, minutes=15))
        assert (total, kept) == (D("98.25"), prepay.Tally(t0 + timedelta(hours=1, minutes=15), D("98.75")))
        # what is kept is not read again: an entry older than the tally (never written so
        # late in a real store) is not counted, which proves the older ones were not re-read
        store.add_event(prepay.recharge_event(KEY, ADDRESS, D(7), at=t0))
        total, _ = prepay.tally(store, KEY, kept, now=t0 + timedelta(hours=2, minutes=20))
        assert total == D("98.25")
        assert prepay.balance(store, KEY) == D("105.25")  # the ledger itself has it


def test_a_tally_is_not_moved_back_by_a_clock_that_steps_back(store_url: str) -> None:
    t0 = datetime(2026, 12, 5, 8, 0, tzinfo=UTC)
    with open_store(store_url) as store:
        store.add_event(prepay.recharge_event(KEY, ADDRESS, D(10), at=t0))
        store.add_event(prepay.charge_event(KEY, ADDRESS, booked("1"), at=t0 + timedelta(hours=3)))
        total, kept = prepay.tally(store, KEY, prepay.Tally(), now=t0 + timedelta(hours=5))
        again, kept_again = prepay.tally(store, KEY, kept, now=t0 + timedelta(hours=2))
    assert total == again == D(9) and kept_again == kept == prepay.Tally(t0 + timedelta(hours=4), D(9))


@pytest.mark.parametrize("data", [None, {}, {"upto": "yesterday", "total": "1"}, {"upto": "2026-12-05T08:00:00",
                                  "total": "1"}, {"upto": "2026-12-05T08:00:00+00:00", "total": "NaN"},
                                  {"upto": "2026-12-05T08:00:00+00:00"}, {"total": "5"}])
def test_a_kept_tally_that_cannot_be_read_starts_afresh(data) -> None:
    assert prepay.Tally.from_json(data) == prepay.Tally()


def test_a_tally_survives_its_json() -> None:
    kept = prepay.Tally(datetime(2026, 12, 5, 8, 0, tzinfo=UTC), D("12.345"))
    assert prepay.Tally.from_json(kept.to_json()) == kept


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(1, 5000), st.integers(0, 600), st.integers(0, 3599)),
                max_size=25),
       st.lists(st.integers(0, 600), min_size=1, max_size=12))
def test_a_tally_always_equals_the_whole_ledger_when_entries_are_written_within_the_hour(entries, visits) -> None:
    """Entries stamped at minute m and written up to 59 min 59 s later, visits at random
    minutes: the running sum a visit keeps always equals the sum of the ledger as written."""
    import tempfile

    t0 = datetime(2026, 12, 5, 0, 0, tzinfo=UTC)
    writes = sorted(((t0 + timedelta(minutes=m, seconds=delay), t0 + timedelta(minutes=m), kind, cents)
                     for kind, cents, m, delay in entries), key=lambda w: w[0])
    with tempfile.TemporaryDirectory() as tmp, open_store(f"sqlite:///{tmp}/t.db") as store:
        kept, done = prepay.Tally(), 0
        for minute in sorted(visits):
            now = t0 + timedelta(minutes=minute)
            while done < len(writes) and writes[done][0] <= now:
                _, stamp, is_recharge, cents = writes[done]
                amount = D(cents) / 100
                store.add_event(prepay.recharge_event(KEY, ADDRESS, amount, at=stamp) if is_recharge
                                else prepay.charge_event(KEY, ADDRESS, booked(str(amount)), at=stamp))
                done += 1
            total, kept = prepay.tally(store, KEY, kept, now=now)
            assert total == prepay.balance(store, KEY)


def test_charge_event_keeps_every_figure_as_exact_text() -> None:
    c = charge_of(TIERED, total("5190.25"), total("5210.25"), total("5000.25"))
    event = prepay.charge_event(KEY, ADDRESS, c, at=UNTIL)
    assert (event.kind, event.source, event.severity) == ("prepay_charge", KEY, "info")
    assert dict(event.data) == {
        "meter": ADDRESS, "amount": "10.50", "consumption": "20.00", "unit": "kWh",
        "from": "2026-12-05T02:00:00+00:00", "to": "2026-12-05T03:00:00+00:00",
        "registers": {"1-0:1.8.0": "5210.25"}, "basis": c.basis,
    }


# --- supply decisions ------------------------------------------------------------------


@pytest.mark.parametrize(("balance", "supply_on", "disconnect", "reconnect", "expected"), [
    (D("-0.01"), True, True, True, "disconnect"),
    (D(0), True, True, True, "disconnect"),      # run out: nothing left is out
    (D("0.01"), True, True, True, None),
    (D(0), True, False, True, None),             # disconnect switched off
    (D(-5), False, True, True, None),            # already off
    (D("0.01"), False, True, True, "reconnect"),
    (D("0.01"), False, True, False, None),         # reconnect switched off
    (D(0), False, True, True, None),             # a recharge must lift it above 0
    (D(-1), False, True, True, None),
])
def test_decide(balance: D, supply_on: bool, disconnect: bool, reconnect: bool, expected: str | None) -> None:
    config = PrepayConfig(disconnect=disconnect, reconnect=reconnect)
    assert prepay.decide(balance, supply_on=supply_on, config=config) == expected


def test_relay_trip_uses_the_meters_own_credential() -> None:
    meter = Meter(ADDRESS, "dlt645", channel="bus1", credential="meter-000000000001")
    command = prepay.supply_command(meter, "disconnect", PrepayConfig())
    assert (command.meter, command.protocol, command.channel, command.name) == (ADDRESS, "dlt645", "bus1", "relay")
    assert dict(command.args) == {"action": "trip"}
    assert command.credential == "meter-000000000001"
    assert (command.origin, command.issuer) == (Origin.SCHEDULE, "prepayment")


def test_relay_close_falls_back_to_the_prepayment_credential() -> None:
    meter = Meter("12345678", "dlt645-1997", channel="bus2")
    command = prepay.supply_command(meter, "reconnect", PrepayConfig(credential="prepay-ops"))
    assert (command.name, dict(command.args), command.credential) == ("relay", {"action": "close"}, "prepay-ops")


@pytest.mark.parametrize(("decision", "action"), [("disconnect", "close"), ("reconnect", "open")])
def test_valve_commands_need_no_credential(decision: str, action: str) -> None:
    meter = Meter("10000000000001", "cjt188", channel="water", credential="unused")
    command = prepay.supply_command(meter, decision, PrepayConfig())  # type: ignore[arg-type]
    assert (command.name, dict(command.args), command.credential) == ("valve", {"action": action}, "")
    assert (command.origin, command.issuer, command.channel) == (Origin.SCHEDULE, "prepayment", "water")


def test_other_protocols_cannot_be_cut_off() -> None:
    with pytest.raises(NotSupported, match="modbus"):
        prepay.supply_command(Meter("1", "modbus", channel="bus1"), "disconnect", PrepayConfig())


def test_no_decision_has_no_command() -> None:
    with pytest.raises(ValueError, match="disconnect or reconnect"):
        prepay.supply_command(Meter(ADDRESS, "dlt645", "bus1"), None, PrepayConfig())
