"""Simulated DL/T 645-2007 meters that answer real frames, built on the project's codec.

Each :class:`SimulatedMeter` has a seeded load profile and integrates it into energy
registers (import/export, tariffs 1-4 by time-of-day periods, reactive quadrants,
apparent, per phase), keeps a clock, maximum demand, freezes, events, a relay and
passwords, and answers read (11h, with follow-up frames 12h for long payloads), read
address (13h), write (14h), broadcast time (08h), write address (15h), freeze (16h),
change baud (17h), change password (18h), clears (19h/1Ah/1Bh) and relay control (1Ch).
Put meters on a :class:`~meterhub.simulator.PtyBus` (:func:`start_dlt645_sim`) to talk
to them over a pseudo-terminal with the byte timing of their baud rate. A meter may start
with days of ``history`` (registers and daily freeze records), and a test injects what
alarms must catch: cover opened, magnetic interference, low battery, voltage sag or phase
loss, frequency, reverse energy, clock drift (see :class:`SimulatedMeter`).

Everything is a pure function of the seed and of the values an injected ``clock``
returns, so tests control time and get the same numbers every run.
"""

from __future__ import annotations

import cmath
import functools
import logging
import math
import random
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime, time, timedelta
from decimal import ROUND_FLOOR, Decimal
from typing import Any

import attrs

from .. import simulator, timing
from ..errors import FrameError, NotSupported
from ..model import SerialSettings
from ..simulator import DEFAULT_TURNAROUND, Fault, PtyBus, as_fault
from . import dlt645 as codec
from . import dlt645_data as data
from .dlt645 import BROADCAST, Control, Frame, RelayAction, StreamDecoder

__all__ = [
    "Fault",
    "LoadProfile",
    "SimulatedMeter",
    "make_meters",
    "start_dlt645_sim",
    "DEFAULT_TARIFF_PERIODS",
]

logger = logging.getLogger(__name__)

#: DL/T 645 RS-485 character format: 8 data bits, even parity, 1 stop bit (§1.6).
CHARACTER_FORMAT = {"bytesize": 8, "parity": "E", "stopbits": 1}

#: §1.6: a meter answers 20 ms <= Td <= 500 ms after the request (the codec's constants);
#: the simulated ones take a typical 30-60 ms (``DEFAULT_TURNAROUND`` of the generic bus).
MIN_RESPONSE_DELAY = codec.MIN_RESPONSE_DELAY
MAX_RESPONSE_DELAY = codec.MAX_RESPONSE_DELAY
assert MIN_RESPONSE_DELAY <= DEFAULT_TURNAROUND[0] <= DEFAULT_TURNAROUND[1] <= MAX_RESPONSE_DELAY

#: §1.3: bits of the error word SERR.
SERR_OTHER = 0x01
SERR_NO_DATA = 0x02
SERR_PASSWORD = 0x04
SERR_BAUD = 0x08

#: Registers are integrated on a fixed one-minute grid using the power at the start of
#: each minute, so a register's value depends only on time, never on when it was read.
STEP = timedelta(minutes=1)
_EPOCH = datetime(2000, 1, 1)

#: Maximum demand: sliding 15-minute window moved every minute (the usual DL/T 645 meter
#: default demand period and slide time) [U].
DEMAND_WINDOW_STEPS = 15

#: §1.5 [U]: meters accept a broadcast time only when it is within ±5 min of their clock.
BROADCAST_TIME_WINDOW = timedelta(minutes=5)

#: Default passwords by privilege level PA (02 and 04 are the usual levels, §1.5).
DEFAULT_PASSWORDS: Mapping[int, bytes] = {2: b"\x00\x00\x00", 4: b"\x00\x00\x00"}

#: Time-of-day tariff periods (start of period, tariff 1..4 = sharp/peak/flat/valley 尖峰平谷).
DEFAULT_TARIFF_PERIODS: tuple[tuple[time, int], ...] = (
    (time(0, 0), 4),
    (time(8, 0), 3),
    (time(10, 0), 2),
    (time(11, 0), 1),
    (time(13, 0), 3),
    (time(17, 0), 2),
    (time(19, 0), 1),
    (time(21, 0), 2),
    (time(22, 0), 3),
    (time(23, 0), 4),
)
TARIFFS = 4

#: Energy register kinds (DI2 of 00 xx yy 00) the meter integrates.
FORWARD, REVERSE = 0x01, 0x02
Q1, Q2, Q3, Q4 = 0x05, 0x06, 0x07, 0x08
FORWARD_APPARENT, REVERSE_APPARENT = 0x09, 0x0A
_BASE_KINDS = (FORWARD, REVERSE, Q1, Q2, Q3, Q4, FORWARD_APPARENT, REVERSE_APPARENT)
#: Combined registers, with the default mode words [U]: combined active = forward +
#: reverse (mode word 05h, so a reversed meter cannot hide energy); combined reactive
#: 1 = QI + QII, 2 = QIII + QIV.
_COMBINED = {0x00: (FORWARD, REVERSE), 0x03: (Q1, Q2), 0x04: (Q3, Q4)}
_ALL_KINDS = tuple(range(0x00, 0x0B))
#: Per-phase registers: DI2 base 15h (A), 29h (B), 3Dh (C), then kinds 01..0A in order.
_PHASE_BASES = (0x15, 0x29, 0x3D)

#: DL/T 645 registers roll over after XXXXXX.XX.
_ROLLOVER = 1_000_000
_CENT = Decimal("0.01")

#: Status words (04 00 05 0n) bits. Word 1: bit2 clock battery low, bit3 meter-reading
#: battery low [U], bit4 active power reverse [U]. Word 2: bits 0..2 active power reverse
#: per phase A..C. Word 3: bit4 relay open, bit6 relay commanded open (values 0050h open /
#: 0000h closed seen in captures), bit7 pre-trip alarm.
W1_CLOCK_BATTERY_LOW = 1 << 2
W1_READING_BATTERY_LOW = 1 << 3
W1_ACTIVE_REVERSE = 1 << 4
W3_RELAY_OPEN = 1 << 4
W3_RELAY_COMMAND_OPEN = 1 << 6
W3_ALARM = 1 << 7

#: Freeze records (05 KK 00 NN time, 05 KK 01 NN forward active block, 05 KK 02 NN reverse
#: active block; NN = 1 most recent): timed (KK=00), instant (01) and daily (06) freezes,
#: as many kept as the shared DI table says (:data:`~meterhub.protocols.dlt645_data.FREEZE_DEPTH`).
TIMED_FREEZE, INSTANT_FREEZE, DAILY_FREEZE = data.TIMED_FREEZE, data.INSTANT_FREEZE, data.DAILY_FREEZE
_FREEZE_DEPTH = data.FREEZE_DEPTH

