"""DL/T 645-2007 and DL/T 645-1997 frame codec, sans-I/O.

Both editions share one frame::

    [FE FE FE FE] 68 A0..A5 68 C L DATA(L bytes, each +33h) CS 16

``decode``/``encode`` turn one frame into a :class:`Frame` and back; :class:`StreamDecoder`
finds frames in whatever bytes a serial line delivers. The request/reply builders and
parsers below know what the DATA field of each function holds; the meaning of a data
identifier's value lives in :mod:`meterhub.protocols.dlt645_data`.
"""

from __future__ import annotations

import enum
import functools
import re
from datetime import datetime
from typing import Any

import attrs

from ..errors import (
    ChecksumError,
    FrameError,
    MeterError,
    TruncatedFrame,
    UnexpectedReply,
)
from ..framing import FrameFinder, judge_by_decode
from .bcd import bcd_to_int, int_to_bcd, sum8

#: Address strings are 12 hex characters in nameplate order (A5..A0, most significant first).
BROADCAST = "999999999999"  #: §1.1: 99h×6, used with broadcast time (08) and freeze (16); nobody replies
WILDCARD = "AAAAAAAAAAAA"  #: §1.1: AAh bytes are wildcards; AA×6 reaches the one meter on a point-to-point link
PREAMBLE = b"\xFE" * 4  #: §1.1: wake-up bytes a master sends before a frame (not part of the frame)

START = 0x68
END = 0x16
WAKE_UP = 0xFE
SCRAMBLE = 0x33  #: §1.1: every DATA byte is sent as (byte + 33h) mod 256
HEADER_LEN = 10  #: 68 + 6 address bytes + 68 + C + L
OVERHEAD = 12  #: header + CS + 16: a frame is OVERHEAD + L bytes long
MAX_FRAME_LEN = OVERHEAD + 255  #: L is one byte

#: §1.6: a meter answers 20 ms <= Td <= 500 ms after the last byte of the request; the
#: master allows the longest, a scan waits at least the shortest, the simulator answers
#: in between. Defined here, once, for the driver and the simulator.
MIN_RESPONSE_DELAY = 0.020
MAX_RESPONSE_DELAY = 0.500
MAX_READ_DATA_LEN = 200  #: §1.1: L <= 200 for read replies in 2007 (longer payloads use follow-up frames)

DIR_REPLY = 0x80  #: control bit D7: slave -> master
ABNORMAL = 0x40  #: control bit D6: abnormal (error) answer
FOLLOWUP = 0x20  #: control bit D5: more frames follow
FUNCTION_MASK = 0x1F  #: control bits D4..D0: the function code

NO_FIELD = 0x99  #: §1.5: 99h in a freeze time field means "every" (wildcard)


class Control(enum.IntEnum):
    """DL/T 645-2007 function codes (control bits D4..D0)."""

    SECURITY = 0x03
    BROADCAST_TIME = 0x08
    READ = 0x11
    READ_FOLLOWUP = 0x12
    READ_ADDRESS = 0x13
    WRITE = 0x14
    WRITE_ADDRESS = 0x15
    FREEZE = 0x16
    CHANGE_BAUD = 0x17
    CHANGE_PASSWORD = 0x18
    CLEAR_DEMAND = 0x19
    CLEAR_METER = 0x1A
    CLEAR_EVENTS = 0x1B
    RELAY = 0x1C


class Control1997(enum.IntEnum):
    """DL/T 645-1997 function codes (§1.7; they differ from 2007 and must not be mixed)."""

    READ = 0x01
    READ_FOLLOWUP = 0x02
    REREAD = 0x03
    WRITE = 0x04
    BROADCAST_TIME = 0x08
    WRITE_ADDRESS = 0x0A
    CHANGE_BAUD = 0x0C
    CHANGE_PASSWORD = 0x0F
    CLEAR_DEMAND = 0x10


class RelayAction(enum.IntEnum):
    """N1 of a relay-control (1C) request (§1.5)."""

    TRIP = 0x1A  #: 拉闸
    CLOSE_PERMITTED = 0x1B  #: 合闸允许
    CLOSE = 0x1C  #: 直接合闸
    ALARM = 0x2A
    ALARM_RELEASE = 0x2B
    KEEP_POWER = 0x3A  #: 保电
    KEEP_POWER_RELEASE = 0x3B


