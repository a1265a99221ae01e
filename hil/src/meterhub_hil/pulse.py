"""Pulse meters and collectors: S0 outputs (IEC 62053-31) and reed contacts counted by a collector.

A :class:`PulseCounter` turns edges into counts the way a collector's input stage does:
a pulse shorter than the minimum width is not counted (an S0 pulse is at least 30 ms, §8
of the protocols notes), edges closer than the debounce time to the last accepted edge
are contact bounce, and the meter constant (imp/kWh, imp/m3) turns counts into energy or
volume, exactly, in Decimal.

:class:`SimulatedPulseCollector` is such a collector on an RS485 bus: each input answers
DL/T 645-2007 as a sub-meter of its own address (the way many collectors present their
pulse channels), with the energy or volume and the raw count in registers a driver reads.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from decimal import ROUND_FLOOR, Decimal
from typing import Any

import attrs

from meterhub.errors import FrameError
from meterhub.model import SerialSettings
from meterhub.protocols import dlt645 as codec
from meterhub.protocols.dlt645 import Control, Frame, StreamDecoder
from meterhub.protocols.dlt645_data import DataItem, encode_value
from meterhub.simulator import Fault, encode_with_fault

from .bench import PulseInput
from .quantities import PULSE_COUNT

#: The counted pulses of an input, and the volume of a water/gas input: registers in the
#: DL/T 645-2007 vendor range (DI3 = 04, parameters; DI2 = A0, vendor). Energy inputs
#: answer the standard forward active energy register.
DI_PULSE_COUNT = 0x04A00101
DI_PULSE_VOLUME = 0x04A00103
#: The standard register every DL/T 645 master reads: forward active energy, total.
DI_ENERGY = 0x00010000

ITEMS = {
    DI_ENERGY: DataItem(DI_ENERGY, "forward active energy, total", "XXXXXX.XX", "kWh"),
    DI_PULSE_COUNT: DataItem(DI_PULSE_COUNT, "pulse count", "XXXXXXXX", "imp"),
    DI_PULSE_VOLUME: DataItem(DI_PULSE_VOLUME, "volume from pulses", "XXXXXX.XX", "m3"),
}

#: What a driver needs beyond the standard table to read a collector input.
DRIVER_ITEMS = {
    PULSE_COUNT.obis: {"di": f"{DI_PULSE_COUNT:08X}", "fmt": "XXXXXXXX", "unit": "imp", "name": "pulse count"},
    "8-0:1.0.0": {"di": f"{DI_PULSE_VOLUME:08X}", "fmt": "XXXXXX.XX", "unit": "m3", "name": "volume from pulses"},
}


#: Resolution of the energy and volume registers (XXXXXX.XX).
REGISTER_RESOLUTION = Decimal("0.01")


def register_value(value: Decimal) -> Decimal:
    """What a XXXXXX.XX register shows for ``value``: rounded down to 0.01, wrapping at 10**6."""
    return value.quantize(REGISTER_RESOLUTION, rounding=ROUND_FLOOR) % 10**6


class PulseCounter:
    """One pulse input: the meter constant, and the input stage's rules for what counts.

    * ``s0`` (IEC 62053-31): a pulse counts on its trailing edge if it was ON for at least
      ``min_width`` (30 ms by the standard; an electronic output on a bench may be faster).
    * ``reed``: a contact closure counts on its leading edge; edges within ``debounce`` of
      the last accepted edge are contact bounce and ignored (a lock-out debouncer, as in
      the s0_pulse vector: edges at 0, 2, 4, 6, 300, 302 ms with 20 ms give 2 closures).
    """

    def __init__(self, spec: PulseInput) -> None:
        self.spec = spec
        self.count = 0
        self.rejected_short = 0  #: S0 pulses shorter than min_width
        self.bounces = 0  #: edges ignored as contact bounce
        self.level = False  #: the input's level as last seen, bounces included
        self._rise: float | None = None
        self._accepted: float | None = None  #: time of the last edge that was not bounce
        self._last_pulse: float | None = None
        self.interval: float | None = None  #: seconds between the last two counted pulses
        self._lock = threading.Lock()

    def edge(self, at: float, level: bool) -> None:
        """The input went to ``level`` at time ``at`` (seconds, any monotonic clock)."""
        with self._lock:
            if level == self.level:
                return
            self.level = level
            if self._accepted is not None and at - self._accepted < self.spec.debounce:
                self.bounces += 1
                return
            self._accepted = at
            if level:
                self._rise = at
                if self.spec.kind == "reed":
                    self._count(at)
            elif self.spec.kind == "s0" and self._rise is not None:
                if at - self._rise + 1e-9 < self.spec.min_width:
                    self.rejected_short += 1
                else:
                    self._count(at)

    def _count(self, at: float) -> None:
        if self._last_pulse is not None:
            self.interval = at - self._last_pulse
        self._last_pulse = at
        self.count += 1

    @property
    def value(self) -> Decimal:
        """Energy (kWh) or volume (m3): count / constant, exact."""
        return Decimal(self.count) / Decimal(self.spec.constant)

    @property
    def power_w(self) -> Decimal | None:
        """Mean power between the last two pulses, P[W] = 3.6e6 / (constant × Δt) (kWh inputs)."""
        if not self.interval:
            return None
        return Decimal("3600000") / (Decimal(self.spec.constant) * Decimal(repr(self.interval)))


class PulseInputMeter:
    """One input of a simulated collector, answering DL/T 645 at its own address (a SimDevice)."""

    protocol = "dlt645"

    def __init__(self, collector: SimulatedPulseCollector, counter: PulseCounter) -> None:
        self.collector = collector
        self.counter = counter
        self.address = counter.spec.address
        self.fault: Fault | None = None
        self.settings: SerialSettings | None = None

    def new_decoder(self) -> StreamDecoder:
        return StreamDecoder()

    def handle(self, frame: Frame) -> list[bytes]:
        if self.fault is Fault.SILENCE or frame.is_reply or frame.address == codec.BROADCAST:
            return []
        if frame.address != self.address:
            return []
        if frame.function == Control.READ_ADDRESS:
            reply = codec.read_address_reply(self.address)
        elif frame.function == Control.READ:
            try:
                di = codec.parse_read_request(frame)
            except FrameError:
                return [codec.encode(codec.abnormal_reply(self.address, Control.READ, 0x01))]
            payload = self.payload(di)
            reply = (codec.read_reply(self.address, di, payload) if payload is not None
                     else codec.abnormal_reply(self.address, Control.READ, 0x02))
        else:
            reply = codec.abnormal_reply(self.address, frame.function, 0x01)
        # a collector input keeps its address whatever the fault: only BAD_CHECKSUM applies
        return [encode_with_fault(reply, self.fault, codec.encode, lambda r: r)]

    def payload(self, di: int) -> bytes | None:
        unit = self.counter.spec.unit
        if di == DI_PULSE_COUNT:
            return encode_value(ITEMS[di], self.counter.count % 10**8)  # 8 BCD digits, then it wraps
        wanted = {DI_ENERGY: "kWh", DI_PULSE_VOLUME: "m3"}.get(di)
        if wanted is None or wanted != unit:
            return None
        # a register shows what has been counted, to its resolution: round down, never up
        return encode_value(ITEMS[di], register_value(self.counter.value))


class SimulatedPulseCollector:
    """A pulse collector whose inputs are fed edges (by the virtual pulse generator) and
    which is read over RS485: ``devices`` go on a :class:`meterhub.simulator.PtyBus`."""

    def __init__(self, name: str, inputs: Mapping[int, PulseInput]) -> None:
        self.name = name
        self.counters = {n: PulseCounter(spec) for n, spec in inputs.items()}
        self.devices = [PulseInputMeter(self, c) for c in self.counters.values()]

    def edge(self, number: int, at: float, level: bool) -> None:
        self.counters[number].edge(at, level)

    def listener(self, number: int) -> Any:
        """A callback ``(at, level)`` for one input, for whatever produces the edges."""
        counter = self.counters[number]
        return counter.edge


def driver_items() -> Mapping[str, Any]:
    """The DL/T 645 profile (extra data items) that reads collector inputs, for a driver variant."""
    return dict(DRIVER_ITEMS)


@attrs.frozen
class Injected:
    """What the bench put on an input, to compare with what the collector reports."""

    pulses: int
    constant: int

    @property
    def value(self) -> Decimal:
        return Decimal(self.pulses) / Decimal(self.constant)
