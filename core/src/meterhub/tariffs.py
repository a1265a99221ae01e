"""Tariffs and bills in exact decimal arithmetic: time-of-use, seasons, tiers, fixed charges.

Sans-I/O: no store, no clock, no file. A :class:`Tariff` says how a commodity is priced;
:func:`consumption_from_registers` turns a meter's frozen register values at the start and
end of a billing period into a :class:`Consumption`; :func:`bill` prices it into a
:class:`Bill` whose every line says what it charges and why.

Arithmetic. Every figure is a :class:`~decimal.Decimal`; a float anywhere in the API is
refused (``TypeError``). Quantities times prices are computed exactly (a context that
raises on any inexact result), each bill line's amount is then rounded to cents, half up,
and the bill's total is the sum of the rounded lines, so the printed lines always add up
to the printed total.

Time-of-use. DL/T 645 meters keep one energy register per tariff: tariff 1..4 are sharp,
peak, flat and valley (尖/峰/平/谷; OBIS ``1-0:1.8.1``..``1-0:1.8.4``). A bill prices each
period's consumption at that period's price for the billing month's season. The day
schedule is what :func:`period_at` answers with (which period applies at a local time), so
interval data can be classified; it also words the bill's explanations.

Tiers (blocks). Thresholds on the month's consumption (``tier_basis: monthly``) or on the
year's cumulative consumption (``annual``: a bill is told what the year consumed before its
month, ``year_to_date_before``). A tier gives either a ``price`` (water, gas: the tier's
price is the price) or an ``adder`` on the base price (electricity: +0.05 in tier 2).

Combining time-of-use and tiers (the Chinese residential "阶梯+峰谷" scheme). Each TOU
period is billed at its own price on its whole consumption, and each tier above the first
adds one line: the month's *total* consumption falling in that tier times the tier's adder.
This is what splitting every period's kWh across the tiers in proportion would charge in
sum (Σ_p q_p·t_i/Q·a_i = t_i·a_i), without the division, which would make the figures
non-terminating decimals; and it is how utilities print these bills (a "tier 2 surcharge"
line). The tier lines say which part of the month's consumption they surcharge.

Configuration (a site file's ``tariffs:`` section; each entry is given to
:func:`tariff_from_mapping`)::

    tariffs:
      residential:                    # electricity, TOU with seasons, monthly tiers
        commodity: electricity        # unit: kWh (electricity, heat) or m³ (water, gas) unless given
        currency: CNY                 # the default
        schedule:                     # "HH:MM period" from that time on; the first at 00:00
          weekdays: ["00:00 valley", "08:00 peak", "11:00 flat", "18:00 peak",
                     "19:00 sharp", "21:00 flat", "22:00 valley"]
          weekends: ["00:00 valley", "08:00 flat", "22:00 valley"]   # default: weekdays
          holidays: ["00:00 valley"]  # default: weekends
          holiday_dates: [2026-10-01, 2026-10-02, 2026-10-03]
          workdays: [2026-10-10]      # weekend days worked (调休): the weekday schedule applies
        seasons:                      # or, all year: prices: {...}; single rate: price: 0.5283
          - name: summer
            months: 6-9               # or a list: [6, 7, 8, 9]; "11-2" wraps round the year
            prices: {sharp: "1.2283", peak: "1.0228", flat: "0.5583", valley: "0.2888"}
          - name: other
            months: 10-5
            prices: {sharp: "1.1283", peak: "0.9228", flat: "0.5583", valley: "0.3088"}
        tier_basis: monthly           # or annual; default monthly
        tiers:                        # thresholds ascending; the last has no upto
          - {upto: 200, adder: 0}
          - {upto: 400, adder: "0.05"}
          - {adder: "0.30"}
        fixed:
          - {description: meter service fee, amount: "2.00"}
      water:                          # annual tiers carrying the price
        commodity: water
        tier_basis: annual
        tiers:
          - {upto: 180, price: "3.45"}
          - {upto: 260, price: "4.83"}
          - {price: "5.83"}
      gas:                            # a single rate and a monthly fee
        commodity: gas
        price: "2.61"
        fixed: [{description: service fee, amount: "5"}]

An entry may name the scheme that prices it (``scheme: NAME``; ``standard``, the one
above, when none is written): :func:`tariffs_from_config` hands each entry to its
:class:`TariffScheme`, which plugins register (``meterhub_register_tariff_schemes``) and
which makes a :class:`PricedTariff`, the one thing billing needs.

Numbers are best quoted: YAML reads an unquoted ``1.0228`` as a float. A float from YAML is
taken by its shortest text (``repr``), which is the written number whenever that has at
most 15 significant digits; one with more is refused (quote it).
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable, Mapping
from datetime import date, datetime, time
from decimal import (
    ROUND_HALF_UP,
    Context,
    Decimal,
    Inexact,
    InvalidOperation,
    Overflow,
    Rounded,
    localcontext,
)
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

import attrs

#: the periods of DL/T 645 tariff registers 1..4, in register order
TOU_PERIODS = ("sharp", "peak", "flat", "valley")
#: the one "period" of a tariff without time-of-use
ALL = "all"
COMMODITY_UNITS = {"electricity": "kWh", "water": "m³", "gas": "m³", "heat": "kWh"}
TIER_BASES = ("monthly", "annual")

#: the energy import total and its tariff registers (1..4 = sharp, peak, flat, valley)
ENERGY_TOTAL = "1-0:1.8.0"
ENERGY_TOU = {f"1-0:1.8.{i}": period for i, period in enumerate(TOU_PERIODS, start=1)}
#: registers that are a whole meter's total: electricity, cold water, hot water, gas, heat
TOTAL_REGISTERS = (ENERGY_TOTAL, "8-0:1.0.0", "9-0:1.0.0", "7-0:3.0.0", "6-0:1.0.0")
#: the registers that measure each commodity (a meter of several keeps apart what a tariff bills)
COMMODITY_REGISTERS = {
    "electricity": (ENERGY_TOTAL, *ENERGY_TOU),
    "water": ("8-0:1.0.0", "9-0:1.0.0"),
    "gas": ("7-0:3.0.0",),
    "heat": ("6-0:1.0.0",),
}

#: exact arithmetic: any result that would need rounding raises instead (sums of money
#: elsewhere, prepay's, use it too)
EXACT = Context(prec=80, traps=[InvalidOperation, Inexact, Rounded, Overflow])
#: the one place rounding happens: a line's amount to the currency's minor unit
_ROUNDING = Context(prec=80, rounding=ROUND_HALF_UP, traps=[InvalidOperation, Overflow])
CENT = Decimal("0.01")


def _digits(value: Decimal) -> str:
    """A Decimal's digits without an exponent (``2.3E+2`` is ``230``), as bills print them."""
    return format(value, "f")