#: §1.2, function 17: the Z byte naming the new baud rate.
BAUD_CODES: dict[int, int] = {600: 0x02, 1200: 0x04, 2400: 0x08, 4800: 0x10, 9600: 0x20, 19200: 0x40}

#: §1.3: the bits of the 2007 error word SERR.
ERROR_BITS: tuple[str, ...] = (
    "other error",
    "no requested data",
    "password error / unauthorised",
    "baud rate cannot be changed",
    "annual time-zone count exceeded",
    "daily time-slot count exceeded",
    "tariff count exceeded",
    "reserved bit 7",
)

#: DL/T 645-1997 error word bits (recollection of the standard's table, not cross-checked).
ERROR_BITS_1997: tuple[str, ...] = (
    "illegal data",
    "data identifier error",
    "password error",
    "reserved bit 3",
    "annual time-zone count exceeded",
    "daily time-slot count exceeded",
    "tariff count exceeded",
    "reserved bit 7",
)


# --- the frame -----------------------------------------------------------------------


_ADDRESS = re.compile(r"[0-9A-F]{12}")


def _check_address(_instance: object, _attribute: object, value: str) -> None:
    if not isinstance(value, str) or _ADDRESS.fullmatch(value) is None:
        raise ValueError(f"DL/T 645 address must be 12 hex characters (6 bytes), got {value!r}")


# Frame's converters also check (one call a field instead of a converter and a validator:
# frames are built for every request and reply). The errors are the ValueErrors they were.


def _address(value: object) -> str:
    """The address as stored: upper case, without surrounding blanks, 12 hex characters."""
    if type(value) is str:
        return _text_address(value)
    address = str(value).strip().upper()
    _check_address(None, None, address)
    return address


@functools.lru_cache(maxsize=1024)
def _text_address(value: str) -> str:
    """:func:`_address` of a str, kept: a master and a meter use the same few addresses
    over and over (a wrong one raises, and nothing is kept of it)."""
    address = value.strip().upper()
    _check_address(None, None, address)
    return address


def _control(value: Any) -> int:
    control = int(value)
    if not 0 <= control <= 0xFF:
        raise ValueError(f"control code must fit in one byte, got {control!r}")
    return control


def _data(value: Any) -> bytes:
    data = bytes(value)
    if len(data) > 0xFF:
        raise ValueError(f"data field holds at most 255 bytes (L is one byte), got {len(data)}")
    return data


@attrs.frozen
class Frame:
    """One DL/T 645 frame: address in nameplate order, control byte, de-scrambled data."""

    address: str = attrs.field(converter=_address)
    control: int = attrs.field(converter=_control)
    data: bytes = attrs.field(default=b"", converter=_data)

    @property
    def function(self) -> int:
        """Function code, control bits D4..D0 (e.g. 0x11 read)."""
        return self.control & FUNCTION_MASK

    @property
    def is_reply(self) -> bool:
        return bool(self.control & DIR_REPLY)

    @property
    def is_abnormal(self) -> bool:
        return bool(self.control & ABNORMAL)

    @property
    def has_followup(self) -> bool:
        return bool(self.control & FOLLOWUP)


def address_to_wire(address: str) -> bytes:
    """The 6 address bytes as sent, least significant first ("000000000161" -> 61 01 00 00 00 00)."""
    address = _address(address)
    _check_address(None, None, address)
    return bytes.fromhex(address)[::-1]


def address_from_wire(data: bytes) -> str:
    """The address string (nameplate order) of 6 bytes as sent."""
    return bytes(data[:6])[::-1].hex().upper()


#: §1.1's +33h (mod 256) and its inverse as translation tables: bytes.translate runs in C.
_SCRAMBLE = bytes((b + SCRAMBLE) & 0xFF for b in range(256))
_UNSCRAMBLE = bytes((b - SCRAMBLE) & 0xFF for b in range(256))


def scramble(data: bytes) -> bytes:
    """§1.1: DATA bytes go on the wire +33h, mod 256 (FF -> 32)."""
    return bytes(data).translate(_SCRAMBLE)


