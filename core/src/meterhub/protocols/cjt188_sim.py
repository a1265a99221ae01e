"""Simulated CJ/T 188-2004 water, gas and heat meters that answer real frames.

Each :class:`SimulatedCjt188Meter` has a seeded usage profile (a household's water or
gas draw, a flat's heating circuit) and integrates it into its registers as its clock
advances: accumulated volume, heat, settlement-date values, working hours. It answers
read data (01h, DI 901F), read address (03h), valve control (04h, DI A017; a closed
valve stops the flow) and write address (15h), and reports its valve and battery in ST.
Put meters on a :class:`~meterhub.simulator.PtyBus` (:func:`start_cjt188_sim`), alone or
next to DL/T 645 meters, to talk to them over a pseudo-terminal with real byte timing.

Everything is a pure function of the seed and of the values an injected ``clock``
returns, so tests control time and get the same numbers every run.
"""

from __future__ import annotations

import logging
import math
import random
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from typing import Any

import attrs

from .. import simulator, timing
from ..errors import FrameError, NotSupported
from ..model import SerialSettings
from ..simulator import DEFAULT_TURNAROUND, Fault, PtyBus, as_fault
from . import cjt188 as codec
from . import cjt188_data as data
from .cjt188 import (
    DI_ADDRESS,
    DI_METERING,
    DI_VALVE,
    ST_BATTERY_LOW,
    ST_VALVE_CLOSED,
    ST_VALVE_FAULT,
    VALVE_CLOSE,
    VALVE_OPEN,
    WILDCARD_TYPE,
    Control,
    DiOrder,
    Family,
    Frame,
    StreamDecoder,
    family_of,
)
from .cjt188_data import Amount, FlowRecord, HeatRecord
from .cjt188_driver import MAX_RESPONSE_DELAY

__all__ = ["Cjt188Simulator", "Fault", "SimulatedCjt188Meter", "UsageProfile", "make_meters", "slow_delay", "start_cjt188_sim"]

logger = logging.getLogger(__name__)

#: README §2.3: RS-485 / M-Bus at 8 data bits, even parity, 1 stop bit.
CHARACTER_FORMAT = {"bytesize": 8, "parity": "E", "stopbits": 1}

#: Registers are integrated on a fixed one-minute grid using the flow at the start of
#: each minute, so a register's value depends only on time, never on when it was read.
STEP = timedelta(minutes=1)
_EPOCH = datetime(2000, 1, 1)

#: kWh carried by 1 m³ of water per kelvin: 4.187 kJ/(kg·K) × 1000 kg/m³ / 3600 s/h.
WATER_HEAT_CAPACITY = 1.163
#: 1 kWh = 3.6 MJ = 0.0036 GJ: how the simulator shows its heat in joule units.
_KWH_IN = {data.UNIT_KWH: 1.0, data.UNIT_MWH: 1e-3, 0x02: 1e3, 0x0A: 1e-5, data.UNIT_GJ: 0.0036, 0x0E: 3.6, 0x0B: 3600.0, 0x13: 0.000036}
_KW_IN = {data.UNIT_KW: 1.0, 0x14: 1e3, 0x1A: 1e-3}
_M3_IN = {data.UNIT_M3: 1.0, data.UNIT_LITRE: 1e3}

#: Registers are XXXXXX.XX and roll over after 999999.99.
_ROLLOVER = 1_000_000


def _gauss(x: float, centre: float, width: float) -> float:
    return math.exp(-(((x - centre) / width) ** 2))


def _hour_of_day(t: datetime) -> float:
    return t.hour + t.minute / 60 + t.second / 3600


def _seconds(t: datetime) -> float:
    return (t - _EPOCH).total_seconds()


def _wave(waves: Sequence[tuple[float, float, float]], s: float) -> float:
    return sum(a * math.sin(2 * math.pi * s / period + phase) for a, period, phase in waves)


def _waves(rng: random.Random, periods: Sequence[float], amplitude: float) -> tuple[tuple[float, float, float], ...]:
    return tuple((amplitude * rng.uniform(0.5, 1.0), p * rng.uniform(0.8, 1.25), rng.uniform(0, 2 * math.pi)) for p in periods)


