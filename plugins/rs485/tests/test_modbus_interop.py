"""Interoperability: our codec against pymodbus and the published vectors, and the driver
against pymodbus's own serial server (not our simulator) acting as an SDM630."""

from __future__ import annotations

import asyncio
import json
import os
import random
import select
import threading
import time
import tty
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerRTU, FramerType
from pymodbus.pdu import DecodePDU
from pymodbus.pdu.register_message import ReadHoldingRegistersRequest, ReadInputRegistersRequest
from pymodbus.server import ModbusSerialServer
from pymodbus.simulator.simdata import SimData
from pymodbus.simulator.simdevice import SimDevice
from pymodbus.simulator.simutils import DataType

from meterhub.channels.halfduplex import HalfDuplexChannel
from meterhub.errors import ChecksumError, FrameError, MeterError, TruncatedFrame
from meterhub.model import Measurement, Meter, SerialSettings
from meterhub.protocols import dlt645
from meterhub.quantities import resolve
from meterhub.channels.serial import SerialLink
from meterhub_rs485.modbus import (
    EXCEPTION_REASONS,
    Frame,
    ModbusDriver,
    StreamDecoder,
    decode,
    encode,
    exception_response,
    read_request,
    read_response,
)
from meterhub_rs485.modbus_profiles import decode_point, shipped_profiles

VECTORS = json.loads((Path(__file__).parent / "data" / "modbus_rtu.json").read_text(encoding="utf-8"))["vectors"]
FAST = SerialSettings(115200, 8, "N", 1)
PEER_POLL_S = 0.02  # how often the pty bridge looks at its stop flag (test plumbing)


def _hex(text: str) -> bytes:
    return bytes.fromhex(text)


def _function(meaning: dict) -> int:
    return int(meaning["function"].split()[0], 16)


# --- the published vectors ------------------------------------------------------------------


@pytest.mark.parametrize("vector", VECTORS, ids=[v["hex"] for v in VECTORS])
def test_each_vector_decodes_to_its_meaning_and_reencodes_byte_identically(vector):
    wire = _hex(vector["hex"])
    meaning = vector["meaning"]
    frame = decode(wire, server=vector["direction"] == "request")
    assert frame.unit == meaning["slave"]
    assert frame.function == _function(meaning)
    assert encode(frame) == wire
    # the CRC pymodbus computes is the one in the frame, low byte first
    assert FramerRTU.compute_CRC(wire[:-2]).to_bytes(2, "big") == _hex(vector["checker"]["crc_in_frame"])
    message = frame.message
    if vector["direction"] == "request":
        if frame.function in (3, 4):
            assert (message.address, message.count) == (meaning["start"], meaning["quantity"])
            assert read_request(frame.unit, frame.function, meaning["start"], meaning["quantity"]) == wire
        elif frame.function == 6:
            assert (message.address, list(message.registers)) == (meaning["address"], [meaning["value"]])
        elif frame.function == 0x10:
            assert (message.address, message.count) == (meaning["start"], meaning["quantity"])
            assert list(message.registers) == [int(v, 16) for v in meaning["values"]]
        elif frame.function == 5:
            assert message.address == meaning["address"]
            assert list(message.bits) == [meaning["value"].startswith("FF00")]  # FF00 = ON
        else:  # pragma: no cover - a new vector kind needs its check here
            pytest.fail(f"no check for function {frame.function:#x}")
    elif frame.is_exception:
        code = int(meaning["exception_code"].split()[0], 16)
        assert frame.exception_code == code == message.exception_code
        if "ILLEGAL DATA ADDRESS" in meaning["exception_code"]:
            assert EXCEPTION_REASONS[code] == "illegal data address"
        assert exception_response(frame.unit, frame.function & 0x7F, code) == wire
    else:
        if "registers" in meaning:
            assert list(message.registers) == [int(r, 16) for r in meaning["registers"]]
        if "float32_be" in meaning:
            raw, shown = meaning["float32_be"].split(" = ")
            assert (message.registers[0] << 16 | message.registers[1]) == int(raw, 16)
            value = decode_point(shipped_profiles()["eastron-sdm120"].point("1-0:32.7.0"), message.registers)
            # documented as 230.2 V; the register is the float32 just above it (230.20001),
            # which is 230.2 at the 0.1 V the meter displays
            displayed = Decimal(shown.split()[0])
            assert value.quantize(displayed) == displayed
        assert read_response(frame.unit, frame.function, message.registers) == wire


