"""``meterhub ha lint``: the energy dashboard's verdict per quantity, exit statuses, JSON,
and the mqtt uplink settings that break discovery."""

from __future__ import annotations

import json
from pathlib import Path

import meterhub.quantities
import pytest
from click.testing import CliRunner
from meterhub.model import Site, UplinkConfig
from meterhub.plugins import get_plugins
from meterhub.quantities import Quantity, Vocabulary
from meterhub_mqtt.cli import ha_cmd, uplink_problems

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "site.yaml"
needs_example = pytest.mark.skipif(not EXAMPLE.exists(), reason="examples/ is not beside this source tree")


def lint(*args):
    return CliRunner().invoke(ha_cmd, ["lint", *map(str, args)])


@needs_example
def test_the_example_site_passes():
    result = lint(EXAMPLE)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "flat 1 energy_import_t1: OK for the energy dashboard (energy, total_increasing, kWh)" in lines
    assert ("cold water, flat 1 water_volume: OK for the energy dashboard (water, total_increasing, m³) "
            "[meterhub's m3 is published to HA as m³]") in lines


@needs_example
def test_the_example_site_says_what_is_not_for_the_dashboard_and_why():
    lines = lint(EXAMPLE).stdout.splitlines()
    assert ("flat 2 power_import: not in the energy dashboard: instantaneous power, not a register: the energy "
            "dashboard takes energy totals (kWh) (power only as a live value beside them)") in lines
    assert ("cold water, flat 1 valve_state: not in the energy dashboard: a status value, not a number: "
            "shown as a diagnostic sensor") in lines


@needs_example
def test_the_example_site_has_no_mqtt_uplink_and_is_told_so():
    lines = lint(EXAMPLE).stdout.splitlines()
    assert lines[-1].startswith("warning: no mqtt uplink in the site: nothing reaches Home Assistant")


@needs_example
def test_json_lists_one_object_per_meter_and_quantity():
    result = lint(EXAMPLE, "--json")
    assert result.exit_code == 0
    findings = json.loads(result.stdout)
    # quantities of the example's meters: 7 + 2 + 1 + 2 + 5 + 2 + 4 + 4
    assert len(findings) == 27
    water = next(f for f in findings if f["alias"] == "water_volume")
    assert {k: water[k] for k in ("meter", "quantity", "device_class", "state_class", "unit",
                                  "energy_dashboard", "problems")} == {
        "meter": "cold water, flat 1", "quantity": "8-0:1.0.0", "device_class": "water",
        "state_class": "total_increasing", "unit": "m³", "energy_dashboard": True, "problems": []}
    flow_temperature = next(f for f in findings if f["alias"] == "flow_temperature")
    assert flow_temperature["energy_dashboard"] is False
    assert flow_temperature["problems"] == [
        ("an instantaneous value (temperature), not a register: the energy dashboard takes energy, gas and water "
        "totals only")]


@needs_example
def test_json_keeps_warnings_off_stdout():
    result = lint(EXAMPLE, "--json")
    assert result.stderr.startswith("warning: no mqtt uplink in the site")


GAS_PROFILE = """\
vendor: ACME
model: GM1
description: gas meter with a Modbus port
numbering: pdu
defaults: {function: 3}
quantities:
  "7-0:3.0.9": {address: 0x10, type: u32, scale: 0.01}
"""

GAS_SITE = """\
channels:
  bus1: {transport: rs485, port: /dev/ttyUSB0, baudrate: 9600, parity: N}
profiles: [profiles]
meters:
  - address: "3"
    protocol: modbus
    channel: bus1
    name: boiler gas
    options: {profile: acme-gm1}
    quantities: [gas_volume_normal]
"""


@pytest.fixture
def normal_gas(monkeypatch):
    """A vendor's gas register in normal cubic metres, a unit HA has no device class for."""
    vocabulary = Vocabulary()
    vocabulary.add(Quantity("7-0:3.0.9", "gas_volume_normal", "gas volume at normal conditions", "Nm3", "total"))
    monkeypatch.setattr(meterhub.quantities, "VOCABULARY", vocabulary)


