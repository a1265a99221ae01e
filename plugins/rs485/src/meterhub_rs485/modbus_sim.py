"""Simulated Modbus RTU meters, built from device profiles, for a :class:`~meterhub.simulator.PtyBus`.

A :class:`SimulatedModbusMeter` takes any profile (so every shipped profile is simulated,
and a vendor's profile too) and answers register reads with what a real meter of that
model would hold: voltages, currents, powers, power factor and frequency from the same
seeded household/business load model as the DL/T 645 simulator, and energy registers
that integrate that load over time. Values are rounded to what the register can carry
(6 significant digits in a float32, the scale's resolution in an integer), so a driver
reading them must return exactly :meth:`SimulatedModbusMeter.values`.

Registers the profile does not map answer exception 02 (illegal data address), unless
they lie in a short gap between mapped registers (real meters read those as filler);
other function codes answer exception 01. ``BAD_CHECKSUM`` and ``WRONG_ADDRESS`` are
applied here, the other faults by the bus. Requests are found with the codec's
:class:`~meterhub_rs485.modbus.StreamDecoder` (CRC and plausible function and length),
so DL/T 645 traffic on a shared line does not fool it.
"""

from __future__ import annotations

import cmath
import logging
import math
import random
import struct
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from meterhub.model import SerialSettings
from meterhub.protocols.dlt645_sim import LoadProfile
from meterhub.simulator import DEFAULT_TURNAROUND, Fault, PtyBus, as_fault, start_bus

from .modbus import (
    DEFAULT_MAX_GAP,
    MAX_UNIT,
    Frame,
    ModbusDriver,
    StreamDecoder,
    encode,
    exception_response,
    read_response,
)
from .modbus_profiles import (
    DATA_TYPES,
    MAX_REGISTERS_PER_READ,
    READ_FUNCTIONS,
    Point,
    Profile,
    encode_point,
    encode_raw,
    shipped_profiles,
)

__all__ = ["SimulatedModbusMeter", "make_modbus_meters", "slow_delay", "start_modbus_sim"]

log = logging.getLogger(__name__)

#: Modbus Application Protocol V1.1b3 §7 exception codes the simulated meter answers.
ILLEGAL_FUNCTION = 0x01
ILLEGAL_DATA_ADDRESS = 0x02
ILLEGAL_DATA_VALUE = 0x03

#: Energy registers integrate the load on a fixed one-minute grid (the power at the start
#: of each minute), so a register's value depends only on time, never on when it is read.
STEP = timedelta(minutes=1)
_EPOCH = datetime(2000, 1, 1)

#: Significant decimal digits a register keeps: any decimal of at most 6 significant
#: digits survives a float32 (IEEE 754 binary32 guarantees 6), 15 a float64.
FLOAT_DIGITS = {"f32": 6, "f64": 15}

#: Quantities that exist only on three-phase meters: their presence makes the meter 3-phase.
_THREE_PHASE = {"1-0:52.7.0", "1-0:72.7.0", "1-0:51.7.0", "1-0:71.7.0", "1-0:41.7.0", "1-0:61.7.0"}
_VOLTAGE = ("1-0:32.7.0", "1-0:52.7.0", "1-0:72.7.0")
_CURRENT = ("1-0:31.7.0", "1-0:51.7.0", "1-0:71.7.0")
_POWER = ("1-0:21.7.0", "1-0:41.7.0", "1-0:61.7.0")
_PF = ("1-0:33.7.0", "1-0:53.7.0", "1-0:73.7.0")
_IMPORT = ("1-0:21.8.0", "1-0:41.8.0", "1-0:61.8.0")
_EXPORT = ("1-0:22.8.0", "1-0:42.8.0", "1-0:62.8.0")


