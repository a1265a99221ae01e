"""GPIO backends of the pulse generator: one small interface, three implementations.

A backend owns the output pins of its channels (channel number -> GPIO pin) and can
start a burst of ``count`` pulses (0 = until stopped) at a frequency with a pulse
width, say how many pulses it has emitted, stop a burst and say whether it is done.
Pin level 1 is "pulse ON" (the optocoupler/transistor conducts, the S0 contact closes).

* :class:`SimBackend` simulates, for CI and the virtual bench: exact counts, nominal
  edge times, a subscription API for listeners, an optional time scale.
* :class:`LgpioBackend` drives /dev/gpiochip* through ``lgpio.tx_pulse`` (any Pi,
  including the Pi 5): software-timed, exact cycle count.
* :class:`PigpioBackend` drives pigpiod's DMA waves with a counted ``wave_chain``
  (Pi 4 and earlier): hardware-timed, exact count.

Every burst lasts ``count`` whole periods: pulse k rises at t0 + k/f, falls at
t0 + k/f + width, and the burst is done at t0 + count/f (after the last pause).
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction
from math import floor
from typing import Callable, Mapping, Protocol

import attrs

from meterhub.errors import LinkError

from . import scpi

log = logging.getLogger("meterhub_hil.pulsegen")

#: A listener of a simulated output: called with (edge time in simulated seconds, new level).
EdgeCallback = Callable[[float, int], None]

DEFAULT_PINS = {1: 17, 2: 27}  #: BCM GPIO 17 (header pin 11) and 27 (pin 13): free on every 40-pin Pi
MICROS = Decimal(1_000_000)


class BackendError(LinkError):
    """The GPIO backend cannot be opened or refused a burst; ``code`` is the SCPI error to report."""

    def __init__(self, message: str, *, code: int = scpi.EXECUTION_ERROR) -> None:
        super().__init__(message)
        self.code = code


@attrs.frozen
class BackendLimits:
    """What a backend can time: frequency range, shortest ON or OFF time, longest count."""

    max_frequency: Decimal
    min_frequency: Decimal
    min_width: Decimal
    max_count: int


class PulseBackend(Protocol):
    """The interface the instrument drives; channels are numbered from 1."""

    name: str
    limits: BackendLimits
    pins: Mapping[int, int]

    def start(self, channel: int, count: int, frequency: Decimal, width: Decimal) -> None:
        """Start a burst of ``count`` pulses (0 = continuous) on the channel's pin."""

    def sent(self, channel: int) -> int:
        """Pulses emitted so far in the current or last burst (0 before the first)."""

    def done(self, channel: int) -> bool:
        """True when no burst is running on the channel (finished, stopped or never started)."""

    def stop(self, channel: int) -> None:
        """End the burst now and leave the pin low (OFF)."""

    def close(self) -> None:
        """Stop everything, drive every pin low and release the pins."""


def _check_channel(pins: Mapping[int, int], channel: int) -> int:
    try:
        return pins[channel]
    except KeyError:
        raise BackendError(f"no channel {channel} (channels: {sorted(pins)})",
                           code=scpi.HEADER_SUFFIX_OUT_OF_RANGE) from None


# --- simulation ----------------------------------------------------------------------------

#: The simulator times in exact fractions, so these limits are about keeping listeners fed:
#: 100 kHz is 200,000 edge callbacks a second, about what one Python thread delivers.
SIM_LIMITS = BackendLimits(
    max_frequency=Decimal(100_000), min_frequency=Decimal("0.001"), min_width=Decimal("0.000001"),
    max_count=2**32 - 1,
)


class Subscription:
    """A listener's registration on one simulated channel; ``cancel()`` ends it."""

    def __init__(self, backend: SimBackend, channel: int, callback: EdgeCallback) -> None:
        self._backend = backend
        self.channel = channel
        self.callback = callback

    def cancel(self) -> None:
        self._backend._unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cancel()


