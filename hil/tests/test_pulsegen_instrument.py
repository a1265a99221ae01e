"""The command set against the simulated backend on a manual clock: no sockets, no sleeps."""

from __future__ import annotations

import json
import logging
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterhub_hil.pulsegen import scpi
from meterhub_hil.pulsegen.backends import BackendError, SimBackend
from meterhub_hil.pulsegen.instrument import WAIT, Identity, PulseGenerator
from meterhub_hil.pulsegen.s0 import S0_MAX_FREQUENCY_HZ, pulse_rate_hz, s0_timing_issues

DATA = Path(__file__).parent / "data"


class ManualClock:
    def __init__(self) -> None:
        self.t = 500.0

    def __call__(self) -> float:
        return self.t


class Bench:
    """An instrument, one session and a way to let simulated time pass."""

    def __init__(self) -> None:
        self.clock = ManualClock()
        self.backend = SimBackend({1: 17, 2: 27}, clock=self.clock, autorun=False)
        self.gen = PulseGenerator(self.backend, Identity(serial="PI-0042", firmware="0.1.0+sim"))
        self.session = self.gen.session()

    def send(self, line: str) -> list[str]:
        """Run a line whose *OPC?/*WAI (if any) must not wait; return its responses."""
        out = list(self.gen.run(self.session, line))
        assert WAIT not in out or not self.gen.busy()
        return [item for item in out if item is not WAIT]

    def query(self, line: str) -> str:
        (answer,) = self.send(line)
        return answer

    def errors(self) -> list[str]:
        found = []
        while (text := self.query("SYST:ERR?")) != '0,"No error"':
            found.append(text)
        return found

    def error_codes(self) -> list[int]:
        return [int(text.split(",")[0]) for text in self.errors()]

    def elapse(self, seconds: float) -> None:
        self.clock.t += seconds
        self.backend.advance()


@pytest.fixture
def bench():
    bench = Bench()
    yield bench
    bench.backend.close()


def test_idn_has_four_fields(bench):
    assert bench.query("*IDN?") == "meterhub,meterhub-pulsegen,PI-0042,0.1.0+sim"
    assert len(bench.query("*IDN?").split(",")) == 4


def test_identity_fields_never_contain_commas():
    assert str(Identity(serial="a,b")).split(",") == ["meterhub", "meterhub-pulsegen", "a b", "0"]


def test_the_acceptance_sequence_without_a_socket(bench):
    for line in ("SOUR1:PULS:FREQ 1000", "SOUR1:PULS:COUN 500", "OUTP1 ON", "INIT1"):
        assert bench.send(line) == []
    steps = bench.gen.run(bench.session, "*OPC?;SOUR1:PULS:SENT?")
    assert next(steps) is WAIT
    assert bench.gen.busy()
    bench.elapse(0.25)
    assert bench.gen.busy()
    bench.elapse(0.25)
    assert not bench.gen.busy()
    assert list(steps) == ["1", "500"]
    assert bench.errors() == []


def test_opc_does_not_wait_for_continuous_bursts(bench):
    bench.send("SOUR1:PULS:COUN 0;:OUTP1 ON;INIT1")
    assert not bench.gen.busy()
    assert bench.send("*OPC?") == ["1"]
    bench.elapse(1.0)
    assert bench.query("SOUR1:PULS:SENT?") == "11"  # 10 Hz default, pulses at 0, 0.1 ... 1.0 s
    bench.send("ABOR1")
    assert bench.query("SOUR1:PULS:SENT?") == "11"


def test_opc_waits_for_every_counted_burst_on_every_channel(bench):
    bench.send("SOUR1:PULS:COUN 10;:SOUR2:PULS:COUN 40;:OUTP1 ON;:OUTP2 ON;:INIT1;:INIT2")
    bench.elapse(1.0)  # channel 1 (10 pulses at 10 Hz) is done, channel 2 is not
    assert bench.backend.done(1) and bench.gen.busy()
    bench.elapse(3.0)
    assert not bench.gen.busy()
    assert bench.send("SOUR1:PULS:SENT?;:SOUR2:PULS:SENT?") == ["10", "40"]


def test_compound_queries_answer_in_order(bench):
    assert bench.send("SOUR2:PULS:FREQ 5;WIDT 20 ms;COUN 7;FREQ?;WIDT?;COUN?") == ["5", "0.02", "7"]
    assert bench.send("SOUR1:PULS:FREQ?") == ["10"]


