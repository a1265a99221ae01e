"""The virtual bench: every instrument of a bench file resolved to a loopback on this machine.

* each RS485 pair becomes a :class:`~meterhub_hil.wire.VirtualPair`, one pty per adapter, so
  adapters open as ``ASRL/dev/pts/N::INSTR`` exactly as real ones do;
* the meters and pulse collectors that a real bench has on a pair are simulated on a
  :class:`meterhub.simulator.PtyBus` joined to that pair, with real byte timing;
* each pulse generator is ``meterhub-pulsegen`` with its simulated GPIO backend on
  127.0.0.1, and its outputs drive the simulated collectors' inputs as the wiring says.

Nothing here is seen by a test: it gets the same instrument objects either way.
"""

from __future__ import annotations

import logging
from typing import Any

from meterhub.plugins import get_plugins
from meterhub.simulator import PtyBus

from . import bench as b
from .pulse import SimulatedPulseCollector
from .wire import VirtualPair

log = logging.getLogger(__name__)


class VirtualBench:
    """Loopbacks for every instrument of ``spec``; ``resources`` maps instrument names to
    the VISA resource names to open instead of the bench file's."""

    def __init__(self, spec: b.BenchSpec) -> None:
        self.spec = spec
        self.resources: dict[str, str] = {}
        self.pairs: dict[str, VirtualPair] = {}
        self.sim_buses: dict[str, PtyBus] = {}
        self.collectors: dict[str, SimulatedPulseCollector] = {}
        self.meters: dict[str, list[Any]] = {}  #: simulated devices per bench device name
        self.pulse_servers: dict[str, Any] = {}

    def start(self) -> VirtualBench:
        try:
            self._start_pairs()
            self._start_devices()
            self._start_pulse_generators()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_pairs(self) -> None:
        on_a_bus = {a for bus in self.spec.buses.values() for a in bus.adapters}
        for name, bus in self.spec.buses.items():
            pair = VirtualPair(len(bus.adapters), name=name)
            self.pairs[name] = pair
            for adapter, path in zip(bus.adapters, pair.paths):
                self.resources[adapter] = f"ASRL{path}::INSTR"
        for inst in self.spec.of_type(b.ADAPTER):
            if inst.name not in on_a_bus:  # an adapter on no bus: a pair of its own
                pair = VirtualPair(1, name=inst.name)
                self.pairs[f"{inst.name}-alone"] = pair
                self.resources[inst.name] = f"ASRL{pair.paths[0]}::INSTR"

    def _start_devices(self) -> None:
        simulators = get_plugins().simulators()
        per_bus: dict[str, list[Any]] = {}
        for dev in self.spec.devices.values():
            if dev.type == b.PULSE_COLLECTOR:
                collector = SimulatedPulseCollector(dev.name, dev.inputs)
                self.collectors[dev.name] = collector
                per_bus.setdefault(dev.bus, []).extend(collector.devices)
            elif dev.type == b.METER:
                sim = simulators.get(dev.protocol)
                if sim is None:
                    raise ValueError(f"{self.spec.source}: device {dev.name}: no simulator for protocol {dev.protocol!r}")
                made = sim.make(dev.count, options=_address_option(dev))
                self.meters[dev.name] = made
                per_bus.setdefault(dev.bus, []).extend(made)
        for bus_name, devices in per_bus.items():
            bus = self.spec.buses[bus_name]
            sim_bus = PtyBus(devices, settings=bus.settings).start()
            self.sim_buses[bus_name] = sim_bus
            self.pairs[bus_name].attach(sim_bus.port)

    def _start_pulse_generators(self) -> None:
        generators = self.spec.of_type(b.PULSE_GENERATOR)
        if not generators:
            return
        from .pulsegen_link import start_virtual_generator

        for inst in generators:
            server, resource = start_virtual_generator(inst.channels)
            self.pulse_servers[inst.name] = server
            self.resources[inst.name] = resource
            for wire in self.spec.wiring:
                if wire.generator == inst.name and wire.device in self.collectors:
                    server.connect(wire.channel, self.collectors[wire.device].listener(wire.input))

    def stop(self) -> None:
        for server in self.pulse_servers.values():
            server.stop()
        for sim_bus in self.sim_buses.values():
            sim_bus.stop()
        for pair in self.pairs.values():
            pair.close()
        self.pulse_servers.clear()
        self.sim_buses.clear()
        self.pairs.clear()

    def __enter__(self) -> VirtualBench:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


#: The simulator option that sets the first meter's address, where it is not first_address.
FIRST_ADDRESS_OPTION = {"modbus": "first_unit", "mbus": "first_primary"}


def _address_option(dev: b.Device) -> dict[str, str]:
    """The simulator option that gives a bench meter the address the bench file wrote."""
    return {FIRST_ADDRESS_OPTION.get(dev.protocol, "first_address"): dev.address}
