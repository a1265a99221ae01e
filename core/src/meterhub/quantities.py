"""The quantity vocabulary: OBIS codes (IEC 62056-61) with friendly aliases and units.

Every protocol maps its own identifiers (a DL/T 645 DI, a Modbus register, an M-Bus VIF)
onto these names, so a site file, the store and an uplink all speak one language.
"""

from __future__ import annotations

import re

import attrs

from .errors import UnknownQuantity

OBIS_RE = re.compile(r"^(\d{1,3})-(\d{1,3}):(\d{1,3})\.(\d{1,3})\.(\d{1,3})$")


@attrs.frozen
class Quantity:
    """One measurable thing. ``kind`` says how a dashboard may treat it."""

    obis: str
    alias: str
    description: str
    unit: str
    #: "total" (a register that only grows), "measurement" (instantaneous), "info"
    kind: str = "measurement"


def _energy(obis: str, alias: str, description: str, unit: str = "kWh") -> Quantity:
    return Quantity(obis, alias, description, unit, "total")


_BUILTIN: tuple[Quantity, ...] = (
    _energy("1-0:1.8.0", "energy_import", "active energy import, total"),
    _energy("1-0:1.8.1", "energy_import_t1", "active energy import, tariff 1 (sharp)"),
    _energy("1-0:1.8.2", "energy_import_t2", "active energy import, tariff 2 (peak)"),
    _energy("1-0:1.8.3", "energy_import_t3", "active energy import, tariff 3 (flat)"),
    _energy("1-0:1.8.4", "energy_import_t4", "active energy import, tariff 4 (valley)"),
    _energy("1-0:2.8.0", "energy_export", "active energy export, total"),
    _energy("1-0:2.8.1", "energy_export_t1", "active energy export, tariff 1"),
    _energy("1-0:2.8.2", "energy_export_t2", "active energy export, tariff 2"),
    _energy("1-0:2.8.3", "energy_export_t3", "active energy export, tariff 3"),
    _energy("1-0:2.8.4", "energy_export_t4", "active energy export, tariff 4"),
    _energy("1-0:15.8.0", "energy_combined", "combined active energy (|import| + |export|)"),
    _energy("1-0:21.8.0", "energy_import_l1", "active energy import, phase L1"),
    _energy("1-0:41.8.0", "energy_import_l2", "active energy import, phase L2"),
    _energy("1-0:61.8.0", "energy_import_l3", "active energy import, phase L3"),
    _energy("1-0:22.8.0", "energy_export_l1", "active energy export, phase L1"),
    _energy("1-0:42.8.0", "energy_export_l2", "active energy export, phase L2"),
    _energy("1-0:62.8.0", "energy_export_l3", "active energy export, phase L3"),
    _energy("1-0:3.8.0", "reactive_energy_import", "reactive energy import, total", "kvarh"),
    _energy("1-0:4.8.0", "reactive_energy_export", "reactive energy export, total", "kvarh"),
    Quantity("1-0:1.7.0", "power_import", "active power, total", "kW"),
    Quantity("1-0:21.7.0", "power_l1", "active power, phase L1", "kW"),
    Quantity("1-0:41.7.0", "power_l2", "active power, phase L2", "kW"),
    Quantity("1-0:61.7.0", "power_l3", "active power, phase L3", "kW"),
    Quantity("1-0:3.7.0", "reactive_power", "reactive power, total", "kvar"),
    Quantity("1-0:9.7.0", "apparent_power", "apparent power, total", "kVA"),
    Quantity("1-0:32.7.0", "voltage_l1", "voltage, phase L1", "V"),
    Quantity("1-0:52.7.0", "voltage_l2", "voltage, phase L2", "V"),
    Quantity("1-0:72.7.0", "voltage_l3", "voltage, phase L3", "V"),
    Quantity("1-0:31.7.0", "current_l1", "current, phase L1", "A"),
    Quantity("1-0:51.7.0", "current_l2", "current, phase L2", "A"),
    Quantity("1-0:71.7.0", "current_l3", "current, phase L3", "A"),
    Quantity("1-0:91.7.0", "current_neutral", "current, neutral", "A"),
    Quantity("1-0:13.7.0", "power_factor", "power factor, total", ""),
    Quantity("1-0:33.7.0", "power_factor_l1", "power factor, phase L1", ""),
    Quantity("1-0:53.7.0", "power_factor_l2", "power factor, phase L2", ""),
    Quantity("1-0:73.7.0", "power_factor_l3", "power factor, phase L3", ""),
    Quantity("1-0:14.7.0", "frequency", "supply frequency", "Hz"),
    Quantity("1-0:1.6.0", "max_demand_import", "maximum demand, active import", "kW"),
    # Water, gas and heat (value group A = medium per EN 13757-1 / IEC 62056-61:
    # 6 heat, 7 gas, 8 cold water, 9 hot water; C = 1 volume or energy, 2 flow rate ...).
    Quantity("8-0:1.0.0", "water_volume", "cold water volume, accumulated", "m3", "total"),
    Quantity("8-0:1.0.1", "water_volume_settlement", "cold water volume at the last settlement date", "m3", "total"),
    Quantity("8-0:2.0.0", "water_flow", "cold water flow rate", "m3/h"),
    Quantity("9-0:1.0.0", "hot_water_volume", "hot water volume, accumulated", "m3", "total"),
    Quantity("9-0:1.0.1", "hot_water_volume_settlement", "hot water volume at the last settlement date", "m3", "total"),
    Quantity("7-0:3.0.0", "gas_volume", "gas volume at meter conditions, accumulated", "m3", "total"),
    Quantity("7-0:3.0.1", "gas_volume_settlement", "gas volume at the last settlement date", "m3", "total"),
    Quantity("7-0:43.0.0", "gas_flow", "gas flow rate at meter conditions", "m3/h"),
    Quantity("6-0:1.0.0", "heat_energy", "heat energy, accumulated", "kWh", "total"),
    Quantity("6-0:1.0.1", "heat_energy_settlement", "heat energy at the last settlement date", "kWh", "total"),
    Quantity("6-0:2.0.0", "heat_volume", "volume through the heat meter, accumulated", "m3", "total"),
    Quantity("6-0:8.0.0", "heat_power", "heat power", "kW"),
    Quantity("6-0:9.0.0", "heat_flow", "heat meter flow rate", "m3/h"),
    Quantity("6-0:10.0.0", "flow_temperature", "flow (supply) temperature", "°C"),
    Quantity("6-0:11.0.0", "return_temperature", "return temperature", "°C"),
    Quantity("6-0:12.0.0", "temperature_difference", "flow minus return temperature", "K"),
    Quantity("0-0:96.8.0", "operating_time", "accumulated operating time", "h", "total"),
    Quantity("0-0:96.3.10", "valve_state", "valve or breaker state (open, closed, abnormal)", "", "info"),
    Quantity("0-0:96.6.0", "battery_low", "battery low flag (true/false)", "", "info"),
    Quantity("0-0:97.97.0", "meter_status", "meter status / error register (hex)", "", "info"),
    Quantity("0-0:1.0.0", "clock", "meter date and time", "", "info"),
    Quantity("0-0:96.1.0", "meter_serial", "meter serial / communication address", "", "info"),
    Quantity("0-0:96.5.1", "status_word_1", "running status word 1", "", "info"),
    Quantity("0-0:96.5.2", "status_word_2", "running status word 2", "", "info"),
    Quantity("0-0:96.5.3", "status_word_3", "running status word 3 (relay state)", "", "info"),
    Quantity("0-0:96.5.4", "status_word_4", "running status word 4", "", "info"),
    Quantity("0-0:96.5.5", "status_word_5", "running status word 5", "", "info"),
    Quantity("0-0:96.5.6", "status_word_6", "running status word 6", "", "info"),
    Quantity("0-0:96.5.7", "status_word_7", "running status word 7", "", "info"),
    # Tamper counters: OBIS codes of meterhub's own allocation in the general-service
    # group C=96 (not IEC-assigned); DL/T 645 maps its event counters onto them.
    Quantity("0-0:96.20.0", "cover_open_count", "meter cover openings, total count", "", "total"),
    Quantity("0-0:96.20.1", "magnetic_count", "magnetic interference events, total count", "", "total"),
)