def _number(value: Any, what: str) -> Decimal:
    """A finite Decimal from a Decimal or int; floats (and bools) are refused."""
    if isinstance(value, bool) or not isinstance(value, (Decimal, int)):
        raise TypeError(f"{what} must be a Decimal or an int, not {type(value).__name__} ({value!r})")
    number = Decimal(value)
    if not number.is_finite():
        raise ValueError(f"{what} must be a finite number, not {value}")
    return number


def _prices(value: Mapping[str, Any]) -> Mapping[str, Decimal]:
    return MappingProxyType({str(k): _number(v, f"price of {k}") for k, v in value.items()})


def _optional_number(value: Any) -> Decimal | None:
    return None if value is None else _number(value, "a tier's figure")


@attrs.frozen
class Season:
    """Prices per period for some months of the year (``months``: 1..12)."""

    name: str
    months: frozenset[int] = attrs.field(converter=frozenset)
    prices: Mapping[str, Decimal] = attrs.field(converter=_prices)


@attrs.frozen
class Tier:
    """A block of consumption up to ``upto`` (``None``: no upper bound) from the tier below.

    Exactly one of ``price`` (the price in the block) and ``adder`` (added to the base price).
    """

    upto: Decimal | None = attrs.field(default=None, converter=_optional_number)
    price: Decimal | None = attrs.field(default=None, converter=_optional_number)
    adder: Decimal | None = attrs.field(default=None, converter=_optional_number)

    def __attrs_post_init__(self) -> None:
        if (self.price is None) == (self.adder is None):
            raise ValueError("a tier has either a price or an adder")


@attrs.frozen
class FixedCharge:
    """An amount charged once per bill (a monthly service fee)."""

    description: str
    amount: Decimal = attrs.field(converter=lambda v: _number(v, "a fixed charge"))


DaySchedule = tuple[tuple[time, str], ...]


def _day(value: Iterable[tuple[time, str]]) -> DaySchedule:
    entries = tuple(sorted((start, str(period)) for start, period in value))
    if not entries or entries[0][0] != time(0):
        raise ValueError("a day schedule must start at 00:00")
    if len({start for start, _ in entries}) != len(entries):
        raise ValueError("a day schedule names one period per start time")
    return entries


def _optional_day(value: Iterable[tuple[time, str]] | None) -> DaySchedule | None:
    return None if value is None else _day(value)


@attrs.frozen
class TouSchedule:
    """Which period applies when: a day schedule for weekdays, weekends and holidays.

    ``weekends`` defaults to ``weekdays``, ``holidays`` to ``weekends``; ``workdays`` are
    weekend dates worked in exchange for a holiday (调休), on the weekday schedule.
    """

    weekdays: DaySchedule = attrs.field(converter=_day)
    weekends: DaySchedule | None = attrs.field(default=None, converter=_optional_day)
    holidays: DaySchedule | None = attrs.field(default=None, converter=_optional_day)
    holiday_dates: frozenset[date] = attrs.field(default=frozenset(), converter=frozenset)
    workdays: frozenset[date] = attrs.field(default=frozenset(), converter=frozenset)

    def day(self, day: date) -> DaySchedule:
        """The schedule of a calendar day."""
        weekends = self.weekends or self.weekdays
        if day in self.holiday_dates:
            return self.holidays or weekends
        if day.weekday() >= 5 and day not in self.workdays:
            return weekends
        return self.weekdays

    @property
    def periods(self) -> frozenset[str]:
        days = (self.weekdays, self.weekends or (), self.holidays or ())
        return frozenset(period for schedule in days for _, period in schedule)