class _SimBurst:
    """One simulated burst in exact arithmetic (times are Fractions of simulated seconds).

    Edge i: i = 2k is the rising edge of pulse k, i = 2k + 1 its falling edge.
    """

    __slots__ = ("t0", "period", "width", "count", "stop_at", "stop_sent", "cursor", "finished")

    def __init__(self, t0: Fraction, period: Fraction, width: Fraction, count: int) -> None:
        self.t0, self.period, self.width, self.count = t0, period, width, count
        self.stop_at: Fraction | None = None
        self.stop_sent = 0
        self.cursor = 0  # the next edge to deliver
        self.finished = False

    def rising_until(self, t: Fraction) -> int:
        """Pulses whose rising edge is at or before ``t``."""
        if self.stop_at is not None and t >= self.stop_at:
            return self.stop_sent
        if t < self.t0:
            return 0
        started = floor((t - self.t0) / self.period) + 1
        return min(started, self.count) if self.count else started

    def falling_until(self, t: Fraction) -> int:
        if self.stop_at is not None and t >= self.stop_at:
            return self.stop_sent  # a pulse that was ON at the stop fell at the stop
        return self.rising_until(t - self.width)

    def edges_until(self, t: Fraction) -> int:
        # width < period, so rising k < falling k < rising k+1: the edges up to t are a prefix
        return self.rising_until(t) + self.falling_until(t)

    def edge(self, index: int) -> tuple[Fraction, int]:
        pulse, falling = divmod(index, 2)
        start = self.t0 + pulse * self.period
        if not falling:
            return start, 1
        end = start + self.width
        if self.stop_at is not None and end > self.stop_at:
            end = self.stop_at
        return end, 0

    def total_edges(self) -> int | None:
        if self.stop_at is not None:
            return 2 * self.stop_sent
        return 2 * self.count if self.count else None

    def end(self) -> Fraction | None:
        if self.stop_at is not None:
            return self.stop_at
        return self.t0 + self.count * self.period if self.count else None

    def stop(self, t: Fraction) -> None:
        self.stop_sent = self.rising_until(t)
        self.stop_at = t


