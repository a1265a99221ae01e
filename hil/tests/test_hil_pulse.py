"""Closed-loop pulse accuracy: the pulse generator injects exact counts into a collector's
inputs, and the collector's registers, read back over RS485 by meterhub, must show exactly
the energy or volume injected. Virtual bench in CI, a Pi and a real collector in the lab."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from meterhub.channels.halfduplex import HalfDuplexChannel
from meterhub.model import Meter
from meterhub.plugins import get_plugins
from meterhub.quantities import resolve
from meterhub_hil.plugin import COLLECTOR_PROTOCOL
from meterhub_hil.pulse import Injected, register_value
from meterhub.channels.serial import SerialLink

pytestmark = [pytest.mark.hil, pytest.mark.needs("pulse")]

PULSES = 10_000
#: Pulse rates (Hz) tried on each input that can take them: 10,000 pulses at 50 Hz take
#: 200 s on a real bench (simulated time runs faster on the virtual one).
RATES = (50.0, 200.0, 1000.0)


def _read_input(bench, spec, device) -> dict[str, Decimal]:
    """The input's pulse count and energy (or volume), read by meterhub through the master adapter."""
    master = bench.pair(1).adapters[0] if not device.bus else bench.spec.buses[device.bus].adapters[0]
    settings = bench.settings(master)
    driver = get_plugins().meter_drivers()[COLLECTOR_PROTOCOL]
    value_quantity = "energy_import" if spec.unit == "kWh" else "water_volume"

    async def go() -> dict[str, Decimal]:
        async with SerialLink("bench", bench.port(master), settings) as link:
            bus = HalfDuplexChannel("bench", link)
            meter = Meter(address=spec.address, protocol=COLLECTOR_PROTOCOL, channel="bench")
            timeout = driver.transaction_timeout(settings)
            return {q: (await driver.read(bus, meter, resolve(q), timeout)).value for q in ("pulse_count", value_quantity)}

    return asyncio.run(go())


def _rates(spec) -> list[float]:
    """Pulse rates the input accepts: its minimum width and pause must fit in the period."""
    fastest = 1 / (4 * max(spec.min_width, spec.debounce, 1e-6))
    return [rate for rate in RATES if rate <= fastest] or [fastest]


def test_every_injected_pulse_is_counted_at_several_rates(bench, pulse_generator, pulse_wires):
    for wire, device, spec in pulse_wires:
        for rate in _rates(spec):
            before = _read_input(bench, spec, device)
            width = min(0.25 / rate, max(2 * spec.min_width, 2 * spec.debounce, 0.0002))
            pulse_generator.burst(wire.channel, PULSES, rate, width)
            pulse_generator.wait(timeout=PULSES / rate + 30)
            assert pulse_generator.sent(wire.channel) == PULSES
            after = _read_input(bench, spec, device)
            counted = int(after["pulse_count"] - before["pulse_count"])
            assert counted == PULSES, f"{device.name} input {spec.number} at {rate:g} Hz"
            injected = Injected(int(after["pulse_count"]), spec.constant)
            value = next(v for k, v in after.items() if k != "pulse_count")
            assert value == register_value(injected.value)  # the register shows exactly what was injected
            pulse_generator.write(f"OUTP{wire.channel} OFF")


def test_pulses_shorter_than_an_s0_inputs_minimum_width_are_not_counted(bench, pulse_generator, pulse_wires):
    s0 = [(w, d, s) for w, d, s in pulse_wires if s.kind == "s0" and s.min_width > 0]
    if not s0:
        pytest.skip("no S0 input with a minimum pulse width on this bench")
    wire, device, spec = s0[0]
    before = _read_input(bench, spec, device)
    short = spec.min_width / 2
    pulse_generator.burst(wire.channel, 100, 1 / (4 * spec.min_width), short)
    pulse_generator.wait(timeout=100 * 4 * spec.min_width + 30)
    after = _read_input(bench, spec, device)
    assert after["pulse_count"] == before["pulse_count"]
    pulse_generator.write(f"OUTP{wire.channel} OFF")
