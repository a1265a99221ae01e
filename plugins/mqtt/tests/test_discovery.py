"""Home Assistant discovery payloads: metadata per quantity, payloads of a mixed site, the
schema check, the energy dashboard's verdicts."""

from __future__ import annotations

import json

import pytest
from meterhub.model import Meter
from meterhub.quantities import Quantity, Vocabulary, resolve
from meterhub_mqtt import discovery, topics
from meterhub_mqtt.discovery import (
    check_payload,
    discovery_messages,
    energy_dashboard_problems,
    expire_after,
    ha_metadata,
)

# Every builtin quantity: (device class, state class, unit) as HA's sensor documentation
# (integrations/sensor, "Device class") and the state-class rules allow them, written
# out by hand. None = the key is left out of the payload.
EXPECTED = {
    "energy_import": ("energy", "total_increasing", "kWh"),
    "energy_import_t1": ("energy", "total_increasing", "kWh"),
    "energy_import_t2": ("energy", "total_increasing", "kWh"),
    "energy_import_t3": ("energy", "total_increasing", "kWh"),
    "energy_import_t4": ("energy", "total_increasing", "kWh"),
    "energy_export": ("energy", "total_increasing", "kWh"),
    "energy_export_t1": ("energy", "total_increasing", "kWh"),
    "energy_export_t2": ("energy", "total_increasing", "kWh"),
    "energy_export_t3": ("energy", "total_increasing", "kWh"),
    "energy_export_t4": ("energy", "total_increasing", "kWh"),
    "energy_combined": ("energy", "total_increasing", "kWh"),
    "energy_import_l1": ("energy", "total_increasing", "kWh"),
    "energy_import_l2": ("energy", "total_increasing", "kWh"),
    "energy_import_l3": ("energy", "total_increasing", "kWh"),
    "energy_export_l1": ("energy", "total_increasing", "kWh"),
    "energy_export_l2": ("energy", "total_increasing", "kWh"),
    "energy_export_l3": ("energy", "total_increasing", "kWh"),
    "reactive_energy_import": ("reactive_energy", "total_increasing", "kvarh"),
    "reactive_energy_export": ("reactive_energy", "total_increasing", "kvarh"),
    "power_import": ("power", "measurement", "kW"),
    "power_l1": ("power", "measurement", "kW"),
    "power_l2": ("power", "measurement", "kW"),
    "power_l3": ("power", "measurement", "kW"),
    "reactive_power": ("reactive_power", "measurement", "kvar"),
    # apparent_power takes mVA and VA only: kVA goes out without a device class
    "apparent_power": (None, "measurement", "kVA"),
    "voltage_l1": ("voltage", "measurement", "V"),
    "voltage_l2": ("voltage", "measurement", "V"),
    "voltage_l3": ("voltage", "measurement", "V"),
    "current_l1": ("current", "measurement", "A"),
    "current_l2": ("current", "measurement", "A"),
    "current_l3": ("current", "measurement", "A"),
    "current_neutral": ("current", "measurement", "A"),
    "power_factor": ("power_factor", "measurement", None),
    "power_factor_l1": ("power_factor", "measurement", None),
    "power_factor_l2": ("power_factor", "measurement", None),
    "power_factor_l3": ("power_factor", "measurement", None),
    "frequency": ("frequency", "measurement", "Hz"),
    "max_demand_import": ("power", "measurement", "kW"),
    "water_volume": ("water", "total_increasing", "m³"),
    "water_volume_settlement": ("water", "total_increasing", "m³"),
    "water_flow": ("volume_flow_rate", "measurement", "m³/h"),
    "hot_water_volume": ("water", "total_increasing", "m³"),
    "hot_water_volume_settlement": ("water", "total_increasing", "m³"),
    "gas_volume": ("gas", "total_increasing", "m³"),
    "gas_volume_settlement": ("gas", "total_increasing", "m³"),
    "gas_flow": ("volume_flow_rate", "measurement", "m³/h"),
    "heat_energy": ("energy", "total_increasing", "kWh"),
    "heat_energy_settlement": ("energy", "total_increasing", "kWh"),
    "heat_volume": ("volume", "total_increasing", "m³"),
    "heat_power": ("power", "measurement", "kW"),
    "heat_flow": ("volume_flow_rate", "measurement", "m³/h"),
    "flow_temperature": ("temperature", "measurement", "°C"),
    "return_temperature": ("temperature", "measurement", "°C"),
    # a difference: HA's temperature class would read 5 K as an absolute -268.15 °C
    "temperature_difference": (None, "measurement", "K"),
    "operating_time": ("duration", "total_increasing", "h"),
    "valve_state": (None, None, None),
    "battery_low": (None, None, None),
    "meter_status": (None, None, None),
    "clock": (None, None, None),
    "meter_serial": (None, None, None),
    "status_word_1": (None, None, None),
    "status_word_2": (None, None, None),
    "status_word_3": (None, None, None),
    "status_word_4": (None, None, None),
    "status_word_5": (None, None, None),
    "status_word_6": (None, None, None),
    "status_word_7": (None, None, None),
    "cover_open_count": (None, "total_increasing", None),
    "magnetic_count": (None, "total_increasing", None),
}

