"""Pulse inputs: the S0 minimum width, reed-contact debouncing and the meter constant,
checked against the cases of the S0 notes (copied into hil/tests/data/s0_pulse.json)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from meterhub_hil.bench import PulseInput
from meterhub_hil.pulse import PulseCounter, register_value

VECTORS = json.loads((Path(__file__).parent / "data" / "s0_pulse.json").read_text())["vectors"]


def _pulses(counter: PulseCounter, count: int, *, period: float, width: float, start: float = 0.0) -> None:
    for k in range(count):
        counter.edge(start + k * period, True)
        counter.edge(start + k * period + width, False)


def _vector(kind: str, key: str) -> dict:
    return next(v for v in VECTORS if v["kind"] == kind and key in v["input"])


def test_an_s0_pulse_of_30_ms_counts_and_one_of_20_ms_does_not():
    assert _vector("timing", "pulse_width_ms")["input"]["pulse_width_ms"] == 30
    counter = PulseCounter(PulseInput(1, "s0", 1000, "kWh"))  # the standard's 30 ms minimum
    _pulses(counter, 1, period=0.1, width=0.030)
    _pulses(counter, 1, period=0.1, width=0.020, start=1.0)
    assert (counter.count, counter.rejected_short) == (1, 1)


@pytest.mark.parametrize("vector", [v for v in VECTORS if v["kind"] == "scaling"], ids=lambda v: str(v["input"]))
def test_counts_become_energy_or_volume_exactly(vector):
    given = vector["input"]
    if "imp_per_kWh" in given:
        spec, expected = PulseInput(1, "s0", given["imp_per_kWh"], "kWh", min_width=0), vector["expected"]["energy_kWh"]
    else:
        per_m3 = 1000 // given["litre_per_pulse"]
        spec, expected = PulseInput(1, "reed", per_m3, "m3", min_width=0), vector["expected"]["volume_m3"]
    counter = PulseCounter(spec)
    _pulses(counter, given["pulses"], period=0.01, width=0.004)
    assert counter.value == Decimal(str(expected))


def test_power_from_the_interval_between_pulses():
    vector = _vector("power", "interval_between_pulses_s")
    counter = PulseCounter(PulseInput(1, "s0", vector["input"]["imp_per_kWh"], "kWh", min_width=0))
    _pulses(counter, 2, period=vector["input"]["interval_between_pulses_s"], width=0.05)
    assert counter.power_w == Decimal(str(vector["expected"]["power_W"]))


def test_reed_contact_bounce_is_ignored():
    vector = _vector("debounce", "edges_ms")
    counter = PulseCounter(PulseInput(1, "reed", 100, "m3", min_width=0, debounce=vector["input"]["debounce_ms"] / 1000))
    for i, t in enumerate(vector["input"]["edges_ms"]):
        counter.edge(t / 1000, i % 2 == 0)  # closing, opening, closing, ...
    assert counter.count == vector["expected"]["counted_pulses"]
    assert counter.bounces == 4


def test_a_repeated_level_is_not_an_edge():
    counter = PulseCounter(PulseInput(1, "s0", 1000, "kWh", min_width=0))
    counter.edge(0.0, True)
    counter.edge(0.001, True)
    counter.edge(0.002, False)
    counter.edge(0.003, False)
    assert counter.count == 1


def test_a_register_shows_what_was_counted_rounded_down():
    assert register_value(Decimal("1.239")) == Decimal("1.23")
    assert register_value(Decimal("1000000.01")) == Decimal("0.01")  # XXXXXX.XX rolls over
