"""Bills from the store: a meter's frozen register values at the monthly freezes that open
and close a month, priced by its tariff (:mod:`meterhub.tariffs`).

A frozen value is a reading with ``period`` 1, quality OK and ``timestamp`` the boundary it
stands for; ``data_time`` later than the boundary means it was back-filled, and the bill
says so. The monthly freeze is the daily freeze (``daily``, local time) of the settlement
day: month ``YYYY-MM`` runs from the one on that day of the month to the one on that day
of the next. ``meterhub run`` keeps what billing needs from the site file in the store
(:func:`billing_settings` under :data:`BILLING_SCOPE`), so ``meterhub bill`` works from the
store alone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import attrs

from .errors import MeterhubError
from .model import Meter, Reading, Site, local_zone, meter_key
from .tariffs import (
    COMMODITY_REGISTERS,
    ENERGY_TOU,
    TOTAL_REGISTERS,
    Bill,
    PricedTariff,
    RegisterValue,
    TariffScheme,
    consumption_from_registers,
    tariffs_from_config,
)

if TYPE_CHECKING:
    from .store import MeterIdentity, Store

#: The settings scope ``meterhub run`` writes :func:`billing_settings` to.
BILLING_SCOPE = "billing"

#: The frozen period (OBIS F group 1: the last closed one), as freezes are stored.
FROZEN = 1

#: How far around a missing freeze the error looks for the frozen values that are there.
NEARBY = timedelta(days=45)

#: Readings fetched at first when looking for the ones at an instant (grown as needed).
_FIRST_PAGE = 64

_PERIOD_RE = re.compile(r"^(\d{4})-(\d{2})$")
_HHMM_RE = re.compile(r"^(\d{1,2}):(\d{2})$")


class BillingError(MeterhubError):
    """A bill that cannot be made from the store: a frozen reading is missing, the meter
    named is not (or not only) one meter, or the readings do not price (went backwards)."""


def parse_period(period: str) -> tuple[int, int]:
    """The year and month of a billing period ``YYYY-MM``; ValueError for anything else."""
    found = _PERIOD_RE.match(period) if isinstance(period, str) else None
    if not found or not 1 <= int(found.group(2)) <= 12 or int(found.group(1)) < 1:
        raise ValueError(f"a billing period is a month written YYYY-MM, not {period!r}")
    return int(found.group(1)), int(found.group(2))


def billing_boundaries(period: str, zone: tzinfo, *, daily: time = time(0),
                       settlement_day: int = 1) -> tuple[datetime, datetime]:
    """The UTC instants of the monthly freezes that open and close ``period`` (``YYYY-MM``):
    the daily freeze (``daily``, local time in ``zone``) of the settlement day of that
    month and of the next."""
    year, month = parse_period(period)
    if isinstance(settlement_day, bool) or not isinstance(settlement_day, int) or not 1 <= settlement_day <= 28:
        raise ValueError(f"the settlement day is a day of the month 1..28, not {settlement_day!r}")
    wall = daily.replace(tzinfo=None)
    following = (year + 1, 1) if month == 12 else (year, month + 1)
    start, end = (datetime.combine(date(y, m, settlement_day), wall, tzinfo=zone).astimezone(UTC)
                  for y, m in ((year, month), following))
    return start, end


def _local(moment: datetime, zone: tzinfo) -> str:
    return f"{moment.astimezone(zone):%Y-%m-%d %H:%M}"


def _where(reading: Reading) -> str:
    """The stored meter a reading belongs to, in words."""
    key = meter_key(reading.channel, reading.protocol, reading.meter)
    return f"{key} of terminal {reading.terminal}" if reading.terminal else key


def _readings_until(store: Store, *, since: datetime, until: datetime, **query: Any) -> list[Reading]:
    """Stored readings from ``since`` to ``until`` (both inclusive): the store has no upper
    bound, so fetch a page and grow it until it passes ``until`` or the readings run out."""
    limit = _FIRST_PAGE
    while True:
        got = store.readings(since=since, limit=limit, **query)
        if len(got) < limit or got[-1].timestamp > until:
            return [r for r in got if r.timestamp <= until]
        limit *= 4


def _frozen(reading: Reading) -> bool:
    return reading.ok and reading.period == FROZEN and isinstance(reading.value, Decimal)


def frozen_registers(store: Store, *, meter: str, at: datetime, protocol: str | None = None,
                     channel: str | None = None, terminal: str | None = None,
                     zone: tzinfo | None = None) -> dict[str, Reading]:
    """The frozen readings (period 1, OK) of ``meter`` at exactly ``at``, by quantity.

    A quantity frozen at ``at`` by several stored meters (the same point number on two
    terminals of a head-end, without ``terminal``) is a :class:`BillingError` listing them;
    ``zone`` is the one its message shows times in (default UTC)."""
    found: dict[str, Reading] = {}
    clashes: dict[str, set[str]] = {}
    for reading in _readings_until(store, since=at, until=at, meter=meter, protocol=protocol, channel=channel,
                                   terminal=terminal):
        if reading.timestamp != at or not _frozen(reading):
            continue
        other = found.setdefault(reading.quantity, reading)
        if other is not reading and _where(other) != _where(reading):
            clashes.setdefault(reading.quantity, {_where(other)}).add(_where(reading))
    if clashes:
        quantity, meters = sorted(clashes.items())[0]
        hint = "; name the terminal" if any(" of terminal " in m for m in meters) else ""
        raise BillingError(f"meter {meter}: {quantity} frozen at {_local(at, zone or UTC)} by {len(meters)} meters: "
                           f"{', '.join(sorted(meters))}{hint}")
    return found


def _nearby(store: Store, *, quantity: str, at: datetime, zone: tzinfo, **query: Any) -> str:
    """The frozen values of ``quantity`` nearest ``at`` either side, in words."""
    around = [r for r in _readings_until(store, since=at - NEARBY, until=at + NEARBY, quantity=quantity, **query)
              if _frozen(r)]
    before = [r for r in around if r.timestamp < at]
    after = [r for r in around if r.timestamp > at]
    shown = ([before[-1]] if before else []) + ([after[0]] if after else [])
    if not shown:
        days = NEARBY.days
        return f"no frozen {quantity} within {days} days of it"
    return "nearest frozen: " + ", ".join(f"{_local(r.timestamp, zone)} = {r.value:f}" for r in shown)


def resolve_meter(store: Store, meter: str, *, protocol: str | None = None,
                  channel: str | None = None) -> MeterIdentity:
    """The one stored meter the address ``meter`` names (``protocol`` and ``channel`` narrow
    it); a :class:`BillingError` when the store has none, or several (listed)."""
    candidates = store.meters(meter=meter, protocol=protocol, channel=channel)
    if len(candidates) > 1:
        keys = ", ".join(c.key for c in candidates)
        raise BillingError(f"meter {meter} names {len(candidates)} stored meters: {keys}; "
                           "give one as CHANNEL/PROTOCOL:ADDRESS")
    if not candidates:
        narrowed = "".join(f" {what} {value}" for what, value in (("protocol", protocol), ("channel", channel)) if value)
        raise BillingError(f"meter {meter}{narrowed}: no readings of it in the store")
    return candidates[0]


def _total_register(registers: Sequence[str], *edges: Mapping[str, Reading]) -> str:
    """The whole-meter register a bill uses: one both edges hold, else one either holds,
    else the commodity's first (to name it as missing)."""
    totals = [q for q in registers if q in TOTAL_REGISTERS]
    for wanted in (lambda q: all(q in e for e in edges), lambda q: any(q in e for e in edges)):
        chosen = [q for q in totals if wanted(q)]
        if chosen:
            return chosen[0]
    return totals[0]


