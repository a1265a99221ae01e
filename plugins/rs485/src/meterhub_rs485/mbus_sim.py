"""Simulated wired M-Bus slaves that answer real frames, built on :mod:`meterhub_rs485.mbus`.

A :class:`SimulatedMbusSlave` is a water, hot-water, gas, heat or electricity meter whose
registers advance with its clock. It answers SND_NKE and selections with E5, REQ_UD2
with RSP_UD telegrams built by our encoder (split over several telegrams ending in DIF
1Fh when ``records_per_telegram`` is set, with the FCB rules of EN 13757-2: a request
with the same FCB as the last one gets the last telegram again), and keeps the selection
state of secondary addressing (select, deselect by another selection or SND_NKE to 253).
Put slaves on a :class:`~meterhub.simulator.PtyBus` (:func:`start_mbus_sim`), alone or
next to DL/T 645 meters: devices of each protocol get their own stream decoder, and the
bus garbles answers that overlap, as several slaves answering one selection do.

Every register is a closed-form function of the seed and of the time the injected
``clock`` returns, so tests control time and get the same numbers every run.
"""

from __future__ import annotations

import logging
import math
import random
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import attrs

from meterhub import timing
from meterhub.errors import FrameError
from meterhub.model import SerialSettings
from meterhub.simulator import DEFAULT_TURNAROUND, Fault, PtyBus, as_fault, encode_with_fault, start_bus

from . import mbus
from .mbus import Ack, Coding, Control, Function, LongFrame, LongHeader, Record, ShortFrame, StreamDecoder, Telegram

__all__ = ["KINDS", "Fault", "MbusSimulator", "SimulatedMbusSlave", "make_slaves", "slow_delay", "start_mbus_sim"]

logger = logging.getLogger(__name__)

#: EN 13757-2: the slave's answer window and the usual character format.
CHARACTER_FORMAT = {"bytesize": 8, "parity": "E", "stopbits": 1}
MAX_RESPONSE_BITS = 330
MAX_RESPONSE_EXTRA_S = 0.050

#: Registers integrate from this instant (a register's value depends only on time).
EPOCH = datetime(2020, 1, 1)

#: The kinds of meter and the medium byte their header carries (EN 13757-3 Table 3).
KINDS: Mapping[str, int] = {"water": 0x07, "hot_water": 0x06, "gas": 0x03, "heat": 0x04, "electricity": 0x02}

#: The kinds :func:`make_slaves` hands out in turn.
DEFAULT_KINDS = ("water", "heat", "electricity", "gas", "hot_water")

#: Specific heat of water, kWh per m3 and kelvin (≈ 4.19 MJ/(m3·K)), to tie the simulated
#: heat meter's energy to its volume and temperature difference.
WATER_KWH_PER_M3_K = 1.163

_REQ_UD2 = Control.REQ_UD2 & mbus.FUNCTION_MASK
_REQ_UD1 = Control.REQ_UD1 & mbus.FUNCTION_MASK


@attrs.frozen
class _Wave:
    """A slowly varying rate ``mean·(1 + depth·sin(2πh/period + phase))`` and its exact integral."""

    mean: float
    depth: float
    period: float  #: hours
    phase: float

    def rate(self, h: float) -> float:
        return self.mean * (1 + self.depth * math.sin(2 * math.pi * h / self.period + self.phase))

    def total(self, h: float) -> float:
        """∫₀ʰ rate: never decreasing, since depth < 1."""
        k = 2 * math.pi / self.period
        return self.mean * (h + self.depth / k * (math.cos(self.phase) - math.cos(k * h + self.phase)))


def _wave(rng: random.Random, mean: float) -> _Wave:
    return _Wave(mean * rng.uniform(0.7, 1.3), rng.uniform(0.3, 0.8), rng.uniform(5, 30), rng.uniform(0, 2 * math.pi))


def _floor(value: float, decimals: int) -> Decimal:
    """A register value cut (not rounded) to its display resolution, as meters do."""
    return Decimal(math.floor(value * 10**decimals)).scaleb(-decimals)


