"""Q/GDW 1376.1-2013 frame codec (master station <-> concentrator), sans-I/O.

One frame shape serves every exchange (protocols README §3.1)::

    [FE ...] 68 L L 68 | C | A1 A1 A2 A2 A3 | AFN | SEQ | {DA1 DA2 DT1 DT2 data}+ | PW | EC | Tp | CS 16
                       |<------------------ user data, L >> 2 bytes ---------------------->|

``decode``/``encode`` turn one frame into a :class:`Frame` and back, byte for byte;
:class:`StreamDecoder` finds frames in whatever bytes a TCP connection or serial port
delivers.

Where the data units end and the auxiliary fields begin is known from the header alone:
the auxiliary fields sit at the end of the user data and their presence follows from C,
AFN and SEQ. Where one data unit ends and the next begins is not: that needs the length
of every Fn's data, which is knowledge of meaning, not of framing (pymodbus keeps framer
and PDU apart for the same reason). So :class:`Frame` keeps the data units as they were
sent, ``payload``, and :mod:`meterhub.protocols.gdw1376_1_data` splits them with its
registry of layouts (:func:`split_units` here does the walking, the data module says how
long each item is). Every frame therefore decodes and re-encodes exactly, including
frames whose Fn nobody here knows.

Decisions where the sources differ (gdw1376-details.md labels):

* Protocol id: 2 (0b10) is 376.1-2009/2013, 1 is Q/GDW 130-2005; both are accepted (one
  vector is a 2005-edition request). The 2005 edition's PW is 2 bytes by recollection of
  its text [U]; no source here shows a 2005 frame that carries PW.
* PW is present only in downlink frames of AFN 01, 04, 05, 06, 0F and 10 [V: LM
  ``bmt_have_pw`` + KS ``has_pw`` + captures]. LM also puts PW in uplink AFN 06 frames
  and KS ignores the direction; we follow the details note (downlink only; an uplink
  AFN 10 capture has none).
* EC is present only in uplink frames with ACD = 1 [V captures]; LM adds it to every
  uplink frame but AFN 02/06, which the captures contradict.
* DA1 = FFh with DA2 = 00h means "every valid measuring point" (README §3.1); LM rejects
  it. It is accepted and stands as ``points=None``; any other DA1 with DA2 = 0, and
  DA1 = 0 with DA2 != 0, name no point and are rejected, as LM does.
* DT2 above 30 (Fn > 248) is rejected, as LM does.
* Length: L holds 14 bits, so a user-data length of at most 16383 bytes, the standard's
  limit for network channels (a dedicated radio channel allows 255). :func:`decode`
  accepts the whole range; :class:`StreamDecoder` takes the largest length to believe as
  a parameter (default the full 16383: the header check 68 L L 68 with a valid protocol
  id is strict enough, and a false candidate never holds back a real frame found after
  it).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterable

import attrs

from ..errors import ChecksumError, FrameError, TruncatedFrame
from ..framing import FrameFinder, judge_by_decode
from .bcd import bcd_to_int, int_to_bcd, sum8

START = 0x68
END = 0x16
WAKE_UP = 0xFE  #: a local serial port may send FE before the frame (one vector does); not part of it
HEADER_LEN = 6  #: 68 L L 68
OVERHEAD = 8  #: header + CS + 16: a frame is OVERHEAD + user-data length bytes long
FIXED_LEN = 8  #: C (1) + A (5) + AFN (1) + SEQ (1) start every user data
UNIT_ID_LEN = 4  #: DA1 DA2 DT1 DT2
MIN_USER_DATA = FIXED_LEN + UNIT_ID_LEN  #: every frame names at least one data unit
MAX_USER_DATA = 0x3FFF  #: L's 14 length bits; the standard's limit for network channels
MAX_USER_DATA_RADIO = 255  #: the standard's limit on a dedicated radio data channel

PROTOCOL_2013 = 2  #: L D1..D0 = 10b: Q/GDW 376.1-2009 and -2013
PROTOCOL_2005 = 1  #: L D1..D0 = 01b: Q/GDW 130-2005
PROTOCOLS = (PROTOCOL_2005, PROTOCOL_2013)

#: Size of PW by protocol id: 16 bytes since 2009 [V]; 2 bytes in Q/GDW 130-2005 [U].
PW_SIZE = {PROTOCOL_2013: 16, PROTOCOL_2005: 2}
EC_SIZE = 2  #: EC1 (important events) + EC2 (normal events)
TP_SIZE = 6  #: PFC + A.16 send time (4) + allowed delay

# C field bits (README §3.1).
DIR_UP = 0x80  #: D7: 1 = uplink (terminal -> master)
PRM = 0x40  #: D6: 1 = the frame comes from the initiating (primary) station
FCB_ACD = 0x20  #: D5: frame count bit downlink, access demand (EC present) uplink
FCV = 0x10  #: D4: FCB valid (downlink; reserved uplink)
FUNCTION_MASK = 0x0F

# SEQ bits.
TPV = 0x80  #: D7: Tp present
FIR = 0x40  #: D6: first frame of a message
FIN = 0x20  #: D5: last frame of a message
CON = 0x10  #: D4: the receiver must confirm
SEQ_MASK = 0x0F  #: D3..D0: PSEQ (request) or RSEQ (the request's PSEQ, echoed)

MAX_MASTER = 127  #: A3 D7..D1: master station address MSA
MAX_POINT = 2040  #: DA2 is one byte: 255 groups of 8 points
MAX_FN = 248  #: DT2 0..30 (LM rejects more): 31 groups of 8 functions
BROADCAST_TERMINAL = 0xFFFF  #: A2 = FFFFh with the group flag reaches every terminal


class Direction(enum.IntEnum):
    """C bit D7: who sends the frame."""

    DOWN = 0  #: master station -> terminal
    UP = 1  #: terminal -> master station


class PrimaryFunction(enum.IntEnum):
    """Function codes of frames from the initiating station (PRM = 1)."""

    RESET = 1  #: reset command (AFN 01)
    USER_DATA = 4  #: user data, no answer expected (a terminal's active report, C = C4h)
    LINK_TEST = 9  #: link test: login, logout, heartbeat (AFN 02, C = C9h)
    REQUEST_CLASS1 = 10  #: request class-1 data; also set (04) and control (05)
    REQUEST_CLASS2 = 11  #: request class-2 data; also 09, 0A, 0C, 0D, 0E, 10


class SecondaryFunction(enum.IntEnum):
    """Function codes of frames from the answering station (PRM = 0)."""

    CONFIRM = 0  #: acknowledgement (C = 00h downlink, 80h/A0h uplink)
    USER_DATA = 8  #: user-data answer (C = 88h, A8h with ACD)
    DENY = 9  #: denied: no data to give
    LINK_STATUS = 11  #: link status: the master's answer to login and heartbeat (C = 0Bh)


class Afn(enum.IntEnum):
    """Application function codes (README §3.2)."""

    CONFIRM = 0x00
    RESET = 0x01
    LINK = 0x02
    RELAY = 0x03
    SET = 0x04
    CONTROL = 0x05
    AUTHENTICATE = 0x06
    CASCADE = 0x08
    CONFIG = 0x09
    QUERY = 0x0A
    TASK = 0x0B
    CLASS1 = 0x0C
    CLASS2 = 0x0D
    CLASS3 = 0x0E
    FILE = 0x0F
    FORWARD = 0x10


#: Downlink AFNs whose frames carry PW (details §2.5).
PW_AFNS = frozenset({Afn.RESET, Afn.SET, Afn.CONTROL, Afn.AUTHENTICATE, Afn.FILE, Afn.FORWARD})


def carries_pw(direction: Direction, afn: int) -> bool:
    """Whether a frame of ``afn`` sent in ``direction`` holds the PW field."""
    return direction is Direction.DOWN and afn in PW_AFNS


# --- times and the auxiliary fields ------------------------------------------------------


def in_range(lo: int, hi: int) -> Callable[[object, attrs.Attribute, int | None], None]:
    """An attrs validator: the field is ``lo``..``hi`` (or None)."""

    def check(_instance: object, attribute: attrs.Attribute, value: int | None) -> None:
        if value is not None and not lo <= value <= hi:
            raise ValueError(f"{attribute.name} must be {lo}..{hi}, got {value!r}")

    return check


_optional_int = attrs.converters.optional(int)


@attrs.frozen
class PartialTime:
    """A time of which a format carries only some fields (A.16 to A.19, A.21); the
    others are None. A day or month of 0 is allowed: terminals send zeros for "unset"
    (one Tp in the vectors is all zero)."""

    year: int | None = attrs.field(default=None, converter=_optional_int, validator=in_range(2000, 2099))
    month: int | None = attrs.field(default=None, converter=_optional_int, validator=in_range(0, 12))
    day: int | None = attrs.field(default=None, converter=_optional_int, validator=in_range(0, 31))
    hour: int | None = attrs.field(default=None, converter=_optional_int, validator=in_range(0, 23))
    minute: int | None = attrs.field(default=None, converter=_optional_int, validator=in_range(0, 59))
    second: int | None = attrs.field(default=None, converter=_optional_int, validator=in_range(0, 59))


#: A.16, the Tp send time: ss mm hh DD, one BCD byte each.
A16_FIELDS = ("second", "minute", "hour", "day")


def bcd_fields(data: bytes) -> list[int]:
    """Each byte of ``data`` as a two-digit BCD number; ValueError for a nibble above 9."""
    return [bcd_to_int(data[i : i + 1]) for i in range(len(data))]


def fields_to_wire(time: PartialTime, fields: tuple[str, ...]) -> bytes:
    """The BCD bytes of the ``fields`` of ``time`` in that order (years as YY); a field
    of ``time`` that is missing, or set but not among ``fields``, is a ValueError."""
    carried = {name for name in attrs.fields_dict(PartialTime) if getattr(time, name) is not None}
    if carried != set(fields):
        raise ValueError(f"this format carries {', '.join(fields)}; got a time with {', '.join(sorted(carried)) or 'nothing'}")
    values = [getattr(time, name) - (2000 if name == "year" else 0) for name in fields]
    return b"".join(int_to_bcd(v, 1) for v in values)


def fields_from_wire(data: bytes, fields: tuple[str, ...]) -> PartialTime:
    """The PartialTime of BCD bytes holding ``fields``; ValueError if not BCD or out of range."""
    values = bcd_fields(data)
    return PartialTime(**{name: v + (2000 if name == "year" else 0) for name, v in zip(fields, values, strict=True)})


@attrs.frozen
class EventCounters:
    """EC: the terminal's important (EC1) and normal (EC2) event counters, 0..255 each."""

    important: int = attrs.field(converter=int, validator=in_range(0, 255))
    normal: int = attrs.field(converter=int, validator=in_range(0, 255))


