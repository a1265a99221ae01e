"""Q/GDW 1376.1-2013 data: the appendix A formats and the data units a concentrator
exchanges with its master station, sans-I/O.

The frame layer (:mod:`meterhub.protocols.gdw1376_1`) keeps a frame's data units as
sent; this module knows how long each (AFN, Fn, direction) item is and what it means.
:data:`LAYOUTS` is that registry: a :class:`Layout` names the item and its codec, an
attrs class with ``encode()``, ``decode(data)`` and ``size(data)`` (the item's length
from its leading bytes: a tariff count M, a meter count n, an event's Le). :func:`units`
splits a frame's payload with it, :func:`items` decodes every (pn, Fn) item, and
:func:`unit` builds a data unit from values.

Formats (gdw1376-details.md §1): BCD little-endian by byte; a sign, where the format
has one, is D7 of the last byte. A field with any nibble above 9 (EEh is "no data", the
parsers also treat FFh so, and captures mix EE with digits inside one field) decodes to
``None``, and so does a time that is no calendar date; ``None`` encodes as all EEh.
Numbers are exact :class:`~decimal.Decimal` values. Bits the standard reserves must be 0:
a value that sets one is a FrameError rather than dropped, so that what decodes encodes
back to the same bytes; vendor text fields (versions, APN) are kept as latin-1 for the
same reason.

Decisions where the sources differ or say nothing (labels as in the details note):

* AFN 0E: the number of records is (Pn - Pm) mod 256, the README's reading [V]. For
  Pm = Pn LM counts one record and YB 256; neither is a range, so it is taken as none.
* ERC records whose ERC is known but whose Le or bytes do not fit its layout (vendor
  extensions: TR's ERC14 with three currents) are kept as :class:`RawEvent`, as are
  unknown ERCs; Le counts the data only (the rgm vector; LM's ``sizeof`` includes ERC and
  Le, which contradicts it).
* ERC14 has Le = 10 (two A.15) [V] or Le = 11 with a leading attribute byte [S]; the Le
  decides.
* A meter that stops answering is ERC31 ("terminal RS-485 meter-reading failure": pn,
  start/end flag, last good read) [V LM + FW]; a failed reading port of the terminal is
  ERC21 with fault code 4 ("485 meter-reading fault") [V LM + YB]. Both are decoded.
* AFN 05 F1: alarm delay in D7-D4, power-limit time in D3-D0 [S, later LM + FW].
* AFN 02 F3 heartbeat: empty or the terminal clock (A.1) [V both]; both are accepted.
* AFN 04/0A F10 rate code 0 is "default" (None); 1-7 are 600 ... 19200 bit/s [V]. The
  AFN 10 F1 control word's code 0 is 300 bit/s by recollection [U].
* AFN 0A requests carry no data except F10 (meter numbers), F38 and F39 (LM); AFN 09
  and 0C requests carry none [V captures].
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any, ClassVar, Protocol

import attrs

from ..errors import FrameError
from .bcd import int_to_bcd
from .gdw1376_1 import (
    A16_FIELDS,
    Afn,
    DataUnit,
    Direction,
    Frame,
    PartialTime,
    bcd_fields,
    fields_to_wire,
    in_range,
    split_units,
    unit_id_from_wire,
    unit_id_to_wire,
)

NO_DATA = 0xEE  #: appendix A: a field of EEh bytes holds no data


def _no_data(size: int) -> bytes:
    return bytes((NO_DATA,)) * size


def _all_digits(data: bytes) -> bool:
    return all(b >> 4 <= 9 and b & 0x0F <= 9 for b in data)


# --- reading a data item ---------------------------------------------------------------


class _Reader:
    """Consumes an item's bytes front to back; FrameError when they run out or remain."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data = bytes(data)
        self.what = what
        self.at = 0

    def take(self, size: int) -> bytes:
        if self.at + size > len(self.data):
            raise FrameError(f"{self.what}: needs {size} byte(s) at offset {self.at}, {len(self.data) - self.at} left")
        self.at += size
        return self.data[self.at - size : self.at]

    def byte(self) -> int:
        return self.take(1)[0]

    def word(self) -> int:
        return int.from_bytes(self.take(2), "little")

    def read(self, fmt: Format) -> Any:
        return fmt.decode(self.take(fmt.size))

    def many(self, fmt: Format, count: int) -> tuple[Any, ...]:
        return tuple(self.read(fmt) for _ in range(count))

    def end(self) -> None:
        if self.at != len(self.data):
            raise FrameError(f"{self.what}: {len(self.data) - self.at} byte(s) left over after {self.at}")


def _check_reserved(value: int, mask: int, what: str) -> None:
    if value & mask:
        raise FrameError(f"{what} {value:02X}h sets reserved bits {value & mask:02X}h")


def _need(data: bytes, size: int, what: str) -> None:
    if len(data) < size:
        raise FrameError(f"{what}: needs at least {size} byte(s) to know its length, got {len(data)}")


# --- appendix A formats --------------------------------------------------------------------


class Format(Protocol):
    """An appendix A format: ``size`` bytes; ``decode`` gives None for "no data"."""

    name: str
    size: int

    def encode(self, value: Any) -> bytes: ...

    def decode(self, data: bytes) -> Any: ...


@attrs.frozen
class Number:
    """A BCD number of ``size`` bytes with ``decimals`` decimal places; ``signed``
    formats keep the sign in D7 of the last byte, leaving 3 bits to the top digit."""

    name: str
    size: int
    decimals: int
    signed: bool = False

    @property
    def limit(self) -> Decimal:
        """The first magnitude that no longer fits."""
        top = 8 if self.signed else 10
        return Decimal(top * 10 ** (2 * self.size - 1)).scaleb(-self.decimals)

    def decode(self, data: bytes) -> Decimal | None:
        raw = bytearray(data)
        negative = self.signed and bool(raw[-1] & 0x80)
        if self.signed:
            raw[-1] &= 0x7F
        if not _all_digits(raw):
            return None
        value = Decimal(int(bytes(reversed(raw)).hex())).scaleb(-self.decimals)
        return value.copy_negate() if negative else value

    def encode(self, value: Decimal | int | None) -> bytes:
        if value is None:
            return _no_data(self.size)
        value = Decimal(value)
        if value.is_signed() and not self.signed:
            raise ValueError(f"{self.name} holds no sign, got {value}")
        magnitude = abs(value)
        if magnitude >= self.limit:
            raise ValueError(f"{self.name} holds magnitudes below {self.limit}, got {value}")
        scaled = magnitude.scaleb(self.decimals)
        if scaled != scaled.to_integral_value():
            raise ValueError(f"{self.name} has {self.decimals} decimal place(s); {value} would need rounding")
        out = bytearray(int_to_bcd(int(scaled), self.size))
        if value.is_signed():
            out[-1] |= 0x80
        return bytes(out)


A5 = Number("A.5", 2, 1, signed=True)  #: ±XXX.X, power factor in %
A7 = Number("A.7", 2, 1)  #: XXX.X V
A9 = Number("A.9", 3, 4, signed=True)  #: ±XX.XXXX kW, kvar, kVA
A11 = Number("A.11", 4, 2)  #: XXXXXX.XX kvarh (kWh in some Fn)
A13 = Number("A.13", 4, 4)  #: XXXX.XXXX
A14 = Number("A.14", 5, 4)  #: XXXXXX.XXXX kWh
A25 = Number("A.25", 3, 3, signed=True)  #: ±XXX.XXX A


