"""Q/GDW 1376.2-2013 frame codec (concentrator <-> local communication module: narrowband
PLC, HPLC, micro-power wireless), sans-I/O.

One frame shape serves every exchange (protocols README §4.1)::

    68 L L | C | R1..R6 | [A: source, relays, destination, 6 bytes each] | AFN | DT1 DT2 | data | CS 16
           |<------------------------- CS covers these ------------------------------>|

``decode``/``encode`` turn one frame into a :class:`Frame` and back, byte for byte;
:class:`StreamDecoder` finds frames in whatever bytes the module's serial port delivers.
A frame carries one data unit (one AFN, one Fn); :class:`Frame` keeps its bytes as sent,
``data``, and :mod:`meterhub.protocols.gdw1376_2_data` says what they mean (pymodbus keeps
framer and PDU apart for the same reason), so frames of Fn nobody here knows still decode
and re-encode exactly. A DL/T 645 frame carried inside (AFN 02, 13, 14) is bytes here.

Decisions where the sources differ or say nothing (labels of gdw1376-details.md):

* L is the total frame length, 68 through 16 (2 bytes, no protocol bits) [V]; a frame is
  at least 15 bytes (no address field, no data).
* The information field R means different things by direction [V: the 2019 text's tables
  4 and 5 plus the 2017 captures]. Downlink every bit has a meaning (:class:`DownInfo`).
  Uplink (:class:`UpInfo`), real modules set reserved bits (R2's high nibble, R5 = FEh,
  R1 D3); the details note says to mask them. They are masked out of every field and kept
  apart, in ``UpInfo.reserved``, only so that a frame re-encodes to the bytes it came from.
* The address field is present exactly when R1 D2 (the communication-module flag) is 1.
  Downlink it holds source, R1 D7-D4 relay addresses, destination (README §4.1; one
  concentrator firmware, search-index id 38785614733, sizes it 12 + 6 × relay level). Uplink it holds source and
  destination only, whatever R1 D7-D4 says [V: the 2019 text §6.3 b and captures with
  R1 = FCh whose L fits only 12 address bytes]; we follow the note, not the README's
  "source, relays, destination" for both directions.
* DT names exactly one Fn (one data unit per frame; DT1 with no bit or several bits set is
  a FrameError, where LN's parser silently keeps the highest bit). DT2 above 30 (Fn > 248)
  is rejected, as in 1376.1.
* No FE wake-up bytes: the local UART link sends none in any capture, so a leading FE is
  not part of a frame (the stream decoder counts it as noise).
* Communication modes in C D5-D0: 1 centralised-route narrowband PLC, 2 distributed-route
  PLC, 3 broadband HPLC, 10 micro-power wireless, 20 Ethernet [S; V for 1 and 3]; any value
  0..63 is kept, only the known ones have names.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

import attrs

from ..errors import ChecksumError, FrameError, TruncatedFrame
from ..framing import FrameFinder, judge_by_decode
from .bcd import sum8
from .gdw1376_1 import in_range

START = 0x68
END = 0x16
LENGTH_AT = 1  #: L follows the start byte, 2 bytes, low byte first
HEAD_LEN = 3  #: 68 L L: enough to know a frame's length
INFO_LEN = 6  #: R1..R6
ADDRESS_LEN = 6  #: each address of the address field, low byte first
MIN_LENGTH = HEAD_LEN + 1 + INFO_LEN + 1 + 2 + 2  #: 68 L L C R AFN DT CS 16, no address, no data: 15
MAX_LENGTH = 0xFFFF  #: L is 2 bytes
MAX_FN = 248  #: DT2 0..30: 31 groups of 8 functions
MAX_RELAYS = 15  #: R1 D7-D4

# C field (README §4.1).
DIR_UP = 0x80  #: D7: 1 = uplink (module -> concentrator)
PRM = 0x40  #: D6: 1 = the frame comes from the initiating (primary) station
MODE_MASK = 0x3F  #: D5-D0: communication mode

# R1 bits, both directions.
NO_ROUTING = 0x01  #: D0: 1 = the module does not route (bypass mode)
ATTACHED = 0x02  #: D1 (downlink): attached-node flag
MODULE = 0x04  #: D2: 1 = addressed to/from a slave node's module: the address field is present
CONFLICT = 0x08  #: D3 (downlink): conflict detection
RELAY_SHIFT = 4  #: D7-D4: relay level
RATE_KBPS = 0x8000  #: R4-R5 D15: the rate counts kbit/s (else bit/s)
RATE_MASK = 0x7FFF

#: Uplink R1..R6 bits the 2019 text (table 5) leaves reserved; modules fill them with junk.
UP_RESERVED = bytes((0x0A, 0xF0, 0x00, 0x00, 0xFE, 0x00))


class Direction(enum.IntEnum):
    """C bit D7: who sends the frame."""

    DOWN = 0  #: concentrator -> module
    UP = 1  #: module -> concentrator


class CommMode(enum.IntEnum):
    """C D5-D0: the local channel's communication mode."""

    CENTRALISED_PLC = 1  #: centralised-route narrowband power-line carrier
    DISTRIBUTED_PLC = 2  #: distributed-route narrowband power-line carrier
    HPLC = 3  #: broadband power-line carrier
    MICROPOWER_WIRELESS = 10
    ETHERNET = 20


