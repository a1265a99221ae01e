"""Wired M-Bus (EN 13757-2 link layer, EN 13757-3 application layer) codec, sans-I/O.

Four telegram formats share the line (EN 13757-2 §5, the FT 1.2 format of IEC 60870-5-2)::

    E5                                   single character (acknowledge)
    10 C A CS 16                         short frame
    68 03 03 68 C A CI CS 16             control frame (a long frame without data)
    68 L L 68 C A CI DATA CS 16          long frame, L = 3 + len(DATA), CS = sum(C..DATA) mod 256

``decode``/``encode`` turn one frame into :class:`Ack`, :class:`ShortFrame` or
:class:`LongFrame` and back; :class:`StreamDecoder` finds frames in whatever bytes a
serial line delivers. ``parse_user_data``/``encode_user_data`` turn the DATA of a
variable-data response (CI 72h/7Ah/78h) into a :class:`Telegram` of :class:`Record` s and
back: DIF/DIFE/VIF/VIFE, BCD, integer, real and variable-length data, with every value an
exact :class:`~decimal.Decimal` (``12.565`` m3, never a float artefact).

Secondary addresses are 16 hex digits in libmbus's order (``mbus_frame_get_secondary_address``,
also what pyMeterBus prints): the 8 identification digits as printed on the meter (most
significant first), then the manufacturer's two bytes, the version and the medium *as they
appear on the wire* (manufacturer LSB first). The PAD water meter with wire header
``78 56 34 12 24 40 01 07`` is ``1234567824400107``. In a selection mask an F nibble of the
identification and FFFF/FF in the other fields are wildcards (EN 13757-3 §11.4 [S]).
"""

from __future__ import annotations

import enum
import functools
import math
import struct
from collections.abc import Iterable
from datetime import date, datetime, time
from decimal import Decimal
from typing import TypeAlias

import attrs

from meterhub.errors import ChecksumError, FrameError, TruncatedFrame
from meterhub.framing import FrameFinder, judge_by_decode
from meterhub.protocols.bcd import bcd_to_int, int_to_bcd, sum8

# --- link layer (EN 13757-2) -----------------------------------------------------------

ACK = 0xE5  #: §5.2 single character: the slave acknowledges SND_NKE, SND_UD, a selection
SHORT_START = 0x10
LONG_START = 0x68
STOP = 0x16
SHORT_LEN = 5  #: 10 C A CS 16
LONG_OVERHEAD = 6  #: 68 L L 68 ... CS 16 around the L bytes C, A, CI, DATA
MIN_L = 3  #: C + A + CI: the control frame
MAX_L = 255  #: L is one byte
MAX_DATA = MAX_L - 3  #: 252 bytes of user data in one long frame
MAX_FRAME_LEN = MAX_L + LONG_OVERHEAD

#: C-field bits (EN 13757-2 §5.4 / IEC 60870-5-2). Master to slave: PRM set, FCB
#: alternates between successive requests, FCV says FCB is valid. Slave to master: ACD
#: (access demand: class 1 data waiting) and DFC (data flow control: slave busy).
PRM = 0x40
FCB = 0x20
FCV = 0x10
ACD = 0x20
DFC = 0x10
FUNCTION_MASK = 0x0F


class Control(enum.IntEnum):
    """C-field values of EN 13757-2 §5.4 (with FCB clear; OR in :data:`FCB` to toggle)."""

    SND_NKE = 0x40  #: link reset; to 253 it also deselects a selected slave
    SND_UD = 0x53  #: send user data (select, set address, ...); 0x73 with FCB
    REQ_UD1 = 0x5A  #: request class 1 (alarm) data; 0x7A with FCB
    REQ_UD2 = 0x5B  #: request class 2 (meter) data; 0x7B with FCB
    RSP_UD = 0x08  #: the slave's answer to REQ_UD1/2; 0x18/0x28/0x38 with DFC/ACD


#: Short-frame C fields a master sends (libmbus ``mbus_frame_verify`` accepts exactly these).
SHORT_CONTROLS = frozenset({0x40, 0x5A, 0x7A, 0x5B, 0x7B})
#: Long/control-frame C fields: SND_UD with and without FCB, RSP_UD with ACD/DFC bits.
LONG_CONTROLS = frozenset({0x53, 0x73, 0x08, 0x18, 0x28, 0x38})

#: A field (EN 13757-2 §5.5): 0 = unconfigured slave, 1..250 primary addresses.
PRIMARY_MAX = 250
ADDRESS_NETWORK = 253  #: the slave selected by secondary addressing (EN 13757-3 §11.4)
BROADCAST_REPLY = 254  #: every slave answers (collisions if there are several)
BROADCAST = 255  #: every slave acts, none answers

# --- application layer (EN 13757-3) ----------------------------------------------------

CI_APPLICATION_RESET = 0x50
CI_DATA_SEND = 0x51  #: SND_UD data to the slave (e.g. set the primary address)
CI_SELECT = 0x52  #: selection of a slave by secondary address
CI_APPLICATION_ERROR = 0x70  #: RSP_UD reporting an application error (one status byte)
CI_RSP_LONG = 0x72  #: variable data response with the 12-byte header
CI_RSP_SHORT = 0x7A  #: variable data response with the 4-byte header
CI_RSP_NONE = 0x78  #: variable data response without a header
RESPONSE_CIS = (CI_RSP_LONG, CI_RSP_SHORT, CI_RSP_NONE)

LONG_HEADER_LEN = 12  #: ID 4, manufacturer 2, version, medium, access no, status, signature 2
SHORT_HEADER_LEN = 4  #: access no, status, signature 2
SELECT_LEN = 8  #: ID 4, manufacturer 2, version, medium

#: Application error codes of a CI 70h response [U: recollection of EN 13757-3 Table 9].
APPLICATION_ERRORS = {
    0x00: "unspecified error",
    0x01: "unimplemented CI field",
    0x02: "buffer too long, truncated",
    0x03: "too many records",
    0x04: "premature end of record",
    0x05: "more than 10 DIFEs",
    0x06: "more than 10 VIFEs",
    0x08: "application too busy for handling the readout request",
    0x09: "too many readouts",
}

#: EN 13757-3 Table 3, device type (medium) of the header [V for 02/04/07, rest U].
MEDIA = {
    0x00: "other",
    0x01: "oil",
    0x02: "electricity",
    0x03: "gas",
    0x04: "heat (outlet)",
    0x05: "steam",
    0x06: "warm water (30-90 °C)",
    0x07: "water",
    0x08: "heat cost allocator",
    0x09: "compressed air",
    0x0A: "cooling load meter (outlet)",
    0x0B: "cooling load meter (inlet)",
    0x0C: "heat (inlet)",
    0x0D: "heat / cooling load meter",
    0x0E: "bus / system component",
    0x0F: "unknown medium",
    0x15: "hot water (>= 90 °C)",
    0x16: "cold water",
    0x17: "dual register (hot/cold) water meter",
    0x18: "pressure",
    0x19: "A/D converter",
}

# DIF (EN 13757-3 §6.3): bit 7 extension, bit 6 storage number LSB, bits 5-4 function,
# bits 3-0 data field coding. DIFE: bit 7 extension, bit 6 subunit (device), bits 5-4
# tariff, bits 3-0 storage number; each further DIFE carries the next-higher bits.
EXTENSION = 0x80
DIF_STORAGE_LSB = 0x40
MAX_DIFE = 10  #: §6.3.5: at most 10 DIFEs
MAX_VIFE = 10  #: §6.4.4: at most 10 VIFEs
DIF_MANUFACTURER = 0x0F  #: manufacturer specific data follow, to the end of the telegram
DIF_MORE_FOLLOWS = 0x1F  #: as 0F, and more records follow in the next telegram
DIF_IDLE_FILLER = 0x2F  #: a filler byte, not a record


class Function(enum.IntEnum):
    """The function field (DIF bits 5-4)."""

    INSTANTANEOUS = 0
    MAXIMUM = 1
    MINIMUM = 2
    ERROR_STATE = 3  #: value during error state


class Coding(enum.IntEnum):
    """The data field coding (DIF bits 3-0) of EN 13757-3 Table 4."""

    NONE = 0x0
    INT8 = 0x1
    INT16 = 0x2
    INT24 = 0x3
    INT32 = 0x4
    REAL32 = 0x5
    INT48 = 0x6
    INT64 = 0x7
    SELECTION = 0x8  #: selection for readout (no data)
    BCD2 = 0x9
    BCD4 = 0xA
    BCD6 = 0xB
    BCD8 = 0xC
    VARIABLE = 0xD  #: length in the first data byte (LVAR)
    BCD12 = 0xE

    @property
    def size(self) -> int | None:
        """Bytes of data, None for variable length."""
        return _CODING_SIZE[self]

    @property
    def is_integer(self) -> bool:
        return self in _INTEGER_CODINGS

    @property
    def is_bcd(self) -> bool:
        return self in _BCD_CODINGS