def test_a_vector_with_one_bit_flipped_is_a_checksum_error():
    for vector in VECTORS:
        wire = bytearray(_hex(vector["hex"]))
        wire[-3] ^= 0x01
        with pytest.raises(ChecksumError):
            decode(bytes(wire), server=vector["direction"] == "request")


def test_a_cut_off_frame_is_truncated():
    with pytest.raises(TruncatedFrame):
        decode(_hex("11 03 06 AE 41 56 52"))


# --- the stream decoder: what pymodbus's framer does not do -----------------------------------

RESPONSE = _hex("11 03 06 AE 41 56 52 43 40 49 AD")


def test_pymodbus_loses_a_frame_behind_one_garbage_byte_and_we_do_not():
    # pymodbus 3.16.1 FramerRTU assumes frames delimited by silence (serial-visa-peers notes)
    framer = FramerRTU(DecodePDU(is_server=False))
    used, pdu = framer.handleFrame(b"\x55" + RESPONSE, 0x11, 0)
    assert pdu is None and used == len(RESPONSE) + 1  # the good frame was consumed and dropped
    found = [f for f in StreamDecoder().feed(b"\x55" + RESPONSE) if isinstance(f, Frame)]
    assert found == [decode(RESPONSE)] and found[0].message.registers == [0xAE41, 0x5652, 0x4340]


def test_a_damaged_answer_then_a_good_one():
    bad = bytearray(RESPONSE)
    bad[4] ^= 0xFF
    decoder = StreamDecoder(unit=0x11, function=3)
    items = decoder.feed(b"\x00\xff" + bytes(bad) + RESPONSE)
    assert isinstance(items[0], ChecksumError) and items[-1] == decode(RESPONSE)
    assert decoder.skipped == 2 + len(bad) and decoder.pending == 0


def test_a_false_long_candidate_does_not_hide_a_later_frame():
    # 0x11 0x03 0xF8 claims a 253-byte answer; the real answer behind it is still found
    decoder = StreamDecoder()
    assert decoder.feed(b"\x11\x03\xf8" + RESPONSE) == [decode(RESPONSE)]


@given(st.binary(max_size=300))
def test_decode_raises_nothing_but_frame_errors(data):
    for server in (False, True):
        try:
            frame = decode(data, server=server)
        except FrameError:
            continue
        assert encode(frame) == data


@given(st.lists(st.binary(max_size=40), max_size=8))
def test_the_stream_decoder_never_raises(chunks):
    decoder = StreamDecoder()
    for chunk in chunks:
        for item in decoder.feed(chunk):
            assert isinstance(item, (Frame, FrameError))
    assert decoder.pending >= 0 and decoder.skipped >= 0


def _comparable(item: Frame | FrameError) -> object:
    return item if isinstance(item, Frame) else (type(item), str(item))


UNITS = st.integers(1, 247)
REGISTERS = st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=125)


@given(UNITS, st.sampled_from([3, 4]), REGISTERS)
def test_a_response_round_trips(unit, function, registers):
    frame = decode(read_response(unit, function, registers))
    assert (frame.unit, frame.function, frame.message.registers) == (unit, function, registers)


@given(st.integers(0, 247), st.sampled_from([3, 4]), st.integers(0, 0xFFFF), st.integers(1, 125))
def test_a_request_round_trips(unit, function, address, count):
    frame = decode(read_request(unit, function, address, count), server=True)
    assert (frame.unit, frame.function, frame.message.address, frame.message.count) == (unit, function, address, count)


