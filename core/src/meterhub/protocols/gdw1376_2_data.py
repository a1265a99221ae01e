"""Q/GDW 1376.2-2013 data units: what the concentrator and its local communication module
say to each other, sans-I/O.

The frame layer (:mod:`meterhub.protocols.gdw1376_2`) keeps a frame's data unit as sent;
this module knows what each (AFN, Fn, direction) unit means. :data:`LAYOUTS` is that
registry: a :class:`Layout` names the unit and its codec, an attrs class with
``encode()`` and ``decode(data)``. :func:`decode_unit` decodes a frame's unit and
:func:`unit_frame` builds a frame from a value. A frame carries one unit, which fills the
frame's data, so there is no item-size walk as in 1376.1.

A meter frame carried inside a unit (AFN 02, 03 F9, 04 F3, 05 F3, 06 F2/F5, 13, 14) is
bytes here, as sent (wake-up FE included): the DL/T 645 codec reads it. Its length byte
limits it to 255 bytes. Addresses are printed most significant first, as the frame
layer prints them. Bits the standard reserves inside a unit must be 0: a value that sets
one is a FrameError rather than dropped, so that what decodes encodes back to the same
bytes (as in 1376.1's data module; the R field, where modules do send junk, is the
frame layer's business).

Decisions where the sources differ or say nothing (labels of gdw1376-details.md §3.3):

* 00 F1 confirm: a 2-byte status (D0 command processed, D1-D15 channels 1-15 idle) +
  2-byte wait from a legacy narrowband module, or the 4-byte BS32 (channels 1-31) + wait of
  the 2013/2019 text [V both, by data length; the test script's vector calls the split
  uncertain, the details note settles it]; a downlink confirm of an active report
  may carry no data at all (a 2017 capture), which decodes to None.
* 00 F2 deny codes are the 2019 table's [V]; the China Southern Grid list is different
  and not used. An unknown code is kept as its number.
* 03 F1 version (2 bytes) is kept as the 4 hex digits in wire order ("10 20" is "1020",
  what LN prints as 10.20); the version date is DD MM YY [V].
* 03 F10: mode byte 4 D7-D4 (reserved) must be 0; mode bytes 5-6 are kept as sent
  (``reserved``): a module's whole report must not be refused for two bytes nothing here
  reads.
* 06 F4 (slave node information with device type) follows the 2019 table 53 [S]: node
  count, then per node address, protocol, sequence, device type, M, m, m sub-nodes.
* 11 F1 adds nodes of 7 bytes (address + protocol) [V 2013/2019]; the 2009 layout with a
  sequence number per node is not supported.
* 13 F1 reply starts with the uplink duration in seconds, not an echo of the delay flag
  [V 2019 table 109 + captures; the README's "delay (2 B)" was U]; a length of 0 means
  the meter did not answer.
* 14 F1 answer: read flag, delay flag, L, frame, then the attached nodes [V].
* 14 F3 request: slave address, expected delay (s), L, frame; answer: L, frame [S LN].
* 11 F3 relay path: slave address, relay count, relay addresses [S LN]; 11 F5
  registration start time is ss mm hh DD MM YY [S LN].
* F1 F1 concurrent reading (集中器主动并发抄表, 2019) is protocol (1), a 2-byte length
  (low byte first) and the meter frame(s), in both directions [S LN's AFNf1.c; no capture];
  the frame carries an address field whose destination (downlink) or source (uplink) is
  the slave node. How many reads a module takes at once is not in any unit decoded here:
  a driver learns it from deny codes 109/111.
* Left out: the answers to 03 F2/F3/F5/F6/F7/F12 and 10 F3/F5/F6, the requests of those
  that carry data (03 F3, F6; 10 F3, F5, F6), 05 F6 and later Fn, AFN 15 (file
  transfer), AFN F0/F1. A unit without a layout is a FrameError from :func:`layout`; its
  frame still decodes, with the data as bytes.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from datetime import date, datetime
from typing import Any, ClassVar, Protocol

import attrs

from ..errors import FrameError
from .bcd import bcd_to_int, int_to_bcd
from .gdw1376_1 import in_range
from .gdw1376_1_data import _check_reserved
from .gdw1376_1_data import _Reader as Reader1376_1  # one reader for both data layers
from .gdw1376_2 import (
    ADDRESS_LEN,
    RATE_KBPS,
    RATE_MASK,
    Addresses,
    Afn,
    CommMode,
    Direction,
    DownInfo,
    Frame,
    UpInfo,
    address_from_wire,
    address_to_wire,
)

MAX_CARRIED = 0xFF  #: a carried frame's length is one byte

_byte = in_range(0, 0xFF)
_word = in_range(0, 0xFFFF)
_nibble = in_range(0, 0x0F)


class _Reader(Reader1376_1):
    """1376.1's unit reader (FrameError when bytes run out or remain), plus what 1376.2
    units hold: addresses and carried frames."""

    def address(self) -> str:
        return address_from_wire(self.take(ADDRESS_LEN))

    def addresses(self, count: int) -> tuple[str, ...]:
        return tuple(self.address() for _ in range(count))

    def carried(self) -> bytes:
        """A carried frame: its length byte, then that many bytes."""
        return self.take(self.byte())


def _address(value: object) -> str:
    text = str(value).strip().upper()
    address_to_wire(text)  # the ValueError of an address that cannot be sent
    return text


def _address_list(values: Iterable[object]) -> tuple[str, ...]:
    return tuple(_address(v) for v in values)


def _carried(_instance: object, attribute: attrs.Attribute, value: bytes) -> None:
    if len(value) > MAX_CARRIED:
        raise ValueError(f"{attribute.name} is sent after a 1-byte length: at most {MAX_CARRIED} bytes, got {len(value)}")


def _word_carried(_instance: object, attribute: attrs.Attribute, value: bytes) -> None:
    if len(value) > 0xFFFF:
        raise ValueError(f"{attribute.name}: a frame after a 2-byte length is at most 65535 bytes, got {len(value)}")


def _counted(limit: int) -> Callable[[object, attrs.Attribute, tuple[Any, ...]], None]:
    def check(_instance: object, attribute: attrs.Attribute, value: tuple[Any, ...]) -> None:
        if len(value) > limit:
            raise ValueError(f"{attribute.name} is counted in {'one byte' if limit == 0xFF else 'two bytes'}: at most {limit}, got {len(value)}")

    return check


def _frame_bytes(frame: bytes) -> bytes:
    return bytes((len(frame),)) + frame


def _wire_addresses(addresses: Iterable[str]) -> bytes:
    return b"".join(address_to_wire(a) for a in addresses)


def _counted_addresses(addresses: tuple[str, ...]) -> bytes:
    return bytes((len(addresses),)) + _wire_addresses(addresses)


def _bcd_fields(data: bytes, what: str) -> list[int]:
    try:
        return [bcd_to_int(data[i : i + 1]) for i in range(len(data))]
    except ValueError as exc:
        raise FrameError(f"{what}: {exc}") from None


def _date_from_wire(data: bytes, what: str) -> date:
    """DD MM YY, one BCD byte each."""
    day, month, year = _bcd_fields(data, what)
    try:
        return date(2000 + year, month, day)
    except ValueError as exc:
        raise FrameError(f"{what}: {data.hex(' ').upper()} is no date ({exc})") from None


def _date_to_wire(value: date) -> bytes:
    return int_to_bcd(value.day, 1) + int_to_bcd(value.month, 1) + int_to_bcd(value.year - 2000, 1)


def _time_from_wire(data: bytes, what: str) -> datetime:
    """ss mm hh DD MM YY, one BCD byte each."""
    second, minute, hour, day, month, year = _bcd_fields(data, what)
    try:
        return datetime(2000 + year, month, day, hour, minute, second)
    except ValueError as exc:
        raise FrameError(f"{what}: {data.hex(' ').upper()} is no time ({exc})") from None


def _time_to_wire(value: datetime) -> bytes:
    fields = (value.second, value.minute, value.hour, value.day, value.month, value.year - 2000)
    return b"".join(int_to_bcd(v, 1) for v in fields)


def _in_century(_instance: object, attribute: attrs.Attribute, value: date) -> None:
    if not isinstance(value, date):
        raise TypeError(f"{attribute.name} is a date, got {value!r}")
    if not 2000 <= value.year <= 2099:
        raise ValueError(f"{attribute.name} is sent as YY: 2000..2099, got {value}")
    if isinstance(value, datetime) and (value.microsecond or value.tzinfo is not None):
        raise ValueError(f"{attribute.name} carries whole seconds of a naive time, got {value!r}")


def _version(value: object) -> str:
    text = str(value).strip().upper()
    if len(text) != 4 or not all(c in "0123456789ABCDEF" for c in text):
        raise ValueError(f"a version is 4 hex digits as sent, got {value!r}")
    return text


def _ascii2(_instance: object, attribute: attrs.Attribute, value: str) -> None:
    if len(value.encode("latin-1")) != 2:
        raise ValueError(f"{attribute.name} is 2 characters, got {value!r}")


class MeterProtocol(enum.IntEnum):
    """The protocol of a carried frame or a slave node (00 transparent ... 03 698.45)."""

    TRANSPARENT = 0
    DLT645_1997 = 1
    DLT645_2007 = 2
    DLT698_45 = 3


# --- small shapes shared by several units ------------------------------------------------------


@attrs.frozen
class Rate:
    """A 2-byte communication rate: ``value`` (D14-D0, 0 = default) in kbit/s when
    ``kbps`` (D15), else bit/s."""

    value: int = attrs.field(default=0, validator=in_range(0, RATE_MASK))
    kbps: bool = attrs.field(default=False, converter=bool)

    def encode(self) -> bytes:
        return (self.kbps << 15 | self.value).to_bytes(2, "little")

    @classmethod
    def decode(cls, data: bytes) -> Rate:
        word = int.from_bytes(data, "little")
        return cls(word & RATE_MASK, word & RATE_KBPS)


@attrs.frozen
class Carried:
    """A protocol type and a frame of that protocol after a length byte: 02 F1 (both
    directions), 03 F9 request, 05 F3 broadcast (there ``protocol`` is the control
    word: 00 transparent, 01 645-1997, 02 645-2007, 03 phase identification)."""

    protocol: int = attrs.field(validator=_byte)
    frame: bytes = attrs.field(converter=bytes, validator=_carried)

    def encode(self) -> bytes:
        return bytes((self.protocol,)) + _frame_bytes(self.frame)

    @classmethod
    def decode(cls, data: bytes) -> Carried:
        reader = _Reader(data, "protocol + frame")
        unit = cls(reader.byte(), reader.carried())
        reader.end()
        return unit


# --- AFN 00: confirm / deny ----------------------------------------------------------------------


@attrs.frozen
class Confirm:
    """00 F1: the command was processed (D0) and which channels are idle (D1.. = channel
    1..), and how long the module asks the concentrator to wait, in seconds. ``legacy``
    is the 2-byte status (channels 1-15) of old narrowband modules, else BS32 (1-31)."""

    processed: bool = attrs.field(default=True, converter=bool)
    idle_channels: tuple[int, ...] = attrs.field(default=(), converter=lambda v: tuple(sorted(set(v))))
    wait: int = attrs.field(default=0, validator=_word)
    legacy: bool = attrs.field(default=False, converter=bool)

    def __attrs_post_init__(self) -> None:
        top = 15 if self.legacy else 31
        if not all(1 <= c <= top for c in self.idle_channels):
            raise ValueError(f"channels are 1..{top} in a {'2' if self.legacy else '4'}-byte status, got {self.idle_channels}")

    def encode(self) -> bytes:
        status = self.processed | sum(1 << c for c in self.idle_channels)
        return status.to_bytes(2 if self.legacy else 4, "little") + self.wait.to_bytes(2, "little")

    @classmethod
    def decode(cls, data: bytes) -> Confirm:
        if len(data) not in (4, 6):
            raise FrameError(f"00 F1 confirm is 4 (legacy) or 6 bytes, got {len(data)}")
        size = len(data) - 2
        status = int.from_bytes(data[:size], "little")
        channels = [c for c in range(1, 8 * size) if status >> c & 1]
        return cls(status & 1, channels, int.from_bytes(data[size:], "little"), size == 2)


class DenyReason(enum.IntEnum):
    """00 F2 error codes (2019 table 10; 109-111 belong to concurrent reading)."""

    TIMEOUT = 0  #: communication timeout
    INVALID_DATA = 1  #: invalid data unit
    LENGTH = 2  #: length error
    CHECKSUM = 3  #: checksum error
    NO_SUCH_FN = 4  #: the information class does not exist
    FORMAT = 5  #: format error
    DUPLICATE_METER = 6  #: the meter number is already there
    METER_NOT_FOUND = 7  #: no such meter number
    METER_SILENT = 8  #: the meter's application layer did not answer
    BUSY = 9  #: the main node is busy
    UNSUPPORTED = 10  #: the main node does not support this command
    SLAVE_SILENT = 11  #: the slave node did not answer
    SLAVE_NOT_IN_NETWORK = 12  #: the slave node is not in the network
    CONCURRENCY_LIMIT = 109  #: too many concurrent reads
    TOO_MANY_FRAMES = 110  #: too many meter frames in one 376.2 frame
    METER_BUSY = 111  #: this meter is being read


def _enum_or_int(kind: type[enum.IntEnum], value: int) -> int:
    """``value`` as a member of ``kind`` where it names one; a reserved code stays a number."""
    value = int(value)
    try:
        return kind(value)
    except ValueError:
        return value


@attrs.frozen
class Deny:
    """00 F2: the command was refused, and why (a :class:`DenyReason` where known)."""

    reason: int = attrs.field(converter=lambda v: _enum_or_int(DenyReason, v), validator=_byte)

    def encode(self) -> bytes:
        return bytes((self.reason,))

    @classmethod
    def decode(cls, data: bytes) -> Deny:
        reader = _Reader(data, "00 F2 deny")
        unit = cls(reader.byte())
        reader.end()
        return unit


# --- AFN 03: queries ---------------------------------------------------------------------------


@attrs.frozen
class VendorVersion:
    """03 F1 answer (9 bytes) [V]: vendor code and chip code (2 ASCII each), the version
    date (DD MM YY) and the version (2 bytes, kept as the hex digits in wire order)."""

    vendor: str = attrs.field(validator=_ascii2)
    chip: str = attrs.field(validator=_ascii2)
    version_date: date = attrs.field(validator=_in_century)
    version: str = attrs.field(converter=_version)

    SIZE: ClassVar[int] = 9

    def encode(self) -> bytes:
        return self.vendor.encode("latin-1") + self.chip.encode("latin-1") + _date_to_wire(self.version_date) + bytes.fromhex(self.version)

    @classmethod
    def decode(cls, data: bytes) -> VendorVersion:
        reader = _Reader(data, "03 F1 vendor and version")
        vendor, chip = reader.take(2).decode("latin-1"), reader.take(2).decode("latin-1")
        day = _date_from_wire(reader.take(3), "03 F1 version date")
        unit = cls(vendor, chip, day, reader.take(2).hex())
        reader.end()
        return unit


@attrs.frozen
class MainNode:
    """03 F4 answer and 05 F1 request: the main node's (the module's own) address."""

    address: str = attrs.field(converter=_address)

    def encode(self) -> bytes:
        return address_to_wire(self.address)

    @classmethod
    def decode(cls, data: bytes) -> MainNode:
        reader = _Reader(data, "main node address")
        unit = cls(reader.address())
        reader.end()
        return unit


@attrs.frozen
class WirelessParams:
    """03 F8 answer and 05 F5 request: micro-power wireless channel group (0-63; 254
    automatic and 255 unchanged when set) and transmit power (0 highest .. 3 lowest)."""

    channel: int = attrs.field(validator=_byte)
    power: int = attrs.field(validator=_byte)

    def encode(self) -> bytes:
        return bytes((self.channel, self.power))

    @classmethod
    def decode(cls, data: bytes) -> WirelessParams:
        reader = _Reader(data, "wireless parameters")
        unit = cls(reader.byte(), reader.byte())
        reader.end()
        return unit


@attrs.frozen
class DelayReply:
    """03 F9 answer: the broadcast communication delay in seconds for the frame the
    concentrator sent, with that protocol and frame."""

    delay: int = attrs.field(validator=_word)
    protocol: int = attrs.field(validator=_byte)
    frame: bytes = attrs.field(converter=bytes, validator=_carried)

    def encode(self) -> bytes:
        return self.delay.to_bytes(2, "little") + bytes((self.protocol,)) + _frame_bytes(self.frame)

    @classmethod
    def decode(cls, data: bytes) -> DelayReply:
        reader = _Reader(data, "03 F9 delay")
        unit = cls(reader.word(), reader.byte(), reader.carried())
        reader.end()
        return unit


@attrs.frozen
class RunMode:
    """03 F10 answer: the local module's running mode [V 2019 table 30 + a 41-byte capture].

    Mode bytes: ``comm_type`` (1 narrowband, 2 broadband, 3 micro-power), ``routing``,
    ``node_info_needed``, ``read_mode`` (1 concentrator-led, 2 router-led, 3 both);
    ``delay_support`` (D2-D0: broadcast, monitor, router-read delay parameters),
    ``failed_switch`` (who switches a failed node), ``broadcast_confirm``,
    ``broadcast_channel``; ``channels`` and ``outage`` (per-phase outage reporting, 2019)
    share byte 3; byte 4 counts ``rates``; bytes 5-6 are kept as sent. Then timeouts (s),
    maximum frame and file-packet lengths, upgrade wait (s), the main node address, node
    capacity and count, the protocol release and filing dates, the 03 F1 block and the rates.
    """

    comm_type: int = attrs.field(validator=_nibble)
    routing: bool = attrs.field(converter=bool)
    node_info_needed: bool = attrs.field(converter=bool)
    read_mode: int = attrs.field(validator=in_range(0, 3))
    delay_support: int = attrs.field(validator=in_range(0, 7))
    failed_switch: int = attrs.field(validator=in_range(0, 3))
    broadcast_confirm: bool = attrs.field(converter=bool)
    broadcast_channel: int = attrs.field(validator=in_range(0, 3))
    channels: int = attrs.field(validator=_nibble)
    outage: int = attrs.field(validator=_nibble)
    monitor_timeout: int = attrs.field(validator=_byte)
    broadcast_timeout: int = attrs.field(validator=_word)
    max_frame: int = attrs.field(validator=_word)
    max_file_packet: int = attrs.field(validator=_word)
    upgrade_wait: int = attrs.field(validator=_byte)
    main_node: str = attrs.field(converter=_address)
    max_nodes: int = attrs.field(validator=_word)
    nodes: int = attrs.field(validator=_word)
    release_date: date = attrs.field(validator=_in_century)
    filing_date: date = attrs.field(validator=_in_century)
    vendor: VendorVersion
    rates: tuple[Rate, ...] = attrs.field(converter=tuple, validator=_counted(15))
    reserved: bytes = attrs.field(default=bytes(2), converter=bytes)

    def __attrs_post_init__(self) -> None:
        if len(self.reserved) != 2:
            raise ValueError(f"03 F10 mode bytes 5-6 are 2 bytes, got {self.reserved!r}")

    def encode(self) -> bytes:
        modes = bytes(
            (
                self.read_mode << 6 | self.node_info_needed << 5 | self.routing << 4 | self.comm_type,
                self.broadcast_channel << 6 | self.broadcast_confirm << 5 | self.failed_switch << 3 | self.delay_support,
                self.outage << 4 | self.channels,
                len(self.rates),
            )
        )
        return (
            modes
            + self.reserved
            + bytes((self.monitor_timeout,))
            + b"".join(n.to_bytes(2, "little") for n in (self.broadcast_timeout, self.max_frame, self.max_file_packet))
            + bytes((self.upgrade_wait,))
            + address_to_wire(self.main_node)
            + self.max_nodes.to_bytes(2, "little")
            + self.nodes.to_bytes(2, "little")
            + _date_to_wire(self.release_date)
            + _date_to_wire(self.filing_date)
            + self.vendor.encode()
            + b"".join(r.encode() for r in self.rates)
        )

    @classmethod
    def decode(cls, data: bytes) -> RunMode:
        reader = _Reader(data, "03 F10 running mode")
        b1, b2, b3, b4 = reader.take(4)
        _check_reserved(b4, 0xF0, "03 F10 rate count byte")
        reserved = reader.take(2)
        monitor, broadcast, max_frame, max_packet, upgrade = reader.byte(), reader.word(), reader.word(), reader.word(), reader.byte()
        main, max_nodes, nodes = reader.address(), reader.word(), reader.word()
        release = _date_from_wire(reader.take(3), "03 F10 release date")
        filing = _date_from_wire(reader.take(3), "03 F10 filing date")
        vendor = VendorVersion.decode(reader.take(VendorVersion.SIZE))
        rates = [Rate.decode(reader.take(2)) for _ in range(b4 & 0x0F)]
        reader.end()
        return cls(
            comm_type=b1 & 0x0F,
            routing=b1 >> 4 & 1,
            node_info_needed=b1 >> 5 & 1,
            read_mode=b1 >> 6,
            delay_support=b2 & 7,
            failed_switch=b2 >> 3 & 3,
            broadcast_confirm=b2 >> 5 & 1,
            broadcast_channel=b2 >> 6,
            channels=b3 & 0x0F,
            outage=b3 >> 4,
            monitor_timeout=monitor,
            broadcast_timeout=broadcast,
            max_frame=max_frame,
            max_file_packet=max_packet,
            upgrade_wait=upgrade,
            main_node=main,
            max_nodes=max_nodes,
            nodes=nodes,
            release_date=release,
            filing_date=filing,
            vendor=vendor,
            rates=rates,
            reserved=reserved,
        )


@attrs.frozen
class AfnIndexQuery:
    """03 F11 request: which Fn of ``afn`` the module supports."""

    afn: int = attrs.field(validator=_byte)

    def encode(self) -> bytes:
        return bytes((self.afn,))

    @classmethod
    def decode(cls, data: bytes) -> AfnIndexQuery:
        reader = _Reader(data, "03 F11 request")
        unit = cls(reader.byte())
        reader.end()
        return unit


@attrs.frozen
class AfnIndex:
    """03 F11 answer: ``afn`` and the Fn (1..256) it supports, a 32-byte bit map."""

    afn: int = attrs.field(validator=_byte)
    functions: tuple[int, ...] = attrs.field(converter=lambda v: tuple(sorted(set(v))))

    def __attrs_post_init__(self) -> None:
        if not all(1 <= fn <= 256 for fn in self.functions):
            raise ValueError(f"the 03 F11 bit map holds Fn 1..256, got {self.functions}")

    def encode(self) -> bytes:
        return bytes((self.afn,)) + sum(1 << (fn - 1) for fn in self.functions).to_bytes(32, "little")

    @classmethod
    def decode(cls, data: bytes) -> AfnIndex:
        reader = _Reader(data, "03 F11 answer")
        afn, bits = reader.byte(), int.from_bytes(reader.take(32), "little")
        reader.end()
        return cls(afn, [fn for fn in range(1, 257) if bits >> (fn - 1) & 1])


# --- AFN 04: link test ------------------------------------------------------------------------


@attrs.frozen
class SendTest:
    """04 F1: send a test signal for ``duration`` seconds (0: stop)."""

    duration: int = attrs.field(validator=_byte)

    def encode(self) -> bytes:
        return bytes((self.duration,))

    @classmethod
    def decode(cls, data: bytes) -> SendTest:
        reader = _Reader(data, "04 F1 send test")
        unit = cls(reader.byte())
        reader.end()
        return unit


@attrs.frozen
class PacketTest:
    """04 F3: send ``frame`` (of ``protocol``) to ``destination`` at rate number
    ``rate`` as a local-channel communication test [S LN]."""

    rate: int = attrs.field(validator=_byte)
    destination: str = attrs.field(converter=_address)
    protocol: int = attrs.field(validator=_byte)
    frame: bytes = attrs.field(converter=bytes, validator=_carried)

    def encode(self) -> bytes:
        return bytes((self.rate,)) + address_to_wire(self.destination) + bytes((self.protocol,)) + _frame_bytes(self.frame)

    @classmethod
    def decode(cls, data: bytes) -> PacketTest:
        reader = _Reader(data, "04 F3 packet test")
        unit = cls(reader.byte(), reader.address(), reader.byte(), reader.carried())
        reader.end()
        return unit


# --- AFN 05: control ---------------------------------------------------------------------------


@attrs.frozen
class EventReporting:
    """05 F2: allow (1) or forbid (0) slave nodes to report events."""

    allowed: bool = attrs.field(converter=bool)

    def encode(self) -> bytes:
        return bytes((self.allowed,))

    @classmethod
    def decode(cls, data: bytes) -> EventReporting:
        reader = _Reader(data, "05 F2 event reporting")
        flag = reader.byte()
        reader.end()
        if flag > 1:
            raise FrameError(f"05 F2 flag is 0 (forbid) or 1 (allow), got {flag}")
        return cls(flag)


@attrs.frozen
class MonitorTimeout:
    """05 F4: the longest a slave node monitor (13 F1) may take, in seconds."""

    seconds: int = attrs.field(validator=_byte)

    def encode(self) -> bytes:
        return bytes((self.seconds,))

    @classmethod
    def decode(cls, data: bytes) -> MonitorTimeout:
        reader = _Reader(data, "05 F4 monitor timeout")
        unit = cls(reader.byte())
        reader.end()
        return unit


# --- AFN 06: active reports ---------------------------------------------------------------------


@attrs.frozen
class SlaveNode:
    """A slave node as 06 F1 reports it: address, protocol, node sequence number."""

    address: str = attrs.field(converter=_address)
    protocol: int = attrs.field(validator=_byte)
    seq: int = attrs.field(validator=_word)

    def encode(self) -> bytes:
        return address_to_wire(self.address) + bytes((self.protocol,)) + self.seq.to_bytes(2, "little")


@attrs.frozen
class SlaveNodes:
    """06 F1: slave nodes the module found [S 2019 table 50]: n, then n nodes."""

    nodes: tuple[SlaveNode, ...] = attrs.field(converter=tuple, validator=_counted(0xFF))

    def encode(self) -> bytes:
        return bytes((len(self.nodes),)) + b"".join(n.encode() for n in self.nodes)

    @classmethod
    def decode(cls, data: bytes) -> SlaveNodes:
        reader = _Reader(data, "06 F1 slave nodes")
        nodes = [SlaveNode(reader.address(), reader.byte(), reader.word()) for _ in range(reader.byte())]
        reader.end()
        return cls(nodes)


@attrs.frozen
class ReadData:
    """06 F2: a meter's answer in a router-led reading [V]: node sequence number,
    protocol, uplink duration (s) and the meter's frame."""

    seq: int = attrs.field(validator=_word)
    protocol: int = attrs.field(validator=_byte)
    duration: int = attrs.field(validator=_word)
    frame: bytes = attrs.field(converter=bytes, validator=_carried)

    def encode(self) -> bytes:
        return self.seq.to_bytes(2, "little") + bytes((self.protocol,)) + self.duration.to_bytes(2, "little") + _frame_bytes(self.frame)

    @classmethod
    def decode(cls, data: bytes) -> ReadData:
        reader = _Reader(data, "06 F2 read data")
        unit = cls(reader.word(), reader.byte(), reader.word(), reader.carried())
        reader.end()
        return unit


