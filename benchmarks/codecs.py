"""Codec throughput: frames per second of meterhub's codecs and of the best PyPI peer for
the same frames, in one process.

Each ratio is ours ÷ the peer's frames/s for the same work: before anything is timed,
both sides decode (or encode) the same frames and the meanings are checked equal, so a
ratio never compares different work. The two sides take turns (A B A B ...) and each
keeps its best run, so a disturbance of the shared machine hits both alike.

* DL/T 645-2007: :mod:`meterhub.protocols.dlt645` against ``dlt645`` 3.2.0
  (``DLT645Protocol.build_frame``, ``deserialize``, ``deserialize_with_remaining``). The
  encode pair is what each side of a read sends: the request as ``Dlt645Driver`` makes it
  (``encode_read_request`` from the meter's address as sent, kept per meter, as the peer
  is given it too) and the reply as the simulator makes it (``encode(read_reply(...))``).
* CJ/T 188-2004: :mod:`meterhub.protocols.cjt188`; PyPI has no peer, so rates only.
* Modbus RTU: ``meterhub_rs485.modbus.StreamDecoder`` (the decoder the driver feeds)
  against pymodbus 3.16 ``FramerRTU.handleFrame`` as pymodbus's own transport drives it.
* M-Bus: ``meterhub_rs485.mbus`` decode + ``parse_user_data`` of a long RSP_UD against
  pyMeterBus ``load`` + every record's value and unit, and against pymbusparser (Rust,
  the ceiling of what a decoder can do: no goal).

The frames are real ones, copied here from the project's vectors
(``plugins/rs485/tests/data`` and the shared protocol vectors), never read at run time.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from meterhub.errors import FrameError
from meterhub.protocols import cjt188, dlt645
from meterhub.protocols.bcd import bcd_to_int
from meterhub_rs485 import mbus, modbus

from .figures import Figure, best_rate

GOAL_RATIO = 3.0  #: ours must do at least three times the peer's frames/s
FPS = "frames/s"

#: Serial drivers hand over what has arrived: 1..64 bytes a read (a 64-byte FIFO or USB
#: packet at most). Random but seeded, so every run feeds the same chunks.
MAX_CHUNK = 64
#: Noise between stream frames: 0..8 random bytes, never 68h (see _noise).
MAX_NOISE = 8
STREAM_FRAMES = 200  #: frames in one stream buffer (a work unit is one whole buffer)
SEED = 645

# -- the frames ------------------------------------------------------------------------------

#: DL/T 645-2007 read of DI 00000000 (combined active total energy) from 910004920760
#: (built, the checksum by hand) and the meter's reply, 7502.64 kWh as XXXXXX.XX BCD
#: (shared vectors, dlt645.json).
DLT645_ADDRESS = "910004920760"
DLT645_DI = 0x00000000
DLT645_KWH = Decimal("7502.64")
DLT645_PAYLOAD = bytes.fromhex("64027500")  #: 7502.64 as XXXXXX.XX, least significant byte first
DLT645_REQUEST = bytes.fromhex("FEFEFEFE 68600792040091 68 11 04 33333333 3F 16")
DLT645_REPLY = bytes.fromhex("FEFEFEFE 68600792040091 68 91 08 33333333 9735A833 6A 16")
#: Read replies (91h) of several meters and lengths, for the stream (dlt645.json).
DLT645_STREAM_REPLIES = tuple(bytes.fromhex(h) for h in (
    "FEFEFEFE 68600792040091 68 91 08 33333333 9735A833 6A 16",
    "FEFEFEFE 68944103261218 68 91 08 33333433 59333333 50 16",
    "FEFEFEFE 68944103261218 68 91 0A 33323435 3656 3333 3333 B9 16",
    "FEFEFEFE 68944103261218 68 91 0D 33323535 BB3433 333333 333333 B9 16",
    "68 610100000000 68 91 07 33333635 455833 6B 16",
    "FEFE 68720032091720 68 91 08 33333433 B9343333 6D 16",
    "68 120000001020 68 91 18 33323433 5C343333 95333333 93333333 36333333 35333333 74 16",
))

#: CJ/T 188 901F read replies of cold-water meters, for the stream (shared vectors, cjt188.json).
CJT188_STREAM_REPLIES = tuple(bytes.fromhex(h) for h in (
    "FEFEFE 68 10 18000040409200 81 16 901F 00 29000000 2C 29000000 2C 00000000000000 0023 B5 16",
    "68 10 88052710152000 81 16 901F 01 00000000 2C 00000000 2C 06201709011720 0000 8E 16",
    "FEFEFE 68 10 01000005080000 81 16 901F 00 00230100 2C 00000000 2C 00000000000000 0000 48 16",
    "68 10 69000107172000 81 16 1F90 02 00000000 2C 00000000 2C 59541619081720 1301 EF 16",
    "FEFE 68 10 26130607003378 81 16 1F90 04 00680000 2C 00000000 2C 00000000000000 0000 73 16",
))
CJT188_REPLY = CJT188_STREAM_REPLIES[0]  #: 0.29 m3 from water meter 00924040000018, 38 bytes

#: Modbus RTU: read holding registers (03) from unit 17; the first is the Modbus
#: specification's example answer (11 03 06 AE41 5652 4340 CRC), the others are built
#: with pymodbus in _modbus_frames.
MODBUS_UNIT = 17
MODBUS_SPEC_RESPONSE = bytes.fromhex("1103 06 AE41 5652 4340 49AD")

#: Kamstrup Multical 601 RSP_UD, CI 72h, 27 records and manufacturer data after DIF 0Fh
#: (253 bytes; libmbus test frame kamstrup_multical_601.hex, plugins/rs485/tests/data/mbus.json).
MBUS_RSP_UD = bytes.fromhex(
    "68F7F768081172175885062D2C0804040000000C78175885060406E791000004142CDB00000422D90300000459B92700"
    "00045D081200000461B1150000042D5B010000142DC0010000043B1F020000143B740200008410060000000084200600"
    "00000084401400000000848040140000000084C0400600000000046D1A2F65114406518200004414B2C30000542D2602"
    "0000543B03040000C4100600000000C4200600000000C4401400000000C480401400000000C4C0400600000000426C5F"
    "1C0F00000000E7E40000636600000000000000000000000000005BC9A50234530000E0B20300899C6800000000000100"
    "01070709010300000000009816"
)


# -- running ---------------------------------------------------------------------------------


def run(quick: bool) -> list[Figure]:
    seconds, rounds = (0.4, 3) if quick else (1.0, 7)

    def race(**works: Callable[[], int]) -> dict[str, float]:
        return interleaved_rates(works, seconds=seconds, rounds=rounds)

    figures: list[Figure] = []
    figures += _dlt645_figures(race)
    figures += _cjt188_figures(race)
    figures += _modbus_figures(race)
    figures += _mbus_figures(race)
    return figures


def interleaved_rates(works: dict[str, Callable[[], int]], *, seconds: float, rounds: int) -> dict[str, float]:
    """The best items/s of each work, the works taking turns round by round (A B A B ...).

    A helper beside :func:`benchmarks.figures.best_rate` (one run of it per turn): a
    disturbance of the shared machine then falls on every side alike instead of on
    whichever happened to be timed at the moment.
    """
    best = dict.fromkeys(works, 0.0)
    for _ in range(rounds):
        for name, work in works.items():
            best[name] = max(best[name], best_rate(work, seconds=seconds, rounds=1))
    return best


Race = Callable[..., dict[str, float]]


def _ratio(name: str, ours: float, theirs: float, peer: str, what: str, *, goal: float | None = GOAL_RATIO,
           extra: str = "") -> Figure:
    note = f"ours {ours:,.0f} vs {peer} {theirs:,.0f} frames/s: {what}"
    return Figure(name, round(ours / theirs, 3), "×", goal, "higher", f"{extra}; {note}" if extra else note)


def _rate(name: str, value: float, what: str) -> Figure:
    return Figure(name, round(value), FPS, None, "higher", what)


def _require(ok: bool, what: str) -> None:
    """A check that the two sides do the same work (kept under ``python -O``, unlike assert)."""
    if not ok:
        raise RuntimeError(f"codec benchmark precondition failed: {what}")


# -- streams ---------------------------------------------------------------------------------


#: Noise bytes: any but 68h, the start byte. Noise holding a start byte sends dlt645 3.2.0
#: after a false frame that swallows the real one behind it (measured, see the peer notes),
#: and a ratio must count the same frames on both sides.
_NOISE_BYTES = bytes(b for b in range(256) if b != 0x68)


def _noise(rng: random.Random) -> bytes:
    """0..MAX_NOISE random bytes, never 68h."""
    return bytes(rng.choice(_NOISE_BYTES) for _ in range(rng.randint(0, MAX_NOISE)))


def _chunked(data: bytes, rng: random.Random) -> list[bytes]:
    """``data`` cut as a serial port delivers it: 1..MAX_CHUNK bytes a read."""
    out, pos = [], 0
    while pos < len(data):
        size = rng.randint(1, MAX_CHUNK)
        out.append(data[pos:pos + size])
        pos += size
    return out


def _noisy_stream(frames: Sequence[bytes], rng: random.Random) -> tuple[list[bytes], list[bytes]]:
    """STREAM_FRAMES of ``frames`` (in random order) with noise before each, and the chunks
    it arrives in; also the frames in stream order, for the checks."""
    sent = [rng.choice(frames) for _ in range(STREAM_FRAMES)]
    stream = b"".join(_noise(rng) + frame for frame in sent)
    return _chunked(stream, rng), sent


# -- DL/T 645 --------------------------------------------------------------------------------


def _dlt645_figures(race: Race) -> list[Figure]:
    from dlt645.common.transform import bcd_to_float
    from dlt645.protocol.protocol import DLT645Protocol as Peer

    wire_address = dlt645.address_to_wire(DLT645_ADDRESS)
    di_wire = DLT645_DI.to_bytes(4, "little")
    reply_data = di_wire + DLT645_PAYLOAD

    # encode: a read request and its reply, 2 frames a call, each from what its API takes
    # and as it is made in use: the request as Dlt645Driver.read_di sends it, from the wire
    # address it keeps per meter (the peer too is handed the wire address); the reply as
    # the simulator sends it, through a checked Frame.
    def ours_encode() -> tuple[bytes, bytes]:
        return (dlt645.encode_read_request(wire_address, DLT645_DI),
                dlt645.encode(dlt645.read_reply(DLT645_ADDRESS, DLT645_DI, DLT645_PAYLOAD)))

    def peer_encode() -> tuple[bytearray, bytearray]:
        return Peer.build_frame(wire_address, 0x11, di_wire), Peer.build_frame(wire_address, 0x91, reply_data)

    _require(ours_encode() == peer_encode() == (DLT645_REQUEST, DLT645_REPLY), "the DL/T 645 encoders disagree")
    _require(dlt645.encode(dlt645.read_request(DLT645_ADDRESS, DLT645_DI)) == DLT645_REQUEST,
             "encode_read_request and encode(read_request) disagree")

    # decode: one reply frame to address, control and data (0x33 removed)
    def ours_decode() -> int:
        dlt645.decode(DLT645_REPLY)
        return 1

    def peer_decode() -> int:
        Peer.deserialize(DLT645_REPLY)
        return 1

    mine, theirs = dlt645.decode(DLT645_REPLY), Peer.deserialize(DLT645_REPLY)
    _require((mine.address, mine.control, mine.data) == (_nameplate(theirs.addr), theirs.ctrl_code, bytes(theirs.data))
             and Decimal(bcd_to_int(mine.data[4:8])) / 100 == DLT645_KWH
             and Decimal(str(bcd_to_float(bytes(theirs.data[4:8]), "XXXXXX.XX", "little"))) == DLT645_KWH,
             "the DL/T 645 decoders disagree on the reply or its 7502.64 kWh")

    # stream: 200 replies with noise between, in 1..64-byte chunks
    chunks, sent = _noisy_stream(DLT645_STREAM_REPLIES, random.Random(SEED))

    def ours_stream_frames() -> list[Any]:
        decoder = dlt645.StreamDecoder()
        return [item for chunk in chunks for item in decoder.feed(chunk)]

    def peer_stream_frames() -> list[Any]:
        found, buffer = [], b""
        for chunk in chunks:
            buffer += chunk
            while True:
                buffer, frame = Peer.deserialize_with_remaining(buffer)
                if frame is None:
                    break
                found.append(frame)
        return found

    expected = [dlt645.decode(frame) for frame in sent]
    _require(ours_stream_frames() == expected, "our DL/T 645 stream decoder missed or invented frames")
    _require([dlt645.Frame(_nameplate(f.addr), f.ctrl_code, bytes(f.data)) for f in peer_stream_frames()] == expected,
             "dlt645's stream parser missed or invented frames")

    rates = race(ours_encode=lambda: len(ours_encode()), peer_encode=lambda: len(peer_encode()),
                 ours_decode=ours_decode, peer_decode=peer_decode,
                 ours_stream=lambda: len(ours_stream_frames()), peer_stream=lambda: len(peer_stream_frames()))
    peer = "dlt645 3.2.0"
    stream_what = (f"{STREAM_FRAMES} read replies (19-36 B with 0-4 FE) with 0-{MAX_NOISE} noise bytes before each "
                   f"(no 68h), fed in 1-{MAX_CHUNK} B chunks")
    return [
        _ratio("dlt645_encode_ratio", rates["ours_encode"], rates["peer_encode"], peer,
               "encode_read_request(wire address) + encode(read_reply) vs build_frame; read 00000000 and its "
               "7502.64 kWh reply"),
        _ratio("dlt645_decode_ratio", rates["ours_decode"], rates["peer_decode"], peer,
               "decode vs deserialize, a 24-byte read reply to address, control, data"),
        _ratio("dlt645_stream_ratio", rates["ours_stream"], rates["peer_stream"], peer,
               f"StreamDecoder().feed vs deserialize_with_remaining loop; {stream_what}"),
        _rate("dlt645_encode_fps", rates["ours_encode"],
              "meterhub DL/T 645 encode: read request (encode_read_request, as the driver) + read reply "
              "(encode(read_reply), as the simulator), 2 frames a call"),
        _rate("dlt645_decode_fps", rates["ours_decode"], "meterhub DL/T 645 decode of a 24-byte read reply"),
        _rate("dlt645_stream_fps", rates["ours_stream"], f"meterhub DL/T 645 StreamDecoder: {stream_what}"),
    ]


def _nameplate(wire: bytes | bytearray) -> str:
    """dlt645's address bytes (wire order) as meterhub's nameplate-order string."""
    return dlt645.address_from_wire(bytes(wire))


# -- CJ/T 188 --------------------------------------------------------------------------------


def _cjt188_figures(race: Race) -> list[Figure]:
    frame = cjt188.decode(CJT188_REPLY)
    meaning = (frame.address, frame.control, cjt188.parse_body(frame).di)
    _require(meaning == ("00924040000018", 0x81, cjt188.DI_METERING), "the CJ/T 188 reply decodes wrong")
    chunks, sent = _noisy_stream(CJT188_STREAM_REPLIES, random.Random(SEED + 188))

    def ours_stream() -> int:
        decoder = cjt188.StreamDecoder()
        return sum(len(decoder.feed(chunk)) for chunk in chunks)

    decoder = cjt188.StreamDecoder()
    _require([item for chunk in chunks for item in decoder.feed(chunk)] == [cjt188.decode(f) for f in sent],
             "our CJ/T 188 stream decoder missed or invented frames")

    def ours_decode() -> int:
        cjt188.decode(CJT188_REPLY)
        return 1

    rates = race(ours_decode=ours_decode, ours_stream=ours_stream)
    none = "ours only: PyPI has no CJ/T 188 codec"
    return [
        _rate("cjt188_decode_fps", rates["ours_decode"],
              f"meterhub CJ/T 188 decode of a 38-byte 901F read reply; {none}"),
        _rate("cjt188_stream_fps", rates["ours_stream"],
              f"meterhub CJ/T 188 StreamDecoder: {STREAM_FRAMES} 901F replies (35-38 B) with 0-{MAX_NOISE} noise bytes "
              f"before each (no 68h), fed in 1-{MAX_CHUNK} B chunks; {none}"),
    ]


# -- Modbus RTU ------------------------------------------------------------------------------


def _modbus_frames(rng: random.Random) -> list[bytes]:
    """Read-holding-registers answers of unit 17, 1..20 registers each."""
    frames = [MODBUS_SPEC_RESPONSE]
    while len(frames) < STREAM_FRAMES:
        registers = [rng.randrange(0x10000) for _ in range(rng.randint(1, 20))]
        frames.append(modbus.read_response(MODBUS_UNIT, 3, registers))
    return frames


def _modbus_figures(race: Race) -> list[Figure]:
    from pymodbus.framer import FramerRTU
    from pymodbus.pdu import DecodePDU

    rng = random.Random(SEED + 485)
    frames = _modbus_frames(rng)
    # RTU frames are delimited by silence and pymodbus relies on it (one handleFrame
    # consumes the whole buffer, and any noise loses the frame): chunks end at frame ends
    # and there is no noise, the only stream both can read.
    chunks = [chunk for frame in frames for chunk in _chunked(frame, rng)]

    def ours_items() -> list[modbus.Frame | FrameError]:
        decoder = modbus.StreamDecoder(unit=MODBUS_UNIT, function=3)  # as ModbusDriver.read_registers
        return [item for chunk in chunks for item in decoder.feed(chunk)]

    def ours_frames() -> list[modbus.Frame]:
        return [item for item in ours_items() if isinstance(item, modbus.Frame)]

    def peer_frames() -> list[Any]:
        framer, found, buffer = FramerRTU(DecodePDU(is_server=False)), [], b""
        for chunk in chunks:
            buffer += chunk  # what pymodbus's transport does with each read
            used, pdu = framer.handleFrame(buffer, MODBUS_UNIT, 0)
            buffer = buffer[used:]
            if pdu is not None:
                found.append(pdu)
        return found

    expected = [modbus.decode(frame).message.registers for frame in frames]
    _require(expected[0] == [0xAE41, 0x5652, 0x4340], "the Modbus specification's answer decodes wrong")
    _require([f.message.registers for f in ours_frames()] == expected, "our Modbus stream decoder missed frames")
    _require([p.registers for p in peer_frames()] == expected, "pymodbus FramerRTU missed frames")

    # A header-like run inside a frame's data (11 83 .. ..) can be judged, and reported
    # as damaged, before the frame around it ends: said in the note, not counted.
    spurious = sum(isinstance(item, FrameError) for item in ours_items())

    rates = race(ours=lambda: len(ours_frames()), peer=lambda: len(peer_frames()))
    what = (f"{STREAM_FRAMES} read-holding-registers answers of unit 17 (7-45 B) in 1-{MAX_CHUNK} B chunks that end at "
            "frame ends, no noise (FramerRTU cannot resync)")
    if spurious:
        what += (f"; ours also reported {spurious} ChecksumError(s) for a false candidate inside a valid frame's "
                 "data (counted as no frame)")
    return [
        _ratio("modbus_stream_ratio", rates["ours"], rates["peer"], "pymodbus 3.16 FramerRTU",
               f"StreamDecoder(unit, function).feed vs handleFrame on the growing buffer; {what}"),
        _rate("modbus_stream_fps", rates["ours"], f"meterhub_rs485 Modbus StreamDecoder: {what}"),
    ]


# -- M-Bus -----------------------------------------------------------------------------------


def _import_meterbus() -> Any:
    """pyMeterBus, without the ``logging.basicConfig(level=INFO)`` its import runs."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        import meterbus
    finally:
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)
    return meterbus