class SimBackend:
    """Simulated outputs with exact, deterministic counts.

    Simulated time is ``(clock() - clock at creation) * time_scale`` seconds: with
    ``time_scale=100`` a 10 s burst is done after 0.1 s of wall time. Counts and edge
    times do not depend on the scale or on how late a thread wakes: pulse k of a burst
    started at t0 rises at exactly t0 + k/f. Listeners ``subscribe(channel, callback)``
    and are called ``callback(edge_time, level)`` (level 1 = rising, 0 = falling) with
    the nominal edge time in simulated seconds, in time order, from the backend's ticker
    thread: callbacks must be quick and thread-safe (an asyncio listener hands edges to
    its loop with ``loop.call_soon_threadsafe``). A burst is ``done`` only after its last
    edge has been delivered, so a listener has seen every pulse when ``*OPC?`` says 1.

    With ``autorun=False`` no thread runs: a test drives a manual ``clock`` and calls
    :meth:`advance` to deliver the edges due.
    """

    name = "sim"

    def __init__(
        self,
        pins: Mapping[int, int] | None = None,
        *,
        time_scale: float | Fraction | Decimal = 1,
        clock: Callable[[], float] = time.monotonic,
        autorun: bool = True,
        limits: BackendLimits = SIM_LIMITS,
    ) -> None:
        self.time_scale = Fraction(time_scale)
        if self.time_scale <= 0:
            raise ValueError(f"time_scale must be positive, got {time_scale}")
        self.pins = dict(DEFAULT_PINS if pins is None else pins)
        self.limits = limits
        self._clock = clock
        self._origin = Fraction(clock())
        self._lock = threading.RLock()
        self._bursts: dict[int, _SimBurst] = {}
        self._subscribers: dict[int, list[Subscription]] = {channel: [] for channel in self.pins}
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        if autorun:
            self._thread = threading.Thread(target=self._run, name="pulsegen-sim", daemon=True)
            self._thread.start()

    # -- the backend interface

    def start(self, channel: int, count: int, frequency: Decimal, width: Decimal) -> None:
        _check_channel(self.pins, channel)
        burst = _SimBurst(self._now(), 1 / Fraction(frequency), Fraction(width), count)
        with self._lock:
            self._bursts[channel] = burst
        self._wake.set()

    def sent(self, channel: int) -> int:
        _check_channel(self.pins, channel)
        with self._lock:
            burst = self._bursts.get(channel)
            return 0 if burst is None else burst.rising_until(self._now())

    def done(self, channel: int) -> bool:
        _check_channel(self.pins, channel)
        with self._lock:
            burst = self._bursts.get(channel)
            return burst is None or burst.finished

    def stop(self, channel: int) -> None:
        _check_channel(self.pins, channel)
        with self._lock:
            burst = self._bursts.get(channel)
            if burst is not None and not burst.finished and burst.stop_at is None:
                burst.stop(self._now())
        self._wake.set()

    def close(self) -> None:
        for channel in self.pins:
            self.stop(channel)
        if self._thread is not None:
            self._closed = True
            self._wake.set()
            self._thread.join()
            self._thread = None
        self.advance()

    # -- simulation API

    def now(self) -> float:
        """Simulated seconds since the backend was created (the time base of edge times)."""
        return float(self._now())

    def subscribe(self, channel: int, callback: EdgeCallback) -> Subscription:
        """Call ``callback(edge_time, level)`` for every edge on ``channel`` from now on."""
        _check_channel(self.pins, channel)
        subscription = Subscription(self, channel, callback)
        with self._lock:
            burst = self._bursts.get(channel)
            if burst is not None and not self._subscribers[channel]:
                burst.cursor = burst.edges_until(self._now())  # only edges from now on
            self._subscribers[channel].append(subscription)
        self._wake.set()
        return subscription

    def advance(self) -> None:
        """Deliver every edge due by now and finish the bursts whose last edge has passed."""
        deliveries: list[tuple[Fraction, int, int, list[Subscription]]] = []
        ending: list[tuple[int, _SimBurst]] = []
        with self._lock:
            now = self._now()
            for channel, burst in self._bursts.items():
                if burst.finished:
                    continue
                due = burst.edges_until(now)
                listeners = list(self._subscribers[channel])
                if listeners:
                    for index in range(burst.cursor, due):
                        time_, level = burst.edge(index)
                        deliveries.append((time_, channel, level, listeners))
                burst.cursor = due
                end = burst.end()
                if end is not None and now >= end:
                    ending.append((channel, burst))
        deliveries.sort(key=lambda item: (item[0], item[1]))
        for time_, channel, level, listeners in deliveries:
            for subscription in listeners:
                try:
                    subscription.callback(float(time_), level)
                except Exception:
                    log.exception("sim channel %d: edge listener %r failed", channel, subscription.callback)
        with self._lock:
            for channel, burst in ending:
                if self._bursts.get(channel) is burst:
                    burst.finished = True

    # -- internals

    def _now(self) -> Fraction:
        return (Fraction(self._clock()) - self._origin) * self.time_scale

    def _unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            listeners = self._subscribers[subscription.channel]
            if subscription in listeners:
                listeners.remove(subscription)

    def _next_delay(self) -> float | None:
        """Wall seconds until the next edge to deliver or burst to finish; None = nothing due."""
        with self._lock:
            now = self._now()
            times = []
            for channel, burst in self._bursts.items():
                if burst.finished:
                    continue
                total = burst.total_edges()
                if self._subscribers[channel] and (total is None or burst.cursor < total):
                    times.append(burst.edge(burst.cursor)[0])
                end = burst.end()
                if end is not None:
                    times.append(end)
        if not times:
            return None
        return min(_MAX_TICK_S, max(0.0, float((min(times) - now) / self.time_scale)))

    def _run(self) -> None:
        while not self._closed:
            self._wake.clear()
            try:
                self.advance()
                delay = self._next_delay()
            except Exception:  # never let the ticker die silently: the bursts would never end
                log.exception("sim ticker failed; retrying")
                delay = _MAX_TICK_S
            self._wake.wait(delay)


#: Longest the sim ticker sleeps without looking at its bursts again.
_MAX_TICK_S = 1.0


# --- real GPIO -----------------------------------------------------------------------------

#: lgpio's documented software PWM range is 0.1-10000 Hz (lgpio.h, lgTxPwm); tx_pulse has
#: no documented limit, so the same ceiling is used. Below ~10 us a software-timed edge
#: is lost in scheduling noise.
LGPIO_LIMITS = BackendLimits(
    max_frequency=Decimal(10_000), min_frequency=Decimal("0.001"), min_width=Decimal("0.00001"),
    max_count=2**31 - 1,  # lgTxPulse takes an int
)