class TaskStatus(enum.IntEnum):
    """06 F3: what changed in the route's work."""

    READ_DONE = 1  #: the reading task is done
    SEARCH_DONE = 2  #: the meter search is done
    AREA_DONE = 3  #: area (transformer) identification is done (2019)


@attrs.frozen
class TaskChange:
    """06 F3: the route's work status changed (a :class:`TaskStatus` where known)."""

    status: int = attrs.field(converter=lambda v: _enum_or_int(TaskStatus, v), validator=_byte)

    def encode(self) -> bytes:
        return bytes((self.status,))

    @classmethod
    def decode(cls, data: bytes) -> TaskChange:
        reader = _Reader(data, "06 F3 task status")
        unit = cls(reader.byte())
        reader.end()
        return unit


@attrs.frozen
class SubNode:
    """A node below a collector in 06 F4: address and protocol."""

    address: str = attrs.field(converter=_address)
    protocol: int = attrs.field(validator=_byte)


@attrs.frozen
class DeviceNode:
    """One node of 06 F4: address, protocol, sequence number, device type (0 collector,
    1 meter), how many nodes hang below it in all (``below``) and those sent here."""

    address: str = attrs.field(converter=_address)
    protocol: int = attrs.field(validator=_byte)
    seq: int = attrs.field(validator=_word)
    device_type: int = attrs.field(validator=_byte)
    below: int = attrs.field(validator=_byte)
    sub_nodes: tuple[SubNode, ...] = attrs.field(converter=tuple, validator=_counted(0xFF))

    def encode(self) -> bytes:
        head = address_to_wire(self.address) + bytes((self.protocol,)) + self.seq.to_bytes(2, "little")
        subs = b"".join(address_to_wire(s.address) + bytes((s.protocol,)) for s in self.sub_nodes)
        return head + bytes((self.device_type, self.below, len(self.sub_nodes))) + subs


