"""IEC 62056-21 (formerly IEC 1107) direct local data exchange, sans-I/O.

The messages of the optical port (protocol modes A, B, C and the hand-over to E): sign-on
``/?address!CR LF``, identification ``/XXXZ\\W ident CR LF``, option select
``ACK V Z Y CR LF``, data messages ``STX block ETX BCC``, programming-mode commands
``SOH C D STX data ETX BCC`` and single ACK / NAK characters. Functions turn values into
bytes and bytes into values; :class:`StreamDecoder` finds messages in a byte stream.
Nothing here opens a port or sleeps: the timing constants are for the driver and the
simulator to use.

Sources: ``../shared/protocols/README.md`` §5 (the notes; [V] messages and BCC, [U] timing)
and the 27 vectors in ``tests/data/iec62056_21.json``. Where the notes say nothing, the
choice made is stated where it is made.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal, InvalidOperation

import attrs

from meterhub.errors import ChecksumError, FrameError
from meterhub.framing import FrameFinder, judge_by_decode
from meterhub.model import SerialSettings
from meterhub.quantities import OBIS_RE

__all__ = [
    "ACK", "BAUD_SWITCH_WAIT_S", "EOT", "ETX", "INTER_CHARACTER_MAX_S", "MODE_B_BAUD", "MODE_C_BAUD",
    "NAK", "REACTION_FAST_MIN_S", "REACTION_MAX_S", "REACTION_MIN_S", "SIGN_ON_SETTINGS", "SOH", "STX",
    "Ack", "Command", "DataMessage", "DataSet", "ErrorMessage", "Identification", "Message", "Nak",
    "OptionSelect", "SignOn", "StreamDecoder", "bcc", "decode", "decode_command", "decode_data_message",
    "option_select", "parse_data_block", "parse_identification", "parse_option_select", "parse_sign_on",
    "reaction_min", "sign_on",
]

SOH, STX, ETX, EOT, ACK, NAK = 0x01, 0x02, 0x03, 0x04, 0x06, 0x15
CR_LF = b"\r\n"

#: §5.1/§5.3: every session starts at 300 Bd, 7 data bits, even parity, 1 stop bit.
SIGN_ON_SETTINGS = SerialSettings(300, 7, "E", 1)

#: §5.1: protocol mode C (and E) baud-rate characters; "7".."9" are reserved.
MODE_C_BAUD = {"0": 300, "1": 600, "2": 1200, "3": 2400, "4": 4800, "5": 9600, "6": 19200}
#: Protocol mode B baud-rate characters; "G".."I" are reserved.
MODE_B_BAUD = {"A": 600, "B": 1200, "C": 2400, "D": 4800, "E": 9600, "F": 19200}

#: Reaction time tr, minimum: from the end of a message to the start of its answer, 200 ms
#: (§5.3, marked [U] in the notes: from recollection of the standard, not verified).
REACTION_MIN_S = 0.2
#: tr minimum of a "fast" meter, one whose manufacturer id has a lower-case third letter:
#: 20 ms (§5.1 item 2 and §5.3, both [U]).
REACTION_FAST_MIN_S = 0.02
#: Reaction time tr, maximum: 1500 ms (§5.3 [U]). A master waits at least this long.
REACTION_MAX_S = 1.5
#: The longest pause between two characters of one message, 1500 ms (§5.3 [U]).
INTER_CHARACTER_MAX_S = 1.5
#: After the option select (its last character sent), the meter waits at least this long
#: before it talks at the new rate; the master must have switched its port by then. The
#: notes give "wait before changing baud >= 200 ms" (§5.3 [U]) and "the meter switches
#: roughly 200-300 ms after the ACK; one tool waits 250 ms" (§5.1 item 4 [U]). We follow
#: the lower bound, 200 ms: a master switches once its option select has left the UART
#: (its wire time, ~200 ms at 300 Bd) and no later than this after that.
BAUD_SWITCH_WAIT_S = 0.2

#: Lengths the standard sets (the notes §5.1; value and unit [S] from peterzandbergen/iec62056).
MAX_ADDRESS = 32  # device address in a sign-on
MAX_IDENTIFICATION = 16  # identification after the baud character
MAX_VALUE = 32
MAX_UNIT = 16
MAX_DATASET_ADDRESS = 16
#: The longest message the stream decoder waits for (a readout block of a few hundred
#: lines); a longer one is taken as noise.
MAX_MESSAGE = 16384

_RULES = ("xor", "sum")


def reaction_min(fast: bool = False) -> float:
    """The shortest reaction time tr a meter may take (20 ms for a "fast" meter)."""
    return REACTION_FAST_MIN_S if fast else REACTION_MIN_S


# --- block check character --------------------------------------------------------------


def bcc(data: bytes, rule: str = "xor") -> int:
    """The block check character of a message.

    §5.2: it covers the bytes after the first SOH or STX up to and including ETX (or EOT for
    a partial block). ``data`` may be the whole message (a leading SOH/STX is left out and
    whatever follows the first ETX/EOT, e.g. a BCC, is ignored) or just the covered bytes.
    ``rule`` "xor" is the standard; "sum" (arithmetic sum modulo 128) is the deviation of
    the ELV meter family in the notes.
    """
    if rule not in _RULES:
        raise ValueError(f"unknown BCC rule {rule!r} (xor or sum)")
    start = 1 if data[:1] in (b"\x01", b"\x02") else 0
    end = len(data)
    for i in range(start, len(data)):
        if data[i] in (ETX, EOT):
            end = i + 1
            break
    covered = data[start:end]
    if rule == "sum":
        return sum(covered) % 128
    value = 0
    for byte in covered:
        value ^= byte
    return value


def _check_bcc(frame: bytes, rule: str, what: str) -> None:
    expected = bcc(frame[:-1], rule)
    if frame[-1] != expected:
        raise ChecksumError(f"{what}: BCC is {frame[-1]:02X}, the {rule} rule gives {expected:02X}")


# --- sign-on, identification, option select ---------------------------------------------

_ADDRESS_RE = re.compile(r"[0-9A-Za-z ]*")


@attrs.frozen
class SignOn:
    """A request message ``/?address!CR LF`` (empty address: any meter answers)."""

    address: str = ""

    def encode(self) -> bytes:
        return sign_on(self.address)


def sign_on(address: str = "") -> bytes:
    """The sign-on request. The standard allows digits, letters and spaces (leading zeros
    may be left out by the meter) in a device address of at most 32 characters."""
    if len(address) > MAX_ADDRESS:
        raise ValueError(f"device address {address!r} is longer than {MAX_ADDRESS} characters")
    if not _ADDRESS_RE.fullmatch(address):
        raise ValueError(f"device address {address!r} has characters the standard forbids (only 0-9, A-Z, a-z, space)")
    return b"/?" + address.encode("ascii") + b"!\r\n"


def parse_sign_on(line: bytes) -> SignOn:
    """Decode ``/?address!CR LF``; FrameError saying what is wrong."""
    if not (line.startswith(b"/?") and line.endswith(b"!\r\n")):
        raise FrameError(f"not a sign-on (/?...!CR LF): {line!r}")
    address = line[2:-3].decode("ascii", "replace")
    if len(address) > MAX_ADDRESS or not _ADDRESS_RE.fullmatch(address):
        raise FrameError(f"sign-on with a malformed device address {address!r}")
    return SignOn(address)


@attrs.frozen
class Identification:
    """The meter's identification message ``/XXXZ\\W?ident CR LF``.

    ``enhanced`` is the optional enhanced baud-rate and mode identification, with its
    backslash (``"\\2"``: the meter offers protocol mode E).
    """

    manufacturer: str
    baud_char: str
    identification: str
    enhanced: str = ""

    @property
    def fast(self) -> bool:
        """A lower-case third manufacturer letter: the meter reacts in 20 ms (§5.1 [U])."""
        return self.manufacturer[2:3].islower()

    def mode(self) -> str:
        """The protocol mode the baud character announces: "C" for 0-9 ("E" when the
        enhanced identification is ``\\2``), "B" for A-I, "A" for any other character."""
        if self.baud_char.isdigit():
            return "E" if self.enhanced == "\\2" else "C"
        if "A" <= self.baud_char <= "I":
            return "B"
        return "A"

    def baudrate(self) -> int:
        """The highest rate the meter offers. Mode A has no baud character: 300.
        ValueError for a reserved character (mode C "7"-"9", mode B "G"-"I")."""
        mode = self.mode()
        if mode == "A":
            return 300
        table = MODE_B_BAUD if mode == "B" else MODE_C_BAUD
        try:
            return table[self.baud_char]
        except KeyError:
            raise ValueError(f"unknown baud-rate character {self.baud_char!r} (mode {mode})") from None

    def encode(self) -> bytes:
        return ("/" + self.manufacturer + self.baud_char + self.enhanced + self.identification).encode("ascii") + CR_LF


_PRINTABLE = re.compile(r"[\x20-\x7e]*")


def parse_identification(line: bytes) -> Identification:
    """Decode an identification message; FrameError saying what is wrong.

    The standard's manufacturer id is three letters (FLAG); digits are accepted too, as
    a real meter in the vectors sends ``/L15A_ID``. The identification is at most 16
    printable characters other than ``/`` and ``!``.
    """
    if not line.startswith(b"/"):
        raise FrameError(f"identification does not start with '/': {line[:20]!r}")
    if not line.endswith(CR_LF):
        raise FrameError(f"identification does not end with CR LF: {line[-20:]!r}")
    try:
        text = line[1:-2].decode("ascii")
    except UnicodeDecodeError:
        raise FrameError(f"identification garbled (not ASCII): {line!r}") from None
    if not _PRINTABLE.fullmatch(text) or "/" in text or "!" in text:
        raise FrameError(f"identification garbled (control characters, '/' or '!'): {line!r}")
    manufacturer = text[:3]
    if len(manufacturer) < 3 or not manufacturer.isalnum() or not manufacturer[:1].isalpha():
        raise FrameError(f"identification: manufacturer {manufacturer!r} is not 3 letters: {line!r}")
    if len(text) < 4:
        raise FrameError(f"identification has no baud-rate character: {line!r}")
    baud_char, rest = text[3], text[4:]
    enhanced = ""
    if rest.startswith("\\") and len(rest) >= 2:
        enhanced, rest = rest[:2], rest[2:]
    if not rest:
        raise FrameError(f"identification is empty: {line!r}")
    if len(rest) > MAX_IDENTIFICATION:
        raise FrameError(f"identification {rest!r} is longer than {MAX_IDENTIFICATION} characters")
    return Identification(manufacturer, baud_char, rest, enhanced)


@attrs.frozen
class OptionSelect:
    """The acknowledgement/option select message ``ACK V Z Y CR LF``."""

    protocol: str
    baud_char: str
    mode: str

    def encode(self) -> bytes:
        return option_select(self.baud_char, self.mode, self.protocol)


def option_select(baud_char: str, mode: str = "0", protocol: str = "0") -> bytes:
    """``ACK V Z Y CR LF``: protocol control V ("0" normal, "2" HDLC/mode E), baud
    character Z, mode Y ("0" readout, "1" programming, "2" binary: mode E hand-over)."""
    for name, char in (("protocol", protocol), ("baud", baud_char), ("mode", mode)):
        if len(char) != 1 or not char.isascii() or not char.isalnum():
            raise ValueError(f"option select: {name} character {char!r} must be one digit or letter")
    return bytes((ACK,)) + (protocol + baud_char + mode).encode("ascii") + CR_LF


def parse_option_select(data: bytes) -> tuple[str, str, str]:
    """(protocol, baud_char, mode) of an option select; FrameError if it is not one."""
    if len(data) != 6 or data[0] != ACK or not data.endswith(CR_LF):
        raise FrameError(f"not an option select (ACK V Z Y CR LF): {data!r}")
    chars = data[1:4].decode("ascii", "replace")
    if not (chars[0].isdigit() and chars[1].isascii() and chars[1].isalnum() and chars[2].isdigit()):
        raise FrameError(f"option select with malformed characters {chars!r}")
    return chars[0], chars[1], chars[2]


# --- data sets and data messages ---------------------------------------------------------

_REDUCED_OBIS = re.compile(r"(\d{1,3})\.(\d{1,3})(?:\.(\d{1,3}))?(?:[*&](\d{1,3}))?")
_FULL_OBIS = re.compile(r"(\d{1,3})-(\d{1,3}):(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?:[*&](\d{1,3}))?")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")
_STAMP = re.compile(r"\d{10}(\d{2})?")
#: C values that, in a reduced code, belong to abstract objects (A = 0): general purpose
#: (0), service entries (96) and error registers (97).
_ABSTRACT_C = frozenset({0, 96, 97})


@attrs.frozen
class DataSet:
    """One ``address(value*unit)(extra)...`` of a data line (empty address: a bare
    ``(value)`` answer in programming mode)."""

    address: str
    value: str
    unit: str = ""
    extra: tuple[str, ...] = ()

    def obis(self) -> str | None:
        """The meterhub OBIS code ``A-B:C.D.E``, or None if the address is not an OBIS
        number (``C.1.0``, ``F.F``, ``3:14``) or names a historical value.

        Rule followed: a full code ``A-B:C.D.E[*F]`` keeps A, B, C, D, E. A reduced code
        ``C.D[.E][*F]`` gets B = 0, E = 0 when left out (``32.7`` is ``1-0:32.7.0``), and
        A = 0 for C = 0, 96, 97 (abstract: time, service entries, error registers), A = 1
        (electricity) for any other C. F other than 255 (``*01``: a billing period) is
        not the current register, so None.
        """
        address = self.address.strip()
        full = _FULL_OBIS.fullmatch(address)
        if full:
            a, b, c, d, e, f = full.groups()
        else:
            reduced = _REDUCED_OBIS.fullmatch(address)
            if not reduced:
                return None
            c, d, e, f = reduced.groups()
            e = e or "0"
            a, b = ("0" if int(c) in _ABSTRACT_C else "1"), "0"
        if f is not None and int(f) != 255:
            return None
        parts = [int(x) for x in (a, b, c, d, e)]
        if any(x > 255 for x in parts):
            return None
        code = "{}-{}:{}.{}.{}".format(*parts)
        return code if OBIS_RE.match(code) else None

    def decimal(self) -> Decimal:
        """The value as an exact Decimal; ValueError if it is not a number."""
        text = self.value.strip()
        if not _NUMBER.fullmatch(text):
            raise ValueError(f"{self.address}: value {self.value!r} is not a number")
        try:
            return Decimal(text)
        except InvalidOperation:  # (not reached with the pattern above)
            raise ValueError(f"{self.address}: value {self.value!r} is not a number") from None

    def timestamp(self) -> datetime | None:
        """The time of an extra ``YYMMDDhhmm[ss]`` value (naive, the meter's local time),
        None when there is none; ValueError for one that is no valid date."""
        for extra in self.extra:
            text = extra.strip()
            if _STAMP.fullmatch(text):
                fields = [int(text[i : i + 2]) for i in range(0, len(text), 2)]
                try:
                    return datetime(2000 + fields[0], *fields[1:])
                except ValueError as exc:
                    raise ValueError(f"{self.address}: time stamp {extra!r} is no valid date: {exc}") from None
        return None

    def encode(self) -> bytes:
        value = self.value + ("*" + self.unit if self.unit else "")
        return (self.address + "(" + value + ")" + "".join("(" + x + ")" for x in self.extra)).encode("ascii")


def _parse_block(block: bytes) -> tuple[tuple[DataSet, ...], tuple[int, ...], bool]:
    """(data sets, the count of data sets after which a CR LF follows, whether the block
    ends with the ``!`` CR LF end line)."""
    try:
        text = block.decode("ascii")
    except UnicodeDecodeError:
        raise FrameError(f"data block is not ASCII: {block[:40]!r}") from None
    datasets: list[DataSet] = []
    breaks: list[int] = []
    end_line = False
    i, n = 0, len(text)
    while i < n:
        if text.startswith("\r\n", i):
            breaks.append(len(datasets))
            i += 2
            continue
        if text.startswith("!\r\n", i) or text[i:] == "!":
            if text[i:] not in ("!\r\n", "!"):
                raise FrameError(f"data block goes on after its end line '!': {text[i:i + 40]!r}")
            end_line = True
            break
        opening = text.find("(", i)
        if opening < 0:
            raise FrameError(f"data block: {text[i:i + 40]!r} has no '(' value")
        address = text[i:opening]
        if any(ch in address for ch in ")!\r\n/") or not _PRINTABLE.fullmatch(address):
            raise FrameError(f"data block: malformed address {address!r}")
        if len(address) > MAX_DATASET_ADDRESS:
            raise FrameError(f"data block: address {address!r} is longer than {MAX_DATASET_ADDRESS} characters")
        values: list[str] = []
        j = opening
        while j < n and text[j] == "(":
            closing = text.find(")", j + 1)
            inner = text[j + 1 : closing] if closing >= 0 else text[j + 1 :]
            if closing < 0 or "(" in inner or "\r" in inner or "\n" in inner:
                raise FrameError(f"data block: unbalanced parentheses after {address!r}: {text[j:j + 40]!r}")
            if not _PRINTABLE.fullmatch(inner):
                raise FrameError(f"data block: control characters in the value of {address!r}")
            values.append(inner)
            j = closing + 1
        if j < n and text[j] == ")":
            raise FrameError(f"data block: unbalanced parentheses after {address!r}")
        value, _, unit = values[0].partition("*")
        if len(value) > MAX_VALUE:
            raise FrameError(f"data block: value of {address!r} is longer than {MAX_VALUE} characters")
        if len(unit) > MAX_UNIT:
            raise FrameError(f"data block: unit of {address!r} is longer than {MAX_UNIT} characters")
        datasets.append(DataSet(address, value, unit, tuple(values[1:])))
        i = j
    return tuple(datasets), tuple(breaks), end_line


def parse_data_block(block: bytes) -> tuple[DataSet, ...]:
    """The data sets of a data block (what lies between STX and ETX/EOT): lines separated
    by CR LF, several data sets per line allowed, an end line ``!`` CR LF after the last.
    FrameError for a malformed block (value > 32 characters, unit > 16, unbalanced
    parentheses, text after the end line)."""
    return _parse_block(block)[0]


@attrs.frozen
class ErrorMessage:
    """A meter's error answer: a data block that is only ``(text)`` with the text
    starting "ER" (``(ER01)``, ``(ERROR)``)."""

    text: str

    def encode(self, rule: str = "xor") -> bytes:
        body = b"(" + self.text.encode("ascii") + b")" + bytes((ETX,))
        return bytes((STX,)) + body + bytes((bcc(body, rule),))


@attrs.frozen
class DataMessage:
    """``STX data-block ETX BCC`` (``EOT`` for a partial block: ``complete`` False).

    ``breaks`` and ``end_line`` say how the block is laid out, so that a decoded message
    encodes to the same bytes: after how many data sets a CR LF follows (None: after each
    one, the usual readout), and whether the ``!`` CR LF end line of a readout closes it.
    """

    datasets: tuple[DataSet, ...]
    complete: bool = True
    breaks: tuple[int, ...] | None = attrs.field(default=None, kw_only=True)
    end_line: bool = attrs.field(default=True, kw_only=True)

    def block(self) -> bytes:
        """The data block between STX and ETX/EOT."""
        breaks = self.breaks if self.breaks is not None else tuple(range(1, len(self.datasets) + 1))
        out = bytearray()
        for k in range(len(self.datasets) + 1):
            if k:
                out += self.datasets[k - 1].encode()
            out += CR_LF * breaks.count(k)
        if self.end_line:
            out += b"!\r\n"
        return bytes(out)

    def encode(self, rule: str = "xor") -> bytes:
        body = self.block() + bytes((ETX if self.complete else EOT,))
        return bytes((STX,)) + body + bytes((bcc(body, rule),))


def decode_data_message(frame: bytes, rule: str = "xor") -> DataMessage | ErrorMessage:
    """Decode ``STX block ETX|EOT BCC``: ChecksumError for a wrong BCC, FrameError for
    anything else wrong."""
    if len(frame) < 3 or frame[0] != STX or frame[-2] not in (ETX, EOT):
        raise FrameError(f"not a data message (STX ... ETX BCC): {frame[:20]!r}")
    block = frame[1:-2]
    if any(b in (SOH, STX, ETX, EOT) for b in block):
        raise FrameError("data message with a control character inside its block")
    _check_bcc(frame, rule, "data message")
    datasets, breaks, end_line = _parse_block(block)
    if (
        len(datasets) == 1 and not datasets[0].address and not datasets[0].unit and not datasets[0].extra
        and datasets[0].value.upper().startswith("ER") and not breaks and not end_line
    ):
        return ErrorMessage(datasets[0].value)
    one_per_line = breaks == tuple(range(1, len(datasets) + 1))
    return DataMessage(datasets, frame[-2] == ETX, breaks=None if one_per_line else breaks, end_line=end_line)


# --- programming-mode commands ------------------------------------------------------------

_COMMANDS = "PWREB"


@attrs.frozen
class Command:
    """A programming-mode command ``SOH C D STX data ETX BCC`` (no data: ``SOH C D ETX
    BCC``, as B0). C: P password, W write, R read, E execute, B break; D the subtype
    (P0 from the meter: the operand; P1/P2 password; R1/W1 formatted, R2/W2 unformatted)."""

    command: str
    subtype: str
    data: bytes = b""

    def encode(self, rule: str = "xor") -> bytes:
        if len(self.command) != 1 or self.command not in _COMMANDS:
            raise ValueError(f"unknown command {self.command!r} (one of {_COMMANDS})")
        if len(self.subtype) != 1 or not self.subtype.isdigit():
            raise ValueError(f"command subtype {self.subtype!r} must be one digit")
        if any(b in (SOH, STX, ETX, EOT) for b in self.data):
            raise ValueError("command data must not hold SOH, STX, ETX or EOT")
        body = (self.command + self.subtype).encode("ascii")
        if self.data:
            body += bytes((STX,)) + self.data
        body += bytes((ETX,))
        return bytes((SOH,)) + body + bytes((bcc(body, rule),))

    def text(self) -> str:
        """The data as text (ASCII; other bytes replaced)."""
        return self.data.decode("ascii", "replace")


def decode_command(frame: bytes, rule: str = "xor") -> Command:
    """Decode a command; ChecksumError for a wrong BCC, FrameError for anything else."""
    if len(frame) < 5 or frame[0] != SOH or frame[-2] != ETX:
        raise FrameError(f"not a command (SOH C D [STX data] ETX BCC): {frame[:20]!r}")
    command, subtype = chr(frame[1]), chr(frame[2])
    if command not in _COMMANDS or not subtype.isdigit():
        raise FrameError(f"unknown command {command + subtype!r}")
    if len(frame) == 5:
        data = b""
    elif frame[3] == STX:
        data = frame[4:-2]
    else:
        raise FrameError(f"command {command + subtype}: no STX before its data")
    if any(b in (SOH, STX, ETX, EOT) for b in data):
        raise FrameError(f"command {command + subtype}: control character inside its data")
    _check_bcc(frame, rule, f"command {command + subtype}")
    return Command(command, subtype, data)


# --- single characters --------------------------------------------------------------------


@attrs.frozen
class Ack:
    """A single ACK (positive acknowledgement)."""

    def encode(self) -> bytes:
        return bytes((ACK,))


@attrs.frozen
class Nak:
    """A single NAK (negative acknowledgement; the master repeats its request)."""

    def encode(self) -> bytes:
        return bytes((NAK,))


Message = SignOn | Identification | OptionSelect | DataMessage | ErrorMessage | Command | Ack | Nak


def decode(frame: bytes, rule: str = "xor") -> Message:
    """Decode one whole message of any kind (told by its first byte)."""
    if not frame:
        raise FrameError("empty message")
    first = frame[0]
    if first == STX:
        return decode_data_message(frame, rule)
    if first == SOH:
        return decode_command(frame, rule)
    if first == ord("/"):
        if frame.startswith(b"/?"):
            return parse_sign_on(frame)
        return parse_identification(frame)
    if first == ACK and len(frame) > 1:
        return OptionSelect(*parse_option_select(frame))
    if frame == bytes((ACK,)):
        return Ack()
    if frame == bytes((NAK,)):
        return Nak()
    raise FrameError(f"no IEC 62056-21 message starts with {first:02X}")


# --- stream decoder -----------------------------------------------------------------------

#: Control characters a command's data may hold (the vectors have a NUL in a P0 operand):
#: all but SOH, STX, ETX, EOT, ACK and NAK.
_COMMAND_CONTROLS = bytes(b for b in range(0x20) if b not in (SOH, STX, ETX, EOT, ACK, NAK))
_MAX_LINE = 2 + MAX_ADDRESS + 3  # the longer of a sign-on and an identification line


def _size(head: bytes) -> int | None:
    """The length of the message that starts with ``head`` (see meterhub.framing)."""
    first = head[0]
    if first == ord("/"):
        for i in range(1, min(len(head), _MAX_LINE)):
            byte = head[i]
            if byte == 0x0A:
                return i + 1 if head[i - 1] == 0x0D else 0
            if (byte < 0x20 and byte != 0x0D) or byte == ord("/"):
                return 0
        return 0 if len(head) >= _MAX_LINE else None
    if first == ACK:
        if len(head) < 2:
            return None
        return 6 if 0x30 <= head[1] <= 0x39 else 0
    if first == SOH:
        if len(head) < 4:
            return None
        if head[1] not in b"PWREB" or not 0x30 <= head[2] <= 0x39:
            return 0
        if head[3] == ETX:
            return 5
        if head[3] != STX:
            return 0
        return _to_end(head, 4, _COMMAND_CONTROLS)
    if first == STX:
        return _to_end(head, 1, b"\r\n")
    return 0


def _to_end(head: bytes, start: int, allowed: bytes) -> int | None:
    """The length up to the first ETX/EOT from ``start`` plus the BCC; 0 if another
    control character not in ``allowed`` comes first (a single ACK/NAK, an SOH or STX
    never lie inside a message) or the message is longer than MAX_MESSAGE."""
    for i in range(start, len(head)):
        byte = head[i]
        if byte < 0x20 and byte not in allowed:
            return i + 2 if byte in (ETX, EOT) else 0
    return 0 if len(head) >= MAX_MESSAGE else None


class StreamDecoder(FrameFinder[Message]):
    """The messages in a byte stream (see :class:`meterhub.framing.FrameFinder`).

    ``feed`` returns SignOn, Identification, OptionSelect, DataMessage, ErrorMessage,
    Command, Ack and Nak values in stream order, and a ChecksumError instance for a
    message whose BCC is wrong (``rule``: "xor" or "sum"); anything else is noise,
    counted in ``skipped``. A message not yet whole stays ``pending``.

    A single ACK or NAK carries no check and may be the last byte a meter sends, so it is
    delivered as soon as it arrives: the ACK that starts an option select is therefore
    also delivered as an Ack, just before its OptionSelect (whatever the split of the data).
    A master hears its own sign-on and option select on a half-duplex optical probe: they
    come out as SignOn and OptionSelect (after an Ack), for the driver to drop.
    """

    def __init__(self, rule: str = "xor") -> None:
        if rule not in _RULES:
            raise ValueError(f"unknown BCC rule {rule!r} (xor or sum)")
        self.rule = rule

        def decode_one(frame: bytes) -> Message:
            return decode(frame, rule)

        judge_alone = judge_by_decode(decode_one)
        damaged_command = b""  # the body of the damaged command judged just before, if any

        def judge(body: bytes, aligned: bool) -> Message | FrameError | None:
            # A command's data starts with STX, so a damaged command also looks like a
            # damaged data message ending at the same byte (judged right after it): that
            # one is the command's inside, not a second damaged message.
            nonlocal damaged_command
            item = judge_alone(body, aligned)
            if isinstance(item, FrameError) and body[0] == STX and damaged_command.endswith(body):
                item = None
            damaged_command = body if isinstance(item, FrameError) and body[0] == SOH else b""
            return item

        super().__init__(
            _size,
            judge,
            lookahead=MAX_MESSAGE,
            singles={ACK: Ack, NAK: Nak},
            starts=b"/\x01\x02\x06",
        )