def _floor(value: float, places: int) -> Decimal:
    """A register as a meter shows it: truncated to ``places`` decimals."""
    return Decimal(repr(value)).quantize(Decimal(1).scaleb(-places), rounding=ROUND_FLOOR)


@attrs.frozen
class UsageProfile:
    """What flows through one meter, as smooth seeded functions of time.

    Water and gas follow a household's day (little at night, peaks in the morning and
    evening); a heating circuit circulates steadily with a supply temperature that
    follows the weather and a return a few kelvin cooler (warmer for a cooling meter).
    """

    kind: str  #: "water", "gas", "heat" or "cooling"
    mean_flow: float  #: m³/h, averaged over a day
    waves: tuple[tuple[float, float, float], ...] = ()
    supply: float = 0.0  #: °C, mean supply (flow) temperature of a heat/cooling circuit
    delta: float = 0.0  #: K, mean |supply - return|
    temperature_waves: tuple[tuple[float, float, float], ...] = ()

    @classmethod
    def random(cls, rng: random.Random, meter_type: int) -> UsageProfile:
        family = family_of(meter_type)
        if family is Family.HEAT:
            cooling = meter_type == codec.MeterType.COOLING
            return cls(
                kind="cooling" if cooling else "heat",
                mean_flow=rng.uniform(0.3, 1.2),
                waves=_waves(rng, (1800, 7200), 0.10),
                supply=rng.uniform(6.0, 9.0) if cooling else rng.uniform(55.0, 70.0),
                delta=rng.uniform(4.0, 6.0) if cooling else rng.uniform(10.0, 22.0),
                temperature_waves=_waves(rng, (3600, 21600), 1.5),
            )
        if family is Family.GAS:
            return cls(kind="gas", mean_flow=rng.uniform(0.03, 0.10), waves=_waves(rng, (900, 2700, 9000), 0.3))
        return cls(kind="water", mean_flow=rng.uniform(0.008, 0.025), waves=_waves(rng, (300, 1300, 5100), 0.4))

    def flow(self, t: datetime) -> float:
        """m³/h through the meter at ``t`` with the valve open (never negative)."""
        s = _seconds(t)
        if self.kind in ("heat", "cooling"):
            return max(0.0, self.mean_flow * (1 + _wave(self.waves, s)))
        h = _hour_of_day(t)
        shape = 0.08 + 1.0 * _gauss(h, 7.0, 1.0) + 0.4 * _gauss(h, 12.5, 1.2) + 1.2 * _gauss(h, 20.0, 1.6)
        return max(0.0, self.mean_flow * shape / 0.45 * (1 + _wave(self.waves, s)))

    def temperatures(self, t: datetime) -> tuple[float, float]:
        """(supply, return) in °C of a heat or cooling circuit."""
        supply = self.supply + _wave(self.temperature_waves, _seconds(t))
        if self.kind == "cooling":
            return supply, supply + self.delta
        return supply, supply - self.delta


