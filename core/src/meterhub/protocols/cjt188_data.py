"""CJ/T 188-2004 data items: the 901F metering record of water, gas and heat meters.

One read of DI 901F answers everything a meter measures (protocols README §2.2): a
water or gas meter sends its current and settlement-date volumes, its clock and the
status word ST; a heat meter sends heat, power, flow, volume, temperatures, working
hours, clock and ST. Numbers are packed BCD, least significant byte first (shared
:mod:`~meterhub.protocols.bcd` helpers); accumulated values carry a unit code. This
module turns the record into exact :class:`~decimal.Decimal` values and maps them onto
meterhub's OBIS vocabulary; the simulator encodes with the very same layouts.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

import attrs

from ..errors import FrameError, NotSupported
from ..model import Measurement
from .bcd import bcd_to_int, int_to_bcd
from .cjt188 import Family, MeterType, battery_low, family_of, status_from_wire, status_to_wire, type_name, valve_state

NOT_SUPPORTED_BYTE = 0xFF  #: §2.2: a value of all FF means "not supported" (one Go poller's meter)


# --- unit codes -------------------------------------------------------------------------


@attrs.frozen
class Unit:
    """One unit code and how its values become meterhub's units, exactly.

    ``target`` is the unit meterhub reports and ``exponent`` the power of ten that takes
    a value there (MWh -> kWh: +3). Energy in the Wh family becomes kWh, the vocabulary's
    unit; energy in the joule family becomes GJ (the other heat unit the design names):
    1 GJ = 277.7... kWh has no exact decimal form, and a bill must not carry a rounding
    meterhub made up.
    """

    code: int
    symbol: str  #: as the standard prints it
    kind: str  #: "energy", "power", "volume" or "flow"
    target: str
    exponent: int

    def convert(self, value: Decimal) -> Decimal:
        return value.scaleb(self.exponent)


#: README §2.2 (0x2C verified by every vector, the others from the standard's table as
#: copied into the KingDa concentrator source, CJT188_UnitType; not cross-checked).
UNITS: Mapping[int, Unit] = {
    u.code: u
    for u in (
        Unit(0x02, "Wh", "energy", "kWh", -3),
        Unit(0x05, "kWh", "energy", "kWh", 0),
        Unit(0x08, "MWh", "energy", "kWh", 3),
        Unit(0x0A, "MWh×100", "energy", "kWh", 5),
        Unit(0x01, "J", "energy", "GJ", -9),
        Unit(0x0B, "kJ", "energy", "GJ", -6),
        Unit(0x0E, "MJ", "energy", "GJ", -3),
        Unit(0x11, "GJ", "energy", "GJ", 0),
        Unit(0x13, "GJ×100", "energy", "GJ", 2),
        Unit(0x14, "W", "power", "kW", -3),
        Unit(0x17, "kW", "power", "kW", 0),
        Unit(0x1A, "MW", "power", "kW", 3),
        Unit(0x29, "L", "volume", "m3", -3),
        Unit(0x2C, "m³", "volume", "m3", 0),
        Unit(0x32, "L/h", "flow", "m3/h", -3),
        Unit(0x35, "m³/h", "flow", "m3/h", 0),
    )
}

UNIT_KWH = 0x05
UNIT_GJ = 0x11
UNIT_MWH = 0x08
UNIT_KW = 0x17
UNIT_LITRE = 0x29
UNIT_M3 = 0x2C
UNIT_M3_PER_H = 0x35


@attrs.frozen
class Amount:
    """A value as the meter shows it, with the unit code it sent; ``value`` None = FF (not supported)."""

    value: Decimal | None
    unit_code: int

    @property
    def unit(self) -> Unit | None:
        return UNITS.get(self.unit_code)

    def measurement(self, kind: str, what: str) -> Measurement:
        """The value in meterhub's unit for ``kind``: NotSupported for FF, FrameError if the
        unit code is unknown or of another kind."""
        if self.value is None:
            raise NotSupported(f"meter reports {what} not supported (FF)")
        unit = self.unit
        if unit is None:
            known = ", ".join(f"{c:02X}h" for c in sorted(UNITS))
            raise FrameError(f"{what}: unknown unit code {self.unit_code:02X}h (CJ/T 188 defines {known})")
        if unit.kind != kind:
            raise FrameError(f"{what}: unit code {self.unit_code:02X}h ({unit.symbol}) is a {unit.kind} unit, not a {kind} unit")
        return Measurement(unit.convert(self.value), unit.target)


class NoTime(enum.Enum):
    """Why a record carries no real time: the two forms meters send (both seen in captures)."""

    UNSET = "unset"  #: all zero: the meter's clock was never set (FoxEdge, Qt and other captures)
    UNSUPPORTED = "unsupported"  #: all FF: the meter has no clock (a Go poller's capture)


# --- the record layouts -------------------------------------------------------------------


@attrs.frozen
class Field:
    """One value of a record: ``size`` BCD bytes with ``decimals`` (plus a unit byte for amounts)."""

    name: str
    kind: str  #: "amount" (BCD + unit code), "number" (BCD), "clock" (7 bytes) or "status" (ST)
    size: int
    decimals: int = 0
    description: str = ""

    @property
    def wire_size(self) -> int:
        return self.size + (1 if self.kind == "amount" else 0)


#: §2.2 [V]: water and gas meters, L = 16h: current accumulated flow XXXXXX.XX + unit,
#: settlement-date accumulated flow + unit, real time, ST.
FLOW_LAYOUT: tuple[Field, ...] = (
    Field("current", "amount", 4, 2, "current accumulated volume"),
    Field("settlement", "amount", 4, 2, "accumulated volume at the settlement date"),
    Field("clock", "clock", 7, 0, "real time"),
    Field("status", "status", 2, 0, "status ST"),
)

#: §2.2 [U], L = 2Eh; the field offsets agree with a public heat-meter reader
#: (xijunzhou/sdqr_energy_node_class, cj188.h). Decimals from recollection of the
#: standard's table [U]: heat, power and volume XXXXXX.XX, flow XXXX.XXXX, temperatures
#: XXXX.XX °C, working time XXXXXX hours.
HEAT_LAYOUT: tuple[Field, ...] = (
    Field("settlement_heat", "amount", 4, 2, "heat at the settlement date"),
    Field("current_heat", "amount", 4, 2, "current heat"),
    Field("heat_power", "amount", 4, 2, "heat power"),
    Field("flow_rate", "amount", 4, 4, "flow rate"),
    Field("volume", "amount", 4, 2, "accumulated volume"),
    Field("flow_temperature", "number", 3, 2, "supply temperature"),
    Field("return_temperature", "number", 3, 2, "return temperature"),
    Field("operating_hours", "number", 3, 0, "accumulated working time"),
    Field("clock", "clock", 7, 0, "real time"),
    Field("status", "status", 2, 0, "status ST"),
)

FLOW_RECORD_LEN = sum(f.wire_size for f in FLOW_LAYOUT)  #: 19 bytes after DI and SER (L = 22)
HEAT_RECORD_LEN = sum(f.wire_size for f in HEAT_LAYOUT)  #: 43 bytes after DI and SER (L = 46)


def _problems(value: Any) -> tuple[tuple[str, str], ...]:
    return tuple((str(k), str(v)) for k, v in (value.items() if isinstance(value, Mapping) else value))


@attrs.frozen
class FlowRecord:
    """901F of a water or gas meter, lossless: ``encode_record`` gives back the bytes.

    An amount whose value the meter sends as FF has ``value`` None; a clock is a
    :class:`NoTime` when all zero or all FF. ``problems`` names fields that could not be
    decoded (non-BCD digits, an impossible date) and why; such fields are None.
    """

    current: Amount | None
    settlement: Amount | None
    clock: datetime | NoTime | None
    status: int
    problems: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_problems)

    layout = FLOW_LAYOUT


@attrs.frozen
class HeatRecord:
    """901F of a heat (or cooling) meter; FF, :class:`NoTime` and ``problems`` as in
    :class:`FlowRecord` (a number sent as FF is None)."""

    settlement_heat: Amount | None
    current_heat: Amount | None
    heat_power: Amount | None
    flow_rate: Amount | None
    volume: Amount | None
    flow_temperature: Decimal | None
    return_temperature: Decimal | None
    operating_hours: Decimal | None
    clock: datetime | NoTime | None
    status: int
    problems: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_problems)

    layout = HEAT_LAYOUT


Record = FlowRecord | HeatRecord


def record_type(family: Family) -> type[FlowRecord | HeatRecord]:
    """The 901F layout of a meter family; NotSupported for "other" meters (no standard layout)."""
    if family is Family.HEAT:
        return HeatRecord
    if family in (Family.WATER, Family.GAS):
        return FlowRecord
    raise NotSupported(f"CJ/T 188 defines no metering-data layout for {family.value} meters (types 40h-49h)")


def _number(data: bytes, decimals: int) -> Decimal:
    return Decimal(bcd_to_int(data)).scaleb(-decimals)


def _clock(data: bytes) -> datetime | NoTime:
    if not any(data):
        return NoTime.UNSET
    if all(b == NOT_SUPPORTED_BYTE for b in data):
        return NoTime.UNSUPPORTED
    # §2.2: ss mm hh DD MM YY CC, each a BCD byte
    ss, mm, hh, dd, mo, yy, cc = (bcd_to_int(data[i : i + 1]) for i in range(7))
    return datetime(cc * 100 + yy, mo, dd, hh, mm, ss)


def _decode_field(f: Field, data: bytes) -> Any:
    if f.kind == "status":
        return status_from_wire(data)
    if f.kind == "clock":
        return _clock(data)
    value = None if all(b == NOT_SUPPORTED_BYTE for b in data[: f.size]) else _number(data[: f.size], f.decimals)
    return Amount(value, data[f.size]) if f.kind == "amount" else value


def decode_record(family: Family, payload: bytes) -> Record:
    """The 901F record of a meter of ``family`` from the payload after DI and SER.

    Raises FrameError if the payload is not the layout's length and NotSupported for a
    family without a layout. A field that cannot be decoded is None with a ``problems``
    entry, so one broken field (a meter whose clock holds an impossible date) does not
    cost the others.
    """
    cls = record_type(family)
    payload = bytes(payload)
    expected = sum(f.wire_size for f in cls.layout)
    if len(payload) != expected:
        raise FrameError(
            f"901F of a {family.value} meter holds {expected} bytes after DI and SER (L={expected + 3}), got {len(payload)}"
        )
    values: dict[str, Any] = {}
    problems: list[tuple[str, str]] = []
    offset = 0
    for f in cls.layout:
        chunk = payload[offset : offset + f.wire_size]
        offset += f.wire_size
        try:
            values[f.name] = _decode_field(f, chunk)
        except ValueError as exc:  # a non-BCD nibble or an impossible date
            values[f.name] = None
            problems.append((f.name, f"bad {f.description} {chunk.hex(' ').upper()}: {exc}"))
    return cls(**values, problems=tuple(problems))


def _encode_number(value: Decimal, f: Field) -> bytes:
    value = Decimal(value)
    digits = value.scaleb(f.decimals)
    if digits != digits.to_integral_value() or value < 0:
        raise ValueError(f"{f.description} {value} is not a non-negative number with {f.decimals} decimals")
    return int_to_bcd(int(digits), f.size)


def _encode_field(f: Field, value: Any) -> bytes:
    if f.kind == "status":
        return status_to_wire(int(value))
    if f.kind == "clock":
        if value is NoTime.UNSET:
            return bytes(f.size)
        if value is NoTime.UNSUPPORTED or value is None:
            return bytes((NOT_SUPPORTED_BYTE,)) * f.size
        if not 1 <= value.year <= 9999:  # CC and YY are one BCD byte each
            raise ValueError(f"CJ/T 188 years are CCYY, got {value.year}")
        fields = (value.second, value.minute, value.hour, value.day, value.month, value.year % 100, value.year // 100)
        return b"".join(int_to_bcd(x, 1) for x in fields)
    if f.kind == "amount":
        if value is None:
            return bytes((NOT_SUPPORTED_BYTE,)) * f.wire_size
        if not 0 <= value.unit_code <= 0xFF:
            raise ValueError(f"unit code is one byte, got {value.unit_code!r}")
        number = bytes((NOT_SUPPORTED_BYTE,)) * f.size if value.value is None else _encode_number(value.value, f)
        return number + bytes((value.unit_code,))
    if value is None:
        return bytes((NOT_SUPPORTED_BYTE,)) * f.size
    return _encode_number(value, f)


def encode_record(record: Record) -> bytes:
    """The payload (after DI and SER) of a 901F record: the inverse of :func:`decode_record`.

    None (an amount, its value or a number) is sent as FF (not supported), a
    :class:`NoTime` clock as zeros or FF.
    Raises ValueError for a value the layout cannot hold exactly, and for a record with
    ``problems`` (it was never a valid record).
    """
    if record.problems:
        raise ValueError(f"cannot encode a record with undecodable fields: {dict(record.problems)}")
    return b"".join(_encode_field(f, getattr(record, f.name)) for f in record.layout)


# --- OBIS quantities --------------------------------------------------------------------

CLOCK = "0-0:1.0.0"
VALVE_STATE = "0-0:96.3.10"
BATTERY_LOW = "0-0:96.6.0"
METER_STATUS = "0-0:97.97.0"
OPERATING_TIME = "0-0:96.8.0"
HEAT_ENERGY = "6-0:1.0.0"
HEAT_ENERGY_SETTLEMENT = "6-0:1.0.1"
HEAT_VOLUME = "6-0:2.0.0"
HEAT_POWER = "6-0:8.0.0"
HEAT_FLOW = "6-0:9.0.0"
FLOW_TEMPERATURE = "6-0:10.0.0"
RETURN_TEMPERATURE = "6-0:11.0.0"
TEMPERATURE_DIFFERENCE = "6-0:12.0.0"

#: OBIS value group A names the medium (EN 13757-1 / IEC 62056-61): 8 cold water, 9 hot
#: water, 7 gas. Drinking and reclaimed water are cold water for this purpose.
_VOLUME_OBIS: Mapping[str, tuple[str, str]] = {
    "water": ("8-0:1.0.0", "8-0:1.0.1"),
    "hot_water": ("9-0:1.0.0", "9-0:1.0.1"),
    "gas": ("7-0:3.0.0", "7-0:3.0.1"),
}

#: Quantities every meter's ST and clock answer: OBIS -> (record field, how to present it).
_COMMON: Mapping[str, tuple[str, str]] = {
    CLOCK: ("clock", "clock"),
    VALVE_STATE: ("status", "valve"),
    BATTERY_LOW: ("status", "battery"),
    METER_STATUS: ("status", "status"),
}

#: A heat (or cooling) meter's quantities. The vocabulary has no cooling-energy codes, so
#: a cooling meter (21h) reports on the heat codes; its flow temperature is below its
#: return temperature, so its temperature difference is negative.
_HEAT: Mapping[str, tuple[str, str]] = {
    HEAT_ENERGY: ("current_heat", "energy"),
    HEAT_ENERGY_SETTLEMENT: ("settlement_heat", "energy"),
    HEAT_VOLUME: ("volume", "volume"),
    HEAT_POWER: ("heat_power", "power"),
    HEAT_FLOW: ("flow_rate", "flow"),
    FLOW_TEMPERATURE: ("flow_temperature", "°C"),
    RETURN_TEMPERATURE: ("return_temperature", "°C"),
    TEMPERATURE_DIFFERENCE: ("", "difference"),
    OPERATING_TIME: ("operating_hours", "h"),
}


def _quantity_table(meter_type: int) -> Mapping[str, tuple[str, str]]:
    family = family_of(meter_type)
    if family is Family.HEAT:
        return {**_HEAT, **_COMMON}
    if family is Family.OTHER:
        return {}
    medium = "gas" if family is Family.GAS else "hot_water" if meter_type == MeterType.HOT_WATER else "water"
    current, settlement = _VOLUME_OBIS[medium]
    return {current: ("current", "volume"), settlement: ("settlement", "volume"), **_COMMON}


def quantities_for(meter_type: int) -> tuple[str, ...]:
    """OBIS codes a meter of this type answers with its 901F record (ValueError for an unknown type)."""
    return tuple(_quantity_table(meter_type))


ALL_QUANTITIES: tuple[str, ...] = tuple(sorted({q for t in (0x10, 0x11, 0x20, 0x30) for q in quantities_for(t)}))


def _description(record: Record, name: str) -> str:
    for f in record.layout:
        if f.name == name:
            return f.description
    return name


def value_of(meter_type: int, record: Record, obis: str) -> Measurement:
    """The measurement of one quantity in a 901F record.

    NotSupported if this meter type has no such quantity or the meter sent FF; FrameError
    for a field that could not be decoded or has a unit code of the wrong kind.
    """
    table = _quantity_table(meter_type)
    if obis not in table:
        raise NotSupported(f"a {type_name(meter_type)} has no {obis} (it answers {', '.join(table) or 'nothing meterhub can read'})")
    name, how = table[obis]
    if how == "difference":
        supply, back = value_of(meter_type, record, FLOW_TEMPERATURE), value_of(meter_type, record, RETURN_TEMPERATURE)
        return Measurement(Decimal(supply.value) - Decimal(back.value), "K")
    problems = dict(record.problems)
    what = _description(record, name)
    if name in problems:
        raise FrameError(f"meter sent a {problems[name]}")
    value = getattr(record, name)
    if how == "valve":
        return Measurement(valve_state(value), "")
    if how == "battery":
        return Measurement("true" if battery_low(value) else "false", "")
    if how == "status":
        return Measurement(f"{value:04X}", "")  # the ST word, high byte (ST2) first
    if how == "clock":
        if value is NoTime.UNSET:
            raise NotSupported("meter's real time is not set (all zero)")
        if value is NoTime.UNSUPPORTED or value is None:
            raise NotSupported("meter reports real time not supported (FF)")
        return Measurement(value.isoformat(), "")
    if value is None:
        raise NotSupported(f"meter reports {what} not supported (FF)")
    if isinstance(value, Amount):
        return value.measurement(how, what)
    return Measurement(value, how)


def measurements(meter_type: int, record: Record, quantities: list[str] | tuple[str, ...]) -> list[Measurement | Exception]:
    """One entry per quantity, in order: its Measurement or the error it failed with."""
    out: list[Measurement | Exception] = []
    for obis in quantities:
        try:
            out.append(value_of(meter_type, record, obis))
        except (NotSupported, FrameError) as exc:
            out.append(exc)
    return out
