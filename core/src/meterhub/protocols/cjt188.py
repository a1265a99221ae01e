"""CJ/T 188-2004 frame codec (water, gas and heat meters), sans-I/O.

One frame shape serves every function (protocols README §2.1)::

    [FE FE ...] 68 T A0..A6 C L DATA(L bytes) CS 16
    DATA = DI (2 bytes) SER [payload]          normal frames
    DATA = SER ST0 ST1                         abnormal replies (C = function | C0h)

Unlike DL/T 645 there is no second 68h and no +33h scrambling. ``decode``/``encode``
turn one frame into a :class:`Frame` and back (the DATA field is kept exactly as sent,
so any frame re-encodes byte for byte); :class:`StreamDecoder` finds frames in whatever
bytes a line delivers. The builders and parsers below know what DATA holds for each
function; the meaning of the 901F metering data lives in :mod:`meterhub.protocols.cjt188_data`.
"""

from __future__ import annotations

import enum

import attrs

from ..errors import ChecksumError, FrameError, MeterError, TruncatedFrame, UnexpectedReply
from ..framing import FrameFinder, judge_by_decode
from .bcd import sum8

START = 0x68
END = 0x16
WAKE_UP = 0xFE
#: §2.3: a master sends at least 2 FE before a frame to wake the meter's UART; 3-4 are
#: common (the captures in the vectors show 0, 2, 3 and 4). Not part of the frame.
PREAMBLE = b"\xFE" * 4
HEADER_LEN = 11  #: 68 + T + 7 address bytes + C + L
OVERHEAD = 13  #: header + CS + 16: a frame is OVERHEAD + L bytes long
MAX_FRAME_LEN = OVERHEAD + 255  #: L is one byte
ADDRESS_LEN = 7

#: §2.1: AAh×7 is the "universal read" (万能读表) address; each AA byte matches any byte.
WILDCARD = "AA" * ADDRESS_LEN
WILDCARD_BYTE = 0xAA
#: §2.1 [U]: some masters also send T = AAh meaning "any meter type".
WILDCARD_TYPE = 0xAA

DIR_REPLY = 0x80  #: control bit D7: slave -> master
ABNORMAL = 0x40  #: control bit D6: abnormal (communication/error) answer
#: Control bits D5..D0: the function code. CJ/T 188-2004 has no follow-up-frame bit
#: (README §2.1 and the KingDa concentrator's CJT188_CTRStruct: 6 function bits, the
#: abnormal flag, DIR); unlike DL/T 645, every answer is one frame.
FUNCTION_MASK = 0x3F


class MeterType(enum.IntEnum):
    """The type byte T (README §2.1): the decade names the family, the unit the kind."""

    COLD_WATER = 0x10
    HOT_WATER = 0x11  #: 生活热水
    DRINKING_WATER = 0x12  #: 直饮水
    RECLAIMED_WATER = 0x13  #: 中水
    HEAT = 0x20  #: heat meter, heating
    COOLING = 0x21  #: heat meter, cooling
    GAS = 0x30
    OTHER = 0x40  #: 40h-49h: other / custom meters


class Family(str, enum.Enum):
    """What a meter measures, from its type byte: 10h-19h water, 20h-29h heat, 30h-39h gas, 40h-49h other."""

    WATER = "water"
    HEAT = "heat"
    GAS = "gas"
    OTHER = "other"


_FAMILIES = {0x1: Family.WATER, 0x2: Family.HEAT, 0x3: Family.GAS, 0x4: Family.OTHER}

_TYPE_NAMES = {
    MeterType.COLD_WATER: "cold water meter",
    MeterType.HOT_WATER: "hot water meter",
    MeterType.DRINKING_WATER: "drinking water meter",
    MeterType.RECLAIMED_WATER: "reclaimed water meter",
    MeterType.HEAT: "heat meter",
    MeterType.COOLING: "cooling meter",
    MeterType.GAS: "gas meter",
    MeterType.OTHER: "custom meter",
}

#: Every type byte the standard assigns (10h-19h, 20h-29h, 30h-39h, 40h-49h).
STANDARD_TYPES: tuple[int, ...] = tuple(decade << 4 | unit for decade in (1, 2, 3, 4) for unit in range(10))


def family_of(meter_type: int) -> Family:
    """The family of a type byte; ValueError for a byte outside 10h-49h (or a non-decimal unit)."""
    if meter_type not in STANDARD_TYPES:
        raise ValueError(f"meter type {meter_type:02X}h is not one of CJ/T 188's 10h-19h, 20h-29h, 30h-39h, 40h-49h")
    return _FAMILIES[meter_type >> 4]