PIGPIO_LOOP_MAX = 65535  #: pigpio.c gpioWaveChain: a loop repeats at most PI_MAX_WAVE_CYCLES times
PIGPIO_MAX_COUNT = PIGPIO_LOOP_MAX * PIGPIO_LOOP_MAX + (PIGPIO_LOOP_MAX - 1)  #: two nested loops + rest
#: pigpio waves have 1 us resolution. ON and OFF of at least 5 us (the default pigpiod
#: sampling period, pigpiod -s) let its edge tally see every pulse: at most 100 kHz.
PIGPIO_LIMITS = BackendLimits(
    max_frequency=Decimal(100_000), min_frequency=Decimal("0.001"), min_width=Decimal("0.000005"),
    max_count=PIGPIO_MAX_COUNT,
)


def pulse_micros(frequency: Decimal, width: Decimal) -> tuple[int, int]:
    """ON and OFF time in whole microseconds, the unit both lgpio and pigpio time pulses in.

    The period is rounded to the nearest microsecond, so the real frequency is
    1e6 / (on + off): 3 Hz becomes 333333 us (3.000003 Hz).
    """
    period_us = int((MICROS / frequency).to_integral_value(ROUND_HALF_EVEN))
    on_us = int((width * MICROS).to_integral_value(ROUND_HALF_EVEN))
    off_us = period_us - on_us
    if on_us < 1 or off_us < 1:
        raise BackendError(f"{on_us} us ON / {off_us} us OFF cannot be timed in whole microseconds",
                           code=scpi.SETTINGS_CONFLICT)
    return on_us, off_us


@attrs.define
class _TimedBurst:
    """What a hardware backend remembers of a burst to estimate its progress."""

    started: float
    period_s: float
    count: int
    stopped_sent: int | None = None

    def estimate(self, now: float) -> int:
        """Pulses emitted by ``now`` if the first rose at ``started`` (an estimate: +/- 1)."""
        if self.stopped_sent is not None:
            return self.stopped_sent
        started = max(0, floor((now - self.started) / self.period_s) + 1)
        return min(started, self.count) if self.count else started


