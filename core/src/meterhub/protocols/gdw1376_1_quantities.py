"""What meterhub quantity each Q/GDW 1376.1 data item carries, for both ends: the
terminal's uplink turns readings into items, a head-end turns items back into readings.

Times in 1376.1 items are the terminal's local time without a zone (A.15, A.1); the caller
says which zone that is. A head-end's readings are keyed by terminal and measuring point:
``terminal`` is the terminal's name (A1 A2 as vendors print them, ``32010001``), ``meter``
the measuring point number (pn) as text, ``protocol`` :data:`PROTOCOL`, ``channel`` empty.
A frozen value (AFN 0D F161 daily, F177 monthly) is stored with ``period`` 1 (the last closed
period) and both ``timestamp`` and ``data_time`` the midnight that closed its day (month), as
the terminal side reads such readings back (a freeze at midnight stands for the day before
it); the time the terminal read it is not kept.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta, tzinfo
from decimal import Decimal
from typing import Any

from ..model import Event, Reading
from . import gdw1376_1_data as d

#: The protocol name head-end readings carry.
PROTOCOL = "gdw1376.1"

ENERGY_TOTAL = "1-0:1.8.0"
TARIFF = re.compile(r"1-0:1\.8\.(\d+)")
MAX_TARIFFS = 4  #: 1-0:1.8.1..1.8.4: what meterhub's quantity table names
REACTIVE_1 = "1-0:3.8.0"  #: combined reactive 1 = forward reactive
Q1 = "1-0:5.8.0"
Q4 = "1-0:8.8.0"
ACTIVE = ("1-0:1.7.0", "1-0:21.7.0", "1-0:41.7.0", "1-0:61.7.0")
REACTIVE = ("1-0:3.7.0", "1-0:23.7.0", "1-0:43.7.0", "1-0:63.7.0")
POWER_FACTOR = ("1-0:13.7.0", "1-0:33.7.0", "1-0:53.7.0", "1-0:73.7.0")
VOLTAGE = ("1-0:32.7.0", "1-0:52.7.0", "1-0:72.7.0")
CURRENT = ("1-0:31.7.0", "1-0:51.7.0", "1-0:71.7.0", "1-0:91.7.0")
APPARENT = ("1-0:9.7.0", "1-0:29.7.0", "1-0:49.7.0", "1-0:69.7.0")

#: The billing period of frozen values: the last closed one.
FROZEN_PERIOD = 1


def tariff_quantity(n: int, total: str = ENERGY_TOTAL) -> str:
    """``1-0:1.8.n`` (``n`` = 0 the total) of an energy register like ``total``."""
    return total.rsplit(".", 1)[0] + f".{n}"


def aware(local: datetime | None, zone: tzinfo, default: datetime) -> datetime:
    """A terminal's naive local time in UTC (``default`` when it sent none)."""
    if local is None:
        return default
    return local.replace(tzinfo=zone).astimezone(UTC)


def _closing_midnight(day: date, zone: tzinfo) -> datetime:
    after = day + timedelta(days=1)
    return datetime(after.year, after.month, after.day, tzinfo=zone).astimezone(UTC)


def _month_end(year: int, month: int, zone: tzinfo) -> datetime:
    year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return datetime(year, month, 1, tzinfo=zone).astimezone(UTC)


def _register(values: Sequence[Decimal | None], total: str, unit: str, **common: Any) -> list[Reading]:
    return [Reading(quantity=tariff_quantity(n, total), value=v, unit=unit, **common)
            for n, v in enumerate(values) if v is not None]


def _per_phase(values: Sequence[Decimal | None], quantities: Sequence[str], unit: str, scale: int = 0,
               **common: Any) -> list[Reading]:
    return [Reading(quantity=q, value=v.scaleb(scale), unit=unit, **common)
            for q, v in zip(quantities, values, strict=False) if v is not None]