def type_name(meter_type: int) -> str:
    """A readable name such as "heat meter (20h)"; reserved types are named by their family."""
    name = _TYPE_NAMES.get(meter_type)  # type: ignore[call-overload]
    if name is None:
        try:
            family = family_of(meter_type)
            name = "custom meter" if family is Family.OTHER else f"{family.value} meter"
        except ValueError:
            name = "meter of unknown type"
    return f"{name} ({meter_type:02X}h)"


class Control(enum.IntEnum):
    """CJ/T 188-2004 function codes (control bits D5..D0; README §2.1)."""

    READ_DATA = 0x01
    READ_ADDRESS = 0x03
    WRITE_DATA = 0x04
    READ_KEY_VERSION = 0x09  #: 读密钥版本号 (KingDa concentrator source)
    WRITE_ADDRESS = 0x15
    WRITE_SYNC_DATA = 0x16  #: 写机电同步数据 (write the mechanical-electronic sync value)


class DiOrder(str, enum.Enum):
    """Which DI byte goes first on the wire (README §2.4.1: both occur).

    ``MSB_FIRST`` sends 901F as ``90 1F`` (most vendors, and every vector of the read
    address 810A and valve A017 DIs); ``LSB_FIRST`` sends ``1F 90`` (the widely copied
    cnblogs sample and the meters built after it).
    """

    MSB_FIRST = "msb_first"
    LSB_FIRST = "lsb_first"


# Data identifiers, written as in the standard (first wire byte first in MSB_FIRST order).
DI_METERING = 0x901F  #: read metering data (the whole current record)
DI_HISTORY = tuple(range(0xD120, 0xD12C))  #: settlement data of the last 1..12 months [U]
DI_PRICE_TABLE = 0x8102
DI_SETTLEMENT_DAY = 0x8103
DI_READING_DAY = 0x8104
DI_PURCHASE = 0x8105
DI_KEY_VERSION = 0x8106
DI_ADDRESS = 0x810A  #: read address (C = 03h)
DI_WRITE_PRICE_TABLE = 0xA010
DI_WRITE_SETTLEMENT_DAY = 0xA011
DI_WRITE_READING_DAY = 0xA012
DI_WRITE_PURCHASE = 0xA013
DI_WRITE_KEY = 0xA014
DI_WRITE_TIME = 0xA015  #: standard time
DI_WRITE_SYNC = 0xA016
DI_VALVE = 0xA017  #: valve control (C = 04h), one data byte
DI_WRITE_ADDRESS = 0xA018  #: write address (C = 15h), seven address bytes
DI_FACTORY_ENABLE = 0xA019  #: 出厂启用

#: The DIs meterhub knows; used to tell the two wire orders apart when decoding.
KNOWN_DIS = frozenset(
    {DI_METERING, *DI_HISTORY, DI_PRICE_TABLE, DI_SETTLEMENT_DAY, DI_READING_DAY, DI_PURCHASE, DI_KEY_VERSION, DI_ADDRESS}
    | set(range(DI_WRITE_PRICE_TABLE, DI_FACTORY_ENABLE + 1))
)

VALVE_OPEN = 0x55  #: A017 data byte: open the valve (强制开阀)
VALVE_CLOSE = 0x99  #: A017 data byte: close the valve (强制关阀)
#: 66h/77h are one vendor's "free open/close" (自由开/关阀), not CJ/T 188-2004 (vectors).
VALVE_VENDOR_CODES = (0x66, 0x77)

# ST, the two status bytes (README §2.2 [U], the KingDa CJT188_ST_Stuct): the first byte
# sent is the low byte of the word. D1 D0 = valve: 00 open, 01 closed, 11 abnormal;
# 10 is read as abnormal too (one driver documents D1 as "valve fault"). D2 = battery low.
ST_VALVE_MASK = 0x0003
ST_VALVE_CLOSED = 0x0001
ST_VALVE_FAULT = 0x0002
ST_BATTERY_LOW = 0x0004


# --- the frame -----------------------------------------------------------------------


def _address(value: object) -> str:
    return str(value).strip().upper()


def _check_address(_instance: object, _attribute: object, value: str) -> None:
    if len(value) != 2 * ADDRESS_LEN or any(c not in "0123456789ABCDEF" for c in value):
        raise ValueError(f"CJ/T 188 address must be 14 hex characters (7 bytes, A6..A0), got {value!r}")