@attrs.frozen
class DeviceNodes:
    """06 F4: slave nodes with their device type [S 2019 table 53]."""

    nodes: tuple[DeviceNode, ...] = attrs.field(converter=tuple, validator=_counted(0xFF))

    def encode(self) -> bytes:
        return bytes((len(self.nodes),)) + b"".join(n.encode() for n in self.nodes)

    @classmethod
    def decode(cls, data: bytes) -> DeviceNodes:
        reader = _Reader(data, "06 F4 device nodes")
        nodes = []
        for _ in range(reader.byte()):
            address, protocol, seq, kind, below = reader.address(), reader.byte(), reader.word(), reader.byte(), reader.byte()
            subs = [SubNode(reader.address(), reader.byte()) for _ in range(reader.byte())]
            nodes.append(DeviceNode(address, protocol, seq, kind, below, subs))
        reader.end()
        return cls(nodes)


@attrs.frozen
class MeterEvent:
    """06 F5: a slave node's event [V]: device type (1 meter), protocol and the frame
    the meter sent (a DL/T 645 active report of its 04001501 status word)."""

    device_type: int = attrs.field(validator=_byte)
    protocol: int = attrs.field(validator=_byte)
    frame: bytes = attrs.field(converter=bytes, validator=_carried)

    def encode(self) -> bytes:
        return bytes((self.device_type, self.protocol)) + _frame_bytes(self.frame)

    @classmethod
    def decode(cls, data: bytes) -> MeterEvent:
        reader = _Reader(data, "06 F5 meter event")
        unit = cls(reader.byte(), reader.byte(), reader.carried())
        reader.end()
        return unit