@attrs.frozen
class Tariff:
    """How one commodity is priced. See the module docstring for the rules and YAML shape."""

    name: str
    commodity: str = attrs.field(validator=attrs.validators.in_(tuple(COMMODITY_UNITS)))
    unit: str
    currency: str = "CNY"
    #: base prices by season, every month in exactly one season; empty when tiers carry prices
    seasons: tuple[Season, ...] = attrs.field(default=(), converter=tuple)
    schedule: TouSchedule | None = None
    tiers: tuple[Tier, ...] = attrs.field(default=(), converter=tuple)
    tier_basis: str = attrs.field(default="monthly", validator=attrs.validators.in_(TIER_BASES))
    fixed: tuple[FixedCharge, ...] = attrs.field(default=(), converter=tuple)

    def __attrs_post_init__(self) -> None:
        months = sorted(m for season in self.seasons for m in season.months)
        if self.seasons and months != list(range(1, 13)):
            raise ValueError(f"tariff {self.name}: the seasons must cover each month once, they cover {months}")
        if self.tiers:
            _check_tiers(self.tiers)
        priced_by_tiers = bool(self.tiers) and self.tiers[0].price is not None
        if priced_by_tiers and self.seasons:
            raise ValueError(f"tariff {self.name}: tiers with prices take no base prices (give tiers adders instead)")
        if not priced_by_tiers and not self.seasons:
            raise ValueError(f"tariff {self.name}: no price (give prices, seasons, or tiers with prices)")
        periods = {p for season in self.seasons for p in season.prices}
        if len({frozenset(season.prices) for season in self.seasons}) > 1:
            raise ValueError(f"tariff {self.name}: every season must price the same periods")
        if periods and periods != {ALL}:
            if self.schedule is None:
                raise ValueError(f"tariff {self.name}: time-of-use prices need a schedule")
            if self.schedule.periods != periods:
                raise ValueError(
                    f"tariff {self.name}: the schedule uses {sorted(self.schedule.periods)},"
                    f" the prices are for {sorted(periods)}"
                )

    @property
    def time_of_use(self) -> bool:
        return self.schedule is not None

    def season(self, month: int) -> Season | None:
        return next((s for s in self.seasons if month in s.months), None)

    def bill(self, meter: str, period: str, consumption: Consumption, *,
             year_to_date_before: Decimal = Decimal(0)) -> Bill:
        """This tariff's bill (:func:`bill`): what makes a Tariff a :class:`PricedTariff`."""
        return bill(self, meter, period, consumption, year_to_date_before=year_to_date_before)


def _check_tiers(tiers: tuple[Tier, ...]) -> None:
    kinds = {tier.price is None for tier in tiers}
    if len(kinds) > 1:
        raise ValueError("tiers must all give prices or all give adders")
    for i, tier in enumerate(tiers):
        last = i == len(tiers) - 1
        if last != (tier.upto is None):
            raise ValueError("every tier but the last has an upto, and the last has none")
        if tier.upto is not None and tier.upto <= (tiers[i - 1].upto if i else 0):
            raise ValueError("tier thresholds must rise")


def period_at(tariff: Tariff, when: datetime) -> str:
    """The time-of-use period that applies at ``when``, a local (wall-clock) time; ``all``
    for a tariff without time-of-use."""
    if tariff.schedule is None:
        return ALL
    now = when.time().replace(tzinfo=None)
    current = ALL
    for start, period in tariff.schedule.day(when.date()):
        if start > now:
            break
        current = period
    return current


@attrs.frozen
class Consumption:
    """What a meter consumed in a billing period: a total and, from TOU registers, its
    split by period. ``unattributed`` is the part of the total the TOU registers do not
    account for (within the meter's resolution): total = Σ by_period + unattributed."""

    total: Decimal = attrs.field(converter=lambda v: _number(v, "consumption"))
    by_period: Mapping[str, Decimal] = attrs.field(factory=dict, converter=_prices)
    unattributed: Decimal = attrs.field(default=Decimal(0), converter=lambda v: _number(v, "unattributed"))

    def __attrs_post_init__(self) -> None:
        if self.total < 0 or any(q < 0 for q in self.by_period.values()):
            raise ValueError("consumption cannot be negative")
        if self.by_period:
            with localcontext(EXACT):
                attributed = sum(self.by_period.values(), Decimal(0))
                if attributed + self.unattributed != self.total:
                    raise ValueError(
                        f"consumption by period ({attributed:f}) and unattributed ({self.unattributed:f})"
                        f" do not add up to the total ({self.total:f})"
                    )


def _resolution(*values: Decimal) -> Decimal:
    """The finest decimal place among register values (``1234.56``: 0.01)."""
    exponent = min(min(v.as_tuple().exponent for v in values), 0)  # type: ignore[type-var]
    return Decimal(1).scaleb(exponent)


def _advance(obis: str, start: Decimal, end: Decimal, rollover: Decimal | None) -> Decimal:
    with localcontext(EXACT):
        if end >= start:
            return end - start
        if rollover is None:
            raise ValueError(
                f"register {obis} went backwards ({start} → {end}): meter replaced or rolled over;"
                " bill the two meters separately or give rollover="
            )
        if not start < rollover:
            raise ValueError(f"register {obis} reads {start}, beyond its rollover {rollover}")
        return end + rollover - start