def unscramble(data: bytes) -> bytes:
    """§1.1: undo the +33h of :func:`scramble`, mod 256 (32 -> FF)."""
    return bytes(data).translate(_UNSCRAMBLE)


_WAKE_UP_BYTE = bytes((WAKE_UP,))


@functools.lru_cache(maxsize=1024)
def _header_start(address: str) -> bytes:
    """``68 A0..A5 68`` for a Frame's address (checked when the Frame was made); a master
    asks the same meters over and over, so it is kept."""
    return b"%c%b%c" % (START, bytes.fromhex(address)[::-1], START)


def encode(frame: Frame, *, preamble: int = 4) -> bytes:
    """The wire bytes of ``frame``: ``preamble`` × FE, header, scrambled data, CS, 16."""
    if preamble < 0:
        raise ValueError(f"preamble cannot be negative, got {preamble}")
    data = frame.data
    body = b"%b%c%c%b" % (_header_start(frame.address), frame.control, len(data), data.translate(_SCRAMBLE))
    # §1.1: CS covers the first 68 through the last data byte
    return b"%b%b%c%c" % (_WAKE_UP_BYTE * preamble, body, sum(body) & 0xFF, END)


#: The DI's size and the bytes from the second 68h to L of a read request, by edition.
_READ_REQUESTS = {
    2007: (4, bytes((START, Control.READ, 4))),
    1997: (2, bytes((START, Control1997.READ, 2))),
}


def encode_read_request(wire_address: bytes, di: int, *, preamble: int = 4, edition: int = 2007) -> bytes:
    """The wire bytes of a read request (2007: 11h, 1997: 01h) straight from the address
    as sent, without building and checking a :class:`Frame`: the request a master sends
    over and over.

    ``wire_address`` is :func:`address_to_wire` of the meter's address, worked out once
    per meter. The bytes are those of ``encode(read_request(address, di))`` (or of
    :func:`read_request_1997`) with the same ``preamble``; a DI that does not fit, a
    negative preamble or an address that is not 6 bytes is a ValueError, as there.
    """
    try:
        size, head = _READ_REQUESTS[edition]
    except KeyError:
        raise ValueError(f"DL/T 645 edition is 2007 or 1997, got {edition!r}") from None
    if len(wire_address) != 6:
        raise ValueError(f"a DL/T 645 address is 6 bytes on the wire, got {len(wire_address)}")
    if preamble < 0:
        raise ValueError(f"preamble cannot be negative, got {preamble}")
    try:
        di_wire = di.to_bytes(size, "little")
    except OverflowError:
        di_wire = _di_bytes(di, size)  # raises the ValueError of the frame builders
    body = b"%c%b%b%b" % (START, wire_address, head, di_wire.translate(_SCRAMBLE))
    return b"%b%b%c%c" % (_WAKE_UP_BYTE * preamble, body, sum(body) & 0xFF, END)


_new_frame = object.__new__
_set_address = Frame.__dict__["address"].__set__  # a slotted attrs class: its fields are slots
_set_control = Frame.__dict__["control"].__set__
_set_data = Frame.__dict__["data"].__set__


def _checked_frame(address: str, control: int, data: bytes) -> Frame:
    """``Frame(address, control, data)`` for fields that are already what its converters
    make (a decoded frame's: 12 upper-case hex digits, a byte, at most 255 bytes), without
    running them: a decoder makes one for every frame it reads."""
    frame = _new_frame(Frame)
    _set_address(frame, address)
    _set_control(frame, control)
    _set_data(frame, data)
    return frame


def _frame_from_body(body: bytes) -> Frame:
    """The Frame of a whole, checked frame from its first 68h on."""
    return _checked_frame(body[6:0:-1].hex().upper(), body[8], body[HEADER_LEN : HEADER_LEN + body[9]].translate(_UNSCRAMBLE))


def _checksum_error(body: bytes) -> ChecksumError:
    return ChecksumError(
        f"DL/T 645 checksum mismatch from {address_from_wire(body[1:7])}: "
        f"frame says {body[-2]:02X}, bytes sum to {sum8(body[:-2]):02X}"
    )


