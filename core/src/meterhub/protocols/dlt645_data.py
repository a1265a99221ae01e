"""DL/T 645 data identifiers (DI): what each one holds, its format, unit and OBIS code.

A DI names a value; its *format* says how the value sits in the payload (packed BCD,
least significant byte first, with a sign bit where the standard has one) and its OBIS
code says which meterhub quantity it is. ``decode_value``/``encode_value`` convert
between payload bytes and exact :class:`~decimal.Decimal` values (or ISO strings for
dates and times); the simulator encodes with the very same table the driver decodes with.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, time
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

import attrs

from ..errors import FrameError, NotSupported
from .bcd import bcd_to_int, int_to_bcd

NOT_SUPPORTED_BYTE = 0xFF  #: §1.4: a value of all FF means "not supported / not applicable"
SIGN_BIT = 0x80  #: §1.4: bit 7 of the most significant byte is the sign of signed quantities

CLOCK_OBIS = "0-0:1.0.0"
#: Tamper counters: how often the meter cover was opened, how often a magnet was held to it.
COVER_OPEN_OBIS = "0-0:96.20.0"
MAGNETIC_OBIS = "0-0:96.20.1"
#: The meter clock is two DIs, date (YYMMDDWW) and time (hhmmss), read separately.
CLOCK_DIS: Mapping[int, tuple[int, int]] = {2007: (0x04000101, 0x04000102), 1997: (0xC010, 0xC011)}


@attrs.frozen
class Format:
    """How one value sits in a payload: its size and what kind of value it is."""

    name: str
    size: int
    #: "number" (packed BCD), "date", "time", "datetime", "address" or "bits" (raw binary word)
    kind: str
    decimals: int = 0


FORMATS: Mapping[str, Format] = {
    f.name: f
    for f in (
        Format("XXXXXX.XX", 4, "number", 2),  # energy, money
        Format("XXXXXXXX", 4, "number", 0),
        Format("XXXXXX", 3, "number", 0),  # event counts, meter constant
        Format("XXX.X", 2, "number", 1),  # voltage, angle, temperature
        Format("XXX.XXX", 3, "number", 3),  # current
        Format("XX.XXXX", 3, "number", 4),  # power, demand
        Format("X.XXX", 2, "number", 3),  # power factor
        Format("XX.XX", 2, "number", 2),  # frequency; 1997 current
        Format("XXX", 2, "number", 0),  # 1997 voltage (integer volts)
        Format("YYMMDDWW", 4, "date"),  # wire order WW DD MM YY
        Format("hhmmss", 3, "time"),  # wire order ss mm hh
        Format("YYMMDDhhmm", 5, "datetime"),  # wire order mm hh DD MM YY
        Format("YYMMDDhhmmss", 6, "datetime"),  # wire order ss mm hh DD MM YY
        Format("NNNNNNNNNNNN", 6, "address"),  # 6 BCD bytes, LSB first
        Format("bits16", 2, "bits"),  # status words: a binary word, LSB first
    )
}


def _check_fmt(_instance: object, _attribute: object, value: str) -> None:
    for part in value.split("+"):
        if part not in FORMATS:
            raise ValueError(f"unknown DL/T 645 data format {part!r}; known: {', '.join(FORMATS)}")


@attrs.frozen
class DataItem:
    """One data identifier: its DI, meaning, format, unit and (if any) OBIS quantity.

    ``fmt`` may join several formats with ``+`` (max demand: ``XX.XXXX+YYMMDDhhmm``); the
    value of the item is the first part. A ``block`` item (a DI with an FF byte) holds as
    many ``fmt`` values as its payload has room for.
    """

    di: int
    name: str
    fmt: str = attrs.field(validator=_check_fmt)
    unit: str = ""
    signed: bool = False
    obis: str | None = None
    block: bool = False

    @property
    def parts(self) -> tuple[Format, ...]:
        return tuple(FORMATS[p] for p in self.fmt.split("+"))

    @property
    def size(self) -> int:
        """Payload bytes of one value (of one element, for a block)."""
        return sum(p.size for p in self.parts)

    @property
    def di_hex(self) -> str:
        """The DI as written in the standard: 8 hex digits (2007) or 4 (1997)."""
        return f"{self.di:08X}" if self.di > 0xFFFF else f"{self.di:04X}"


# --- value conversion --------------------------------------------------------------------


def _not_supported(item: DataItem) -> NotSupported:
    return NotSupported(f"meter reports {item.name} (DI {item.di_hex}) not supported (FF)")


def _bcd_fields(data: bytes) -> list[int]:
    return [bcd_to_int(data[i : i + 1]) for i in range(len(data))]


def _decode_part(fmt: Format, data: bytes, signed: bool) -> Decimal | str | None:
    if fmt.kind == "number":
        negative = signed and bool(data[-1] & SIGN_BIT)
        if negative:
            data = data[:-1] + bytes((data[-1] & ~SIGN_BIT & 0xFF,))
        value = Decimal(bcd_to_int(data)).scaleb(-fmt.decimals)
        return -value if negative and value else value
    if fmt.kind == "bits":
        return Decimal(int.from_bytes(data, "little"))
    if fmt.kind == "address":
        bcd_to_int(data)  # rejects non-BCD bytes
        return bytes(reversed(data)).hex().upper()
    fields = _bcd_fields(data)
    if fmt.kind == "time":
        ss, mm, hh = fields
        return time(hh, mm, ss).isoformat()
    if fmt.kind == "date":
        _ww, dd, mo, yy = fields  # the weekday is redundant with the date
        return date(2000 + yy, mo, dd).isoformat()
    if not any(fields):
        return None  # an all-zero time stamp: nothing recorded yet (e.g. no demand since clearing)
    if fmt.size == 5:
        mm, hh, dd, mo, yy = fields
        return datetime(2000 + yy, mo, dd, hh, mm).isoformat(timespec="minutes")
    ss, mm, hh, dd, mo, yy = fields
    return datetime(2000 + yy, mo, dd, hh, mm, ss).isoformat()


def decode_parts(item: DataItem, payload: bytes) -> tuple[Decimal | str | None, ...]:
    """Every part of one value (max demand: the demand and when it occurred).

    Raises NotSupported for an all-FF payload and FrameError for a malformed one.
    """
    payload = bytes(payload)
    if len(payload) != item.size:
        raise FrameError(f"{item.name} (DI {item.di_hex}) is {item.size} bytes, got {len(payload)}")
    if payload and all(b == NOT_SUPPORTED_BYTE for b in payload):
        raise _not_supported(item)
    out: list[Decimal | str | None] = []
    offset = 0
    for fmt in item.parts:
        chunk = payload[offset : offset + fmt.size]
        offset += fmt.size
        try:
            out.append(_decode_part(fmt, chunk, item.signed))
        except ValueError as exc:  # non-BCD nibble, impossible date or time
            raise FrameError(f"{item.name} (DI {item.di_hex}): bad {fmt.name} value {chunk.hex(' ').upper()}: {exc}") from None
    return tuple(out)


def decode_value(item: DataItem, payload: bytes) -> Decimal | str:
    """The value of ``payload``: an exact Decimal, an ISO date/time string or an address.

    Raises NotSupported("meter reports ... not supported (FF)") for an all-FF payload and
    FrameError for a payload of the wrong size or with non-BCD digits.
    """
    if item.block:
        raise ValueError(f"{item.name} (DI {item.di_hex}) is a block; use decode_block()")
    value = decode_parts(item, payload)[0]
    if value is None:
        raise NotSupported(f"meter has no {item.name} (DI {item.di_hex}) recorded (all zero)")
    return value


def decode_block(item: DataItem, payload: bytes) -> list[Decimal | str | None]:
    """The values of a block DI (e.g. 0201FF00: voltages A, B, C); None where an element is FF."""
    payload = bytes(payload)
    if not payload or len(payload) % item.size:
        raise FrameError(f"{item.name} (DI {item.di_hex}) holds {item.size}-byte values, got {len(payload)} bytes")
    out: list[Decimal | str | None] = []
    for offset in range(0, len(payload), item.size):
        try:
            out.append(decode_parts(item, payload[offset : offset + item.size])[0])
        except NotSupported:
            out.append(None)
    return out


def _as_decimal(value: object) -> Decimal:
    try:
        return Decimal(str(value)) if not isinstance(value, Decimal) else value
    except InvalidOperation:
        raise ValueError(f"not a number: {value!r}") from None


def _as_datetime(value: object) -> datetime:
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    return datetime.fromisoformat(str(value))


def _encode_part(fmt: Format, value: object, signed: bool) -> bytes:
    if fmt.kind == "number":
        number = _as_decimal(value)
        digits = int((abs(number).scaleb(fmt.decimals)).quantize(Decimal(1), rounding=ROUND_HALF_UP))
        if number < 0 and not signed:
            raise ValueError(f"{fmt.name} is unsigned, cannot hold {value}")
        limit = 10 ** (2 * fmt.size) if not signed else 8 * 10 ** (2 * fmt.size - 1)
        if digits >= limit:
            raise ValueError(f"{value} does not fit {fmt.name}{' (signed)' if signed else ''}")
        data = bytearray(int_to_bcd(digits, fmt.size))
        if number < 0 and digits:
            data[-1] |= SIGN_BIT
        return bytes(data)
    if fmt.kind == "bits":
        return int(value).to_bytes(fmt.size, "little")  # type: ignore[call-overload]
    if fmt.kind == "address":
        text = str(value).strip()
        if len(text) != 2 * fmt.size or not text.isdigit():
            raise ValueError(f"{fmt.name} needs {2 * fmt.size} digits, got {value!r}")
        return bytes.fromhex(text)[::-1]
    if fmt.kind == "time":
        t = value if isinstance(value, (time, datetime)) else time.fromisoformat(str(value))
        return b"".join(int_to_bcd(f, 1) for f in (t.second, t.minute, t.hour))
    if value is None or value == 0:
        return bytes(fmt.size)  # nothing recorded
    when = _as_datetime(value)
    if not 2000 <= when.year <= 2099:
        raise ValueError(f"DL/T 645 years are two digits (2000-2099), got {when.year}")
    if fmt.kind == "date":
        weekday = when.isoweekday() % 7  # DL/T 645: 0 = Sunday, 1 = Monday ... 6 = Saturday
        fields: tuple[int, ...] = (weekday, when.day, when.month, when.year % 100)
    elif fmt.size == 5:
        fields = (when.minute, when.hour, when.day, when.month, when.year % 100)
    else:
        fields = (when.second, when.minute, when.hour, when.day, when.month, when.year % 100)
    return b"".join(int_to_bcd(f, 1) for f in fields)


def encode_value(item: DataItem, value: Decimal | str | int | datetime | Sequence[object] | None) -> bytes:
    """The payload for ``value`` (the inverse of :func:`decode_value`, for simulators and writes).

    Numbers are rounded half-up to the format's decimals; ``None`` gives all FF (not
    supported). For a multi-part item pass a tuple, or just the first part (the others
    are then zero: "nothing recorded"). Raises ValueError if the value does not fit.
    """
    if value is None:
        return bytes((NOT_SUPPORTED_BYTE,)) * item.size
    parts = item.parts
    values: Sequence[object] = value if isinstance(value, (tuple, list)) else (value,)
    if len(values) > len(parts):
        raise ValueError(f"{item.name} has {len(parts)} part(s), got {len(values)} values")
    out = b""
    for index, fmt in enumerate(parts):
        out += _encode_part(fmt, values[index] if index < len(values) else None, item.signed)
    return out


def encode_block(item: DataItem, values: Iterable[object]) -> bytes:
    """The payload of a block DI; a None element is sent as FF (not supported)."""
    return b"".join(encode_value(item, v) for v in values)


# --- the 2007 table ----------------------------------------------------------------------

_TARIFF_NAMES = ("total", "tariff 1 (sharp)", "tariff 2 (peak)", "tariff 3 (flat)", "tariff 4 (valley)")

#: DI2 of the energy registers (DI3 = 00): name, unit, signed (combined registers carry a sign).
_ENERGY_KINDS: Mapping[int, tuple[str, str, bool]] = {
    0x00: ("combined active energy", "kWh", True),
    0x01: ("forward active energy", "kWh", False),
    0x02: ("reverse active energy", "kWh", False),
    0x03: ("combined reactive energy 1", "kvarh", True),
    0x04: ("combined reactive energy 2", "kvarh", True),
    0x05: ("quadrant I reactive energy", "kvarh", False),
    0x06: ("quadrant II reactive energy", "kvarh", False),
    0x07: ("quadrant III reactive energy", "kvarh", False),
    0x08: ("quadrant IV reactive energy", "kvarh", False),
    0x09: ("forward apparent energy", "kVAh", False),
    0x0A: ("reverse apparent energy", "kVAh", False),
}
#: OBIS of the totals and tariffs 1-4 of those registers that have one.
_ENERGY_OBIS: Mapping[int, tuple[str | None, ...]] = {
    0x00: ("1-0:15.8.0", None, None, None, None),
    0x01: ("1-0:1.8.0", "1-0:1.8.1", "1-0:1.8.2", "1-0:1.8.3", "1-0:1.8.4"),
    0x02: ("1-0:2.8.0", "1-0:2.8.1", "1-0:2.8.2", "1-0:2.8.3", "1-0:2.8.4"),
}
#: Per-phase registers start at DI2 15h (A), 29h (B), 3Dh (C); same order as DI2 01h..0Ah.
_PHASE_BASE = {"A": 0x15, "B": 0x29, "C": 0x3D}
_PHASE_OBIS = {"A": ("1-0:21.8.0", "1-0:22.8.0"), "B": ("1-0:41.8.0", "1-0:42.8.0"), "C": ("1-0:61.8.0", "1-0:62.8.0")}

_PHASES = ("A", "B", "C")


def _energy_items() -> list[DataItem]:
    items = []
    for kind, (name, unit, signed) in _ENERGY_KINDS.items():
        obis = _ENERGY_OBIS.get(kind, (None,) * 5)
        for tariff, tariff_name in enumerate(_TARIFF_NAMES):
            items.append(DataItem(0x00000000 | kind << 16 | tariff << 8, f"{name}, {tariff_name}", "XXXXXX.XX", unit, signed, obis[tariff]))
        items.append(DataItem(0x0000FF00 | kind << 16, f"{name}, block (total and tariffs)", "XXXXXX.XX", unit, signed, block=True))
    for phase, base in _PHASE_BASE.items():
        for offset, kind in enumerate(range(0x01, 0x0B)):
            name, unit, signed = _ENERGY_KINDS[kind]
            obis = _PHASE_OBIS[phase][offset] if offset < 2 else None
            items.append(DataItem((base + offset) << 16, f"phase {phase} {name}", "XXXXXX.XX", unit, signed, obis))
    return items


def _demand_items() -> list[DataItem]:
    items = []
    for kind, obis in ((0x01, "1-0:1.6.0"), (0x02, None)):
        name = _ENERGY_KINDS[kind][0].replace("energy", "maximum demand")
        for tariff, tariff_name in enumerate(_TARIFF_NAMES):
            items.append(DataItem(0x01000000 | kind << 16 | tariff << 8, f"{name}, {tariff_name}", "XX.XXXX+YYMMDDhhmm", "kW", False, obis if tariff == 0 else None))
    return items


def _phase_items(di2: int, what: str, fmt: str, unit: str, signed: bool, obis: Sequence[str | None], *, total: bool) -> list[DataItem]:
    """Instantaneous values 02 xx 0n 00: n = 0 total (if ``total``), 1..3 phases A..C, FF block."""
    items = []
    if total:
        items.append(DataItem(0x02000000 | di2 << 16, f"total {what}", fmt, unit, signed, obis[0]))
    for n, phase in enumerate(_PHASES, start=1):
        items.append(DataItem(0x02000000 | di2 << 16 | n << 8, f"phase {phase} {what}", fmt, unit, signed, obis[n]))
    items.append(DataItem(0x0200FF00 | di2 << 16, f"{what} block", fmt, unit, signed, block=True))
    return items


def _variable_items() -> list[DataItem]:
    return [
        *_phase_items(0x01, "voltage", "XXX.X", "V", False, (None, "1-0:32.7.0", "1-0:52.7.0", "1-0:72.7.0"), total=False),
        *_phase_items(0x02, "current", "XXX.XXX", "A", True, (None, "1-0:31.7.0", "1-0:51.7.0", "1-0:71.7.0"), total=False),
        *_phase_items(0x03, "active power", "XX.XXXX", "kW", True, ("1-0:1.7.0", "1-0:21.7.0", "1-0:41.7.0", "1-0:61.7.0"), total=True),
        *_phase_items(0x04, "reactive power", "XX.XXXX", "kvar", True, ("1-0:3.7.0", None, None, None), total=True),
        *_phase_items(0x05, "apparent power", "XX.XXXX", "kVA", True, ("1-0:9.7.0", None, None, None), total=True),
        *_phase_items(0x06, "power factor", "X.XXX", "", True, ("1-0:13.7.0", "1-0:33.7.0", "1-0:53.7.0", "1-0:73.7.0"), total=True),
        *_phase_items(0x07, "phase angle", "XXX.X", "°", False, (None, None, None, None), total=False),
        DataItem(0x02800001, "neutral current", "XXX.XXX", "A", True, "1-0:91.7.0"),
        DataItem(0x02800002, "grid frequency", "XX.XX", "Hz", False, "1-0:14.7.0"),
        DataItem(0x02800003, "one-minute average total active power", "XX.XXXX", "kW", True),
        DataItem(0x02800004, "current active demand", "XX.XXXX", "kW", True),
        DataItem(0x02800007, "meter internal temperature", "XXX.X", "°C", True),
    ]


def _parameter_items() -> list[DataItem]:
    return [
        DataItem(0x04000101, "date and weekday", "YYMMDDWW"),
        DataItem(0x04000102, "time", "hhmmss"),
        DataItem(0x04000401, "communication address", "NNNNNNNNNNNN"),
        DataItem(0x04000402, "meter number", "NNNNNNNNNNNN", obis="0-0:96.1.0"),
        DataItem(0x04000409, "active meter constant", "XXXXXX", "imp/kWh"),
        *(DataItem(0x04000500 | n, f"running status word {n}", "bits16", obis=f"0-0:96.5.{n}") for n in range(1, 8)),
    ]


def _other_items() -> list[DataItem]:
    return [
        DataItem(0x00900100, "remaining energy (prepayment)", "XXXXXX.XX", "kWh"),
        DataItem(0x00900200, "remaining amount (prepayment)", "XXXXXX.XX", "yuan"),
        DataItem(0x03110000, "power-down events, total count", "XXXXXX"),
        DataItem(0x03300D00, "meter cover opened, total count", "XXXXXX", obis=COVER_OPEN_OBIS),
        # 恒定磁场干扰: constant magnetic field interference events [U]
        DataItem(0x03350000, "magnetic interference, total count", "XXXXXX", obis=MAGNETIC_OBIS),
        DataItem(0x1D000001, "relay trip events, total count", "XXXXXX"),
        DataItem(0x1E000001, "relay close events, total count", "XXXXXX"),
    ]


# --- freeze records ------------------------------------------------------------------------

#: Freeze kinds (DI2 of 05 KK xx NN): timed, instant and daily freezes.
TIMED_FREEZE, INSTANT_FREEZE, DAILY_FREEZE = 0x00, 0x01, 0x06
#: How many records of each kind a meter keeps (NN = 1 the most recent .. depth) [U for 00, 01].
FREEZE_DEPTH: Mapping[int, int] = {TIMED_FREEZE: 60, INSTANT_FREEZE: 3, DAILY_FREEZE: 62}
#: What a record holds (DI1): its time (YYMMDDhhmm), the forward and the reverse active
#: energy block (total, then tariffs 1..4) as the registers stood at the freeze.
FREEZE_TIME, FREEZE_FORWARD, FREEZE_REVERSE = 0x00, 0x01, 0x02
#: OBIS of the elements of the frozen energy blocks: total, then tariffs 1..4.
FROZEN_BLOCK_OBIS: Mapping[int, tuple[str, ...]] = {
    what: tuple(str(obis) for obis in _ENERGY_OBIS[what]) for what in (FREEZE_FORWARD, FREEZE_REVERSE)
}
_FREEZE_NAMES = {TIMED_FREEZE: "timed", INSTANT_FREEZE: "instant", DAILY_FREEZE: "daily"}


def freeze_di(kind: int, what: int, back: int) -> int:
    """The DI of one part (``what``: FREEZE_TIME/FORWARD/REVERSE) of the freeze record of
    ``kind`` taken ``back`` records ago (05 06 01 05: the daily forward block, 5 days back)."""
    return 0x05000000 | kind << 16 | what << 8 | back


def _freeze_items() -> list[DataItem]:
    # 05 KK 00 NN: when record NN was taken (05 06 00 01 seen in captures); 05 KK 01/02 NN:
    # the frozen forward/reverse active energy blocks, n × XXXXXX.XX [U].
    items = []
    for kind, depth in FREEZE_DEPTH.items():
        name = _FREEZE_NAMES[kind]
        for n in range(1, depth + 1):
            items.append(DataItem(freeze_di(kind, FREEZE_TIME, n), f"{name} freeze time, last {n}", "YYMMDDhhmm"))
            for what, energy in ((FREEZE_FORWARD, "forward"), (FREEZE_REVERSE, "reverse")):
                items.append(DataItem(freeze_di(kind, what, n), f"{name} freeze {energy} active energy block, last {n}",
                                      "XXXXXX.XX", "kWh", block=True))
    return items


def _table(items: Iterable[DataItem]) -> dict[int, DataItem]:
    table: dict[int, DataItem] = {}
    for item in items:
        if item.di in table:
            raise ValueError(f"DI {item.di_hex} defined twice")
        table[item.di] = item
    return table


#: DL/T 645-2007 data identifiers meterhub knows, by DI.
ITEMS: dict[int, DataItem] = _table([*_energy_items(), *_demand_items(), *_variable_items(), *_parameter_items(), *_other_items(),
                                     *_freeze_items()])

#: DL/T 645-1997 data identifiers (2-byte DIs), by DI.
ITEMS_1997: dict[int, DataItem] = _table([
    DataItem(0x9010, "forward active energy, total", "XXXXXX.XX", "kWh", obis="1-0:1.8.0"),
    *(DataItem(0x9010 + n, f"forward active energy, {_TARIFF_NAMES[n]}", "XXXXXX.XX", "kWh", obis=f"1-0:1.8.{n}") for n in range(1, 5)),
    DataItem(0x901F, "forward active energy, block (total and tariffs)", "XXXXXX.XX", "kWh", block=True),
    DataItem(0x9020, "reverse active energy, total", "XXXXXX.XX", "kWh", obis="1-0:2.8.0"),
    *(DataItem(0x9020 + n, f"reverse active energy, {_TARIFF_NAMES[n]}", "XXXXXX.XX", "kWh", obis=f"1-0:2.8.{n}") for n in range(1, 5)),
    DataItem(0x902F, "reverse active energy, block (total and tariffs)", "XXXXXX.XX", "kWh", block=True),
    DataItem(0xB611, "phase A voltage", "XXX", "V", obis="1-0:32.7.0"),
    DataItem(0xB612, "phase B voltage", "XXX", "V", obis="1-0:52.7.0"),
    DataItem(0xB613, "phase C voltage", "XXX", "V", obis="1-0:72.7.0"),
    DataItem(0xB61F, "voltage block", "XXX", "V", block=True),
    DataItem(0xB621, "phase A current", "XX.XX", "A", obis="1-0:31.7.0"),
    DataItem(0xB622, "phase B current", "XX.XX", "A", obis="1-0:51.7.0"),
    DataItem(0xB623, "phase C current", "XX.XX", "A", obis="1-0:71.7.0"),
    DataItem(0xB62F, "current block", "XX.XX", "A", block=True),
    DataItem(0xB630, "total active power", "XX.XXXX", "kW", obis="1-0:1.7.0"),
    DataItem(0xB650, "total power factor", "X.XXX", "", obis="1-0:13.7.0"),
    DataItem(0xC010, "date and weekday", "YYMMDDWW"),
    DataItem(0xC011, "time", "hhmmss"),
    DataItem(0xC032, "meter number", "NNNNNNNNNNNN", obis="0-0:96.1.0"),
    DataItem(0xC033, "user number", "NNNNNNNNNNNN"),
    DataItem(0xC034, "device number", "NNNNNNNNNNNN"),
])

_TABLES: Mapping[int, Mapping[int, DataItem]] = {2007: ITEMS, 1997: ITEMS_1997}


def _tables(version: int) -> Mapping[int, DataItem]:
    try:
        return _TABLES[version]
    except KeyError:
        raise ValueError(f"DL/T 645 edition must be 2007 or 1997, got {version!r}") from None


def obis_index(items: Iterable[DataItem]) -> dict[str, DataItem]:
    """OBIS code -> item for the items that have one (the first item wins)."""
    index: dict[str, DataItem] = {}
    for item in items:
        if item.obis is not None:
            index.setdefault(item.obis, item)
    return index


_OBIS: Mapping[int, Mapping[str, DataItem]] = {v: obis_index(t.values()) for v, t in _TABLES.items()}


def item_for_obis(obis: str, *, version: int = 2007) -> DataItem:
    """The data item read for an OBIS quantity; NotSupported if the edition has none.

    The clock (0-0:1.0.0) is two items (:data:`CLOCK_DIS`), so it is not found here.
    """
    _tables(version)
    try:
        return _OBIS[version][obis]
    except KeyError:
        raise NotSupported(f"DL/T 645-{version} has no data identifier for {obis}") from None


def item_for_di(di: int, *, version: int = 2007) -> DataItem:
    """The data item of a DI; NotSupported if meterhub does not know it."""
    try:
        return _tables(version)[di]
    except KeyError:
        raise NotSupported(f"DL/T 645-{version} data identifier {di:08X} is not in meterhub's table") from None


def clock_iso(date_value: str, time_value: str) -> str:
    """One ISO 8601 local time from the separately read date and time (0-0:1.0.0)."""
    return f"{date_value}T{time_value}"
