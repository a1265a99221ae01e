"""The ACME MX4 envelope codec, sans-I/O.

The MX4 is a (fictional) gateway with four RS485 ports, reached over TCP. Every meter
frame crosses the TCP connection wrapped in one envelope, in both directions::

    A5 | tag | port | length (2 bytes, big-endian) | payload (length bytes) | CRC (2 bytes, low byte first)

``A5``
    start byte.
``tag``
    1..255: the master's number for a request; the MX4 answers with the same tag.
    0: nobody asked (:data:`UNSOLICITED`): bytes a port heard outside any request's window.
``port``
    the RS485 port, 1..4 (:data:`PORTS`).
``length``
    payload bytes, at most :data:`MAX_PAYLOAD` (the MX4's buffer per port).
``payload``
    the meter-protocol bytes exactly as they go on, or came off, the RS485 pair (a DL/T 645
    frame with its FE wake-up bytes, a Modbus RTU frame): the MX4 neither reads nor changes them.
``CRC``
    CRC-16/MODBUS (polynomial A001h reflected, initial FFFFh) of every byte from ``A5``
    to the end of the payload, sent low byte first, as Modbus RTU sends its CRC.

How the MX4 tags what a port hears (its firmware's rule, which :mod:`meterhub_acme.mux`
relies on): a request opens a *window* on its port; the port forwards every burst it
hears (bytes delimited by an inter-frame gap at the port's character format) in one
envelope, with the tag of the open window, or tag 0 when no window is open. A window
closes when the first burst after the request has been forwarded (one request, one
answer), when the next request goes out on the port, or :data:`ANSWER_WINDOW_S` after the
request. So a meter's event report between two transactions arrives with tag 0, and
so does an answer later than the window.

:func:`encode` and :func:`decode` turn one envelope into bytes and back;
:class:`StreamDecoder` finds envelopes in a TCP byte stream, skipping garbage and
resynchronising on the next ``A5`` (meterhub's shared frame search,
:class:`meterhub.framing.FrameFinder`).
"""

from __future__ import annotations

import attrs
from meterhub.errors import ChecksumError, FrameError, TruncatedFrame
from meterhub.framing import FrameFinder, judge_by_decode

START = 0xA5
UNSOLICITED = 0  #: the tag of bytes a port heard outside any request's window
TAGS = range(1, 256)  #: the tags a master may give its requests
PORTS = range(1, 5)  #: the MX4's RS485 ports
MAX_PAYLOAD = 512  #: the MX4 buffers at most this many bytes per port and envelope
HEADER_LEN = 5  #: A5, tag, port, length (2)
CRC_LEN = 2
OVERHEAD = HEADER_LEN + CRC_LEN  #: an envelope is OVERHEAD + length bytes long

#: How long a request's window stays open on its port at most (the MX4's factory setting):
#: longer than the slowest answer a DL/T 645 meter may give at 1200 Bd 8E1, counted from
#: the request: the request (20 bytes), the 500 ms response delay and a reply of 271 bytes
#: (L = 255 and four FE) on the wire take 3.2 s.
ANSWER_WINDOW_S = 3.5


@attrs.frozen
class Envelope:
    """One MX4 envelope: a tag, an RS485 port and the meter-protocol bytes it carries."""

    tag: int = attrs.field(validator=attrs.validators.in_(range(256)))
    port: int = attrs.field(validator=attrs.validators.in_(PORTS))
    payload: bytes = attrs.field(default=b"", converter=bytes)

    def __attrs_post_init__(self) -> None:
        if len(self.payload) > MAX_PAYLOAD:
            raise ValueError(f"an MX4 envelope carries at most {MAX_PAYLOAD} bytes, got {len(self.payload)}")

    @property
    def unsolicited(self) -> bool:
        return self.tag == UNSOLICITED


def crc16_modbus(data: bytes) -> int:
    """CRC-16/MODBUS of ``data`` (reflected polynomial A001h, initial value FFFFh, no final
    XOR); the check value of ``b"123456789"`` is 4B37h."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def encode(envelope: Envelope) -> bytes:
    """The bytes of ``envelope`` on the TCP stream."""
    body = bytes((START, envelope.tag, envelope.port)) + len(envelope.payload).to_bytes(2, "big") + envelope.payload
    return body + crc16_modbus(body).to_bytes(CRC_LEN, "little")


def decode(data: bytes) -> Envelope:
    """Exactly one envelope from ``data``: :class:`TruncatedFrame` if bytes are missing,
    :class:`ChecksumError` for a wrong CRC, :class:`FrameError` for anything else."""
    data = bytes(data)
    if not data:
        raise TruncatedFrame("no MX4 envelope: no bytes")
    if data[0] != START:
        raise FrameError(f"an MX4 envelope starts with A5, got {data[0]:02X}")
    if len(data) < HEADER_LEN:
        raise TruncatedFrame(f"an MX4 envelope header is {HEADER_LEN} bytes, got {len(data)}")
    port, length = data[2], int.from_bytes(data[3:5], "big")
    if port not in PORTS:
        raise FrameError(f"MX4 envelope for port {port}: the MX4 has ports {PORTS.start}..{PORTS.stop - 1}")
    if length > MAX_PAYLOAD:
        raise FrameError(f"MX4 envelope announces {length} payload bytes; the MX4 carries at most {MAX_PAYLOAD}")
    total = OVERHEAD + length
    if len(data) < total:
        raise TruncatedFrame(f"MX4 envelope with {length} payload bytes needs {total} bytes, got {len(data)}")
    if len(data) > total:
        raise FrameError(f"{len(data) - total} byte(s) after the end of an MX4 envelope of {total} bytes")
    want = crc16_modbus(data[:-CRC_LEN])
    got = int.from_bytes(data[-CRC_LEN:], "little")
    if got != want:
        raise ChecksumError(f"MX4 envelope (tag {data[1]}, port {port}): CRC {got:04X}h, its bytes give {want:04X}h")
    return Envelope(data[1], port, data[HEADER_LEN:-CRC_LEN])


def _candidate_size(head: bytes) -> int | None:
    """An envelope's length from its first bytes (None: not known yet, 0: none starts here)."""
    if head[0] != START or (len(head) > 2 and head[2] not in PORTS):
        return 0
    if len(head) < HEADER_LEN:
        return None
    length = int.from_bytes(head[3:5], "big")
    return OVERHEAD + length if length <= MAX_PAYLOAD else 0


class StreamDecoder(FrameFinder[Envelope]):
    """Finds MX4 envelopes in a TCP byte stream (a :class:`meterhub.api.StreamDecoder`).

    Every A5 starts a candidate whose length comes from its header; it is judged by its
    CRC when its last byte arrives. Garbage costs only the bytes it occupies (counted in
    ``skipped``), an envelope with a wrong CRC is returned as a ChecksumError instance,
    and feeding byte by byte gives what feeding all at once gives.
    """

    def __init__(self) -> None:
        super().__init__(_candidate_size, judge_by_decode(decode), lookahead=HEADER_LEN, starts=bytes((START,)))