def test_a_refused_consumption_register_fails_the_lint(tmp_path, normal_gas):
    if "modbus" not in get_plugins().meter_drivers():
        pytest.skip("meterhub-rs485 (the modbus driver) is not installed")
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "acme-gm1.yaml").write_text(GAS_PROFILE, encoding="utf-8")
    (tmp_path / "site.yaml").write_text(GAS_SITE, encoding="utf-8")
    result = lint(tmp_path / "site.yaml")
    assert result.exit_code == 1
    assert result.stdout.startswith(
        "boiler gas gas_volume_normal: REFUSED by the energy dashboard: HA has no device class for a total in Nm3")
    assert result.stderr.splitlines()[-1] == (
        "error: the energy dashboard would refuse 1 consumption register(s): boiler gas gas_volume_normal")


def test_a_bad_site_file_is_a_usage_error_with_its_line(tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text("meters:\n  - address: \"1\"\n    protocol: dlt645\n    channel: nowhere\n", encoding="utf-8")
    result = lint(site)
    assert result.exit_code == 2
    assert any(line.startswith(f"error: {site}:") for line in result.stderr.splitlines())


def test_a_missing_site_file_is_a_usage_error(tmp_path):
    result = lint(tmp_path / "none.yaml")
    assert result.exit_code == 2
    assert result.stderr == f"error: {tmp_path / 'none.yaml'}: no such file\n"


# --- mqtt uplink settings ------------------------------------------------------------------


def _site(*uplinks, terminal=""):
    return Site(uplinks=uplinks, terminal=terminal)


def test_no_mqtt_uplink_is_reported():
    problems = uplink_problems(_site(UplinkConfig("feed", "jsonl", {"path": "feed.jsonl"})))
    assert problems == [("no mqtt uplink in the site: nothing reaches Home Assistant (add `uplinks: - protocol: "
                        "mqtt`, server: HOST:1883)")]


def test_a_default_mqtt_uplink_has_no_problem():
    assert uplink_problems(_site(UplinkConfig("mqtt", "mqtt", {"server": "localhost:1883"}))) == []


def test_discovery_switched_off_is_reported():
    problems = uplink_problems(_site(UplinkConfig("mqtt", "mqtt", {"server": "broker:1883", "discovery": False})))
    assert problems == [("uplink mqtt: discovery: false: HA will not see the meters unless each sensor is "
                        "configured by hand")]


def test_a_discovery_prefix_home_assistant_does_not_listen_on_is_reported():
    problems = uplink_problems(_site(UplinkConfig("mqtt", "mqtt", {"server": "b", "discovery_prefix": "ha"})))
    assert problems == [("uplink mqtt: discovery_prefix: ha: HA listens on homeassistant/ unless its MQTT "
                        "discovery prefix was changed to match")]


def test_states_not_retained_are_reported():
    problems = uplink_problems(_site(UplinkConfig("mqtt", "mqtt", {"server": "b", "retain": False})))
    assert problems == [("uplink mqtt: retain: false: after HA or the broker restarts, every sensor is unknown "
                        "until the next round")]


def test_two_uplinks_publishing_one_site_to_one_broker_are_reported():
    site = _site(UplinkConfig("a", "mqtt", {"server": "b:1883"}), UplinkConfig("c", "mqtt", {"server": "b:1883"}),
                 terminal="3201/0001")
    assert uplink_problems(site) == [("two mqtt uplinks publish site 3201_0001: their discovery payloads "
                                     "overwrite each other")]


def test_an_mqtt_uplink_in_a_site_file_is_checked(tmp_path):
    if "mqtt" not in get_plugins().uplinks():
        pytest.skip("the mqtt uplink is not installed")
    site = tmp_path / "site.yaml"
    site.write_text(
        "channels:\n  bus1: {transport: rs485, port: /dev/ttyUSB0}\n"
        "meters:\n  - {address: \"000000000001\", protocol: dlt645, channel: bus1, quantities: [energy_import]}\n"
        "uplinks:\n  - {protocol: mqtt, server: \"localhost:1883\", discovery: false}\n", encoding="utf-8")
    result = lint(site)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == (
        "warning: uplink mqtt: discovery: false: HA will not see the meters unless each sensor is configured by hand")


def test_a_device_class_newer_than_an_older_home_assistant_is_noted():
    from meterhub.model import Meter
    from meterhub_mqtt.cli import _line, lint_site

    site = Site(meters=(Meter("000000000001", "dlt645", "bus1", quantities=("1-0:3.8.0", "1-0:1.8.0")),))
    reactive, active = lint_site(site)
    assert reactive["device_class"] == "reactive_energy"
    assert any("since mid-2025" in note and "an older one refuses this sensor" in note for note in reactive["notes"])
    assert "since mid-2025" in _line(reactive)
    assert not any("since" in note for note in active["notes"])