class Afn(enum.IntEnum):
    """Application function codes (README §4.2)."""

    CONFIRM = 0x00  #: confirm / deny
    INIT = 0x01  #: initialise hardware, parameters, data
    FORWARD = 0x02  #: data forward
    QUERY = 0x03  #: query data
    LINK_TEST = 0x04  #: link interface test
    CONTROL = 0x05  #: control commands
    REPORT = 0x06  #: the module's active reports
    ROUTE_QUERY = 0x10
    ROUTE_SET = 0x11
    ROUTE_CONTROL = 0x12
    ROUTE_FORWARD = 0x13  #: read a slave node through the network (monitor)
    ROUTE_READ = 0x14  #: router-led reading: the module asks the concentrator
    FILE = 0x15
    CONCURRENT = 0xF1  #: concurrent reading: several meters' frames in flight at once (2019)


_byte = in_range(0, 0xFF)
_nibble = in_range(0, 0x0F)


def address_to_wire(address: str) -> bytes:
    """The 6 bytes of an address printed most significant first ("000000003304" -> 04 33 00 00 00 00).
    Not checked to be BCD: module addresses and DL/T 645 wildcards are hex too."""
    text = str(address)
    if len(text) != 2 * ADDRESS_LEN:
        raise ValueError(f"an address is {2 * ADDRESS_LEN} hex digits, got {address!r}")
    return bytes.fromhex(text)[::-1]


def address_from_wire(data: bytes) -> str:
    """The address printed most significant first of 6 bytes as sent."""
    return bytes(data[:ADDRESS_LEN])[::-1].hex().upper()


def _address(value: object) -> str:
    text = str(value).strip().upper()
    try:
        address_to_wire(text)
    except ValueError:
        raise ValueError(f"an address is {2 * ADDRESS_LEN} hex digits, got {value!r}") from None
    return text


def _addresses(values: Iterable[object]) -> tuple[str, ...]:
    return tuple(_address(v) for v in values)


# --- the information field R ---------------------------------------------------------------


@attrs.frozen
class DownInfo:
    """R of a downlink frame (2019 text table 4, README §4.1).

    ``module`` (R1 D2) says the frame is for a slave node's module and carries the
    address field; ``relay_level`` (R1 D7-D4) is how many relay addresses it holds;
    ``no_routing`` (R1 D0) asks the module to bypass its routing; ``attached`` (D1) and
    ``conflict_detection`` (D3) are flags; ``channel`` and ``fec`` are R2's nibbles;
    ``expected_reply`` (R3) the reply's expected byte count; ``rate`` (R4-R5 D14-D0, 0 =
    default) counts kbit/s when ``rate_kbps`` (D15), else bit/s; ``seq`` (R6) is echoed
    by the reply.
    """

    seq: int = attrs.field(default=0, validator=_byte)
    module: bool = attrs.field(default=False, converter=bool)
    relay_level: int = attrs.field(default=0, validator=_nibble)
    no_routing: bool = attrs.field(default=False, converter=bool)
    attached: bool = attrs.field(default=False, converter=bool)
    conflict_detection: bool = attrs.field(default=False, converter=bool)
    channel: int = attrs.field(default=0, validator=_nibble)
    fec: int = attrs.field(default=0, validator=_nibble)
    expected_reply: int = attrs.field(default=0, validator=_byte)
    rate: int = attrs.field(default=0, validator=in_range(0, RATE_MASK))
    rate_kbps: bool = attrs.field(default=False, converter=bool)

    def encode(self) -> bytes:
        r1 = self.relay_level << RELAY_SHIFT | self.conflict_detection << 3 | self.module << 2 | self.attached << 1 | self.no_routing
        rate = self.rate_kbps << 15 | self.rate
        return bytes((r1, self.fec << 4 | self.channel, self.expected_reply, rate & 0xFF, rate >> 8, self.seq))

    @classmethod
    def decode(cls, data: bytes) -> DownInfo:
        r1, r2, r3, r4, r5, r6 = data[:INFO_LEN]
        rate = r5 << 8 | r4
        return cls(
            seq=r6,
            module=r1 & MODULE,
            relay_level=r1 >> RELAY_SHIFT,
            no_routing=r1 & NO_ROUTING,
            attached=r1 & ATTACHED,
            conflict_detection=r1 & CONFLICT,
            channel=r2 & 0x0F,
            fec=r2 >> 4,
            expected_reply=r3,
            rate=rate & RATE_MASK,
            rate_kbps=rate & RATE_KBPS,
        )