@settings(max_examples=200)
@given(st.binary(max_size=20), UNITS, REGISTERS, st.binary(max_size=20), st.randoms(use_true_random=False))
def test_a_frame_in_noise_is_found_and_byte_by_byte_is_all_at_once(before, unit, registers, after, rng):
    wire = read_response(unit, 3, registers)
    stream = before + wire + after
    at_once = StreamDecoder().feed(stream)
    one_by_one = StreamDecoder()
    split = [item for byte in stream for item in one_by_one.feed(bytes([byte]))]
    assert [_comparable(i) for i in at_once] == [_comparable(i) for i in split]
    frames = [f for f in at_once if isinstance(f, Frame)]
    assert decode(wire) in frames  # noise may hide a (1 in 65536) false frame, never the real one


@settings(max_examples=200)
@given(st.text("0123456789", min_size=12, max_size=12), st.integers(0, 0xFFFFFFFF), st.integers(0, 4))
def test_dlt645_traffic_is_not_taken_for_modbus_requests(address, di, preamble):
    wire = dlt645.encode(dlt645.read_request(address, di), preamble=preamble)
    assert [f for f in StreamDecoder(server=True).feed(wire * 3) if isinstance(f, Frame)] == []


# --- pymodbus's own server as the meter ---------------------------------------------------------


class PtyBridge:
    """Two pseudo-terminals joined back to back, like a null-modem cable.

    pymodbus's server opens one slave path, our SerialLink the other; a thread copies
    bytes between the two masters (what socat would do; it is not installed here). The
    slave fds stay open so the masters never read EIO while a side reopens.
    """

    def __init__(self, *, answer_delay: float = 0.0) -> None:
        self.answer_delay = answer_delay  #: seconds the server's bytes are held back (a slow meter)
        self._held: list[tuple[float, bytes]] = []
        self.ends = [os.openpty(), os.openpty()]
        for master, slave in self.ends:
            tty.setraw(slave)  # before anyone opens it: a fresh pty is in cooked mode
            os.set_blocking(master, False)
        self.paths = [os.ttyname(slave) for _, slave in self.ends]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._copy, name="pty-bridge", daemon=True)
        self._thread.start()

    def _copy(self) -> None:
        (a, _), (b, _) = self.ends
        peer = {a: b, b: a}
        while not self._stop.is_set():
            wait = PEER_POLL_S if not self._held else max(0.0, min(PEER_POLL_S, self._held[0][0] - time.monotonic()))
            ready, _, _ = select.select([a, b], [], [], wait)
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                except OSError:  # EIO while nobody has the slave open
                    continue
                if data and fd == a and self.answer_delay:
                    self._held.append((time.monotonic() + self.answer_delay, data))
                elif data:
                    os.write(peer[fd], data)
            while self._held and self._held[0][0] <= time.monotonic():
                os.write(b, self._held.pop(0)[1])

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for master, slave in self.ends:
            os.close(master)
            os.close(slave)


#: Known SDM630 register contents (input registers, float32 as pymodbus encodes them).
SDM630_VALUES = {
    "1-0:32.7.0": "230.1", "1-0:52.7.0": "231.5", "1-0:72.7.0": "229.8",
    "1-0:31.7.0": "5.25", "1-0:51.7.0": "4.5", "1-0:71.7.0": "0.875",
    "1-0:21.7.0": "1180.5", "1-0:41.7.0": "1003.25", "1-0:61.7.0": "-150.75",
    "1-0:33.7.0": "0.98", "1-0:53.7.0": "0.97", "1-0:73.7.0": "-0.6",
    "1-0:1.7.0": "2033", "1-0:9.7.0": "2290.4", "1-0:3.7.0": "402.1", "1-0:13.7.0": "0.93",
    "1-0:14.7.0": "49.98", "1-0:1.8.0": "12345.6", "1-0:2.8.0": "789.25",
    "1-0:3.8.0": "2345.5", "1-0:4.8.0": "12.5", "1-0:91.7.0": "0.42", "1-0:15.8.0": "13134.9",
    "1-0:21.8.0": "4115.2", "1-0:41.8.0": "4115.25", "1-0:61.8.0": "4115.1",
    "1-0:22.8.0": "263", "1-0:42.8.0": "263.25", "1-0:62.8.0": "263",
}  # fmt: skip