_INTEGER_CODINGS = frozenset((Coding.INT8, Coding.INT16, Coding.INT24, Coding.INT32, Coding.INT48, Coding.INT64))
_BCD_CODINGS = frozenset((Coding.BCD2, Coding.BCD4, Coding.BCD6, Coding.BCD8, Coding.BCD12))
_CODING_SIZE = {
    Coding.NONE: 0, Coding.INT8: 1, Coding.INT16: 2, Coding.INT24: 3, Coding.INT32: 4, Coding.REAL32: 4,
    Coding.INT48: 6, Coding.INT64: 8, Coding.SELECTION: 0, Coding.BCD2: 1, Coding.BCD4: 2, Coding.BCD6: 3,
    Coding.BCD8: 4, Coding.VARIABLE: None, Coding.BCD12: 6,
}

Value: TypeAlias = Decimal | str | date | datetime | time | bytes | None

# --- frames -----------------------------------------------------------------------------


def _byte(name: str):  # attrs validator factory
    def check(_instance: object, _attribute: object, value: int) -> None:
        if not 0 <= value <= 0xFF:
            raise ValueError(f"M-Bus {name} must fit in one byte, got {value!r}")

    return check


@attrs.frozen
class Ack:
    """The single character E5: a slave's acknowledgement."""


@attrs.frozen
class ShortFrame:
    """``10 C A CS 16``: SND_NKE, REQ_UD1, REQ_UD2 from the master."""

    control: int = attrs.field(converter=int, validator=_byte("C field"))
    address: int = attrs.field(converter=int, validator=_byte("A field"))

    @property
    def function(self) -> int:
        return self.control & FUNCTION_MASK

    @property
    def fcb(self) -> bool:
        return bool(self.control & FCB)

    @property
    def fcv(self) -> bool:
        return bool(self.control & FCV)


@attrs.frozen
class LongFrame:
    """``68 L L 68 C A CI DATA CS 16`` (a control frame when DATA is empty)."""

    control: int = attrs.field(converter=int, validator=_byte("C field"))
    address: int = attrs.field(converter=int, validator=_byte("A field"))
    ci: int = attrs.field(converter=int, validator=_byte("CI field"))
    data: bytes = attrs.field(default=b"", converter=bytes)

    def __attrs_post_init__(self) -> None:
        if len(self.data) > MAX_DATA:
            raise ValueError(f"a long frame carries at most {MAX_DATA} data bytes (L is one byte), got {len(self.data)}")

    @property
    def function(self) -> int:
        return self.control & FUNCTION_MASK

    @property
    def is_response(self) -> bool:
        """RSP_UD (C = 08h with any ACD/DFC bits)."""
        return self.control & ~(ACD | DFC) == Control.RSP_UD

    @property
    def fcb(self) -> bool:
        return bool(self.control & FCB) and bool(self.control & PRM)

    @property
    def acd(self) -> bool:
        return self.is_response and bool(self.control & ACD)

    @property
    def dfc(self) -> bool:
        return self.is_response and bool(self.control & DFC)


Frame: TypeAlias = Ack | ShortFrame | LongFrame


def encode(frame: Frame) -> bytes:
    """The wire bytes of one frame."""
    if isinstance(frame, Ack):
        return bytes((ACK,))
    if isinstance(frame, ShortFrame):
        # §5.3: the short frame's checksum is C + A mod 256.
        return bytes((SHORT_START, frame.control, frame.address, sum8(bytes((frame.control, frame.address))), STOP))
    if isinstance(frame, LongFrame):
        body = bytes((frame.control, frame.address, frame.ci)) + frame.data
        length = len(body)
        return bytes((LONG_START, length, length, LONG_START)) + body + bytes((sum8(body), STOP))
    raise TypeError(f"not an M-Bus frame: {frame!r}")


def _short_error(control: int, where: int) -> FrameError | None:
    if control not in SHORT_CONTROLS:
        return FrameError(f"M-Bus short frame with unknown C field {control:02X} at offset {where}")
    return None


def _long_error(control: int, where: int) -> FrameError | None:
    if control not in LONG_CONTROLS:
        return FrameError(f"M-Bus long frame with unknown C field {control:02X} at offset {where}")
    return None


def _checksum_error(kind: str, address: int, said: int, summed: int) -> ChecksumError:
    return ChecksumError(f"M-Bus {kind} frame checksum mismatch (A={address}): frame says {said:02X}, bytes sum to {summed:02X}")


def decode(data: bytes) -> Frame:
    """Exactly one frame from ``data``.

    Raises :class:`TruncatedFrame` if bytes are missing, :class:`ChecksumError` on a wrong
    CS and :class:`FrameError` for anything else that is not one whole frame.
    """
    data = bytes(data)
    if not data:
        raise TruncatedFrame("no M-Bus frame: no bytes")
    first = data[0]
    if first == ACK:
        if len(data) > 1:
            raise FrameError(f"{len(data) - 1} byte(s) after the single character E5")
        return Ack()
    if first == SHORT_START:
        if len(data) > 1 and (err := _short_error(data[1], 1)) is not None:
            raise err
        if len(data) < SHORT_LEN:
            raise TruncatedFrame(f"M-Bus short frame needs {SHORT_LEN} bytes, got {len(data)}")
        if len(data) > SHORT_LEN:
            raise FrameError(f"{len(data) - SHORT_LEN} byte(s) after the end of an M-Bus short frame")
        if data[4] != STOP:
            raise FrameError(f"M-Bus short frame must end with 16, got {data[4]:02X}")
        summed = sum8(data[1:3])
        if summed != data[3]:
            raise _checksum_error("short", data[2], data[3], summed)
        return ShortFrame(data[1], data[2])
    if first == LONG_START:
        if len(data) > 1 and data[1] < MIN_L:
            raise FrameError(f"M-Bus long frame with L={data[1]} (at least {MIN_L}: C, A and CI)")
        if len(data) > 2 and data[2] != data[1]:
            raise FrameError(f"M-Bus long frame length bytes differ: {data[1]:02X} and {data[2]:02X}")
        if len(data) > 3 and data[3] != LONG_START:
            raise FrameError(f"M-Bus long frame second start byte 68 missing, got {data[3]:02X} at offset 3")
        if len(data) > 4 and (err := _long_error(data[4], 4)) is not None:
            raise err
        if len(data) < 4:
            raise TruncatedFrame(f"M-Bus long frame header needs 4 bytes, got {len(data)}")
        total = data[1] + LONG_OVERHEAD
        if len(data) < total:
            raise TruncatedFrame(f"M-Bus long frame with L={data[1]} needs {total} bytes, got {len(data)}")
        if len(data) > total:
            raise FrameError(f"{len(data) - total} byte(s) after the end of an M-Bus long frame of {total} bytes")
        if data[-1] != STOP:
            raise FrameError(f"M-Bus long frame must end with 16, got {data[-1]:02X}")
        body = data[4:-2]
        summed = sum8(body)
        if summed != data[-2]:
            raise _checksum_error("long", body[1], data[-2], summed)
        return LongFrame(body[0], body[1], body[2], body[3:])
    raise FrameError(f"M-Bus frame must start with E5, 10 or 68, got {first:02X}")


# --- request builders -----------------------------------------------------------------


def snd_nke(address: int) -> ShortFrame:
    """SND_NKE: link reset (and, to 253, deselect); the slave answers E5."""
    return ShortFrame(Control.SND_NKE, address)


def req_ud2(address: int, *, fcb: bool = True) -> ShortFrame:
    """REQ_UD2 with FCV set: 7Bh with FCB, 5Bh without. Toggle ``fcb`` between the
    requests of a multi-telegram read; repeating it asks the slave to repeat its answer."""
    return ShortFrame(Control.REQ_UD2 | (FCB if fcb else 0), address)


def req_ud1(address: int, *, fcb: bool = True) -> ShortFrame:
    """REQ_UD1 (class 1, alarm data): 7Ah with FCB, 5Ah without."""
    return ShortFrame(Control.REQ_UD1 | (FCB if fcb else 0), address)


def select_request(mask: str, *, fcb: bool = True) -> LongFrame:
    """SND_UD to 253 with CI 52h: select the slave(s) matching ``mask`` (16 hex digits,
    F nibbles in the identification and FFFF/FF in the other fields are wildcards).

    libmbus (``mbus_frame_select_secondary_pack``) and pyMeterBus both send C = 73h.
    """
    return LongFrame(Control.SND_UD | (FCB if fcb else 0), ADDRESS_NETWORK, CI_SELECT, secondary_to_wire(mask))