def _floor_minute(t: datetime) -> datetime:
    return _EPOCH + ((t - _EPOCH) // STEP) * STEP


class SimulatedModbusMeter:
    """One Modbus RTU meter of a profile's model at unit id ``unit``.

    ``clock`` returns the current wall-clock time (naive local); tests pass a fixed or
    stepping clock. ``overrides`` pins quantities: ``{obis: Decimal}`` for a value, or
    ``{obis: [raw registers]}`` for exact register contents (a NaN, an "invalid" value).
    Thread-safe: the bus serves it from its own thread.
    """

    protocol = "modbus"

    def __init__(
        self,
        unit: int | str,
        profile: Profile | str,
        *,
        seed: int | str = 0,
        clock: Callable[[], datetime] = datetime.now,
        fault: Fault | str | None = None,
        pv: bool = False,
        energy_kwh: float | None = None,
        overrides: Mapping[str, Decimal | Sequence[int]] | None = None,
        max_gap: int | None = None,
        settings: SerialSettings | None = None,
    ) -> None:
        self.unit = int(unit)
        if not 1 <= self.unit <= MAX_UNIT:
            raise ValueError(f"a simulated Modbus meter needs a unit id 1..{MAX_UNIT}, got {unit!r}")
        self.address = str(self.unit)
        self.profile = shipped_profiles()[profile] if isinstance(profile, str) else profile
        self.fault = as_fault(fault)
        self.clock = clock
        #: None = whatever the bus runs at (the PtyBus paces replies with it)
        self.settings = settings
        self.overrides: dict[str, Decimal | Sequence[int]] = dict(overrides or {})
        self.requests = 0  #: requests addressed to this unit id
        self.reads: list[tuple[int, int, int]] = []  #: (function, address, count) of each read served
        self.phases = 3 if _THREE_PHASE & set(self.profile.points) else 1
        rng = random.Random(f"modbus-sim:{seed}:{self.profile.name}:{self.unit}")
        self.load = LoadProfile.random(rng, phases=self.phases, pv=pv)
        total = energy_kwh if energy_kwh is not None else rng.uniform(200, 20000) * self.phases
        exported = rng.uniform(50, 2000) if pv else 0.0
        shares = (1.0, *self.load.shares) if self.phases == 3 else (1.0, 1.0, 0.0, 0.0)
        # scope 0 = the meter, 1..3 = phases L1..L3
        self._import = [total * s for s in shares]
        self._export = [exported * s for s in shares]
        self._q_import = [total * 0.3 * s for s in shares]
        self._q_export = [exported * 0.1 * s for s in shares]
        self._shares = shares
        self._lock = threading.RLock()
        self._t = self._wall(clock())
        gap = max_gap if max_gap is not None else (self.profile.max_gap if self.profile.max_gap is not None else DEFAULT_MAX_GAP)
        self._spans = self._readable_spans(gap)

    def __repr__(self) -> str:
        fault = f" fault={self.fault.value}" if self.fault else ""
        return f"<SimulatedModbusMeter unit {self.unit} {self.profile.name}{fault}>"

    # -- the SimDevice protocol -------------------------------------------------------------

    def new_decoder(self) -> StreamDecoder:
        return StreamDecoder(server=True)

    def handle(self, frame: Any) -> list[bytes]:
        """The encoded answer to one request; nothing for other units and broadcasts.

        Modbus over Serial Line V1.02 §2.2: a broadcast (unit 0) is never answered.
        """
        if not isinstance(frame, Frame) or frame.unit != self.unit:
            return []
        with self._lock:
            self.requests += 1
            reply = self._answer(frame)
        return [self._apply_fault(reply)]

    # -- answers --------------------------------------------------------------------------

    def _answer(self, frame: Frame) -> bytes:
        function = frame.function
        if function not in READ_FUNCTIONS:
            return exception_response(self.unit, function & 0x7F, ILLEGAL_FUNCTION)
        if len(frame.data) != 4:
            return exception_response(self.unit, function, ILLEGAL_DATA_VALUE)
        address, count = struct.unpack(">HH", frame.data)
        # §6.3/§6.4: 1 <= quantity <= 125, else exception 03; a meter may allow fewer.
        if not 1 <= count <= min(MAX_REGISTERS_PER_READ, self.profile.max_registers):
            return exception_response(self.unit, function, ILLEGAL_DATA_VALUE)
        if address + count > 0x10000 or not self._readable(function, address, count):
            return exception_response(self.unit, function, ILLEGAL_DATA_ADDRESS)
        registers = self.register_map()
        self.reads.append((function, address, count))
        return read_response(self.unit, function, [registers.get((function, a), 0) for a in range(address, address + count)])

    def _apply_fault(self, reply: bytes) -> bytes:
        if self.fault is Fault.BAD_CHECKSUM:
            return reply[:-2] + bytes(b ^ 0xA5 for b in reply[-2:])
        if self.fault is Fault.WRONG_ADDRESS:
            other = self.unit % MAX_UNIT + 1
            return encode(Frame(other, reply[1], reply[2:-2]))
        return reply

    def _readable_spans(self, gap: int) -> dict[int, list[tuple[int, int]]]:
        """Per function, the register spans a read may cover: mapped registers, merged
        across gaps of at most ``gap`` that hold no forbidden register."""
        spans: dict[int, list[tuple[int, int]]] = {}
        intervals = [(p.function, p.address, p.end) for p in self.profile.points.values()]
        intervals += [(c.function, c.address, c.address + c.count) for c in self.profile.identity]
        for function in READ_FUNCTIONS:
            merged: list[tuple[int, int]] = []
            for _, start, end in sorted(i for i in intervals if i[0] == function):
                if merged and start - merged[-1][1] <= gap and not self.profile.is_forbidden(function, merged[-1][1], start):
                    merged[-1] = (merged[-1][0], max(merged[-1][1], end))
                else:
                    merged.append((start, end))
            spans[function] = merged
        return spans

    def _readable(self, function: int, address: int, count: int) -> bool:
        end = address + count
        if self.profile.is_forbidden(function, address, end):
            return False
        return any(start <= address and end <= stop for start, stop in self._spans.get(function, ()))

    # -- values ---------------------------------------------------------------------------

    @staticmethod
    def _wall(t: datetime) -> datetime:
        return t.replace(tzinfo=None)

    def _advance(self) -> datetime:
        """Integrate the energy registers up to the clock's current time; returns it."""
        now = self._wall(self.clock())
        t = self._t
        while t < now:
            cell = _floor_minute(t)
            end = min(cell + STEP, now)
            hours = (end - t).total_seconds() / 3600
            p = self.load.power(cell)
            pf = self.load.power_factor(cell)
            q = abs(p) * math.tan(math.acos(pf))
            for scope, share in enumerate(self._shares):
                if p >= 0:
                    self._import[scope] += p * share * hours
                    self._q_import[scope] += q * share * hours
                else:
                    self._export[scope] -= p * share * hours
                    self._q_export[scope] += q * share * hours
            t = end
        self._t = max(self._t, now)
        return now

    def _physics(self) -> dict[str, float]:
        """Every quantity this model knows, as floats in the vocabulary's units, at now."""
        now = self._advance()
        load = self.load
        p = load.power(now)
        pf = load.power_factor(now)
        sign = -1.0 if p < 0 else 1.0
        volts = [load.voltage(now, ph) for ph in range(3)]
        shares = self._shares[1:]
        amps = [abs(p) * shares[ph] * 1000 / (volts[ph] * pf) for ph in range(3)]
        out: dict[str, float] = {
            "1-0:1.7.0": p,
            "1-0:3.7.0": abs(p) * math.tan(math.acos(pf)),
            "1-0:9.7.0": abs(p) / pf,
            "1-0:13.7.0": sign * pf,
            "1-0:14.7.0": load.frequency(now),
            "1-0:1.8.0": self._import[0],
            "1-0:2.8.0": self._export[0],
            "1-0:3.8.0": self._q_import[0],
            "1-0:4.8.0": self._q_export[0],
            "1-0:15.8.0": self._import[0] + self._export[0],
        }
        phases = range(self.phases)
        for ph in phases:
            out[_VOLTAGE[ph]] = volts[ph]
            out[_CURRENT[ph]] = amps[ph]
            out[_POWER[ph]] = p * shares[ph]
            out[_PF[ph]] = sign * pf if shares[ph] else 1.0
            out[_IMPORT[ph]] = self._import[ph + 1]
            out[_EXPORT[ph]] = self._export[ph + 1]
        # the neutral carries the phasor sum of the phase currents (120° apart)
        out["1-0:91.7.0"] = abs(sum(amps[ph] * cmath.exp(-2j * math.pi * ph / 3) for ph in phases))
        return out

    def _quantized(self, point: Point, value: float) -> Decimal:
        """``value`` as the register can hold it, the Decimal a reader must get back."""
        kind = DATA_TYPES[point.dtype]
        raw = value / float(point.scale)
        if kind.is_float:
            return Decimal(f"{raw:.{FLOAT_DIGITS[point.dtype]}g}") * point.scale
        low, high = (-(1 << (16 * kind.registers - 1)), (1 << (16 * kind.registers - 1)) - 1) if kind.signed else (0, (1 << (16 * kind.registers)) - 1)
        whole = min(high, max(low, round(raw)))
        while whole in point.invalid:  # never produce the "not available" marker by chance
            whole -= 1
        return Decimal(whole) * point.scale

    def values(self) -> dict[str, Decimal]:
        """Each mapped quantity as a reader gets it now (overrides with raw registers excluded)."""
        with self._lock:
            physics = self._physics()
            out: dict[str, Decimal] = {}
            for obis, point in self.profile.points.items():
                pinned = self.overrides.get(obis)
                if pinned is not None:
                    if isinstance(pinned, (Decimal, int, str)):
                        out[obis] = Decimal(pinned)
                    continue
                if obis not in physics:
                    log.debug("simulated %s has no model for %s; it reads 0", self.profile.name, obis)
                out[obis] = self._quantized(point, physics.get(obis, 0.0))
            return out

    def register_map(self) -> dict[tuple[int, int], int]:
        """(function, address) -> 16-bit register value, for every mapped register now."""
        with self._lock:
            registers: dict[tuple[int, int], int] = {}
            values = self.values()
            for obis, point in self.profile.points.items():
                pinned = self.overrides.get(obis)
                words = list(pinned) if isinstance(pinned, (list, tuple)) else encode_point(point, values[obis])
                for offset, word in enumerate(words):
                    registers[(point.function, point.address + offset)] = int(word) & 0xFFFF
            for check in self.profile.identity:
                words = encode_raw(check.dtype, check.equals[0], check.word_order, check.byte_order)
                for offset, word in enumerate(words):
                    registers[(check.function, check.address + offset)] = word
            return registers


def make_modbus_meters(
    n: int,
    profiles: str | Profile | Sequence[str | Profile] = "eastron-sdm630",
    *,
    first_unit: int = 1,
    seed: int = 0,
    clock: Callable[[], datetime] = datetime.now,
    **options: Any,
) -> list[SimulatedModbusMeter]:
    """``n`` meters at consecutive unit ids, cycling through ``profiles``; every fifth with PV."""
    cycle = [profiles] if isinstance(profiles, (str, Profile)) else list(profiles)
    if not cycle:
        raise ValueError("make_modbus_meters needs at least one profile")
    if not 1 <= first_unit <= MAX_UNIT - n + 1:
        raise ValueError(f"{n} meters from unit {first_unit} do not fit in 1..{MAX_UNIT}")
    meters = []
    for i in range(n):
        kw: dict[str, Any] = {"pv": i % 5 == 4}
        kw.update(options)
        meters.append(SimulatedModbusMeter(first_unit + i, cycle[i % len(cycle)], seed=seed, clock=clock, **kw))
    return meters


def slow_delay(settings: SerialSettings) -> float:
    """How late a ``SLOW`` meter answers: twice the whole time a master allows a read,
    so any sane timeout expires first."""
    return 2 * ModbusDriver(shipped=False).transaction_timeout(settings)


def start_modbus_sim(
    n: int = 1,
    *,
    profiles: str | Profile | Sequence[str | Profile] = "eastron-sdm630",
    baudrate: int = 9600,
    first_unit: int = 1,
    faults: Mapping[str, Fault | str] | None = None,
    seed: int = 0,
    clock: Callable[[], datetime] = datetime.now,
    turnaround: float | tuple[float, float] = DEFAULT_TURNAROUND,
    noise_interval: float | None = None,
    **meter_options: Any,
) -> PtyBus:
    """``n`` simulated Modbus meters on a started :class:`PtyBus` at ``baudrate`` 8N1.

    ``faults`` maps unit ids (as strings) to faults. The caller stops the bus (or uses it
    as a context manager); ``bus.port`` is the pty path to open.
    """
    meters = make_modbus_meters(n, profiles, first_unit=first_unit, seed=seed, clock=clock, **meter_options)
    settings = SerialSettings(baudrate, 8, "N", 1)
    by_address = {str(unit): fault for unit, fault in (faults or {}).items()}
    return start_bus(
        meters, settings, faults=by_address, turnaround=turnaround, seed=seed, slow_delay=slow_delay(settings), noise_interval=noise_interval
    )


class ModbusSimulator:
    """Simulated Modbus RTU meters as :class:`meterhub.api.MeterSimulator` offers them to
    ``meterhub sim bus`` and the demo. Options: ``profile`` (default eastron-sdm630; several
    joined with ``+`` cycle), ``first_unit`` (default 1)."""

    protocol = "modbus"
    description = "Modbus RTU energy meters built from the shipped device profiles"
    default_settings = SerialSettings(9600, 8, "N", 1)
    DEFAULT_PROFILE = "eastron-sdm630"

    def _profiles(self, options: Mapping[str, str]) -> list[str]:
        names = [n.strip() for n in str(options.get("profile", self.DEFAULT_PROFILE)).split("+") if n.strip()]
        known = shipped_profiles()
        unknown = [n for n in names if n not in known]
        if unknown or not names:
            raise ValueError(f"unknown modbus profile {', '.join(unknown) or '(none)'} (shipped: {', '.join(sorted(known))})")
        return names

    def settings_for(self, options: Mapping[str, str]) -> SerialSettings:
        """The serial format the first profile's meters ship with."""
        return shipped_profiles()[self._profiles(options)[0]].serial

    def make(self, count: int, *, seed: int = 0, options: Mapping[str, str] | None = None) -> list[SimulatedModbusMeter]:
        options = dict(options or {})
        profiles = self._profiles(options)
        first = options.pop("first_unit", "1")
        options.pop("profile", None)
        if options:
            raise ValueError(f"unknown modbus simulator option(s): {', '.join(sorted(options))} (known: profile, first_unit)")
        if not str(first).isdigit():
            raise ValueError(f"first_unit must be a unit id 1..{MAX_UNIT}, got {first!r}")
        return make_modbus_meters(count, profiles, first_unit=int(first), seed=seed)

    def site_entry(self, device: SimulatedModbusMeter) -> Mapping[str, Any]:
        return {"address": device.address, "protocol": self.protocol, "options": {"profile": device.profile.name},
                "quantities": sorted(device.profile.points)}
