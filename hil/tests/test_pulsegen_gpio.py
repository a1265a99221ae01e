"""The lgpio and pigpio code paths against stand-ins that follow the libraries' documented APIs.

No Raspberry Pi here: the fakes record the calls and play the documented behaviour
(lgpio.h lgTxPulse/lgTxBusy; pigpio.py wave_* and callback tally), so these tests pin
what the backends ask of the libraries, not the libraries themselves.
"""

from __future__ import annotations

import sys
import types
from decimal import Decimal

import pytest

from meterhub_hil.pulsegen import backends, scpi
from meterhub_hil.pulsegen.backends import (
    PIGPIO_LOOP_MAX,
    PIGPIO_MAX_COUNT,
    BackendError,
    LgpioBackend,
    PigpioBackend,
    create_backend,
    pigpio_chain,
    pulse_micros,
)


class ManualClock:
    def __init__(self) -> None:
        self.t = 50.0

    def __call__(self) -> float:
        return self.t


# --- lgpio -------------------------------------------------------------------------------


class FakeLgpio(types.ModuleType):
    """lgpio's module API as lgpio.h documents it; a started cycle train stays busy until finish()."""

    TX_PWM = 0

    class error(Exception):
        pass

    def __init__(self) -> None:
        super().__init__("lgpio")
        self.calls: list[tuple] = []
        self.busy: dict[int, bool] = {}

    def gpiochip_open(self, chip):
        self.calls.append(("gpiochip_open", chip))
        return 3

    def gpio_claim_output(self, handle, gpio, level=0, lFlags=0):
        self.calls.append(("gpio_claim_output", handle, gpio, level))
        return 0

    def tx_pulse(self, handle, gpio, pulse_on, pulse_off, pulse_offset=0, pulse_cycles=0):
        self.calls.append(("tx_pulse", handle, gpio, pulse_on, pulse_off, pulse_offset, pulse_cycles))
        self.busy[gpio] = bool(pulse_on or pulse_off)
        return 9

    def tx_busy(self, handle, gpio, kind):
        return int(self.busy.get(gpio, False))

    def gpio_write(self, handle, gpio, level):
        self.calls.append(("gpio_write", handle, gpio, level))
        return 0

    def gpio_free(self, handle, gpio):
        self.calls.append(("gpio_free", handle, gpio))
        return 0

    def gpiochip_close(self, handle):
        self.calls.append(("gpiochip_close", handle))
        return 0

    def error_text(self, code):
        return f"error {code}"

    def finish(self, gpio):
        self.busy[gpio] = False


@pytest.fixture
def lg(monkeypatch):
    fake = FakeLgpio()
    monkeypatch.setitem(sys.modules, "lgpio", fake)
    return fake


def test_lgpio_claims_every_pin_low_on_the_chosen_chip(lg):
    LgpioBackend({1: 17, 2: 27}, chip=4)
    assert lg.calls == [("gpiochip_open", 4), ("gpio_claim_output", 3, 17, 0), ("gpio_claim_output", 3, 27, 0)]


def test_lgpio_bursts_are_one_counted_tx_pulse(lg):
    clock = ManualClock()
    backend = LgpioBackend({1: 17}, clock=clock)
    backend.start(1, 500, Decimal(1000), Decimal("0.0005"))
    assert lg.calls[-1] == ("tx_pulse", 3, 17, 500, 500, 0, 500)
    assert not backend.done(1)
    clock.t += 0.2495
    assert backend.sent(1) == 250  # an estimate while lgpio runs
    lg.finish(17)
    assert backend.done(1) and backend.sent(1) == 500  # exact once lgpio is done


def test_lgpio_stop_cancels_the_train_and_leaves_the_pin_low(lg):
    clock = ManualClock()
    backend = LgpioBackend({1: 17}, clock=clock)
    backend.start(1, 0, Decimal(10), Decimal("0.03"))
    clock.t += 1.05
    backend.stop(1)
    assert lg.calls[-2:] == [("tx_pulse", 3, 17, 0, 0, 0, 0), ("gpio_write", 3, 17, 0)]
    assert backend.done(1) and backend.sent(1) == 11
    backend.close()
    assert ("gpio_free", 3, 17) in lg.calls and lg.calls[-1] == ("gpiochip_close", 3)