def parse_select(frame: LongFrame) -> str:
    """The 16-digit mask of a selection frame (CI 52h)."""
    if frame.ci != CI_SELECT:
        raise FrameError(f"not a selection: CI {frame.ci:02X} (a selection is CI 52)")
    if len(frame.data) < SELECT_LEN:
        raise TruncatedFrame(f"a selection carries {SELECT_LEN} bytes (ID, manufacturer, version, medium), got {len(frame.data)}")
    return secondary_from_wire(frame.data[:SELECT_LEN])


# --- secondary addresses ---------------------------------------------------------------

_HEX = frozenset("0123456789ABCDEF")
SECONDARY_LEN = 16
WILDCARD = "F" * SECONDARY_LEN  #: selects every slave


def normalize_secondary(text: str) -> str:
    """16 upper-case hex digits (spaces, dots and dashes between groups are dropped)."""
    value = "".join(c for c in str(text).upper() if c not in " .-_")
    if len(value) != SECONDARY_LEN or any(c not in _HEX for c in value):
        raise ValueError(
            f"an M-Bus secondary address is {SECONDARY_LEN} hex digits (ID 8, manufacturer 4, version 2, medium 2), got {text!r}"
        )
    return value


def secondary_to_wire(address: str) -> bytes:
    """The 8 bytes of a header or selection: the ID least significant byte first, the
    manufacturer, version and medium in the order written (libmbus's convention)."""
    address = normalize_secondary(address)
    return bytes.fromhex(address[:8])[::-1] + bytes.fromhex(address[8:])


def secondary_from_wire(data: bytes) -> str:
    """The inverse of :func:`secondary_to_wire`."""
    data = bytes(data[:SELECT_LEN])
    return data[:4][::-1].hex().upper() + data[4:].hex().upper()


def secondary_matches(mask: str, address: str) -> bool:
    """Whether ``address`` is selected by ``mask``.

    EN 13757-3 §11.4 [S]: in the identification every F nibble is a wildcard; the
    manufacturer (FFFF), version (FF) and medium (FF) are wildcards only as a whole.
    """
    mask, address = normalize_secondary(mask), normalize_secondary(address)
    if any(m not in ("F", a) for m, a in zip(mask[:8], address[:8])):
        return False
    for lo, hi in ((8, 12), (12, 14), (14, 16)):
        field = mask[lo:hi]
        if field != "F" * (hi - lo) and field != address[lo:hi]:
            return False
    return True


# --- manufacturer code ----------------------------------------------------------------


def manufacturer_code(letters: str) -> int:
    """EN 13757-3 §5.6 / EN 62056-21: three letters A..Z packed as 5-bit groups (c - 64)."""
    text = str(letters).upper()
    if len(text) != 3 or any(not "A" <= c <= "Z" for c in text):
        raise ValueError(f"an M-Bus manufacturer is three letters A-Z, got {letters!r}")
    return (ord(text[0]) - 64) << 10 | (ord(text[1]) - 64) << 5 | (ord(text[2]) - 64)


def manufacturer_letters(code: int) -> str:
    """The three letters of a manufacturer code (groups outside 1..26 become @ [ \\ ] ^ _)."""
    return "".join(chr(64 + (code >> shift & 0x1F)) for shift in (10, 5, 0))


# --- the telegram ------------------------------------------------------------------------


def _id(value: object) -> str:
    return str(value).strip().upper().rjust(8, "0")


def _check_id(_instance: object, _attribute: object, value: str) -> None:
    if len(value) != 8 or any(c not in _HEX for c in value):
        raise ValueError(f"an M-Bus identification number is 8 (BCD) digits, got {value!r}")


@attrs.frozen
class LongHeader:
    """The 12-byte header of a CI 72h response (EN 13757-3 §6.1).

    ``id`` is the identification number as printed (8 digits, BCD on the wire; a few
    meters use hex digits, kept as such); ``manufacturer_code`` the 16-bit code whose
    letters :attr:`manufacturer` gives.
    """

    id: str = attrs.field(converter=_id, validator=_check_id)
    manufacturer_code: int = attrs.field(converter=int, validator=attrs.validators.and_(attrs.validators.ge(0), attrs.validators.le(0xFFFF)))
    version: int = attrs.field(default=0, converter=int, validator=_byte("version"))
    medium: int = attrs.field(default=0, converter=int, validator=_byte("medium"))
    access_no: int = attrs.field(default=0, converter=int, validator=_byte("access number"))
    status: int = attrs.field(default=0, converter=int, validator=_byte("status"))
    signature: int = attrs.field(default=0, converter=int, validator=attrs.validators.and_(attrs.validators.ge(0), attrs.validators.le(0xFFFF)))

    @property
    def manufacturer(self) -> str:
        return manufacturer_letters(self.manufacturer_code)

    @property
    def medium_name(self) -> str:
        return MEDIA.get(self.medium, f"reserved medium {self.medium:02X}")

    @property
    def secondary_address(self) -> str:
        """The 16-digit secondary address (see the module docstring for the order)."""
        return secondary_from_wire(self.to_wire()[:SELECT_LEN])

    def to_wire(self) -> bytes:
        return (
            bytes.fromhex(self.id)[::-1]
            + self.manufacturer_code.to_bytes(2, "little")
            + bytes((self.version, self.medium, self.access_no, self.status))
            + self.signature.to_bytes(2, "little")
        )

    @classmethod
    def from_wire(cls, data: bytes) -> LongHeader:
        return cls(
            data[:4][::-1].hex().upper(),
            int.from_bytes(data[4:6], "little"),
            data[6], data[7], data[8], data[9],
            int.from_bytes(data[10:12], "little"),
        )


@attrs.frozen
class ShortHeader:
    """The 4-byte header of a CI 7Ah response: access number, status, signature."""

    access_no: int = attrs.field(default=0, converter=int, validator=_byte("access number"))
    status: int = attrs.field(default=0, converter=int, validator=_byte("status"))
    signature: int = attrs.field(default=0, converter=int, validator=attrs.validators.and_(attrs.validators.ge(0), attrs.validators.le(0xFFFF)))

    def to_wire(self) -> bytes:
        return bytes((self.access_no, self.status)) + self.signature.to_bytes(2, "little")

    @classmethod
    def from_wire(cls, data: bytes) -> ShortHeader:
        return cls(data[0], data[1], int.from_bytes(data[2:4], "little"))


@attrs.frozen
class IdleFiller:
    """DIF 2Fh: a filler byte between records (kept so a telegram re-encodes exactly)."""


@attrs.frozen
class Record:
    """One data record: its wire form (DIB, VIB, data) and what it means.

    ``value`` is in ``unit`` with the VIF's power of ten applied: a Decimal for numbers,
    a str for text, a date/datetime for time points, bytes for binary data, None when
    there is no value (``note`` says why). A VIF or VIFE that is not in our tables gives
    ``known=False``: the record is kept with the raw number (no scaling) and no unit.
    """

    dib: bytes  #: DIF and DIFEs as on the wire
    vib: bytes  #: VIF, plain-text unit and VIFEs as on the wire
    data: bytes  #: the data field as on the wire (LVAR byte included)
    coding: Coding
    function: Function
    storage: int
    tariff: int
    subunit: int
    quantity: str  #: e.g. "volume", "energy"; "" for an unknown VIF
    unit: str  #: e.g. "m3", "Wh", "°C"; "" when dimensionless or unknown
    value: Value
    description: str
    known: bool = True
    #: combinable VIFEs that change the meaning ("per hour", "date/time of ..."), in order
    modifiers: tuple[str, ...] = ()
    #: EN 13757-3 Table 18 record error (VIFE 00h-1Fh from a slave); 0 = "no error"
    error: int | None = None
    #: a VIFE 7Fh said the rest of the VIB and the data are manufacturer specific
    manufacturer_specific: bool = False
    note: str = ""

    @property
    def is_plain(self) -> bool:
        """Instantaneous, storage 0, tariff 0, subunit 0, a known unit and nothing that
        changes its meaning: the value an OBIS code without qualifiers stands for."""
        return (
            self.function is Function.INSTANTANEOUS
            and self.storage == 0
            and self.tariff == 0
            and self.subunit == 0
            and self.known
            and not self.modifiers
            and not self.manufacturer_specific
            and not self.error
        )

    @property
    def error_text(self) -> str:
        return RECORD_ERRORS.get(self.error or 0, f"reserved record error {self.error:02X}") if self.error else ""

    def to_wire(self) -> bytes:
        return self.dib + self.vib + self.data