# --- AFN 10: route query --------------------------------------------------------------------------


@attrs.frozen
class NodeCount:
    """10 F1 answer: slave nodes in the module's archive and how many it can hold."""

    count: int = attrs.field(validator=_word)
    capacity: int = attrs.field(validator=_word)

    def encode(self) -> bytes:
        return self.count.to_bytes(2, "little") + self.capacity.to_bytes(2, "little")

    @classmethod
    def decode(cls, data: bytes) -> NodeCount:
        reader = _Reader(data, "10 F1 node count")
        unit = cls(reader.word(), reader.word())
        reader.end()
        return unit


@attrs.frozen
class NodeQuery:
    """10 F2 request: ``count`` slave nodes from sequence number ``start`` (from 1)."""

    start: int = attrs.field(validator=_word)
    count: int = attrs.field(validator=_byte)

    def encode(self) -> bytes:
        return self.start.to_bytes(2, "little") + bytes((self.count,))

    @classmethod
    def decode(cls, data: bytes) -> NodeQuery:
        reader = _Reader(data, "10 F2 request")
        unit = cls(reader.word(), reader.byte())
        reader.end()
        return unit


@attrs.frozen
class NodeInfo:
    """One slave node of 10 F2: address and its info word: relay level (D3-D0), listen
    quality (D7-D4), phases (D10-D8, one bit each), protocol (D13-D11)."""

    address: str = attrs.field(converter=_address)
    relay_level: int = attrs.field(default=0, validator=_nibble)
    quality: int = attrs.field(default=0, validator=_nibble)
    phases: int = attrs.field(default=0, validator=in_range(0, 7))
    protocol: int = attrs.field(default=0, validator=in_range(0, 7))

    def encode(self) -> bytes:
        word = self.protocol << 11 | self.phases << 8 | self.quality << 4 | self.relay_level
        return address_to_wire(self.address) + word.to_bytes(2, "little")

    @classmethod
    def decode(cls, data: bytes) -> NodeInfo:
        word = int.from_bytes(data[ADDRESS_LEN:], "little")
        _check_reserved(word >> 8, 0xC0, "10 F2 node info, high byte")
        return cls(address_from_wire(data), word & 0x0F, word >> 4 & 0x0F, word >> 8 & 7, word >> 11 & 7)