def _check_byte(_instance: object, attribute: attrs.Attribute, value: int) -> None:
    if not 0 <= value <= 0xFF:
        raise ValueError(f"{attribute.name} must fit in one byte, got {value!r}")


def _check_data(_instance: object, _attribute: object, value: bytes) -> None:
    if len(value) > 0xFF:
        raise ValueError(f"data field holds at most 255 bytes (L is one byte), got {len(value)}")


@attrs.frozen
class Frame:
    """One CJ/T 188 frame: meter type, address A6..A0 (as printed), control byte, DATA as sent."""

    meter_type: int = attrs.field(converter=int, validator=_check_byte)
    address: str = attrs.field(converter=_address, validator=_check_address)
    control: int = attrs.field(converter=int, validator=_check_byte)
    data: bytes = attrs.field(default=b"", converter=bytes, validator=_check_data)

    @property
    def function(self) -> int:
        """Function code, control bits D5..D0 (e.g. 01h read data)."""
        return self.control & FUNCTION_MASK

    @property
    def is_reply(self) -> bool:
        return bool(self.control & DIR_REPLY)

    @property
    def is_abnormal(self) -> bool:
        return bool(self.control & ABNORMAL)


def address_to_wire(address: str) -> bytes:
    """The 7 address bytes as sent, A0 first ("00201510270588" -> 88 05 27 10 15 20 00)."""
    address = _address(address)
    _check_address(None, None, address)
    return bytes.fromhex(address)[::-1]


def address_from_wire(data: bytes) -> str:
    """The address string (A6..A0, most significant first) of 7 bytes as sent."""
    return bytes(data[:ADDRESS_LEN])[::-1].hex().upper()


def address_matches(pattern: str, address: str) -> bool:
    """§2.1: an AA byte of ``pattern`` matches any byte of ``address``; the others must be equal."""
    return all(pattern[i : i + 2] in ("AA", address[i : i + 2]) for i in range(0, 2 * ADDRESS_LEN, 2))


def encode(frame: Frame, *, preamble: int = len(PREAMBLE)) -> bytes:
    """The wire bytes of ``frame``: ``preamble`` × FE, header, DATA, CS, 16."""
    if preamble < 0:
        raise ValueError(f"preamble cannot be negative, got {preamble}")
    body = bytearray((START, frame.meter_type))
    body += address_to_wire(frame.address)
    body += bytes((frame.control, len(frame.data)))
    body += frame.data
    body.append(sum8(body))  # §2.1: CS = sum from 68 through the last data byte, FE excluded
    body.append(END)
    return bytes((WAKE_UP,)) * preamble + bytes(body)


def _frame_from_body(body: bytes) -> Frame:
    return Frame(body[1], address_from_wire(body[2:9]), body[9], body[HEADER_LEN : HEADER_LEN + body[10]])


def _checksum_error(body: bytes) -> ChecksumError:
    return ChecksumError(
        f"CJ/T 188 checksum mismatch from {address_from_wire(body[2:9])} (type {body[1]:02X}h): "
        f"frame says {body[-2]:02X}, bytes sum to {sum8(body[:-2]):02X}"
    )


def decode(data: bytes) -> Frame:
    """Exactly one frame from ``data`` (leading FE wake-up bytes allowed).

    Raises :class:`TruncatedFrame` if bytes are missing, :class:`ChecksumError` on a
    wrong CS and :class:`FrameError` for anything else that is not one whole frame.
    """
    data = bytes(data)
    start = 0
    while start < len(data) and data[start] == WAKE_UP:  # §2.3: FE only before the 68
        start += 1
    body = data[start:]
    if not body:
        raise TruncatedFrame(f"no CJ/T 188 frame: {len(data)} wake-up byte(s) and nothing else")
    if body[0] != START:
        raise FrameError(f"CJ/T 188 frame must start with 68, got {body[0]:02X} at offset {start}")
    if len(body) < HEADER_LEN:
        raise TruncatedFrame(f"CJ/T 188 header needs {HEADER_LEN} bytes, got {len(body)}")
    total = OVERHEAD + body[10]
    if len(body) < total:
        raise TruncatedFrame(f"CJ/T 188 frame with L={body[10]} needs {total} bytes, got {len(body)}")
    if len(body) > total:
        raise FrameError(f"{len(body) - total} byte(s) after the end of a CJ/T 188 frame of {total} bytes")
    if body[-1] != END:
        raise FrameError(f"CJ/T 188 frame must end with 16, got {body[-1]:02X}")
    if sum8(body[:-2]) != body[-2]:
        raise _checksum_error(body)
    return _frame_from_body(body)