Item: TypeAlias = Record | IdleFiller


@attrs.frozen
class Telegram:
    """The user data of one variable-data response (CI 72h, 7Ah or 78h).

    ``items`` are the records in order, idle fillers included; :attr:`records` leaves
    the fillers out. ``tail`` is the special DIF 0Fh or 1Fh that ends the records (None
    if there is none) and ``manufacturer_data`` the bytes after it. DIF 1Fh means more
    records follow in the next telegram.
    """

    header: LongHeader | ShortHeader | None = None
    items: tuple[Item, ...] = attrs.field(default=(), converter=tuple)
    tail: int | None = None
    manufacturer_data: bytes = attrs.field(default=b"", converter=bytes)

    def __attrs_post_init__(self) -> None:
        if self.tail not in (None, DIF_MANUFACTURER, DIF_MORE_FOLLOWS):
            raise ValueError(f"a telegram's records end with DIF 0F or 1F, not {self.tail!r}")
        if self.manufacturer_data and self.tail is None:
            raise ValueError("manufacturer data need DIF 0F or 1F in front of them")

    @property
    def ci(self) -> int:
        if isinstance(self.header, LongHeader):
            return CI_RSP_LONG
        if isinstance(self.header, ShortHeader):
            return CI_RSP_SHORT
        return CI_RSP_NONE

    @property
    def records(self) -> tuple[Record, ...]:
        return tuple(i for i in self.items if isinstance(i, Record))

    @property
    def more_follows(self) -> bool:
        """DIF 1Fh: the slave has more records for the next REQ_UD2 (FCB toggled)."""
        return self.tail == DIF_MORE_FOLLOWS


def parse_user_data(frame: LongFrame) -> Telegram:
    """The telegram of a variable-data RSP_UD; FrameError for anything else or malformed."""
    if frame.ci not in RESPONSE_CIS:
        if frame.ci == CI_APPLICATION_ERROR:
            raise FrameError(f"application error response (CI 70): {application_error(frame)}")
        raise FrameError(f"CI {frame.ci:02X} is not a variable data response (72, 7A or 78)")
    data = frame.data
    header: LongHeader | ShortHeader | None = None
    if frame.ci == CI_RSP_LONG:
        if len(data) < LONG_HEADER_LEN:
            raise TruncatedFrame(f"CI 72 needs the {LONG_HEADER_LEN}-byte header, got {len(data)} data byte(s)")
        header, start = LongHeader.from_wire(data[:LONG_HEADER_LEN]), LONG_HEADER_LEN
    elif frame.ci == CI_RSP_SHORT:
        if len(data) < SHORT_HEADER_LEN:
            raise TruncatedFrame(f"CI 7A needs the {SHORT_HEADER_LEN}-byte header, got {len(data)} data byte(s)")
        header, start = ShortHeader.from_wire(data[:SHORT_HEADER_LEN]), SHORT_HEADER_LEN
    else:
        start = 0
    items, tail, tail_data = parse_records(data, start)
    return Telegram(header, items, tail, tail_data)


def application_error(frame: LongFrame) -> str:
    """What a CI 70h response says (its first data byte, if any)."""
    if not frame.data:
        return "no error code"
    code = frame.data[0]
    return f"{APPLICATION_ERRORS.get(code, 'reserved')} (code {code:02X})"


def encode_user_data(telegram: Telegram) -> bytes:
    """The DATA of a response frame carrying ``telegram`` (its CI is ``telegram.ci``)."""
    out = bytearray(telegram.header.to_wire() if telegram.header is not None else b"")
    for item in telegram.items:
        out += bytes((DIF_IDLE_FILLER,)) if isinstance(item, IdleFiller) else item.to_wire()
    if telegram.tail is not None:
        out.append(telegram.tail)
        out += telegram.manufacturer_data
    return bytes(out)


def rsp_ud(address: int, telegram: Telegram, *, acd: bool = False, dfc: bool = False) -> LongFrame:
    """The RSP_UD long frame a slave answers with."""
    control = Control.RSP_UD | (ACD if acd else 0) | (DFC if dfc else 0)
    return LongFrame(control, address, telegram.ci, encode_user_data(telegram))


# --- data records ------------------------------------------------------------------------


def parse_records(data: bytes, start: int = 0) -> tuple[tuple[Item, ...], int | None, bytes]:
    """The items from ``data[start:]``, the special DIF ending them and the bytes after it.

    Offsets in error messages count from the first byte of ``data`` (after CI).
    """
    if type(data) is not bytes:
        data = bytes(data)  # once, so that every slice below is bytes
    items: list[Item] = []
    pos = start
    while pos < len(data):
        dif = data[pos]
        if dif == DIF_IDLE_FILLER:
            items.append(IdleFiller())
            pos += 1
            continue
        if dif in (DIF_MANUFACTURER, DIF_MORE_FOLLOWS):
            return tuple(items), dif, bytes(data[pos + 1 :])
        if dif & 0x0F == 0x0F:
            # §6.3.3: 3Fh..6Fh reserved, 7Fh global readout (a master's request, never an answer).
            raise FrameError(f"reserved special DIF {dif:02X} at data offset {pos}")
        record, pos = _parse_record(data, pos)
        items.append(record)
    return tuple(items), None, b""


def _need(data: bytes, pos: int, count: int, what: str, start: int) -> None:
    if pos + count > len(data):
        raise FrameError(f"record at data offset {start}: {what} runs past the end of the telegram ({len(data) - pos} of {count} byte(s))")


def _extensions(data: bytes, pos: int, head: int, what: str, limit: int, start: int) -> int:
    """The position after the extension bytes that follow ``head`` (a DIF or VIF): each
    byte with bit 7 set announces one more (§6.3.5, §6.4.4), at most ``limit`` of them."""
    last, count = head, 0
    while last & EXTENSION:
        _need(data, pos, 1, what, start)
        count += 1
        if count > limit:
            raise FrameError(f"record at data offset {start}: more than {limit} {what}s")
        last = data[pos]
        pos += 1
    return pos


def _parse_record(data: bytes, start: int) -> tuple[Record, int]:
    """The record at ``data[start]`` (``data`` is bytes) and the position after it.

    The checks are :func:`_need` and :func:`_extensions`, called only where they have
    something to say (an extension bit set, too few bytes left): a record is parsed for
    every record of every telegram read.
    """
    end = len(data)
    pos = start + 1
    if data[start] & EXTENSION:
        pos = _extensions(data, pos, data[start], "DIFE", MAX_DIFE, start)
    dib = data[start:pos]
    vib_start = pos
    if pos >= end:
        _need(data, pos, 1, "VIF", start)
    vif = data[pos]
    pos += 1
    if vif & 0x7F == 0x7C:  # §6.4.2: plain-text unit: a length byte and that many characters
        _need(data, pos, 1, "plain-text VIF length", start)
        text_len = data[pos]
        _need(data, pos + 1, text_len, "plain-text VIF", start)
        pos += 1 + text_len
    if vif & EXTENSION:
        pos = _extensions(data, pos, vif, "VIFE", MAX_VIFE, start)
    vib = data[vib_start:pos]
    fields = _dib_fields(dib)
    coding = fields[0]
    if coding is Coding.VARIABLE:
        _need(data, pos, 1, "LVAR", start)
        size = _lvar_size(data[pos], start)
        _need(data, pos + 1, size, "variable-length data", start)
        size += 1
    else:
        size = _CODING_SIZE[coding] or 0
        if pos + size > end:
            _need(data, pos, size, f"{coding.name} data", start)
    return _interpret(dib, vib, data[pos : pos + size], fields), pos + size


def _lvar_size(lvar: int, start: int) -> int:
    """EN 13757-3 §6.3.4 Table 5: the data bytes a variable-length field holds after LVAR."""
    if lvar <= 0xBF:
        return lvar  # 8-bit text
    if 0xC0 <= lvar <= 0xC9 or 0xD0 <= lvar <= 0xD9:
        return lvar & 0x0F  # positive / negative BCD, 2 digits a byte
    if 0xE0 <= lvar <= 0xEF:
        return lvar - 0xE0  # binary number
    if 0xF0 <= lvar <= 0xF4:
        return 4 * (lvar - 0xEC)  # binary, 16..32 bytes
    if lvar == 0xF5:
        return 48
    if lvar == 0xF6:
        return 64
    raise FrameError(f"record at data offset {start}: reserved LVAR {lvar:02X}")


