"""Interoperability: the RSP_UD frames captured from real meters (tests/data/mbus.json) are
replayed as a meter's answers on a pty and read through the driver, the SerialLink and the
core Bus, as a concentrator would read those meters."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import pytest

from meterhub.channels.halfduplex import HalfDuplexChannel
from meterhub.errors import MeterError, NotSupported
from meterhub.model import Measurement, Meter, SerialSettings
from meterhub.quantities import resolve
from meterhub.simulator import Fault, PtyBus
from meterhub_rs485 import mbus
from meterhub.channels.serial import SerialLink
from meterhub_rs485.mbus import LongFrame, ShortFrame, Telegram
from meterhub_rs485.mbus_driver import MbusDriver

VECTORS = json.loads((Path(__file__).parent / "data" / "mbus.json").read_text(encoding="utf-8"))["vectors"]
FAST = SerialSettings(115200, 8, "E", 1)
TIMEOUT = 0.25


class ReplayMeter:
    """A SimDevice that answers with recorded frames: E5 to SND_NKE and to a selection of
    its secondary address, the next recorded RSP_UD to each REQ_UD2 (the last one again
    once they run out)."""

    protocol = "mbus"

    def __init__(self, answers: list[bytes]) -> None:
        self.answers = [bytes(a) for a in answers]
        first = mbus.decode(self.answers[0])
        assert isinstance(first, LongFrame)
        self.primary = first.address
        header = mbus.parse_user_data(first).header if first.ci == mbus.CI_RSP_LONG else None
        self.secondary = header.secondary_address if isinstance(header, mbus.LongHeader) else None
        self.address = self.secondary or str(self.primary)
        self.fault: Fault | None = None
        self.selected = False
        self.requests: list[mbus.Frame] = []
        self._next = 0

    def new_decoder(self) -> mbus.StreamDecoder:
        return mbus.StreamDecoder()

    def handle(self, frame: Any) -> list[bytes]:
        if isinstance(frame, LongFrame) and frame.ci == mbus.CI_SELECT and frame.address == mbus.ADDRESS_NETWORK:
            self.selected = self.secondary is not None and mbus.secondary_matches(mbus.parse_select(frame), self.secondary)
            return [b"\xE5"] if self.selected else []
        if not isinstance(frame, ShortFrame):
            return []
        if frame.address != self.primary and not (frame.address == mbus.ADDRESS_NETWORK and self.selected):
            return []
        self.requests.append(frame)
        if frame.control == mbus.Control.SND_NKE:
            self._next = 0
            return [b"\xE5"]
        if frame.function == mbus.Control.REQ_UD2 & mbus.FUNCTION_MASK:
            answer = self.answers[min(self._next, len(self.answers) - 1)]
            self._next += 1
            return [answer]
        return []


def _final_telegram(raw: bytes) -> bytes:
    """An empty last telegram for a capture that says more records follow (DIF 1F): the
    meter's next telegram was not captured, so it gets the same header and no records."""
    frame = mbus.decode(raw)
    telegram = mbus.parse_user_data(frame)
    return mbus.encode(mbus.rsp_ud(frame.address, Telegram(telegram.header)))


def _replay(index: int) -> ReplayMeter:
    raw = bytes.fromhex(VECTORS[index]["hex"])
    answers = [raw]
    if mbus.parse_user_data(mbus.decode(raw)).more_follows:
        answers.append(_final_telegram(raw))
    return ReplayMeter(answers)


def _read(device: ReplayMeter, quantities: list[str], address: str | None = None) -> list:
    bus = PtyBus([device], settings=FAST, turnaround=(0.001, 0.003)).start()
    meter = Meter(address=address or str(device.primary), protocol="mbus", channel="bus1")

    async def go() -> list:
        async with SerialLink("bus1", bus.port, FAST) as link:
            return await MbusDriver().read_many(HalfDuplexChannel("bus1", link), meter, [resolve(q) for q in quantities], TIMEOUT)

    try:
        return asyncio.run(go())
    finally:
        bus.stop()


def m(value: str, unit: str) -> Measurement:
    return Measurement(Decimal(value), unit)


NS = NotSupported
HEAT = ["6-0:1.0.0", "6-0:2.0.0", "6-0:8.0.0", "6-0:9.0.0", "6-0:10.0.0", "6-0:11.0.0", "6-0:12.0.0", "0-0:1.0.0", "0-0:96.1.0"]