def decode(data: bytes) -> Frame:
    """Exactly one frame from ``data`` (leading FE wake-up bytes allowed).

    Raises :class:`TruncatedFrame` if bytes are missing, :class:`ChecksumError` on a
    wrong CS and :class:`FrameError` for anything else that is not one whole frame.
    """
    if type(data) is not bytes:
        data = bytes(data)
    body = data.lstrip(_WAKE_UP_BYTE)  # §1.1: FE only before the first 68
    start = len(data) - len(body)
    if not body:
        raise TruncatedFrame(f"no DL/T 645 frame: {len(data)} wake-up byte(s) and nothing else")
    if body[0] != START:
        raise FrameError(f"DL/T 645 frame must start with 68, got {body[0]:02X} at offset {start}")
    if len(body) > 7 and body[7] != START:
        raise FrameError(f"DL/T 645 second start byte 68 missing, got {body[7]:02X} at offset {start + 7}")
    if len(body) < HEADER_LEN:
        raise TruncatedFrame(f"DL/T 645 header needs {HEADER_LEN} bytes, got {len(body)}")
    total = OVERHEAD + body[9]
    if len(body) < total:
        raise TruncatedFrame(f"DL/T 645 frame with L={body[9]} needs {total} bytes, got {len(body)}")
    if len(body) > total:
        raise FrameError(f"{len(body) - total} byte(s) after the end of a DL/T 645 frame of {total} bytes")
    if body[-1] != END:
        raise FrameError(f"DL/T 645 frame must end with 16, got {body[-1]:02X}")
    if sum(body[:-2]) & 0xFF != body[-2]:  # sum8, inline: this runs for every frame read
        raise _checksum_error(body)
    return _frame_from_body(body)


def _candidate_size(head: bytes) -> int | None:
    """A frame's length from its first bytes (None: not known yet, 0: no frame starts here)."""
    if head[0] != START or (len(head) > 7 and head[7] != START):
        return 0  # no 68, or no second 68 seven bytes on: noise
    return OVERHEAD + head[9] if len(head) >= HEADER_LEN else None


class StreamDecoder(FrameFinder[Frame]):
    """Finds DL/T 645 frames in a byte stream that may hold noise and damaged frames.

    Every 68h is a frame candidate; a candidate is judged when its last byte (known from
    L, never by searching for 16h) arrives. A bad candidate costs only its first byte, so
    a real frame hidden behind a false 68h is still found, and a complete valid frame is
    delivered even while an earlier candidate still waits for bytes. Because decisions
    depend only on the bytes up to a frame's end, feeding byte by byte gives exactly what
    feeding all at once gives. FE wake-up bytes are not counted as noise. ``feed`` returns
    frames and ChecksumError instances for damaged ones, in order.
    """

    def __init__(self) -> None:
        super().__init__(
            _candidate_size, judge_by_decode(decode), lookahead=HEADER_LEN, wake_up=WAKE_UP, starts=bytes((START,))
        )


# --- data field helpers --------------------------------------------------------------


def _di_bytes(di: int, size: int = 4) -> bytes:
    """§1.4: a DI is sent DI0 first (00010000 -> 00 00 01 00 before scrambling)."""
    try:
        return di.to_bytes(size, "little")  # the usual case, without the checks below
    except (OverflowError, AttributeError):
        pass
    if not 0 <= di < 1 << (8 * size):
        raise ValueError(f"data identifier {di:#x} does not fit in {size} bytes")
    return di.to_bytes(size, "little")


def _di_from(data: bytes, size: int = 4) -> int:
    if len(data) < size:
        raise FrameError(f"data field of {len(data)} byte(s) is too short for a {size}-byte data identifier")
    return int.from_bytes(data[:size], "little")


def _fixed(value: bytes, size: int, what: str) -> bytes:
    value = bytes(value)
    if len(value) != size:
        raise ValueError(f"{what} must be {size} bytes, got {len(value)}")
    return value


def _auth(password: bytes, level: int, operator: bytes | None) -> bytes:
    """§1.5: PA (privilege level), P0P1P2 (password), then C0..C3 (operator code) if given."""
    if not 0 <= level <= 0xFF:
        raise ValueError(f"password level must fit in one byte, got {level}")
    out = bytes((level,)) + _fixed(password, 3, "password")
    if operator is not None:
        out += _fixed(operator, 4, "operator code")
    return out


def _bcd_fields(*fields: int) -> bytes:
    return b"".join(int_to_bcd(f, 1) for f in fields)