BUILTIN = list(Vocabulary())


def test_the_table_covers_every_builtin_quantity():
    assert sorted(q.alias for q in BUILTIN) == sorted(EXPECTED)


@pytest.mark.parametrize("quantity", BUILTIN, ids=lambda q: q.alias)
def test_builtin_quantity_metadata(quantity):
    ha = ha_metadata(quantity)
    assert (ha.device_class, ha.state_class, ha.unit) == EXPECTED[quantity.alias]


def test_info_quantities_are_diagnostic_without_classes():
    ha = ha_metadata(resolve("valve_state"))
    assert ha.entity_category == "diagnostic"
    assert ha.state_class is None


def test_cubic_metres_are_spelt_for_home_assistant():
    water, flow = ha_metadata(resolve("water_volume")), ha_metadata(resolve("water_flow"))
    assert (water.unit, water.converted_from) == ("m³", "m3")
    assert (flow.unit, flow.converted_from) == ("m³/h", "m3/h")
    assert ha_metadata(resolve("energy_import")).converted_from == ""


# --- a mixed site ----------------------------------------------------------------------

DLT645 = Meter("000000000001", "dlt645", "bus1", name="flat 1",
               quantities=tuple(resolve(a).obis for a in (
                   "energy_import", "energy_import_t1", "energy_import_t2", "energy_import_t3",
                   "energy_import_t4", "voltage_l1", "current_l1", "power_factor", "clock", "status_word_3")))
MODBUS = Meter("1", "modbus", "bus2", name="heat pump", options={"profile": "eastron-sdm630"},
               quantities=tuple(resolve(a).obis for a in ("energy_import", "power_import", "apparent_power")))
VENDOR = Meter("2", "modbus", "bus2", options={"profile": "acme-em200"},
               quantities=(resolve("energy_import").obis,))
WATER = Meter("12345678901234", "cjt188", "bus1", name="cold water", options={"meter_type": "10"},
              quantities=tuple(resolve(a).obis for a in (
                  "water_volume", "water_volume_settlement", "water_flow", "valve_state", "battery_low")))
HEAT = Meter("5", "mbus", "bus1", name="heat meter",
             quantities=tuple(resolve(a).obis for a in (
                 "heat_energy", "heat_volume", "heat_power", "heat_flow", "flow_temperature",
                 "return_temperature", "temperature_difference", "operating_time")))
# M-Bus primary address 1 beside Modbus unit 1: the topic ids tell them apart
MBUS_ONE = Meter("1", "mbus", "bus2", quantities=(resolve("heat_energy").obis,))
METERS = (DLT645, MODBUS, VENDOR, WATER, HEAT, MBUS_ONE)
PROFILES = {("modbus", "acme-em200"): {"vendor": "ACME", "model": "EM200"}}


def _messages(meters=METERS, interval=900.0):
    return discovery_messages(site="home", prefix="meterhub", discovery_prefix="homeassistant", meters=meters,
                              ids=topics.meter_ids(meters), interval=interval, terminal="3201/0001",
                              profiles=PROFILES)


def _payloads(meters=METERS, interval=900.0):
    return [json.loads(text) for _topic, text in _messages(meters, interval)]


def _sensor(alias, meter_id):
    return next(p for p in _payloads() if p["unique_id"] == f"meterhub_home_{meter_id}_{alias}")


def test_one_message_per_quantity_and_one_for_the_concentrator():
    assert len(_messages()) == 1 + 10 + 3 + 1 + 5 + 8 + 1


def test_every_payload_passes_the_schema_check():
    problems = {topic: check_payload(json.loads(text)) for topic, text in _messages()}
    assert {topic: p for topic, p in problems.items() if p} == {}


def test_discovery_topics_follow_prefix_component_node_object():
    topic = _messages()[1][0]
    assert topic == "homeassistant/sensor/meterhub_home/000000000001_energy_import/config"


def test_unique_ids_and_entity_ids_are_unique():
    payloads = _payloads()
    assert len({p["unique_id"] for p in payloads}) == len(payloads)
    assert len({p["default_entity_id"] for p in payloads}) == len(payloads)


def test_meters_sharing_an_address_get_their_own_ids():
    assert _sensor("heat_energy", "mbus-1")["device"]["identifiers"][0] == "meterhub_home_mbus-1"
    assert _sensor("energy_import", "modbus-1")["device"]["name"] == "heat pump"


