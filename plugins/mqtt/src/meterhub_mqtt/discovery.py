"""Home Assistant MQTT discovery generated from meterhub's own metadata (sans-I/O).

One device per concentrator, one device per meter (``via_device`` the concentrator), one
sensor per quantity a meter reads, each with the device class, state class and unit HA
expects; :func:`check_payload` holds a payload against HA's documented schema, and
:func:`energy_dashboard_problems` says why HA's energy dashboard would refuse a quantity.

Where each rule comes from (Home Assistant documentation):

- Discovery topic ``<discovery_prefix>/<component>/[<node_id>/]<object_id>/config``, a
  retained JSON payload, full key names or their abbreviations:
  https://www.home-assistant.io/integrations/mqtt/ ("MQTT Discovery").
- Sensor keys (``state_topic`` required; ``availability_topic`` + ``payload_available`` /
  ``payload_not_available``; ``expire_after`` an integer of seconds; ``json_attributes_topic``;
  ``device`` only with a ``unique_id``; ``entity_category``; ``default_entity_id``):
  https://www.home-assistant.io/integrations/sensor.mqtt/. ``object_id`` was deprecated for
  ``default_entity_id`` (a full entity id, ``sensor.xyz``) in 2025.10 and stops working in
  2026.4 (the warning HA logs since 2025.10), so it is not used and :func:`check_payload`
  refuses it.
- Device classes and the units each accepts:
  https://www.home-assistant.io/integrations/sensor/#device-class. Notably
  ``apparent_power`` takes mVA and VA only (meterhub's kVA goes out without a device
  class), ``temperature`` is an absolute temperature (a difference in K would be shown as
  about -268 °C, so ``temperature_difference`` has none), ``power_factor`` has no unit or %.
- State classes (``measurement``, ``total``, ``total_increasing``) and which device classes
  allow which: https://developers.home-assistant.io/docs/entity_sensor/ ("Available
  state classes"), as enforced by ``DEVICE_CLASS_STATE_CLASSES`` in HA's sensor component.
- The energy dashboard takes device class ``energy`` (any energy unit) for electricity,
  ``energy`` or ``gas`` (L, m³, ft³, CCF, MCF) for gas, ``water`` (L, gal, m³, ft³, CCF,
  MCF) for water, with state class ``total`` or ``total_increasing`` (``measurement``
  needs a ``last_reset``, which meterhub's registers have not):
  https://www.home-assistant.io/docs/energy/electricity-grid/, .../docs/energy/gas/,
  .../docs/energy/water/ and HA's ``energy/validate.py`` that checks them.

meterhub writes cubic metres ``m3``; HA wants ``m³``. The unit goes out converted
(:data:`HA_UNITS`: ``m3`` → ``m³``, ``m3/h`` → ``m³/h``; the value is the same number),
:attr:`HaSensor.converted_from` keeps meterhub's spelling and ``meterhub ha lint`` says so.
The attributes topic keeps meterhub's own unit.

Quantities of kind "info" (clock, status words, valve state, battery flag) are published
as diagnostic sensors with neither device class, state class nor unit: visible on the
meter's device page, never in statistics. A failed reading publishes its quality text
(``timeout``) on the state topic; numeric sensors carry a ``value_template`` turning any
non-number into ``None``, which HA's MQTT sensor takes as "unknown" rather than a value.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
from meterhub.model import Meter
from meterhub.quantities import Quantity, resolve

from . import topics

#: meterhub's unit spelling → HA's (the number is the same; only the symbol differs)
HA_UNITS: Mapping[str, str] = {"m3": "m³", "m3/h": "m³/h"}

#: A value is refreshed once per round: it expires (HA shows "unavailable") after this many
#: rounds without a new one, so one or two rounds lost to retries and back-off are tolerated.
EXPIRE_ROUNDS = 3
#: Seconds added to those rounds for the round's own duration (a slow bus takes a while
#: to get round to a meter), so a value is not expired while its next round is under way.
EXPIRE_MARGIN = 60
#: HA's smallest sensible expiry: below it a broker's or HA's restart alone expires values.
EXPIRE_MIN = 60

SENSOR = "sensor"
ENERGY_DASHBOARD_STATE_CLASSES = ("total", "total_increasing")

# --- HA's documented vocabulary (https://www.home-assistant.io/integrations/sensor/) ----

_ENERGY_UNITS = ("J", "kJ", "MJ", "GJ", "mWh", "Wh", "kWh", "MWh", "GWh", "TWh", "cal", "kcal", "Mcal", "Gcal")
_VOLUME_UNITS = ("L", "mL", "gal", "fl. oz.", "m³", "ft³", "CCF")

#: device class → the units HA accepts for it (None: no unit_of_measurement at all)
DEVICE_CLASS_UNITS: Mapping[str, tuple[str | None, ...]] = {
    "apparent_power": ("mVA", "VA"),
    "current": ("A", "mA"),
    "duration": ("d", "h", "min", "s", "ms", "µs"),
    "energy": _ENERGY_UNITS,
    "enum": (None,),
    "frequency": ("Hz", "kHz", "MHz", "GHz"),
    "gas": ("L", "m³", "ft³", "CCF"),
    "power": ("mW", "W", "kW", "MW", "GW", "TW"),
    "power_factor": (None, "%"),
    "reactive_energy": ("varh", "kvarh"),
    "reactive_power": ("var", "kvar"),
    "temperature": ("°C", "°F", "K"),
    "timestamp": (None,),
    "date": (None,),
    "voltage": ("V", "mV", "µV", "kV", "MV"),
    "volume": _VOLUME_UNITS,
    "volume_flow_rate": ("m³/h", "m³/s", "ft³/min", "L/h", "L/min", "L/s", "gal/min", "mL/s"),
    "water": ("L", "gal", "m³", "ft³", "CCF"),
}

#: every sensor device class HA documents (those not in DEVICE_CLASS_UNITS are not checked for units)
DEVICE_CLASSES = frozenset(DEVICE_CLASS_UNITS) | {
    "absolute_humidity", "aqi", "area", "atmospheric_pressure", "battery", "blood_glucose_concentration",
    "carbon_dioxide", "carbon_monoxide", "data_rate", "data_size", "distance", "energy_distance",
    "energy_storage", "humidity", "illuminance", "irradiance", "moisture", "monetary", "nitrogen_dioxide",
    "nitrogen_monoxide", "nitrous_oxide", "ozone", "ph", "pm1", "pm25", "pm10", "precipitation",
    "precipitation_intensity", "pressure", "signal_strength", "sound_pressure", "speed", "sulphur_dioxide",
    "volatile_organic_compounds", "volatile_organic_compounds_parts", "volume_storage", "weight",
    "wind_direction", "wind_speed",
}

STATE_CLASSES = frozenset({"measurement", "measurement_angle", "total", "total_increasing"})

#: device class → the state classes HA allows with it (classes not listed allow any)
DEVICE_CLASS_STATE_CLASSES: Mapping[str, frozenset[str]] = {
    "apparent_power": frozenset({"measurement"}),
    "current": frozenset({"measurement"}),
    "date": frozenset(),
    "duration": frozenset({"measurement", "total", "total_increasing"}),
    "energy": frozenset({"total", "total_increasing"}),
    "enum": frozenset(),
    "frequency": frozenset({"measurement"}),
    "gas": frozenset({"total", "total_increasing"}),
    "power": frozenset({"measurement"}),
    "power_factor": frozenset({"measurement"}),
    "reactive_energy": frozenset({"total", "total_increasing"}),
    "reactive_power": frozenset({"measurement"}),
    "temperature": frozenset({"measurement"}),
    "timestamp": frozenset(),
    "voltage": frozenset({"measurement"}),
    "volume": frozenset({"total", "total_increasing"}),
    "volume_flow_rate": frozenset({"measurement"}),
    "water": frozenset({"total", "total_increasing"}),
}

#: The keys of an MQTT sensor's discovery payload (full names), from the MQTT sensor page.
SENSOR_KEYS = frozenset({
    "availability", "availability_mode", "availability_template", "availability_topic", "default_entity_id",
    "device", "device_class", "enabled_by_default", "encoding", "entity_category", "entity_picture",
    "expire_after", "force_update", "icon", "json_attributes_template", "json_attributes_topic",
    "last_reset_value_template", "name", "options", "origin", "payload_available", "payload_not_available",
    "platform", "qos", "state_class", "state_topic", "suggested_display_precision", "unique_id",
    "unit_of_measurement", "value_template",
})
DEVICE_KEYS = frozenset({
    "configuration_url", "connections", "hw_version", "identifiers", "manufacturer", "model", "model_id",
    "name", "serial_number", "suggested_area", "sw_version", "via_device",
})
ORIGIN_KEYS = frozenset({"name", "sw_version", "support_url"})

# HA's valid_entity_id: lower-case letters, digits and single inner underscores, "domain.object"
_ENTITY_ID = re.compile(r"^(?!.+__)(?!_)[\da-z_]+(?<!_)\.(?!_)[\da-z_]+(?<!_)$")

#: the value_template of numeric sensors: a quality text (a failed reading) becomes unknown
NUMERIC_TEMPLATE = "{{ value if value | is_number else 'None' }}"

#: What to call a meter's maker when no profile names one.
PROTOCOL_MAKERS: Mapping[str, str] = {
    "dlt645": "DL/T 645-2007 meter",
    "dlt645-1997": "DL/T 645-1997 meter",
    "dlt645-pulse": "DL/T 645 pulse meter",
    "cjt188": "CJ/T 188 meter",
    "mbus": "M-Bus (EN 13757) meter",
    "modbus": "Modbus meter",
    "iec62056-21": "IEC 62056-21 meter",
}


@attrs.frozen
class HaSensor:
    """How HA should see one quantity: device class, state class and unit (HA's spelling),
    or ``None`` where it gets none, and why."""

    device_class: str | None
    state_class: str | None
    unit: str | None
    #: meterhub's unit where HA's spelling differs (``m3`` for ``m³``); "" if unchanged
    converted_from: str = ""
    #: "diagnostic" for status values, else None
    entity_category: str | None = None
    #: what the energy dashboard would use it as: "electricity", "gas", "water", "heat";
    #: "" for a quantity that is not a consumption register
    dashboard: str = ""
    #: why it has no device class (or why it is not a consumption register); "" otherwise
    reason: str = ""

    @property
    def numeric(self) -> bool:
        return self.state_class is not None


# --- quantity → HA metadata ---------------------------------------------------------

_SETTLEMENT = ("the value at the last settlement date: it moves once a month, so HA would chart its "
               "consumption in monthly steps (the live register is the one to use)")


def _obis_groups(obis: str) -> tuple[int, int, int, int, int]:
    a, rest = obis.split("-", 1)
    b, rest = rest.split(":", 1)
    c, d, e = rest.split(".")
    return int(a), int(b), int(c), int(d), int(e)


def _medium(quantity: Quantity) -> int:
    """OBIS value group A: 1 electricity, 6 heat, 7 gas, 8 cold water, 9 hot water, 0 abstract."""
    return _obis_groups(quantity.obis)[0]


def _is_settlement(quantity: Quantity) -> bool:
    """A register's value at the last settlement date (OBIS E = 1 in meterhub's water, gas
    and heat codes): it moves once a month, so it is no consumption to chart."""
    a, _b, _c, d, e = _obis_groups(quantity.obis)
    return a in (6, 7, 8, 9) and d == 0 and e == 1


def _electricity_register(quantity: Quantity) -> bool:
    """Active energy import or export, total, per tariff or per phase (OBIS 1-0:C.8.E with
    C = 1, 2 or 21/41/61, 22/42/62)."""
    a, _b, c, d, _e = _obis_groups(quantity.obis)
    return a == 1 and d == 8 and c in (1, 2, 21, 41, 61, 22, 42, 62)


def _power_factor(quantity: Quantity) -> bool:
    a, _b, c, d, _e = _obis_groups(quantity.obis)
    return a == 1 and d == 7 and c in (13, 33, 53, 73)


def ha_metadata(quantity: Quantity) -> HaSensor:
    """HA's device class, state class and unit for ``quantity``, from its kind, unit and
    OBIS code (so a plugin's quantities are covered too). Every quantity gets a sensor;
    one HA has no device class for gets none, with the reason."""
    unit = HA_UNITS.get(quantity.unit, quantity.unit) or None
    converted = quantity.unit if unit != (quantity.unit or None) else ""
    if quantity.kind == "info":
        return HaSensor(None, None, unit, converted, "diagnostic",
                        reason="a status value, not a number: shown on the meter's page, not charted")
    if quantity.kind == "total":
        return _total(quantity, unit, converted)
    return _measurement(quantity, unit, converted)


def _role(quantity: Quantity) -> str:
    """What the energy dashboard would use a register as: active energy import or export
    ("electricity"), heat energy, a gas or water volume; "" for any other register and
    for a settlement-date value."""
    if _is_settlement(quantity):
        return ""
    a, _b, c, _d, _e = _obis_groups(quantity.obis)
    if a == 1:
        return "electricity" if _electricity_register(quantity) else ""
    if a == 6:
        return "heat" if c == 1 else ""
    return {7: "gas", 8: "water", 9: "water"}.get(a, "")


def _total(quantity: Quantity, unit: str | None, converted: str) -> HaSensor:
    role = _role(quantity)
    settlement = _SETTLEMENT if _is_settlement(quantity) else ""
    medium = _medium(quantity)
    if unit in DEVICE_CLASS_UNITS["energy"]:
        reason = settlement or ("" if role else "an energy register that is neither import nor export")
        return HaSensor("energy", "total_increasing", unit, converted, dashboard=role, reason=reason)
    if unit in DEVICE_CLASS_UNITS["reactive_energy"]:
        return HaSensor("reactive_energy", "total_increasing", unit, converted, dashboard=role,
                        reason="reactive energy: the energy dashboard takes active energy only")
    if unit in _VOLUME_UNITS:
        if medium in (7, 8, 9):
            device_class = "gas" if medium == 7 else "water"
            if unit in DEVICE_CLASS_UNITS[device_class]:
                return HaSensor(device_class, "total_increasing", unit, converted, dashboard=role, reason=settlement)
            return HaSensor("volume", "total_increasing", unit, converted, dashboard=role,
                            reason=f"HA's {device_class} device class does not take {unit}")
        return HaSensor("volume", "total_increasing", unit, converted, dashboard=role,
                        reason="a volume that is not a water or gas consumption (the water circulated "
                               "through a heat meter is billed as heat_energy)")
    if unit in DEVICE_CLASS_UNITS["duration"]:
        return HaSensor("duration", "total_increasing", unit, converted, dashboard=role,
                        reason="a running time, not a consumption")
    if unit is None:
        return HaSensor(None, "total_increasing", None, converted, dashboard=role,
                        reason="a count: HA has no device class for it")
    return HaSensor(None, "total_increasing", unit, converted, dashboard=role,
                    reason=f"HA has no device class for a total in {unit}")


#: device classes of instantaneous values, told apart by their unit alone
_MEASUREMENT_CLASSES = ("power", "reactive_power", "apparent_power", "voltage", "current", "frequency",
                        "volume_flow_rate")


def _measurement(quantity: Quantity, unit: str | None, converted: str) -> HaSensor:
    if _power_factor(quantity) and unit in DEVICE_CLASS_UNITS["power_factor"]:
        return HaSensor("power_factor", "measurement", unit, converted)
    if unit == "K":
        return HaSensor(None, "measurement", unit, converted,
                        reason="a temperature difference: HA's temperature class would read K as an "
                               "absolute temperature")
    if unit in DEVICE_CLASS_UNITS["temperature"]:
        return HaSensor("temperature", "measurement", unit, converted)
    for device_class in _MEASUREMENT_CLASSES:
        if unit in DEVICE_CLASS_UNITS[device_class]:
            return HaSensor(device_class, "measurement", unit, converted)
    if unit == "kVA":
        return HaSensor(None, "measurement", unit, converted,
                        reason="HA's apparent_power device class takes mVA and VA only, not kVA")
    return HaSensor(None, "measurement", unit, converted,
                    reason=f"HA has no device class for {unit or 'a unitless value'}")


# --- the energy dashboard ---------------------------------------------------------------

_DASHBOARD_UNITS: Mapping[str, Mapping[str, tuple[str | None, ...]]] = {
    "electricity": {"energy": _ENERGY_UNITS},
    "heat": {"energy": _ENERGY_UNITS},
    "gas": {"energy": _ENERGY_UNITS, "gas": ("L", "m³", "ft³", "CCF", "MCF")},
    "water": {"water": ("L", "gal", "m³", "ft³", "CCF", "MCF")},
}

def energy_dashboard_problems(meter: Meter, quantity: Quantity) -> list[str]:
    """Why HA's energy dashboard would not take ``quantity`` as ``meter`` publishes it;
    empty when it would. A quantity that is no consumption register says what it is.
    (The site file already refuses a quantity its meter cannot read, a CJ/T 188 gas meter's
    water volume say, so ``meter`` only names the meter in the messages for now.)"""
    ha = ha_metadata(quantity)
    if quantity.kind == "info":
        return ["a status value, not a number: shown as a diagnostic sensor"]
    if quantity.kind != "total":
        if ha.device_class == "volume_flow_rate":
            return ["a flow rate, not a register: the energy dashboard takes water and gas totals (m³) only"]
        if ha.device_class == "power":
            return [("instantaneous power, not a register: the energy dashboard takes energy totals (kWh) "
                    "(power only as a live value beside them)")]
        return [(f"an instantaneous value ({ha.device_class or ha.unit or 'unitless'}), not a register: "
                "the energy dashboard takes energy, gas and water totals only")]
    if not ha.dashboard:
        return [ha.reason]
    allowed = _DASHBOARD_UNITS[ha.dashboard]
    problems: list[str] = []
    if ha.device_class not in allowed:
        units = ", ".join(u for units in allowed.values() for u in units if u)
        problems.append(f"{ha.reason or f'device class {ha.device_class}'}: the energy dashboard takes "
                        f"{ha.dashboard} with device class {' or '.join(allowed)} in {units}")
    elif ha.unit not in allowed[ha.device_class]:
        problems.append(f"unit {ha.unit}: the energy dashboard takes {ha.dashboard} in "
                        f"{', '.join(u for u in allowed[ha.device_class] if u)}")
    if ha.state_class not in ENERGY_DASHBOARD_STATE_CLASSES:
        problems.append(f"state class {ha.state_class}: the energy dashboard takes total or total_increasing")
    return problems


# --- discovery payloads -----------------------------------------------------------------


def expire_after(interval: float) -> int:
    """Seconds after which HA marks a value stale: :data:`EXPIRE_ROUNDS` rounds of
    ``interval`` plus :data:`EXPIRE_MARGIN`, at least :data:`EXPIRE_MIN`."""
    return max(EXPIRE_MIN, math.ceil(EXPIRE_ROUNDS * max(interval, 0) + EXPIRE_MARGIN))


def _entity_object(text: str) -> str:
    """``text`` as the object part of an HA entity id (``[a-z0-9_]``, no double ``_``)."""
    return re.sub(r"_+", "_", re.sub(r"[^a-z0-9_]", "_", text.lower())).strip("_") or "meterhub"


def _origin() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return {"name": "meterhub", "sw_version": version("meterhub-mqtt")}
    except PackageNotFoundError:
        return {"name": "meterhub"}


def concentrator_identifier(site: str) -> str:
    return f"meterhub_{site}"


def meter_device(meter: Meter, *, site: str, meter_id: str,
                 profiles: Mapping[tuple[str, str], Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """The ``device`` mapping of ``meter``'s sensors: two identifiers (its topic id and its
    channel/protocol:address key), maker and model from its Modbus profile where it has one."""
    identifiers = [f"meterhub_{site}_{meter_id}"]
    by_key = f"meterhub_{site}_{topics.slug(meter.key)}"
    if by_key not in identifiers:
        identifiers.append(by_key)
    manufacturer, model = _maker(meter, profiles)
    device = {
        "identifiers": identifiers,
        "name": meter.name or f"{meter.protocol} {meter.address}",
        "manufacturer": manufacturer,
        "model": model,
        "via_device": concentrator_identifier(site),
    }
    serial = meter_serial(meter)
    if serial:
        device["serial_number"] = serial
    return device


#: Protocols whose address is the meter's own number, as on its nameplate.
SERIAL_ADDRESSES = frozenset({"dlt645", "dlt645-1997", "cjt188", "iec62056-21"})


def meter_serial(meter: Meter) -> str:
    """The meter's serial number where its address carries one: the whole address where it
    is the meter's number (DL/T 645, CJ/T 188, IEC 62056-21), an M-Bus secondary address's
    identification number (its first 8 digits); "" for a bus position (a Modbus unit id,
    an M-Bus primary address), which is no serial number."""
    if meter.protocol in SERIAL_ADDRESSES:
        return meter.address
    if meter.protocol == "mbus" and len(meter.address) == 16:
        return meter.address[:8]
    return ""


def _maker(meter: Meter, profiles: Mapping[tuple[str, str], Mapping[str, Any]] | None,
           drivers: Mapping[str, Any] | None = None) -> tuple[str, str]:
    """Vendor and model of ``meter``: what its driver says (:class:`meterhub.api.DeviceIdentity`:
    a Modbus profile's ``vendor:``/``model:``); else from a profile registered through the
    profile hook; else from the profile's name, which profiles spell ``vendor-model``
    (``eastron-sdm630``); else the protocol. ``drivers``: the installed ones unless given."""
    from meterhub.api import DeviceIdentity
    from meterhub.plugins import get_plugins

    if drivers is None:  # the installed drivers know the models of the meters they read
        drivers = get_plugins().meter_drivers()
    driver = drivers.get(meter.protocol)
    if isinstance(driver, DeviceIdentity):
        identity = driver.device_identity(meter)
        if identity.get("manufacturer") or identity.get("model"):
            return (identity.get("manufacturer") or PROTOCOL_MAKERS.get(meter.protocol, f"{meter.protocol} meter"),
                    identity.get("model") or meter.protocol)
    name = str(meter.options.get("profile") or "")
    if name:
        if profiles is None:
            from meterhub.plugins import get_plugins

            profiles = get_plugins().profiles()
        data = profiles.get((meter.protocol, name)) or {}
        vendor, model = str(data.get("vendor") or ""), str(data.get("model") or "")
        if vendor or model:
            return vendor or PROTOCOL_MAKERS.get(meter.protocol, f"{meter.protocol} meter"), model or name
        head, _, tail = name.partition("-")
        if tail:
            return (head.upper() if len(head) <= 3 else head.capitalize()), tail.upper()
        return PROTOCOL_MAKERS.get(meter.protocol, f"{meter.protocol} meter"), name
    return PROTOCOL_MAKERS.get(meter.protocol, f"{meter.protocol} meter"), meter.protocol


def sensor_payload(meter: Meter, quantity: Quantity, *, site: str, prefix: str, meter_id: str,
                   interval: float, device: Mapping[str, Any], origin: Mapping[str, str]) -> dict[str, Any]:
    """The discovery payload of one quantity of one meter."""
    ha = ha_metadata(quantity)
    unique_id = f"meterhub_{site}_{meter_id}_{quantity.alias}"
    payload: dict[str, Any] = {
        "name": quantity.description or quantity.alias,
        "unique_id": unique_id,
        "default_entity_id": f"{SENSOR}.{_entity_object(unique_id)}",
        "state_topic": topics.state_topic(prefix, site, meter_id, quantity.alias),
        "json_attributes_topic": topics.attributes_topic(prefix, site, meter_id, quantity.alias),
        "availability_topic": topics.availability_topic(prefix, site),
        "payload_available": topics.ONLINE,
        "payload_not_available": topics.OFFLINE,
        "expire_after": expire_after(interval),
        "device": dict(device),
        "origin": dict(origin),
    }
    if ha.device_class:
        payload["device_class"] = ha.device_class
    if ha.state_class:
        payload["state_class"] = ha.state_class
    if ha.unit:
        payload["unit_of_measurement"] = ha.unit
    if ha.entity_category:
        payload["entity_category"] = ha.entity_category
    if ha.numeric:
        payload["value_template"] = NUMERIC_TEMPLATE
    return payload


def concentrator_payload(*, site: str, prefix: str, terminal: str, origin: Mapping[str, str]) -> dict[str, Any]:
    """The concentrator's own device and one diagnostic sensor of its status: an ``enum``
    of ``online``/``offline`` read from the last-will topic (no availability of its own,
    so "offline" shows as a state instead of the entity going unavailable)."""
    device: dict[str, Any] = {
        "identifiers": [concentrator_identifier(site)],
        "name": f"meterhub {site}",
        "manufacturer": "meterhub",
        "model": "concentrator",
    }
    if terminal:
        device["serial_number"] = terminal
    if origin.get("sw_version"):
        device["sw_version"] = origin["sw_version"]
    unique_id = f"meterhub_{site}_status"
    return {
        "name": "status",
        "unique_id": unique_id,
        "default_entity_id": f"{SENSOR}.{_entity_object(unique_id)}",
        "state_topic": topics.availability_topic(prefix, site),
        "device_class": "enum",
        "options": [topics.ONLINE, topics.OFFLINE],
        "entity_category": "diagnostic",
        "device": device,
        "origin": dict(origin),
    }


def discovery_topic(discovery_prefix: str, component: str, node_id: str, object_id: str) -> str:
    """``<discovery_prefix>/<component>/<node_id>/<object_id>/config``."""
    return f"{discovery_prefix}/{component}/{node_id}/{object_id}/config"


def discovery_messages(*, site: str, prefix: str, discovery_prefix: str, meters: Sequence[Meter],
                       ids: Mapping[str, str], interval: float, terminal: str,
                       profiles: Mapping[tuple[str, str], Mapping[str, Any]] | None = None) -> list[tuple[str, str]]:
    """Every discovery message of a site, ``(topic, JSON payload)``, to publish retained:
    the concentrator's status sensor first, then each meter's quantities in its order.
    ``ids`` are the meters' topic levels by key (:func:`meterhub_mqtt.topics.meter_ids`);
    ``interval`` the schedule's seconds between rounds; ``profiles`` the registered device
    profiles (default: the installed plugins')."""
    origin = _origin()
    node = f"meterhub_{site}"
    messages = [(discovery_topic(discovery_prefix, SENSOR, node, "status"),
                 _dumps(concentrator_payload(site=site, prefix=prefix, terminal=terminal, origin=origin)))]
    for meter in meters:
        meter_id = ids[meter.key]
        device = meter_device(meter, site=site, meter_id=meter_id, profiles=profiles)
        for code in meter.quantities:
            quantity = resolve(code)
            payload = sensor_payload(meter, quantity, site=site, prefix=prefix, meter_id=meter_id,
                                     interval=interval, device=device, origin=origin)
            messages.append((discovery_topic(discovery_prefix, SENSOR, node, f"{meter_id}_{quantity.alias}"),
                             _dumps(payload)))
    return messages


def _dumps(payload: Mapping[str, Any]) -> str:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


# --- the schema check --------------------------------------------------------------------


def _is_topic(value: Any) -> bool:
    return isinstance(value, str) and bool(value) and "+" not in value and "#" not in value


def check_payload(payload: Mapping[str, Any]) -> list[str]:
    """What is wrong with an MQTT sensor discovery payload by HA's documented schema
    (full key names): required and allowed keys, device class / unit pairs, state class
    values and their compatibility with the device class, ``expire_after``, the device
    and origin mappings. Empty when HA would take it."""
    if not isinstance(payload, Mapping):
        return ["the payload is not a JSON object"]
    problems = [f"{key}: not a key of an MQTT sensor" for key in sorted(set(payload) - SENSOR_KEYS)
                if key != "object_id"]
    if "object_id" in payload:
        problems.append("object_id: removed in Home Assistant 2026.4; use default_entity_id (sensor.<object id>)")
    if not _is_topic(payload.get("state_topic")):
        problems.append("state_topic: required, a topic without wildcards")
    for key in ("json_attributes_topic", "availability_topic"):
        if key in payload and not _is_topic(payload[key]):
            problems.append(f"{key}: must be a topic without wildcards")
    if "availability" in payload and "availability_topic" in payload:
        problems.append("availability: must not be used together with availability_topic")
    for key in ("payload_available", "payload_not_available", "name", "value_template", "unique_id"):
        if key in payload and payload[key] is not None and not isinstance(payload[key], str):
            problems.append(f"{key}: must be a string")
    if "unique_id" in payload and not payload["unique_id"]:
        problems.append("unique_id: must not be empty")
    entity_id = payload.get("default_entity_id")
    if entity_id is not None and not (isinstance(entity_id, str) and entity_id.startswith(f"{SENSOR}.")
                                      and _ENTITY_ID.match(entity_id)):
        problems.append(f"default_entity_id: {entity_id!r} is not a sensor entity id (sensor.<a-z, 0-9, _>)")
    if "expire_after" in payload:
        value = payload["expire_after"]
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            problems.append(f"expire_after: {value!r} is not a positive whole number of seconds")
    if "qos" in payload and payload["qos"] not in (0, 1, 2):
        problems.append("qos: must be 0, 1 or 2")
    if "entity_category" in payload and payload["entity_category"] != "diagnostic":
        problems.append(f"entity_category: {payload['entity_category']!r}: a sensor takes only diagnostic")
    problems += _check_classes(payload)
    if "device" in payload:
        problems += _check_device(payload["device"])
        if not payload.get("unique_id"):
            problems.append("device: only taken with a unique_id")
    if "origin" in payload:
        origin = payload["origin"]
        if not isinstance(origin, Mapping) or not isinstance(origin.get("name"), str) or not origin.get("name"):
            problems.append("origin.name: required, a string")
        elif set(origin) - ORIGIN_KEYS:
            problems.append(f"origin: unknown keys {', '.join(sorted(set(origin) - ORIGIN_KEYS))}")
    return problems


def _check_classes(payload: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    device_class = payload.get("device_class")
    state_class = payload.get("state_class")
    unit = payload.get("unit_of_measurement")
    if state_class is not None and state_class not in STATE_CLASSES:
        problems.append(f"state_class: {state_class!r} is not one of {', '.join(sorted(STATE_CLASSES))}")
    if "last_reset_value_template" in payload and state_class != "total":
        problems.append("last_reset_value_template: only with state_class total")
    if device_class is None:
        if "options" in payload:
            problems.append("options: only with device_class enum")
        return problems
    if device_class not in DEVICE_CLASSES:
        return [*problems, f"device_class: {device_class!r} is not a sensor device class"]
    units = DEVICE_CLASS_UNITS.get(device_class)
    if units is not None and unit not in units:
        accepted = ", ".join(u if u is not None else "none" for u in units)
        problems.append(f"unit_of_measurement: {unit!r} is not one device class {device_class} takes ({accepted})")
    allowed = DEVICE_CLASS_STATE_CLASSES.get(device_class)
    if state_class in STATE_CLASSES and allowed is not None and state_class not in allowed:
        problems.append(f"state_class: {state_class} is not allowed with device class {device_class} "
                        f"({', '.join(sorted(allowed)) or 'none'})")
    if device_class == "enum":
        options = payload.get("options")
        if not isinstance(options, list) or not options or not all(isinstance(o, str) for o in options):
            problems.append("options: device class enum needs a non-empty list of strings")
    elif "options" in payload:
        problems.append("options: only with device_class enum")
    return problems


def _check_device(device: Any) -> list[str]:
    if not isinstance(device, Mapping):
        return ["device: must be a mapping"]
    problems = [f"device.{key}: not a device key" for key in sorted(set(device) - DEVICE_KEYS)]
    identifiers = device.get("identifiers")
    if isinstance(identifiers, str):
        identifiers = [identifiers]
    connections = device.get("connections")
    if not identifiers and not connections:
        problems.append("device: needs identifiers or connections")
    if identifiers is not None and (not isinstance(identifiers, list)
                                    or not all(isinstance(i, str) and i for i in identifiers)):
        problems.append("device.identifiers: a list of non-empty strings")
    for key in ("name", "manufacturer", "model", "serial_number", "sw_version", "via_device"):
        if key in device and not isinstance(device[key], str):
            problems.append(f"device.{key}: must be a string")
    return problems