class SimulatedMbusSlave:
    """One M-Bus slave: registers that advance with its clock, and a frame handler.

    ``address`` (what :class:`~meterhub.simulator.PtyBus` looks devices up by) is the
    16-digit secondary address; ``primary`` the primary address (0 = unconfigured).
    ``handle`` applies ``BAD_CHECKSUM`` (CS + 1 on RSP_UD; E5 has no checksum) and
    ``WRONG_ADDRESS`` (another A field and identification in RSP_UD) itself and answers
    nothing when ``SILENCE``; the bus applies the other wire faults. Thread-safe.
    """

    protocol = "mbus"

    def __init__(
        self,
        id: str,
        *,
        primary: int = 0,
        kind: str = "water",
        manufacturer: str = "MHB",
        version: int = 1,
        seed: int | str = 0,
        clock: Callable[[], datetime] = datetime.now,
        fault: Fault | str | None = None,
        records_per_telegram: int | None = None,
        extra_records: Sequence[Record] = (),
        energy_unit: str = "Wh",
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown simulated M-Bus meter kind {kind!r} (known: {', '.join(KINDS)})")
        if not 0 <= primary <= mbus.PRIMARY_MAX:
            raise ValueError(f"primary address must be 0-250, got {primary}")
        if records_per_telegram is not None and records_per_telegram < 1:
            raise ValueError("records_per_telegram must be at least 1")
        if energy_unit not in ("Wh", "J"):
            raise ValueError(f"energy_unit must be 'Wh' or 'J', got {energy_unit!r}")
        self.header = LongHeader(id, mbus.manufacturer_code(manufacturer), version, KINDS[kind])
        self.id = self.header.id
        self.address = self.header.secondary_address
        self.primary = primary
        self.kind = kind
        self.clock = clock
        self.fault = as_fault(fault)
        self.records_per_telegram = records_per_telegram
        self.extra_records = tuple(extra_records)
        self.energy_unit = energy_unit
        self.selected = False
        self.requests: list[mbus.Frame] = []  #: every frame addressed to this slave, in order
        self.repeats = 0  #: REQ_UD2 answered by repeating the last telegram (FCB unchanged)
        rng = random.Random(f"mbus-sim:{seed}:{self.id}")
        if kind == "electricity":
            self._flow = _wave(rng, 0.6)  # kW
        elif kind == "heat":
            self._flow = _wave(rng, 4.0)  # kW of heat
        else:
            self._flow = _wave(rng, 0.04 if kind != "gas" else 0.15)  # m3/h
        self._base = rng.uniform(100, 5000)
        self._delta_t = rng.uniform(15, 25)  # K, heat meters
        self._flow_temperature = rng.uniform(60, 75)  # °C, heat meters
        self._lock = threading.RLock()
        self._access_no = rng.randrange(256)
        self._queue: list[Telegram] = []  # telegrams of the readout still to send
        self._last: LongFrame | None = None  # the last RSP_UD, for a repeated request
        self._last_fcb: bool | None = None  # None after SND_NKE / selection: the next request is new

    def __repr__(self) -> str:
        fault = f" fault={self.fault.value}" if self.fault else ""
        return f"<SimulatedMbusSlave {self.kind} {self.address} primary={self.primary}{fault}>"

    # -- registers ---------------------------------------------------------------------

    def _hours(self) -> float:
        return max(0.0, (self.clock().replace(tzinfo=None) - EPOCH).total_seconds() / 3600)

    def registers(self) -> dict[str, Decimal | datetime]:
        """The current register values, at the resolution the telegram carries them.

        Keys: ``volume`` (m3), ``flow`` (m3/h), ``energy`` (kWh, or GJ when the meter
        counts in J), ``energy_t1``/``energy_t2`` (electricity), ``power`` (kW),
        ``flow_temperature``/``return_temperature`` (°C), ``temperature_difference`` (K),
        ``voltage`` (V), ``current`` (A), ``clock``.
        """
        with self._lock:
            h = self._hours()
            now = self.clock().replace(tzinfo=None, second=0, microsecond=0)
            rate, total = self._flow.rate(h), self._flow.total(h)
            out: dict[str, Decimal | datetime] = {"clock": now}
            if self.kind in ("water", "hot_water", "gas"):
                out["volume"] = _floor(self._base + total, 3)
                out["flow"] = _floor(rate, 3)
            elif self.kind == "heat":
                kwh = self._base * 10 + total
                out["energy"] = _floor(kwh, 1) if self.energy_unit == "Wh" else _floor(kwh * 0.0036, 3)
                out["volume"] = _floor(self._base + total / (WATER_KWH_PER_M3_K * self._delta_t), 2)
                out["power"] = _floor(rate, 1)
                out["flow"] = _floor(rate / (WATER_KWH_PER_M3_K * self._delta_t), 3)
                flow_t = self._flow_temperature + 2 * math.sin(2 * math.pi * h / 7)
                out["flow_temperature"] = _floor(flow_t, 1)
                out["return_temperature"] = _floor(flow_t - self._delta_t, 1)
                out["temperature_difference"] = out["flow_temperature"] - out["return_temperature"]
            else:
                energy = _floor(self._base * 4 + total, 1)  # kWh, 0.1 kWh resolution
                t1 = _floor(float(energy) * 0.6, 1)
                out.update(energy=energy, energy_t1=t1, energy_t2=energy - t1, power=_floor(rate, 3))
                volts = 230 + 4 * math.sin(2 * math.pi * h / 3)
                out["voltage"] = _floor(volts, 1)
                out["current"] = _floor(rate * 1000 / volts, 3)
            return out

    def records(self) -> list[Record]:
        """The records of one readout, built with our encoder (the meter's own layout)."""
        r = self.registers()
        rec = mbus.make_record
        out = [rec(Coding.BCD8, b"\x78", Decimal(int(self.id)))] if self.id.isdigit() else []  # fabrication number
        if self.kind in ("water", "hot_water", "gas"):
            out += [
                rec(Coding.BCD8, b"\x13", r["volume"]),  # VIF 13h: litres (m3 × 10^-3)
                rec(Coding.BCD6, b"\x3B", r["flow"]),  # VIF 3Bh: m3/h × 10^-3
                rec(Coding.BCD8, b"\x13", _floor(float(r["volume"]) * 0.9, 3), storage=1),  # at the last due date
                rec(Coding.BCD6, b"\x3B", r["flow"] + Decimal("0.050"), function=Function.MAXIMUM),
            ]
        elif self.kind == "heat":
            if self.energy_unit == "Wh":
                out.append(rec(Coding.BCD8, b"\x05", mbus.shift(r["energy"], 3)))  # VIF 05h: 100 Wh
            else:
                out.append(rec(Coding.BCD8, b"\x0E", mbus.shift(r["energy"], 9)))  # VIF 0Eh: MJ
            out += [
                rec(Coding.BCD8, b"\x14", r["volume"]),  # VIF 14h: 10^-2 m3
                rec(Coding.BCD6, b"\x2C", mbus.shift(r["power"], 3)),  # VIF 2Ch: 10 W
                rec(Coding.BCD6, b"\x3B", r["flow"]),
                rec(Coding.BCD4, b"\x59", r["flow_temperature"]),  # VIF 59h: 10^-2 °C
                rec(Coding.BCD4, b"\x5D", r["return_temperature"]),
                rec(Coding.BCD4, b"\x61", r["temperature_difference"]),  # VIF 61h: 10^-2 K
            ]
        else:
            out += [
                rec(Coding.INT32, b"\x05", mbus.shift(r["energy"], 3)),  # VIF 05h: 100 Wh
                rec(Coding.INT32, b"\x05", mbus.shift(r["energy_t1"], 3), tariff=1),
                rec(Coding.INT32, b"\x05", mbus.shift(r["energy_t2"], 3), tariff=2),
                rec(Coding.INT32, b"\x2B", mbus.shift(r["power"], 3)),  # VIF 2Bh: W
                rec(Coding.INT16, b"\xFD\x48", r["voltage"]),  # FD 48h: 10^-1 V
                rec(Coding.INT32, b"\xFD\x59", r["current"]),  # FD 59h: 10^-3 A
            ]
        out.append(rec(Coding.INT32, b"\x6D", r["clock"]))  # type F date and time
        out += self.extra_records
        return out

    # -- the protocol -----------------------------------------------------------------------

    def new_decoder(self) -> StreamDecoder:
        return StreamDecoder()

    def handle(self, frame: Any) -> list[bytes]:
        """Encoded answers to one request (none for broadcasts without reply and other slaves)."""
        with self._lock:
            if self.fault is Fault.SILENCE:
                return []
            if isinstance(frame, ShortFrame):
                return self._short(frame)
            if isinstance(frame, LongFrame) and not frame.is_response:
                return self._long(frame)
            return []  # an E5 or another slave's answer

    def _mine(self, address: int) -> bool:
        return address == self.primary or (address == mbus.ADDRESS_NETWORK and self.selected) or address in (
            mbus.BROADCAST_REPLY,
            mbus.BROADCAST,
        )

    def _short(self, frame: ShortFrame) -> list[bytes]:
        if not self._mine(frame.address):
            return []
        self.requests.append(frame)
        if frame.control == Control.SND_NKE:
            self._reset_link()
            if frame.address == mbus.ADDRESS_NETWORK:
                self.selected = False  # SND_NKE to 253 deselects
            return [] if frame.address == mbus.BROADCAST else [self._ack()]
        if frame.address == mbus.BROADCAST:
            return []
        if frame.function == _REQ_UD2:
            return [self._encode(self._class2(frame))]
        if frame.function == _REQ_UD1:
            return [self._ack()]  # no class 1 (alarm) data [U: some slaves send RSP_UD instead]
        return []

    def _long(self, frame: LongFrame) -> list[bytes]:
        if frame.address == mbus.ADDRESS_NETWORK and frame.ci == mbus.CI_SELECT:
            try:
                mask = mbus.parse_select(frame)
            except FrameError as exc:
                logger.info("slave %s ignores a malformed selection: %s", self.address, exc)
                return []
            self.requests.append(frame)
            # EN 13757-3 §11.4: a matching selection selects, any other one deselects.
            self.selected = mbus.secondary_matches(mask, self.address)
            if not self.selected:
                return []
            self._reset_link()
            return [self._ack()]
        if not self._mine(frame.address):
            return []
        self.requests.append(frame)
        if frame.ci == mbus.CI_APPLICATION_RESET:
            self._reset_link()
        return [] if frame.address == mbus.BROADCAST else [self._ack()]

    def _reset_link(self) -> None:
        self._queue = []
        self._last = None
        self._last_fcb = None

    def _class2(self, frame: ShortFrame) -> LongFrame:
        if frame.fcv and self._last is not None and self._last_fcb is not None and frame.fcb == self._last_fcb:
            self.repeats += 1  # the master lost our answer: send the same telegram again
            return self._last
        if not self._queue:
            self._queue = self._readout()
        telegram = self._queue.pop(0)
        self._access_no = (self._access_no + 1) & 0xFF
        header = attrs.evolve(telegram.header, access_no=self._access_no) if isinstance(telegram.header, LongHeader) else telegram.header
        self._last = mbus.rsp_ud(self.primary, attrs.evolve(telegram, header=header))
        self._last_fcb = frame.fcb if frame.fcv else None
        return self._last

    def _readout(self) -> list[Telegram]:
        records = self.records()
        size = self.records_per_telegram or len(records) or 1
        chunks = [records[i : i + size] for i in range(0, len(records), size)] or [[]]
        return [
            Telegram(self.header, chunk, mbus.DIF_MORE_FOLLOWS if i < len(chunks) - 1 else None)
            for i, chunk in enumerate(chunks)
        ]

    def _ack(self) -> bytes:
        return mbus.encode(Ack())

    def _encode(self, frame: LongFrame) -> bytes:
        return encode_with_fault(frame, self.fault, mbus.encode, self._wrong)

    def _wrong(self, frame: LongFrame) -> LongFrame:
        """The answer of a slave that got its addresses wrong: another A field and ID."""
        data = bytearray(frame.data)
        if frame.ci == mbus.CI_RSP_LONG and data:
            data[0] = (data[0] & 0xF0) | ((data[0] & 0x0F) + 5) % 10
        return attrs.evolve(frame, address=(frame.address + 1) % (mbus.PRIMARY_MAX + 1), data=bytes(data))


def make_slaves(
    n: int,
    *,
    kinds: Sequence[str] = DEFAULT_KINDS,
    primary: bool = True,
    first_primary: int = 1,
    ids: Iterable[str] | None = None,
    seed: int = 0,
    clock: Callable[[], datetime] = datetime.now,
    **options: Any,
) -> list[SimulatedMbusSlave]:
    """``n`` slaves of the ``kinds`` in turn, with random distinct 8-digit IDs (or ``ids``)
    and consecutive primary addresses from ``first_primary`` (all 0 if not ``primary``)."""
    if primary and first_primary + n - 1 > mbus.PRIMARY_MAX:
        raise ValueError(f"{n} slaves from primary {first_primary} do not fit in 1-250")
    rng = random.Random(f"mbus-sim-site:{seed}")
    chosen = list(ids) if ids is not None else []
    if ids is None:
        taken: set[str] = set()
        while len(chosen) < n:
            candidate = f"{rng.randrange(10**8):08d}"
            if candidate not in taken:
                taken.add(candidate)
                chosen.append(candidate)
    if len(chosen) < n:
        raise ValueError(f"{n} slaves need {n} IDs, got {len(chosen)}")
    return [
        SimulatedMbusSlave(
            chosen[i], primary=first_primary + i if primary else 0, kind=kinds[i % len(kinds)], seed=seed, clock=clock, **options
        )
        for i in range(n)
    ]


def slow_delay(settings: SerialSettings) -> float:
    """How late a ``SLOW`` slave answers: twice the longest an M-Bus master waits (the
    answer window of 330 bit times + 50 ms plus the longest frame), so any timeout expires."""
    window = MAX_RESPONSE_BITS / settings.baudrate + MAX_RESPONSE_EXTRA_S
    return 2 * (window + timing.frame_time(mbus.MAX_FRAME_LEN, settings))


def start_mbus_sim(
    n: int = 5,
    *,
    baudrate: int = 2400,
    faults: Mapping[str, Fault | str] | None = None,
    seed: int = 0,
    clock: Callable[[], datetime] = datetime.now,
    turnaround: float | tuple[float, float] = DEFAULT_TURNAROUND,
    noise_interval: float | None = None,
    **slave_options: Any,
) -> PtyBus:
    """``n`` simulated slaves (see :func:`make_slaves`) on a started PtyBus at ``baudrate`` 8E1.

    ``faults`` maps secondary addresses to faults. The caller stops the bus (or uses it
    as a context manager); ``bus.port`` is the path to open.
    """
    slaves = make_slaves(n, seed=seed, clock=clock, **slave_options)
    settings = SerialSettings(baudrate, **CHARACTER_FORMAT)
    return start_bus(
        slaves, settings, faults=faults, turnaround=turnaround, seed=seed, slow_delay=slow_delay(settings), noise_interval=noise_interval
    )


#: What a site file reads from each kind of simulated slave.
SITE_QUANTITIES: Mapping[str, tuple[str, ...]] = {
    "water": ("water_volume", "meter_serial", "clock"),
    "hot_water": ("hot_water_volume", "meter_serial", "clock"),
    "gas": ("gas_volume", "meter_serial", "clock"),
    "heat": ("heat_energy", "heat_volume", "heat_power", "heat_flow", "flow_temperature", "return_temperature",
             "temperature_difference", "meter_serial", "clock"),
    "electricity": ("energy_import", "energy_import_t1", "energy_import_t2", "meter_serial", "clock"),
}


class MbusSimulator:
    """The simulated M-Bus slaves as :class:`meterhub.api.MeterSimulator` offers them to
    ``meterhub sim bus`` and the demo. Options: ``kinds`` (comma-separated, from
    water, hot_water, gas, heat, electricity; default all in turn), ``addressing``
    (``primary``: addresses 1, 2, ...; ``secondary``: every slave at primary 0, read by
    its 16-digit secondary address) and ``first_primary`` (default 1)."""

    protocol = "mbus"
    description = "wired M-Bus water, heat, gas and electricity meters (EN 13757)"
    default_settings = SerialSettings(2400, **CHARACTER_FORMAT)
    OPTIONS = ("kinds", "addressing", "first_primary")

    def make(self, count: int, *, seed: int = 0, options: Mapping[str, str] | None = None) -> list[SimulatedMbusSlave]:
        opts = dict(options or {})
        unknown = sorted(set(opts) - set(self.OPTIONS))
        if unknown:
            raise ValueError(f"unknown mbus simulator option(s): {', '.join(unknown)} (known: {', '.join(self.OPTIONS)})")
        kinds = tuple(k.strip() for k in str(opts.get("kinds", "")).split(",") if k.strip()) or DEFAULT_KINDS
        bad = [k for k in kinds if k not in KINDS]
        if bad:
            raise ValueError(f"unknown mbus meter kind(s) {', '.join(bad)} (known: {', '.join(KINDS)})")
        addressing = str(opts.get("addressing", "primary")).strip().lower()
        if addressing not in ("primary", "secondary"):
            raise ValueError(f"addressing must be primary or secondary, got {opts['addressing']!r}")
        try:
            first = int(opts.get("first_primary", 1))
        except ValueError:
            raise ValueError(f"first_primary must be a number 1-250, got {opts['first_primary']!r}") from None
        return make_slaves(count, kinds=kinds, primary=addressing == "primary", first_primary=first, seed=seed)

    def site_entry(self, device: SimulatedMbusSlave) -> Mapping[str, Any]:
        address = str(device.primary) if device.primary else device.address
        return {"address": address, "protocol": self.protocol, "quantities": list(SITE_QUANTITIES[device.kind])}