def _sdm630_device(unit: int) -> SimDevice:
    """A pymodbus SimDevice holding SDM630_VALUES (W and kW alike: the meter stores W)."""
    profile = shipped_profiles()["eastron-sdm630"]
    blocks = []
    for obis, point in profile.points.items():
        raw = Decimal(SDM630_VALUES[obis])
        blocks.append(SimData(point.address, values=[float(raw)], datatype=DataType.FLOAT32))
    # SDM meters answer over their unmapped registers too (see the profile): fill the gaps
    # the driver's batches span, 0x0000..0x004F and 0x0156..0x0165
    mapped = {a for p in profile.points.values() for a in range(p.address, p.end)}
    for address in [*range(0x0050), *range(0x0156, 0x0166)]:
        if address not in mapped:
            blocks.append(SimData(address, values=[0], datatype=DataType.REGISTERS))
    blocks.sort(key=lambda b: b.address)
    holding = [SimData(0xFC02, values=[0x0070], datatype=DataType.UINT16)]  # meter code: SDM630
    return SimDevice(id=unit, simdata=(_BITS, _BITS, holding, blocks))


_BITS = [SimData(0, values=[False], datatype=DataType.BITS)]


async def _target_absent(*_args: object) -> ExcCodes:
    return ExcCodes.GATEWAY_NO_RESPONSE


def _absent_targets() -> SimDevice:
    """Every other unit id answers like a gateway without that target: exception 0B.

    pymodbus 3.16.1 with SimDevice contexts answers unknown unit ids with exception 04
    (a KeyError in its simulator core) even with ``ignore_missing_devices=True``; a
    catch-all device (id 0) that refuses every register turns that into gateway answers.
    """
    everything = [SimData(0, count=0x10000, values=0, datatype=DataType.REGISTERS)]
    return SimDevice(id=0, simdata=(_BITS, _BITS, everything, everything), action=_target_absent)


@pytest.fixture
def pymodbus_sdm630() -> Iterator[str]:
    """pymodbus's ModbusSerialServer as an SDM630 at unit 1; yields the path to open."""
    yield from _pymodbus_sdm630(0.0)


@pytest.fixture
def slow_pymodbus_sdm630() -> Iterator[str]:
    """The same, answering 650 ms after each request (the field report's slow meter)."""
    yield from _pymodbus_sdm630(SLOW_ANSWER_S)


#: How late the slow SDM630 answers: 3 × the 0.21 s Modbus timeout at 9600 Bd.
SLOW_ANSWER_S = 0.650


def _pymodbus_sdm630(answer_delay: float) -> Iterator[str]:
    bridge = PtyBridge(answer_delay=answer_delay)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, ModbusSerialServer] = {}

    def serve() -> None:
        asyncio.set_event_loop(loop)

        async def main() -> None:
            server = ModbusSerialServer(
                [_sdm630_device(1), _absent_targets()], framer=FramerType.RTU, port=bridge.paths[0], baudrate=FAST.baudrate,
            )
            holder["server"] = server
            await server.serve_forever(background=True)
            started.set()
            await server.serving

        loop.run_until_complete(main())

    thread = threading.Thread(target=serve, name="pymodbus-server", daemon=True)
    thread.start()
    assert started.wait(5), "pymodbus server did not start"
    try:
        yield bridge.paths[1]
    finally:
        asyncio.run_coroutine_threadsafe(holder["server"].shutdown(), loop).result(5)
        thread.join(5)
        loop.close()
        bridge.close()


def _on_link(path: str, scenario):
    async def main():
        async with SerialLink("bus1", path, FAST) as link:
            return await scenario(HalfDuplexChannel("bus1", link))

    return asyncio.run(main())