def _up_reserved(_instance: object, _attribute: object, value: bytes) -> None:
    if len(value) != INFO_LEN or any(v & ~mask for v, mask in zip(value, UP_RESERVED, strict=True)):
        raise ValueError(f"UpInfo.reserved is 6 bytes within the reserved bits {UP_RESERVED.hex(' ').upper()}, got {value!r}")


@attrs.frozen
class UpInfo:
    """R of an uplink frame (2019 text table 5; details §3.2).

    ``module``, ``relay_level``, ``no_routing`` as downlink; ``channel`` (R2 D3-D0);
    ``phase`` (R3 D3-D0: 0 unknown, 1-3 the measured phase); ``channel_feature`` (R3
    D7-D4: 1 single-phase 1 channel ... 4 three-phase 3 channels); ``command_quality`` and
    ``reply_quality`` (R4 nibbles: last hop's signal quality, 0 none, 1 lowest .. 15);
    ``event`` (R5 D0: the module has a slave event to report); ``seq`` (R6) echoes the
    request. ``reserved`` holds the reserved bits as the module sent them (masked out of
    every field; see the module docstring).
    """

    seq: int = attrs.field(default=0, validator=_byte)
    module: bool = attrs.field(default=False, converter=bool)
    relay_level: int = attrs.field(default=0, validator=_nibble)
    no_routing: bool = attrs.field(default=False, converter=bool)
    channel: int = attrs.field(default=0, validator=_nibble)
    phase: int = attrs.field(default=0, validator=_nibble)
    channel_feature: int = attrs.field(default=0, validator=_nibble)
    command_quality: int = attrs.field(default=0, validator=_nibble)
    reply_quality: int = attrs.field(default=0, validator=_nibble)
    event: bool = attrs.field(default=False, converter=bool)
    reserved: bytes = attrs.field(default=bytes(INFO_LEN), converter=bytes, validator=_up_reserved)

    def encode(self) -> bytes:
        r = self.reserved
        return bytes(
            (
                self.relay_level << RELAY_SHIFT | self.module << 2 | self.no_routing | r[0],
                self.channel | r[1],
                self.channel_feature << 4 | self.phase,
                self.reply_quality << 4 | self.command_quality,
                self.event | r[4],
                self.seq,
            )
        )

    @classmethod
    def decode(cls, data: bytes) -> UpInfo:
        r1, r2, r3, r4, r5, r6 = data[:INFO_LEN]
        return cls(
            seq=r6,
            module=r1 & MODULE,
            relay_level=r1 >> RELAY_SHIFT,
            no_routing=r1 & NO_ROUTING,
            channel=r2 & 0x0F,
            phase=r3 & 0x0F,
            channel_feature=r3 >> 4,
            command_quality=r4 & 0x0F,
            reply_quality=r4 >> 4,
            event=r5 & 1,
            reserved=bytes(v & mask for v, mask in zip(data[:INFO_LEN], UP_RESERVED, strict=True)),
        )


Info = DownInfo | UpInfo


# --- the address field and DT ------------------------------------------------------------------