#: pyMeterBus turns durations into seconds; ours keeps the VIF's unit.
_SECONDS = {"s": 1, "min": 60, "h": 3600, "d": 86400}


def _same_mbus_value(ours: object, unit: str, peer_value: object, peer_unit: object) -> bool:
    if isinstance(ours, datetime):
        return str(peer_value) in (ours.isoformat(timespec="minutes"), ours.isoformat(timespec="seconds"))
    if isinstance(ours, date):
        return str(peer_value) == ours.isoformat()
    if isinstance(ours, Decimal):
        scale = _SECONDS.get(unit, 1) if peer_unit == "seconds" else 1
        return abs(Decimal(str(peer_value)) - ours * scale) <= Decimal("1e-9") * max(1, abs(ours * scale))
    return False


def _mbus_figures(race: Race) -> list[Figure]:
    import pymbusparser

    meterbus = _import_meterbus()

    def ours_decode() -> int:
        mbus.parse_user_data(mbus.decode(MBUS_RSP_UD))
        return 1

    def pymeterbus_decode() -> int:
        telegram = meterbus.load(MBUS_RSP_UD)
        [(record.value, record.unit) for record in telegram.records]  # values are computed when read
        return 1

    def pymbusparser_decode() -> int:
        pymbusparser.parse(MBUS_RSP_UD, include_enrichment=False)
        return 1

    telegram = mbus.parse_user_data(mbus.decode(MBUS_RSP_UD))
    records = telegram.records
    theirs = meterbus.load(MBUS_RSP_UD).records
    rust = pymbusparser.parse(MBUS_RSP_UD, include_enrichment=False)["records"]
    # The peers list the manufacturer data after DIF 0Fh as one more record.
    _require(len(records) == 27 and telegram.tail == mbus.DIF_MANUFACTURER, "our M-Bus decoder: not 27 records and 0F")
    _require(len(theirs) == len(rust) == len(records) + 1 and rust[-1]["value"]["kind"] == "manufacturer_specific",
             "the M-Bus peers do not list 27 records and the manufacturer data")
    for mine, py, rs in zip(records, theirs, rust):
        _require(_same_mbus_value(mine.value, mine.unit, py.value, py.unit),
                 f"pyMeterBus reads {py.value} {py.unit}, ours {mine}")
        _require(_same_mbus_value(mine.value, mine.unit, rs["value"]["value"], None),
                 f"pymbusparser reads {rs}, ours {mine}")

    rates = race(ours=ours_decode, pymeterbus=pymeterbus_decode, pymbusparser=pymbusparser_decode)
    what = "the 253-byte Kamstrup Multical 601 RSP_UD (27 records) to every record's value and unit"
    return [
        _ratio("mbus_decode_ratio_pymeterbus", rates["ours"], rates["pymeterbus"], "pyMeterBus 0.8.5",
               f"decode + parse_user_data vs load + reading each record's value and unit; {what}"),
        _ratio("mbus_decode_ratio_pymbusparser", rates["ours"], rates["pymbusparser"], "pymbusparser 0.5.3",
               f"decode + parse_user_data vs parse(include_enrichment=False); {what}", goal=None, extra="Rust ceiling"),
        _rate("mbus_decode_fps", rates["ours"], f"meterhub_rs485 M-Bus decode + parse_user_data of {what}"),
    ]