def datetime_to_wire(when: datetime) -> bytes:
    """``ss mm hh DD MM YY`` as BCD (the order of broadcast time and relay deadlines)."""
    if not 2000 <= when.year <= 2099:
        raise ValueError(f"DL/T 645 years are two digits (2000-2099), got {when.year}")
    return _bcd_fields(when.second, when.minute, when.hour, when.day, when.month, when.year % 100)


def datetime_from_wire(data: bytes) -> datetime:
    """The inverse of :func:`datetime_to_wire`; raises FrameError for an impossible time."""
    if len(data) != 6:
        raise FrameError(f"a date-time field is 6 bytes, got {len(data)}")
    try:
        ss, mm, hh, day, month, yy = (bcd_to_int(data[i : i + 1]) for i in range(6))
        return datetime(2000 + yy, month, day, hh, mm, ss)
    except ValueError as exc:
        raise FrameError(f"not a date-time (ss mm hh DD MM YY): {data.hex(' ').upper()}: {exc}") from None


# --- requests and replies, 2007 ----------------------------------------------------------


def _built(address: object, control: int, data: bytes) -> Frame:
    """``Frame(address, control, data)`` for a builder whose control byte is a valid one
    of this module's (the address and the data are still converted and checked)."""
    frame = _new_frame(Frame)
    _set_address(frame, _text_address(address) if type(address) is str else _address(address))
    _set_control(frame, control)
    _set_data(frame, data if type(data) is bytes and len(data) <= 0xFF else _data(data))
    return frame


_READ = int(Control.READ)
_READ_REPLY = _READ | DIR_REPLY


def read_request(address: str, di: int) -> Frame:
    """Read data (11h): DATA = DI, DI0 first."""
    return _built(address, _READ, _di_bytes(di))


def read_reply(address: str, di: int, payload: bytes, *, followup: bool = False) -> Frame:
    """Normal read reply: 91h, or B1h when follow-up frames carry the rest."""
    return _built(address, (_READ_REPLY | FOLLOWUP) if followup else _READ_REPLY, _di_bytes(di) + bytes(payload))


def followup_request(address: str, di: int, seq: int) -> Frame:
    """Read follow-up (12h): DATA = DI + SEQ, the number of the frame wanted (1 = the first follow-up)."""
    return Frame(address, Control.READ_FOLLOWUP, _di_bytes(di) + bytes((seq & 0xFF,)))


def followup_reply(address: str, di: int, payload: bytes, seq: int, *, more: bool) -> Frame:
    """Follow-up reply: 92h (last) or B2h (more follow); DATA = DI + payload + SEQ."""
    control = Control.READ_FOLLOWUP | DIR_REPLY | (FOLLOWUP if more else 0)
    return Frame(address, control, _di_bytes(di) + bytes(payload) + bytes((seq & 0xFF,)))


def abnormal_reply(address: str, function: int, error: int) -> Frame:
    """Abnormal reply to ``function``: control = function | C0h, DATA = SERR."""
    return Frame(address, (function & FUNCTION_MASK) | DIR_REPLY | ABNORMAL, bytes((error & 0xFF,)))


def normal_reply(address: str, function: int, data: bytes = b"") -> Frame:
    """Plain normal reply to ``function`` (e.g. 94h after a write, 9Ch after relay control)."""
    return Frame(address, (function & FUNCTION_MASK) | DIR_REPLY, data)


def read_address_request() -> Frame:
    """Read communication address (13h) with the wildcard address, L=0 (point-to-point only)."""
    return Frame(WILDCARD, Control.READ_ADDRESS)


def read_address_reply(address: str) -> Frame:
    """Reply 93h: the meter's own address, also as the data field."""
    return Frame(address, Control.READ_ADDRESS | DIR_REPLY, address_to_wire(address))


def write_address_request(new_address: str) -> Frame:
    """Write communication address (15h) to the one meter on the line (wildcard address)."""
    return Frame(WILDCARD, Control.WRITE_ADDRESS, address_to_wire(new_address))