def test_the_concentrator_comes_first_with_its_status():
    status = _payloads()[0]
    assert status["device"]["identifiers"] == ["meterhub_home"]
    assert status["device"]["name"] == "meterhub home"
    assert status["device"]["serial_number"] == "3201/0001"
    assert status["state_topic"] == "meterhub/home/status"
    assert status["options"] == ["online", "offline"]


def test_every_meter_device_is_reached_via_the_concentrator():
    devices = [p["device"] for p in _payloads()[1:]]
    assert {d["via_device"] for d in devices} == {"meterhub_home"}


def test_a_meter_device_has_its_address_as_identifier_and_serial_number():
    device = _sensor("energy_import", "000000000001")["device"]
    assert device["identifiers"] == ["meterhub_home_000000000001", "meterhub_home_bus1_dlt645_000000000001"]
    assert device["serial_number"] == "000000000001"
    assert device["name"] == "flat 1"
    assert device["manufacturer"] == "DL/T 645-2007 meter"


def test_a_bus_position_is_no_serial_number():
    """A Modbus unit id or an M-Bus primary address says where a meter is on the bus, not
    which meter it is: no serial number (Home Assistant would show "1")."""
    assert "serial_number" not in _sensor("energy_import", "2")["device"]
    from meterhub.model import Meter
    from meterhub_mqtt.discovery import meter_serial

    assert meter_serial(Meter("5", "mbus", "bus1")) == ""
    assert meter_serial(Meter("12345678A5110107", "mbus", "bus1")) == "12345678"
    assert meter_serial(Meter("00000000000301", "cjt188", "bus1")) == "00000000000301"


def test_a_registered_profile_names_vendor_and_model():
    device = _sensor("energy_import", "2")["device"]
    assert (device["manufacturer"], device["model"]) == ("ACME", "EM200")
    assert device["name"] == "modbus 2"


def test_a_shipped_profile_names_the_vendor_and_model_its_driver_knows():
    device = _sensor("energy_import", "modbus-1")["device"]
    # meterhub-rs485's Modbus driver offers DeviceIdentity: the profile's own vendor: and model:
    assert (device["manufacturer"], device["model"]) == ("Eastron", "SDM630-Modbus V2")


def test_without_a_driver_that_knows_it_the_profiles_name_is_split():
    meter = next(m for m in METERS if m.options.get("profile") == "eastron-sdm630")
    assert discovery._maker(meter, PROFILES, drivers={}) == ("Eastron", "SDM630")


def test_a_sensor_reads_the_state_attributes_and_last_will_topics():
    sensor = _sensor("energy_import_t1", "000000000001")
    assert sensor["state_topic"] == "meterhub/home/000000000001/energy_import_t1/state"
    assert sensor["json_attributes_topic"] == "meterhub/home/000000000001/energy_import_t1/attributes"
    assert sensor["availability_topic"] == "meterhub/home/status"
    assert (sensor["payload_available"], sensor["payload_not_available"]) == ("online", "offline")
    assert sensor["default_entity_id"] == "sensor.meterhub_home_000000000001_energy_import_t1"
    assert "object_id" not in sensor


def test_water_goes_out_in_cubic_metres_with_the_superscript():
    sensor = _sensor("water_volume", "12345678901234")
    assert (sensor["device_class"], sensor["state_class"], sensor["unit_of_measurement"]) == (
        "water", "total_increasing", "m³")
    assert _sensor("heat_flow", "5")["unit_of_measurement"] == "m³/h"


def test_numeric_sensors_turn_a_failed_readings_quality_into_unknown():
    assert "is_number" in _sensor("energy_import", "000000000001")["value_template"]
    assert "value_template" not in _sensor("valve_state", "12345678901234")


@pytest.mark.parametrize(("interval", "seconds"), [(900.0, 3 * 900 + 60), (10.0, 90), (0.0, 60), (0.5, 62)])
def test_expire_after_is_three_rounds_and_a_margin(interval, seconds):
    assert expire_after(interval) == seconds


def test_payloads_carry_expire_after_from_the_interval():
    payloads = _payloads(interval=300.0)[1:]
    assert {p["expire_after"] for p in payloads} == {3 * 300 + 60}


# --- the schema check ------------------------------------------------------------------


def _good():
    return json.loads(_messages()[1][1])