def consumption_from_registers(
    start: Mapping[str, Decimal],
    end: Mapping[str, Decimal],
    *,
    rollover: Decimal | None = None,
    resolution: Decimal | None = None,
) -> Consumption:
    """The consumption between two sets of register readings (by OBIS code), e.g. the
    frozen values at the start and end of a month.

    The total comes from the one whole-meter register both hold (``1-0:1.8.0``,
    ``8-0:1.0.0``, ``9-0:1.0.0`` or ``7-0:3.0.0``); electricity's tariff registers
    ``1-0:1.8.1``..``4``, where both hold them, give the split by period. A register that
    went backwards is a ValueError unless ``rollover`` (the value at which registers wrap
    to zero, e.g. 1000000 for six integer digits) is given. TOU registers may differ from
    the total by ``resolution`` (default: the finest decimal place of the readings) per
    register; the difference is returned as ``unattributed``, a larger one is a ValueError.
    """
    for label, readings in (("start", start), ("end", end)):
        for obis, value in readings.items():
            _number(value, f"{label} reading {obis}")
    if rollover is not None:
        rollover = _number(rollover, "rollover")
    totals = [obis for obis in TOTAL_REGISTERS if obis in start and obis in end]
    if len(totals) != 1:
        raise ValueError(f"need exactly one total register in both readings ({', '.join(TOTAL_REGISTERS)}), got {totals}")
    total_obis = totals[0]
    total = _advance(total_obis, start[total_obis], end[total_obis], rollover)
    tou = [obis for obis in ENERGY_TOU if obis in start or obis in end]
    if not tou or total_obis != ENERGY_TOTAL:
        return Consumption(total)
    missing = [obis for obis in tou if obis not in start or obis not in end]
    if missing:
        raise ValueError(f"tariff registers {missing} are not in both readings")
    by_period = {ENERGY_TOU[obis]: _advance(obis, start[obis], end[obis], rollover) for obis in tou}
    values = [start[o] for o in (total_obis, *tou)] + [end[o] for o in (total_obis, *tou)]
    step = _number(resolution, "resolution") if resolution is not None else _resolution(*values)
    with localcontext(EXACT):
        difference = total - sum(by_period.values(), Decimal(0))
        tolerance = step * len(tou)
    if abs(difference) > tolerance:
        raise ValueError(
            f"the tariff registers advanced {total - difference:f}, the total {total_obis} {total:f}:"
            f" {difference:f} apart, more than the meter's resolution allows ({tolerance:f})"
        )
    return Consumption(total, by_period, difference)


@attrs.frozen
class BillLine:
    """One line of a bill: ``quantity`` × ``price`` = ``amount`` (rounded to cents);
    ``basis`` says in words why."""

    description: str
    quantity: Decimal
    unit: str
    price: Decimal
    amount: Decimal
    basis: str

    def as_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.frozen
class RegisterValue:
    """A register value a bill was computed from: at the ``start`` or ``end`` (``edge``) of
    its period, the freeze ``boundary`` it stands for, and when the value really was
    (``read``; later than the boundary when it was back-filled). Times are aware, in the
    site's zone, as the bill prints them."""

    edge: str
    quantity: str
    value: Decimal
    unit: str
    boundary: datetime
    read: datetime

    @property
    def backfilled(self) -> bool:
        return self.read != self.boundary

    def as_dict(self) -> dict[str, Any]:
        return {"edge": self.edge, "quantity": self.quantity, "value": self.value, "unit": self.unit,
                "boundary": self.boundary, "read": self.read, "backfilled": self.backfilled}


def _local_minute(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M}"