def _register_values(edge: str, readings: Iterable[Reading], zone: tzinfo) -> list[RegisterValue]:
    return [RegisterValue(edge, r.quantity, r.value, r.unit, r.timestamp.astimezone(zone),  # type: ignore[arg-type]
                          (r.data_time or r.timestamp).astimezone(zone)) for r in readings]


def _backfill_notes(registers: Sequence[RegisterValue]) -> list[str]:
    """"start reading back-filled, read 2026-10-01 05:12" for each edge with a back-filled value."""
    notes = []
    for edge in ("start", "end"):
        late = sorted({f"{r.read:%Y-%m-%d %H:%M}" for r in registers if r.edge == edge and r.backfilled})
        if late:
            notes.append(f"{edge} reading back-filled, read {', '.join(late)}")
    return notes


def bill_meter(
    store: Store,
    tariff: PricedTariff,
    *,
    meter: str,
    period: str,
    zone: tzinfo,
    daily: time = time(0),
    settlement_day: int = 1,
    protocol: str | None = None,
    channel: str | None = None,
    terminal: str | None = None,
    rollover: Decimal | None = None,
    label: str = "",
) -> Bill:
    """The bill of ``meter`` (an address; ``protocol``, ``channel``, ``terminal`` pin it)
    for ``period``: its frozen registers at the monthly freezes that open and close the
    period, turned into consumption and priced by ``tariff``.

    For annual tiers the year's consumption before the period comes from the frozen totals
    at the year's first monthly freeze and at the period's start. A missing frozen value is
    a :class:`BillingError` naming the quantity, the meter, the boundary (local time) and
    the frozen values nearest it; so is a meter address shared by several stored meters.
    ``label`` names the meter on the bill (default ``channel/protocol:address``, with the
    terminal).
    """
    start, end = billing_boundaries(period, zone, daily=daily, settlement_day=settlement_day)
    identity = resolve_meter(store, meter, protocol=protocol, channel=channel)
    protocol, channel = identity.protocol, identity.channel
    query: dict[str, Any] = {"meter": meter, "protocol": protocol, "channel": channel, "terminal": terminal}
    name = label or meter_key(channel, protocol, meter) + (f" of terminal {terminal}" if terminal else "")
    registers = COMMODITY_REGISTERS.get(tariff.commodity, (*TOTAL_REGISTERS, *ENERGY_TOU))

    def frozen_at(at: datetime) -> dict[str, Reading]:
        found = frozen_registers(store, at=at, zone=zone, **query)
        return {q: r for q, r in found.items() if q in registers}

    def missing(quantity: str, at: datetime, what: str) -> BillingError:
        near = _nearby(store, quantity=quantity, at=at, zone=zone, **query)
        return BillingError(f"no frozen {quantity} of meter {name} at {_local(at, zone)} ({what}); {near}")

    edges = {"start": frozen_at(start), "end": frozen_at(end)}
    total = _total_register(registers, *edges.values())
    tou = [q for q in ENERGY_TOU if q in registers and any(q in e for e in edges.values())]
    for (edge, found), at in zip(edges.items(), (start, end), strict=True):
        for quantity in (total, *tou):
            if quantity not in found:
                raise missing(quantity, at, f"the {edge} of {period}")
    used = {edge: [found[q] for q in (total, *tou)] for edge, found in edges.items()}
    values = {edge: {r.quantity: r.value for r in readings} for edge, readings in used.items()}
    notes: list[str] = []
    try:
        consumption = consumption_from_registers(values["start"], values["end"], rollover=rollover)  # type: ignore[arg-type]
        before = Decimal(0)
        if tariff.tier_basis == "annual":
            year_start = billing_boundaries(f"{period[:4]}-01", zone, daily=daily, settlement_day=settlement_day)[0]
            if year_start != start:
                first = frozen_at(year_start).get(total)
                if first is None:
                    raise missing(total, year_start, f"the year's first monthly freeze, for the annual tiers of {period}")
                opening = used["start"][0]
                before = consumption_from_registers({total: first.value}, {total: opening.value},  # type: ignore[dict-item]
                                                    rollover=rollover).total
                notes.append(f"year to date before {period}: {before:f} {tariff.unit}, the frozen {total} from"
                             f" {first.value:f} at {_local(year_start, zone)} to {opening.value:f} at {_local(start, zone)}")
        bill = tariff.bill(name, period, consumption, year_to_date_before=before)
    except ValueError as exc:
        absent = "" if tou or not set(ENERGY_TOU) & set(registers) else (
            f" (no frozen tariff registers {', '.join(ENERGY_TOU)} at {_local(start, zone)} or {_local(end, zone)})")
        raise BillingError(f"meter {name}, {period}: {exc}{absent}") from None
    used_values = [*_register_values("start", used["start"], zone), *_register_values("end", used["end"], zone)]
    return attrs.evolve(bill, registers=used_values, notes=[*_backfill_notes(used_values), *notes, *bill.notes])


