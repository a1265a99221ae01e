"""The simulated backend: exact, deterministic counts and the edges a listener sees."""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from fractions import Fraction

import pytest

from meterhub_hil.pulsegen.backends import BackendError, SimBackend


class ManualClock:
    """A clock the test moves by hand (binary-exact values keep the arithmetic exact)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t


class Edges:
    """A listener that records every edge (thread-safe: the ticker thread calls it)."""

    def __init__(self) -> None:
        self.edges: list[tuple[float, int]] = []
        self._lock = threading.Lock()

    def __call__(self, when: float, level: int) -> None:
        with self._lock:
            self.edges.append((when, level))

    def rising(self) -> list[float]:
        with self._lock:
            return [t for t, level in self.edges if level == 1]

    def falling(self) -> list[float]:
        with self._lock:
            return [t for t, level in self.edges if level == 0]


def wait_done(backend: SimBackend, channel: int, deadline_s: float = 60.0) -> None:
    """Wait for a burst to finish; the deadline only turns a hang into a failure."""
    limit = time.monotonic() + deadline_s
    while not backend.done(channel):
        assert time.monotonic() < limit, "burst never finished"
        time.sleep(0.005)


@pytest.fixture
def clock():
    return ManualClock()


@pytest.fixture
def manual(clock):
    backend = SimBackend({1: 17, 2: 27}, clock=clock, autorun=False)
    yield backend
    backend.close()


def test_pulse_k_rises_at_t0_plus_k_over_f(manual, clock):
    edges = Edges()
    manual.subscribe(1, edges)
    t0 = manual.now()
    manual.start(1, 500, Decimal(1000), Decimal("0.0005"))
    clock.t += 0.25  # exactly 250 periods later: pulses 0..250 have risen
    manual.advance()
    assert manual.sent(1) == 251
    assert len(edges.rising()) == 251
    assert len(edges.falling()) == 250  # pulse 250 is still ON (it falls at 0.2505 s)
    assert edges.rising()[:3] == pytest.approx([t0, t0 + 0.001, t0 + 0.002], abs=1e-12)
    assert edges.falling()[0] == pytest.approx(t0 + 0.0005, abs=1e-12)
    assert not manual.done(1)


def test_a_counted_burst_is_done_after_its_last_period_with_exactly_count_pulses(manual, clock):
    edges = Edges()
    manual.subscribe(1, edges)
    manual.start(1, 10_000, Decimal(1000), Decimal("0.0005"))
    clock.t += 9.999  # the last pulse has risen, its period is not over
    manual.advance()
    assert manual.sent(1) == 10_000 and not manual.done(1)
    clock.t += 0.001
    manual.advance()
    assert manual.done(1)
    assert manual.sent(1) == 10_000
    assert len(edges.rising()) == len(edges.falling()) == 10_000
    clock.t += 100  # nothing more happens after the burst
    manual.advance()
    assert manual.sent(1) == 10_000 and len(edges.edges) == 20_000


def test_edges_alternate_and_keep_the_programmed_width_and_period(manual, clock):
    edges = Edges()
    manual.subscribe(1, edges)
    t0 = manual.now()
    manual.start(1, 100, Decimal(16), Decimal("0.030"))
    clock.t += 100 / 16
    manual.advance()
    levels = [level for _, level in edges.edges]
    assert levels == [1, 0] * 100
    rising, falling = edges.rising(), edges.falling()
    for k in range(100):
        assert rising[k] == pytest.approx(t0 + k / 16, abs=1e-9)
        assert falling[k] - rising[k] == pytest.approx(0.030, abs=1e-9)


def test_abort_freezes_the_count_and_ends_an_on_pulse_at_the_abort(manual, clock):
    edges = Edges()
    manual.subscribe(1, edges)
    manual.start(1, 500, Decimal(1000), Decimal("0.0005"))
    clock.t += 0.25
    manual.stop(1)
    manual.advance()
    assert manual.done(1)
    assert manual.sent(1) == 251
    assert len(edges.rising()) == len(edges.falling()) == 251
    assert edges.falling()[-1] == pytest.approx(manual.now(), abs=1e-12)  # forced OFF at the abort
    clock.t += 10
    manual.advance()
    assert manual.sent(1) == 251 and len(edges.edges) == 502


def test_a_continuous_burst_runs_until_stopped(manual, clock):
    manual.start(1, 0, Decimal(100), Decimal("0.005"))
    clock.t += 1000.0
    manual.advance()
    assert not manual.done(1)
    assert manual.sent(1) == 100_001  # pulses at 0, 10 ms, ..., 1000 s
    manual.stop(1)
    manual.advance()
    assert manual.done(1) and manual.sent(1) == 100_001


def test_channels_are_independent(manual, clock):
    one, two = Edges(), Edges()
    manual.subscribe(1, one)
    manual.subscribe(2, two)
    manual.start(1, 3, Decimal(1), Decimal("0.5"))
    manual.start(2, 5, Decimal(2), Decimal("0.25"))
    clock.t += 4.0
    manual.advance()
    assert (manual.sent(1), manual.sent(2)) == (3, 5)
    assert (len(one.rising()), len(two.rising())) == (3, 5)
    assert manual.done(1) and manual.done(2)


def test_a_late_subscriber_sees_edges_from_then_on_and_a_cancelled_one_none(manual, clock):
    manual.start(1, 100, Decimal(10), Decimal("0.05"))
    clock.t += 2.0
    manual.advance()
    late, cancelled = Edges(), Edges()
    manual.subscribe(1, late)
    subscription = manual.subscribe(1, cancelled)
    subscription.cancel()
    clock.t += 3.0
    manual.advance()
    assert len(late.rising()) == 30  # pulses 21..50 of the 51 risen by t = 5 s
    assert cancelled.edges == []


def test_a_failing_listener_does_not_stop_the_others(manual, clock):
    def broken(when, level):
        raise RuntimeError("listener bug")

    edges = Edges()
    manual.subscribe(1, broken)
    manual.subscribe(1, edges)
    manual.start(1, 4, Decimal(2), Decimal("0.1"))
    clock.t += 2.0
    manual.advance()
    assert len(edges.rising()) == 4 and manual.done(1)


def test_unknown_channel_is_refused(manual):
    with pytest.raises(BackendError):
        manual.start(3, 1, Decimal(1), Decimal("0.1"))


def test_time_scale_must_be_positive():
    with pytest.raises(ValueError):
        SimBackend(time_scale=0, autorun=False)


# --- the ticker thread, real clock -----------------------------------------------------------


@pytest.mark.parametrize("frequency, width, scale", [
    (Decimal(16), Decimal("0.030"), Fraction(4000)),     # S0 rate: 625 s of pulses in ~0.16 s
    (Decimal(1000), Decimal("0.0005"), Fraction(40)),    # 10 s in ~0.25 s
    (Decimal(50_000), Decimal("0.00001"), Fraction(1)),  # 0.2 s in real time
])
def test_ten_thousand_pulses_are_counted_exactly_by_the_ticker(frequency, width, scale):
    backend = SimBackend({1: 17}, time_scale=scale)
    edges = Edges()
    backend.subscribe(1, edges)
    try:
        backend.start(1, 10_000, frequency, width)
        wait_done(backend, 1)
        assert backend.sent(1) == 10_000
        assert len(edges.rising()) == 10_000 and len(edges.falling()) == 10_000
        levels = [level for _, level in edges.edges]
        assert levels == [1, 0] * 10_000
        rising = edges.rising()
        period = float(1 / frequency)
        assert rising[-1] - rising[0] == pytest.approx(9_999 * period, rel=1e-9)
    finally:
        backend.close()


def test_real_time_at_1_khz_with_a_listener_counts_exactly():
    backend = SimBackend({1: 17})
    edges = Edges()
    backend.subscribe(1, edges)
    try:
        backend.start(1, 1_000, Decimal(1000), Decimal("0.0005"))
        assert not backend.done(1)
        wait_done(backend, 1)
        assert backend.sent(1) == 1_000
        assert len(edges.rising()) == len(edges.falling()) == 1_000
    finally:
        backend.close()


def test_close_stops_running_bursts_and_the_ticker():
    backend = SimBackend({1: 17}, time_scale=10)
    edges = Edges()
    backend.subscribe(1, edges)
    backend.start(1, 0, Decimal(100), Decimal("0.001"))
    time.sleep(0.05)
    backend.close()
    assert backend.done(1)
    assert edges.edges and edges.edges[-1][1] == 0  # the pin was left OFF
    assert len(edges.rising()) == backend.sent(1)