def _candidate_size(head: bytes) -> int | None:
    """A frame's length from its first bytes (None: not known yet, 0: no frame starts here)."""
    if head[0] != START:
        return 0
    return OVERHEAD + head[10] if len(head) >= HEADER_LEN else None  # L, the last header byte


class StreamDecoder(FrameFinder[Frame]):
    """Finds CJ/T 188 frames in a byte stream that may hold noise and damaged frames.

    Every 68h is a frame candidate; a candidate is judged when its last byte (known from
    L, never by searching for 16h) arrives. A bad candidate costs only its first byte, so
    a real frame hidden behind a false 68h is still found, and a complete valid frame is
    delivered even while an earlier candidate still waits for bytes. Decisions depend
    only on the bytes up to a frame's end, so feeding byte by byte gives exactly what
    feeding all at once gives. FE wake-up bytes are not counted as noise. ``feed``
    returns frames and ChecksumError instances for damaged ones, in order.
    """

    def __init__(self) -> None:
        super().__init__(
            _candidate_size, judge_by_decode(decode), lookahead=HEADER_LEN, wake_up=WAKE_UP, starts=bytes((START,))
        )


# --- the DATA field ------------------------------------------------------------------


def di_to_wire(di: int, order: DiOrder = DiOrder.MSB_FIRST) -> bytes:
    """The two DI bytes as sent: 901F -> ``90 1F`` (MSB_FIRST) or ``1F 90`` (LSB_FIRST)."""
    if not 0 <= di <= 0xFFFF:
        raise ValueError(f"a CJ/T 188 data identifier is 2 bytes, got {di:#x}")
    return di.to_bytes(2, "big" if DiOrder(order) is DiOrder.MSB_FIRST else "little")


def di_from_wire(data: bytes) -> tuple[int, DiOrder]:
    """The DI in two wire bytes and the order they came in.

    README §2.4.1: meters use both orders, sometimes answering in the other order than
    they were asked. A byte pair that is a known DI read one way (and not the other) is
    read that way; anything else is taken in the usual MSB_FIRST order.
    """
    if len(data) < 2:
        raise FrameError(f"data field of {len(data)} byte(s) is too short for a 2-byte data identifier")
    msb, lsb = int.from_bytes(data[:2], "big"), int.from_bytes(data[:2], "little")
    if msb not in KNOWN_DIS and lsb in KNOWN_DIS:
        return lsb, DiOrder.LSB_FIRST
    return msb, DiOrder.MSB_FIRST


def di_matches(data: bytes, di: int) -> bool:
    """Whether the first two bytes of ``data`` are ``di`` in either wire order."""
    return len(data) >= 2 and di in (int.from_bytes(data[:2], "big"), int.from_bytes(data[:2], "little"))


@attrs.frozen
class Body:
    """The DATA field of a normal frame: DI, the sequence byte SER and what follows."""

    di: int
    ser: int
    payload: bytes = b""
    di_order: DiOrder = DiOrder.MSB_FIRST

    def to_wire(self) -> bytes:
        return di_to_wire(self.di, self.di_order) + bytes((self.ser & 0xFF,)) + bytes(self.payload)


def parse_body(frame: Frame) -> Body:
    """DI, SER and payload of a normal frame; FrameError if DATA cannot hold DI and SER."""
    if len(frame.data) < 3:
        raise FrameError(
            f"CJ/T 188 frame from {frame.address} (C={frame.control:02X}) has {len(frame.data)} data byte(s); "
            "DI and SER need 3"
        )
    di, order = di_from_wire(frame.data)
    return Body(di, frame.data[2], frame.data[3:], order)


def make_frame(
    meter_type: int,
    address: str,
    control: int,
    di: int,
    ser: int,
    payload: bytes = b"",
    *,
    di_order: DiOrder = DiOrder.MSB_FIRST,
) -> Frame:
    """A frame whose DATA is DI + SER + payload."""
    if not 0 <= ser <= 0xFF:
        raise ValueError(f"SER is one byte, got {ser!r}")
    return Frame(meter_type, address, control, Body(di, ser, bytes(payload), DiOrder(di_order)).to_wire())