def record_storage(dib: bytes) -> tuple[int, int, int]:
    """(storage, tariff, subunit) of a DIB: §6.3.5, the DIF gives storage bit 0 and
    every DIFE the next 4 storage, 2 tariff and 1 subunit bits."""
    storage = 1 if dib[0] & DIF_STORAGE_LSB else 0
    tariff = subunit = 0
    for k, dife in enumerate(dib[1:]):
        storage |= (dife & 0x0F) << (1 + 4 * k)
        tariff |= (dife >> 4 & 0x03) << (2 * k)
        subunit |= (dife >> 6 & 0x01) << k
    return storage, tariff, subunit


@functools.lru_cache(maxsize=1024)
def _dib_fields(dib: bytes) -> tuple[Coding, Function, int, int, int]:
    """``(coding, function, storage, tariff, subunit)`` of a DIB. Kept by its bytes: a
    meter sends the same DIBs in every telegram (bounded; the values are immutable)."""
    storage, tariff, subunit = record_storage(dib)
    return Coding(dib[0] & 0x0F), Function(dib[0] >> 4 & 0x03), storage, tariff, subunit


def build_dib(coding: Coding, *, function: Function = Function.INSTANTANEOUS, storage: int = 0, tariff: int = 0, subunit: int = 0) -> bytes:
    """The shortest DIF+DIFEs for these fields (the inverse of :func:`record_storage`)."""
    if min(storage, tariff, subunit) < 0:
        raise ValueError("storage, tariff and subunit cannot be negative")
    dif = int(coding) | int(function) << 4 | (DIF_STORAGE_LSB if storage & 1 else 0)
    storage >>= 1
    difes: list[int] = []
    while storage or tariff or subunit:
        difes.append((storage & 0x0F) | (tariff & 0x03) << 4 | (subunit & 0x01) << 6)
        storage, tariff, subunit = storage >> 4, tariff >> 2, subunit >> 1
    if len(difes) > MAX_DIFE:
        raise ValueError(f"storage/tariff/subunit need more than {MAX_DIFE} DIFEs")
    out = [dif] + difes
    for i in range(len(out) - 1):
        out[i] |= EXTENSION
    return bytes(out)


# --- VIF tables --------------------------------------------------------------------------


@attrs.frozen
class _Vif:
    """What a VIF (or extension-table VIFE) says: quantity, unit, power of ten, value kind."""

    quantity: str
    unit: str = ""
    exponent: int = 0
    kind: str = "number"  #: "number", "date" (type G), "datetime" (type F/I), "time" (type J)
    description: str = ""


_DURATION_UNITS = ("s", "min", "h", "d")
_TEMPERATURE = "°C"


def _primary_vif(code: int) -> _Vif | None:
    """EN 13757-3 Table 10 (primary VIFs), ``code`` without the extension bit."""
    n = code & 0x07
    nn = code & 0x03
    if code <= 0x07:
        return _Vif("energy", "Wh", n - 3, description="Energy")
    if code <= 0x0F:
        return _Vif("energy", "J", n, description="Energy")
    if code <= 0x17:
        return _Vif("volume", "m3", n - 6, description="Volume")
    if code <= 0x1F:
        return _Vif("mass", "kg", n - 3, description="Mass")
    if code <= 0x23:
        return _Vif("on_time", _DURATION_UNITS[nn], description="On time")
    if code <= 0x27:
        return _Vif("operating_time", _DURATION_UNITS[nn], description="Operating time")
    if code <= 0x2F:
        return _Vif("power", "W", n - 3, description="Power")
    if code <= 0x37:
        return _Vif("power", "J/h", n, description="Power")
    if code <= 0x3F:
        return _Vif("volume_flow", "m3/h", n - 6, description="Volume flow")
    if code <= 0x47:
        return _Vif("volume_flow", "m3/min", n - 7, description="Volume flow")
    if code <= 0x4F:
        return _Vif("volume_flow", "m3/s", n - 9, description="Volume flow")
    if code <= 0x57:
        return _Vif("mass_flow", "kg/h", n - 3, description="Mass flow")
    if code <= 0x5B:
        return _Vif("flow_temperature", _TEMPERATURE, nn - 3, description="Flow temperature")
    if code <= 0x5F:
        return _Vif("return_temperature", _TEMPERATURE, nn - 3, description="Return temperature")
    if code <= 0x63:
        return _Vif("temperature_difference", "K", nn - 3, description="Temperature difference")
    if code <= 0x67:
        return _Vif("external_temperature", _TEMPERATURE, nn - 3, description="External temperature")
    if code <= 0x6B:
        return _Vif("pressure", "bar", nn - 3, description="Pressure")
    if code == 0x6C:
        return _Vif("date", kind="date", description="Time point (date)")
    if code == 0x6D:
        return _Vif("datetime", kind="datetime", description="Time point (date and time)")
    if code == 0x6E:
        return _Vif("hca_units", description="Units for H.C.A.")
    if code == 0x6F:
        return None  # reserved
    if code <= 0x73:
        return _Vif("averaging_duration", _DURATION_UNITS[nn], description="Averaging duration")
    if code <= 0x77:
        return _Vif("actuality_duration", _DURATION_UNITS[nn], description="Actuality duration")
    if code == 0x78:
        return _Vif("fabrication_number", description="Fabrication number")
    if code == 0x79:
        return _Vif("enhanced_identification", description="Enhanced identification")
    if code == 0x7A:
        return _Vif("bus_address", description="Bus address")
    if code == 0x7E:
        return _Vif("any", description="Any VIF (readout selection)")
    return None  # 7B/7C/7D/7F are handled by the caller


#: EN 13757-3 Table 14, the second extension table (VIF FDh), by VIFE code.
_FD_TABLE: dict[int, _Vif] = {
    **{c: _Vif("credit", "currency", (c & 3) - 3, description="Credit") for c in range(0x04)},
    **{c: _Vif("debit", "currency", (c & 3) - 3, description="Debit") for c in range(0x04, 0x08)},
    0x08: _Vif("access_number", description="Access number (transmission count)"),
    0x09: _Vif("medium", description="Device type (medium)"),
    0x0A: _Vif("manufacturer", description="Manufacturer"),
    0x0B: _Vif("parameter_set", description="Parameter set identification"),
    0x0C: _Vif("model_version", description="Model / version"),
    0x0D: _Vif("hardware_version", description="Hardware version"),
    0x0E: _Vif("firmware_version", description="Firmware version"),
    0x0F: _Vif("software_version", description="Software version"),
    0x10: _Vif("customer_location", description="Customer location"),
    0x11: _Vif("customer", description="Customer"),
    0x12: _Vif("access_code_user", description="Access code user"),
    0x13: _Vif("access_code_operator", description="Access code operator"),
    0x14: _Vif("access_code_system_operator", description="Access code system operator"),
    0x15: _Vif("access_code_developer", description="Access code developer"),
    0x16: _Vif("password", description="Password"),
    0x17: _Vif("error_flags", description="Error flags (binary)"),
    0x18: _Vif("error_mask", description="Error mask"),
    0x1A: _Vif("digital_output", description="Digital output (binary)"),
    0x1B: _Vif("digital_input", description="Digital input (binary)"),
    0x1C: _Vif("baud_rate", "Bd", description="Baud rate"),
    0x1D: _Vif("response_delay", "bit times", description="Response delay time"),
    0x1E: _Vif("retry", description="Retry"),
    0x20: _Vif("first_storage_number", description="First storage number for cyclic storage"),
    0x21: _Vif("last_storage_number", description="Last storage number for cyclic storage"),
    0x22: _Vif("storage_block_size", description="Size of storage block"),
    **{c: _Vif("storage_interval", _DURATION_UNITS[c & 3], description="Storage interval") for c in range(0x24, 0x28)},
    0x28: _Vif("storage_interval", "months", description="Storage interval"),
    0x29: _Vif("storage_interval", "years", description="Storage interval"),
    **{c: _Vif("duration_since_readout", _DURATION_UNITS[c & 3], description="Duration since last readout") for c in range(0x2C, 0x30)},
    0x30: _Vif("tariff_start", kind="datetime", description="Start (date/time) of tariff"),
    **{c: _Vif("tariff_duration", _DURATION_UNITS[c & 3], description="Duration of tariff") for c in range(0x31, 0x34)},
    **{c: _Vif("tariff_period", _DURATION_UNITS[c & 3], description="Period of tariff") for c in range(0x34, 0x38)},
    0x38: _Vif("tariff_period", "months", description="Period of tariff"),
    0x39: _Vif("tariff_period", "years", description="Period of tariff"),
    0x3A: _Vif("dimensionless", description="Dimensionless"),
    **{c: _Vif("voltage", "V", (c & 0x0F) - 9, description="Voltage") for c in range(0x40, 0x50)},
    **{c: _Vif("current", "A", (c & 0x0F) - 12, description="Current") for c in range(0x50, 0x60)},
    0x60: _Vif("reset_counter", description="Reset counter"),
    0x61: _Vif("cumulation_counter", description="Cumulation counter"),
    0x62: _Vif("control_signal", description="Control signal"),
    0x63: _Vif("day_of_week", description="Day of week"),
    0x64: _Vif("week_number", description="Week number"),
    0x65: _Vif("day_change_time", description="Time point of day change"),
    0x66: _Vif("parameter_activation", description="State of parameter activation"),
    0x67: _Vif("supplier_information", description="Special supplier information"),
    **{c: _Vif("duration_since_cumulation", ("h", "d", "months", "years")[c & 3], description="Duration since last cumulation") for c in range(0x68, 0x6C)},
    **{c: _Vif("battery_operating_time", ("h", "d", "months", "years")[c & 3], description="Operating time battery") for c in range(0x6C, 0x70)},
    0x70: _Vif("battery_change", kind="datetime", description="Date and time of battery change"),
}