@attrs.frozen
class TimeFormat:
    """A time of one BCD byte per field, in wire order; years are sent as YY (2000-2099).
    ``make`` builds the value from the fields (a datetime, date or PartialTime)."""

    name: str
    fields: tuple[str, ...]
    make: Callable[..., Any]

    @property
    def size(self) -> int:
        return len(self.fields)

    def decode(self, data: bytes) -> Any:
        if not _all_digits(data):
            return None
        values = {name: v + (2000 if name == "year" else 0) for name, v in zip(self.fields, bcd_fields(data), strict=True)}
        try:
            return self.make(**values)
        except ValueError:  # no such date (30 February, month 0, ...)
            return None

    def encode(self, value: Any) -> bytes:
        if value is None:
            return _no_data(self.size)
        if isinstance(value, PartialTime):
            return fields_to_wire(value, self.fields)
        _check_carried(value, self)
        return b"".join(int_to_bcd(getattr(value, name) - (2000 if name == "year" else 0), 1) for name in self.fields)


def _check_carried(value: date, fmt: TimeFormat) -> None:
    """A date or datetime fits ``fmt`` only whole: a year it can send, no field it would
    drop (a time of day that is not midnight, a day: give those formats a PartialTime)."""
    if not 2000 <= value.year <= 2099:
        raise ValueError(f"{fmt.name} sends years 2000..2099, got {value.year}")
    finer = ("day", "hour", "minute", "second", "microsecond") if isinstance(value, datetime) else ("day",)
    dropped = [name for name in finer if name not in fmt.fields and getattr(value, name)]
    if dropped or getattr(value, "tzinfo", None) is not None:
        raise ValueError(f"{fmt.name} carries {', '.join(fmt.fields)}; {value} would lose its {', '.join(dropped) or 'zone'}")


def _minute_time(**fields: int) -> datetime:
    return datetime(fields["year"], fields["month"], fields["day"], fields["hour"], fields["minute"])


A15 = TimeFormat("A.15", ("minute", "hour", "day", "month", "year"), _minute_time)  #: mm hh DD MM YY
A16 = TimeFormat("A.16", A16_FIELDS, PartialTime)  #: ss mm hh DD (Tp's send time)
A17 = TimeFormat("A.17", ("minute", "hour", "day", "month"), PartialTime)  #: mm hh DD MM
A18 = TimeFormat("A.18", ("minute", "hour", "day"), PartialTime)  #: mm hh DD
A19 = TimeFormat("A.19", ("minute", "hour"), PartialTime)  #: mm hh
A20 = TimeFormat("A.20", ("day", "month", "year"), date)  #: DD MM YY (Td_d)
A21 = TimeFormat("A.21", ("month", "year"), PartialTime)  #: MM YY (Td_m)


@attrs.frozen
class Address:
    """A.12: a 12-digit address (meters, collectors), printed most significant first.
    Kept as hex text, not checked to be BCD: DL/T 645 wildcards (AA) are addresses too."""

    name: ClassVar[str] = "A.12"
    size: ClassVar[int] = 6

    @staticmethod
    def decode(data: bytes) -> str:
        return bytes(data)[::-1].hex().upper()

    @staticmethod
    def encode(value: str) -> bytes:
        text = str(value).strip()
        if len(text) != 12:
            raise ValueError(f"A.12 address is 12 hex digits, got {value!r}")
        return bytes.fromhex(text)[::-1]


A12 = Address()


def _weekday(value: int) -> int:
    value = int(value)
    if not 0 <= value <= 7:
        raise ValueError(f"week day is 1 (Monday)..7 (Sunday), 0 = not set; got {value}")
    return value


def _whole_seconds(_instance: object, _attribute: object, value: datetime) -> None:
    if not 2000 <= value.year <= 2099 or value.microsecond or value.tzinfo is not None:
        raise ValueError(f"A.1 carries whole seconds of a naive time in 2000..2099, got {value!r}")


@attrs.frozen
class Clock:
    """A.1, a terminal's calendar clock: ss mm hh DD, week day (D7-D5) with month (D4
    tens, D3-D0 units), YY. ``weekday`` is 1 (Monday) .. 7 (Sunday), 0 when not set."""

    time: datetime = attrs.field(validator=[attrs.validators.instance_of(datetime), _whole_seconds])
    weekday: int = attrs.field(default=0, converter=_weekday)

    SIZE: ClassVar[int] = 6

    @classmethod
    def at(cls, time: datetime) -> Clock:
        """The clock reading ``time``, with its week day."""
        return cls(time, time.isoweekday())

    @classmethod
    def size(cls, _data: bytes) -> int:
        return cls.SIZE

    def encode(self) -> bytes:
        t = self.time
        fields = int_to_bcd(t.second, 1) + int_to_bcd(t.minute, 1) + int_to_bcd(t.hour, 1) + int_to_bcd(t.day, 1)
        return fields + bytes((self.weekday << 5 | int_to_bcd(t.month, 1)[0],)) + int_to_bcd(t.year - 2000, 1)

    @classmethod
    def decode(cls, data: bytes) -> Clock | None:
        reader = _Reader(data, "A.1 clock")
        raw = reader.take(cls.SIZE)
        reader.end()
        month_byte = raw[4] & 0x1F
        if not _all_digits(raw[:4] + bytes((month_byte, raw[5]))):
            return None
        second, minute, hour, day, month, year = bcd_fields(raw[:4] + bytes((month_byte, raw[5])))
        try:
            return cls(datetime(2000 + year, month, day, hour, minute, second), raw[4] >> 5)
        except ValueError:
            return None


def encode_clock(clock: Clock | None) -> bytes:
    """A.1 bytes of ``clock``; None (no valid clock) is EEh × 6."""
    return _no_data(Clock.SIZE) if clock is None else clock.encode()


# --- the codec shape ------------------------------------------------------------------------


class _Fixed:
    """Codecs whose data has one length, SIZE."""

    __slots__ = ()
    SIZE: ClassVar[int]

    @classmethod
    def size(cls, _data: bytes) -> int:
        return cls.SIZE


def _tuple_of(count: int | None = None) -> Callable[[Iterable[Any]], tuple[Any, ...]]:
    def convert(values: Iterable[Any]) -> tuple[Any, ...]:
        values = tuple(values)
        if count is not None and len(values) != count:
            raise ValueError(f"expected {count} values, got {len(values)}")
        return values

    return convert


_byte = in_range(0, 0xFF)


def _text(size: int) -> Callable[[object, attrs.Attribute, str], None]:
    def check(_instance: object, attribute: attrs.Attribute, value: str) -> None:
        if len(value.encode("latin-1")) != size:
            raise ValueError(f"{attribute.name} is {size} characters, got {value!r}")

    return check


# --- AFN 00: confirm / deny ----------------------------------------------------------------


@attrs.frozen
class UnitResult:
    """One data unit's answer in AFN 00 F3: 0 confirmed, 1 denied (other codes kept)."""

    points: tuple[int, ...] | None
    functions: tuple[int, ...]
    error: int = attrs.field(default=0, validator=_byte)

    @property
    def confirmed(self) -> bool:
        return self.error == 0