def test_the_driver_reads_an_sdm630_served_by_pymodbus(pymodbus_sdm630):
    profile = shipped_profiles()["eastron-sdm630"]
    meter = Meter("1", "modbus", "bus1", tuple(profile.points), options={"profile": "eastron-sdm630"})
    results = _on_link(pymodbus_sdm630, lambda bus: ModbusDriver().read_many(bus, meter, [resolve(q) for q in meter.quantities], 1.0))
    expected = [Measurement(Decimal(SDM630_VALUES[q]) * profile.points[q].scale, profile.points[q].unit) for q in profile.points]
    assert results == expected
    assert results[meter.quantities.index("1-0:1.7.0")] == Measurement(Decimal("2.033"), "kW")


def test_pymodbus_answers_an_unmapped_register_with_exception_02(pymodbus_sdm630):
    async def scenario(bus):
        with pytest.raises(MeterError) as info:
            await ModbusDriver().read_registers(bus, 1, 4, 0x4000, 2, 1.0)
        return info.value.code

    assert _on_link(pymodbus_sdm630, scenario) == 2


def test_a_sweep_finds_and_identifies_the_pymodbus_meter(pymodbus_sdm630):
    driver = ModbusDriver()
    found = _on_link(pymodbus_sdm630, lambda bus: driver.scan(bus, 0.1, units=range(1, 5)))
    assert found == ["1"] and driver.last_scan == {"1": "eastron-sdm630"}


def test_the_other_unit_ids_answer_as_an_absent_gateway_target(pymodbus_sdm630):
    async def scenario(bus):
        with pytest.raises(MeterError) as info:
            await ModbusDriver().read_registers(bus, 2, 4, 0x0000, 2, 1.0)
        return info.value.code, info.value.reason

    assert _on_link(pymodbus_sdm630, scenario) == (0x0B, "gateway target device failed to respond")


def test_our_frames_are_what_pymodbus_builds():
    rng = random.Random(5)
    for _ in range(200):
        unit, function, address, count = rng.randint(1, 247), rng.choice((3, 4)), rng.randrange(0x10000), rng.randint(1, 125)
        request_class = ReadHoldingRegistersRequest if function == 3 else ReadInputRegistersRequest
        theirs = FramerRTU(DecodePDU(is_server=False)).buildFrame(request_class(address=address, count=count, dev_id=unit))
        assert read_request(unit, function, address, count) == theirs


def test_an_sdm630_answering_650_ms_late_never_gets_a_value_stored(slow_pymodbus_sdm630, tmp_path):
    """The field report: voltage and import energy are two reads of two registers each, so a
    late answer to one fits the other. Read every second for several rounds, nothing is
    stored ok (or, if it were, only the meter's own value), and the meter is named late."""
    from meterhub.plugins import get_plugins
    from meterhub.runtime import Concentrator
    from meterhub.model import ChannelConfig, Quality, Schedule, Site
    from meterhub.store import open_store

    settings = SerialSettings(9600, 8, "N", 1)
    site = Site(
        channels={"bus1": ChannelConfig("bus1", "rs485", slow_pymodbus_sdm630, settings)},
        meters=(Meter("1", "modbus", "bus1", ("1-0:32.7.0", "1-0:1.8.0"), options={"profile": "eastron-sdm630"}),),
        schedule=Schedule(interval=1.0, retries=2, backoff_initial=1.0, backoff_max=1.0),
        store=f"sqlite:///{tmp_path / 'slow.db'}",
    )

    async def rounds() -> tuple[list, list]:
        with open_store(site.store) as store:
            async with Concentrator(site, plugins=get_plugins(), store=store) as conc:
                stop = asyncio.Event()
                asyncio.get_running_loop().call_later(6.0, stop.set)
                await conc.run(stop=stop)
            return store.readings(), store.events()

    readings, events = asyncio.run(rounds())
    assert len(readings) >= 4
    for r in readings:
        assert r.quality is not Quality.OK or r.value == Decimal(SDM630_VALUES[r.quantity]), r
    assert {r.quality for r in readings} <= {Quality.TIMEOUT, Quality.BACKED_OFF}, readings
    assert any(e.kind == "late_answer" for e in events)