@attrs.frozen
class NodePage:
    """10 F2 answer: the archive's node ``total`` and the nodes of this answer."""

    total: int = attrs.field(validator=_word)
    nodes: tuple[NodeInfo, ...] = attrs.field(converter=tuple, validator=_counted(0xFF))

    def encode(self) -> bytes:
        return self.total.to_bytes(2, "little") + bytes((len(self.nodes),)) + b"".join(n.encode() for n in self.nodes)

    @classmethod
    def decode(cls, data: bytes) -> NodePage:
        reader = _Reader(data, "10 F2 answer")
        total = reader.word()
        nodes = [NodeInfo.decode(reader.take(ADDRESS_LEN + 2)) for _ in range(reader.byte())]
        reader.end()
        return cls(total, nodes)


@attrs.frozen
class RouteStatus:
    """10 F4 answer (16 bytes) [V]: status (learning done, working, event pending), node
    counts (total, read, read through relays), the work switch byte as sent, the rate,
    and per phase the relay level and the work step (1 initial .. 8 idle)."""

    learned: bool = attrs.field(converter=bool)
    working: bool = attrs.field(converter=bool)
    event_pending: bool = attrs.field(converter=bool)
    total: int = attrs.field(validator=_word)
    read: int = attrs.field(validator=_word)
    relay_read: int = attrs.field(validator=_word)
    switch: int = attrs.field(validator=_byte)
    rate: Rate
    relay_levels: tuple[int, int, int] = attrs.field(converter=tuple)
    steps: tuple[int, int, int] = attrs.field(converter=tuple)

    def __attrs_post_init__(self) -> None:
        for name in ("relay_levels", "steps"):
            values = getattr(self, name)
            if len(values) != 3 or not all(0 <= v <= 0xFF for v in values):
                raise ValueError(f"{name} is one byte per phase A, B, C, got {values}")

    def encode(self) -> bytes:
        status = self.event_pending << 2 | self.working << 1 | self.learned
        counts = b"".join(n.to_bytes(2, "little") for n in (self.total, self.read, self.relay_read))
        return bytes((status,)) + counts + bytes((self.switch,)) + self.rate.encode() + bytes(self.relay_levels) + bytes(self.steps)

    @classmethod
    def decode(cls, data: bytes) -> RouteStatus:
        reader = _Reader(data, "10 F4 route status")
        status = reader.byte()
        _check_reserved(status, 0xF8, "10 F4 status")
        total, read, relay_read, switch = reader.word(), reader.word(), reader.word(), reader.byte()
        rate = Rate.decode(reader.take(2))
        levels, steps = tuple(reader.take(3)), tuple(reader.take(3))
        reader.end()
        return cls(status & 1, status >> 1 & 1, status >> 2 & 1, total, read, relay_read, switch, rate, levels, steps)