def write_request(
    address: str,
    di: int,
    value: bytes,
    *,
    password: bytes = b"\x00\x00\x00",
    level: int = 2,
    operator: bytes = b"\x00\x00\x00\x00",
) -> Frame:
    """Write data (14h): DATA = DI + PA + P0P1P2 + C0..C3 + value (§1.5; bytes in wire order)."""
    return Frame(address, Control.WRITE, _di_bytes(di) + _auth(password, level, operator) + bytes(value))


def broadcast_time(when: datetime, *, address: str = BROADCAST) -> Frame:
    """Broadcast time sync (08h): ``ss mm hh DD MM YY`` of the meter's local time; no reply.

    The wall-clock fields of ``when`` are sent as they are (meters keep local time).
    """
    return Frame(address, Control.BROADCAST_TIME, datetime_to_wire(when))


def freeze_request(
    address: str,
    minute: int | None = None,
    hour: int | None = None,
    day: int | None = None,
    month: int | None = None,
) -> Frame:
    """Freeze (16h): ``mm hh DD MM``; None is 99h, "every" (99 99 99 99 = freeze now)."""
    fields = (minute, hour, day, month)
    return Frame(address, Control.FREEZE, bytes(NO_FIELD if f is None else int_to_bcd(f, 1)[0] for f in fields))


def change_baud_request(address: str, baudrate: int) -> Frame:
    """Change baud rate (17h): DATA = Z, the code of the new rate (600..19200)."""
    try:
        code = BAUD_CODES[baudrate]
    except KeyError:
        raise ValueError(f"DL/T 645 cannot switch to {baudrate} Bd; choose one of {sorted(BAUD_CODES)}") from None
    return Frame(address, Control.CHANGE_BAUD, bytes((code,)))


def change_password_request(
    address: str,
    new_password: bytes,
    *,
    new_level: int = 2,
    password: bytes = b"\x00\x00\x00",
    level: int = 0,
) -> Frame:
    """Change password (18h): DATA = DI 04000C(new_level+1) + PA0 P0..P2 (authorising) + PAN PN0..PN2 (new).

    The DI naming the level's password slot is from recollection of the standard [U].
    """
    di = 0x04000C00 | (new_level + 1)
    return Frame(address, Control.CHANGE_PASSWORD, _di_bytes(di) + _auth(password, level, None) + _auth(new_password, new_level, None))


def clear_demand_request(
    address: str, *, password: bytes = b"\x00\x00\x00", level: int = 2, operator: bytes = b"\x00\x00\x00\x00"
) -> Frame:
    """Clear maximum demand (19h): DATA = PA + P0P1P2 + C0..C3."""
    return Frame(address, Control.CLEAR_DEMAND, _auth(password, level, operator))


def clear_meter_request(
    address: str, *, password: bytes = b"\x00\x00\x00", level: int = 2, operator: bytes = b"\x00\x00\x00\x00"
) -> Frame:
    """Meter clear (1Ah, energy registers to zero): DATA = PA + P0P1P2 + C0..C3."""
    return Frame(address, Control.CLEAR_METER, _auth(password, level, operator))


def clear_events_request(
    address: str,
    di: int = 0xFFFFFFFF,
    *,
    password: bytes = b"\x00\x00\x00",
    level: int = 2,
    operator: bytes = b"\x00\x00\x00\x00",
) -> Frame:
    """Event clear (1Bh): DATA = PA + P0P1P2 + C0..C3 + DI of the event (FFFFFFFF = all events)."""
    return Frame(address, Control.CLEAR_EVENTS, _auth(password, level, operator) + _di_bytes(di))


def relay_request(
    address: str,
    action: RelayAction | int,
    *,
    valid_until: datetime | None = None,
    password: bytes = b"\x00\x00\x00",
    level: int = 2,
    operator: bytes = b"\x00\x00\x00\x00",
) -> Frame:
    """Relay control (1Ch): DATA = PA + P(3) + C(4) + N1 (action) + N2 (00) + deadline ``ss mm hh DD MM YY``.

    ``valid_until=None`` sends a deadline of zeros (no validity time), as cheap meters expect.
    """
    deadline = bytes(6) if valid_until is None else datetime_to_wire(valid_until)
    return Frame(address, Control.RELAY, _auth(password, level, operator) + bytes((int(action) & 0xFF, 0)) + deadline)


# --- parsing -------------------------------------------------------------------------------