@pytest.mark.parametrize(("change", "expected"), [
    ({"state_class": "total_increasing", "device_class": "power", "unit_of_measurement": "kW"},
     "state_class: total_increasing is not allowed with device class power (measurement)"),
    ({"device_class": "water", "unit_of_measurement": "kWh"},
     "unit_of_measurement: 'kWh' is not one device class water takes (L, gal, m³, ft³, CCF)"),
    ({"device_class": "water", "unit_of_measurement": "m3"},
     "unit_of_measurement: 'm3' is not one device class water takes (L, gal, m³, ft³, CCF)"),
    ({"state_class": "increasing"},
     "state_class: 'increasing' is not one of measurement, measurement_angle, total, total_increasing"),
    ({"device_class": "kilowatthours"}, "device_class: 'kilowatthours' is not a sensor device class"),
    ({"expire_after": 0}, "expire_after: 0 is not a positive whole number of seconds"),
    ({"expire_after": "900"}, "expire_after: '900' is not a positive whole number of seconds"),
    ({"expire_after": True}, "expire_after: True is not a positive whole number of seconds"),
    ({"object_id": "flat1"}, "object_id: removed in Home Assistant 2026.4; use default_entity_id (sensor.<object id>)"),
    ({"colour": "red"}, "colour: not a key of an MQTT sensor"),
    ({"state_topic": "meterhub/home/+/energy_import/state"}, "state_topic: required, a topic without wildcards"),
    ({"default_entity_id": "meterhub_home_1_energy"},
     "default_entity_id: 'meterhub_home_1_energy' is not a sensor entity id (sensor.<a-z, 0-9, _>)"),
    ({"entity_category": "config"}, "entity_category: 'config': a sensor takes only diagnostic"),
    ({"availability": [{"topic": "meterhub/home/status"}]},
     "availability: must not be used together with availability_topic"),
])
def test_check_payload_names_what_home_assistant_would_refuse(change, expected):
    assert check_payload({**_good(), **change}) == [expected]


def test_check_payload_requires_a_state_topic():
    payload = _good()
    del payload["state_topic"]
    assert check_payload(payload) == ["state_topic: required, a topic without wildcards"]


def test_check_payload_requires_device_identifiers():
    payload = _good()
    payload["device"] = {**payload["device"], "identifiers": []}
    assert check_payload(payload) == ["device: needs identifiers or connections"]


def test_check_payload_takes_a_device_only_with_a_unique_id():
    payload = _good()
    del payload["unique_id"]
    assert check_payload(payload) == ["device: only taken with a unique_id"]


def test_check_payload_wants_options_for_an_enum():
    payload = json.loads(_messages()[0][1])
    del payload["options"]
    assert check_payload(payload) == ["options: device class enum needs a non-empty list of strings"]


# --- the energy dashboard ----------------------------------------------------------------


@pytest.mark.parametrize(("meter", "alias"), [
    (DLT645, "energy_import_t1"), (WATER, "water_volume"), (HEAT, "heat_energy"), (MODBUS, "energy_import"),
])
def test_consumption_registers_suit_the_energy_dashboard(meter, alias):
    assert energy_dashboard_problems(meter, resolve(alias)) == []


def test_gas_volume_suits_the_energy_dashboard():
    gas = Meter("12345678901235", "cjt188", "bus1", options={"meter_type": "30"})
    assert energy_dashboard_problems(gas, resolve("gas_volume")) == []


def test_a_flow_rate_is_not_a_register():
    assert energy_dashboard_problems(WATER, resolve("water_flow")) == [
        "a flow rate, not a register: the energy dashboard takes water and gas totals (m³) only"]


def test_power_is_not_energy():
    problems = energy_dashboard_problems(DLT645, resolve("power_import"))
    assert problems[0].startswith("instantaneous power, not a register")


def test_a_settlement_value_is_not_for_the_dashboard():
    problems = energy_dashboard_problems(WATER, resolve("water_volume_settlement"))
    assert problems[0].startswith("the value at the last settlement date")
    assert not ha_metadata(resolve("water_volume_settlement")).dashboard


def test_a_gas_register_in_a_unit_home_assistant_lacks_is_refused():
    normal = Quantity("7-0:3.0.9", "gas_volume_normal", "gas volume at normal conditions", "Nm3", "total")
    ha = ha_metadata(normal)
    assert (ha.device_class, ha.dashboard) == (None, "gas")
    assert energy_dashboard_problems(Meter("3", "modbus", "bus1"), normal) == [
        ("HA has no device class for a total in Nm3: the energy dashboard takes gas with device class energy "
        "or gas in J, kJ, MJ, GJ, mWh, Wh, kWh, MWh, GWh, TWh, cal, kcal, Mcal, Gcal, L, m³, ft³, CCF, MCF")]


def test_heat_energy_in_gigajoules_suits_the_dashboard():
    gj = Quantity("6-0:1.0.9", "heat_energy_gj", "heat energy in GJ", "GJ", "total")
    assert ha_metadata(gj).device_class == "energy"
    assert energy_dashboard_problems(HEAT, gj) == []