#: EN 13757-3 Table 12, the first extension table (VIF FBh), by VIFE code. Units are
#: brought to the primary table's (MWh -> Wh, GJ -> J, t -> kg, MW -> W) by the exponent.
_FB_TABLE: dict[int, _Vif] = {
    **{c: _Vif("energy", "Wh", (c & 1) + 5, description="Energy") for c in (0x00, 0x01)},  # 10^(n-1) MWh
    **{c: _Vif("energy", "J", (c & 1) + 8, description="Energy") for c in (0x08, 0x09)},  # 10^(n-1) GJ
    **{c: _Vif("volume", "m3", (c & 1) + 2, description="Volume") for c in (0x10, 0x11)},  # 10^(n+2) m3
    **{c: _Vif("mass", "kg", (c & 1) + 5, description="Mass") for c in (0x18, 0x19)},  # 10^(n+2) t
    0x21: _Vif("volume", "ft3", -1, description="Volume"),
    0x22: _Vif("volume", "US gal", -1, description="Volume"),
    0x23: _Vif("volume", "US gal", 0, description="Volume"),
    0x24: _Vif("volume_flow", "US gal/min", -3, description="Volume flow"),
    0x25: _Vif("volume_flow", "US gal/min", 0, description="Volume flow"),
    0x26: _Vif("volume_flow", "US gal/h", 0, description="Volume flow"),
    **{c: _Vif("power", "W", (c & 1) + 5, description="Power") for c in (0x28, 0x29)},  # 10^(n-1) MW
    **{c: _Vif("power", "J/h", (c & 1) + 8, description="Power") for c in (0x30, 0x31)},  # 10^(n-1) GJ/h
    **{c: _Vif("flow_temperature", "°F", (c & 3) - 3, description="Flow temperature") for c in range(0x58, 0x5C)},
    **{c: _Vif("return_temperature", "°F", (c & 3) - 3, description="Return temperature") for c in range(0x5C, 0x60)},
    **{c: _Vif("temperature_difference", "°F", (c & 3) - 3, description="Temperature difference") for c in range(0x60, 0x64)},
    **{c: _Vif("external_temperature", "°F", (c & 3) - 3, description="External temperature") for c in range(0x64, 0x68)},
    **{c: _Vif("temperature_limit", "°F", (c & 3) - 3, description="Cold / warm temperature limit") for c in range(0x70, 0x74)},
    **{c: _Vif("temperature_limit", _TEMPERATURE, (c & 3) - 3, description="Cold / warm temperature limit") for c in range(0x74, 0x78)},
    **{c: _Vif("max_power_count", "W", (c & 7) - 3, description="Cumulative count max power") for c in range(0x78, 0x80)},
}

#: EN 13757-3 Table 18: record errors a slave reports in a VIFE E00x xxxx.
RECORD_ERRORS = {
    0x00: "no error",
    0x01: "too many DIFEs",
    0x02: "storage number not implemented",
    0x03: "unit number not implemented",
    0x04: "tariff number not implemented",
    0x05: "function not implemented",
    0x06: "data class not implemented",
    0x07: "data size not implemented",
    0x0B: "too many VIFEs",
    0x0C: "illegal VIF group",
    0x0D: "illegal VIF exponent",
    0x0E: "VIF/DIF mismatch",
    0x0F: "unimplemented action",
    0x15: "no data available (undefined value)",
    0x16: "data overflow",
    0x17: "data underflow",
    0x18: "data error",
    0x1C: "premature end of record",
}

_PER = ("second", "minute", "hour", "day", "week", "month", "year", "revolution / measurement")
_COMBINABLE = {
    **{0x20 + i: f"per {unit}" for i, unit in enumerate(_PER)},
    0x28: "increment per input pulse on input channel 0",
    0x29: "increment per input pulse on input channel 1",
    0x2A: "increment per output pulse on output channel 0",
    0x2B: "increment per output pulse on output channel 1",
    0x2C: "per litre",
    0x2D: "per m3",
    0x2E: "per kg",
    0x2F: "per K",
    0x30: "per kWh",
    0x31: "per GJ",
    0x32: "per kW",
    0x33: "per (K*l)",
    0x34: "per V",
    0x35: "per A",
    0x36: "multiplied by s",
    0x37: "multiplied by s/V",
    0x38: "multiplied by s/A",
    0x39: "start date(/time) of",
    0x3A: "uncorrected unit",
    0x3B: "accumulation only if positive contributions",
    0x3C: "accumulation of abs value only if negative contributions",
    0x7E: "future value",
}
#: VIFEs whose record holds a time point (type G or F) instead of the VIF's quantity.
_DATE_OF = frozenset({0x39, 0x42, 0x43, 0x46, 0x47, 0x4A, 0x4B, 0x4E, 0x4F, 0x6A, 0x6B, 0x6E, 0x6F})


def _combinable(code: int) -> str | None:
    """EN 13757-3 Table 15: the meaning of a combinable (orthogonal) VIFE, None if reserved."""
    if code in _COMBINABLE:
        return _COMBINABLE[code]
    limit = "upper" if code & 0x08 else "lower"
    if code & 0x77 == 0x40:
        return f"{limit} limit value"
    if code & 0x77 == 0x41:
        return f"number of exceeds of {limit} limit"
    first = "last" if code & 0x04 else "first"
    edge = "end" if code & 0x01 else "begin"
    if code & 0x72 == 0x42:  # E100 uf1b
        return f"date/time of {edge} of {first} {limit} limit exceed"
    if code & 0x70 == 0x50:  # E101 ufnn
        return f"duration of {first} {limit} limit exceed ({_DURATION_UNITS[code & 3]})"
    if code & 0x78 == 0x60:  # E110 0fnn
        return f"duration of {first} ({_DURATION_UNITS[code & 3]})"
    if code & 0x7A == 0x6A:  # E110 1f1b
        return f"date/time of {edge} of {first}"
    if code & 0x7C == 0x78:  # E111 10nn
        return f"additive correction constant 10^{(code & 3) - 3} (unit of VIF)"
    return None


@attrs.frozen
class _Vib:
    quantity: str
    unit: str
    exponent: int
    kind: str
    description: str
    known: bool
    modifiers: tuple[str, ...]
    error: int | None
    manufacturer_specific: bool
    date_of: bool