# -- what billing needs from a site, kept in the store ------------------------------------------


def billing_settings(site: Site) -> dict[str, Any]:
    """What ``meterhub bill`` needs from the site file, as JSON-able data for
    ``store.put_settings(BILLING_SCOPE, ...)``: zone, freeze times, the ``tariffs:``
    entries as written and each billed meter's tariff by its key."""
    freeze = site.freeze
    daily = freeze.daily if freeze is not None else time(0)
    return {
        "timezone": site.timezone,
        "daily": f"{daily:%H:%M}",
        "settlement_day": freeze.monthly_day if freeze is not None else 1,
        "tariffs": _plain(site.tariff_sources),
        "meters": {meter.key: meter.tariff for meter in site.meters if meter.tariff},
    }


def _plain(value: Any) -> Any:
    """Mappings (read-only ones too) and sequences as dicts and lists, dates as ISO text."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (date, time)):
        return value.isoformat()
    return value


@attrs.frozen
class BillingSetup:
    """Everything a bill needs besides the readings: the zone and freeze times, the priced
    tariffs by name and which tariff bills which meter (by ``channel/protocol:address``)."""

    zone: tzinfo
    daily: time = time(0)
    settlement_day: int = 1
    tariffs: Mapping[str, PricedTariff] = attrs.field(factory=dict)
    assignments: Mapping[str, str] = attrs.field(factory=dict)

    def tariff_of(self, key: str) -> str:
        """The name of the tariff assigned to the meter ``key``, "" for none."""
        return self.assignments.get(key, "")


def setup_from_site(site: Site) -> BillingSetup:
    """The billing setup of a loaded site file."""
    freeze = site.freeze
    return BillingSetup(
        zone=zone_named(site.timezone),
        daily=freeze.daily if freeze is not None else time(0),
        settlement_day=freeze.monthly_day if freeze is not None else 1,
        tariffs=dict(site.tariffs),
        assignments={meter.key: meter.tariff for meter in site.meters if meter.tariff},
    )


def setup_from_settings(values: Mapping[str, Any], schemes: Mapping[str, TariffScheme]) -> BillingSetup:
    """The billing setup :func:`billing_settings` kept in the store; ValueError naming the
    setting (``billing.daily: ...``) when one cannot be used."""
    daily_text = values.get("daily", "00:00")
    found = _HHMM_RE.match(daily_text) if isinstance(daily_text, str) else None
    if not found or int(found.group(1)) > 23 or int(found.group(2)) > 59:
        raise ValueError(f"{BILLING_SCOPE}.daily: a time of day HH:MM, not {daily_text!r}")
    day = values.get("settlement_day", 1)
    if isinstance(day, bool) or not isinstance(day, int) or not 1 <= day <= 28:
        raise ValueError(f"{BILLING_SCOPE}.settlement_day: a day of the month 1..28, not {day!r}")
    meters = values.get("meters") or {}
    if not isinstance(meters, Mapping):
        raise ValueError(f"{BILLING_SCOPE}.meters: must be a mapping of meter to tariff")
    timezone = values.get("timezone") or ""
    return BillingSetup(
        zone=zone_named(timezone, f"{BILLING_SCOPE}.timezone"),
        daily=time(int(found.group(1)), int(found.group(2))),
        settlement_day=day,
        tariffs=tariffs_from_config(values.get("tariffs") or {}, schemes),
        assignments={str(k): str(v) for k, v in meters.items()},
    )


def zone_named(name: str, what: str = "timezone") -> tzinfo:
    """:func:`meterhub.model.local_zone` with a ValueError naming ``what`` for an unknown zone."""
    if not isinstance(name, str):
        raise ValueError(f"{what}: an IANA zone name (Asia/Shanghai), not {name!r}")
    try:
        return local_zone(name)
    except (KeyError, ValueError, OSError):  # ZoneInfoNotFoundError is a KeyError
        raise ValueError(f"{what}: unknown time zone {name!r} (write an IANA name such as Asia/Shanghai)") from None


def find_site_meter(meters: Iterable[Meter], text: str) -> Meter | None:
    """The site's meter ``text`` names: its ``name``, its key ``channel/protocol:address``,
    or its address when one meter alone has it; None when none does. An address several
    meters share is a :class:`BillingError` listing them."""
    meters = list(meters)
    for meter in meters:
        if text in (meter.name, meter.key) and text:
            return meter
    sharing = [m for m in meters if m.address == text]
    if len(sharing) > 1:
        raise BillingError(f"meter {text} names {len(sharing)} meters of the site: "
                           f"{', '.join(m.key for m in sharing)}; give one by name or as CHANNEL/PROTOCOL:ADDRESS")
    return sharing[0] if sharing else None


__all__ = [
    "BILLING_SCOPE", "BillingError", "BillingSetup", "bill_meter", "billing_boundaries", "billing_settings",
    "find_site_meter", "frozen_registers", "parse_period", "resolve_meter", "setup_from_settings", "setup_from_site", "zone_named",
]
