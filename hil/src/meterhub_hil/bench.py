"""The bench file: which instruments a HIL bench has, how they are wired, and what is under test.

A bench is described once, in YAML, by VISA resource names (labgrid style: a resource says
where a thing is, a driver says how to use it). The same file with ``virtual: true`` — or
any file loaded with ``virtual=True`` — resolves every instrument to a loopback on this
machine, so a suite written against a real bench runs unchanged in CI.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from meterhub.errors import ConfigError, ConfigIssue
from meterhub.model import PARITIES, SerialSettings
from meterhub.yamlnodes import Node, child_path, compose, locate, read_document

#: Instrument types a bench file may declare.
ADAPTER = "rs485-adapter"
PULSE_GENERATOR = "pulse-generator"
INSTRUMENT_TYPES = (ADAPTER, PULSE_GENERATOR)

#: Devices under test.
METER = "meter"  #: a meter on a bus (simulated on a virtual bench)
SIMULATED_METER = "simulated-meter"  #: our simulator served through one adapter (real or virtual)
PULSE_COLLECTOR = "pulse-collector"  #: counts pulses on its inputs, read over RS485
GATEWAY = "gateway"  #: a box running meterhub, reached over the network
DEVICE_TYPES = (METER, SIMULATED_METER, PULSE_COLLECTOR, GATEWAY)
#: The largest bench file read, in bytes: a lab bench names a few dozen instruments and devices.
MAX_BENCH_FILE_BYTES = 1024 * 1024

#: Pulse input kinds: an S0 output (IEC 62053-31) or a reed contact that bounces.
INPUT_KINDS = ("s0", "reed")

#: IEC 62053-31: an S0 pulse is at least 30 ms long (protocols README §8).
S0_MIN_WIDTH_S = 0.030

#: Debounce a reed contact for this long unless the bench file says otherwise (§8: 10-50 ms).
REED_DEBOUNCE_S = 0.010

TOP_KEYS = ("bench", "virtual", "instruments", "buses", "devices", "wiring")
INSTRUMENT_KEYS = {ADAPTER: ("type", "resource", "by_id", "serial_number", "role"),
                   PULSE_GENERATOR: ("type", "resource", "channels")}
BUS_KEYS = ("adapters", "baudrate", "parity", "bytesize", "stopbits")
DEVICE_KEYS = {
    METER: ("type", "protocol", "address", "bus", "quantities"),
    SIMULATED_METER: ("type", "protocol", "address", "adapter", "count"),
    PULSE_COLLECTOR: ("type", "protocol", "address", "bus", "inputs"),
    GATEWAY: ("type", "host", "port", "site"),
}
INPUT_KEYS = ("kind", "constant", "unit", "min_width", "debounce", "address")
WIRING_KEYS = ("from", "to")

_ASRL = re.compile(r"^ASRL(.+)::INSTR$", re.I)
_SOCKET = re.compile(r"^TCPIP\d*::([^:]+)::(\d+)::SOCKET$", re.I)
STANDARD_BAUDS = (300, 600, 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)


@attrs.frozen
class Instrument:
    """A resource on the bench: where a thing is (VISA name, by-id path or USB serial number)."""

    name: str
    type: str
    resource: str = ""  #: VISA resource name as written (ASRL/dev/ttyUSB0::INSTR, TCPIP::host::5025::SOCKET)
    by_id: str = ""  #: a stable /dev/serial/by-id path (survives a re-plug into another port)
    serial_number: str = ""  #: the USB adapter's serial number, looked up among the serial ports
    role: str = ""  #: free text: "monitor", "noise", "meter port" ... (shown in reports)
    channels: int = 1  #: pulse generator outputs


@attrs.frozen
class PulseInput:
    """One pulse input of a collector and how its counts become energy or volume."""

    number: int
    kind: str = "s0"
    constant: int = 1000  #: pulses per unit (imp/kWh, or imp/m3 for water/gas)
    unit: str = "kWh"
    min_width: float = S0_MIN_WIDTH_S  #: shorter pulses are not counted (seconds)
    debounce: float = 0.0  #: edges closer than this are contact bounce (seconds)
    address: str = ""  #: the address the collector answers for this input (DL/T 645 sub-meter)


@attrs.frozen
class Device:
    """A device under test."""

    name: str
    type: str
    protocol: str = ""
    address: str = ""
    bus: str = ""
    adapter: str = ""
    count: int = 1
    quantities: tuple[str, ...] = ()
    inputs: Mapping[int, PulseInput] = attrs.field(factory=dict)
    host: str = ""
    port: int = 0
    site: str = ""


@attrs.frozen
class Bus:
    """An RS485 pair: the adapters clipped onto it and its serial format."""

    name: str
    adapters: tuple[str, ...]
    settings: SerialSettings = SerialSettings()


@attrs.frozen
class Wire:
    """A pulse output feeding a collector input: ``pulsegen:1 -> collector-1:2``."""

    generator: str
    channel: int
    device: str
    input: int


@attrs.frozen
class BenchSpec:
    """A validated bench file."""

    name: str
    virtual: bool
    instruments: Mapping[str, Instrument]
    buses: Mapping[str, Bus]
    devices: Mapping[str, Device]
    wiring: tuple[Wire, ...] = ()
    source: str = ""

    def of_type(self, kind: str) -> list[Instrument]:
        return [i for i in self.instruments.values() if i.type == kind]

    def devices_of_type(self, kind: str) -> list[Device]:
        return [d for d in self.devices.values() if d.type == kind]

    def bus_of(self, adapter: str) -> Bus | None:
        return next((b for b in self.buses.values() if adapter in b.adapters), None)

    def wire_to(self, device: str, number: int) -> Wire | None:
        return next((w for w in self.wiring if w.device == device and w.input == number), None)


def load_bench(path: str | Path, *, virtual: bool | None = None) -> BenchSpec:
    """Read and validate a bench file; ``virtual`` overrides the file's own ``virtual:``.

    Raises :class:`ConfigError` with every problem found, each with file, line and key.
    """
    path = Path(path)
    text = read_document(path, max_bytes=MAX_BENCH_FILE_BYTES, what="a bench file")
    return parse_bench(text, filename=str(path), virtual=virtual)


def parse_bench(text: str, *, filename: str = "<bench>", virtual: bool | None = None) -> BenchSpec:
    """Validate bench-file text; see :func:`load_bench`."""
    root = compose(text, filename)
    checker = _Checker(filename)
    spec = checker.bench(root)
    if checker.issues or spec is None:
        raise ConfigError(sorted(checker.issues, key=lambda i: i.line or 0) or
                          [ConfigIssue(filename, None, "", "the bench file is empty")])
    return attrs.evolve(spec, virtual=spec.virtual if virtual is None else virtual)


def visa_serial_path(resource: str) -> str | None:
    """The device path (or pyserial URL) inside ``ASRL…::INSTR``; ``None`` for other resources."""
    match = _ASRL.match(resource.strip())
    return match.group(1) if match else None


def visa_socket(resource: str) -> tuple[str, int] | None:
    """``(host, port)`` of a ``TCPIP::host::port::SOCKET`` resource; ``None`` for other resources."""
    match = _SOCKET.match(resource.strip())
    return (match.group(1), int(match.group(2))) if match else None


class _Checker:
    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.issues: list[ConfigIssue] = []

    def issue(self, node: Node, key: str, message: str) -> None:
        path = node.path + key if key.startswith("[") else child_path(node.path, key) if key else node.path
        self.issues.append(ConfigIssue(self.filename, locate(node, key) if key else node.line, path, message))

    def mapping(self, parent: Node, key: str, *, required: bool = True) -> dict[str, Node]:
        node = parent.get(key)
        if node is None:
            if required:
                self.issue(parent, "", f"{key}: is missing")
            return {}
        if node.kind != "map":
            self.issue(parent, key, "must be a mapping")
            return {}
        return node.value

    def keys(self, node: Node, known: tuple[str, ...]) -> None:
        for key in node.value:
            if key not in known:
                self.issue(node, key, f"unknown key {key!r} (known: {', '.join(known)})")

    def text(self, node: Node, key: str, *, required: bool = False) -> str:
        child = node.get(key)
        if child is None:
            if required:
                self.issue(node, "", f"{key}: is missing")
            return ""
        if child.kind != "scalar" or child.value is None or isinstance(child.value, (bool, list, dict)):
            self.issue(node, key, "must be text")
            return ""
        return child.raw if isinstance(child.value, int) else str(child.value)

    def number(self, node: Node, key: str, default: float, *, low: float, integer: bool = False,
               duration: bool = False) -> float:
        child = node.get(key)
        if child is None:
            return default
        value = child.value
        if duration and isinstance(value, str):
            from meterhub.config import parse_duration

            try:
                value = parse_duration(value)
            except ValueError as exc:
                self.issue(node, key, str(exc))
                return default
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
            self.issue(node, key, f"must be {'a whole number' if integer else 'a number'}, got {child.raw or value!r}")
            return default
        if value < low:
            self.issue(node, key, f"must be at least {low:g}, got {value:g}")
            return default
        return value

    # -- sections --------------------------------------------------------------------

    def bench(self, root: Node | None) -> BenchSpec | None:
        if root is None:
            return None
        if root.kind != "map":
            self.issue(root, "", "a bench file is a mapping with instruments:, buses: and devices:")
            return None
        self.keys(root, TOP_KEYS)
        virtual_node = root.get("virtual")
        if virtual_node is not None and not isinstance(virtual_node.value, bool):
            self.issue(root, "virtual", "must be true or false")
        instruments = {name: self.instrument(name, node) for name, node in self.mapping(root, "instruments").items()}
        buses = {name: self.bus(name, node, instruments) for name, node in self.mapping(root, "buses", required=False).items()}
        devices = {name: self.device(name, node, buses, instruments)
                   for name, node in self.mapping(root, "devices", required=False).items()}
        wiring = self.wiring(root, instruments, devices)
        return BenchSpec(
            name=self.text(root, "bench") or Path(self.filename).stem,
            virtual=bool(virtual_node.value) if virtual_node is not None and isinstance(virtual_node.value, bool) else False,
            instruments={k: v for k, v in instruments.items() if v is not None},
            buses={k: v for k, v in buses.items() if v is not None},
            devices={k: v for k, v in devices.items() if v is not None},
            wiring=tuple(wiring),
            source=self.filename,
        )

    def instrument(self, name: str, node: Node) -> Instrument | None:
        if node.kind != "map":
            self.issue(node, "", "an instrument is a mapping with type: and resource:")
            return None
        kind = self.text(node, "type", required=True)
        if kind and kind not in INSTRUMENT_TYPES:
            self.issue(node, "type", f"unknown instrument type {kind!r} (known: {', '.join(INSTRUMENT_TYPES)})")
            return None
        if not kind:
            return None
        self.keys(node, INSTRUMENT_KEYS[kind])
        resource = self.text(node, "resource")
        if kind == ADAPTER:
            by_id, serial = self.text(node, "by_id"), self.text(node, "serial_number")
            given = [k for k, v in (("resource", resource), ("by_id", by_id), ("serial_number", serial)) if v]
            if len(given) != 1:
                self.issue(node, "", "an adapter needs exactly one of resource:, by_id: or serial_number:"
                           + (f" (got {', '.join(given)})" if given else ""))
            elif resource and visa_serial_path(resource) is None:
                self.issue(node, "resource", f"{resource!r} is not a VISA serial resource like ASRL/dev/ttyUSB0::INSTR")
            return Instrument(name, kind, resource, by_id, serial, self.text(node, "role"))
        if not resource:
            self.issue(node, "", "resource: is missing (e.g. TCPIP::raspberrypi.local::5025::SOCKET)")
        elif visa_socket(resource) is None:
            self.issue(node, "resource", f"{resource!r} is not a VISA socket resource like TCPIP::host::5025::SOCKET")
        channels = int(self.number(node, "channels", 1, low=1, integer=True))
        return Instrument(name, kind, resource, channels=channels)

    def bus(self, name: str, node: Node, instruments: Mapping[str, Instrument | None]) -> Bus | None:
        if node.kind != "map":
            self.issue(node, "", "a bus is a mapping with adapters:")
            return None
        self.keys(node, BUS_KEYS)
        adapters_node = node.get("adapters")
        names: list[str] = []
        if adapters_node is None or adapters_node.kind != "seq" or not adapters_node.value:
            self.issue(node, "adapters" if adapters_node is not None else "", "adapters: must list the adapters on this pair")
        else:
            for i, item in enumerate(adapters_node.value):
                adapter = str(item.value)
                inst = instruments.get(adapter)
                if adapter not in instruments:
                    self.issue(adapters_node, f"[{i}]", f"no instrument {adapter!r} (instruments: {', '.join(instruments)})")
                elif inst is not None and inst.type != ADAPTER:
                    self.issue(adapters_node, f"[{i}]", f"{adapter!r} is a {inst.type}, not an {ADAPTER}")
                names.append(adapter)
        baud = int(self.number(node, "baudrate", 2400, low=1, integer=True))
        if node.get("baudrate") is not None and baud not in STANDARD_BAUDS:
            self.issue(node, "baudrate", f"{baud} is not a standard baud rate ({', '.join(map(str, STANDARD_BAUDS))})")
        parity = (self.text(node, "parity") or "E").upper()[:1]
        if parity not in PARITIES:
            self.issue(node, "parity", f"parity must be one of {', '.join(PARITIES)}")
        bytesize = int(self.number(node, "bytesize", 8, low=5, integer=True))
        stopbits = self.number(node, "stopbits", 1, low=1)
        return Bus(name, tuple(names), SerialSettings(baud, bytesize, parity, stopbits))

    def device(self, name: str, node: Node, buses: Mapping[str, Bus | None],
               instruments: Mapping[str, Instrument | None]) -> Device | None:
        if node.kind != "map":
            self.issue(node, "", "a device is a mapping with type:")
            return None
        kind = self.text(node, "type", required=True)
        if kind and kind not in DEVICE_TYPES:
            self.issue(node, "type", f"unknown device type {kind!r} (known: {', '.join(DEVICE_TYPES)})")
            return None
        if not kind:
            return None
        self.keys(node, DEVICE_KEYS[kind])
        if kind == GATEWAY:
            return Device(name, kind, host=self.text(node, "host", required=True),
                          port=int(self.number(node, "port", 0, low=0, integer=True)), site=self.text(node, "site"))
        protocol = self.text(node, "protocol", required=True)
        address = self.text(node, "address", required=True)
        bus = adapter = ""
        if kind == SIMULATED_METER:
            adapter = self.text(node, "adapter", required=True)
            inst = instruments.get(adapter)
            if adapter and adapter not in instruments:
                self.issue(node, "adapter", f"no instrument {adapter!r}")
            elif inst is not None and inst.type != ADAPTER:
                self.issue(node, "adapter", f"{adapter!r} is a {inst.type}, not an {ADAPTER}")
        else:
            bus = self.text(node, "bus", required=True)
            if bus and bus not in buses:
                self.issue(node, "bus", f"no bus {bus!r} (buses: {', '.join(buses) or 'none'})")
        quantities_node = node.get("quantities")
        quantities = tuple(str(q.value) for q in quantities_node.value) if quantities_node is not None and quantities_node.kind == "seq" else ()
        inputs = self.inputs(node, address) if kind == PULSE_COLLECTOR else {}
        count = int(self.number(node, "count", 1, low=1, integer=True))
        return Device(name, kind, protocol, address, bus, adapter, count, quantities, inputs)

    def inputs(self, node: Node, address: str) -> dict[int, PulseInput]:
        result: dict[int, PulseInput] = {}
        for key, child in self.mapping(node, "inputs").items():
            where = f"inputs.{key}"
            if not str(key).isdigit() or int(key) < 1:
                self.issue(node, where, "pulse inputs are numbered 1, 2, ...")
                continue
            if child.kind != "map":
                self.issue(node, where, "an input is a mapping with kind:, constant: and unit:")
                continue
            self.keys(child, INPUT_KEYS)
            kind = self.text(child, "kind") or "s0"
            if kind not in INPUT_KINDS:
                self.issue(child, "kind", f"unknown pulse input kind {kind!r} (known: {', '.join(INPUT_KINDS)})")
            constant = int(self.number(child, "constant", 1000, low=1, integer=True))
            min_width = self.number(child, "min_width", S0_MIN_WIDTH_S if kind == "s0" else 0.0, low=0, duration=True)
            debounce = self.number(child, "debounce", REED_DEBOUNCE_S if kind == "reed" else 0.0, low=0, duration=True)
            number = int(key)
            sub = self.text(child, "address") or (address[:-2] + f"{number:02d}" if len(address) >= 2 else address)
            result[number] = PulseInput(number, kind, constant, self.text(child, "unit") or "kWh", min_width, debounce, sub)
        return result

    def wiring(self, root: Node, instruments: Mapping[str, Instrument | None], devices: Mapping[str, Device | None]) -> list[Wire]:
        node = root.get("wiring")
        if node is None:
            return []
        if node.kind != "seq":
            self.issue(root, "wiring", "must be a list of {from: GENERATOR:CHANNEL, to: DEVICE:INPUT}")
            return []
        wires: list[Wire] = []
        for i, item in enumerate(node.value):
            if item.kind != "map":
                self.issue(node, f"[{i}]", "a wire is {from: GENERATOR:CHANNEL, to: DEVICE:INPUT}")
                continue
            self.keys(item, WIRING_KEYS)
            source, target = self.text(item, "from", required=True), self.text(item, "to", required=True)
            gen, _, ch = source.partition(":")
            dev, _, inp = target.partition(":")
            inst = instruments.get(gen)
            if gen not in instruments or (inst is not None and inst.type != PULSE_GENERATOR):
                self.issue(item, "from", f"{source!r}: no pulse generator {gen!r}")
                continue
            if not ch.isdigit() or (inst is not None and not 1 <= int(ch) <= inst.channels):
                self.issue(item, "from", f"{source!r}: channel must be 1..{inst.channels if inst else '?'}")
                continue
            device = devices.get(dev)
            if device is None or device.type != PULSE_COLLECTOR:
                self.issue(item, "to", f"{target!r}: no pulse collector {dev!r}")
                continue
            if not inp.isdigit() or int(inp) not in device.inputs:
                self.issue(item, "to", f"{target!r}: {dev} has inputs {', '.join(map(str, device.inputs)) or 'none'}")
                continue
            wires.append(Wire(gen, int(ch), dev, int(inp)))
        return wires


def describe(spec: BenchSpec) -> dict[str, Any]:
    """The bench as plain data (for the report header and ``meterhub bench check --json``)."""
    return {
        "bench": spec.name,
        "virtual": spec.virtual,
        "instruments": {n: attrs.asdict(i) for n, i in spec.instruments.items()},
        "buses": {n: {"adapters": list(b.adapters), "settings": str(b.settings)} for n, b in spec.buses.items()},
        "devices": {n: d.type for n, d in spec.devices.items()},
    }