@attrs.frozen
class UnitResults:
    """AFN 00 F3: confirm or deny each data unit of a frame of ``afn`` (AFN, then
    DA DT ERR per unit). It fills the rest of the frame's data units."""

    afn: int = attrs.field(validator=_byte)
    results: tuple[UnitResult, ...] = attrs.field(converter=tuple)

    @classmethod
    def size(cls, data: bytes) -> int:
        return len(data)

    def encode(self) -> bytes:
        body = b"".join(unit_id_to_wire(r.points, r.functions) + bytes((r.error,)) for r in self.results)
        return bytes((self.afn,)) + body

    @classmethod
    def decode(cls, data: bytes) -> UnitResults:
        reader = _Reader(data, "AFN 00 F3")
        afn = reader.byte()
        if (len(data) - 1) % 5:
            raise FrameError(f"AFN 00 F3 holds AFN + 5 bytes per unit, got {len(data)} bytes")
        results = []
        while reader.at < len(data):
            points, functions = unit_id_from_wire(reader.take(4))
            results.append(UnitResult(points, functions, reader.byte()))
        return cls(afn, results)


# --- AFN 02: link check --------------------------------------------------------------------


@attrs.frozen
class Heartbeat:
    """AFN 02 F3: empty, or the terminal's clock (A.1) on some 2013 firmwares [V both]."""

    clock: Clock | None = None

    @classmethod
    def size(cls, data: bytes) -> int:
        if len(data) not in (0, Clock.SIZE):
            raise FrameError(f"AFN 02 F3 heartbeat is empty or a 6-byte clock, {len(data)} byte(s) follow it")
        return len(data)

    def encode(self) -> bytes:
        return b"" if self.clock is None else self.clock.encode()

    @classmethod
    def decode(cls, data: bytes) -> Heartbeat:
        if not data:
            return cls()
        clock = Clock.decode(data)
        if clock is None:
            raise FrameError(f"AFN 02 F3 heartbeat clock is not a time: {bytes(data).hex(' ').upper()}")
        return cls(clock)


# --- AFN 04 / 0A: parameters -------------------------------------------------------------


@attrs.frozen
class UplinkParams(_Fixed):
    """F1, the terminal's uplink communication parameters (6 bytes) [V LM + GW].

    ``rts_delay`` is sent as is (its unit is believed to be 20 ms [U]); ``report_delay``
    is the allowed transmission delay of frames the terminal starts, in minutes;
    ``timeout`` (s, 0..4095) and ``resends`` (0..3) are how long it waits for the master
    and how often it repeats; ``confirm`` says which active reports (classes 1, 2, 3)
    need the master's confirmation; ``heartbeat`` is the period in minutes.
    """

    rts_delay: int = attrs.field(validator=_byte)
    report_delay: int = attrs.field(validator=_byte)
    timeout: int = attrs.field(validator=in_range(0, 0x0FFF))
    resends: int = attrs.field(validator=in_range(0, 3))
    confirm: tuple[bool, bool, bool] = attrs.field(converter=lambda v: tuple(bool(x) for x in _tuple_of(3)(v)))
    heartbeat: int = attrs.field(validator=_byte)

    SIZE: ClassVar[int] = 6

    def encode(self) -> bytes:
        word = self.resends << 12 | self.timeout
        flags = sum(bit << i for i, bit in enumerate(self.confirm))
        return bytes((self.rts_delay, self.report_delay)) + word.to_bytes(2, "little") + bytes((flags, self.heartbeat))

    @classmethod
    def decode(cls, data: bytes) -> UplinkParams:
        reader = _Reader(data, "F1 uplink parameters")
        rts, delay, word, flags, heartbeat = reader.byte(), reader.byte(), reader.word(), reader.byte(), reader.byte()
        reader.end()
        _check_reserved(word >> 8, 0xC0, "F1 wait/resend word, high byte")
        _check_reserved(flags, 0xF8, "F1 confirmation flags")
        return cls(rts, delay, word & 0x0FFF, word >> 12, [bool(flags >> i & 1) for i in range(3)], heartbeat)


def _ipv4(value: object) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(value)  # type: ignore[arg-type]


def _apn(_instance: object, _attribute: object, value: str) -> None:
    raw = value.encode("latin-1")
    if len(raw) > 16 or raw.endswith(b"\x00"):
        raise ValueError(f"APN is at most 16 characters without trailing NULs, got {value!r}")


@attrs.frozen
class MasterStation(_Fixed):
    """F3, the master station's addresses: main and backup IPv4 address and port, and
    the APN (16 bytes, zero-padded) [V LM + TR]."""

    main: ipaddress.IPv4Address = attrs.field(converter=_ipv4)
    main_port: int = attrs.field(validator=in_range(0, 0xFFFF))
    backup: ipaddress.IPv4Address = attrs.field(converter=_ipv4)
    backup_port: int = attrs.field(validator=in_range(0, 0xFFFF))
    apn: str = attrs.field(default="", validator=_apn)

    SIZE: ClassVar[int] = 28

    def encode(self) -> bytes:
        return (
            self.main.packed  # dotted order: 192.168.1.2 is sent C0 A8 01 02
            + self.main_port.to_bytes(2, "little")
            + self.backup.packed
            + self.backup_port.to_bytes(2, "little")
            + self.apn.encode("latin-1").ljust(16, b"\x00")
        )

    @classmethod
    def decode(cls, data: bytes) -> MasterStation:
        reader = _Reader(data, "F3 master station")
        main, main_port = reader.take(4), reader.word()
        backup, backup_port = reader.take(4), reader.word()
        apn = reader.take(16).rstrip(b"\x00").decode("latin-1")
        reader.end()
        return cls(ipaddress.IPv4Address(main), main_port, ipaddress.IPv4Address(backup), backup_port, apn)


class MeterProtocol(enum.IntEnum):
    """F10's protocol byte (details §2.4)."""

    NONE = 0  #: do not read this meter
    DLT645_1997 = 1
    AC_SAMPLING = 2  #: the terminal's own AC sampling device
    DLT645_2007 = 30
    PLC_MODULE = 31  #: a serial-interface narrowband PLC module


#: F10 rate code (D7-D5) -> bit/s; code 0 is "no setting, use the default" [V].
ARCHIVE_BAUD = {1: 600, 2: 1200, 3: 2400, 4: 4800, 5: 7200, 6: 9600, 7: 19200}


def _archive_baud(_instance: object, _attribute: object, value: int | None) -> None:
    if value is not None and value not in ARCHIVE_BAUD.values():
        raise ValueError(f"F10 baud is None (default) or one of {sorted(ARCHIVE_BAUD.values())}, got {value!r}")