def readings_of(item: d.Item, *, terminal: str, zone: tzinfo, received: datetime) -> list[Reading]:
    """The readings an item of class 1 or 2 data carries (none for items that carry no
    meter value, such as the terminal's clock); ``received``: when it came, the time of a
    value the terminal sent without one."""
    point = item.point
    if not point:
        return []
    value = item.value
    common: dict[str, Any] = {"meter": str(point), "protocol": PROTOCOL, "terminal": terminal}
    if isinstance(value, d.TariffEnergy):  # 0C F129
        return _register(value.values, ENERGY_TOTAL, "kWh", timestamp=aware(value.read_time, zone, received), **common)
    if isinstance(value, d.ForwardIndications):  # 0C F33
        when = aware(value.read_time, zone, received)
        return (_register(value.active, ENERGY_TOTAL, "kWh", timestamp=when, **common)
                + _register(value.reactive, REACTIVE_1, "kvarh", timestamp=when, **common)
                + _register(value.q1, Q1, "kvarh", timestamp=when, **common)
                + _register(value.q4, Q4, "kvarh", timestamp=when, **common))
    if isinstance(value, d.Instantaneous):  # 0C F25
        when = aware(value.read_time, zone, received)
        return (_per_phase(value.active, ACTIVE, "kW", timestamp=when, **common)
                + _per_phase(value.reactive, REACTIVE, "kvar", timestamp=when, **common)
                # A.5 is percent; meterhub keeps the power factor as a ratio (0.95)
                + _per_phase(value.power_factor, POWER_FACTOR, "", -2, timestamp=when, **common)
                + _per_phase(value.voltage, VOLTAGE, "V", timestamp=when, **common)
                + _per_phase(value.current, CURRENT, "A", timestamp=when, **common)
                + _per_phase(value.apparent, APPARENT, "kVA", timestamp=when, **common))
    # A frozen value is stored at its freeze time, so the store's key (which has the time,
    # not the data time) tells one freeze from another: two months read in the same minute
    # are two readings, and a day's and a month's freeze at the same midnight are one.
    if isinstance(value, d.DailyEnergy) and value.day is not None:  # 0D F161
        closing = _closing_midnight(value.day, zone)
        return _register(value.reading.values, ENERGY_TOTAL, "kWh", timestamp=closing, data_time=closing,
                         period=FROZEN_PERIOD, **common)
    if isinstance(value, d.MonthlyEnergy) and value.month is not None and value.month.month:  # 0D F177
        closing = _month_end(value.month.year, value.month.month, zone)
        return _register(value.reading.values, ENERGY_TOTAL, "kWh", timestamp=closing, data_time=closing,
                         period=FROZEN_PERIOD, **common)
    return []


#: meterhub event kinds of the ERC records a head-end turns into events.
ERC_KINDS = {1: "terminal_initialised", 3: "terminal_parameters_changed", 14: "terminal_power",
             21: "terminal_fault", 31: "meter_read_failure"}


def events_of(records: Iterable[d.Event], *, terminal: str, zone: tzinfo, received: datetime) -> list[Event]:
    """meterhub events of a terminal's ERC records (AFN 0E): kind by ERC
    (:data:`ERC_KINDS`, ``erc<N>`` for others), source the terminal's name, the record's
    fields as data."""
    found = []
    for record in records:
        erc = record.erc if isinstance(record, d.RawEvent) else type(record).ERC
        when = getattr(record, "time", None) or getattr(record, "on", None) or getattr(record, "off", None)
        data: dict[str, Any] = {"erc": erc, "terminal": terminal}
        if isinstance(record, d.ReadFailure):
            data.update(point=record.point.point, started=record.point.started)
        elif isinstance(record, d.TerminalFault):
            data.update(code=int(record.code))
        elif isinstance(record, d.PowerEvent):
            data.update(off=None if record.off is None else aware(record.off, zone, received).isoformat(),
                        on=None if record.on is None else aware(record.on, zone, received).isoformat())
        elif isinstance(record, d.RawEvent):
            data.update(data=record.data.hex())
        found.append(Event(ERC_KINDS.get(erc, f"erc{erc}"), source=terminal,
                           timestamp=aware(when, zone, received), severity="warning" if erc in (14, 21, 31) else "info",
                           data=data))
    return found