@attrs.frozen
class Bill:
    """A meter's bill for a period; ``total`` is the sum of the lines' rounded amounts.

    ``registers`` are the values it was computed from and ``notes`` what a reader should
    know about them (a back-filled reading), when the bill came from stored readings."""

    meter: str
    period: str
    tariff: PricedTariff
    lines: tuple[BillLine, ...]
    total: Decimal
    registers: tuple[RegisterValue, ...] = attrs.field(default=(), converter=tuple)
    notes: tuple[str, ...] = attrs.field(default=(), converter=tuple)

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON (Decimals stay Decimals; :mod:`meterhub.jsonout` writes them exactly)."""
        return {
            "meter": self.meter,
            "period": self.period,
            "tariff": self.tariff.name,
            "commodity": self.tariff.commodity,
            "currency": self.tariff.currency,
            "registers": [register.as_dict() for register in self.registers],
            "notes": list(self.notes),
            "lines": [line.as_dict() for line in self.lines],
            "total": self.total,
        }

    def render(self) -> str:
        """The bill as plain text: the readings it used, one line per charge with its
        explanation beneath, the total."""
        out = [f"Bill {self.period} for {self.meter}: tariff {self.tariff.name} ({self.tariff.commodity})"]
        for register in self.registers:
            read = f" (read {_local_minute(register.read)})" if register.backfilled else ""
            out.append(f"  {register.edge:<5} {_local_minute(register.boundary)}  {register.quantity:<10}"
                       f" {_digits(register.value):>14} {register.unit}{read}")
        for note in self.notes:
            out.append(f"  note: {note}")
        for line in self.lines:
            figures = f"{_digits(line.quantity)} {line.unit} × {_digits(line.price)}"
            out.append(f"  {line.description:<28} {figures:>28} = {_digits(line.amount):>10} {self.tariff.currency}")
            out.append(f"      {line.basis}")
        out.append(f"  {'total':<28} {'':>28}   {_digits(self.total):>10} {self.tariff.currency}")
        return "\n".join(out)


_PERIOD_RE = re.compile(r"^(\d{4})-(\d{2})$")


def _month_of(period: str) -> int:
    found = _PERIOD_RE.match(period)
    if not found or not 1 <= int(found.group(2)) <= 12:
        raise ValueError(f"a billing period is a month written YYYY-MM, not {period!r}")
    return int(found.group(2))


def _line(description: str, quantity: Decimal, unit: str, price: Decimal, basis: str) -> BillLine:
    with localcontext(EXACT):
        exact = quantity * price
    return BillLine(description, quantity, unit, price, exact.quantize(CENT, context=_ROUNDING), basis)


def _tier_portions(tiers: tuple[Tier, ...], before: Decimal, quantity: Decimal) -> list[tuple[int, Decimal, Decimal, Decimal | None]]:
    """(tier index, quantity in it, its lower bound, its upper bound) for consumption
    occupying ``before``..``before + quantity`` of the basis."""
    portions = []
    with localcontext(EXACT):
        low, high = before, before + quantity
        floor = Decimal(0)
        for i, tier in enumerate(tiers):
            ceiling = tier.upto
            part = (high if ceiling is None else min(high, ceiling)) - max(low, floor)
            if part > 0:
                portions.append((i, part, floor, ceiling))
            if ceiling is not None:
                floor = ceiling
    return portions


def _months_text(months: frozenset[int]) -> str:
    return ", ".join(calendar.month_abbr[m] for m in sorted(months))


def _ranges(schedule: DaySchedule, period: str) -> str:
    bounds = [start for start, _ in schedule] + [time(0)]
    spans = [
        f"{start:%H:%M}–{'24:00' if bounds[i + 1] == time(0) else format(bounds[i + 1], '%H:%M')}"
        for i, (start, name) in enumerate(schedule)
        if name == period
    ]
    return " and ".join(spans) if spans else "never"


def _when(schedule: TouSchedule, period: str) -> str:
    weekends = schedule.weekends or schedule.weekdays
    holidays = schedule.holidays or weekends
    text = f"{_ranges(schedule.weekdays, period)} on weekdays"
    if weekends != schedule.weekdays:
        text += f", {_ranges(weekends, period)} at weekends"
    if holidays != weekends and schedule.holiday_dates:
        text += f", {_ranges(holidays, period)} on holidays"
    return text


def bill(
    tariff: Tariff,
    meter: str,
    period: str,
    consumption: Consumption,
    *,
    year_to_date_before: Decimal = Decimal(0),
) -> Bill:
    """Price ``consumption`` of ``meter`` in ``period`` (a month, ``YYYY-MM``).

    ``year_to_date_before``: for annual tiers, what the meter consumed earlier in the
    same year; it places this month's consumption on the tiers. A time-of-use tariff needs
    the consumption by period (from TOU registers); unattributed consumption is billed at
    the flat price, on its own line, when the tariff has one.
    """
    month = _month_of(period)
    before = _number(year_to_date_before, "year_to_date_before")
    if before < 0:
        raise ValueError("year_to_date_before cannot be negative")
    if before and tariff.tier_basis != "annual":
        raise ValueError(f"tariff {tariff.name} has {tariff.tier_basis} tiers: year_to_date_before does not apply")
    unit, currency = tariff.unit, tariff.currency
    lines: list[BillLine] = []
    season = tariff.season(month)
    season_text = "" if season is None or len(season.months) == 12 else f", {season.name} prices ({_months_text(season.months)})"
    if season is not None and tariff.schedule is not None:
        if not consumption.by_period:
            raise ValueError(f"tariff {tariff.name} is time-of-use: the consumption must be given by period")
        unknown = set(consumption.by_period) - set(season.prices)
        if unknown:
            raise ValueError(f"tariff {tariff.name} has no price for {sorted(unknown)}")
        for name in season.prices:
            quantity = consumption.by_period.get(name, Decimal(0))
            price = season.prices[name]
            basis = f"{name} {_when(tariff.schedule, name)}{season_text}: {quantity:f} {unit} × {price:f} {currency}/{unit}"
            lines.append(_line(name, quantity, unit, price, basis))
        if consumption.unattributed:
            price = season.prices.get("flat", Decimal(0))
            how = "at the flat price" if "flat" in season.prices else "not priced: the tariff has no flat price"
            basis = (
                f"the total register advanced {consumption.unattributed:f} {unit} more than the sum of its"
                f" tariff registers (within the meter's resolution); {how}"
            )
            lines.append(_line("unattributed", consumption.unattributed, unit, price, basis))
    elif season is not None:
        price = season.prices[ALL]
        basis = f"{consumption.total:f} {unit} × {price:f} {currency}/{unit}{season_text}"
        lines.append(_line(tariff.commodity, consumption.total, unit, price, basis))
    where = "this year" if tariff.tier_basis == "annual" else "this month"
    if tariff.tier_basis == "annual":
        with localcontext(EXACT):
            place = f"; {before:f} {unit} before this month, {before + consumption.total:f} after"
    else:
        place = ""
    for i, part, floor, ceiling in _tier_portions(tariff.tiers, before, consumption.total):
        tier = tariff.tiers[i]
        span = f"{floor:f}–{ceiling:f}" if ceiling is not None else f"above {floor:f}"
        if tier.price is not None:
            basis = f"{part:f} {unit} in tier {i + 1} ({span} {unit} {where}{place}) × {tier.price:f} {currency}/{unit}"
            lines.append(_line(f"tier {i + 1}", part, unit, tier.price, basis))
        elif tier.adder:
            basis = (
                f"{part:f} {unit} of the {consumption.total:f} {unit} in tier {i + 1} ({span} {unit} {where}{place}),"
                f" +{tier.adder:f} {currency}/{unit} on the base price"
            )
            lines.append(_line(f"tier {i + 1} surcharge", part, unit, tier.adder, basis))
    for charge in tariff.fixed:
        lines.append(_line(charge.description, Decimal(1), "bill", charge.amount, f"fixed, {charge.amount:f} {currency} per bill"))
    with localcontext(EXACT):
        total = sum((line.amount for line in lines), Decimal(0))
    return Bill(meter, period, tariff, tuple(lines), total)


# -- configuration ------------------------------------------------------------------------

_TARIFF_KEYS = ("commodity", "unit", "currency", "price", "prices", "seasons", "schedule", "tiers", "tier_basis", "fixed")
_SIGNIFICANT_FLOAT_DIGITS = 15  # DBL_DIG: decimal text this long survives a float exactly
_MONTHS_RE = re.compile(r"^\s*(\d{1,2})\s*-\s*(\d{1,2})\s*$")
_SLOT_RE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s+(\S+)\s*$")


class _Bad(ValueError):
    pass


def _fail(path: str, message: str) -> _Bad:
    return _Bad(f"{path}: {message}")


def _config_number(value: Any, path: str, *, positive: bool = False) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        raise _fail(path, f"must be a number, not {value!r}")
    if isinstance(value, float):
        text = repr(value)
        if not any(c.isdigit() for c in text) or len(Decimal(text).as_tuple().digits) > _SIGNIFICANT_FLOAT_DIGITS:
            raise _fail(path, f"{value!r} cannot be read exactly from YAML; quote it")
        value = text
    try:
        number = Decimal(value.strip() if isinstance(value, str) else value)
    except InvalidOperation:
        raise _fail(path, f"must be a number, not {value!r}") from None
    if not number.is_finite() or number < 0 or (positive and number == 0):
        raise _fail(path, f"must be a {'positive' if positive else 'non-negative'} number, not {value!r}")
    return number


def _config_mapping(value: Any, path: str, known: tuple[str, ...] | None = None) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(path, "must be a mapping")
    if known is not None:
        for key in value:
            if key not in known:
                raise _fail(f"{path}.{key}", f"unknown key; expected one of {', '.join(known)}")
    return value


def _config_list(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise _fail(path, "must be a non-empty list")
    return value


def _config_months(value: Any, path: str) -> frozenset[int]:
    if isinstance(value, str):
        found = _MONTHS_RE.match(value)
        if not found:
            raise _fail(path, f"write a range of months like 6-9, or a list, not {value!r}")
        first, last = int(found.group(1)), int(found.group(2))
        if not (1 <= first <= 12 and 1 <= last <= 12):
            raise _fail(path, f"months run from 1 to 12, not {value!r}")
        return frozenset((first - 1 + i) % 12 + 1 for i in range((last - first) % 12 + 1))
    months = _config_list(value, path)
    for i, month in enumerate(months):
        if isinstance(month, bool) or not isinstance(month, int) or not 1 <= month <= 12:
            raise _fail(f"{path}[{i}]", f"a month is 1..12, not {month!r}")
    if len(set(months)) != len(months):
        raise _fail(path, "names a month twice")
    return frozenset(months)


def _config_prices(value: Any, path: str) -> dict[str, Decimal]:
    prices = _config_mapping(value, path)
    if not prices:
        raise _fail(path, "names no period")
    for period in prices:
        if period not in TOU_PERIODS:
            raise _fail(f"{path}.{period}", f"unknown period; expected {', '.join(TOU_PERIODS)}")
    return {period: _config_number(price, f"{path}.{period}") for period, price in prices.items()}


def _config_day(value: Any, path: str) -> DaySchedule:
    slots: list[tuple[time, str]] = []
    for i, item in enumerate(_config_list(value, path)):
        found = _SLOT_RE.match(item) if isinstance(item, str) else None
        if not found or int(found.group(1)) > 23 or int(found.group(2)) > 59:
            raise _fail(f"{path}[{i}]", f'write "HH:MM period" (e.g. "08:00 peak"), not {item!r}')
        start = time(int(found.group(1)), int(found.group(2)))
        if found.group(3) not in TOU_PERIODS:
            raise _fail(f"{path}[{i}]", f"unknown period {found.group(3)!r}; expected {', '.join(TOU_PERIODS)}")
        if slots and start <= slots[-1][0]:
            raise _fail(f"{path}[{i}]", f"must start after {slots[-1][0]:%H:%M}")
        if not slots and start != time(0):
            raise _fail(f"{path}[{i}]", "the first period starts at 00:00")
        slots.append((start, found.group(3)))
    return tuple(slots)


def _config_dates(value: Any, path: str) -> frozenset[date]:
    days = set()
    for i, item in enumerate(_config_list(value, path)):
        if isinstance(item, datetime) or not isinstance(item, (date, str)):
            raise _fail(f"{path}[{i}]", f"write a date YYYY-MM-DD, not {item!r}")
        try:
            days.add(item if isinstance(item, date) else date.fromisoformat(item))
        except ValueError:
            raise _fail(f"{path}[{i}]", f"write a date YYYY-MM-DD, not {item!r}") from None
    return frozenset(days)


def _config_schedule(value: Any, path: str) -> TouSchedule:
    known = ("weekdays", "weekends", "holidays", "holiday_dates", "workdays")
    mapping = _config_mapping(value, path, known)
    if "weekdays" not in mapping:
        raise _fail(f"{path}.weekdays", "missing")
    days = {key: _config_day(mapping[key], f"{path}.{key}") for key in known[:3] if key in mapping}
    dates = {key: _config_dates(mapping[key], f"{path}.{key}") for key in known[3:] if key in mapping}
    return TouSchedule(**days, **dates)


def _config_tiers(value: Any, path: str) -> tuple[Tier, ...]:
    items = _config_list(value, path)
    tiers: list[Tier] = []
    kind = ""
    for i, item in enumerate(items):
        here = f"{path}[{i}]"
        tier = _config_mapping(item, here, ("upto", "price", "adder"))
        given = [key for key in ("price", "adder") if key in tier]
        if len(given) != 1:
            raise _fail(here, "give a price or an adder (one of them)")
        if kind and given[0] != kind:
            raise _fail(f"{here}.{given[0]}", f"the tiers above give {kind}s; give every tier a {kind}")
        kind = given[0]
        last = i == len(items) - 1
        if last and "upto" in tier:
            raise _fail(f"{here}.upto", "the last tier has no upper bound; add a tier above it")
        if not last and "upto" not in tier:
            raise _fail(f"{here}.upto", "missing (only the last tier is unbounded)")
        upto = _config_number(tier["upto"], f"{here}.upto", positive=True) if "upto" in tier else None
        if upto is not None and tiers and upto <= tiers[-1].upto:  # type: ignore[operator]
            raise _fail(f"{here}.upto", f"must be above tiers[{i - 1}].upto ({tiers[-1].upto})")
        figure = _config_number(tier[kind], f"{here}.{kind}")
        tiers.append(Tier(upto, **{kind: figure}))
    return tuple(tiers)


def tariff_from_mapping(name: str, mapping: Any, *, where: str = "") -> Tariff:
    """A :class:`Tariff` from a ``tariffs:`` entry as YAML gives it (plain dicts and lists).

    Raises ValueError naming the key path (``tariffs.residential.tiers[1].upto: ...``);
    ``where`` is the path of the entry's parent (default ``tariffs``).
    """
    path = f"{where or 'tariffs'}.{name}"
    entry = _config_mapping(mapping, path, _TARIFF_KEYS)
    commodity = entry.get("commodity")
    if commodity not in COMMODITY_UNITS:
        raise _fail(f"{path}.commodity", f"expected one of {', '.join(COMMODITY_UNITS)}, not {commodity!r}")
    unit = entry.get("unit", COMMODITY_UNITS[commodity])
    currency = entry.get("currency", "CNY")
    for key, text in (("unit", unit), ("currency", currency)):
        if not isinstance(text, str) or not text.strip():
            raise _fail(f"{path}.{key}", f"must be text, not {text!r}")
    basis = entry.get("tier_basis", "monthly")
    if basis not in TIER_BASES:
        raise _fail(f"{path}.tier_basis", f"expected monthly or annual, not {basis!r}")
    given = [key for key in ("price", "prices", "seasons") if key in entry]
    if len(given) > 1:
        raise _fail(f"{path}.{given[1]}", f"give one of price, prices and seasons (also given: {given[0]})")
    seasons: list[Season] = []
    if "price" in entry:
        seasons.append(Season("all year", range(1, 13), {ALL: _config_number(entry["price"], f"{path}.price")}))
    elif "prices" in entry:
        seasons.append(Season("all year", range(1, 13), _config_prices(entry["prices"], f"{path}.prices")))
    elif "seasons" in entry:
        seen: dict[int, str] = {}
        for i, item in enumerate(_config_list(entry["seasons"], f"{path}.seasons")):
            here = f"{path}.seasons[{i}]"
            season = _config_mapping(item, here, ("name", "months", "prices"))
            for key in ("months", "prices"):
                if key not in season:
                    raise _fail(f"{here}.{key}", "missing")
            months = _config_months(season["months"], f"{here}.months")
            for month in sorted(months):
                if month in seen:
                    raise _fail(f"{here}.months", f"{calendar.month_abbr[month]} is already in {seen[month]}")
                seen[month] = str(season.get("name", f"season {i + 1}"))
            prices = _config_prices(season["prices"], f"{here}.prices")
            seasons.append(Season(seen[min(months)], months, prices))
        missing = [calendar.month_abbr[m] for m in range(1, 13) if m not in seen]
        if missing:
            raise _fail(f"{path}.seasons", f"no season has {', '.join(missing)}")
        first = set(seasons[0].prices)
        for i, season in enumerate(seasons[1:], start=1):
            if set(season.prices) != first:
                raise _fail(f"{path}.seasons[{i}].prices", f"must price the same periods as seasons[0]: {', '.join(sorted(first))}")
    tiers = _config_tiers(entry["tiers"], f"{path}.tiers") if "tiers" in entry else ()
    if tiers and tiers[0].price is not None and seasons:
        raise _fail(f"{path}.tiers", f"tiers with prices take no {given[0]}; give the tiers adders instead")
    if not seasons and not (tiers and tiers[0].price is not None):
        raise _fail(path, "no price: give price, prices, seasons, or tiers with prices")
    schedule = _config_schedule(entry["schedule"], f"{path}.schedule") if "schedule" in entry else None
    periods = set(seasons[0].prices) if seasons else {ALL}
    if periods != {ALL}:
        if schedule is None:
            raise _fail(f"{path}.schedule", "missing: time-of-use prices need a day schedule")
        if schedule.periods != periods:
            raise _fail(
                f"{path}.schedule",
                f"uses {', '.join(sorted(schedule.periods))} but the prices are for {', '.join(sorted(periods))}",
            )
    elif schedule is not None:
        raise _fail(f"{path}.schedule", "a schedule needs prices per period (prices: or seasons:)")
    fixed = []
    for i, item in enumerate(_config_list(entry["fixed"], f"{path}.fixed") if "fixed" in entry else []):
        here = f"{path}.fixed[{i}]"
        charge = _config_mapping(item, here, ("description", "amount"))
        if "amount" not in charge:
            raise _fail(f"{here}.amount", "missing")
        fixed.append(FixedCharge(str(charge.get("description", "fixed charge")), _config_number(charge["amount"], f"{here}.amount")))
    return Tariff(name, commodity, unit.strip(), currency.strip(), tuple(seasons), schedule, tiers, basis, tuple(fixed))



# -- schemes: how an entry becomes a priced tariff ------------------------------------------


@runtime_checkable
class PricedTariff(Protocol):
    """What billing needs of a tariff, whichever scheme made it.

    ``tier_basis`` is ``annual`` when the bill depends on what the meter consumed earlier in
    the year: billing then works out ``year_to_date_before`` from the frozen totals (at the
    year's first monthly boundary and at the period's start) and passes it to :meth:`bill`;
    for anything else (``monthly``) it passes zero.
    """

    name: str
    commodity: str  #: a key of :data:`COMMODITY_REGISTERS`: which registers measure it
    unit: str
    currency: str
    tier_basis: str

    def bill(self, meter: str, period: str, consumption: Consumption, *,
             year_to_date_before: Decimal = Decimal(0)) -> Bill:
        """Price ``consumption`` of ``meter`` in ``period`` (``YYYY-MM``); ValueError when it cannot."""
        ...


@runtime_checkable
class TariffScheme(Protocol):
    """A way of pricing that a ``tariffs:`` entry names with ``scheme:``, registered through
    the ``meterhub_register_tariff_schemes`` hook."""

    name: str  #: what an entry writes as ``scheme:``
    description: str  #: one line for listings

    def make(self, name: str, mapping: Mapping[str, Any]) -> PricedTariff:
        """The tariff ``name`` from its entry (without the ``scheme`` key); ValueError naming
        the key path (``tariffs.NAME.KEY: ...``) when the entry is wrong."""
        ...


@attrs.frozen
class _StandardScheme:
    name: str = "standard"
    description: str = "time-of-use with seasons and holidays, monthly or annual tiers, fixed charges"

    def make(self, name: str, mapping: Mapping[str, Any]) -> PricedTariff:
        return tariff_from_mapping(name, mapping)


#: The built-in scheme, an entry's when it names none: :func:`tariff_from_mapping`.
STANDARD_SCHEME: TariffScheme = _StandardScheme()
DEFAULT_SCHEME = STANDARD_SCHEME.name


def tariffs_from_config(section: Any, schemes: Mapping[str, TariffScheme]) -> dict[str, PricedTariff]:
    """The priced tariffs of a ``tariffs:`` section (name -> entry), each made by the scheme
    its ``scheme:`` names (default ``standard``), which is given the entry without that key.

    Raises ValueError whose message starts with the key path (``tariffs.NAME.scheme: ...``);
    a scheme's own error without the path gets it put in front.
    """
    entries = _config_mapping(section, "tariffs")
    tariffs: dict[str, PricedTariff] = {}
    for name, entry in entries.items():
        path = f"tariffs.{name}"
        if not isinstance(name, str) or not name.strip():
            raise _fail(path, "a tariff's name must be text")
        mapping = dict(_config_mapping(entry, path))
        scheme_name = mapping.pop("scheme", DEFAULT_SCHEME)
        scheme = schemes.get(scheme_name) if isinstance(scheme_name, str) else None
        if scheme is None:
            known = ", ".join(sorted(schemes)) or "none is installed"
            raise _fail(f"{path}.scheme", f"unknown scheme {scheme_name!r}; known: {known}")
        try:
            tariff = scheme.make(name, mapping)
        except ValueError as exc:
            text = str(exc)
            if text.startswith(path):
                raise
            raise _fail(path, text) from None
        if not isinstance(tariff, PricedTariff):
            raise _fail(f"{path}.scheme", f"scheme {scheme_name!r} made {type(tariff).__name__}, not a priced tariff")
        tariffs[name] = tariff
    return tariffs