@attrs.frozen
class MeterRecord(_Fixed):
    """One meter of the F10 archive (27 bytes) [V LM + WS + JS + 2 vectors].

    ``serial`` 1..2040 numbers the record, ``point`` is its measuring point (0: none);
    ``baud`` None means the terminal's default; ``digits`` and ``decimals`` are the
    meter's integer (4..7) and decimal (1..4) digits of active energy; ``collector`` is
    000000000000 for a meter wired directly; ``user_class`` is (big, small) 0..15 each.
    """

    serial: int = attrs.field(validator=in_range(0, 0xFFFF))
    point: int = attrs.field(validator=in_range(0, 0xFFFF))
    port: int = attrs.field(validator=in_range(0, 31))
    baud: int | None = attrs.field(validator=_archive_baud)
    protocol: int = attrs.field(validator=_byte)
    address: str = attrs.field(converter=lambda v: str(v).strip().upper())
    password: bytes = attrs.field(default=bytes(6), converter=bytes)
    tariffs: int = attrs.field(default=4, validator=in_range(0, 63))
    digits: int = attrs.field(default=6, validator=in_range(4, 7))
    decimals: int = attrs.field(default=2, validator=in_range(1, 4))
    collector: str = attrs.field(default="000000000000", converter=lambda v: str(v).strip().upper())
    user_class: tuple[int, int] = attrs.field(default=(0, 0), converter=_tuple_of(2))

    SIZE: ClassVar[int] = 27

    def __attrs_post_init__(self) -> None:
        A12.encode(self.address)
        A12.encode(self.collector)
        if len(self.password) != 6:
            raise ValueError(f"F10 password is 6 bytes, got {len(self.password)}")
        if not all(0 <= c <= 15 for c in self.user_class):
            raise ValueError(f"user class is (big, small), 0..15 each, got {self.user_class}")

    def encode(self) -> bytes:
        code = 0 if self.baud is None else {v: k for k, v in ARCHIVE_BAUD.items()}[self.baud]
        return (
            self.serial.to_bytes(2, "little")
            + self.point.to_bytes(2, "little")
            + bytes((code << 5 | self.port, self.protocol))
            + A12.encode(self.address)
            + self.password
            + bytes((self.tariffs, (self.digits - 4) << 2 | (self.decimals - 1)))
            + A12.encode(self.collector)
            + bytes((self.user_class[0] << 4 | self.user_class[1],))
        )

    @classmethod
    def decode(cls, data: bytes) -> MeterRecord:
        reader = _Reader(data, "F10 meter record")
        serial, point, rate, protocol = reader.word(), reader.word(), reader.byte(), reader.byte()
        address, password = reader.read(A12), reader.take(6)
        tariffs, digits = reader.byte(), reader.byte()
        collector, user_class = reader.read(A12), reader.byte()
        reader.end()
        _check_reserved(tariffs, 0xC0, "F10 tariff count")
        _check_reserved(digits, 0xF0, "F10 digits")
        return cls(
            serial,
            point,
            port=rate & 0x1F,
            baud=ARCHIVE_BAUD.get(rate >> 5),
            protocol=protocol,
            address=address,
            password=password,
            tariffs=tariffs,
            digits=(digits >> 2 & 3) + 4,
            decimals=(digits & 3) + 1,
            collector=collector,
            user_class=(user_class >> 4, user_class & 0x0F),
        )


@attrs.frozen
class MeterArchive:
    """F10 (AFN 04 set, AFN 0A answer): a count n (2 bytes) and n meter records."""

    records: tuple[MeterRecord, ...] = attrs.field(converter=tuple)

    @classmethod
    def size(cls, data: bytes) -> int:
        _need(data, 2, "F10 meter archive")
        return 2 + MeterRecord.SIZE * int.from_bytes(data[:2], "little")

    def encode(self) -> bytes:
        return len(self.records).to_bytes(2, "little") + b"".join(r.encode() for r in self.records)

    @classmethod
    def decode(cls, data: bytes) -> MeterArchive:
        reader = _Reader(data, "F10 meter archive")
        records = [MeterRecord.decode(reader.take(MeterRecord.SIZE)) for _ in range(reader.word())]
        reader.end()
        return cls(records)


@attrs.frozen
class ArchiveQuery:
    """AFN 0A F10 request: which records (by serial) to send back; a count n and n serials (2 bytes each) [S LM]."""

    serials: tuple[int, ...] = attrs.field(converter=tuple)

    def __attrs_post_init__(self) -> None:
        if not all(0 <= s <= 0xFFFF for s in self.serials):
            raise ValueError(f"F10 serials are 2 bytes, got {self.serials}")

    @classmethod
    def size(cls, data: bytes) -> int:
        _need(data, 2, "AFN 0A F10 query")
        return 2 + 2 * int.from_bytes(data[:2], "little")

    def encode(self) -> bytes:
        return b"".join(n.to_bytes(2, "little") for n in (len(self.serials), *self.serials))

    @classmethod
    def decode(cls, data: bytes) -> ArchiveQuery:
        reader = _Reader(data, "AFN 0A F10 query")
        serials = [reader.word() for _ in range(reader.word())]
        reader.end()
        return cls(serials)


# --- AFN 05: control -----------------------------------------------------------------------


@attrs.frozen
class RemoteTrip(_Fixed):
    """AFN 05 F1 (pn = control round): 1 byte, alarm delay in minutes (D7-D4, 0: trip at
    once) and power-limit time in half hours (D3-D0, 0: until released) [S nibble order]."""

    alarm_delay: int = attrs.field(default=0, validator=in_range(0, 15))
    limit_time: int = attrs.field(default=0, validator=in_range(0, 15))

    SIZE: ClassVar[int] = 1

    def encode(self) -> bytes:
        return bytes((self.alarm_delay << 4 | self.limit_time,))

    @classmethod
    def decode(cls, data: bytes) -> RemoteTrip:
        reader = _Reader(data, "AFN 05 F1 remote trip")
        value = reader.byte()
        reader.end()
        return cls(value >> 4, value & 0x0F)


@attrs.frozen
class KeepPower(_Fixed):
    """AFN 05 F25 power-keep on: the duration in half hours (0: until released) [V]."""

    duration: int = attrs.field(default=0, validator=_byte)

    SIZE: ClassVar[int] = 1

    def encode(self) -> bytes:
        return bytes((self.duration,))

    @classmethod
    def decode(cls, data: bytes) -> KeepPower:
        reader = _Reader(data, "AFN 05 F25 keep power")
        value = reader.byte()
        reader.end()
        return cls(value)


@attrs.frozen
class ClockSet(_Fixed):
    """AFN 05 F31 clock synchronisation: the time to set, A.1 [V LM + TR + WS]."""

    clock: Clock

    SIZE: ClassVar[int] = Clock.SIZE

    def encode(self) -> bytes:
        return self.clock.encode()

    @classmethod
    def decode(cls, data: bytes) -> ClockSet:
        clock = Clock.decode(data)
        if clock is None:
            raise FrameError(f"AFN 05 F31 clock is not a time: {bytes(data).hex(' ').upper()}")
        return cls(clock)


# --- AFN 09: terminal configuration ------------------------------------------------------------


@attrs.frozen
class VersionInfo(_Fixed):
    """AFN 09 F1, the terminal's version information (41 bytes) [V LM + WS + J9]; text
    fields are sent as ASCII, padded by the terminal as it likes."""

    vendor: str = attrs.field(validator=_text(4))
    device: str = attrs.field(validator=_text(8))
    software_version: str = attrs.field(validator=_text(4))
    software_date: date | None
    capacity: str = attrs.field(validator=_text(11))  #: 容量信息码
    protocol_version: str = attrs.field(validator=_text(4))
    hardware_version: str = attrs.field(validator=_text(4))
    hardware_date: date | None

    SIZE: ClassVar[int] = 41

    def encode(self) -> bytes:
        return b"".join(
            (
                self.vendor.encode("latin-1"),
                self.device.encode("latin-1"),
                self.software_version.encode("latin-1"),
                A20.encode(self.software_date),
                self.capacity.encode("latin-1"),
                self.protocol_version.encode("latin-1"),
                self.hardware_version.encode("latin-1"),
                A20.encode(self.hardware_date),
            )
        )

    @classmethod
    def decode(cls, data: bytes) -> VersionInfo:
        reader = _Reader(data, "AFN 09 F1 version")

        def text(size: int) -> str:
            return reader.take(size).decode("latin-1")

        info = cls(text(4), text(8), text(4), reader.read(A20), text(11), text(4), text(4), reader.read(A20))
        reader.end()
        return info


# --- AFN 0C / 0D: class-1 and class-2 data -----------------------------------------------------


def _tariff_count(data: bytes, at: int, what: str) -> int:
    """M, the tariff count at offset ``at``: each block holds the total and M tariffs."""
    _need(data, at + 1, what)
    return data[at]


