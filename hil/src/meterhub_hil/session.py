"""An opened bench: instruments by name, the same objects whether the bench is real or virtual.

A test asks for ``bench.adapter("adapter-a")`` or ``bench.pulse_generator()``; it never
knows which kind of bench it runs on, except through :attr:`Bench.features`, which the
pytest plugin's markers use to skip what a bench lacks.
"""

from __future__ import annotations

import logging
from typing import Any

from meterhub.model import SerialSettings

from . import bench as b
from .instruments import Frame, PulseGenerator, Rs485Adapter, adapter_resource, resource_manager
from .virtual import VirtualBench

log = logging.getLogger(__name__)

#: Features a test may require with ``@pytest.mark.needs(...)``.
FEATURES = {
    "rs485": "an RS485 adapter",
    "two-adapters": "two adapters on one pair (a master and a meter port)",
    "monitor": "a third adapter on a pair to watch the wire",
    "noise": "an adapter on a pair to inject noise",
    "pulse": "a pulse generator wired to a pulse collector",
    "virtual": "the virtual bench",
    "real": "real hardware",
}


class Bench:
    """Instruments of one bench file, opened on demand and closed together."""

    def __init__(self, spec: b.BenchSpec) -> None:
        self.spec = spec
        self.virtual: VirtualBench | None = None
        self.frames: list[Frame] = []  #: every frame an adapter sent or saw, in order
        self._rm: Any = None
        self._adapters: dict[str, Rs485Adapter] = {}
        self._generators: dict[str, PulseGenerator] = {}

    def open(self) -> Bench:
        if self.spec.virtual:
            self.virtual = VirtualBench(self.spec).start()
        self._rm = resource_manager()
        return self

    def close(self) -> None:
        for adapter in self._adapters.values():
            adapter.close()
        for generator in self._generators.values():
            generator.close()
        self._adapters.clear()
        self._generators.clear()
        if self.virtual is not None:
            self.virtual.stop()
            self.virtual = None
        if self._rm is not None:
            self._rm.close()
            self._rm = None

    def __enter__(self) -> Bench:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what the bench has ---------------------------------------------------------------

    @property
    def features(self) -> set[str]:
        found = {"virtual" if self.spec.virtual else "real"}
        if self.spec.of_type(b.ADAPTER):
            found.add("rs485")
        widest = max((len(bus.adapters) for bus in self.spec.buses.values()), default=0)
        if widest >= 2:
            found.add("two-adapters")
        if widest >= 3:
            found.update({"monitor", "noise"})
        if any(self.spec.devices[w.device].type == b.PULSE_COLLECTOR for w in self.spec.wiring):
            found.add("pulse")
        return found

    def resource(self, name: str) -> str:
        """The VISA resource the instrument ``name`` opens as on this bench."""
        inst = self._instrument(name)
        if self.virtual is not None:
            return self.virtual.resources[name]
        return adapter_resource(inst) if inst.type == b.ADAPTER else inst.resource

    def port(self, name: str) -> str:
        """The adapter's device path, for meterhub's own RS485 transport (what a gateway opens)."""
        resource = self.resource(name)
        path = b.visa_serial_path(resource)
        if path is None:
            raise ValueError(f"{name} is not a serial adapter")
        return path

    def settings(self, adapter: str) -> SerialSettings:
        bus = self.spec.bus_of(adapter)
        return bus.settings if bus is not None else SerialSettings()

    def pair(self, minimum: int = 2) -> b.Bus:
        """A pair with at least ``minimum`` adapters (the first one in the file)."""
        for bus in self.spec.buses.values():
            if len(bus.adapters) >= minimum:
                return bus
        raise LookupError(f"the bench has no pair with {minimum} adapters")

    def _instrument(self, name: str) -> b.Instrument:
        try:
            return self.spec.instruments[name]
        except KeyError:
            raise LookupError(f"the bench has no instrument {name!r} ({', '.join(self.spec.instruments)})") from None

    # -- instruments -------------------------------------------------------------------------

    def adapter(self, name: str, settings: SerialSettings | None = None) -> Rs485Adapter:
        """The opened adapter ``name`` (at its pair's settings unless given)."""
        if name not in self._adapters:
            adapter = Rs485Adapter(name, self.resource(name), settings or self.settings(name), rm=self._rm,
                                   on_frame=self.frames.append)
            self._adapters[name] = adapter.open()
        return self._adapters[name]

    def release(self, name: str) -> None:
        """Close an adapter so that another program (meterhub's own transport) may open its port."""
        adapter = self._adapters.pop(name, None)
        if adapter is not None:
            adapter.close()

    def pulse_generator(self, name: str | None = None) -> PulseGenerator:
        if name is None:
            generators = self.spec.of_type(b.PULSE_GENERATOR)
            if not generators:
                raise LookupError("the bench has no pulse generator")
            name = generators[0].name
        if name not in self._generators:
            self._generators[name] = PulseGenerator(name, self.resource(name), rm=self._rm).open()
        return self._generators[name]

    def collector_model(self, name: str) -> Any:
        """The simulated collector behind ``name`` on a virtual bench (``None`` on a real one)."""
        return self.virtual.collectors.get(name) if self.virtual is not None else None

    def identity(self) -> dict[str, str]:
        """Each instrument's identity: ``*IDN?`` of a pulse generator, the USB description
        and serial number of an adapter (for the test report's header)."""
        found: dict[str, str] = {}
        for name, inst in self.spec.instruments.items():
            try:
                if inst.type == b.PULSE_GENERATOR:
                    found[name] = self.pulse_generator(name).identify()
                else:
                    found[name] = self.adapter(name).identity
            except Exception as exc:  # the header must show the problem, not hide the bench
                found[name] = f"unavailable: {exc}"
        return found

    def frame_log(self, since: int = 0) -> str:
        """The frames from index ``since`` on, one line each: time, adapter, direction, hex."""
        if len(self.frames) <= since:
            return ""
        t0 = self.frames[since].at
        return "\n".join(f"{f.at - t0:9.4f} {f.adapter:>12} {f.direction} {f.data.hex(' ')}" for f in self.frames[since:])


def open_bench(path: str, *, virtual: bool | None = None) -> Bench:
    return Bench(b.load_bench(path, virtual=virtual)).open()