# --- AFN 11: route set ------------------------------------------------------------------------


@attrs.frozen
class Node:
    """A slave node to add (11 F1): address and protocol."""

    address: str = attrs.field(converter=_address)
    protocol: int = attrs.field(validator=_byte)


@attrs.frozen
class AddNodes:
    """11 F1: add slave nodes to the module's archive [V]: n, then n × (address, protocol)."""

    nodes: tuple[Node, ...] = attrs.field(converter=tuple, validator=_counted(0xFF))

    def encode(self) -> bytes:
        return bytes((len(self.nodes),)) + b"".join(address_to_wire(n.address) + bytes((n.protocol,)) for n in self.nodes)

    @classmethod
    def decode(cls, data: bytes) -> AddNodes:
        reader = _Reader(data, "11 F1 add nodes")
        nodes = [Node(reader.address(), reader.byte()) for _ in range(reader.byte())]
        reader.end()
        return cls(nodes)


@attrs.frozen
class DeleteNodes:
    """11 F2: delete slave nodes: n, then n addresses."""

    addresses: tuple[str, ...] = attrs.field(converter=_address_list, validator=_counted(0xFF))

    def encode(self) -> bytes:
        return _counted_addresses(self.addresses)

    @classmethod
    def decode(cls, data: bytes) -> DeleteNodes:
        reader = _Reader(data, "11 F2 delete nodes")
        unit = cls(reader.addresses(reader.byte()))
        reader.end()
        return unit


@attrs.frozen
class RelayPath:
    """11 F3: a fixed relay path to a slave node: its address, then the relays in order."""

    address: str = attrs.field(converter=_address)
    relays: tuple[str, ...] = attrs.field(converter=_address_list, validator=_counted(0xFF))

    def encode(self) -> bytes:
        return address_to_wire(self.address) + _counted_addresses(self.relays)

    @classmethod
    def decode(cls, data: bytes) -> RelayPath:
        reader = _Reader(data, "11 F3 relay path")
        address = reader.address()
        unit = cls(address, reader.addresses(reader.byte()))
        reader.end()
        return unit


@attrs.frozen
class WorkMode:
    """11 F4: the route's work mode [S LN]: ``learning`` (D0: 1 learn, 0 read),
    ``registration_forbidden`` (D1), ``fec`` (D7-D4), and the rate."""

    learning: bool = attrs.field(converter=bool)
    registration_forbidden: bool = attrs.field(converter=bool)
    fec: int = attrs.field(validator=_nibble)
    rate: Rate

    def encode(self) -> bytes:
        return bytes((self.fec << 4 | self.registration_forbidden << 1 | self.learning,)) + self.rate.encode()

    @classmethod
    def decode(cls, data: bytes) -> WorkMode:
        reader = _Reader(data, "11 F4 work mode")
        word, rate = reader.byte(), Rate.decode(reader.take(2))
        reader.end()
        _check_reserved(word, 0x0C, "11 F4 work state")
        return cls(word & 1, word >> 1 & 1, word >> 4, rate)


@attrs.frozen
class Registration:
    """11 F5: activate slave node registration [S LN]: start time (ss mm hh DD MM YY),
    duration (min), retries per node and random-wait slices (150 ms each)."""

    start: datetime = attrs.field(validator=[attrs.validators.instance_of(datetime), _in_century])
    duration: int = attrs.field(validator=_word)
    retries: int = attrs.field(validator=_byte)
    slices: int = attrs.field(validator=_byte)

    def encode(self) -> bytes:
        return _time_to_wire(self.start) + self.duration.to_bytes(2, "little") + bytes((self.retries, self.slices))

    @classmethod
    def decode(cls, data: bytes) -> Registration:
        reader = _Reader(data, "11 F5 registration")
        unit = cls(_time_from_wire(reader.take(6), "11 F5 start time"), reader.word(), reader.byte(), reader.byte())
        reader.end()
        return unit


# --- AFN 13: monitor a slave node -----------------------------------------------------------------


def _read_flag(reader: _Reader, what: str) -> bool:
    flag = reader.byte()
    if flag > 1:
        raise FrameError(f"{what} is 0 or 1, got {flag}")
    return bool(flag)