def _same_length(blocks: Sequence[tuple[Any, ...]], what: str) -> None:
    if not 1 <= len(blocks[0]) <= 256 or any(len(b) != len(blocks[0]) for b in blocks):
        raise ValueError(f"{what}: every block holds the total and the same M tariffs (M 0..255), got {[len(b) for b in blocks]}")


@attrs.frozen
class Instantaneous(_Fixed):
    """AFN 0C F25, current powers, power factors, voltages and currents (67 bytes) [V
    KS + YB + capture]. Tuples are (total, A, B, C) except ``voltage`` (A, B, C) and
    ``current`` (A, B, C, zero sequence); None where the meter gave no value."""

    read_time: datetime | None
    active: tuple[Decimal | None, ...] = attrs.field(converter=_tuple_of(4))  #: A.9 kW
    reactive: tuple[Decimal | None, ...] = attrs.field(converter=_tuple_of(4))  #: A.9 kvar
    power_factor: tuple[Decimal | None, ...] = attrs.field(converter=_tuple_of(4))  #: A.5 %
    voltage: tuple[Decimal | None, ...] = attrs.field(converter=_tuple_of(3))  #: A.7 V
    current: tuple[Decimal | None, ...] = attrs.field(converter=_tuple_of(4))  #: A.25 A
    apparent: tuple[Decimal | None, ...] = attrs.field(converter=_tuple_of(4))  #: A.9 kVA

    SIZE: ClassVar[int] = 67
    _LAYOUT: ClassVar[tuple[tuple[str, Number, int], ...]] = (
        ("active", A9, 4),
        ("reactive", A9, 4),
        ("power_factor", A5, 4),
        ("voltage", A7, 3),
        ("current", A25, 4),
        ("apparent", A9, 4),
    )

    def encode(self) -> bytes:
        out = A15.encode(self.read_time)
        for name, fmt, _count in self._LAYOUT:
            out += b"".join(fmt.encode(v) for v in getattr(self, name))
        return out

    @classmethod
    def decode(cls, data: bytes) -> Instantaneous:
        reader = _Reader(data, "AFN 0C F25")
        read_time = reader.read(A15)
        blocks = [reader.many(fmt, count) for _name, fmt, count in cls._LAYOUT]
        reader.end()
        return cls(read_time, *blocks)


@attrs.frozen
class TariffEnergy:
    """Total and per-tariff energy indications (A.14 kWh) read at ``read_time``: AFN 0C
    F129 forward / F131 reverse active [V KS + LM + capture]. ``values`` is (total,
    tariff 1, ..., tariff M); M is taken from the frame, never from configuration."""

    read_time: datetime | None
    values: tuple[Decimal | None, ...] = attrs.field(converter=tuple)

    def __attrs_post_init__(self) -> None:
        _same_length([self.values], "tariff energy")

    @classmethod
    def size(cls, data: bytes) -> int:
        return A15.size + 1 + A14.size * (_tariff_count(data, A15.size, "tariff energy") + 1)

    def encode(self) -> bytes:
        return A15.encode(self.read_time) + bytes((len(self.values) - 1,)) + b"".join(A14.encode(v) for v in self.values)

    @classmethod
    def decode(cls, data: bytes) -> TariffEnergy:
        reader = _Reader(data, "tariff energy")
        read_time = reader.read(A15)
        values = reader.many(A14, reader.byte() + 1)
        reader.end()
        return cls(read_time, values)


@attrs.frozen
class ForwardIndications:
    """AFN 0C F33 (and the block of 0D F1/F17): forward active (A.14 kWh), forward
    reactive = combined reactive 1 (A.11 kvarh), Q1 and Q4 reactive (A.11), each
    (total, tariff 1..M) [V KS + YB + capture]."""

    read_time: datetime | None
    active: tuple[Decimal | None, ...] = attrs.field(converter=tuple)
    reactive: tuple[Decimal | None, ...] = attrs.field(converter=tuple)
    q1: tuple[Decimal | None, ...] = attrs.field(converter=tuple)
    q4: tuple[Decimal | None, ...] = attrs.field(converter=tuple)

    def __attrs_post_init__(self) -> None:
        _same_length([self.active, self.reactive, self.q1, self.q4], "forward indications")

    @classmethod
    def size(cls, data: bytes) -> int:
        blocks = _tariff_count(data, A15.size, "forward indications") + 1
        return A15.size + 1 + (A14.size + 3 * A11.size) * blocks

    def encode(self) -> bytes:
        out = A15.encode(self.read_time) + bytes((len(self.active) - 1,))
        out += b"".join(A14.encode(v) for v in self.active)
        for block in (self.reactive, self.q1, self.q4):
            out += b"".join(A11.encode(v) for v in block)
        return out

    @classmethod
    def decode(cls, data: bytes) -> ForwardIndications:
        reader = _Reader(data, "forward indications")
        read_time = reader.read(A15)
        count = reader.byte() + 1
        active = reader.many(A14, count)
        reactive, q1, q4 = (reader.many(A11, count) for _ in range(3))
        reader.end()
        return cls(read_time, active, reactive, q1, q4)


@attrs.frozen
class DayTag(_Fixed):
    """Td_d (A.20): the day an AFN 0D daily item asks for; it follows each DA DT of the
    request and starts the answer's item [V captures]."""

    day: date | None

    SIZE: ClassVar[int] = A20.size

    def encode(self) -> bytes:
        return A20.encode(self.day)

    @classmethod
    def decode(cls, data: bytes) -> DayTag:
        reader = _Reader(data, "Td_d")
        tag = cls(reader.read(A20))
        reader.end()
        return tag


@attrs.frozen
class MonthTag(_Fixed):
    """Td_m (A.21): the month (a PartialTime of year and month) an AFN 0D monthly item asks for."""

    month: PartialTime | None

    SIZE: ClassVar[int] = A21.size

    def encode(self) -> bytes:
        return A21.encode(self.month)

    @classmethod
    def decode(cls, data: bytes) -> MonthTag:
        reader = _Reader(data, "Td_m")
        tag = cls(reader.read(A21))
        reader.end()
        return tag


class _Frozen:
    """A 0D answer: the request's time tag (its first field), then a class-1 shaped
    reading (its second)."""

    __slots__ = ()
    TAG: ClassVar[type[DayTag | MonthTag]]
    READING: ClassVar[type[TariffEnergy | ForwardIndications]]

    @classmethod
    def size(cls, data: bytes) -> int:
        return cls.TAG.SIZE + cls.READING.size(data[cls.TAG.SIZE :])

    def encode(self) -> bytes:
        tag, reading = attrs.astuple(self, recurse=False)
        return self.TAG(tag).encode() + reading.encode()

    @classmethod
    def decode(cls, data: bytes) -> Any:
        _need(data, cls.TAG.SIZE, "frozen data")
        (tag,) = attrs.astuple(cls.TAG.decode(data[: cls.TAG.SIZE]), recurse=False)  # the day or the month
        return cls(tag, cls.READING.decode(data[cls.TAG.SIZE :]))  # type: ignore[call-arg]


@attrs.frozen
class DailyEnergy(_Frozen):
    """AFN 0D F161 (forward) / F163 (reverse) daily-frozen active energy: Td_d + A.15 +
    M + (M+1) × A.14 [V YB + LM]."""

    day: date | None
    reading: TariffEnergy

    TAG = DayTag
    READING = TariffEnergy


@attrs.frozen
class MonthlyEnergy(_Frozen):
    """AFN 0D F177 (forward) / F179 (reverse) monthly-frozen active energy: Td_m + A.15 +
    M + (M+1) × A.14 [V YB + LM]."""

    month: PartialTime | None
    reading: TariffEnergy

    TAG = MonthTag
    READING = TariffEnergy