# --- the status word ST ----------------------------------------------------------------


def valve_state(status: int) -> str:
    """"open", "closed" or "abnormal" from ST bits D1 D0 (00 open, 01 closed, 1x abnormal)."""
    if status & ST_VALVE_FAULT:
        return "abnormal"
    return "closed" if status & ST_VALVE_CLOSED else "open"


def battery_low(status: int) -> bool:
    """ST bit D2: battery voltage low (欠压)."""
    return bool(status & ST_BATTERY_LOW)


def status_to_wire(status: int) -> bytes:
    """ST as sent: the low byte (valve, battery) first."""
    if not 0 <= status <= 0xFFFF:
        raise ValueError(f"ST is a 16-bit word, got {status!r}")
    return status.to_bytes(2, "little")


def status_from_wire(data: bytes) -> int:
    if len(data) != 2:
        raise FrameError(f"ST is 2 bytes, got {len(data)}")
    return int.from_bytes(data, "little")


def describe_status(status: int) -> str:
    """The standard's bits of ST in words, e.g. "valve closed, battery low (ST=0005h)"."""
    parts = [f"valve {valve_state(status)}", "battery low" if battery_low(status) else "battery ok"]
    return f"{', '.join(parts)} (ST={status:04X}h)"


# --- requests and replies ------------------------------------------------------------------


def read_request(meter_type: int, address: str, di: int, ser: int, *, di_order: DiOrder = DiOrder.MSB_FIRST) -> Frame:
    """Read data (01h): DATA = DI + SER (L = 3)."""
    return make_frame(meter_type, address, Control.READ_DATA, di, ser, di_order=di_order)


def read_reply(
    meter_type: int, address: str, di: int, ser: int, payload: bytes, *, di_order: DiOrder = DiOrder.MSB_FIRST
) -> Frame:
    """Normal read reply (81h): DATA = DI + SER + payload."""
    return make_frame(meter_type, address, Control.READ_DATA | DIR_REPLY, di, ser, payload, di_order=di_order)


def read_address_request(
    meter_type: int, ser: int, *, address: str = WILDCARD, di_order: DiOrder = DiOrder.MSB_FIRST
) -> Frame:
    """Read address (03h, DI 810A), normally to AA×7: the one meter of this type on the line."""
    return make_frame(meter_type, address, Control.READ_ADDRESS, DI_ADDRESS, ser, di_order=di_order)


def read_address_reply(
    meter_type: int, address: str, ser: int, *, di_order: DiOrder = DiOrder.MSB_FIRST, echo_address: bool = False
) -> Frame:
    """Reply 83h: DI 810A + SER (L = 3, the vectors' form); the address is the header's.

    ``echo_address`` adds the 7 address bytes to DATA too, as some meters do.
    """
    payload = address_to_wire(address) if echo_address else b""
    return make_frame(meter_type, address, Control.READ_ADDRESS | DIR_REPLY, DI_ADDRESS, ser, payload, di_order=di_order)


def write_request(
    meter_type: int, address: str, di: int, ser: int, value: bytes, *, di_order: DiOrder = DiOrder.MSB_FIRST
) -> Frame:
    """Write data (04h): DATA = DI + SER + value."""
    return make_frame(meter_type, address, Control.WRITE_DATA, di, ser, value, di_order=di_order)


def write_reply(
    meter_type: int, address: str, di: int, ser: int, status: int | None = None, *, di_order: DiOrder = DiOrder.MSB_FIRST
) -> Frame:
    """Normal write reply (84h): DATA = DI + SER, plus ST when the meter reports it."""
    payload = b"" if status is None else status_to_wire(status)
    return make_frame(meter_type, address, Control.WRITE_DATA | DIR_REPLY, di, ser, payload, di_order=di_order)


def valve_request(
    meter_type: int, address: str, ser: int, action: int, *, di_order: DiOrder = DiOrder.MSB_FIRST
) -> Frame:
    """Valve control: write DI A017 with one byte, 55h open or 99h close (L = 4)."""
    if not 0 <= action <= 0xFF:
        raise ValueError(f"valve action is one byte, got {action!r}")
    return write_request(meter_type, address, DI_VALVE, ser, bytes((action,)), di_order=di_order)


def write_address_request(
    meter_type: int, address: str, ser: int, new_address: str, *, di_order: DiOrder = DiOrder.MSB_FIRST
) -> Frame:
    """Write address (15h, DI A018): DATA = DI + SER + the new address, A0 first (L = 10) [U]."""
    return make_frame(meter_type, address, Control.WRITE_ADDRESS, DI_WRITE_ADDRESS, ser, address_to_wire(new_address), di_order=di_order)