#: vector index -> (quantities, expected outcome per quantity: a Measurement or an exception type)
CASES: dict[int, tuple[list[str], list[Any]]] = {
    8: (["8-0:1.0.0", "0-0:96.1.0", "0-0:1.0.0"], [m("12.565", "m3"), Measurement("12345678", ""), NS]),
    9: (HEAT, [m("1389817", "kWh"), m("504647.0", "m3"), m("0", "kW"), m("0.0", "m3/h"), m("41.737434", "°C"), m("35.46365", "°C"), NS, NS,
               Measurement("03575845", "")]),
    10: (HEAT, [m("37351", "kWh"), m("561.08", "m3"), m("34.7", "kW"), m("0.543", "m3/h"), m("101.69", "°C"), m("46.16", "°C"),
                m("55.53", "K"), Measurement("2011-01-05T15:26:00", ""), Measurement("06855817", "")]),
    11: (["8-0:1.0.0", "0-0:1.0.0", "0-0:96.1.0", "6-0:1.0.0"], [m("123.49", "m3"), Measurement("2012-01-24T13:43:00", ""), Measurement("12000071", ""), NS]),
    12: (["1-0:1.8.0", "1-0:1.8.1", "1-0:1.8.4", "0-0:96.1.0"], [m("0", "kWh"), m("0", "kWh"), m("0", "kWh"), Measurement("78563412", "")]),
    13: (["1-0:1.8.0", "1-0:1.8.1", "1-0:1.8.2", "0-0:96.1.0"], [NS, m("2.930", "kWh"), m("0.060", "kWh"), Measurement("19000055", "")]),
    14: (["1-0:1.8.0", "0-0:96.1.0"], [NS, Measurement("21346578", "")]),
    15: (HEAT, [m("0", "kWh"), m("0.00", "m3"), m("0", "kW"), m("0.000", "m3/h"), m("19.5", "°C"), m("19.7", "°C"), m("-0.2", "K"),
                Measurement("2012-01-13T12:04:00", ""), Measurement("66660205", "")]),
    16: (["0-0:96.1.0", "8-0:1.0.0"], [Measurement("54000834", ""), NS]),
    17: (["8-0:1.0.0", "0-0:96.1.0"], [m("269", "m3"), Measurement("00182007", "")]),
    18: (["1-0:1.8.1", "1-0:1.8.2", "0-0:96.1.0"], [m("12.520", "kWh"), m("17744.330", "kWh"), Measurement("0500023E", "")]),
    19: (["0-0:96.1.0", "8-0:1.0.0"], [Measurement("10060958", ""), NS]),
}


@pytest.mark.parametrize("index", sorted(CASES), ids=lambda i: VECTORS[i]["source"].split("/")[-1][:32])
def test_a_captured_meter_reads_through_the_driver(index):
    quantities, expected = CASES[index]
    device = _replay(index)
    got = _read(device, quantities)
    for quantity, outcome, want in zip(quantities, got, expected):
        if isinstance(want, type):
            assert isinstance(outcome, want), (quantity, outcome)
        else:
            assert outcome == want, quantity
    assert device.requests[0] == mbus.snd_nke(device.primary)


def test_a_capture_that_says_more_follows_is_read_to_its_last_telegram():
    device = _replay(12)  # ABB Delta: its telegram ends with DIF 1F
    _read(device, ["1-0:1.8.0"])
    assert [f.control for f in device.requests] == [0x40, 0x7B, 0x5B]


def test_a_captured_meter_reads_by_its_secondary_address():
    device = _replay(10)
    assert device.secondary == "068558172D2C0804"
    assert _read(device, ["6-0:1.0.0"], address=device.secondary) == [m("37351", "kWh")]
    assert _read(_replay(10), ["6-0:1.0.0"], address="06855817FFFFFFFF") == [m("37351", "kWh")]


def test_an_application_error_answer_is_a_meter_error():
    error = mbus.encode(LongFrame(0x08, 5, mbus.CI_APPLICATION_ERROR, b"\x08"))  # "application too busy"
    (outcome,) = _read(ReplayMeter([error]), ["8-0:1.0.0"])
    assert isinstance(outcome, MeterError) and outcome.code == 8 and "busy" in outcome.reason


def test_a_record_the_meter_flags_as_in_error_is_a_meter_error():
    header = mbus.LongHeader("11111111", mbus.manufacturer_code("MHB"), 1, 0x07)
    flagged = mbus.raw_record(b"\x04", b"\x93\x15", bytes(4))  # volume, VIFE 15h: no data available
    good = mbus.make_record(mbus.Coding.BCD8, b"\x78", Decimal(11111111))
    answer = mbus.encode(mbus.rsp_ud(6, Telegram(header, [good, flagged])))
    volume, serial = _read(ReplayMeter([answer]), ["8-0:1.0.0", "0-0:96.1.0"])
    assert isinstance(volume, MeterError) and volume.code == 0x15 and "no data available" in str(volume)
    assert serial == Measurement("11111111", "")


def test_every_capture_survives_a_bus_with_noise_around_the_answer():
    device = _replay(10)
    bus = PtyBus([device], settings=FAST, turnaround=(0.001, 0.003), seed=11).start()
    bus.set_fault(device.address, Fault.NOISE)
    meter = Meter(address="17", protocol="mbus", channel="bus1")

    async def go() -> list:
        async with SerialLink("bus1", bus.port, FAST) as link:
            wire = HalfDuplexChannel("bus1", link)
            driver = MbusDriver()
            return [await driver.read_many(wire, meter, [resolve("6-0:1.0.0")], TIMEOUT) for _ in range(3)]

    try:
        rounds = asyncio.run(go())
    finally:
        bus.stop()
    assert rounds == [[m("37351", "kWh")]] * 3


def test_the_replayed_frames_are_unchanged_by_our_codec():
    for index in CASES:
        raw = bytes.fromhex(VECTORS[index]["hex"])
        frame = mbus.decode(raw)
        telegram = mbus.parse_user_data(frame)
        assert mbus.encode(attrs.evolve(frame, data=mbus.encode_user_data(telegram))) == raw