@attrs.frozen
class DailyIndications(_Frozen):
    """AFN 0D F1: Td_d + the 0C F33 block, frozen at the end of the day [V KS captures]."""

    day: date | None
    reading: ForwardIndications

    TAG = DayTag
    READING = ForwardIndications


@attrs.frozen
class MonthlyIndications(_Frozen):
    """AFN 0D F17: Td_m + the 0C F33 block, frozen at the end of the month [V KS captures]."""

    month: PartialTime | None
    reading: ForwardIndications

    TAG = MonthTag
    READING = ForwardIndications


# --- AFN 0E: events ----------------------------------------------------------------------------


@attrs.frozen
class EventRequest(_Fixed):
    """AFN 0E F1 (important) / F2 (normal) request: the records from pointer ``start``
    (Pm) up to, not including, ``end`` (Pn), 0..255 around a ring [V LM + YB]."""

    start: int = attrs.field(validator=_byte)
    end: int = attrs.field(validator=_byte)

    SIZE: ClassVar[int] = 2

    def encode(self) -> bytes:
        return bytes((self.start, self.end))

    @classmethod
    def decode(cls, data: bytes) -> EventRequest:
        reader = _Reader(data, "AFN 0E request")
        request = cls(reader.byte(), reader.byte())
        reader.end()
        return request


@attrs.frozen
class PointFlag:
    """The "pn + flag" word of metering events: D11-D0 the measuring point, D15 1 when
    the event starts, 0 when it ends; D14-D12 are reserved."""

    point: int = attrs.field(validator=in_range(0, 0x0FFF))
    started: bool = True

    def encode(self) -> bytes:
        return (self.started << 15 | self.point).to_bytes(2, "little")

    @classmethod
    def decode(cls, data: bytes) -> PointFlag:
        word = int.from_bytes(data, "little")
        _check_reserved(word >> 8, 0x70, "pn/flag word, high byte")
        return cls(word & 0x0FFF, bool(word >> 15))


@attrs.frozen
class InitEvent:
    """ERC1, data initialisation or software version change (Le = 14) [V LM + YB]."""

    time: datetime | None
    initialised: bool
    version_changed: bool
    old_version: str = attrs.field(validator=_text(4))
    new_version: str = attrs.field(validator=_text(4))

    ERC: ClassVar[int] = 1

    def encode(self) -> bytes:
        flags = self.initialised | self.version_changed << 1
        return A15.encode(self.time) + bytes((flags,)) + (self.old_version + self.new_version).encode("latin-1")

    @classmethod
    def decode(cls, data: bytes) -> InitEvent:
        reader = _Reader(data, "ERC1")
        time, flags = reader.read(A15), reader.byte()
        old, new = reader.take(4).decode("latin-1"), reader.take(4).decode("latin-1")
        reader.end()
        _check_reserved(flags, 0xFC, "ERC1 flags")
        return cls(time, bool(flags & 1), bool(flags & 2), old, new)


@attrs.frozen
class ParameterChange:
    """ERC3, parameters changed (Le = 6 + 4n): when, by which master station (MSA), and
    the data units (points, functions) that were set [V LM + YB + TR]."""

    time: datetime | None
    master: int = attrs.field(validator=_byte)
    units: tuple[tuple[tuple[int, ...] | None, tuple[int, ...]], ...] = attrs.field(converter=tuple)

    ERC: ClassVar[int] = 3

    def encode(self) -> bytes:
        return A15.encode(self.time) + bytes((self.master,)) + b"".join(unit_id_to_wire(p, f) for p, f in self.units)

    @classmethod
    def decode(cls, data: bytes) -> ParameterChange:
        reader = _Reader(data, "ERC3")
        time, master = reader.read(A15), reader.byte()
        if (len(data) - reader.at) % 4:
            raise FrameError(f"ERC3 holds 4 bytes per data unit after its time and MSA, got {len(data) - reader.at}")
        units = []
        while reader.at < len(data):
            units.append(unit_id_from_wire(reader.take(4)))
        return cls(time, master, units)


@attrs.frozen
class PowerEvent:
    """ERC14, terminal power off and on: outage and restore times (Le = 10) [V LM + YB];
    Le = 11 adds a leading attribute byte (D0 event normal, D1 event valid) [S GW, FW
    "NewERC14"], kept in ``attributes`` (None for the Le = 10 form)."""

    off: datetime | None
    on: datetime | None
    attributes: int | None = None

    ERC: ClassVar[int] = 14

    def __attrs_post_init__(self) -> None:
        if self.attributes is not None and not 0 <= self.attributes <= 0xFF:
            raise ValueError(f"ERC14 attributes fit in one byte, got {self.attributes}")

    def encode(self) -> bytes:
        head = b"" if self.attributes is None else bytes((self.attributes,))
        return head + A15.encode(self.off) + A15.encode(self.on)

    @classmethod
    def decode(cls, data: bytes) -> PowerEvent:
        if len(data) not in (10, 11):
            raise FrameError(f"ERC14 has Le 10 or 11, got {len(data)}")
        reader = _Reader(data, "ERC14")
        attributes = reader.byte() if len(data) == 11 else None
        off, on = reader.read(A15), reader.read(A15)
        return cls(off, on, attributes)


class TerminalFaultCode(enum.IntEnum):
    """ERC21's fault code [V LM + YB]."""

    MEMORY = 1  #: main board memory
    CLOCK = 2
    BOARD_COMMUNICATION = 3  #: main board communication
    METER_READING_PORT = 4  #: the RS-485 meter-reading port
    DISPLAY = 5
    CARRIER = 6  #: power-line carrier channel


@attrs.frozen
class TerminalFault:
    """ERC21, terminal fault (Le = 6): when, and a :class:`TerminalFaultCode` (other
    codes are kept as sent)."""

    time: datetime | None
    code: int = attrs.field(validator=_byte)

    ERC: ClassVar[int] = 21

    def encode(self) -> bytes:
        return A15.encode(self.time) + bytes((self.code,))

    @classmethod
    def decode(cls, data: bytes) -> TerminalFault:
        reader = _Reader(data, "ERC21")
        fault = cls(reader.read(A15), reader.byte())
        reader.end()
        return fault


@attrs.frozen
class ReadFailure:
    """ERC31, the terminal could not read a meter over RS-485 (Le = 21): when, the
    measuring point (with start/end), and the last good read with its forward active
    (A.14) and reactive (A.11) totals [V LM + FW]."""

    time: datetime | None
    point: PointFlag
    last_read: datetime | None
    active: Decimal | None
    reactive: Decimal | None

    ERC: ClassVar[int] = 31

    def encode(self) -> bytes:
        return A15.encode(self.time) + self.point.encode() + A15.encode(self.last_read) + A14.encode(self.active) + A11.encode(self.reactive)

    @classmethod
    def decode(cls, data: bytes) -> ReadFailure:
        reader = _Reader(data, "ERC31")
        event = cls(reader.read(A15), PointFlag.decode(reader.take(2)), reader.read(A15), reader.read(A14), reader.read(A11))
        reader.end()
        return event


@attrs.frozen
class RawEvent:
    """An event record kept as sent: an ERC without a layout here, or one whose bytes do
    not fit its layout (vendor extensions)."""

    erc: int = attrs.field(validator=_byte)
    data: bytes = attrs.field(converter=bytes)

    def encode(self) -> bytes:
        return self.data


Event = InitEvent | ParameterChange | PowerEvent | TerminalFault | ReadFailure | RawEvent