@attrs.frozen
class TimeTag:
    """Tp: the initiating frame's counter PFC, its send time (A.16) and the delay in
    minutes after which the receiver drops it (0: do not check; README pitfall 7)."""

    pfc: int = attrs.field(converter=int, validator=in_range(0, 255))
    sent: PartialTime = attrs.field(validator=attrs.validators.instance_of(PartialTime))
    delay: int = attrs.field(default=0, converter=int, validator=in_range(0, 255))

    def __attrs_post_init__(self) -> None:
        fields_to_wire(self.sent, A16_FIELDS)  # raises if the time is not a day, hour, minute, second


def _tp_to_wire(tp: TimeTag) -> bytes:
    return bytes((tp.pfc,)) + fields_to_wire(tp.sent, A16_FIELDS) + bytes((tp.delay,))


def _tp_from_wire(data: bytes) -> TimeTag:
    return TimeTag(data[0], fields_from_wire(data[1:5], A16_FIELDS), data[5])


# --- data unit identifiers (DA = pn, DT = Fn) --------------------------------------------


def _group_bits(numbers: Iterable[int], what: str, top: int) -> tuple[int, int]:
    """(bit map, group) of numbers 1..``top`` that share one group of 8, groups counted
    from 0 (1-8 is group 0): DA2 is the group + 1 (DA2 = 0 is p0), DT2 the group itself."""
    values = sorted(set(numbers))
    if not values:
        raise ValueError(f"a data unit names at least one {what}")
    if values[0] < 1 or values[-1] > top:
        raise ValueError(f"{what} must be 1..{top}, got {values}")
    groups = {(v - 1) // 8 for v in values}
    if len(groups) != 1:
        raise ValueError(f"{what}s {values} are not in one group of 8; send them as separate data units")
    return sum(1 << ((v - 1) % 8) for v in values), groups.pop()


def pn_to_da(points: Iterable[int] | None) -> bytes:
    """DA1 DA2 of measuring points that share a group of 8: p0 is 00 00, pn 1..8 have
    DA2 = 1, and so on; ``None`` ("every valid point") is FF 00."""
    if points is None:
        return b"\xff\x00"
    points = tuple(points)
    if 0 in points:
        if len(set(points)) != 1:
            raise ValueError(f"p0 cannot share a data unit with other points, got {sorted(set(points))}")
        return b"\x00\x00"
    bits, group = _group_bits(points, "measuring point", MAX_POINT)
    return bytes((bits, group + 1))


def da_to_pn(data: bytes) -> tuple[int, ...] | None:
    """The measuring points of DA1 DA2 (None: every valid point); FrameError if it names none."""
    da1, da2 = data[0], data[1]
    if da2 == 0:
        if da1 == 0:
            return (0,)
        if da1 == 0xFF:
            return None
        raise FrameError(f"DA {da1:02X} {da2:02X}: with DA2 = 0 only DA1 = 00 (p0) or FF (all points) is valid")
    if da1 == 0:
        raise FrameError(f"DA 00 {da2:02X} names no measuring point")
    return tuple((da2 - 1) * 8 + bit + 1 for bit in range(8) if da1 >> bit & 1)


def fn_to_dt(functions: Iterable[int]) -> bytes:
    """DT1 DT2 of functions that share a group of 8 (F1..F8 have DT2 = 0)."""
    bits, group = _group_bits(functions, "function", MAX_FN)
    return bytes((bits, group))


def dt_to_fn(data: bytes) -> tuple[int, ...]:
    """The functions of DT1 DT2; FrameError if DT1 is 0 or DT2 is above 30."""
    dt1, dt2 = data[0], data[1]
    if dt1 == 0:
        raise FrameError(f"DT 00 {dt2:02X} names no function")
    if dt2 > (MAX_FN - 1) // 8:
        raise FrameError(f"DT2 = {dt2} is above 30 (Fn > {MAX_FN})")
    return tuple(dt2 * 8 + bit + 1 for bit in range(8) if dt1 >> bit & 1)


def _points(value: Iterable[int] | None) -> tuple[int, ...] | None:
    return None if value is None else tuple(sorted(set(value)))


def _functions(value: Iterable[int]) -> tuple[int, ...]:
    return tuple(sorted(set(value)))


@attrs.frozen
class DataUnit:
    """One data unit: the measuring points (DA; None for "every valid point"), the
    functions (DT) and the data of every (pn, Fn) pair, pn by pn and Fn by Fn within
    each pn (LM ``emt_pnfn_to_cmdpn``)."""

    points: tuple[int, ...] | None = attrs.field(converter=_points)
    functions: tuple[int, ...] = attrs.field(converter=_functions)
    data: bytes = attrs.field(default=b"", converter=bytes)

    def __attrs_post_init__(self) -> None:
        pn_to_da(self.points)  # the ValueError of a unit that cannot be sent
        fn_to_dt(self.functions)

    def pairs(self) -> list[tuple[int | None, int]]:
        """(pn, Fn) of each item in wire order; pn is None for an "every point" unit,
        which carries each Fn's item once."""
        return [(pn, fn) for pn in (self.points or (None,)) for fn in self.functions]


def unit_id_to_wire(points: Iterable[int] | None, functions: Iterable[int]) -> bytes:
    """DA1 DA2 DT1 DT2."""
    return pn_to_da(points) + fn_to_dt(functions)


def unit_id_from_wire(data: bytes) -> tuple[tuple[int, ...] | None, tuple[int, ...]]:
    """(points, functions) of DA1 DA2 DT1 DT2."""
    if len(data) < UNIT_ID_LEN:
        raise FrameError(f"a data unit identifier is {UNIT_ID_LEN} bytes, got {len(data)}")
    return da_to_pn(data[0:2]), dt_to_fn(data[2:4])


def pack_units(units: Iterable[DataUnit]) -> bytes:
    """The payload of ``units``: DA DT data, one after the other."""
    return b"".join(unit_id_to_wire(u.points, u.functions) + u.data for u in units)


def split_units(payload: bytes, item_size: Callable[[int, bytes], int]) -> tuple[DataUnit, ...]:
    """The data units of ``payload``. ``item_size(fn, rest)`` is the length of the item of
    ``fn`` that starts ``rest`` (it may read leading bytes such as a tariff count), or
    raises FrameError when it cannot tell."""
    units = []
    at = 0
    while at < len(payload):
        points, functions = unit_id_from_wire(payload[at : at + UNIT_ID_LEN])
        at += UNIT_ID_LEN
        start = at
        for _pn in points or (None,):
            for fn in functions:
                size = item_size(fn, payload[at:])
                if at + size > len(payload):
                    raise FrameError(f"F{fn} needs {size} byte(s), {len(payload) - at} left in the data units")
                at += size
        units.append(DataUnit(points, functions, payload[start:at]))
    return tuple(units)


# --- the frame -------------------------------------------------------------------------


_AREA = re.compile(r"[0-9A-F]{4}")


def _area(value: object) -> str:
    area = str(value).strip().upper()
    if _AREA.fullmatch(area) is None:
        raise ValueError(f"A1 (area code) is 4 hex digits as printed, e.g. '0200', got {value!r}")
    return area


@attrs.frozen
class Frame:
    """One 1376.1 frame.

    ``area`` (A1) is printed as sent reversed ("0200" is sent 00 02; not checked to be
    BCD: one broadcast vector sends FFFF); ``terminal`` (A2) is binary; ``master`` and
    ``group`` are A3. ``payload`` is the data units as sent (see the module). ACD, the
    uplink meaning of C bit D5, is ``ec is not None``; TpV is ``tp is not None``; ``fcb``
    is the downlink meaning of D5. ``pw`` is required exactly where :func:`carries_pw`.
    """

    direction: Direction = attrs.field(converter=Direction)
    prm: bool = attrs.field(converter=bool)
    function: int = attrs.field(converter=int, validator=in_range(0, FUNCTION_MASK))
    area: str = attrs.field(converter=_area)
    terminal: int = attrs.field(converter=int, validator=in_range(1, 0xFFFF))  # 0 is invalid (README §3.1)
    afn: int = attrs.field(converter=int, validator=in_range(0, 0xFF))
    payload: bytes = attrs.field(converter=bytes)
    master: int = attrs.field(default=0, converter=int, validator=in_range(0, MAX_MASTER))
    group: bool = attrs.field(default=False, converter=bool)
    seq: int = attrs.field(default=0, converter=int, validator=in_range(0, SEQ_MASK))
    fir: bool = attrs.field(default=True, converter=bool)
    fin: bool = attrs.field(default=True, converter=bool)
    con: bool = attrs.field(default=False, converter=bool)
    fcb: bool = attrs.field(default=False, converter=bool)
    fcv: bool = attrs.field(default=False, converter=bool)
    pw: bytes | None = attrs.field(default=None, converter=attrs.converters.optional(bytes))
    ec: EventCounters | None = None
    tp: TimeTag | None = None
    protocol: int = attrs.field(default=PROTOCOL_2013, converter=int)

    def __attrs_post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol id must be 2 (376.1) or 1 (130-2005), got {self.protocol}")
        if len(self.payload) < UNIT_ID_LEN:
            raise ValueError(f"a frame carries at least one data unit (DA DT, {UNIT_ID_LEN} bytes), got {len(self.payload)} byte(s)")
        self._check_aux()
        if self.user_data_length > MAX_USER_DATA:
            raise ValueError(f"user data of {self.user_data_length} bytes exceeds the {MAX_USER_DATA} L can hold")

    def _check_aux(self) -> None:
        up = self.direction is Direction.UP
        if up and self.fcb:
            raise ValueError("uplink frames have no FCB: C bit D5 is ACD there, set by giving ec")
        if not up and self.ec is not None:
            raise ValueError("EC is sent only in uplink frames")
        if carries_pw(self.direction, self.afn):
            size = PW_SIZE[self.protocol]
            if self.pw is None or len(self.pw) != size:
                raise ValueError(f"downlink AFN {self.afn:02X} frames carry a {size}-byte PW, got {self.pw!r}")
        elif self.pw is not None:
            raise ValueError(f"{self.direction.name.lower()}link AFN {self.afn:02X} frames carry no PW")

    @property
    def acd(self) -> bool:
        """Uplink C bit D5: the terminal has events to report and EC is present."""
        return self.ec is not None

    @property
    def control(self) -> int:
        """The C byte."""
        d5 = self.acd if self.direction is Direction.UP else self.fcb
        return self.direction << 7 | self.prm << 6 | d5 << 5 | self.fcv << 4 | self.function

    @property
    def seq_byte(self) -> int:
        """The SEQ byte."""
        return (self.tp is not None) << 7 | self.fir << 6 | self.fin << 5 | self.con << 4 | self.seq

    @property
    def user_data_length(self) -> int:
        aux = len(self.pw or b"") + (EC_SIZE if self.ec else 0) + (TP_SIZE if self.tp else 0)
        return FIXED_LEN + len(self.payload) + aux


def _user_data(frame: Frame) -> bytes:
    out = bytearray((frame.control,))
    out += bytes.fromhex(frame.area)[::-1]  # A1 low byte first
    out += frame.terminal.to_bytes(2, "little")
    out += bytes((frame.master << 1 | frame.group, frame.afn, frame.seq_byte))
    out += frame.payload
    out += frame.pw or b""
    if frame.ec is not None:
        out += bytes((frame.ec.important, frame.ec.normal))
    if frame.tp is not None:
        out += _tp_to_wire(frame.tp)
    return bytes(out)


def encode(frame: Frame, *, preamble: int = 0) -> bytes:
    """The wire bytes of ``frame``: ``preamble`` × FE, 68 L L 68, user data, CS, 16."""
    if preamble < 0:
        raise ValueError(f"preamble cannot be negative, got {preamble}")
    user = _user_data(frame)
    length = (len(user) << 2 | frame.protocol).to_bytes(2, "little")
    return bytes((WAKE_UP,)) * preamble + b"%c%b%b%c%b%c%c" % (START, length, length, START, user, sum8(user), END)


def _header_error(body: bytes) -> FrameError | None:
    """What is wrong with the header bytes present, if anything (None also when too few
    bytes are there to tell)."""
    if body[0] != START:
        return FrameError(f"1376.1 frame must start with 68, got {body[0]:02X}")
    if len(body) >= 3:
        word = int.from_bytes(body[1:3], "little")
        if word & 0x03 not in PROTOCOLS:
            return FrameError(f"1376.1 L {body[1]:02X} {body[2]:02X} has protocol id {word & 3}, not 1 or 2")
        if word >> 2 < MIN_USER_DATA:
            return FrameError(f"1376.1 user data of {word >> 2} bytes cannot hold C, A, AFN, SEQ and one DA DT")
    if len(body) >= 5 and body[3:5] != body[1:3]:
        return FrameError(f"1376.1 L fields differ: {body[1:3].hex(' ').upper()} and {body[3:5].hex(' ').upper()}")
    if len(body) >= 6 and body[5] != START:
        return FrameError(f"1376.1 second start byte 68 missing, got {body[5]:02X}")
    return None


def _candidate_size(head: bytes, max_user_data: int) -> int | None:
    """A frame's length from its first bytes (None: not known yet, 0: no frame starts here)."""
    if _header_error(head) is not None:
        return 0
    if len(head) < HEADER_LEN:
        return None
    length = int.from_bytes(head[1:3], "little") >> 2
    return OVERHEAD + length if length <= max_user_data else 0


def _aux_split(user: bytes, direction: Direction, afn: int, protocol: int) -> tuple[bytes, bytes, bytes, bytes]:
    """(payload, PW, EC, Tp) of the user data after SEQ: the auxiliary fields are at the end."""
    c, seq = user[0], user[7]
    rest = user[FIXED_LEN:]
    tp = ec = pw = b""
    if seq & TPV:
        rest, tp = rest[:-TP_SIZE], rest[-TP_SIZE:]
    if direction is Direction.UP and c & FCB_ACD:
        rest, ec = rest[:-EC_SIZE], rest[-EC_SIZE:]
    if carries_pw(direction, afn):
        size = PW_SIZE[protocol]
        rest, pw = rest[:-size], rest[-size:]
    needed = UNIT_ID_LEN + len(pw) + len(ec) + len(tp)
    if len(user) - FIXED_LEN < needed:
        raise FrameError(f"1376.1 user data of {len(user)} bytes too short for a data unit and its PW/EC/Tp ({needed} after SEQ)")
    return rest, pw, ec, tp


def _frame_from_user_data(user: bytes, protocol: int) -> Frame:
    c, a3, afn, seq = user[0], user[5], user[6], user[7]
    direction = Direction(c >> 7)
    payload, pw, ec, tp = _aux_split(user, direction, afn, protocol)
    try:
        return Frame(
            direction=direction,
            prm=c & PRM,
            function=c & FUNCTION_MASK,
            area=user[2:0:-1].hex(),
            terminal=int.from_bytes(user[3:5], "little"),
            afn=afn,
            payload=payload,
            master=a3 >> 1,
            group=a3 & 1,
            seq=seq & SEQ_MASK,
            fir=seq & FIR,
            fin=seq & FIN,
            con=seq & CON,
            fcb=direction is Direction.DOWN and c & FCB_ACD,
            fcv=c & FCV,
            pw=pw or None,
            ec=EventCounters(ec[0], ec[1]) if ec else None,
            tp=_tp_from_wire(tp) if tp else None,
            protocol=protocol,
        )
    except ValueError as exc:  # a field the standard does not allow (A2 = 0, a Tp time that is not BCD, ...)
        raise FrameError(f"1376.1 frame from terminal {user[2:0:-1].hex().upper()}/{int.from_bytes(user[3:5], 'little')}: {exc}") from None


def decode(data: bytes) -> Frame:
    """Exactly one frame from ``data`` (leading FE wake-up bytes allowed).

    Raises :class:`TruncatedFrame` if bytes are missing, :class:`ChecksumError` on a
    wrong CS and :class:`FrameError` for anything else that is not one whole frame.
    """
    body = bytes(data).lstrip(bytes((WAKE_UP,)))
    if not body:
        raise TruncatedFrame(f"no 1376.1 frame: {len(data)} wake-up byte(s) and nothing else")
    error = _header_error(body)
    if error is not None:
        raise error
    if len(body) < HEADER_LEN:
        raise TruncatedFrame(f"1376.1 header needs {HEADER_LEN} bytes, got {len(body)}")
    word = int.from_bytes(body[1:3], "little")
    length = word >> 2
    total = OVERHEAD + length
    if len(body) < total:
        raise TruncatedFrame(f"1376.1 frame with {length} bytes of user data needs {total} bytes, got {len(body)}")
    if len(body) > total:
        raise FrameError(f"{len(body) - total} byte(s) after the end of a 1376.1 frame of {total} bytes")
    if body[-1] != END:
        raise FrameError(f"1376.1 frame must end with 16, got {body[-1]:02X}")
    user = body[HEADER_LEN:-2]
    if sum8(user) != body[-2]:  # CS covers the user data only, C through the last AUX byte
        raise ChecksumError(
            f"1376.1 checksum mismatch from terminal {user[2:0:-1].hex().upper()}/{int.from_bytes(user[3:5], 'little')}: "
            f"frame says {body[-2]:02X}, user data sums to {sum8(user):02X}"
        )
    return _frame_from_user_data(user, word & 0x03)


class StreamDecoder(FrameFinder[Frame]):
    """Finds 1376.1 frames in a byte stream that may hold noise and damaged frames.

    Every 68h whose next five bytes read L L 68 with a valid protocol id and a length of
    at most ``max_user_data`` is a frame candidate, judged when its last byte (known from
    L) arrives; see :mod:`meterhub.framing`. FE wake-up bytes are not counted as noise.
    ``feed`` returns frames and ChecksumError instances for damaged ones, in order.
    """

    def __init__(self, max_user_data: int = MAX_USER_DATA) -> None:
        if not MIN_USER_DATA <= max_user_data <= MAX_USER_DATA:
            raise ValueError(f"max_user_data must be {MIN_USER_DATA}..{MAX_USER_DATA}, got {max_user_data}")
        super().__init__(
            lambda head: _candidate_size(head, max_user_data),
            judge_by_decode(decode),
            lookahead=HEADER_LEN,
            wake_up=WAKE_UP,
            starts=bytes((START,)),
        )