def error_reasons(serr: int) -> list[str]:
    """Names of the bits set in a 2007 error word SERR (§1.3)."""
    return [name for bit, name in enumerate(ERROR_BITS) if serr >> bit & 1]


def error_reasons_1997(serr: int) -> list[str]:
    """Names of the bits set in a 1997 error word."""
    return [name for bit, name in enumerate(ERROR_BITS_1997) if serr >> bit & 1]


def raise_if_abnormal(frame: Frame, *, edition: int = 2007) -> None:
    """Raise MeterError(code=SERR, reason=...) if ``frame`` is an abnormal reply (D6 set)."""
    if not (frame.is_reply and frame.is_abnormal):
        return
    if not frame.data:
        raise MeterError(f"meter {frame.address} answered abnormally (C={frame.control:02X}) without an error word")
    serr = frame.data[0]
    names = error_reasons(serr) if edition == 2007 else error_reasons_1997(serr)
    reason = ", ".join(names) or "no error bit set"
    raise MeterError(
        f"meter {frame.address} answered abnormally to function {frame.function:02X}h: {reason} (SERR={serr:02X}h)",
        code=serr,
        reason=reason,
    )


def expect_reply(frame: Frame, function: int, *, edition: int = 2007) -> None:
    """Check that ``frame`` answers ``function``; MeterError if abnormal, UnexpectedReply if not an answer."""
    if not frame.is_reply or frame.function != function & FUNCTION_MASK:
        raise UnexpectedReply(f"expected a reply to function {function:02X}h, got control {frame.control:02X}h from {frame.address}")
    raise_if_abnormal(frame, edition=edition)


def parse_read_reply(frame: Frame) -> tuple[int, bytes]:
    """``(di, payload)`` of a read reply (91h/B1h); an abnormal reply (D1h) raises MeterError."""
    expect_reply(frame, Control.READ)
    return _di_from(frame.data), frame.data[4:]


def parse_followup_reply(frame: Frame) -> tuple[int, bytes, int]:
    """``(di, payload, seq)`` of a follow-up reply (92h/B2h); ``frame.has_followup`` says if more follow."""
    expect_reply(frame, Control.READ_FOLLOWUP)
    if len(frame.data) < 5:
        raise FrameError(f"follow-up reply needs DI and SEQ (5 bytes), got {len(frame.data)}")
    return _di_from(frame.data), frame.data[4:-1], frame.data[-1]


def parse_read_request(frame: Frame) -> int:
    """The DI a read request (11h) asks for (extra load-record bytes after it are ignored)."""
    return _di_from(frame.data)


def parse_followup_request(frame: Frame) -> tuple[int, int]:
    """``(di, seq)`` of a follow-up request (12h)."""
    if len(frame.data) != 5:
        raise FrameError(f"follow-up request holds DI and SEQ (5 bytes), got {len(frame.data)}")
    return _di_from(frame.data), frame.data[4]


def parse_read_address_reply(frame: Frame) -> str:
    """The address announced by a read-address reply (93h): its data field, else its header."""
    expect_reply(frame, Control.READ_ADDRESS)
    return address_from_wire(frame.data) if len(frame.data) == 6 else frame.address


@attrs.frozen
class Credentials:
    """PA (privilege level), password P0P1P2 and operator code C0..C3, in wire order."""

    level: int
    password: bytes
    operator: bytes = b""


def _credentials(data: bytes, *, operator: bool = True) -> tuple[Credentials, bytes]:
    size = 8 if operator else 4
    if len(data) < size:
        raise FrameError(f"authorisation fields need {size} bytes, got {len(data)}")
    return Credentials(data[0], data[1:4], data[4:8] if operator else b""), data[size:]


@attrs.frozen
class WriteRequest:
    """A parsed write (14h) request."""

    di: int
    credentials: Credentials
    value: bytes


def parse_write_request(frame: Frame) -> WriteRequest:
    """DI, credentials and value bytes of a write request (14h)."""
    creds, value = _credentials(frame.data[4:])
    return WriteRequest(_di_from(frame.data), creds, value)


@attrs.frozen
class RelayRequest:
    """A parsed relay-control (1Ch) request."""

    action: int  #: a RelayAction value (kept an int: unknown codes must be answerable too)
    credentials: Credentials
    valid_until: datetime | None