@functools.lru_cache(maxsize=1024)
def _interpret_vib(vib: bytes) -> _Vib:
    """The meaning of a VIB; unknown codes give known=False, never an exception.

    Kept by its bytes (bounded): a meter sends the same VIBs in every telegram, and a
    _Vib is immutable, so one may serve every record that has that VIB.
    """
    vif = vib[0]
    code = vif & 0x7F
    pos = 1
    text = ""
    if code == 0x7C:  # plain-text unit, sent last character first (libmbus mbus_data_str_decode)
        length = vib[1]
        text = bytes(vib[2 : 2 + length])[::-1].decode("latin-1")
        pos = 2 + length
    vifes = vib[pos:]
    known = True
    table_vif: _Vif | None
    if code in (0x7B, 0x7D):
        table = _FB_TABLE if code == 0x7B else _FD_TABLE
        if not vifes:
            table_vif = None
        else:
            table_vif = table.get(vifes[0] & 0x7F)
            vifes = vifes[1:]
        if table_vif is None:
            known = False
            table_vif = _Vif("", description=f"unknown VIF {vib[: pos + 1].hex(' ').upper()}")
    elif code == 0x7C:
        table_vif = _Vif("plain_text", text, description=text)
    elif code == 0x7F:
        # Manufacturer-specific VIF: every VIFE after it is the manufacturer's too.
        return _Vib("manufacturer_specific", "", 0, "number", "Manufacturer specific", True, (), None, True, False)
    else:
        table_vif = _primary_vif(code)
        if table_vif is None:
            known = False
            table_vif = _Vif("", description=f"unknown VIF {vif:02X}")
    exponent = table_vif.exponent
    modifiers: list[str] = []
    error: int | None = None
    manufacturer = False
    date_of = False
    for vife in vifes:
        c = vife & 0x7F
        if manufacturer:
            continue  # §6.4.4: after 7Fh the VIFEs are the manufacturer's
        if c == 0x7F:
            manufacturer = True
        elif c <= 0x1F:
            error = c  # slave-to-master record error code (Table 18)
        elif 0x70 <= c <= 0x77:
            exponent += (c & 0x07) - 6  # multiplicative correction factor 10^(nnn-6)
        elif c == 0x7D:
            exponent += 3  # multiplicative correction factor 10^3
        else:
            meaning = _combinable(c)
            if meaning is None:
                known = False
                meaning = f"reserved VIFE {vife:02X}"
            modifiers.append(meaning)
            date_of = date_of or c in _DATE_OF
    if not known:
        exponent = 0  # an unknown code: keep the raw number rather than a guessed scale
    return _Vib(
        table_vif.quantity, table_vif.unit if known else "", exponent, table_vif.kind, table_vif.description, known,
        tuple(modifiers), error, manufacturer, date_of,
    )


# --- values --------------------------------------------------------------------------------


def _scaled(raw: int, exponent: int) -> Decimal:
    """raw × 10^exponent, exactly (``Decimal('12565E-3')`` is ``12.565``)."""
    if exponent >= 0:
        return Decimal(raw * 10**exponent)
    return Decimal(f"{raw}E{exponent}")


def shift(value: Decimal, exponent: int) -> Decimal:
    """``value`` × 10^exponent, exactly: a positive power multiplies by an integer (no
    ``1E+3`` exponents in the result), a negative one moves the decimal point."""
    if not value.is_finite():
        return value
    sign, digits, exp = value.as_tuple()
    moved = Decimal((sign, digits, int(exp) + exponent))
    return Decimal(int(moved)) if int(exp) + exponent > 0 else moved  # int() of it is exact


def _bcd(data: bytes) -> int:
    """EN 13757-3 Annex B: packed BCD, LSB first; an F in the top nibble means negative."""
    if data and data[-1] >> 4 == 0xF:
        return -bcd_to_int(bytes(data[:-1]) + bytes((data[-1] & 0x0F,)))
    return bcd_to_int(data)


def _bcd_bytes(raw: int, size: int) -> bytes:
    if raw >= 0:
        return int_to_bcd(raw, size)
    if -raw >= 10 ** (2 * size - 1):
        raise ValueError(f"{raw} does not fit in {size} BCD byte(s) with a sign nibble")
    out = bytearray(int_to_bcd(-raw, size))
    out[-1] |= 0xF0
    return bytes(out)


def _real32(data: bytes) -> Decimal | None:
    """The shortest decimal that reads back as the same IEEE 754 single (what libmbus prints
    to six places, without the binary expansion pyMeterBus puts into its Decimals)."""
    (x,) = struct.unpack("<f", data)
    if math.isnan(x) or math.isinf(x):
        return None
    for digits in range(1, 10):
        text = f"{x:.{digits}g}"
        try:
            if struct.pack("<f", float(text)) == bytes(data):
                return Decimal(text)
        except OverflowError:  # rounded up past the largest single
            continue
    return Decimal(repr(x))  # pragma: no cover - 9 significant digits always round-trip


def _year(low: int, high: int) -> int:
    """Annex A: a 7-bit year of century; libmbus reads 0..80 as 2000..2080, 81..99 as 19xx."""
    yy = low | high << 3
    if yy > 99:  # EN 13757-3:2013 Annex A: 127 is a periodic ("every year") date
        raise ValueError(f"year of century {yy} (a periodic or wildcard date)")
    return 2000 + yy if yy <= 80 else 1900 + yy


def _type_g(data: bytes) -> date:
    """Annex A type G (2 bytes): day bits 0-4, month bits 8-11, year bits 5-7 and 12-15."""
    return date(_year(data[0] >> 5, data[1] >> 4), data[1] & 0x0F, data[0] & 0x1F)


def _type_f(data: bytes) -> datetime:
    """Annex A type F (4 bytes): minute (bit 7 IV = invalid), hour (bit 7 SU = summer
    time), then the type G date in bytes 2-3."""
    if data[0] & 0x80:
        raise ValueError("the IV (invalid) bit is set")
    day = _type_g(data[2:4])
    return datetime(day.year, day.month, day.day, data[1] & 0x1F, data[0] & 0x3F)


def _type_i(data: bytes) -> datetime:
    """Annex A type I (6 bytes) [U]: second, minute, hour, then day/year, month/year as
    type F's bytes 2-3 (the weekday and week bits of bytes 4-5 are not used here)."""
    if data[1] & 0x80:
        raise ValueError("the IV (invalid) bit is set")
    day = _type_g(data[3:5])
    return datetime(day.year, day.month, day.day, data[2] & 0x1F, data[1] & 0x3F, data[0] & 0x3F)


def _type_j(data: bytes) -> time:
    """Annex A type J (3 bytes): second, minute, hour."""
    return time(data[2] & 0x1F, data[1] & 0x3F, data[0] & 0x3F)


_TIME_POINTS = {Coding.INT16: _type_g, Coding.INT32: _type_f, Coding.INT48: _type_i, Coding.INT24: _type_j}


def _time_point(coding: Coding, data: bytes, kind: str) -> tuple[Value, str]:
    decoder = _TIME_POINTS.get(coding)
    if decoder is None:
        return None, f"a time point cannot be coded as {coding.name}"
    try:
        return decoder(data), ""
    except ValueError as exc:
        return None, f"not a valid date/time ({data.hex(' ').upper()}): {exc}"


def _variable(data: bytes) -> tuple[Value, str, bool]:
    """(value, note, is_number) of a variable-length data field (LVAR first)."""
    lvar, body = data[0], bytes(data[1:])
    if lvar <= 0xBF:
        return body[::-1].decode("latin-1"), "", False  # §6.3.4: text, last character first
    if lvar <= 0xC9 or 0xD0 <= lvar <= 0xD9:
        try:
            number = bcd_to_int(body)
        except ValueError as exc:
            return None, str(exc), True
        return Decimal(-number if lvar >= 0xD0 else number), "", True
    if 0xE0 <= lvar <= 0xEF:
        return Decimal(int.from_bytes(body, "little")), "", True  # [U] unsigned
    return body, "binary data", False


def _interpret(dib: bytes, vib: bytes, data: bytes, fields: tuple[Coding, Function, int, int, int]) -> Record:
    """The record of these wire parts; ``fields`` is ``_dib_fields(dib)``."""
    coding, function, storage, tariff, subunit = fields
    info = _interpret_vib(vib)
    value: Value = None
    note = ""
    if info.manufacturer_specific and info.quantity == "manufacturer_specific":
        value = data
        note = "manufacturer specific VIF: raw data"
    elif info.kind != "number" or info.date_of:
        kind = "datetime" if info.date_of and coding is Coding.INT32 else info.kind
        value, note = _time_point(coding, data, kind)
    elif coding is Coding.VARIABLE:
        value, note, is_number = _variable(data)
        if is_number and isinstance(value, Decimal):
            value = _scaled(int(value), info.exponent)
    elif coding in _INTEGER_CODINGS:
        value = _scaled(int.from_bytes(data, "little", signed=True), info.exponent)
    elif coding in _BCD_CODINGS:
        try:
            value = _scaled(_bcd(data), info.exponent)
        except ValueError as exc:
            note = f"not BCD: {exc}"
    elif coding is Coding.REAL32:
        real = _real32(data)
        if real is None:
            note = "not a number (NaN or infinity)"
        else:
            value = shift(real, info.exponent)
    if not info.known and not note:
        note = "unknown VIF/VIFE: the raw value is kept without scaling or unit"
    return Record(
        dib=dib, vib=vib, data=data, coding=coding, function=function, storage=storage, tariff=tariff,
        subunit=subunit, quantity=info.quantity, unit=info.unit if not (info.kind != "number" or info.date_of) else "",
        value=value, description=info.description, known=info.known, modifiers=info.modifiers, error=info.error,
        manufacturer_specific=info.manufacturer_specific, note=note,
    )