#: ERC -> its record class.
EVENTS: Mapping[int, Any] = {cls.ERC: cls for cls in (InitEvent, ParameterChange, PowerEvent, TerminalFault, ReadFailure)}


def event_to_wire(event: Event) -> bytes:
    """ERC Le data of one record."""
    data = event.encode()
    if len(data) > 0xFF:
        raise ValueError(f"an event record holds at most 255 bytes, got {len(data)}")
    return bytes((event.erc if isinstance(event, RawEvent) else event.ERC, len(data))) + data


def event_from_wire(erc: int, data: bytes) -> Event:
    """The record of ``erc`` with ``data``; a RawEvent when there is no layout or it does not fit."""
    codec = EVENTS.get(erc)
    if codec is not None:
        try:
            return codec.decode(data)
        except FrameError:
            pass  # kept whole as a RawEvent: the record is the terminal's, not a framing fault
    return RawEvent(erc, data)


def _record_count(start: int, end: int) -> int:
    return (end - start) % 256


@attrs.frozen
class EventReply:
    """AFN 0E F1/F2 answer (and active report): the terminal's event counters EC1 EC2,
    the pointers Pm and Pn, and the (Pn - Pm) mod 256 records between them."""

    important: int = attrs.field(validator=_byte)
    normal: int = attrs.field(validator=_byte)
    start: int = attrs.field(validator=_byte)
    end: int = attrs.field(validator=_byte)
    records: tuple[Event, ...] = attrs.field(converter=tuple)

    def __attrs_post_init__(self) -> None:
        if len(self.records) != _record_count(self.start, self.end):
            raise ValueError(f"Pm {self.start} and Pn {self.end} span {_record_count(self.start, self.end)} records, got {len(self.records)}")

    @classmethod
    def size(cls, data: bytes) -> int:
        _need(data, 4, "AFN 0E answer")
        at = 4
        for _ in range(_record_count(data[2], data[3])):
            _need(data, at + 2, "AFN 0E event record")
            at += 2 + data[at + 1]
        return at

    def encode(self) -> bytes:
        return bytes((self.important, self.normal, self.start, self.end)) + b"".join(event_to_wire(e) for e in self.records)

    @classmethod
    def decode(cls, data: bytes) -> EventReply:
        reader = _Reader(data, "AFN 0E answer")
        important, normal, start, end = (reader.byte() for _ in range(4))
        records = []
        for _ in range(_record_count(start, end)):
            erc, length = reader.byte(), reader.byte()
            records.append(event_from_wire(erc, reader.take(length)))
        reader.end()
        return cls(important, normal, start, end, records)


# --- AFN 10: transparent forwarding ------------------------------------------------------------


#: AFN 10 F1 control word rate code (D7-D5) -> bit/s; 1-7 as F10's, 0 = 300 [U].
FORWARD_BAUD = {0: 300, **ARCHIVE_BAUD}
PARITIES = ("N", "E", "O")


@attrs.frozen
class SerialSettings:
    """The AFN 10 F1 control word: rate (D7-D5), stop bits (D4: 0 one, 1 two), parity
    (D3 enable, D2 1 odd / 0 even), data bits (D1-D0: 5..8). DL/T 645 meters take
    2400 8E1, control word 6Bh [V 5 senders]."""

    baud: int = attrs.field(default=2400)
    parity: str = attrs.field(default="E")
    data_bits: int = attrs.field(default=8, validator=in_range(5, 8))
    stop_bits: int = attrs.field(default=1, validator=in_range(1, 2))

    def __attrs_post_init__(self) -> None:
        if self.baud not in FORWARD_BAUD.values():
            raise ValueError(f"AFN 10 F1 baud is one of {sorted(FORWARD_BAUD.values())}, got {self.baud!r}")
        if self.parity not in PARITIES:
            raise ValueError(f"parity is one of {PARITIES}, got {self.parity!r}")

    def encode(self) -> bytes:
        code = {v: k for k, v in FORWARD_BAUD.items()}[self.baud]
        parity = {"N": 0b00, "E": 0b10, "O": 0b11}[self.parity]
        return bytes((code << 5 | (self.stop_bits - 1) << 4 | parity << 2 | (self.data_bits - 5),))

    @classmethod
    def decode(cls, data: bytes) -> SerialSettings:
        word = data[0]
        parity = word >> 2 & 3
        if parity == 0b01:
            raise FrameError(f"AFN 10 F1 control word {word:02X}h: odd parity chosen with parity off")
        return cls(FORWARD_BAUD[word >> 5], {0b00: "N", 0b10: "E", 0b11: "O"}[parity], (word & 3) + 5, (word >> 4 & 1) + 1)


@attrs.frozen
class Forward:
    """AFN 10 F1 request: forward ``frame`` to the meter bus on ``port`` and return its
    answer [V]. The frame timeout counts seconds when ``timeout_in_seconds``, else 10 ms
    units (D7 of its byte); the byte timeout counts 10 ms units."""

    port: int = attrs.field(validator=_byte)
    settings: SerialSettings
    frame_timeout: int = attrs.field(validator=in_range(0, 127))
    timeout_in_seconds: bool
    byte_timeout: int = attrs.field(validator=_byte)
    frame: bytes = attrs.field(converter=bytes)

    def __attrs_post_init__(self) -> None:
        if len(self.frame) > 0xFFFF:
            raise ValueError(f"a forwarded frame holds at most 65535 bytes, got {len(self.frame)}")

    @classmethod
    def size(cls, data: bytes) -> int:
        _need(data, 6, "AFN 10 F1 request")
        return 6 + int.from_bytes(data[4:6], "little")

    def encode(self) -> bytes:
        timeout = self.timeout_in_seconds << 7 | self.frame_timeout
        head = bytes((self.port,)) + self.settings.encode() + bytes((timeout, self.byte_timeout))
        return head + len(self.frame).to_bytes(2, "little") + self.frame

    @classmethod
    def decode(cls, data: bytes) -> Forward:
        reader = _Reader(data, "AFN 10 F1 request")
        port, settings, timeout, byte_timeout = reader.byte(), SerialSettings.decode(reader.take(1)), reader.byte(), reader.byte()
        frame = reader.take(reader.word())
        reader.end()
        return cls(port, settings, timeout & 0x7F, bool(timeout & 0x80), byte_timeout, frame)


@attrs.frozen
class ForwardReply:
    """AFN 10 F1 answer: the port and what the meter answered (empty: no answer) [V]."""

    port: int = attrs.field(validator=_byte)
    frame: bytes = attrs.field(converter=bytes)

    def __attrs_post_init__(self) -> None:
        if len(self.frame) > 0xFFFF:
            raise ValueError(f"a forwarded frame holds at most 65535 bytes, got {len(self.frame)}")

    @classmethod
    def size(cls, data: bytes) -> int:
        _need(data, 3, "AFN 10 F1 answer")
        return 3 + int.from_bytes(data[1:3], "little")

    def encode(self) -> bytes:
        return bytes((self.port,)) + len(self.frame).to_bytes(2, "little") + self.frame

    @classmethod
    def decode(cls, data: bytes) -> ForwardReply:
        reader = _Reader(data, "AFN 10 F1 answer")
        port = reader.byte()
        frame = reader.take(reader.word())
        reader.end()
        return cls(port, frame)


# --- the registry ------------------------------------------------------------------------------


class Codec(Protocol):
    """What :data:`LAYOUTS` needs of an item's class."""

    @classmethod
    def size(cls, data: bytes) -> int: ...

    @classmethod
    def decode(cls, data: bytes) -> Any: ...