def test_settings_are_per_channel_and_reset_by_rst(bench):
    bench.send("SOUR2:PULS:FREQ 2;:OUTP2 ON")
    assert bench.query("OUTP2?") == "1" and bench.query("OUTP1?") == "0"
    assert bench.query("SOUR2:PULS:FREQ?") == "2" and bench.query("PULS:FREQ?") == "10"
    bench.send("*RST")
    assert [bench.query(q) for q in ("SOUR2:PULS:FREQ?", "SOUR2:PULS:WIDT?", "SOUR2:PULS:COUN?", "OUTP2?")] == [
        "10", "0.05", "1", "0"]


def test_rst_stops_running_bursts(bench):
    bench.send("SOUR1:PULS:COUN 100;:OUTP1 ON;:INIT1")
    bench.elapse(0.55)
    bench.send("*RST")
    bench.elapse(20)
    assert bench.query("SOUR1:PULS:SENT?") == "6"
    assert not bench.gen.busy()


def test_width_defaults_to_half_the_period_and_follows_the_frequency(bench):
    assert bench.query("SOUR1:PULS:WIDT?") == "0.05"
    bench.send("SOUR1:PULS:FREQ 1000")
    assert bench.query("SOUR1:PULS:WIDT?") == "0.0005"
    bench.send("SOUR1:PULS:WIDT 0.1 ms")
    bench.send("SOUR1:PULS:FREQ 2000")
    assert bench.query("SOUR1:PULS:WIDT?") == "0.0001"
    bench.send("SOUR1:PULS:WIDT DEF")
    assert bench.query("SOUR1:PULS:WIDT?") == "0.00025"


def test_min_max_def_queries_and_settings(bench):
    limits = bench.backend.limits
    assert bench.query("SOUR1:PULS:FREQ? MAX") == scpi.format_decimal(limits.max_frequency)
    assert bench.query("SOUR1:PULS:FREQ? MIN") == scpi.format_decimal(limits.min_frequency)
    assert bench.query("SOUR1:PULS:FREQ? DEF") == "10"
    assert bench.query("SOUR1:PULS:COUN? MAX") == str(limits.max_count)
    bench.send("SOUR1:PULS:COUN MAX")
    assert bench.query("SOUR1:PULS:COUN?") == str(limits.max_count)
    bench.send("SOUR1:PULS:COUN INF")
    assert bench.query("SOUR1:PULS:COUN?") == "0"
    bench.send("SOUR1:PULS:WIDT MIN")
    assert bench.query("SOUR1:PULS:WIDT?") == scpi.format_decimal(limits.min_width)
    bench.send("SOUR1:PULS:WIDT MAX")
    assert Decimal(bench.query("SOUR1:PULS:WIDT?")) == Decimal("0.1") - limits.min_width
    assert bench.errors() == []


@pytest.mark.parametrize("line, code", [
    ("SOUR1:PULS:FREQ 0", scpi.DATA_OUT_OF_RANGE),
    ("SOUR1:PULS:FREQ -5", scpi.DATA_OUT_OF_RANGE),
    ("SOUR1:PULS:FREQ 1 MHz", scpi.DATA_OUT_OF_RANGE),       # above the sim's 100 kHz
    ("SOUR1:PULS:WIDT 0", scpi.DATA_OUT_OF_RANGE),
    ("SOUR1:PULS:WIDT 100 ns", scpi.DATA_OUT_OF_RANGE),      # below the 1 us resolution
    ("SOUR1:PULS:COUN -1", scpi.DATA_OUT_OF_RANGE),
    ("SOUR1:PULS:COUN 1e12", scpi.DATA_OUT_OF_RANGE),
    ("SOUR1:PULS:COUN 2.5", scpi.ILLEGAL_PARAMETER_VALUE),
    ("SOUR1:PULS:FREQ fast", scpi.ILLEGAL_PARAMETER_VALUE),
    ("SOUR1:PULS:FREQ? 5", scpi.ILLEGAL_PARAMETER_VALUE),
    ("OUTP1 MAYBE", scpi.ILLEGAL_PARAMETER_VALUE),
    ("SOUR1:PULS:FREQ 5 s", scpi.INVALID_SUFFIX),
    ("SOUR1:PULS:COUN 5 Hz", scpi.SUFFIX_NOT_ALLOWED),
    ("SOUR3:PULS:FREQ 5", scpi.HEADER_SUFFIX_OUT_OF_RANGE),  # only channels 1 and 2
    ("SOUR0:PULS:FREQ 5", scpi.HEADER_SUFFIX_OUT_OF_RANGE),
    ("INIT3", scpi.HEADER_SUFFIX_OUT_OF_RANGE),
    ("INIT1", scpi.SETTINGS_CONFLICT),                       # output is off
])
def test_invalid_settings_leave_an_error_and_change_nothing(bench, line, code):
    before = [bench.query(q) for q in ("SOUR1:PULS:FREQ?", "SOUR1:PULS:WIDT?", "SOUR1:PULS:COUN?", "OUTP1?")]
    assert bench.send(line) == []
    assert bench.error_codes() == [code]
    after = [bench.query(q) for q in ("SOUR1:PULS:FREQ?", "SOUR1:PULS:WIDT?", "SOUR1:PULS:COUN?", "OUTP1?")]
    assert after == before
    assert bench.backend.done(1)