def _import_driver(module: str, install: str):
    """The GPIO library ``module``, or a BackendError that says how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendError(f"the {module} backend needs the {module!r} Python package: {install}") from exc
    except OSError as exc:
        # joan2937/lg#22: "import lgpio" opens its notification pipe .lgd-nfy* in the working
        # directory and fails where that directory is not writable (e.g. / under systemd)
        raise BackendError(
            f"importing {module} failed ({exc}); run the server from a writable working directory "
            "(the systemd unit sets WorkingDirectory=/var/lib/meterhub-pulsegen)"
        ) from exc


def _library_call(library, what: str, function, *args):
    """``function(*args)`` of a GPIO library, its failures as BackendError.

    lgpio and pigpio both raise ``<module>.error`` by default, or (with exceptions
    switched off) return a negative status that ``<module>.error_text`` explains.
    """
    try:
        result = function(*args)
    except library.error as exc:
        raise BackendError(f"{library.__name__}: cannot {what}: {exc}") from exc
    if isinstance(result, int) and result < 0:
        raise BackendError(f"{library.__name__}: cannot {what}: {library.error_text(result)}")
    return result


class LgpioBackend:
    """Pulses through lgpio (Linux gpiochip character device; Raspberry Pi 5 and others).

    ``lgpio.tx_pulse(handle, gpio, on_us, off_us, 0, count)`` queues ``count`` cycles
    on lgpio's transmit thread, which counts them down exactly (lgPthTx.c) but times
    each edge in software. ``sent`` is estimated from the elapsed time while the burst
    runs (lgpio reports no progress; its first cycle starts on the next period
    boundary, so the estimate may lead by one) and is exact once ``tx_busy`` reports
    the burst done.
    """

    name = "lgpio"
    limits = LGPIO_LIMITS

    def __init__(self, pins: Mapping[int, int] | None = None, *, chip: int = 0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._lg = _import_driver("lgpio", "pip install lgpio (Raspberry Pi OS: sudo apt install python3-lgpio)")
        self.pins = dict(DEFAULT_PINS if pins is None else pins)
        self._clock = clock
        self._bursts: dict[int, _TimedBurst] = {}
        self._handle = self._call("open /dev/gpiochip%d" % chip, self._lg.gpiochip_open, chip)
        for channel, pin in self.pins.items():
            self._call(f"claim GPIO {pin} (channel {channel}) as output", self._lg.gpio_claim_output,
                       self._handle, pin, 0)

    def _call(self, what: str, function, *args):
        return _library_call(self._lg, what, function, *args)

    def start(self, channel: int, count: int, frequency: Decimal, width: Decimal) -> None:
        pin = _check_channel(self.pins, channel)
        on_us, off_us = pulse_micros(frequency, width)
        self._call(f"start pulses on GPIO {pin}", self._lg.tx_pulse, self._handle, pin, on_us, off_us, 0, count)
        self._bursts[channel] = _TimedBurst(self._clock(), (on_us + off_us) / 1e6, count)

    def sent(self, channel: int) -> int:
        _check_channel(self.pins, channel)
        burst = self._bursts.get(channel)
        if burst is None:
            return 0
        if burst.count and burst.stopped_sent is None and self.done(channel):
            return burst.count
        return burst.estimate(self._clock())

    def done(self, channel: int) -> bool:
        pin = _check_channel(self.pins, channel)
        return not self._call(f"poll GPIO {pin}", self._lg.tx_busy, self._handle, pin, self._lg.TX_PWM)

    def stop(self, channel: int) -> None:
        pin = _check_channel(self.pins, channel)
        burst = self._bursts.get(channel)
        if burst is not None and burst.stopped_sent is None and not self.done(channel):
            burst.stopped_sent = burst.estimate(self._clock())
        # lgpio.h lgTxPulse: on = off = 0 stops the active pulses and deletes queued ones
        self._call(f"stop pulses on GPIO {pin}", self._lg.tx_pulse, self._handle, pin, 0, 0, 0, 0)
        self._call(f"drive GPIO {pin} low", self._lg.gpio_write, self._handle, pin, 0)

    def close(self) -> None:
        for channel, pin in self.pins.items():
            try:
                self.stop(channel)
                self._call(f"free GPIO {pin}", self._lg.gpio_free, self._handle, pin)
            except BackendError as exc:
                log.warning("closing lgpio channel %d: %s", channel, exc)
        self._call("close the gpiochip", self._lg.gpiochip_close, self._handle)


def pigpio_chain(wave_id: int, count: int) -> bytes:
    """A pigpio ``wave_chain`` that sends wave ``wave_id`` exactly ``count`` times.

    pigpio's chain language (pigpio.py wave_chain): ``255 0`` opens a loop, ``255 1 x y``
    closes it repeating x + 256*y times (at most 65535; pigpio.c gpioWaveChain). Counts
    beyond that nest a loop of 65535 inside a loop of count // 65535, then loop the rest.
    """
    if not 0 <= wave_id < 255:
        raise ValueError(f"wave id {wave_id} cannot be chained (255 is the command escape)")
    if not 1 <= count <= PIGPIO_MAX_COUNT:
        raise ValueError(f"pigpio chains count 1..{PIGPIO_MAX_COUNT} waves, not {count}")
    outer, rest = divmod(count, PIGPIO_LOOP_MAX)
    chain = bytearray()
    if outer:
        chain += bytes([255, 0, 255, 0, wave_id, 255, 1]) + PIGPIO_LOOP_MAX.to_bytes(2, "little")
        chain += bytes([255, 1]) + outer.to_bytes(2, "little")
    if rest:
        chain += bytes([255, 0, wave_id, 255, 1]) + rest.to_bytes(2, "little")
    return bytes(chain)


class PigpioBackend:
    """Pulses as pigpiod DMA waves (Raspberry Pi 4 and earlier; pigpio does not support the Pi 5).

    One wave (ON ``on_us``, OFF ``off_us``) is repeated by a counted ``wave_chain``, so
    the count is exact and the timing is DMA-paced. pigpio transmits one wave at a time
    for all GPIOs, so only one channel can run a burst at any moment (a second INIT
    meanwhile is a settings conflict). ``sent`` comes from pigpio's rising-edge tally of
    the pin (sampled every 5 us by default) while running and is exact once done.
    """

    name = "pigpio"
    limits = PIGPIO_LIMITS

    def __init__(self, pins: Mapping[int, int] | None = None, *, host: str = "localhost", port: int = 8888) -> None:
        self._pigpio = _import_driver("pigpio", "pip install pigpio, and run the daemon: sudo systemctl enable --now pigpiod")
        self.pins = dict(DEFAULT_PINS if pins is None else pins)
        self._pi = self._pigpio.pi(host, port)
        if not self._pi.connected:
            raise BackendError(f"pigpio: no pigpiod at {host}:{port}; start it with: sudo systemctl enable --now pigpiod")
        self._active: int | None = None
        self._counts: dict[int, int] = {}
        self._stopped: dict[int, int] = {}
        self._tallies = {}
        for channel, pin in self.pins.items():
            self._call(f"set GPIO {pin} as output", self._pi.set_mode, pin, self._pigpio.OUTPUT)
            self._call(f"drive GPIO {pin} low", self._pi.write, pin, 0)
            self._tallies[channel] = self._pi.callback(pin, self._pigpio.RISING_EDGE)  # counting callback

    def _call(self, what: str, function, *args):
        return _library_call(self._pigpio, what, function, *args)

    def _busy(self) -> bool:
        return bool(self._call("poll the wave", self._pi.wave_tx_busy))

    def start(self, channel: int, count: int, frequency: Decimal, width: Decimal) -> None:
        pin = _check_channel(self.pins, channel)
        if self._active is not None and self._active != channel and self._busy():
            raise BackendError(f"pigpio sends one wave at a time and channel {self._active} is still running",
                               code=scpi.SETTINGS_CONFLICT)
        on_us, off_us = pulse_micros(frequency, width)
        pulse = self._pigpio.pulse
        self._call("clear waves", self._pi.wave_clear)
        self._call("add the pulse wave", self._pi.wave_add_generic,
                   [pulse(1 << pin, 0, on_us), pulse(0, 1 << pin, off_us)])
        wave_id = self._call("create the wave", self._pi.wave_create)
        self._tallies[channel].reset_tally()
        self._stopped.pop(channel, None)
        if count:
            self._call("send the wave chain", self._pi.wave_chain, pigpio_chain(wave_id, count))
        else:
            self._call("repeat the wave", self._pi.wave_send_repeat, wave_id)
        self._active = channel
        self._counts[channel] = count

    def sent(self, channel: int) -> int:
        _check_channel(self.pins, channel)
        if channel in self._stopped:
            return self._stopped[channel]
        if channel not in self._counts:
            return 0
        count = self._counts[channel]
        if count and self.done(channel):
            return count
        tally = self._tallies[channel].tally()
        return min(tally, count) if count else tally

    def done(self, channel: int) -> bool:
        _check_channel(self.pins, channel)
        return self._active != channel or not self._busy()

    def stop(self, channel: int) -> None:
        pin = _check_channel(self.pins, channel)
        if self._active == channel and self._busy():
            self._call("stop the wave", self._pi.wave_tx_stop)
            count = self._counts.get(channel, 0)
            tally = self._tallies[channel].tally()
            self._stopped[channel] = min(tally, count) if count else tally
        self._call(f"drive GPIO {pin} low", self._pi.write, pin, 0)

    def close(self) -> None:
        for channel in self.pins:
            try:
                self.stop(channel)
            except BackendError as exc:
                log.warning("closing pigpio channel %d: %s", channel, exc)
        for tally in self._tallies.values():
            tally.cancel()
        self._pi.stop()


BACKENDS: dict[str, type] = {"sim": SimBackend, "lgpio": LgpioBackend, "pigpio": PigpioBackend}


def create_backend(name: str, pins: Mapping[int, int] | None = None, **options) -> PulseBackend:
    """The backend called ``name`` (``sim``, ``lgpio``, ``pigpio``) on these channel pins."""
    try:
        factory = BACKENDS[name]
    except KeyError:
        raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}") from None
    return factory(pins, **options)
