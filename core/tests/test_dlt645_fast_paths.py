"""The DL/T 645 codec's fast paths give what the general ones give, byte for byte.

``encode_read_request`` builds no Frame, ``decode`` and the read builders make their Frame
without the converters, and ``encode`` keeps each address's header; every one is held
here to the general path, or to the codec as it was before these paths (written out below
as the reference), on any input.
"""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterhub.channels.halfduplex import HalfDuplexChannel
from meterhub.errors import ChecksumError, FrameError, MeterTimeout, TruncatedFrame
from meterhub.model import Meter, SerialSettings
from meterhub.protocols import dlt645
from meterhub.protocols.bcd import sum8
from meterhub.protocols.dlt645 import Control, Frame
from meterhub.protocols.dlt645_driver import Dlt645_1997Driver, Dlt645Driver
from meterhub.quantities import resolve

PROPERTY = settings(max_examples=300, deadline=None)

addresses = st.binary(min_size=6, max_size=6).map(lambda b: b.hex().upper())
di4 = st.integers(0, 0xFFFFFFFF)
di2 = st.integers(0, 0xFFFF)
preambles = st.integers(0, 8)
byte = st.integers(0, 255)


# --- the codec as it was: the reference ---------------------------------------------------


def reference_encode(frame: Frame, *, preamble: int = 4) -> bytes:
    body = bytearray((0x68,))
    body += bytes.fromhex(frame.address)[::-1]
    body += bytes((0x68, frame.control, len(frame.data)))
    body += bytes((b + 0x33) & 0xFF for b in frame.data)
    body.append(sum8(body))
    body.append(0x16)
    return b"\xFE" * preamble + bytes(body)


def reference_decode(data: bytes) -> Frame:
    data = bytes(data)
    start = 0
    while start < len(data) and data[start] == 0xFE:
        start += 1
    body = data[start:]
    if not body:
        raise TruncatedFrame("no frame")
    if body[0] != 0x68 or (len(body) > 7 and body[7] != 0x68):
        raise FrameError("no start")
    if len(body) < 10 or len(body) < 12 + body[9]:
        raise TruncatedFrame("short")
    if len(body) > 12 + body[9] or body[-1] != 0x16:
        raise FrameError("long or no end")
    if sum8(body[:-2]) != body[-2]:
        raise ChecksumError("checksum")
    return Frame(body[1:7][::-1].hex().upper(), body[8], bytes((b - 0x33) & 0xFF for b in body[10:-2]))


def _outcome(decode, data: bytes) -> object:
    """What ``decode`` makes of ``data``: the frame, or the class of the error it raises."""
    try:
        return decode(data)
    except FrameError as exc:
        return type(exc)


# --- encode_read_request --------------------------------------------------------------------


@PROPERTY
@given(addresses, di4, preambles)
def test_encode_read_request_is_encode_of_read_request(address, di, preamble):
    wire = dlt645.encode_read_request(dlt645.address_to_wire(address), di, preamble=preamble)
    assert wire == dlt645.encode(dlt645.read_request(address, di), preamble=preamble)
    assert wire == reference_encode(Frame(address, 0x11, di.to_bytes(4, "little")), preamble=preamble)
    assert dlt645.decode(wire) == dlt645.read_request(address, di)


@PROPERTY
@given(addresses, di2, preambles)
def test_encode_read_request_1997_is_encode_of_read_request_1997(address, di, preamble):
    wire = dlt645.encode_read_request(dlt645.address_to_wire(address), di, preamble=preamble, edition=1997)
    assert wire == dlt645.encode(dlt645.read_request_1997(address, di), preamble=preamble)
    assert wire == reference_encode(Frame(address, 0x01, di.to_bytes(2, "little")), preamble=preamble)


def test_encode_read_request_matches_the_capture_and_the_default_preamble():
    wire = dlt645.address_to_wire("910004920760")
    assert dlt645.encode_read_request(wire, 0) == bytes.fromhex("FEFEFEFE 68600792040091 68 11 04 33333333 3F 16")
    assert dlt645.encode_read_request(bytearray(wire), 0) == dlt645.encode_read_request(wire, 0)


@pytest.mark.parametrize(("di", "edition"), [(-1, 2007), (1 << 32, 2007), (1 << 16, 1997), (-5, 1997)])
def test_encode_read_request_refuses_a_di_that_does_not_fit_as_the_builders_do(di, edition):
    build = dlt645.read_request if edition == 2007 else dlt645.read_request_1997
    with pytest.raises(ValueError, match="does not fit") as general:
        build("000000000161", di)
    with pytest.raises(ValueError, match="does not fit") as fast:
        dlt645.encode_read_request(dlt645.address_to_wire("000000000161"), di, edition=edition)
    assert str(fast.value) == str(general.value)


def test_encode_read_request_refuses_bad_arguments():
    wire = dlt645.address_to_wire("000000000161")
    with pytest.raises(ValueError, match="6 bytes"):
        dlt645.encode_read_request(wire[:5], 0)
    with pytest.raises(ValueError, match="negative"):
        dlt645.encode_read_request(wire, 0, preamble=-1)
    with pytest.raises(ValueError, match="2007 or 1997"):
        dlt645.encode_read_request(wire, 0, edition=2020)


# --- encode, decode and the frames they make --------------------------------------------------


frames = st.builds(Frame, addresses, byte, st.binary(max_size=255))


@PROPERTY
@given(frames, preambles)
def test_encode_is_the_reference_encoding(frame, preamble):
    assert dlt645.encode(frame, preamble=preamble) == reference_encode(frame, preamble=preamble)