@attrs.frozen
class Monitor:
    """13 F1 request: read a meter through the network [V]: the carried frame's
    protocol, whether its content depends on the communication delay (a clock set
    does), the nodes attached to the slave node, and the frame."""

    protocol: int = attrs.field(validator=_byte)
    frame: bytes = attrs.field(converter=bytes, validator=_carried)
    delay_related: bool = attrs.field(default=False, converter=bool)
    attached: tuple[str, ...] = attrs.field(default=(), converter=_address_list, validator=_counted(0xFF))

    def encode(self) -> bytes:
        return bytes((self.protocol, self.delay_related)) + _counted_addresses(self.attached) + _frame_bytes(self.frame)

    @classmethod
    def decode(cls, data: bytes) -> Monitor:
        reader = _Reader(data, "13 F1 monitor")
        protocol, delay = reader.byte(), _read_flag(reader, "13 F1 delay-related flag")
        attached = reader.addresses(reader.byte())
        unit = cls(protocol, reader.carried(), delay, attached)
        reader.end()
        return unit


@attrs.frozen
class MonitorReply:
    """13 F1 answer [V]: how long the answer took on the local channel (s), the
    protocol and the meter's frame (empty: the meter did not answer)."""

    duration: int = attrs.field(validator=_word)
    protocol: int = attrs.field(validator=_byte)
    frame: bytes = attrs.field(converter=bytes, validator=_carried)

    def encode(self) -> bytes:
        return self.duration.to_bytes(2, "little") + bytes((self.protocol,)) + _frame_bytes(self.frame)

    @classmethod
    def decode(cls, data: bytes) -> MonitorReply:
        reader = _Reader(data, "13 F1 answer")
        unit = cls(reader.word(), reader.byte(), reader.carried())
        reader.end()
        return unit


# --- AFN 14: router-led reading -----------------------------------------------------------------


@attrs.frozen
class ReadRequest:
    """14 F1 from the module: what should I send to this node? [V] The node's measured
    phase (0 unknown, 1-3), its address and sequence number."""

    phase: int = attrs.field(validator=_byte)
    address: str = attrs.field(converter=_address)
    seq: int = attrs.field(validator=_word)

    def encode(self) -> bytes:
        return bytes((self.phase,)) + address_to_wire(self.address) + self.seq.to_bytes(2, "little")

    @classmethod
    def decode(cls, data: bytes) -> ReadRequest:
        reader = _Reader(data, "14 F1 request")
        unit = cls(reader.byte(), reader.address(), reader.word())
        reader.end()
        return unit


class ReadFlag(enum.IntEnum):
    """14 F1 answer: what the concentrator says of the node."""

    FAILED = 0  #: reading it failed: move on
    DONE = 1  #: reading it succeeded: it is done
    MAY_READ = 2  #: read it with the frame given


@attrs.frozen
class ReadAnswer:
    """14 F1 answer [V]: the read flag, the delay-related flag, the frame to send
    (empty unless the flag is MAY_READ) and the nodes attached to the slave node."""

    flag: int = attrs.field(converter=lambda v: _enum_or_int(ReadFlag, v), validator=_byte)
    frame: bytes = attrs.field(default=b"", converter=bytes, validator=_carried)
    delay_related: bool = attrs.field(default=False, converter=bool)
    attached: tuple[str, ...] = attrs.field(default=(), converter=_address_list, validator=_counted(0xFF))

    def encode(self) -> bytes:
        return bytes((self.flag, self.delay_related)) + _frame_bytes(self.frame) + _counted_addresses(self.attached)

    @classmethod
    def decode(cls, data: bytes) -> ReadAnswer:
        reader = _Reader(data, "14 F1 answer")
        flag, delay = reader.byte(), _read_flag(reader, "14 F1 delay-related flag")
        frame = reader.carried()
        unit = cls(flag, frame, delay, reader.addresses(reader.byte()))
        reader.end()
        return unit


@attrs.frozen
class ConcentratorTime:
    """14 F2 answer: the concentrator's clock, ss mm hh DD MM YY (BCD, no week day)."""

    time: datetime = attrs.field(validator=[attrs.validators.instance_of(datetime), _in_century])

    def encode(self) -> bytes:
        return _time_to_wire(self.time)

    @classmethod
    def decode(cls, data: bytes) -> ConcentratorTime:
        reader = _Reader(data, "14 F2 time")
        unit = cls(_time_from_wire(reader.take(6), "14 F2 time"))
        reader.end()
        return unit


@attrs.frozen
class DelayCorrection:
    """14 F3 from the module: correct this frame for a delay of ``delay`` seconds
    before it goes to ``address`` [S LN]."""

    address: str = attrs.field(converter=_address)
    delay: int = attrs.field(validator=_word)
    frame: bytes = attrs.field(converter=bytes, validator=_carried)

    def encode(self) -> bytes:
        return address_to_wire(self.address) + self.delay.to_bytes(2, "little") + _frame_bytes(self.frame)

    @classmethod
    def decode(cls, data: bytes) -> DelayCorrection:
        reader = _Reader(data, "14 F3 request")
        unit = cls(reader.address(), reader.word(), reader.carried())
        reader.end()
        return unit


@attrs.frozen
class CorrectedFrame:
    """14 F3 answer [V]: the corrected frame (empty: give up this read)."""

    frame: bytes = attrs.field(converter=bytes, validator=_carried)

    def encode(self) -> bytes:
        return _frame_bytes(self.frame)

    @classmethod
    def decode(cls, data: bytes) -> CorrectedFrame:
        reader = _Reader(data, "14 F3 answer")
        unit = cls(reader.carried())
        reader.end()
        return unit


# --- AFN F1: concurrent reading ----------------------------------------------------------------


@attrs.frozen
class ConcurrentRead:
    """F1 F1, both directions [S LN]: the protocol and the meter frame(s), after a
    2-byte length (downlink: what to send to the node; uplink: what the node answered,
    empty when it did not)."""

    protocol: int = attrs.field(validator=_byte)
    frame: bytes = attrs.field(converter=bytes, validator=_word_carried)

    def encode(self) -> bytes:
        return bytes((self.protocol,)) + len(self.frame).to_bytes(2, "little") + self.frame

    @classmethod
    def decode(cls, data: bytes) -> ConcurrentRead:
        reader = _Reader(data, "F1 F1 concurrent read")
        protocol, size = reader.byte(), reader.word()
        unit = cls(protocol, reader.take(size))
        reader.end()
        return unit


# --- the registry ------------------------------------------------------------------------------


class Codec(Protocol):
    """What :data:`LAYOUTS` needs of a unit's class."""

    @classmethod
    def decode(cls, data: bytes) -> Any: ...