def write_address_reply(meter_type: int, address: str, ser: int, *, di_order: DiOrder = DiOrder.MSB_FIRST) -> Frame:
    """Reply 95h: DI A018 + SER."""
    return make_frame(meter_type, address, Control.WRITE_ADDRESS | DIR_REPLY, DI_WRITE_ADDRESS, ser, di_order=di_order)


def abnormal_reply(meter_type: int, address: str, function: int, ser: int, status: int) -> Frame:
    """Abnormal reply to ``function``: control = function | C0h, DATA = SER + ST (L = 3)."""
    if not 0 <= ser <= 0xFF:
        raise ValueError(f"SER is one byte, got {ser!r}")
    control = (function & FUNCTION_MASK) | DIR_REPLY | ABNORMAL
    return Frame(meter_type, address, control, bytes((ser,)) + status_to_wire(status))


# --- parsing -------------------------------------------------------------------------------


@attrs.frozen
class Abnormal:
    """What an abnormal reply carries: the echoed SER and the status word ST (None if absent)."""

    ser: int | None
    status: int | None
    di: int | None = None  #: a DI, for meters that put one before SER


def parse_abnormal(frame: Frame) -> Abnormal:
    """SER and ST of an abnormal reply. The standard form is SER ST0 ST1 (KingDa's
    CJT8188_ErrACK_Struct); a DATA of DI SER ST0 ST1, with a known DI, is read too."""
    data = frame.data
    if len(data) >= 5:
        di, _order = di_from_wire(data)
        if di in KNOWN_DIS:
            return Abnormal(data[2], int.from_bytes(data[3:5], "little"), di)
    if len(data) >= 3:
        return Abnormal(data[0], int.from_bytes(data[1:3], "little"))
    return Abnormal(data[0] if data else None, None)


def raise_if_abnormal(frame: Frame) -> None:
    """Raise MeterError(code=ST, reason=...) if ``frame`` is an abnormal reply (D6 set)."""
    if not (frame.is_reply and frame.is_abnormal):
        return
    info = parse_abnormal(frame)
    if info.status is None:
        raise MeterError(
            f"meter {frame.address} answered abnormally to function {frame.function:02X}h (C={frame.control:02X}h) without a status word",
            reason="abnormal reply",
        )
    reason = describe_status(info.status)
    raise MeterError(
        f"meter {frame.address} answered abnormally to function {frame.function:02X}h: {reason}",
        code=info.status,
        reason=reason,
    )


def expect_reply(frame: Frame, function: int) -> None:
    """Check that ``frame`` answers ``function``; MeterError if abnormal, UnexpectedReply if not an answer."""
    if not frame.is_reply or frame.function != function & FUNCTION_MASK:
        raise UnexpectedReply(
            f"expected a reply to function {function & FUNCTION_MASK:02X}h, got control {frame.control:02X}h from {frame.address}"
        )
    raise_if_abnormal(frame)


def parse_reply(frame: Frame, function: int, di: int | None = None) -> Body:
    """The body of a normal reply to ``function`` (and, if given, to ``di`` in either order).

    An abnormal reply raises MeterError; another function or DI raises UnexpectedReply.
    """
    expect_reply(frame, function)
    body = parse_body(frame)
    if di is not None and not di_matches(frame.data, di):
        raise UnexpectedReply(f"meter {frame.address} answered DI {body.di:04X} when {di:04X} was asked for")
    return body


def parse_read_address_reply(frame: Frame) -> str:
    """The address a read-address reply (83h) announces: 7 address bytes after SER if the
    meter sends them, else its header address."""
    body = parse_reply(frame, Control.READ_ADDRESS, DI_ADDRESS)
    return address_from_wire(body.payload) if len(body.payload) == ADDRESS_LEN else frame.address


def parse_write_address_request(frame: Frame) -> tuple[Body, str]:
    """SER and the new address of a write-address request (15h)."""
    body = parse_body(frame)
    if body.di != DI_WRITE_ADDRESS or len(body.payload) != ADDRESS_LEN:
        raise FrameError(
            f"write address needs DI A018, SER and 7 address bytes, got DI {body.di:04X} and {len(body.payload)} byte(s)"
        )
    return body, address_from_wire(body.payload)