#: Event counters answered at their DI (and cleared by 1Bh).
POWER_DOWN_EVENTS = 0x03110000
COVER_OPEN_EVENTS = 0x03300D00
MAGNETIC_EVENTS = 0x03350000
TRIP_EVENTS = 0x1D000001
CLOSE_EVENTS = 0x1E000001

#: The voltage a simulated installation is built for, and below which a phase counts as
#: lost: its loads stop and it carries no current (half the nominal voltage; no appliance
#: runs on less).
NOMINAL_VOLTAGE = 220.0
PHASE_LOST_BELOW = NOMINAL_VOLTAGE / 2

#: "All current energy registers" (00 FF FF 00: every kind 00..0A, total and tariffs). The
#: DI pattern follows the FF-block rule of §1.4 [U: few meters document it]. At 220 bytes
#: it exceeds one frame (L <= 200), so it is always sent with follow-up frames.
ALL_ENERGY_BLOCK = 0x00FFFF00

_ENERGY_ITEM = data.DataItem(0, "energy", "XXXXXX.XX", "kWh", signed=True)


@functools.lru_cache(maxsize=16)
def _minute_table(periods: tuple[tuple[time, int], ...]) -> tuple[int, ...] | None:
    """Tariff index (0..3) by minute of the day for ``periods``, or None when one starts off
    a whole minute; shared by every meter with the same periods (32 meters on a bus must not
    each spend milliseconds building it while their answers are due)."""
    if not all(start.second == 0 and start.microsecond == 0 for start, _ in periods):
        return None
    table = []
    for minute in range(24 * 60):
        now = time(minute // 60, minute % 60)
        current = periods[-1][1]
        for start, tariff in periods:
            if now >= start:
                current = tariff
        table.append(current - 1)
    return tuple(table)


class _NoData(Exception):
    """The meter has no such data item: answer SERR "no requested data"."""


def _item(di: int) -> data.DataItem | None:
    return data.ITEMS.get(di)


def _gauss(x: float, centre: float, width: float) -> float:
    return math.exp(-(((x - centre) / width) ** 2))


def _seconds(t: datetime) -> float:
    return (t - _EPOCH).total_seconds()


def _hour_of_day(t: datetime) -> float:
    return t.hour + t.minute / 60 + t.second / 3600


def _wave(waves: Sequence[tuple[float, float, float]], s: float) -> float:
    total = 0.0  # a plain loop: the very sum ``sum()`` makes, without a generator per call
    for a, period, phase in waves:
        total += a * math.sin(2 * math.pi * s / period + phase)
    return total


def _waves(rng: random.Random, periods: Sequence[float], amplitude: float) -> tuple[tuple[float, float, float], ...]:
    return tuple((amplitude * rng.uniform(0.5, 1.0), p * rng.uniform(0.8, 1.25), rng.uniform(0, 2 * math.pi)) for p in periods)


@attrs.frozen
class LoadProfile:
    """The electrical behaviour of one installation as smooth, seeded functions of time.

    Power is a daily household shape (morning, noon and evening peaks) modulated by
    slow random waves; a PV installation subtracts a daytime generation curve sized
    near its own consumption, so its meter exports a little around noon. Voltages (220-235 V), power factor and frequency
    (50 Hz ± a few hundredths) wander smoothly.
    """

    base_kw: float
    pv_kw: float = 0.0
    shares: tuple[float, float, float] = (1.0, 0.0, 0.0)  #: phase A/B/C share of the power
    load_waves: tuple[tuple[float, float, float], ...] = ()
    pv_waves: tuple[tuple[float, float, float], ...] = ()
    voltage_waves: tuple[tuple[tuple[float, float, float], ...], ...] = ((), (), ())
    pf_waves: tuple[tuple[float, float, float], ...] = ()
    frequency_waves: tuple[tuple[float, float, float], ...] = ()

    @classmethod
    def random(cls, rng: random.Random, *, phases: int = 1, pv: bool = False) -> LoadProfile:
        """A plausible household (1 phase) or small business (3 phases) profile."""
        base = rng.uniform(0.3, 0.8) if phases == 1 else rng.uniform(2.0, 6.0)
        if phases == 1:
            shares = (1.0, 0.0, 0.0)
        else:
            raw = [rng.uniform(0.8, 1.2) for _ in range(3)]
            shares = (raw[0] / sum(raw), raw[1] / sum(raw), raw[2] / sum(raw))
        return cls(
            base_kw=base,
            pv_kw=base * rng.uniform(0.8, 1.4) if pv else 0.0,
            shares=shares,
            load_waves=_waves(rng, (420, 1380, 4020, 11160), 0.15),
            pv_waves=_waves(rng, (1800, 5400), 0.08),
            voltage_waves=tuple(_waves(rng, (5400, 700, 61), 1.0) for _ in range(3)),
            pf_waves=_waves(rng, (3000, 300), 0.03),
            frequency_waves=_waves(rng, (900, 137), 0.02),
        )

    def load(self, t: datetime) -> float:
        """Consumption in kW (never negative)."""
        h = _hour_of_day(t)
        shape = 0.35 + 0.5 * _gauss(h, 7.5, 1.2) + 0.35 * _gauss(h, 12.5, 1.5) + 1.0 * _gauss(h, 19.5, 1.8)
        return max(0.05 * self.base_kw, self.base_kw * shape / 0.8 * (1 + _wave(self.load_waves, _seconds(t))))

    def generation(self, t: datetime) -> float:
        """PV generation in kW (zero at night and for meters without PV)."""
        h = _hour_of_day(t)
        if not self.pv_kw or not 6 < h < 18:
            return 0.0
        sun = math.sin(math.pi * (h - 6) / 12) ** 1.5
        return self.pv_kw * sun * max(0.0, 0.85 + _wave(self.pv_waves, _seconds(t)))

    def power(self, t: datetime) -> float:
        """Net active power in kW: positive = import, negative = export."""
        return self.load(t) - self.generation(t)

    def voltage(self, t: datetime, phase: int) -> float:
        """Phase voltage in V, kept within 220-235 V."""
        (a1, p1, f1), (a2, p2, f2), (a3, p3, f3) = self.voltage_waves[phase]
        s = _seconds(t)
        v = 228.0 + 3.5 * a1 * math.sin(2 * math.pi * s / p1 + f1) + 1.5 * a2 * math.sin(2 * math.pi * s / p2 + f2)
        v += 0.5 * a3 * math.sin(2 * math.pi * s / p3 + f3)
        return min(234.9, max(220.1, v))

    def power_factor(self, t: datetime) -> float:
        """Magnitude of the power factor (an inductive household load: about 0.9-0.98)."""
        return min(0.999, 0.94 + _wave(self.pf_waves, _seconds(t)))

    def frequency(self, t: datetime) -> float:
        return 50.0 + _wave(self.frequency_waves, _seconds(t))


@attrs.frozen
class _Freeze:
    at: datetime  #: the meter's clock when the freeze happened
    forward: tuple[float, ...]  #: total and tariffs 1..4
    reverse: tuple[float, ...]


class SimulatedMeter:
    """One DL/T 645-2007 meter: registers that advance with its clock, and a frame handler.

    ``clock`` returns the current wall-clock time (a naive local ``datetime``); the meter's
    own clock is that plus ``clock_offset`` (changed by time writes and broadcasts, and by
    :meth:`drift`). ``handle`` answers a decoded request frame with the encoded reply
    frames; it applies the ``BAD_CHECKSUM`` and ``WRONG_ADDRESS`` faults itself and answers
    nothing when ``SILENCE``; the bus applies the other wire faults. Thread-safe.

    ``history``: the meter was installed that long before the clock's first reading; its
    registers have integrated the load since then and it holds the daily freeze records
    of its midnights since (up to 62). Conditions a test may inject, each seen in what the
    meter answers: :meth:`open_cover` and :meth:`magnetic_interference` (event counters
    03 30 0D 00, 03 35 00 00), ``battery_low`` (status word 1 bits 2 and 3),
    :meth:`set_voltage` (sag, swell, phase loss) and :meth:`set_frequency`, ``reverse``
    (wired backwards: the load is measured as export and status word 1 bit 4 is set) and
    :meth:`drift` (a clock running off).
    """

    protocol = "dlt645"

    def __init__(
        self,
        address: str,
        *,
        phases: int = 1,
        pv: bool = False,
        seed: int | str = 0,
        clock: Callable[[], datetime] = datetime.now,
        fault: Fault | str | None = None,
        clock_offset: timedelta = timedelta(0),
        preamble: int = 4,
        profile: LoadProfile | None = None,
        energy_kwh: float | None = None,
        passwords: Mapping[int, bytes] | None = None,
        tariff_periods: Sequence[tuple[time, int]] = DEFAULT_TARIFF_PERIODS,
        max_data_len: int = codec.MAX_READ_DATA_LEN,
        meter_number: str | None = None,
        settings: SerialSettings | None = None,
        history: timedelta = timedelta(0),
        reverse: bool = False,
        battery_low: bool = False,
    ) -> None:
        if len(address) != 12 or not address.isdigit():
            raise ValueError(f"simulated DL/T 645 meter address must be 12 decimal digits, got {address!r}")
        if history < timedelta(0):
            raise ValueError(f"history must not be negative, got {history}")
        if phases not in (1, 3):
            raise ValueError(f"phases must be 1 or 3, got {phases!r}")
        if max_data_len < 6:
            raise ValueError(f"max_data_len must leave room for DI, SEQ and a byte of payload, got {max_data_len}")
        rng = random.Random(f"dlt645-sim:{seed}:{address}")
        self.address = address
        self.phases = phases
        self.fault = as_fault(fault)
        self.clock = clock
        self.clock_offset = clock_offset
        self.preamble = preamble
        self.profile = profile or LoadProfile.random(rng, phases=phases, pv=pv)
        self.passwords: dict[int, bytes] = dict(DEFAULT_PASSWORDS if passwords is None else passwords)
        self.tariff_periods = tuple(sorted(tariff_periods))
        self.max_data_len = max_data_len
        self.meter_number = meter_number or address
        #: None = whatever the bus runs at; set by a change-baud request (17h)
        self.settings = settings
        self.meter_constant = 1200 if phases == 1 else 400  # imp/kWh, printed on the nameplate
        self.relay_open = False
        self.relay_commanded_open = False
        self.alarm = False
        self.keep_power = False
        #: the clock and meter-reading batteries are low (status word 1 bits 2 and 3)
        self.battery_low = battery_low
        self._reverse = reverse
        self._voltages: dict[int, float] = {}  # phase index 0..2 -> overridden voltage
        self._lost: tuple[float, ...] | None = None  # phase shares with lost phases at 0, None = none lost
        self._frequency: float | None = None
        self.events = {
            POWER_DOWN_EVENTS: rng.randint(0, 30),
            COVER_OPEN_EVENTS: rng.randint(0, 2),
            MAGNETIC_EVENTS: 0,
            TRIP_EVENTS: 0,
            CLOSE_EVENTS: 0,
        }
        self._lock = threading.RLock()
        # reg[scope][kind] = [tariff 1..4] in kWh/kvarh/kVAh; scope 0 = meter, 1..3 = phase A..C
        self._reg = [{kind: [0.0] * TARIFFS for kind in _BASE_KINDS} for _ in range(4)]
        self._seed_registers(rng, energy_kwh)
        self._max_demand: dict[int, list[tuple[float, datetime | None]]] = {}
        self._clear_demand()
        self._window: deque[tuple[float, float]] = deque(maxlen=DEMAND_WINDOW_STEPS)  # (fwd, rev) kWh per step
        # the same per direction, so that a demand is one sum (40 days of history are 57600 steps)
        self._window_kwh = (deque[float](maxlen=DEMAND_WINDOW_STEPS), deque[float](maxlen=DEMAND_WINDOW_STEPS))
        self._last_step_kw = 0.0
        self._tariff_cache: tuple[tuple[tuple[time, int], ...], list[int] | None] | None = None
        self._freezes: dict[int, deque[_Freeze]] = {k: deque(maxlen=n) for k, n in _FREEZE_DEPTH.items()}
        self._freeze_schedule: tuple[int | None, int | None, int | None, int | None] | None = None
        self._pending: tuple[int, list[bytes]] | None = None  # follow-up frames still to send
        self._t = self._wall(clock()) - history  # registers are integrated up to this time
        if history:
            self._advance()

    # -- state ------------------------------------------------------------------------

    @staticmethod
    def _wall(t: datetime) -> datetime:
        return t.replace(tzinfo=None)  # meters keep local wall-clock time

    def _seed_registers(self, rng: random.Random, energy_kwh: float | None) -> None:
        total = energy_kwh if energy_kwh is not None else rng.uniform(200, 20000) * (1 if self.phases == 1 else 5)
        split = (0.10, 0.30, 0.35, 0.25)  # sharp, peak, flat, valley
        exported = rng.uniform(50, 2000) if self.profile.pv_kw else 0.0
        for scope in range(4):
            share = 1.0 if scope == 0 else self.profile.shares[scope - 1]
            for t, part in enumerate(split):
                self._reg[scope][FORWARD][t] = total * share * part
                self._reg[scope][REVERSE][t] = exported * share * part
                self._reg[scope][Q1][t] = total * share * part * 0.3
                self._reg[scope][Q2][t] = exported * share * part * 0.1
                self._reg[scope][FORWARD_APPARENT][t] = total * share * part * 1.05
                self._reg[scope][REVERSE_APPARENT][t] = exported * share * part * 1.01

    def now(self) -> datetime:
        """The meter's own clock."""
        with self._lock:
            return self._wall(self.clock()) + self.clock_offset

    def tariff_at(self, meter_time: datetime) -> int:
        """Tariff 1..4 in force at ``meter_time`` by the time-of-day periods."""
        current = self.tariff_periods[-1][1]
        for start, tariff in self.tariff_periods:
            if meter_time.time() >= start:
                current = tariff
        return current

    def _tariff_index(self, meter_time: datetime) -> int:
        """``tariff_at(meter_time) - 1``, from a table by minute of the day when every
        period starts on a whole minute (integrating a long history asks it every minute)."""
        periods = self.tariff_periods
        if self._tariff_cache is None or self._tariff_cache[0] is not periods:
            self._tariff_cache = (periods, _minute_table(periods))
        table = self._tariff_cache[1]
        if table is None:
            return self.tariff_at(meter_time) - 1
        return table[meter_time.hour * 60 + meter_time.minute]

    def _base_power(self, t: datetime) -> float:
        """Net active power in kW as if no phase were lost: the load profile, measured the
        wrong way round when the meter is wired backwards, nothing while the relay is open."""
        if self.relay_open:
            return 0.0
        p = self.profile.power(t)
        return -p if self._reverse else p

    def _power_at(self, t: datetime) -> float:
        """Net active power in kW through the meter: a lost phase's loads draw nothing."""
        p = self._base_power(t)
        return p if self._lost is None else p * sum(self._lost)

    def _advance(self) -> datetime:
        """Integrate the registers up to the clock's current time; returns that time."""
        now = self._wall(self.clock())
        t = self._t
        while t < now:
            cell = _EPOCH + ((t - _EPOCH) // STEP) * STEP
            end = min(cell + STEP, now)
            p = self._integrate(cell, (end - t).total_seconds() / 3600)
            if end == cell + STEP:
                self._close_step(end, p)
            t = end
        self._t = max(self._t, now)
        return now

    def _integrate(self, cell: datetime, hours: float) -> float:
        """Add ``hours`` at the power of minute ``cell`` to the registers; returns that power."""
        base = self._base_power(cell)
        shares = self.profile.shares if self._lost is None else self._lost
        p = base if self._lost is None else base * sum(self._lost)
        pf = self.profile.power_factor(cell)
        tan_phi = math.tan(math.acos(pf))
        tariff = self._tariff_index(cell + self.clock_offset)
        active, reactive, apparent = (FORWARD, Q1, FORWARD_APPARENT) if p >= 0 else (REVERSE, Q2, REVERSE_APPARENT)
        for scope in range(4):
            share = 1.0 if scope == 0 else shares[scope - 1]
            if not share:
                continue
            power = abs(p if scope == 0 else base)
            reg = self._reg[scope]
            reg[active][tariff] += power * share * hours
            reg[reactive][tariff] += power * tan_phi * share * hours
            reg[apparent][tariff] += power / pf * share * hours
        return p

    def _close_step(self, end: datetime, p: float) -> None:
        """The minute ending at ``end`` is complete (``p`` its power): demand, freezes."""
        start = end - STEP
        step_h = STEP.total_seconds() / 3600
        self._last_step_kw = p
        fwd, rev = max(p, 0.0) * step_h, max(-p, 0.0) * step_h
        self._window.append((fwd, rev))
        self._window_kwh[0].append(fwd)
        self._window_kwh[1].append(rev)
        meter_end = end + self.clock_offset
        if len(self._window) == DEMAND_WINDOW_STEPS:
            window_h = DEMAND_WINDOW_STEPS * step_h
            tariff = self._tariff_index(start + self.clock_offset) + 1
            for kind, index in ((FORWARD, 0), (REVERSE, 1)):
                demand = sum(self._window_kwh[index]) / window_h
                for slot in (0, tariff):
                    if demand > self._max_demand[kind][slot][0]:
                        self._max_demand[kind][slot] = (demand, meter_end.replace(second=0, microsecond=0))
        if meter_end.hour == 0 and meter_end.minute == 0:
            self._freeze(DAILY_FREEZE, meter_end)
        schedule = self._freeze_schedule
        if schedule is not None and all(
            want is None or want == got for want, got in zip(schedule, (meter_end.minute, meter_end.hour, meter_end.day, meter_end.month))
        ):
            self._freeze(TIMED_FREEZE, meter_end)

    def _freeze(self, kind: int, at: datetime) -> None:
        forward = self._registers(0, FORWARD)
        reverse = self._registers(0, REVERSE)
        self._freezes[kind].appendleft(_Freeze(at.replace(second=0, microsecond=0), forward, reverse))

    def _registers(self, scope: int, kind: int) -> tuple[float, ...]:
        """Total and tariffs 1..4 of one register kind (combined kinds are sums)."""
        parts = _COMBINED.get(kind, (kind,))
        tariffs = [sum(self._reg[scope][k][t] for k in parts) for t in range(TARIFFS)]
        return (sum(tariffs), *tariffs)

    def _clear_demand(self) -> None:
        self._max_demand = {kind: [(0.0, None)] * (TARIFFS + 1) for kind in (FORWARD, REVERSE)}

    # -- values a test or a demo may look at ------------------------------------------

    def energy(self, kind: int = FORWARD, tariff: int = 0, phase: int = 0) -> Decimal:
        """A register as the meter shows it (kWh, truncated to 0.01): ``kind`` is DI2
        (01 forward active ...), ``tariff`` 0 = total, ``phase`` 0 = meter, 1..3 = A..C."""
        with self._lock:
            self._advance()
            return _display(self._registers(phase, kind)[tariff])

    def power(self) -> Decimal:
        """Current net active power in kW (negative while exporting)."""
        with self._lock:
            return Decimal(f"{self._power_at(self._advance()):.4f}")

    def daily_freezes(self) -> list[tuple[datetime, tuple[Decimal, ...], tuple[Decimal, ...]]]:
        """The daily freeze records held, most recent first: ``(freeze time by the meter's
        clock, forward active total and tariffs 1..4, reverse likewise)`` as shown (kWh)."""
        with self._lock:
            self._advance()
            return [(r.at, tuple(map(_display, r.forward)), tuple(map(_display, r.reverse))) for r in self._freezes[DAILY_FREEZE]]

    # -- conditions a test injects ------------------------------------------------------

    def open_cover(self) -> int:
        """Someone opens the meter cover: the cover-open count (03 30 0D 00) goes up by one;
        returns the new count."""
        with self._lock:
            self.events[COVER_OPEN_EVENTS] += 1
            return self.events[COVER_OPEN_EVENTS]

    def magnetic_interference(self) -> int:
        """Someone holds a magnet to the meter: the magnetic-interference count
        (03 35 00 00) goes up by one; returns the new count."""
        with self._lock:
            self.events[MAGNETIC_EVENTS] += 1
            return self.events[MAGNETIC_EVENTS]

    @property
    def reverse(self) -> bool:
        """Wired backwards (or feeding): the load is measured as export, the reverse
        registers advance and status word 1 bit 4 is set. Set it to inject that."""
        return self._reverse

    @reverse.setter
    def reverse(self, value: bool) -> None:
        with self._lock:
            self._advance()  # energy so far was measured the way it was wired
            self._reverse = bool(value)

    def set_voltage(self, phase: int, volts: Decimal | float | None) -> None:
        """Hold phase ``phase`` (1..3 = A..C) at ``volts`` (a sag, a swell), or give it back
        to the load profile with None. Below :data:`PHASE_LOST_BELOW` (0 for a blown fuse)
        the phase is lost: its loads stop, so it carries no current and no energy."""
        if phase not in (1, 2, 3) or (phase > 1 and self.phases == 1):
            raise ValueError(f"phase must be 1..{self.phases} for a {self.phases}-phase meter, got {phase!r}")
        if volts is not None and not 0 <= float(volts) < 1000:
            raise ValueError(f"a voltage is 0..999.9 V (XXX.X), got {volts!r}")
        with self._lock:
            self._advance()  # energy so far was drawn at the old voltages
            if volts is None:
                self._voltages.pop(phase - 1, None)
            else:
                self._voltages[phase - 1] = float(volts)
            lost = {ph for ph, v in self._voltages.items() if v < PHASE_LOST_BELOW}
            shares = self.profile.shares
            self._lost = tuple(0.0 if ph in lost else share for ph, share in enumerate(shares)) if lost else None

    def set_frequency(self, hz: Decimal | float | None) -> None:
        """Hold the grid frequency at ``hz``, or give it back to the load profile with None."""
        if hz is not None and not 0 < float(hz) < 100:
            raise ValueError(f"a frequency is 0..99.99 Hz (XX.XX), got {hz!r}")
        with self._lock:
            self._frequency = None if hz is None else float(hz)

    def drift(self, seconds: float) -> None:
        """The meter's clock runs off by ``seconds`` (positive: ahead). A broadcast time
        within ±5 min of its clock sets it right again."""
        with self._lock:
            self._advance()  # energy so far belongs to the tariffs of the old clock
            self.clock_offset += timedelta(seconds=seconds)

    def voltage(self, phase: int) -> float:
        """Phase ``phase`` (1..3) voltage now: the override, else the load profile's."""
        with self._lock:
            return self._voltage(self._wall(self.clock()), phase - 1)

    def _voltage(self, t: datetime, ph: int) -> float:
        held = self._voltages.get(ph)
        return self.profile.voltage(t, ph) if held is None else held

    # -- the protocol ------------------------------------------------------------------

    def new_decoder(self) -> StreamDecoder:
        return StreamDecoder()

    def matches(self, address: str) -> bool:
        """Whether a request to ``address`` is for this meter: its own address, or one
        where AA bytes stand for any byte (AA×6: the one meter on the line, §1.1)."""
        if address == self.address:
            return True
        pairs = zip(address[0::2], address[1::2], self.address[0::2], self.address[1::2])
        return all(a + b == "AA" or (a, b) == (c, d) for a, b, c, d in pairs)

    def handle(self, frame: Frame) -> list[bytes]:
        """Encoded reply frames to one request (none for broadcasts and other meters)."""
        with self._lock:
            if self.fault is Fault.SILENCE or frame.is_reply:
                return []
            if frame.address == BROADCAST:
                self._broadcast(frame)
                return []
            if not self.matches(frame.address):
                return []
            replies = self._answer(frame)
            return [self._encode(r) for r in replies]

    def _broadcast(self, frame: Frame) -> None:
        try:
            if frame.function == Control.BROADCAST_TIME:
                self._broadcast_time(codec.parse_broadcast_time(frame))
            elif frame.function == Control.FREEZE:
                self._freeze_command(codec.parse_freeze_request(frame))
        except FrameError as exc:
            logger.info("meter %s ignores a malformed broadcast: %s", self.address, exc)

    def _answer(self, frame: Frame) -> list[Frame]:
        handler = _HANDLERS.get(frame.function)
        if handler is None:
            logger.info("meter %s: function %02Xh not supported", self.address, frame.function)
            return [codec.abnormal_reply(self.address, frame.function, SERR_OTHER)]
        try:
            return handler(self, frame)
        except FrameError as exc:  # a malformed request: §1.3 "other error"
            logger.info("meter %s: malformed request %r: %s", self.address, frame, exc)
            return [codec.abnormal_reply(self.address, frame.function, SERR_OTHER)]

    def _encode(self, reply: Frame) -> bytes:
        return simulator.encode_with_fault(
            reply,
            self.fault,
            lambda r: codec.encode(r, preamble=self.preamble),
            lambda r: attrs.evolve(r, address=self.wrong_address),
        )

    @property
    def wrong_address(self) -> str:
        """The address a meter with the ``WRONG_ADDRESS`` fault answers with."""
        return self.address[:-1] + str((int(self.address[-1]) + 5) % 10)

    def _authorised(self, creds: codec.Credentials) -> bool:
        return self.passwords.get(creds.level) == bytes(creds.password)

    # read (11h) and follow-up (12h)

    def _read(self, frame: Frame) -> list[Frame]:
        di = codec.parse_read_request(frame)
        self._pending = None
        try:
            payload = self._payload(di)
        except _NoData:
            return [codec.abnormal_reply(self.address, Control.READ, SERR_NO_DATA)]
        first = self.max_data_len - 4  # L = DI + payload
        if len(payload) <= first:
            return [codec.read_reply(self.address, di, payload)]
        rest = self.max_data_len - 5  # L = DI + payload + SEQ
        chunks = [payload[i : i + rest] for i in range(first, len(payload), rest)]
        self._pending = (di, chunks)
        return [codec.read_reply(self.address, di, payload[:first], followup=True)]

    def _read_followup(self, frame: Frame) -> list[Frame]:
        di, seq = codec.parse_followup_request(frame)
        if self._pending is None or self._pending[0] != di or not 1 <= seq <= len(self._pending[1]):
            return [codec.abnormal_reply(self.address, Control.READ_FOLLOWUP, SERR_NO_DATA)]
        chunks = self._pending[1]
        return [codec.followup_reply(self.address, di, chunks[seq - 1], seq, more=seq < len(chunks))]

    def _payload(self, di: int) -> bytes:
        now = self._advance()
        snap = _Snapshot(self, now)
        if di == ALL_ENERGY_BLOCK:
            return b"".join(self._payload_of(d, snap) for kind in _ALL_KINDS for d in _tariff_dis(kind << 16))
        item = _item(di)
        if item is None:
            raise _NoData
        if item.block and di >> 24 == 0x05:  # a frozen energy block: total and tariffs
            return data.encode_block(item, snap.frozen(di))
        if item.block:
            parts = [d for d in _block_members(di)]
            if not parts:
                raise _NoData
            return b"".join(self._payload_of(d, snap) for d in parts)
        return self._payload_of(di, snap)

    def _payload_of(self, di: int, snap: _Snapshot) -> bytes:
        item = _item(di)
        if item is None:
            raise _NoData
        return data.encode_value(item, snap.value(di))

    # read address (13h), write address (15h)

    def _read_address(self, frame: Frame) -> list[Frame]:
        return [codec.read_address_reply(self.address)]

    def _write_address(self, frame: Frame) -> list[Frame]:
        new = codec.address_from_wire(frame.data)
        if len(frame.data) != 6 or not new.isdigit():
            return []  # §1.2: 15h has no abnormal reply
        self.address = new
        return [codec.normal_reply(self.address, Control.WRITE_ADDRESS)]

    # write (14h)

    def _write(self, frame: Frame) -> list[Frame]:
        request = codec.parse_write_request(frame)
        if not self._authorised(request.credentials):
            return [codec.abnormal_reply(self.address, Control.WRITE, SERR_PASSWORD)]
        if request.di not in (0x04000101, 0x04000102):
            known = _item(request.di) is not None
            return [codec.abnormal_reply(self.address, Control.WRITE, SERR_PASSWORD if known else SERR_NO_DATA)]
        try:
            value = data.decode_value(data.ITEMS[request.di], request.value)
        except (FrameError, NotSupported):
            return [codec.abnormal_reply(self.address, Control.WRITE, SERR_OTHER)]
        current = self.now()
        if request.di == 0x04000101:
            target = datetime.combine(date.fromisoformat(str(value)), current.time())
        else:
            target = datetime.combine(current.date(), time.fromisoformat(str(value)))
        self._set_clock(target)
        return [codec.normal_reply(self.address, Control.WRITE)]

    def _set_clock(self, meter_time: datetime) -> None:
        now = self._advance()  # energy so far belongs to the tariffs of the old clock
        self.clock_offset = meter_time - now

    def _broadcast_time(self, when: datetime) -> None:
        current = self.now()
        if abs(when - current) > BROADCAST_TIME_WINDOW:
            logger.info("meter %s ignores broadcast time %s: more than %s from its clock %s", self.address, when, BROADCAST_TIME_WINDOW, current)
            return
        self._set_clock(when.replace(microsecond=current.microsecond))

    # freeze (16h)

    def _freeze_request(self, frame: Frame) -> list[Frame]:
        self._freeze_command(codec.parse_freeze_request(frame))
        return [codec.normal_reply(self.address, Control.FREEZE)]

    def _freeze_command(self, fields: tuple[int | None, int | None, int | None, int | None]) -> None:
        now = self._advance()
        if all(f is None for f in fields):  # §1.5: 99 99 99 99 = freeze now
            self._freeze(INSTANT_FREEZE, now + self.clock_offset)
        else:
            self._freeze_schedule = fields

    # change baud (17h)

    def _change_baud(self, frame: Frame) -> list[Frame]:
        try:
            rate = codec.parse_change_baud_request(frame)
        except FrameError:
            return [codec.abnormal_reply(self.address, Control.CHANGE_BAUD, SERR_BAUD)]
        # The answer still goes out at the old rate; the meter switches afterwards.
        self.settings = SerialSettings(rate, **CHARACTER_FORMAT)
        return [codec.normal_reply(self.address, Control.CHANGE_BAUD, frame.data)]

    # change password (18h)

    def _change_password(self, frame: Frame) -> list[Frame]:
        if len(frame.data) != 12:
            raise FrameError(f"change-password request holds DI + 2 × (PA + P0P1P2), 12 bytes, got {len(frame.data)}")
        di = int.from_bytes(frame.data[:4], "little")
        old = codec.Credentials(frame.data[4], frame.data[5:8])
        level, password = frame.data[8], frame.data[9:12]
        # A level may only set its own or a lower privilege's (higher number's) password.
        if not self._authorised(old) or old.level > level or di != 0x04000C00 | (level + 1):
            return [codec.abnormal_reply(self.address, Control.CHANGE_PASSWORD, SERR_PASSWORD)]
        self.passwords[level] = bytes(password)
        return [codec.normal_reply(self.address, Control.CHANGE_PASSWORD, frame.data[8:12])]

    # clears (19h, 1Ah, 1Bh)

    def _clear_demand_request(self, frame: Frame) -> list[Frame]:
        creds, _ = codec.parse_credentials(frame)
        if not self._authorised(creds):
            return [codec.abnormal_reply(self.address, Control.CLEAR_DEMAND, SERR_PASSWORD)]
        self._advance()
        self._clear_demand()
        return [codec.normal_reply(self.address, Control.CLEAR_DEMAND)]

    def _clear_meter(self, frame: Frame) -> list[Frame]:
        creds, _ = codec.parse_credentials(frame)
        if not self._authorised(creds):
            return [codec.abnormal_reply(self.address, Control.CLEAR_METER, SERR_PASSWORD)]
        self._advance()
        for scope in self._reg:
            for registers in scope.values():
                registers[:] = [0.0] * TARIFFS
        self._clear_demand()
        for records in self._freezes.values():
            records.clear()
        for di in self.events:
            self.events[di] = 0
        return [codec.normal_reply(self.address, Control.CLEAR_METER)]

    def _clear_events(self, frame: Frame) -> list[Frame]:
        creds, rest = codec.parse_credentials(frame)
        if not self._authorised(creds):
            return [codec.abnormal_reply(self.address, Control.CLEAR_EVENTS, SERR_PASSWORD)]
        if len(rest) != 4:
            raise FrameError(f"event clear needs the event DI (4 bytes) after the credentials, got {len(rest)}")
        pattern = rest  # DI0 first; FF bytes match anything (FFFFFFFF = every event)
        for di in self.events:
            wire = di.to_bytes(4, "little")
            if all(p == 0xFF or p == w for p, w in zip(pattern, wire)):
                self.events[di] = 0
        return [codec.normal_reply(self.address, Control.CLEAR_EVENTS)]

    # relay control (1Ch)

    def _relay(self, frame: Frame) -> list[Frame]:
        request = codec.parse_relay_request(frame)
        if not self._authorised(request.credentials):
            return [codec.abnormal_reply(self.address, Control.RELAY, SERR_PASSWORD)]
        if request.valid_until is not None and request.valid_until < self.now():
            # [U] a command whose validity deadline has passed is refused
            return [codec.abnormal_reply(self.address, Control.RELAY, SERR_OTHER)]
        self._advance()  # energy up to now was drawn with the relay as it was
        action = request.action
        if action == RelayAction.TRIP:
            if self.keep_power:  # [U] power-keep (保电) blocks tripping
                return [codec.abnormal_reply(self.address, Control.RELAY, SERR_OTHER)]
            if not self.relay_open:
                self.events[TRIP_EVENTS] += 1
            self.relay_open = self.relay_commanded_open = True
        elif action == RelayAction.CLOSE_PERMITTED:
            self.relay_commanded_open = False  # the customer may now close it: press_button()
        elif action == RelayAction.CLOSE:
            self._close_relay()
        elif action == RelayAction.ALARM:
            self.alarm = True
        elif action == RelayAction.ALARM_RELEASE:
            self.alarm = False
        elif action == RelayAction.KEEP_POWER:
            self.keep_power = True
            self._close_relay()
        elif action == RelayAction.KEEP_POWER_RELEASE:
            self.keep_power = False
        else:
            return [codec.abnormal_reply(self.address, Control.RELAY, SERR_OTHER)]
        return [codec.normal_reply(self.address, Control.RELAY)]

    def _close_relay(self) -> None:
        if self.relay_open:
            self.events[CLOSE_EVENTS] += 1
        self.relay_open = self.relay_commanded_open = False

    def press_button(self) -> bool:
        """The customer presses the meter's button: closes the relay if closing is permitted."""
        with self._lock:
            if self.relay_open and not self.relay_commanded_open:
                self._advance()
                self._close_relay()
                return True
            return False

    def _security(self, frame: Frame) -> list[Frame]:
        # No ESAM in the simulated meter: identity authentication is refused.
        return [codec.abnormal_reply(self.address, Control.SECURITY, SERR_OTHER)]

    def status_word(self, n: int) -> int:
        """Running status word ``n`` (1..7) at the current time."""
        with self._lock:
            return _Snapshot(self, self._advance()).status(n)

    def __repr__(self) -> str:
        kind = f"{self.phases}-phase{' PV' if self.profile.pv_kw else ''}"
        fault = f" fault={self.fault.value}" if self.fault else ""
        return f"<SimulatedMeter {self.address} {kind}{fault}>"


_HANDLERS: dict[int, Callable[[SimulatedMeter, Frame], list[Frame]]] = {
    Control.SECURITY: SimulatedMeter._security,
    Control.READ: SimulatedMeter._read,
    Control.READ_FOLLOWUP: SimulatedMeter._read_followup,
    Control.READ_ADDRESS: SimulatedMeter._read_address,
    Control.WRITE: SimulatedMeter._write,
    Control.WRITE_ADDRESS: SimulatedMeter._write_address,
    Control.FREEZE: SimulatedMeter._freeze_request,
    Control.CHANGE_BAUD: SimulatedMeter._change_baud,
    Control.CHANGE_PASSWORD: SimulatedMeter._change_password,
    Control.CLEAR_DEMAND: SimulatedMeter._clear_demand_request,
    Control.CLEAR_METER: SimulatedMeter._clear_meter,
    Control.CLEAR_EVENTS: SimulatedMeter._clear_events,
    Control.RELAY: SimulatedMeter._relay,
}


def _display(value: float) -> Decimal:
    """A register as shown: truncated to 0.01 and rolled over after 999999.99."""
    shown = Decimal(repr(value)).quantize(_CENT, rounding=ROUND_FLOOR)
    return shown % _ROLLOVER


def _tariff_dis(base: int) -> list[int]:
    return [base | t << 8 for t in range(TARIFFS + 1)]


def _block_members(di: int) -> list[int]:
    """The DIs a block DI (FF in DI1) stands for, in order: every DI1 the table knows."""
    return [member for n in range(0xFF) if (member := (di & ~0xFF00) | n << 8) in data.ITEMS and not data.ITEMS[member].block]


class _Snapshot:
    """Every value of one meter at one instant, so a block reads consistent values."""

    def __init__(self, meter: SimulatedMeter, now: datetime) -> None:
        self.meter = meter
        self.now = now
        self.meter_time = now + meter.clock_offset
        profile = meter.profile
        self.base = meter._base_power(now)  # a phase's power is base × its share
        self.p = meter._power_at(now)
        self.pf = profile.power_factor(now) if self.p else 1.0
        self.q = abs(self.p) * math.tan(math.acos(self.pf))
        self.s = abs(self.p) / self.pf
        self.q_base = abs(self.base) * math.tan(math.acos(self.pf))
        self.s_base = abs(self.base) / self.pf
        self.sign = -1 if self.p < 0 else 1
        self.v = [meter._voltage(now, ph) for ph in range(3)]
        self.shares = profile.shares if meter._lost is None else meter._lost  # a lost phase's share is 0
        self.i = [self.sign * abs(self.base) * share * 1000 / (self.v[ph] * self.pf) if share else 0.0
                  for ph, share in enumerate(self.shares)]

    def _phase_present(self, phase: int) -> bool:
        return phase == 1 or self.meter.phases == 3

    def status(self, n: int) -> int:
        m = self.meter
        if n == 1:
            word = W1_ACTIVE_REVERSE if self.p < 0 else 0
            return word | (W1_CLOCK_BATTERY_LOW | W1_READING_BATTERY_LOW if m.battery_low else 0)
        if n == 2:
            return sum(1 << ph for ph in range(3) if self.p < 0 and self.shares[ph])
        if n == 3:
            word = W3_RELAY_OPEN if m.relay_open else 0
            word |= W3_RELAY_COMMAND_OPEN if m.relay_commanded_open else 0
            return word | (W3_ALARM if m.alarm else 0)
        return 0

    def frozen(self, di: int) -> list[Decimal]:
        kind, sub, n = di >> 16 & 0xFF, di >> 8 & 0xFF, di & 0xFF
        records = self.meter._freezes.get(kind, ())
        if n > len(records):
            raise _NoData
        record = records[n - 1]
        return [_display(v) for v in (record.forward if sub == 0x01 else record.reverse)]

    def value(self, di: int) -> Any:
        """The value of one (non-block) DI; None = not applicable (sent as FF)."""
        m = self.meter
        di3, di2, di1, di0 = di >> 24, di >> 16 & 0xFF, di >> 8 & 0xFF, di & 0xFF
        if di3 == 0x00 and di0 == 0x00:
            return self._energy(di2, di1)
        if di3 == 0x01 and di0 == 0x00 and di2 in (FORWARD, REVERSE) and di1 <= TARIFFS:
            demand, when = m._max_demand[di2][di1]
            return (Decimal(f"{demand:.4f}"), when)
        if di3 == 0x02:
            return self._instant(di2, di1, di0)
        if di3 == 0x05:
            kind, n = di2, di0
            records = m._freezes.get(kind, ())
            if di1 != 0x00 or n > len(records):
                raise _NoData
            return records[n - 1].at
        if di in m.events:
            return m.events[di]
        return self._parameter(di)

    def _energy(self, di2: int, tariff: int) -> Any:
        if di2 in _ALL_KINDS and tariff <= TARIFFS:
            return _display(self.meter._registers(0, di2)[tariff])
        for phase, base in enumerate(_PHASE_BASES, start=1):
            kind = di2 - base + 1
            if 1 <= kind <= 0x0A and tariff == 0:
                if not self._phase_present(phase):
                    return None
                return _display(self.meter._registers(phase, kind)[0])
        raise _NoData

    def _instant(self, di2: int, di1: int, di0: int) -> Any:
        if di2 == 0x80:
            return self._extra(di0)
        if di0 != 0x00 or di1 > 3:
            raise _NoData
        if di1 and not self._phase_present(di1):
            return None
        ph = di1 - 1
        share = 1.0 if di1 == 0 else self.shares[ph]
        p, q, s = (self.p, self.q, self.s) if di1 == 0 else (self.base, self.q_base, self.s_base)
        if di2 == 0x01 and di1:
            return Decimal(f"{self.v[ph]:.1f}")
        if di2 == 0x02 and di1:
            return Decimal(f"{self.i[ph]:.3f}")
        if di2 == 0x03:
            return Decimal(f"{p * share:.4f}")
        if di2 == 0x04:
            return Decimal(f"{q * share:.4f}")
        if di2 == 0x05:
            return Decimal(f"{s * share:.4f}")
        if di2 == 0x06:
            if di1 and not share:
                return Decimal("1.000")  # a phase without current: no phase shift to show
            return Decimal(f"{self.sign * self.pf:.3f}")
        if di2 == 0x07 and di1:
            angle = math.degrees(math.acos(self.pf)) + (180 if self.p < 0 else 0)
            return Decimal(f"{angle:.1f}")
        raise _NoData

    def _extra(self, di0: int) -> Any:
        profile = self.meter.profile
        if di0 == 0x01:  # neutral current: the phasor sum of the phase currents
            phasors = [self.i[ph] * cmath.exp(-2j * math.pi * ph / 3) for ph in range(3)]
            return Decimal(f"{abs(sum(phasors)):.3f}")
        if di0 == 0x02:
            held = self.meter._frequency
            return Decimal(f"{profile.frequency(self.now) if held is None else held:.2f}")
        if di0 == 0x03:
            return Decimal(f"{self.meter._last_step_kw:.4f}")
        if di0 == 0x04:
            window = self.meter._window
            hours = len(window) * STEP.total_seconds() / 3600
            return Decimal(f"{sum(f - r for f, r in window) / hours:.4f}") if hours else Decimal(0)
        if di0 == 0x07:
            warm = 8 * math.sin(2 * math.pi * (_hour_of_day(self.now) - 9) / 24)
            return Decimal(f"{25 + warm + 2 * abs(self.p) / max(profile.base_kw, 0.1):.1f}")
        raise _NoData

    def _parameter(self, di: int) -> Any:
        m = self.meter
        if di in (0x04000101, 0x04000102):
            return self.meter_time
        if di == 0x04000401:
            return m.address
        if di == 0x04000402:
            return m.meter_number
        if di == 0x04000409:
            return m.meter_constant
        if 0x04000501 <= di <= 0x04000507:
            return self.status(di & 0xFF)
        raise _NoData


def make_meters(
    n: int,
    *,
    first_address: str = "000000000001",
    seed: int = 0,
    clock: Callable[[], datetime] = datetime.now,
    **options: Any,
) -> list[SimulatedMeter]:
    """``n`` meters with consecutive addresses: mostly single-phase households, every
    third a three-phase one, every fifth with PV; each with its own preamble length and
    a clock a little off (±90 s), all deterministic in ``seed``. ``options`` go to every
    :class:`SimulatedMeter` and override those defaults (``history=timedelta(days=40)``
    for meters with 40 days of freeze records, ``battery_low=True``, ``reverse=True``)."""
    if not first_address.isdigit() or len(first_address) != 12:
        raise ValueError(f"first_address must be 12 decimal digits, got {first_address!r}")
    rng = random.Random(f"dlt645-sim-site:{seed}")
    meters = []
    for i in range(n):
        kw: dict[str, Any] = {
            "phases": 3 if i % 3 == 2 else 1,
            "pv": i % 5 == 4,
            "preamble": (4, 2, 4, 0, 3)[i % 5],  # meters answer with 0-4 FE (§1.1)
            "clock_offset": timedelta(seconds=round(rng.uniform(-90, 90))),
        }
        kw.update(options)
        meters.append(SimulatedMeter(f"{int(first_address) + i:012d}", seed=seed, clock=clock, **kw))
    return meters


def slow_delay(settings: SerialSettings) -> float:
    """How late a ``SLOW`` meter answers: twice the longest a DL/T 645 master must wait
    (the 500 ms response limit plus the longest frame), so any sane timeout expires."""
    return 2 * (MAX_RESPONSE_DELAY + timing.frame_time(codec.MAX_FRAME_LEN + len(codec.PREAMBLE), settings))


def start_dlt645_sim(
    n: int = 5,
    *,
    baudrate: int = 2400,
    faults: Mapping[str, Fault | str] | None = None,
    seed: int = 0,
    clock: Callable[[], datetime] = datetime.now,
    first_address: str = "000000000001",
    turnaround: float | tuple[float, float] = DEFAULT_TURNAROUND,
    noise_interval: float | None = None,
    echo: bool = False,
    **meter_options: Any,
) -> PtyBus:
    """``n`` simulated meters on a started :class:`PtyBus` at ``baudrate`` 8E1.

    ``faults`` maps addresses to faults (``{"000000000002": Fault.SILENCE}``);
    ``meter_options`` go to every meter (:func:`make_meters`: ``history=``, ...). The
    caller stops the bus (or uses it as a context manager); ``bus.port`` is the path.
    """
    meters = make_meters(n, first_address=first_address, seed=seed, clock=clock, **meter_options)
    settings = SerialSettings(baudrate, **CHARACTER_FORMAT)
    return simulator.start_bus(
        meters, settings, faults=faults, turnaround=turnaround, seed=seed, slow_delay=slow_delay(settings),
        noise_interval=noise_interval, echo=echo,
    )


class Dlt645Simulator:
    """The simulated DL/T 645-2007 meters as :class:`meterhub.api.MeterSimulator` offers them
    to ``meterhub sim bus`` and the demo. Options: ``first_address`` (12 digits)."""

    protocol = "dlt645"
    description = "DL/T 645-2007 electricity meters (1- and 3-phase, some with PV)"
    default_settings = SerialSettings(2400, **CHARACTER_FORMAT)
    quantities = ("energy_import", "energy_import_t1", "energy_import_t2", "energy_import_t3", "energy_import_t4",
                  "energy_export", "voltage_l1", "current_l1", "power_import", "power_factor", "frequency", "clock")

    def make(self, count: int, *, seed: int = 0, options: Mapping[str, str] | None = None) -> list[SimulatedMeter]:
        options = dict(options or {})
        first = options.pop("first_address", "000000000001")
        if options:
            raise ValueError(f"unknown dlt645 simulator option(s): {', '.join(sorted(options))} (known: first_address)")
        return make_meters(count, first_address=str(first), seed=seed)

    def site_entry(self, device: SimulatedMeter) -> Mapping[str, Any]:
        return {"address": device.address, "protocol": self.protocol, "quantities": list(self.quantities)}