def vib_exponent(vib: bytes) -> int:
    """The power of ten a VIB applies to the raw number (0 for unknown codes)."""
    return _interpret_vib(bytes(vib)).exponent


def encode_value(coding: Coding, vib: bytes, value: Value) -> bytes:
    """The data field that carries ``value`` with this coding and VIB (the inverse of the
    decoding done for a record). Raises ValueError when it cannot be represented exactly."""
    coding = Coding(coding)
    vib = bytes(vib)
    info = _interpret_vib(vib)
    if coding in (Coding.NONE, Coding.SELECTION):
        if value is not None:
            raise ValueError(f"{coding.name} carries no data, got {value!r}")
        return b""
    if info.kind != "number" or info.date_of:
        return _encode_time_point(coding, value)
    if coding is Coding.VARIABLE:
        if isinstance(value, str):
            text = value.encode("latin-1")
            if len(text) > 0xBF:
                raise ValueError(f"text of {len(text)} characters does not fit LVAR (at most 191)")
            return bytes((len(text),)) + text[::-1]
        if isinstance(value, bytes):
            raise ValueError("binary variable-length data need an explicit LVAR; build the record from bytes")
        raw = _unscaled(value, info.exponent)
        digits = len(str(abs(raw)))
        size = max(1, (digits + 1) // 2)
        if size > 9:
            raise ValueError(f"{raw} has too many digits for variable-length BCD")
        return bytes(((0xD0 if raw < 0 else 0xC0) + size,)) + int_to_bcd(abs(raw), size)
    if not isinstance(value, Decimal):
        raise TypeError(f"{coding.name} carries a number, got {value!r}")
    size = coding.size or 0
    if coding is Coding.REAL32:
        number = shift(value, -info.exponent)
        try:
            packed = struct.pack("<f", float(number))
        except OverflowError:
            raise ValueError(f"{value} is beyond the range of an IEEE 754 single") from None
        if _real32(packed) != number:
            raise ValueError(f"{value} is not exactly an IEEE 754 single at 10^{info.exponent}")
        return packed
    raw = _unscaled(value, info.exponent)
    if coding.is_integer:
        try:
            return raw.to_bytes(size, "little", signed=True)
        except OverflowError:
            raise ValueError(f"{raw} does not fit in {coding.name}") from None
    return _bcd_bytes(raw, size)


def _unscaled(value: Value, exponent: int) -> int:
    if not isinstance(value, Decimal):
        raise TypeError(f"expected a Decimal, got {value!r}")
    if not value.is_finite():
        raise ValueError(f"{value} is not a finite number")
    raw = shift(value, -exponent)
    if raw != raw.to_integral_value():
        raise ValueError(f"{value} is not a whole multiple of 10^{exponent}")
    return int(raw)


def _encode_time_point(coding: Coding, value: Value) -> bytes:
    if coding is Coding.INT16 and isinstance(value, date) and not isinstance(value, datetime):
        return _date_bytes(value)
    if coding is Coding.INT32 and isinstance(value, datetime):
        if value.second:
            raise ValueError("type F has no seconds")
        return bytes((value.minute, value.hour)) + _date_bytes(value.date())
    if coding is Coding.INT48 and isinstance(value, datetime):
        return bytes((value.second, value.minute, value.hour)) + _date_bytes(value.date()) + b"\x00"
    if coding is Coding.INT24 and isinstance(value, time):
        return bytes((value.second, value.minute, value.hour))
    raise ValueError(f"cannot code {value!r} as a {coding.name} time point")


def _date_bytes(day: date) -> bytes:
    if not 1981 <= day.year <= 2080:
        raise ValueError(f"M-Bus dates hold the years 1981-2080, got {day.year}")
    yy = day.year % 100
    return bytes(((yy & 0x07) << 5 | day.day, (yy >> 3) << 4 | day.month))


def plain_text_vib(unit: str, vifes: bytes = b"") -> bytes:
    """A VIB with a plain-text unit (VIF 7Ch, or FCh when VIFEs follow)."""
    text = unit.encode("latin-1")
    if len(text) > 0xFF:
        raise ValueError("a plain-text unit has at most 255 characters")
    return bytes((0xFC if vifes else 0x7C, len(text))) + text[::-1] + bytes(vifes)


def make_record(
    coding: Coding,
    vib: bytes,
    value: Value,
    *,
    function: Function = Function.INSTANTANEOUS,
    storage: int = 0,
    tariff: int = 0,
    subunit: int = 0,
) -> Record:
    """A record carrying ``value`` (in the VIB's unit, e.g. ``Decimal("12.565")`` m3 with
    VIF 13h), built with our encoder and read back by our decoder."""
    dib = build_dib(Coding(coding), function=function, storage=storage, tariff=tariff, subunit=subunit)
    vib = bytes(vib)
    data = encode_value(coding, vib, value)
    wire = dib + vib + data
    record, end = _parse_record(wire, 0)
    if end != len(wire):
        raise ValueError(f"record {wire.hex(' ')} does not parse back to its own length")
    return record


def raw_record(dib: bytes, vib: bytes, data: bytes) -> Record:
    """A record from its wire parts (for values our encoder cannot produce, e.g. binary)."""
    wire = bytes(dib) + bytes(vib) + bytes(data)
    try:
        record, end = _parse_record(wire, 0)
    except FrameError as exc:
        raise ValueError(str(exc)) from None
    if end != len(wire):
        raise ValueError(f"{len(wire) - end} byte(s) left after the record {wire.hex(' ')}")
    return record


def records_of(telegrams: Iterable[Telegram]) -> list[Record]:
    """Every record of a multi-telegram answer, in order."""
    return [r for t in telegrams for r in t.records]


# --- stream decoder ----------------------------------------------------------------------


_LONG_HEAD = 5  #: 68 L L 68 C: the bytes that tell whether a 68h starts a long frame


def _candidate_size(head: bytes) -> int | None:
    """A frame's length from its first bytes (None: not known yet, 0: no frame starts here)."""
    if head[0] == SHORT_START:
        if len(head) < 2:
            return None
        return SHORT_LEN if head[1] in SHORT_CONTROLS else 0
    if head[0] != LONG_START:
        return 0
    # 68 L L 68 C: L < 3, L bytes that differ, no second 68h or an unknown C field is no frame
    if len(head) > 1 and head[1] < MIN_L:
        return 0
    if len(head) > 2 and head[2] != head[1]:
        return 0
    if len(head) > 3 and head[3] != LONG_START:
        return 0
    if len(head) < _LONG_HEAD:
        return None
    return head[1] + LONG_OVERHEAD if head[4] in LONG_CONTROLS else 0


class StreamDecoder(FrameFinder[Frame]):
    """Finds M-Bus frames in a byte stream that may hold noise and damaged frames.

    Every 10h and 68h is a frame candidate, judged when its last byte (known from the
    frame type and L, never by searching for 16h) arrives; a candidate whose header is
    impossible (unknown C field, L < 3, L bytes that differ, no second 68h) dies at once.
    A bad candidate costs only its first byte, so a real frame hidden behind a false
    start is still found, and a complete valid frame is delivered even while an earlier
    candidate still waits for bytes. An E5 carries no checksum, so it is delivered only
    once no earlier candidate could still turn out to contain it. Decisions depend only on
    the bytes seen so far: feeding byte by byte gives what feeding all at once gives.
    ``feed`` returns frames and ChecksumError instances for damaged ones, in order.
    """

    def __init__(self) -> None:
        super().__init__(
            _candidate_size, judge_by_decode(decode), lookahead=_LONG_HEAD, singles={ACK: Ack},
            starts=bytes((SHORT_START, LONG_START)),
        )


__all__ = [
    "ACK",
    "ADDRESS_NETWORK",
    "BROADCAST",
    "BROADCAST_REPLY",
    "CI_RSP_LONG",
    "CI_RSP_NONE",
    "CI_RSP_SHORT",
    "CI_SELECT",
    "Ack",
    "Coding",
    "Control",
    "Function",
    "IdleFiller",
    "LongFrame",
    "LongHeader",
    "Record",
    "ShortFrame",
    "ShortHeader",
    "StreamDecoder",
    "Telegram",
    "decode",
    "encode",
    "encode_user_data",
    "encode_value",
    "make_record",
    "manufacturer_code",
    "manufacturer_letters",
    "normalize_secondary",
    "parse_records",
    "parse_select",
    "parse_user_data",
    "plain_text_vib",
    "raw_record",
    "records_of",
    "req_ud1",
    "req_ud2",
    "rsp_ud",
    "secondary_from_wire",
    "secondary_matches",
    "secondary_to_wire",
    "select_request",
    "shift",
    "snd_nke",
]