@attrs.frozen
class Layout:
    """One (AFN, Fn, direction) unit: its name and codec (None: the unit has no data);
    ``optional`` units may also come without data (decoded as None)."""

    name: str
    codec: Any = None  #: a Codec class, or None
    optional: bool = False

    def decode(self, data: bytes) -> Any:
        if self.codec is None or (self.optional and not data):
            if data:
                raise FrameError(f"{self.name} carries no data, got {len(data)} byte(s)")
            return None
        return self.codec.decode(data)


DOWN, UP = Direction.DOWN, Direction.UP
BOTH = (DOWN, UP)

LAYOUTS: dict[tuple[int, int, Direction], Layout] = {}


def _add(afn: int, fns: Iterable[int], directions: Iterable[Direction], name: str, codec: Any = None, optional: bool = False) -> None:
    for fn in fns:
        for direction in directions:
            LAYOUTS[(afn, fn, direction)] = Layout(f"AFN {afn:02X} F{fn} {name}", codec, optional)


_add(Afn.CONFIRM, [1], BOTH, "confirm", Confirm, optional=True)
_add(Afn.CONFIRM, [2], BOTH, "deny", Deny)
_add(Afn.INIT, [1], [DOWN], "hardware initialisation")
_add(Afn.INIT, [2], [DOWN], "parameter area initialisation")
_add(Afn.INIT, [3], [DOWN], "data area initialisation")
_add(Afn.FORWARD, [1], BOTH, "forward a protocol frame", Carried)
_add(Afn.QUERY, [1, 2, 4, 5, 7, 8, 10, 12], [DOWN], "query")
_add(Afn.QUERY, [1], [UP], "vendor code and version", VendorVersion)
_add(Afn.QUERY, [4], [UP], "main node address", MainNode)
_add(Afn.QUERY, [8], [UP], "wireless parameters", WirelessParams)
_add(Afn.QUERY, [9], [DOWN], "communication delay query", Carried)
_add(Afn.QUERY, [9], [UP], "communication delay", DelayReply)
_add(Afn.QUERY, [10], [UP], "running mode", RunMode)
_add(Afn.QUERY, [11], [DOWN], "AFN index query", AfnIndexQuery)
_add(Afn.QUERY, [11], [UP], "AFN index", AfnIndex)
_add(Afn.LINK_TEST, [1], [DOWN], "send test", SendTest)
_add(Afn.LINK_TEST, [2], [DOWN], "slave node roll call")
_add(Afn.LINK_TEST, [3], [DOWN], "packet test", PacketTest)
_add(Afn.CONTROL, [1], [DOWN], "set main node address", MainNode)
_add(Afn.CONTROL, [2], [DOWN], "allow/forbid event reporting", EventReporting)
_add(Afn.CONTROL, [3], [DOWN], "start broadcast", Carried)
_add(Afn.CONTROL, [4], [DOWN], "monitor timeout", MonitorTimeout)
_add(Afn.CONTROL, [5], [DOWN], "set wireless parameters", WirelessParams)
_add(Afn.REPORT, [1], [UP], "slave node information", SlaveNodes)
_add(Afn.REPORT, [2], [UP], "read data", ReadData)
_add(Afn.REPORT, [3], [UP], "work status change", TaskChange)
_add(Afn.REPORT, [4], [UP], "slave nodes with device type", DeviceNodes)
_add(Afn.REPORT, [5], [UP], "slave node event", MeterEvent)
_add(Afn.ROUTE_QUERY, [1, 4], [DOWN], "query")
_add(Afn.ROUTE_QUERY, [1], [UP], "slave node count", NodeCount)
_add(Afn.ROUTE_QUERY, [2], [DOWN], "slave node information query", NodeQuery)
_add(Afn.ROUTE_QUERY, [2], [UP], "slave node information", NodePage)
_add(Afn.ROUTE_QUERY, [4], [UP], "route running status", RouteStatus)
_add(Afn.ROUTE_SET, [1], [DOWN], "add slave nodes", AddNodes)
_add(Afn.ROUTE_SET, [2], [DOWN], "delete slave nodes", DeleteNodes)
_add(Afn.ROUTE_SET, [3], [DOWN], "fixed relay path", RelayPath)
_add(Afn.ROUTE_SET, [4], [DOWN], "route work mode", WorkMode)
_add(Afn.ROUTE_SET, [5], [DOWN], "activate registration", Registration)
_add(Afn.ROUTE_SET, [6], [DOWN], "stop registration")
_add(Afn.ROUTE_CONTROL, [1], [DOWN], "restart")
_add(Afn.ROUTE_CONTROL, [2], [DOWN], "pause")
_add(Afn.ROUTE_CONTROL, [3], [DOWN], "resume")
_add(Afn.ROUTE_FORWARD, [1], [DOWN], "monitor a slave node", Monitor)
_add(Afn.ROUTE_FORWARD, [1], [UP], "monitor answer", MonitorReply)
_add(Afn.ROUTE_READ, [1], [UP], "request read content", ReadRequest)
_add(Afn.ROUTE_READ, [1], [DOWN], "read content", ReadAnswer)
_add(Afn.ROUTE_READ, [2], [UP], "request concentrator time")
_add(Afn.ROUTE_READ, [2], [DOWN], "concentrator time", ConcentratorTime)
_add(Afn.ROUTE_READ, [3], [UP], "request delay correction", DelayCorrection)
_add(Afn.ROUTE_READ, [3], [DOWN], "corrected frame", CorrectedFrame)
_add(Afn.CONCURRENT, [1], BOTH, "concurrent read", ConcurrentRead)


def layout(afn: int, fn: int, direction: Direction) -> Layout:
    """The layout of a unit; FrameError when none is known here."""
    found = LAYOUTS.get((afn, fn, Direction(direction)))
    if found is None:
        raise FrameError(f"no known layout for AFN {afn:02X} F{fn} {Direction(direction).name.lower()}link")
    return found


def decode_unit(frame: Frame) -> Any:
    """The decoded data unit of ``frame`` (None for a unit without data)."""
    return layout(frame.afn, frame.fn, frame.direction).decode(frame.data)


def unit_frame(
    afn: int,
    fn: int,
    unit: Any = None,
    *,
    info: DownInfo | UpInfo | None = None,
    addresses: Addresses | None = None,
    prm: bool = True,
    mode: int = CommMode.HPLC,
) -> Frame:
    """A frame carrying ``unit`` (None: no data), downlink unless ``info`` is an
    :class:`UpInfo`; ``info`` defaults to a downlink R whose module flag matches
    ``addresses``. ``mode`` defaults to HPLC."""
    if info is None:
        info = DownInfo(module=addresses is not None, relay_level=0 if addresses is None else len(addresses.relays))
    direction = Direction.UP if isinstance(info, UpInfo) else Direction.DOWN
    data = b"" if unit is None else unit.encode()
    return Frame(direction, prm, mode, info, afn, fn, data, addresses)