@PROPERTY
@given(frames, preambles)
def test_a_decoded_frame_is_the_frame_the_constructor_makes(frame, preamble):
    decoded = dlt645.decode(bytearray(dlt645.encode(frame, preamble=preamble)))
    rebuilt = Frame(decoded.address, decoded.control, decoded.data)
    assert decoded == rebuilt == frame
    assert hash(decoded) == hash(rebuilt) and repr(decoded) == repr(rebuilt)
    assert (type(decoded.address), type(decoded.control), type(decoded.data)) == (str, int, bytes)


@PROPERTY
@given(st.binary(max_size=40), frames, st.integers(0, 300), byte)
def test_decode_agrees_with_the_reference_on_any_bytes(noise, frame, where, value):
    damaged = bytearray(dlt645.encode(frame, preamble=2))
    damaged[where % len(damaged)] = value
    for data in (noise, bytes(damaged), b"\xFE" * (where % 5) + noise):
        assert _outcome(dlt645.decode, data) == _outcome(reference_decode, data)


def test_decode_keeps_its_error_messages():
    good = dlt645.encode(dlt645.read_request("000000000161", 0x00010000), preamble=2)
    with pytest.raises(FrameError, match="must start with 68, got 00 at offset 2"):
        dlt645.decode(b"\xFE\xFE\x00")
    with pytest.raises(TruncatedFrame, match="2 wake-up byte"):
        dlt645.decode(b"\xFE\xFE")
    with pytest.raises(ChecksumError, match="from 000000000161: frame says"):
        dlt645.decode(good[:-2] + bytes(((good[-2] + 1) & 0xFF,)) + good[-1:])


# --- the builders' Frames ----------------------------------------------------------------------


@PROPERTY
@given(addresses, di4, st.binary(max_size=200), st.booleans())
def test_read_builders_make_what_the_constructor_makes(address, di, payload, followup):
    control = (0x91 | 0x20) if followup else 0x91
    for built, expected in (
        (dlt645.read_request(address.lower(), di), Frame(address, 0x11, di.to_bytes(4, "little"))),
        (dlt645.read_reply(f" {address} ", di, bytearray(payload), followup=followup),
         Frame(address, control, di.to_bytes(4, "little") + payload)),
    ):
        assert built == expected and repr(built) == repr(expected)
        assert (type(built.address), type(built.control), type(built.data)) == (str, int, bytes)


def test_frame_converters_keep_their_checks_and_their_conversions():
    assert Frame(" aaaaaaaaaaaa ", Control.READ, bytearray(b"\x01")) == Frame("AAAAAAAAAAAA", 0x11, b"\x01")
    assert type(Frame("000000000161", Control.READ).control) is int
    assert type(dlt645.read_request("000000000161", 0).control) is int
    with pytest.raises(ValueError, match="12 hex characters"):
        Frame(161, 0x11)  # a number is not padded (the driver's normalize_address does that)
    with pytest.raises(ValueError, match="12 hex characters"):
        dlt645.read_reply("00000000016G", 0, b"")
    with pytest.raises(ValueError, match="255"):
        dlt645.read_reply("000000000161", 0, bytes(252))
    with pytest.raises(ValueError, match="one byte"):
        Frame("000000000161", 0x100)


# --- the driver sends the fast path's bytes ------------------------------------------------------


class _Recorder:
    """A link that records what is written and never answers."""

    name = "recorder"

    def __init__(self) -> None:
        self.settings = SerialSettings(9600, 8, "E", 1)
        self.written: list[bytes] = []

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def write(self, data: bytes) -> None:
        self.written.append(bytes(data))

    async def read(self, timeout: float) -> bytes:
        await asyncio.sleep(timeout)
        return b""

    async def reset_input(self) -> None:
        pass

    async def apply_settings(self, settings) -> None:
        self.settings = settings


def _sent(driver: Dlt645Driver, protocol: str, address: str, quantity: str) -> bytes:
    link = _Recorder()
    meter = Meter(address=address, protocol=protocol, channel="bus1")
    with pytest.raises(MeterTimeout):  # nobody answers
        asyncio.run(driver.read(HalfDuplexChannel("bus1", link), meter, resolve(quantity), 0.01))
    return link.written[0]


@pytest.mark.parametrize("preamble", [0, 2, 4])
def test_the_drivers_send_what_encode_of_their_read_request_gives(preamble):
    sent = _sent(Dlt645Driver(preamble=preamble), "dlt645", "161", "1-0:1.8.0")
    assert sent == dlt645.encode(dlt645.read_request("000000000161", 0x00010000), preamble=preamble)
    sent = _sent(Dlt645_1997Driver(preamble=preamble), "dlt645-1997", "161", "1-0:1.8.0")
    assert sent == dlt645.encode(dlt645.read_request_1997("000000000161", 0x9010), preamble=preamble)


def test_a_subclass_with_its_own_read_request_sends_that():
    class LoadRecords(Dlt645Driver):
        def _read_request(self, address: str, di: int) -> Frame:  # DI plus a block count, as load records are read
            return Frame(address, Control.READ, di.to_bytes(4, "little") + b"\x01")

    class Edition1997(Dlt645Driver):  # the 2007 request, whatever EDITION says
        EDITION = 1997

    sent = _sent(LoadRecords(), "dlt645", "161", "1-0:1.8.0")
    assert sent == dlt645.encode(Frame("000000000161", Control.READ, bytes.fromhex("00000100 01")))
    sent = _sent(Edition1997(), "dlt645", "161", "1-0:1.8.0")
    assert sent == dlt645.encode(dlt645.read_request("000000000161", 0x00010000))