class Vocabulary:
    """Look-up of quantities by OBIS code or alias; plugins may add their own."""

    def __init__(self, quantities: tuple[Quantity, ...] = _BUILTIN) -> None:
        self._by_obis: dict[str, Quantity] = {}
        self._by_alias: dict[str, Quantity] = {}
        for q in quantities:
            self.add(q)

    def add(self, quantity: Quantity) -> None:
        """Add a quantity; an OBIS code or alias already taken by another is refused."""
        if not OBIS_RE.match(quantity.obis):
            raise ValueError(f"not an OBIS code (A-B:C.D.E): {quantity.obis!r}")
        for table, key in ((self._by_obis, quantity.obis), (self._by_alias, quantity.alias)):
            known = table.get(key)
            if known is not None and known != quantity:
                raise ValueError(f"quantity {key!r} is already defined as {known.obis}")
        self._by_obis[quantity.obis] = quantity
        self._by_alias[quantity.alias] = quantity

    def resolve(self, name: str) -> Quantity:
        """The quantity named by an OBIS code (``1-0:1.8.0``) or alias (``energy_import``)."""
        key = str(name).strip()
        found = self._by_obis.get(key) or self._by_alias.get(key.lower())
        if found is None:
            raise UnknownQuantity(f"unknown quantity {name!r} (not an OBIS code or alias we know)")
        return found

    def __contains__(self, name: object) -> bool:
        try:
            self.resolve(str(name))
        except UnknownQuantity:
            return False
        return True

    def __iter__(self):
        return iter(sorted(self._by_obis.values(), key=lambda q: q.obis))


#: The process-wide vocabulary; plugins extend it through ``meterhub_register_quantities``.
VOCABULARY = Vocabulary()


def resolve(name: str) -> Quantity:
    """Shorthand for ``VOCABULARY.resolve(name)``."""
    return VOCABULARY.resolve(name)