def test_lgpio_failures_become_backend_errors(lg):
    def refuse(*args):
        raise lg.error("GPIO busy")

    lg.gpio_claim_output = refuse
    with pytest.raises(BackendError, match="claim GPIO 17.*GPIO busy"):
        LgpioBackend({1: 17})


def test_lgpio_negative_status_becomes_a_backend_error(lg):
    backend = LgpioBackend({1: 17})
    lg.tx_pulse = lambda *args: -42
    with pytest.raises(BackendError, match="error -42"):
        backend.start(1, 5, Decimal(10), Decimal("0.03"))


def test_missing_lgpio_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "lgpio", None)
    with pytest.raises(BackendError, match="pip install lgpio"):
        create_backend("lgpio", {1: 17})


def test_lgpio_import_failing_on_an_unwritable_directory_says_so(monkeypatch):
    def unwritable(name):
        raise FileNotFoundError(2, "No such file or directory", ".lgd-nfy-3")

    monkeypatch.setattr(backends.importlib, "import_module", unwritable)
    with pytest.raises(BackendError, match="writable working directory"):
        LgpioBackend({1: 17})


# --- pigpio ------------------------------------------------------------------------------


class FakeTally:
    def __init__(self) -> None:
        self.count = 0
        self.cancelled = False

    def tally(self):
        return self.count

    def reset_tally(self):
        self.count = 0

    def cancel(self):
        self.cancelled = True


class FakePi:
    def __init__(self, module, host, port) -> None:
        self.module = module
        self.connected = module.reachable
        self.calls: list[tuple] = []
        self.tallies: dict[int, FakeTally] = {}
        self.busy = False

    def set_mode(self, gpio, mode):
        self.calls.append(("set_mode", gpio, mode))
        return 0

    def write(self, gpio, level):
        self.calls.append(("write", gpio, level))
        return 0

    def callback(self, gpio, edge):
        assert edge == self.module.RISING_EDGE
        self.tallies[gpio] = FakeTally()
        return self.tallies[gpio]

    def wave_clear(self):
        self.calls.append(("wave_clear",))
        return 0

    def wave_add_generic(self, pulses):
        self.calls.append(("wave_add_generic", [(p.gpio_on, p.gpio_off, p.delay) for p in pulses]))
        return len(pulses)

    def wave_create(self):
        return 0

    def wave_chain(self, data):
        self.calls.append(("wave_chain", bytes(data)))
        self.busy = True
        return 0

    def wave_send_repeat(self, wave_id):
        self.calls.append(("wave_send_repeat", wave_id))
        self.busy = True
        return 1

    def wave_tx_busy(self):
        return int(self.busy)

    def wave_tx_stop(self):
        self.calls.append(("wave_tx_stop",))
        self.busy = False
        return 0

    def stop(self):
        self.calls.append(("stop",))


class FakePigpio(types.ModuleType):
    OUTPUT = 1
    RISING_EDGE = 0

    class error(Exception):
        pass

    class pulse:
        def __init__(self, gpio_on, gpio_off, delay):
            self.gpio_on, self.gpio_off, self.delay = gpio_on, gpio_off, delay

    def __init__(self) -> None:
        super().__init__("pigpio")
        self.reachable = True
        self.instances: list[FakePi] = []

    def pi(self, host="localhost", port=8888):
        instance = FakePi(self, host, port)
        self.instances.append(instance)
        return instance

    def error_text(self, code):
        return f"error {code}"


@pytest.fixture
def pig(monkeypatch):
    fake = FakePigpio()
    monkeypatch.setitem(sys.modules, "pigpio", fake)
    return fake


def test_pigpio_bursts_are_one_wave_repeated_by_a_counted_chain(pig):
    backend = PigpioBackend({1: 17, 2: 27})
    pi = pig.instances[0]
    backend.start(1, 70_000, Decimal(1000), Decimal("0.0003"))
    assert ("wave_add_generic", [(1 << 17, 0, 300), (0, 1 << 17, 700)]) in pi.calls
    assert pi.calls[-1] == ("wave_chain", pigpio_chain(0, 70_000))
    pi.tallies[17].count = 1234
    assert not backend.done(1) and backend.sent(1) == 1234  # the edge tally while running
    pi.busy = False
    assert backend.done(1) and backend.sent(1) == 70_000  # exact once the chain is done