@pytest.mark.parametrize("width", ["100 ms", "200 ms", "99.9995 ms"])
def test_a_width_that_leaves_no_pause_is_a_settings_conflict_at_init(bench, width):
    bench.send(f"SOUR1:PULS:WIDT {width};:OUTP1 ON")  # at the default 10 Hz: a 100 ms period
    assert bench.errors() == []
    bench.send("INIT1")
    assert bench.error_codes() == [scpi.SETTINGS_CONFLICT]
    assert bench.backend.done(1) and bench.query("SOUR1:PULS:SENT?") == "0"


def test_frequency_and_width_may_be_set_in_either_order(bench):
    bench.send("OUTP1 ON;:SOUR1:PULS:COUN 2")
    bench.send("SOUR1:PULS:FREQ 16;WIDT 30 ms;:INIT1")          # slow S0 pulses
    bench.elapse(1)
    bench.send("SOUR1:PULS:FREQ 1000;WIDT 0.5 ms;:INIT1")       # faster: frequency first
    bench.elapse(1)
    bench.send("SOUR1:PULS:WIDT 30 ms;FREQ 16;:INIT1")          # slower again: width first
    bench.elapse(1)
    assert bench.errors() == []
    assert bench.query("SOUR1:PULS:SENT?") == "2"


def test_init_while_running_is_init_ignored_and_the_burst_goes_on(bench):
    bench.send("SOUR1:PULS:COUN 20;:OUTP1 ON;:INIT1")
    bench.elapse(0.5)
    bench.send("INIT1")
    assert bench.error_codes() == [scpi.INIT_IGNORED]
    bench.elapse(2.0)
    assert bench.query("SOUR1:PULS:SENT?") == "20"


def test_output_off_aborts_the_burst(bench):
    bench.send("SOUR1:PULS:COUN 20;:OUTP1 ON;:INIT1")
    bench.elapse(0.35)
    bench.send("OUTP1 OFF")
    bench.elapse(0)
    assert bench.backend.done(1)
    bench.elapse(5)
    assert bench.query("SOUR1:PULS:SENT?") == "4"
    assert bench.query("OUTP1?") == "0"


def test_abort_without_suffix_is_channel_one(bench):
    bench.send("SOUR1:PULS:COUN 0;:SOUR2:PULS:COUN 0;:OUTP1 ON;:OUTP2 ON;:INIT1;:INIT2")
    bench.elapse(0.25)
    bench.send("ABOR")
    bench.elapse(1.0)
    assert bench.backend.done(1) and not bench.backend.done(2)
    assert bench.query("SOUR1:PULS:SENT?") == "3"


def test_execution_errors_do_not_stop_the_rest_of_the_line_but_command_errors_do(bench):
    assert bench.send("SOUR1:PULS:FREQ 0;FREQ?") == ["10"]
    assert bench.error_codes() == [scpi.DATA_OUT_OF_RANGE]
    assert bench.send("SOUR1:PULS:FREQ 5 V;FREQ?") == []
    assert bench.error_codes() == [scpi.INVALID_SUFFIX]


def test_a_failing_gpio_library_is_an_execution_error_and_the_instrument_goes_on(bench, monkeypatch):
    def broken(*args):
        raise BackendError("lgpio: cannot start pulses on GPIO 17: GPIO not claimed")

    monkeypatch.setattr(bench.backend, "start", broken)
    bench.send("OUTP1 ON;:INIT1;:SOUR1:PULS:FREQ 20")
    assert bench.errors() == ['-200,"Execution error;lgpio: cannot start pulses on GPIO 17: GPIO not claimed"']
    assert bench.query("SOUR1:PULS:FREQ?") == "20" and not bench.gen.busy()