def parse_relay_request(frame: Frame) -> RelayRequest:
    """Action, credentials and validity deadline of a relay-control request (1Ch)."""
    creds, rest = _credentials(frame.data)
    if len(rest) != 8:
        raise FrameError(f"relay control needs N1..N8 (8 bytes) after the credentials, got {len(rest)}")
    deadline = rest[2:8]
    return RelayRequest(rest[0], creds, None if deadline == bytes(6) else datetime_from_wire(deadline))


def parse_credentials(frame: Frame) -> tuple[Credentials, bytes]:
    """Credentials of a clear request (19h/1Ah/1Bh) and what follows them (1Bh: the event DI)."""
    return _credentials(frame.data)


def parse_broadcast_time(frame: Frame) -> datetime:
    """The time carried by a broadcast-time (08h) frame."""
    return datetime_from_wire(frame.data)


def parse_freeze_request(frame: Frame) -> tuple[int | None, int | None, int | None, int | None]:
    """``(minute, hour, day, month)`` of a freeze request (16h); None where 99h ("every")."""
    if len(frame.data) != 4:
        raise FrameError(f"freeze request holds mm hh DD MM (4 bytes), got {len(frame.data)}")
    try:
        fields = [None if b == NO_FIELD else bcd_to_int(bytes((b,))) for b in frame.data]
    except ValueError as exc:
        raise FrameError(f"freeze time is not BCD: {exc}") from None
    return fields[0], fields[1], fields[2], fields[3]


def parse_change_baud_request(frame: Frame) -> int:
    """The baud rate a change-baud request (17h) asks for."""
    for rate, code in BAUD_CODES.items():
        if frame.data == bytes((code,)):
            return rate
    raise FrameError(f"change-baud request with unknown Z byte {frame.data.hex().upper() or '(none)'}")


# --- DL/T 645-1997 -------------------------------------------------------------------------


def read_request_1997(address: str, di: int) -> Frame:
    """1997 read (01h): DATA = 2-byte DI, DI0 first (9010 -> 10 90)."""
    return Frame(address, Control1997.READ, _di_bytes(di, 2))


def read_reply_1997(address: str, di: int, payload: bytes, *, followup: bool = False) -> Frame:
    """1997 read reply: 81h, or A1h when follow-up frames carry the rest."""
    control = Control1997.READ | DIR_REPLY | (FOLLOWUP if followup else 0)
    return Frame(address, control, _di_bytes(di, 2) + bytes(payload))


def followup_request_1997(address: str, di: int) -> Frame:
    """1997 read follow-up (02h): DATA = DI."""
    return Frame(address, Control1997.READ_FOLLOWUP, _di_bytes(di, 2))


def followup_reply_1997(address: str, di: int, payload: bytes, *, more: bool) -> Frame:
    """1997 follow-up reply: 82h (last) or A2h (more follow); DATA = DI + payload."""
    control = Control1997.READ_FOLLOWUP | DIR_REPLY | (FOLLOWUP if more else 0)
    return Frame(address, control, _di_bytes(di, 2) + bytes(payload))


def write_request_1997(address: str, di: int, value: bytes, *, password: bytes = b"\x00\x00\x00", level: int = 2) -> Frame:
    """1997 write (04h): DATA = DI(2) + PA + P0P1P2 + value (no operator code)."""
    return Frame(address, Control1997.WRITE, _di_bytes(di, 2) + _auth(password, level, None) + bytes(value))


def parse_read_reply_1997(frame: Frame) -> tuple[int, bytes]:
    """``(di, payload)`` of a 1997 read reply (81h/A1h); abnormal (C1h) raises MeterError."""
    expect_reply(frame, Control1997.READ, edition=1997)
    return _di_from(frame.data, 2), frame.data[2:]


def parse_followup_reply_1997(frame: Frame) -> tuple[int, bytes]:
    """``(di, payload)`` of a 1997 follow-up reply (82h/A2h)."""
    expect_reply(frame, Control1997.READ_FOLLOWUP, edition=1997)
    return _di_from(frame.data, 2), frame.data[2:]


def parse_read_request_1997(frame: Frame) -> int:
    """The 2-byte DI a 1997 read request (01h) asks for."""
    return _di_from(frame.data, 2)
