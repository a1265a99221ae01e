"""The HIL suite on the RS485 pair: a meter read through real adapters, noise on the line,
and the line's timing measured on the wire. It runs on the virtual bench in CI and on a
real bench unchanged: ``pytest --bench hil/benches/virtual.yaml hil/tests``."""

from __future__ import annotations

import asyncio
import random
import threading
from decimal import Decimal

import pytest

from meterhub import timing
from meterhub.channels.halfduplex import HalfDuplexChannel
from meterhub.errors import FrameError
from meterhub.model import Meter, SerialSettings
from meterhub.protocols.dlt645 import PREAMBLE, StreamDecoder
from meterhub.protocols.dlt645_driver import FRAME_GAP, MAX_RESPONSE_DELAY, Dlt645Driver
from meterhub.protocols.dlt645_sim import SimulatedMeter
from meterhub.quantities import resolve
from meterhub_hil.meterport import AdapterMeterServer
from meterhub.channels.serial import SerialLink

pytestmark = [pytest.mark.hil, pytest.mark.needs("two-adapters")]

ADDRESS = "000000000123"
#: DL/T 645-2007 §1.6 (protocols notes): a meter answers no sooner than 20 ms after a request.
MIN_RESPONSE_DELAY = 0.020


def _read(bench, master: str, quantities, *, settings: SerialSettings | None = None, trace=None, rounds: int = 1,
          retries: int = 0):
    """Read ``quantities`` of the meter at ADDRESS through meterhub's own RS485 transport on
    ``master``, retrying a garbled answer up to ``retries`` times as the concentrator does."""
    settings = settings or bench.settings(master)

    async def go():
        async with SerialLink("bench", bench.port(master), settings) as link:
            bus = HalfDuplexChannel("bench", link, trace=trace)
            driver = Dlt645Driver()
            meter = Meter(address=ADDRESS, protocol="dlt645", channel="bench")
            found = []
            for _ in range(rounds):
                for q in quantities:
                    for attempt in range(retries + 1):
                        try:
                            found.append(await driver.read(bus, meter, resolve(q), driver.transaction_timeout(settings)))
                            break
                        except FrameError:
                            if attempt == retries:
                                raise
            return found

    return asyncio.run(go())


@pytest.fixture
def meter_on_b(bench, pair):
    """A simulated DL/T 645 meter answering through the meter adapter."""
    meter = SimulatedMeter(ADDRESS, seed=11)
    with AdapterMeterServer(bench.adapter(pair.meter), [meter]) as server:
        yield meter, server


def test_a_dlt645_meter_is_read_through_adapter_a_with_the_meter_on_adapter_b(bench, pair, meter_on_b):
    meter, server = meter_on_b
    before = meter.energy()
    energy, voltage = _read(bench, pair.master, ["energy_import", "voltage_l1"])
    after = meter.energy()
    assert energy.unit == "kWh" and before <= energy.value <= after  # the register as the meter showed it
    assert voltage.unit == "V" and Decimal("180") < voltage.value < Decimal("260")
    assert server.requests == 2


@pytest.mark.needs("noise")
def test_reads_survive_noise_injected_on_the_pair(bench, pair, meter_on_b):
    noise = bench.adapter(pair.noise)
    rng = random.Random(5)
    stop = threading.Event()

    def inject() -> None:  # bursts of garbage between (and sometimes into) transactions
        while not stop.wait(0.15):
            noise.write(bytes(rng.randrange(256) for _ in range(rng.randint(3, 12))))

    injector = threading.Thread(target=inject, daemon=True)
    injector.start()
    try:
        results = _read(bench, pair.master, ["energy_import"] * 8, retries=2)
    finally:
        stop.set()
        injector.join()
    assert len(results) == 8 and all(r.unit == "kWh" and r.value > 0 for r in results)
    _, server = meter_on_b
    assert server.skipped > 0  # the noise was on the wire: the meter's decoder had to skip it


@pytest.mark.needs("monitor")
def test_turnaround_and_inter_frame_gaps_on_the_wire_are_within_limits(bench, pair, meter_on_b):
    # The master leaves a turnaround (1 character) before its next DL/T 645 request (no
    # inter-frame gap: the frames delimit themselves). At 1200 8E1 that is 9.2 ms, more than
    # a monitor adapter polling at about 1 ms on a loaded machine may be late by (5 ms), so a
    # master that sent at once would fail here (on a pty as on USB).
    settings = SerialSettings(1200, 8, "E", 1)
    monitor = bench.adapter(pair.monitor)
    capture = monitor.monitor()
    try:
        _read(bench, pair.master, ["energy_import", "voltage_l1", "current_l1", "frequency"], settings=settings)
    finally:
        chunks = capture.stop()
    frames = _frames(chunks)
    kinds = [reply for reply, _, _ in frames]
    assert kinds == [False, True] * 4, kinds
    resolution = 0.005  # what a polling monitor on a loaded machine may be late by, once
    for (_, _, request_end), (_, reply_start, _) in zip(frames[0::2], frames[1::2]):
        turnaround = reply_start - request_end
        assert MIN_RESPONSE_DELAY - resolution <= turnaround <= MAX_RESPONSE_DELAY + resolution
    # DL/T 645: no inter-frame gap, and the FEh preamble may overlap the turnaround
    minimum_gap = timing.line_quiet(settings, FRAME_GAP, wake_up=len(PREAMBLE))
    for (_, _, reply_end), (_, next_start, _) in zip(frames[1::2], frames[2::2]):
        assert next_start - reply_end >= minimum_gap - resolution


def _frames(chunks):
    """(is_reply, first seen, last seen) for each DL/T 645 frame in a monitor capture."""
    decoder = StreamDecoder()
    found = []
    start = None
    for at, data in chunks:
        start = at if start is None else start
        frames = [f for f in decoder.feed(data) if not isinstance(f, Exception)]
        for frame in frames:
            found.append((frame.is_reply, start, at))
        if frames or not decoder.pending:
            start = None
    return found


def test_the_meters_under_test_answer_on_their_pair(bench, pair):
    from meterhub.plugins import get_plugins
    from meterhub_hil.bench import METER

    meters = [d for d in bench.spec.devices_of_type(METER) if d.bus == pair.bus.name]
    if not meters:
        pytest.skip(f"no meter under test on {pair.bus.name}")
    drivers = get_plugins().meter_drivers()
    settings = bench.settings(pair.master)

    async def read_all():
        async with SerialLink("bench", bench.port(pair.master), settings) as link:
            bus = HalfDuplexChannel("bench", link)
            found = {}
            for dev in meters:
                driver = drivers[dev.protocol]
                meter = Meter(address=driver.normalize_address(dev.address), protocol=dev.protocol, channel="bench")
                for q in dev.quantities or ("energy_import",):
                    found[(dev.name, q)] = await driver.read(bus, meter, resolve(q), driver.transaction_timeout(settings))
            return found

    readings = asyncio.run(read_all())
    assert readings and all(m.value is not None for m in readings.values())