def test_cls_empties_the_queue_and_syst_version_answers(bench):
    bench.send("BOGUS")
    bench.send("*CLS")
    assert bench.errors() == []
    assert bench.query("SYST:VERS?") == "1999.0"


def test_sessions_have_their_own_error_queues(bench):
    other = bench.gen.session()
    list(bench.gen.run(other, "BOGUS"))
    assert bench.errors() == []
    assert list(bench.gen.run(other, "SYST:ERR?")) == ['-113,"Undefined header;BOGUS"']


def test_bursts_too_fast_for_s0_are_allowed_with_a_warning(bench, caplog):
    with caplog.at_level(logging.WARNING, logger="meterhub_hil.pulsegen"):
        bench.send("SOUR1:PULS:FREQ 1000;:OUTP1 ON;:INIT1")
    assert "S0" in caplog.text and bench.errors() == []
    caplog.clear()
    bench.elapse(1)
    with caplog.at_level(logging.WARNING, logger="meterhub_hil.pulsegen"):
        bench.send("SOUR1:PULS:FREQ 16;WIDT 30 ms;:INIT1")
    assert "S0" not in caplog.text


LINES = st.lists(
    st.sampled_from(["SOUR1:PULS:FREQ", "SOUR2:PULS:WIDT", "PULS:COUN", "SOUR1:PULS:SENT?", "OUTP1", "OUTP2?",
                     "INIT1", "INIT2", "ABOR2", "*RST", "*CLS", "SYST:ERR?", "*IDN?", " ", ";", ":", ",", "?",
                     "1", "0", "-3", "1e3", "5 ms", "kHz", "ON", "OFF", "MAX", "DEF", "x", '"']),
    max_size=25,
).map("".join)


@settings(max_examples=150)
@given(LINES)
def test_no_program_message_makes_a_handler_fail(line):
    bench = Bench()
    try:
        for _ in bench.gen.run(bench.session, line):
            pass
        bench.elapse(0.5)
        errors = bench.errors()
        assert len(errors) <= scpi.ERROR_QUEUE_DEPTH
        assert not [e for e in errors if "internal error" in e], errors  # a handler bug, caught and logged
    finally:
        bench.backend.close()


# --- S0 timing vectors (copied from the shared protocol notes: tests/data/s0_pulse.json) ----


def s0_vectors(*keys: str) -> list[dict]:
    vectors = json.loads((DATA / "s0_pulse.json").read_text())["vectors"]
    found = [v for v in vectors if v["kind"] == "timing" and set(keys) <= set(v["input"])]
    assert found, keys
    return found


def test_s0_pulse_width_vectors():
    for vector in s0_vectors("pulse_width_ms"):
        width = Decimal(vector["input"]["pulse_width_ms"]) / 1000
        issues = s0_timing_issues(Decimal(1), width)  # at 1 Hz the pause is long
        assert (not issues) is vector["expected"].startswith("valid"), (vector, issues)


def test_s0_pause_vector():
    (vector,) = s0_vectors("pause_ms")
    pause = Decimal(vector["input"]["pause_ms"]) / 1000
    frequency = 1 / (Decimal("0.030") + pause)  # a valid 30 ms pulse, then the pause
    issues = s0_timing_issues(frequency, Decimal("0.030"))
    assert (not issues) is vector["expected"].startswith("valid"), (vector, issues)
    assert s0_timing_issues(frequency, Decimal("0.031")) == ["pause 29 ms is shorter than the S0 minimum of 30 ms"]


def test_s0_maximum_rate_vector():
    (vector,) = s0_vectors("imp_per_kWh", "max_power_kW")
    rate = pulse_rate_hz(Decimal(vector["input"]["imp_per_kWh"]), Decimal(vector["input"]["max_power_kW"]))
    assert round(rate, 1) == Decimal(str(vector["expected"]["pulse_rate_hz"]))
    assert round(1000 / rate) == vector["expected"]["period_ms"]
    assert (not s0_timing_issues(rate, Decimal("0.030"))) is vector["expected"]["ok_with_30ms_on_30ms_off"]
    assert rate < S0_MAX_FREQUENCY_HZ < 17