class SimulatedCjt188Meter:
    """One CJ/T 188 meter: registers that advance with its clock, and a frame handler.

    ``clock`` returns the current wall-clock time (a naive local ``datetime``); the meter's
    own clock is that plus ``clock_offset``. ``handle`` answers a decoded request with the
    encoded reply frames; it applies the ``BAD_CHECKSUM`` and ``WRONG_ADDRESS`` faults and
    stays silent for ``SILENCE``; the bus applies the other wire faults. ``di_order`` is
    the DI byte order of the replies (None: the order the request used). Thread-safe.

    Conditions a test injects: ``battery_low`` (ST bit D2), :meth:`leak` (a constant flow
    day and night), :meth:`set_valve` and ``valve_fault`` (ST D1 D0; a shut valve stops
    every flow, the leak's too).
    """

    protocol = "cjt188"

    def __init__(
        self,
        address: str,
        *,
        meter_type: int = codec.MeterType.COLD_WATER,
        seed: int | str = 0,
        clock: Callable[[], datetime] = datetime.now,
        fault: Fault | str | None = None,
        clock_offset: timedelta = timedelta(0),
        preamble: int = 2,
        di_order: DiOrder | str | None = None,
        valve_open: bool = True,
        battery_low: bool = False,
        profile: UsageProfile | None = None,
        volume_m3: float | None = None,
        energy_kwh: float | None = None,
        volume_unit: int = data.UNIT_M3,
        energy_unit: int = data.UNIT_KWH,
        power_unit: int = data.UNIT_KW,
        settlement_day: int = 1,
        clock_set: bool = True,
        settings: SerialSettings | None = None,
    ) -> None:
        if len(address) != 14 or not address.isdigit():
            raise ValueError(f"simulated CJ/T 188 meter address must be 14 decimal digits, got {address!r}")
        family = family_of(meter_type)  # "other" meters (40h-49h) answer everything but 901F
        if volume_unit not in _M3_IN or energy_unit not in _KWH_IN or power_unit not in _KW_IN:
            raise ValueError("volume_unit, energy_unit and power_unit must be unit codes of volume, energy and power")
        if not 1 <= settlement_day <= 28:
            raise ValueError(f"settlement_day must be 1..28, got {settlement_day!r}")
        rng = random.Random(f"cjt188-sim:{seed}:{address}")
        self.address = address
        self.meter_type = int(meter_type)
        self.family = family
        self.fault = as_fault(fault)
        self.clock = clock
        self.clock_offset = clock_offset
        self.preamble = preamble
        self.di_order = None if di_order is None else DiOrder(di_order)
        self.valve_open = valve_open
        self.valve_fault = False  #: a stuck valve: ST says abnormal and valve commands are refused
        self.battery_low = battery_low
        self.profile = profile or UsageProfile.random(rng, meter_type)
        self.volume_unit = volume_unit
        self.energy_unit = energy_unit
        self.power_unit = power_unit
        self.settlement_day = settlement_day
        self.clock_set = clock_set  #: False: the real-time field is all zero (a clock never set)
        self.settings = settings
        self.unsupported_dis: set[int] = set()  #: DIs answered with an abnormal reply
        self._leak = 0.0  # m³/h flowing on top of the profile (:meth:`leak`)
        self._lock = threading.RLock()
        heat = family is Family.HEAT
        self._volume = volume_m3 if volume_m3 is not None else rng.uniform(50, 3000) if heat else rng.uniform(5, 900)
        self._energy = (energy_kwh if energy_kwh is not None else rng.uniform(500, 60000)) if heat else 0.0
        # settlement-date values: what the registers showed a few weeks' use ago
        self._settlement_volume = max(0.0, self._volume - rng.uniform(0.5, 6.0) * (40 if heat else 1))
        self._settlement_energy = max(0.0, self._energy - rng.uniform(50, 2000))
        self._hours_base = rng.randint(100, 40000)
        self._t0 = self._wall(clock())
        self._t = self._t0  # registers are integrated up to this time

    # -- state --------------------------------------------------------------------------

    @staticmethod
    def _wall(t: datetime) -> datetime:
        return t.replace(tzinfo=None)  # meters keep local wall-clock time

    def now(self) -> datetime:
        """The meter's own clock."""
        with self._lock:
            return self._wall(self.clock()) + self.clock_offset

    def _flow_at(self, t: datetime) -> float:
        """m³/h through the meter: the usage and any leak, nothing while the valve is shut."""
        return self.profile.flow(t) + self._leak if self.valve_open and not self.valve_fault else 0.0

    def _power_at(self, t: datetime) -> float:
        """Heat (or cooling) power in kW: flow × |ΔT| × the heat capacity of water."""
        supply, back = self.profile.temperatures(t)
        return self._flow_at(t) * abs(supply - back) * WATER_HEAT_CAPACITY

    def _advance(self) -> datetime:
        """Integrate the registers up to the clock's current time; returns that time."""
        now = self._wall(self.clock())
        t = self._t
        while t < now:
            cell = _EPOCH + ((t - _EPOCH) // STEP) * STEP
            end = min(cell + STEP, now)
            hours = (end - t).total_seconds() / 3600
            self._volume += self._flow_at(cell) * hours
            if self.family is Family.HEAT:
                self._energy += self._power_at(cell) * hours
            meter_end = end + self.clock_offset
            if end == cell + STEP and meter_end.day == self.settlement_day and meter_end.hour == 0 and meter_end.minute == 0:
                self._settlement_volume, self._settlement_energy = self._volume, self._energy
            t = end
        self._t = max(self._t, now)
        return now

    @property
    def status(self) -> int:
        """The status word ST: valve bits D1 D0 and battery bit D2 (README §2.2)."""
        with self._lock:
            if self.valve_fault:
                word = ST_VALVE_FAULT | ST_VALVE_CLOSED
            else:
                word = 0 if self.valve_open else ST_VALVE_CLOSED
            return word | (ST_BATTERY_LOW if self.battery_low else 0)

    def _volume_amount(self, m3: float) -> Amount:
        return Amount(_floor(m3 * _M3_IN[self.volume_unit] % _ROLLOVER, 2), self.volume_unit)

    def _energy_amount(self, kwh: float) -> Amount:
        return Amount(_floor(kwh * _KWH_IN[self.energy_unit] % _ROLLOVER, 2), self.energy_unit)

    def record(self) -> FlowRecord | HeatRecord:
        """The 901F record the meter would send now (what a test compares a reading with)."""
        with self._lock:
            if self.family is Family.OTHER:
                raise NotSupported(f"CJ/T 188 defines no metering data for a {codec.type_name(self.meter_type)}")
            now = self._advance()
            meter_time = (now + self.clock_offset).replace(microsecond=0) if self.clock_set else data.NoTime.UNSET
            if self.family is not Family.HEAT:
                return FlowRecord(
                    current=self._volume_amount(self._volume),
                    settlement=self._volume_amount(self._settlement_volume),
                    clock=meter_time,
                    status=self.status,
                )
            supply, back = self.profile.temperatures(now)
            return HeatRecord(
                settlement_heat=self._energy_amount(self._settlement_energy),
                current_heat=self._energy_amount(self._energy),
                heat_power=Amount(_floor(self._power_at(now) * _KW_IN[self.power_unit], 2), self.power_unit),
                flow_rate=Amount(_floor(self._flow_at(now), 4), data.UNIT_M3_PER_H),
                volume=self._volume_amount(self._volume),
                flow_temperature=_floor(supply, 2),
                return_temperature=_floor(back, 2),
                operating_hours=Decimal(self._hours_base + int((now - self._t0).total_seconds() // 3600)),
                clock=meter_time,
                status=self.status,
            )

    def set_valve(self, open_: bool) -> None:
        """Open or close the valve by hand (consumption so far counts with the old state)."""
        with self._lock:
            self._advance()
            self.valve_open = open_

    def leak(self, flow_m3_per_h: Decimal | float | None) -> None:
        """A leak (a dripping tap, a running cistern): ``flow_m3_per_h`` flows on top of the
        usage profile day and night, until None stops it; a closed valve stops it too.
        Flow so far counts as it was."""
        if flow_m3_per_h is not None and float(flow_m3_per_h) < 0:
            raise ValueError(f"a leak flows forward: m³/h must not be negative, got {flow_m3_per_h!r}")
        with self._lock:
            self._advance()
            self._leak = 0.0 if flow_m3_per_h is None else float(flow_m3_per_h)

    # -- the protocol ------------------------------------------------------------------

    def new_decoder(self) -> StreamDecoder:
        return StreamDecoder()

    def matches(self, frame: Frame) -> bool:
        """Whether a request is for this meter: its type (or AAh) and its address, where AA
        bytes stand for any byte (AA×7: the one meter of this type on the line)."""
        return frame.meter_type in (self.meter_type, WILDCARD_TYPE) and codec.address_matches(frame.address, self.address)

    def handle(self, frame: Frame) -> list[bytes]:
        """Encoded reply frames to one request (none for other meters and for replies)."""
        with self._lock:
            if self.fault is Fault.SILENCE or frame.is_reply or not self.matches(frame):
                return []
            return [self._encode(r) for r in self._answer(frame)]

    def _answer(self, frame: Frame) -> list[Frame]:
        handler = _HANDLERS.get(frame.function)
        try:
            body = codec.parse_body(frame)
        except FrameError as exc:
            logger.info("meter %s: malformed request %r: %s", self.address, frame, exc)
            return [self._abnormal(frame, frame.data[0] if frame.data else 0)]
        if handler is None or body.di in self.unsupported_dis:
            logger.info("meter %s: function %02Xh DI %04X not served", self.address, frame.function, body.di)
            return [self._abnormal(frame, body.ser)]
        return handler(self, frame, body)

    def _abnormal(self, frame: Frame, ser: int) -> Frame:
        # The standard has no error code of its own: an abnormal reply carries SER and the
        # meter's current ST (KingDa's CJT8188_ErrACK_Struct).
        return codec.abnormal_reply(self.meter_type, self.address, frame.function, ser, self.status)

    def _order(self, body: codec.Body) -> DiOrder:
        return self.di_order or body.di_order

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

    def _read(self, frame: Frame, body: codec.Body) -> list[Frame]:
        if body.di != DI_METERING or self.family is Family.OTHER:
            return [self._abnormal(frame, body.ser)]
        payload = data.encode_record(self.record())
        return [codec.read_reply(self.meter_type, self.address, DI_METERING, body.ser, payload, di_order=self._order(body))]

    def _read_address(self, frame: Frame, body: codec.Body) -> list[Frame]:
        if body.di != DI_ADDRESS:
            return [self._abnormal(frame, body.ser)]
        return [codec.read_address_reply(self.meter_type, self.address, body.ser, di_order=self._order(body))]

    def _write(self, frame: Frame, body: codec.Body) -> list[Frame]:
        if body.di != DI_VALVE or len(body.payload) != 1 or body.payload[0] not in (VALVE_OPEN, VALVE_CLOSE) or self.valve_fault:
            return [self._abnormal(frame, body.ser)]
        self.set_valve(body.payload[0] == VALVE_OPEN)
        return [codec.write_reply(self.meter_type, self.address, DI_VALVE, body.ser, self.status, di_order=self._order(body))]

    def _write_address(self, frame: Frame, body: codec.Body) -> list[Frame]:
        try:
            _, new = codec.parse_write_address_request(frame)
        except FrameError:
            return [self._abnormal(frame, body.ser)]
        if not new.isdigit():
            return [self._abnormal(frame, body.ser)]
        self.address = new  # the answer comes from the new address [U]
        return [codec.write_address_reply(self.meter_type, self.address, body.ser, di_order=self._order(body))]

    def __repr__(self) -> str:
        fault = f" fault={self.fault.value}" if self.fault else ""
        return f"<SimulatedCjt188Meter {self.address} type {self.meter_type:02X}h{fault}>"


_HANDLERS: dict[int, Callable[[SimulatedCjt188Meter, Frame, codec.Body], list[Frame]]] = {
    Control.READ_DATA: SimulatedCjt188Meter._read,
    Control.READ_ADDRESS: SimulatedCjt188Meter._read_address,
    Control.WRITE_DATA: SimulatedCjt188Meter._write,
    Control.WRITE_ADDRESS: SimulatedCjt188Meter._write_address,
}


def make_meters(
    count: int,
    *,
    first_address: str = "00000000000001",
    meter_types: Sequence[int] = (codec.MeterType.COLD_WATER,),
    seed: int = 0,
    clock: Callable[[], datetime] = datetime.now,
    **options: Any,
) -> list[SimulatedCjt188Meter]:
    """``count`` meters with consecutive addresses, their types taken in turn from
    ``meter_types``; each with its own preamble (0-4 FE) and a clock a little off
    (±90 s), all deterministic in ``seed``. ``options`` go to every meter."""
    if not first_address.isdigit() or len(first_address) != 14:
        raise ValueError(f"first_address must be 14 decimal digits, got {first_address!r}")
    if not meter_types:
        raise ValueError("meter_types must name at least one meter type")
    rng = random.Random(f"cjt188-sim-site:{seed}")
    meters = []
    for i in range(count):
        kw: dict[str, Any] = {
            "meter_type": meter_types[i % len(meter_types)],
            "preamble": (2, 3, 4, 0)[i % 4],  # meters answer with 0-4 FE (§2.3, the vectors)
            "clock_offset": timedelta(seconds=round(rng.uniform(-90, 90))),
        }
        kw.update(options)
        meters.append(SimulatedCjt188Meter(f"{int(first_address) + i:014d}", seed=seed, clock=clock, **kw))
    return meters


def slow_delay(settings: SerialSettings) -> float:
    """How late a ``SLOW`` meter answers: twice the longest a master must wait (the 500 ms
    response delay plus the longest frame), so any sane timeout expires."""
    return 2 * (MAX_RESPONSE_DELAY + timing.frame_time(codec.MAX_FRAME_LEN + len(codec.PREAMBLE), settings))


def start_cjt188_sim(
    n: int = 5,
    *,
    baudrate: int = 2400,
    faults: Mapping[str, Fault | str] | None = None,
    seed: int = 0,
    clock: Callable[[], datetime] = datetime.now,
    first_address: str = "00000000000001",
    meter_types: Sequence[int] = (codec.MeterType.COLD_WATER,),
    turnaround: float | tuple[float, float] = DEFAULT_TURNAROUND,
    noise_interval: float | None = None,
    **meter_options: Any,
) -> PtyBus:
    """``n`` simulated meters on a started :class:`PtyBus` at ``baudrate`` 8E1.

    ``faults`` maps addresses to faults (``{"00000000000002": Fault.SILENCE}``). The
    caller stops the bus (or uses it as a context manager); ``bus.port`` is the path.
    """
    meters = make_meters(n, first_address=first_address, meter_types=meter_types, seed=seed, clock=clock, **meter_options)
    settings = SerialSettings(baudrate, **CHARACTER_FORMAT)
    return simulator.start_bus(
        meters, settings, faults=faults, turnaround=turnaround, seed=seed, slow_delay=slow_delay(settings), noise_interval=noise_interval
    )


class Cjt188Simulator:
    """The simulated CJ/T 188 meters as :class:`meterhub.api.MeterSimulator` offers them to
    ``meterhub sim bus`` and the demo. Options (text, as on the command line):
    ``meter_type`` (hex; several, joined by ``+``, are taken in turn: ``10+30+20``; default
    10 cold water) and ``first_address`` (14 digits)."""

    protocol = "cjt188"
    description = "CJ/T 188-2004 water, gas and heat meters (valve, battery, settlement values)"
    default_settings = SerialSettings(2400, **CHARACTER_FORMAT)

    def make(self, count: int, *, seed: int = 0, options: Mapping[str, str] | None = None) -> list[SimulatedCjt188Meter]:
        from .cjt188_driver import parse_meter_types

        options = dict(options or {})
        first = str(options.pop("first_address", "00000000000001"))
        types = parse_meter_types(options.pop("meter_type", "10"))
        if options:
            raise ValueError(f"unknown cjt188 simulator option(s): {', '.join(sorted(options))} (known: first_address, meter_type)")
        for meter_type in types:
            if family_of(meter_type) is Family.OTHER:
                raise ValueError(f"meterhub cannot read a {codec.type_name(meter_type)}; simulate water (1x), heat (2x) or gas (3x) meters")
        return make_meters(count, first_address=first, meter_types=types, seed=seed)

    def site_entry(self, device: SimulatedCjt188Meter) -> Mapping[str, Any]:
        return {
            "address": device.address,
            "protocol": self.protocol,
            "quantities": list(data.quantities_for(device.meter_type)),
            "options": {"meter_type": f"{device.meter_type:02X}"},
        }