def test_pigpio_sends_one_wave_at_a_time(pig):
    backend = PigpioBackend({1: 17, 2: 27})
    backend.start(1, 10, Decimal(10), Decimal("0.03"))
    with pytest.raises(BackendError) as caught:
        backend.start(2, 10, Decimal(10), Decimal("0.03"))
    assert caught.value.code == scpi.SETTINGS_CONFLICT
    pig.instances[0].busy = False
    backend.start(2, 10, Decimal(10), Decimal("0.03"))  # free again once channel 1 is done


def test_pigpio_continuous_and_stop(pig):
    backend = PigpioBackend({1: 17})
    pi = pig.instances[0]
    backend.start(1, 0, Decimal(5), Decimal("0.05"))
    assert pi.calls[-1] == ("wave_send_repeat", 0)
    pi.tallies[17].count = 42
    backend.stop(1)
    assert pi.calls[-2:] == [("wave_tx_stop",), ("write", 17, 0)]
    assert backend.done(1) and backend.sent(1) == 42
    backend.close()
    assert pi.tallies[17].cancelled and pi.calls[-1] == ("stop",)


def test_pigpio_without_a_daemon_says_how_to_start_it(pig):
    pig.reachable = False
    with pytest.raises(BackendError, match="systemctl enable --now pigpiod"):
        PigpioBackend({1: 17})


def test_missing_pigpio_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "pigpio", None)
    with pytest.raises(BackendError, match="pip install pigpio"):
        create_backend("pigpio", {1: 17})


def test_unknown_backend():
    with pytest.raises(BackendError, match="sim, lgpio, pigpio"):
        create_backend("arduino")


# --- pigpio wave chains, checked by an interpreter of the documented chain language ---------


def chained_waves(chain: bytes) -> int:
    """How many waves pigpio sends for a chain (pigpio.py wave_chain: 255 0 loop start,
    255 1 x y loop end repeating x + 256 y times, 255 2 x y delay; a count of 0 skips)."""
    stack = [0]
    i = 0
    while i < len(chain):
        if chain[i] != 255:
            stack[-1] += 1
            i += 1
        elif chain[i + 1] == 0:
            stack.append(0)
            i += 2
        elif chain[i + 1] == 1:
            repeats = chain[i + 2] + 256 * chain[i + 3]
            assert repeats <= PIGPIO_LOOP_MAX
            body = stack.pop()
            stack[-1] += body * repeats
            i += 4
        else:
            raise AssertionError(f"unexpected chain command at {i}: {chain[i:i + 4].hex()}")
    assert len(stack) == 1, "unbalanced loops"
    return stack[0]


@pytest.mark.parametrize("count", [1, 2, 255, 256, 500, 65534, 65535, 65536, 131070, 131071, 10**6,
                                   65535 * 65535, PIGPIO_MAX_COUNT])
def test_pigpio_chain_sends_exactly_count_waves(count):
    chain = pigpio_chain(7, count)
    assert chained_waves(chain) == count
    assert len(chain) <= 20  # well inside pigpio's ~600 chain entries and 20 loop counters


@pytest.mark.parametrize("count", [0, PIGPIO_MAX_COUNT + 1])
def test_pigpio_chain_refuses_counts_it_cannot_express(count):
    with pytest.raises(ValueError):
        pigpio_chain(0, count)


# --- microsecond timing ------------------------------------------------------------------


@pytest.mark.parametrize("frequency, width, expected", [
    ("1000", "0.0005", (500, 500)),
    ("16", "0.030", (30000, 32500)),
    ("3", "0.1", (100000, 233333)),  # the period rounds to 333333 us
    ("10000", "0.00001", (10, 90)),
])
def test_pulse_micros(frequency, width, expected):
    assert pulse_micros(Decimal(frequency), Decimal(width)) == expected


def test_pulse_micros_refuses_a_pause_that_rounds_away():
    with pytest.raises(BackendError) as caught:
        pulse_micros(Decimal(1000), Decimal("0.0009996"))
    assert caught.value.code == scpi.SETTINGS_CONFLICT