@attrs.frozen
class Layout:
    """One (AFN, Fn, direction) item: its name and codec; no codec: the item has no data."""

    name: str
    codec: Any = None  #: a Codec class, or None

    def size(self, data: bytes) -> int:
        return 0 if self.codec is None else self.codec.size(data)

    def decode(self, data: bytes) -> Any:
        if self.codec is None:
            if data:
                raise FrameError(f"{self.name} carries no data, got {len(data)} byte(s)")
            return None
        return self.codec.decode(data)


DOWN, UP = Direction.DOWN, Direction.UP
BOTH = (DOWN, UP)

LAYOUTS: dict[tuple[int, int, Direction], Layout] = {}


def _add(afn: int, fns: Iterable[int], directions: Iterable[Direction], name: str, codec: Any = None) -> None:
    for fn in fns:
        for direction in directions:
            LAYOUTS[(afn, fn, direction)] = Layout(f"AFN {afn:02X} F{fn} {name}", codec)


_add(Afn.CONFIRM, [1], BOTH, "all confirmed")
_add(Afn.CONFIRM, [2], BOTH, "all denied")
_add(Afn.CONFIRM, [3], BOTH, "confirm/deny per data unit", UnitResults)
_add(Afn.RESET, [1], [DOWN], "hardware initialisation")
_add(Afn.RESET, [2], [DOWN], "data area initialisation")
_add(Afn.RESET, [3], [DOWN], "parameter and data area initialisation")
_add(Afn.LINK, [1], [UP], "login")
_add(Afn.LINK, [2], [UP], "logout")
_add(Afn.LINK, [3], [UP], "heartbeat", Heartbeat)
_add(Afn.SET, [1], [DOWN], "uplink communication parameters", UplinkParams)
_add(Afn.QUERY, [1], [UP], "uplink communication parameters", UplinkParams)
_add(Afn.SET, [3], [DOWN], "master station IP/port and APN", MasterStation)
_add(Afn.QUERY, [3], [UP], "master station IP/port and APN", MasterStation)
_add(Afn.SET, [10], [DOWN], "meter archive", MeterArchive)
_add(Afn.QUERY, [10], [UP], "meter archive", MeterArchive)
_add(Afn.QUERY, [10], [DOWN], "meter archive query", ArchiveQuery)
_add(Afn.CONTROL, [1], [DOWN], "remote trip", RemoteTrip)
_add(Afn.CONTROL, [2], [DOWN], "permit close")
_add(Afn.CONTROL, [25], [DOWN], "power-keep on", KeepPower)
_add(Afn.CONTROL, [29], [DOWN], "allow active reporting")
_add(Afn.CONTROL, [31], [DOWN], "clock set", ClockSet)
_add(Afn.CONTROL, [33], [DOWN], "power-keep off")
_add(Afn.CONTROL, [37], [DOWN], "forbid active reporting")
_add(Afn.CONFIG, [1], [UP], "terminal version", VersionInfo)
_add(Afn.CLASS1, [2], [UP], "terminal clock", Clock)
_add(Afn.CLASS1, [25], [UP], "current powers, voltages, currents", Instantaneous)
_add(Afn.CLASS1, [33], [UP], "current forward active/reactive indications", ForwardIndications)
_add(Afn.CLASS1, [129], [UP], "current forward active energy", TariffEnergy)
_add(Afn.CLASS1, [131], [UP], "current reverse active energy", TariffEnergy)
_add(Afn.CLASS2, [1, 161, 163], [DOWN], "daily frozen data request", DayTag)
_add(Afn.CLASS2, [17, 177, 179], [DOWN], "monthly frozen data request", MonthTag)
_add(Afn.CLASS2, [1], [UP], "daily frozen forward indications", DailyIndications)
_add(Afn.CLASS2, [17], [UP], "monthly frozen forward indications", MonthlyIndications)
_add(Afn.CLASS2, [161], [UP], "daily frozen forward active energy", DailyEnergy)
_add(Afn.CLASS2, [163], [UP], "daily frozen reverse active energy", DailyEnergy)
_add(Afn.CLASS2, [177], [UP], "monthly frozen forward active energy", MonthlyEnergy)
_add(Afn.CLASS2, [179], [UP], "monthly frozen reverse active energy", MonthlyEnergy)
_add(Afn.CLASS3, [1], [DOWN], "important events request", EventRequest)
_add(Afn.CLASS3, [2], [DOWN], "normal events request", EventRequest)
_add(Afn.CLASS3, [1], [UP], "important events", EventReply)
_add(Afn.CLASS3, [2], [UP], "normal events", EventReply)
_add(Afn.FORWARD, [1], [DOWN], "transparent forwarding", Forward)
_add(Afn.FORWARD, [1], [UP], "transparent forwarding answer", ForwardReply)

#: Requests that carry no data whatever their Fn, but for the Fn listed (LM, captures).
_EMPTY_REQUESTS: Mapping[tuple[int, Direction], frozenset[int]] = {
    (Afn.CONFIG, DOWN): frozenset(),
    (Afn.QUERY, DOWN): frozenset({10, 38, 39}),
    (Afn.CLASS1, DOWN): frozenset(),
}


def layout(afn: int, fn: int, direction: Direction) -> Layout:
    """The layout of an item; FrameError when none is known (its length cannot be told)."""
    found = LAYOUTS.get((afn, fn, direction))
    if found is not None:
        return found
    with_data = _EMPTY_REQUESTS.get((afn, direction))
    if with_data is not None and fn not in with_data:
        return Layout(f"AFN {afn:02X} F{fn} request")
    raise FrameError(f"no known layout for AFN {afn:02X} F{fn} {direction.name.lower()}link: its length cannot be told")


def _item_size(frame: Frame) -> Callable[[int, bytes], int]:
    return lambda fn, rest: layout(frame.afn, fn, frame.direction).size(rest)


def units(frame: Frame) -> tuple[DataUnit, ...]:
    """The data units of ``frame``, split with the known layouts."""
    return split_units(frame.payload, _item_size(frame))


@attrs.frozen
class Item:
    """One (pn, Fn) item of a data unit and its decoded value (None: it has no data).
    ``point`` is None in a unit that names every valid point."""

    point: int | None
    fn: int
    value: Any


def decode_unit(afn: int, direction: Direction, data_unit: DataUnit) -> tuple[Item, ...]:
    """The items of one data unit of a frame of ``afn`` sent in ``direction``."""
    out = []
    at = 0
    for point, fn in data_unit.pairs():
        found = layout(afn, fn, direction)
        size = found.size(data_unit.data[at:])
        if at + size > len(data_unit.data):
            raise FrameError(f"{found.name}: needs {size} byte(s), {len(data_unit.data) - at} left")
        out.append(Item(point, fn, found.decode(data_unit.data[at : at + size])))
        at += size
    if at != len(data_unit.data):
        raise FrameError(f"{len(data_unit.data) - at} byte(s) after the items of a data unit")
    return tuple(out)


def items(frame: Frame) -> tuple[Item, ...]:
    """Every item of ``frame``, decoded, in wire order."""
    return tuple(item for u in units(frame) for item in decode_unit(frame.afn, frame.direction, u))


def unit(points: Iterable[int] | None, functions: Iterable[int], values: Iterable[Any] = ()) -> DataUnit:
    """A data unit whose items are ``values`` in wire order (pn by pn, Fn by Fn within
    each; None or nothing for items without data)."""
    data = b"".join(b"" if v is None else v.encode() for v in values)
    return DataUnit(points, functions, data)
