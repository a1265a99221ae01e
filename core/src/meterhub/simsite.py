"""Simulated sites: meters of any registered simulator on shared pseudo-terminal buses,
and the site file that reads them. Behind ``meterhub sim bus`` and ``meterhub demo``."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from .api import SimulatorSettings
from .config import POINT_RANGE
from .model import SerialSettings
from .simulator import Fault, PacedDevice, PtyBus, as_fault


@attrs.frozen
class MeterSpec:
    """``PROTOCOL=COUNT[:KEY=VALUE,...]`` from the command line: how many simulated
    meters of one protocol, with the simulator's options."""

    protocol: str
    count: int
    options: Mapping[str, str] = attrs.field(factory=dict)

    @classmethod
    def parse(cls, text: str) -> MeterSpec:
        head, _, rest = text.partition(":")
        protocol, sep, count = head.partition("=")
        if not sep or not protocol.strip() or not count.strip().isdigit() or int(count) < 1:
            raise ValueError(f"{text!r}: expected PROTOCOL=COUNT[:KEY=VALUE,...], e.g. modbus=2:profile=eastron-sdm630")
        options: dict[str, str] = {}
        for item in filter(None, (p.strip() for p in rest.split(","))):
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"{text!r}: option {item!r} is not KEY=VALUE")
            options[key.strip()] = value.strip()
        return cls(protocol.strip(), int(count), options)


@attrs.define
class SimBus:
    """One started virtual bus: the pty, its devices and the site entries that read them."""

    bus: PtyBus
    entries: list[dict[str, Any]]  #: site-file meter entries, channel not yet filled in
    settings: SerialSettings  #: what the channel is configured with (the first protocol's format)

    @property
    def port(self) -> str:
        return self.bus.port

    def stop(self) -> None:
        self.bus.stop()


def start_bus(
    simulators: Mapping[str, Any],
    specs: Sequence[MeterSpec],
    *,
    seed: int = 0,
    faults: Mapping[str, Fault | str] | None = None,
    baudrate: int | None = None,
) -> SimBus:
    """Meters of every spec on one started pty bus (a mixed bus when protocols differ).

    ``faults`` maps ``ADDRESS`` or ``PROTOCOL:ADDRESS`` to a fault. Each meter keeps its
    protocol's serial format unless ``baudrate`` puts them all at one speed.
    """
    if not specs:
        raise ValueError("no meters to simulate")
    devices: list[Any] = []
    entries: list[dict[str, Any]] = []
    first_settings: SerialSettings | None = None
    for i, spec in enumerate(specs):
        sim = simulators.get(spec.protocol)
        if sim is None:
            known = ", ".join(sorted(simulators)) or "none"
            raise ValueError(f"no simulator for protocol {spec.protocol!r} (installed: {known})")
        # a simulator may know better per option (a Modbus profile's own serial format)
        settings: SerialSettings = (sim.settings_for(spec.options) if isinstance(sim, SimulatorSettings)
                                    else sim.default_settings)
        if baudrate is not None:
            settings = attrs.evolve(settings, baudrate=baudrate)
        first_settings = first_settings or settings
        made = sim.make(spec.count, seed=seed + i, options=spec.options)
        for dev in made:
            if isinstance(dev, PacedDevice):
                dev.settings = settings  # the pty paces each answer at its meter's own speed
            entry = dict(sim.site_entry(dev))
            if settings != first_settings:
                entry.update(baudrate=settings.baudrate, parity=settings.parity, bytesize=settings.bytesize,
                             stopbits=_number(settings.stopbits))
            entries.append(entry)
        devices += made
    assert first_settings is not None
    _check_unique(entries)
    bus = PtyBus(devices, settings=first_settings, seed=seed)
    for key, fault in (faults or {}).items():
        _device(devices, key).fault = as_fault(fault)
    return SimBus(bus.start(), entries, first_settings)


def _number(value: float) -> int | float:
    return int(value) if value == int(value) else value


def _check_unique(entries: Sequence[Mapping[str, Any]]) -> None:
    seen: set[tuple[str, str]] = set()
    for entry in entries:
        key = (entry["protocol"], entry["address"])
        if key in seen:
            raise ValueError(f"two simulated {key[0]} meters have address {key[1]}; give one of them other options")
        seen.add(key)


def _device(devices: Sequence[Any], key: str) -> Any:
    protocol, sep, address = key.rpartition(":")
    matches = [d for d in devices if d.address == address and (not sep or d.protocol == protocol)]
    if not matches:
        known = ", ".join(f"{d.protocol}:{d.address}" for d in devices)
        raise ValueError(f"no simulated meter {key!r} (meters: {known})")
    if len(matches) > 1:
        raise ValueError(f"{key!r} names several meters; write PROTOCOL:ADDRESS")
    return matches[0]


def site_text(buses: Mapping[str, SimBus], *, store: str, interval: str = "15m", retries: int = 2) -> str:
    """A site file (YAML, one flow mapping per line) that reads every meter of ``buses``.

    It always loads: meters are numbered with measuring points only while the numbers last
    (see :func:`_points_comment`), since a point is optional and the loader refuses one
    outside :data:`~meterhub.config.POINT_RANGE`.
    """
    lines = ["# written by meterhub for simulated meters; every key is explained in examples/site.yaml", "channels:"]
    for name, sim in buses.items():
        s = sim.settings
        lines.append(f"  {name}: {{transport: rs485, port: {sim.port}, baudrate: {s.baudrate}, parity: {s.parity}, "
                     f"bytesize: {s.bytesize}, stopbits: {_number(s.stopbits)}}}")
    count = sum(len(sim.entries) for sim in buses.values())
    lines += [f"# {_points_comment(count)}", "meters:"]
    numbers = iter(range(POINT_RANGE[0], POINT_RANGE[1] + 1))
    for name, sim in buses.items():
        for entry in sim.entries:
            point = next(numbers, None)
            meter = {"address": entry["address"], "channel": name, **({"point": point} if point is not None else {}),
                     **{k: v for k, v in entry.items() if k != "address"}}
            lines.append(f"  - {json.dumps(meter, ensure_ascii=False)}")
    lines += ["schedule:", f"  interval: {interval}", f"  retries: {retries}", f"store: {store}"]
    return "\n".join(lines) + "\n"


def _points_comment(count: int) -> str:
    """What the generated file says about its measuring points."""
    first, last = POINT_RANGE
    if count <= last - first + 1:
        return f"point: the measuring point number (uplink pn, optional), {first}..{first + count - 1} in order"
    numbered = last - first + 1
    return (f"point: the measuring point number (uplink pn, optional): only {first}..{last} exist (Q/GDW 1376.1), "
            f"so the first {numbered} meters have one and the other {count - numbered} have none")
