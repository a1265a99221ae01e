"""DL/T 645 discovery over the real RS485 path: simulated meters on a pty, our SerialLink,
the core Bus. The simulated bus garbles answers that overlap, as a real pair does."""

from __future__ import annotations

import asyncio

from meterhub.channels.halfduplex import HalfDuplexChannel, WireRecord
from meterhub.model import SerialSettings
from meterhub.protocols.dlt645_driver import Dlt645Driver
from meterhub.protocols.dlt645_sim import Fault, SimulatedMeter, start_dlt645_sim
from meterhub.simulator import PtyBus
from meterhub.channels.serial import SerialLink

FAST = SerialSettings(115200, 8, "E", 1)
#: Quick meters (2-5 ms turnaround) so a scan of 100 queries a level stays short in CI.
TURNAROUND = (0.002, 0.005)
#: Per query: long enough for the slowest simulated answer at 115200 Bd on a busy machine
#: (50 ms lost an answer now and then while the whole suite ran on both cores).
QUERY_TIMEOUT = 0.08


def _scan(bus: PtyBus, timeout: float = QUERY_TIMEOUT) -> tuple[list[str], int]:
    """The addresses found, and how many requests the scan sent."""

    sent: list[WireRecord] = []

    async def go() -> list[str]:
        async with SerialLink("bus1", bus.port, FAST) as link:
            wire = HalfDuplexChannel("bus1", link, trace=lambda r: sent.append(r) if r.direction == "tx" else None)
            return await Dlt645Driver().scan(wire, timeout)

    found = asyncio.run(go())
    return found, len(sent)


def _bus(addresses: list[str]) -> PtyBus:
    meters = [SimulatedMeter(a, seed=i) for i, a in enumerate(addresses)]
    return PtyBus(meters, settings=FAST, turnaround=TURNAROUND).start()


def test_a_point_to_point_line_is_answered_by_one_read_address():
    bus = start_dlt645_sim(1, baudrate=115200, first_address="123456789012", turnaround=TURNAROUND)
    try:
        found, requests = _scan(bus, timeout=0.5)  # one query: it can afford to wait
    finally:
        bus.stop()
    assert found == ["123456789012"]
    assert requests == 1


def test_a_multi_drop_bus_of_32_meters_is_searched_and_all_32_found():
    addresses = [f"{i:012d}" for i in range(1, 33)]
    bus = _bus(addresses)
    try:
        found, requests = _scan(bus)
    finally:
        bus.stop()
    assert found == addresses
    assert requests == 1 + 100  # the wildcard collides; one level of A0 values separates them all


def test_meters_that_share_their_last_digits_are_separated_a_level_deeper():
    # 32 meters all ending in 07: A0 cannot tell them apart, A1 can.
    addresses = sorted(f"0000000{i:03d}07" for i in range(32))
    bus = _bus(addresses)
    try:
        found, requests = _scan(bus)
    finally:
        bus.stop()
    assert found == addresses
    assert requests == 1 + 100 + 100


def test_a_silent_meter_is_not_found_and_the_others_are():
    addresses = ["000000000001", "000000000002", "000000000003"]
    bus = _bus(addresses)
    bus.set_fault("000000000002", Fault.SILENCE)
    try:
        found, _ = _scan(bus)
    finally:
        bus.stop()
    assert found == ["000000000001", "000000000003"]


def test_an_empty_line_gives_nothing():
    bus = _bus([])
    try:
        found, requests = _scan(bus)
    finally:
        bus.stop()
    assert found == []
    assert requests == 2  # read address, then one abbreviated read for meters without 13h


def test_a_timeout_shorter_than_the_frames_is_raised_and_answers_that_come_late_are_not_phantoms(caplog):
    # 2400 Bd, meters answering 30-60 ms after a query, asked with a 0.05 s wait: the wait
    # becomes the query and answer's wire time, answers finishing after it are heard to
    # their end, and only the three real addresses come out.
    slow = SerialSettings(2400, 8, "E", 1)
    addresses = ["000000000001", "000000000002", "000000000003"]
    bus = PtyBus([SimulatedMeter(a, seed=i) for i, a in enumerate(addresses)], settings=slow).start()

    async def go() -> list[str]:
        async with SerialLink("bus1", bus.port, slow) as link:
            return await Dlt645Driver().scan(HalfDuplexChannel("bus1", link), 0.05)

    try:
        found = asyncio.run(go())
    finally:
        bus.stop()
    assert found == addresses
    assert any("cannot be answered within 0.050 s" in r.getMessage() for r in caplog.records)