@attrs.frozen
class Addresses:
    """The address field: ``source`` (downlink the main node, uplink the slave node),
    the ``relays`` in the order the frame passes them (downlink only), ``destination``."""

    source: str = attrs.field(converter=_address)
    destination: str = attrs.field(converter=_address)
    relays: tuple[str, ...] = attrs.field(default=(), converter=_addresses)

    def __attrs_post_init__(self) -> None:
        if len(self.relays) > MAX_RELAYS:
            raise ValueError(f"R1 D7-D4 counts at most {MAX_RELAYS} relays, got {len(self.relays)}")

    def encode(self) -> bytes:
        return b"".join(address_to_wire(a) for a in (self.source, *self.relays, self.destination))


def fn_to_dt(fn: int) -> bytes:
    """DT1 DT2 of one Fn: bit (Fn - 1) mod 8 of DT1, group (Fn - 1) div 8 in DT2 (F1 is 01 00)."""
    if not 1 <= fn <= MAX_FN:
        raise ValueError(f"Fn must be 1..{MAX_FN}, got {fn!r}")
    return bytes((1 << (fn - 1) % 8, (fn - 1) // 8))


def dt_to_fn(data: bytes) -> int:
    """The Fn of DT1 DT2; FrameError unless DT1 has exactly one bit set and DT2 is 0..30."""
    dt1, dt2 = data[0], data[1]
    if dt1 == 0 or dt1 & (dt1 - 1):
        raise FrameError(f"DT {dt1:02X} {dt2:02X}: a 1376.2 frame names exactly one Fn, DT1 must have one bit set")
    if dt2 > (MAX_FN - 1) // 8:
        raise FrameError(f"DT2 = {dt2} is above 30 (Fn > {MAX_FN})")
    return dt2 * 8 + dt1.bit_length()


# --- the frame ----------------------------------------------------------------------------


@attrs.frozen
class Frame:
    """One 1376.2 frame.

    ``mode`` is C D5-D0 (a :class:`CommMode` value where known); ``info`` is a
    :class:`DownInfo` or :class:`UpInfo` as ``direction`` says; ``addresses`` is present
    exactly when ``info.module`` (downlink with ``info.relay_level`` relays, uplink with
    none); ``data`` is the data unit of ``fn`` as sent.
    """

    direction: Direction = attrs.field(converter=Direction)
    prm: bool = attrs.field(converter=bool)
    mode: int = attrs.field(validator=in_range(0, MODE_MASK))
    info: Info
    afn: int = attrs.field(validator=_byte)
    fn: int = attrs.field(validator=in_range(1, MAX_FN))
    data: bytes = attrs.field(default=b"", converter=bytes)
    addresses: Addresses | None = None

    def __attrs_post_init__(self) -> None:
        up = self.direction is Direction.UP
        if not isinstance(self.info, UpInfo if up else DownInfo):
            raise TypeError(f"a {self.direction.name.lower()}link frame's R is {'UpInfo' if up else 'DownInfo'}, got {type(self.info).__name__}")
        if self.info.module != (self.addresses is not None):
            raise ValueError("the address field is present exactly when R1 D2 (info.module) is set")
        if self.addresses is not None:
            relays = 0 if up else self.info.relay_level
            if len(self.addresses.relays) != relays:
                where = "uplink frames carry no relay addresses" if up else f"R1 says {relays} relay(s)"
                raise ValueError(f"{where}, got {len(self.addresses.relays)}")
        if self.length > MAX_LENGTH:
            raise ValueError(f"a frame of {self.length} bytes exceeds the {MAX_LENGTH} L can hold")

    @property
    def control(self) -> int:
        """The C byte."""
        return self.direction << 7 | self.prm << 6 | self.mode

    @property
    def length(self) -> int:
        """L: the whole frame's length in bytes."""
        address = 0 if self.addresses is None else ADDRESS_LEN * (2 + len(self.addresses.relays))
        return MIN_LENGTH + address + len(self.data)


def encode(frame: Frame) -> bytes:
    """The wire bytes of ``frame``: 68 L L, C R [A] AFN DT data, CS, 16."""
    address = b"" if frame.addresses is None else frame.addresses.encode()
    checked = b"%c%b%b%c%b%b" % (frame.control, frame.info.encode(), address, frame.afn, fn_to_dt(frame.fn), frame.data)
    return b"%c%b%b%c%c" % (START, frame.length.to_bytes(2, "little"), checked, sum8(checked), END)


def _frame_from(checked: bytes) -> Frame:
    """The frame whose bytes from C to the last data byte are ``checked``."""
    c, r1 = checked[0], checked[1]
    direction = Direction(c >> 7)
    up = direction is Direction.UP
    info = UpInfo.decode(checked[1:7]) if up else DownInfo.decode(checked[1:7])
    at = 1 + INFO_LEN
    addresses = None
    if r1 & MODULE:
        relays = 0 if up else r1 >> RELAY_SHIFT
        size = ADDRESS_LEN * (2 + relays)
        if len(checked) < at + size + 3:
            raise FrameError(f"1376.2 frame of {len(checked) + 5} bytes too short for its address field ({size} bytes) and AFN DT")
        found = [address_from_wire(checked[i : i + ADDRESS_LEN]) for i in range(at, at + size, ADDRESS_LEN)]
        addresses = Addresses(found[0], found[-1], found[1:-1])
        at += size
    return Frame(direction, c & PRM, c & MODE_MASK, info, checked[at], dt_to_fn(checked[at + 1 : at + 3]), checked[at + 3 :], addresses)


def decode(data: bytes) -> Frame:
    """Exactly one frame from ``data``.

    Raises :class:`TruncatedFrame` if bytes are missing, :class:`ChecksumError` on a
    wrong CS and :class:`FrameError` for anything else that is not one whole frame.
    """
    body = bytes(data)
    if not body:
        raise TruncatedFrame("no 1376.2 frame: no bytes")
    if body[0] != START:
        raise FrameError(f"1376.2 frame must start with 68, got {body[0]:02X}")
    if len(body) < HEAD_LEN:
        raise TruncatedFrame(f"1376.2 header needs {HEAD_LEN} bytes, got {len(body)}")
    length = int.from_bytes(body[LENGTH_AT:HEAD_LEN], "little")
    if length < MIN_LENGTH:
        raise FrameError(f"1376.2 L = {length} is below the {MIN_LENGTH} bytes of a frame without data")
    if len(body) < length:
        raise TruncatedFrame(f"1376.2 frame of L = {length} bytes, got {len(body)}")
    if len(body) > length:
        raise FrameError(f"{len(body) - length} byte(s) after the end of a 1376.2 frame of {length} bytes")
    if body[-1] != END:
        raise FrameError(f"1376.2 frame must end with 16, got {body[-1]:02X}")
    checked = body[HEAD_LEN:-2]
    if sum8(checked) != body[-2]:  # CS covers C through the last data byte
        raise ChecksumError(f"1376.2 checksum mismatch: frame says {body[-2]:02X}, C through data sum to {sum8(checked):02X}")
    return _frame_from(checked)


def _candidate_size(head: bytes, max_length: int) -> int | None:
    """A frame's length from its first bytes (None: not known yet, 0: no frame starts here)."""
    if head[0] != START:
        return 0
    if len(head) < HEAD_LEN:
        return None
    length = head[1] | head[2] << 8
    return length if MIN_LENGTH <= length <= max_length else 0


class StreamDecoder(FrameFinder[Frame]):
    """Finds 1376.2 frames in a byte stream that may hold noise and damaged frames.

    Every 68h whose L is ``MIN_LENGTH``..``max_length`` is a frame candidate, judged when
    its last byte arrives; see :mod:`meterhub.framing`. ``feed`` returns frames and
    ChecksumError instances for damaged ones, in order. The header is short (68 L L), so a
    stray 68h in noise holds up to ``max_length`` bytes pending (a real frame after it is
    still delivered at once); a driver that knows the module's maximum frame length (03
    F10) should pass it.
    """

    def __init__(self, max_length: int = MAX_LENGTH) -> None:
        if not MIN_LENGTH <= max_length <= MAX_LENGTH:
            raise ValueError(f"max_length must be {MIN_LENGTH}..{MAX_LENGTH}, got {max_length}")
        super().__init__(
            lambda head: _candidate_size(head, max_length),
            judge_by_decode(decode),
            lookahead=HEAD_LEN,
            starts=bytes((START,)),
            # A carried DL/T 645 frame starts with 68h too, and its candidate may end
            # before the frame around it: its checksum error is no damaged frame.
            hold_errors=True,
        )
