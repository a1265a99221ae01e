"""The vendor path: examples/vendor-plugin is installed like any third-party distribution
(tox installs it) and works through the public hooks only."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from system_helpers import meterhub, parse_json, write_site

pytest.importorskip("meterhub_acme", reason="examples/vendor-plugin is not installed")


def test_the_vendor_plugin_is_listed_with_its_distribution_and_hooks():
    result = meterhub("plugins", "--json")
    assert result.returncode == 0, result.stderr
    plugins = {p["name"]: p for p in json.loads(result.stdout)}
    acme = plugins["acme"]
    assert acme["distribution"] == "meterhub-acme" and acme["version"] == "1.0.0"
    assert acme["status"] == "ok"
    assert {"meterhub_register_meter_drivers", "meterhub_register_quantities", "meterhub_before_command",
            "meterhub_readings_collected", "meterhub_register_commands"} <= set(acme["hooks"])
    assert plugins["dlt645"]["distribution"] == "meterhub"  # built-ins go through the same hooks
    assert plugins["rs485"]["distribution"] == "meterhub-rs485"


def test_the_vendor_quantity_and_protocol_read_a_meter_and_the_audit_hook_sees_it(tmp_path, sim_bus):
    audit = tmp_path / "audit.jsonl"
    site = write_site(tmp_path / "site.yaml", sim_bus.port, addresses=("000000000001",), protocol="acme-dlt645",
                      quantities='["energy_import", "meter_temperature"]')
    result = meterhub("run", str(site), "--once", "--json", env={"ACME_AUDIT_FILE": str(audit)})
    assert result.returncode == 0, result.stderr
    readings = {r["quantity"]: r for r in parse_json(result.stdout)}
    assert readings["1-0:1.8.0"]["quality"] == "ok"
    temperature = readings["0-0:96.9.0"]
    assert temperature["quality"] == "ok" and temperature["unit"] == "°C"
    assert Decimal("-40") < temperature["value"] < Decimal("85")
    audited = [json.loads(line) for line in audit.read_text().splitlines()]
    assert {r["quantity"] for r in audited if r["type"] == "reading"} == {"1-0:1.8.0", "0-0:96.9.0"}


def test_the_vendor_subcommand_is_on_the_command_line():
    result = meterhub("acme-info")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["protocol"] == "acme-dlt645"


def test_a_disabled_vendor_plugin_is_not_loaded():
    result = meterhub("plugins", "--json", env={"METERHUB_DISABLE_PLUGINS": "acme"})
    plugins = {p["name"]: p for p in json.loads(result.stdout)}
    assert plugins["acme"]["status"] == "disabled"
    listed = meterhub("plugins", env={"METERHUB_DISABLE_PLUGINS": "acme"})
    assert "acme-dlt645" not in listed.stdout


def _trip(sim_bus, command_credential: str, secrets=None, plugins=None, *, confirm: bool = False) -> None:
    import asyncio

    from meterhub.model import ChannelConfig, Command, Meter, SerialSettings, Site
    from meterhub.plugins import get_plugins
    from meterhub.runtime import Concentrator
    from meterhub.store import open_store

    channel = ChannelConfig("bus1", "rs485", sim_bus.port, SerialSettings(9600, 8, "N", 1))
    meter = Meter(address="000000000001", protocol="acme-dlt645", channel="bus1", quantities=("1-0:1.8.0",))
    site = Site(channels={"bus1": channel}, meters=(meter,), store="sqlite:///:memory:")

    async def trip() -> None:
        with open_store(site.store) as store:
            async with Concentrator(site, plugins=plugins or get_plugins(), store=store, secrets=secrets) as conc:
                try:
                    args = {"action": "trip", "confirm": True} if confirm else {"action": "trip"}
                    await conc.execute(meter, Command(meter.address, meter.protocol, "relay", args,
                                                      credential=command_credential))
                finally:
                    _trip.records = store.commands()  # type: ignore[attr-defined]

    asyncio.run(trip())


def test_the_vendor_policy_refuses_an_unconfirmed_relay_trip(sim_bus, monkeypatch):
    from meterhub.errors import CommandRefused
    from meterhub.model import CommandState
    from meterhub.secrets import EnvSecrets

    monkeypatch.setenv("METERHUB_SECRET_METER_000000000001_PASSWORD", "123456")
    monkeypatch.setenv("METERHUB_SECRET_METER_000000000001_OPERATOR", "00000001")
    frames_before = sim_bus.frames_in
    with pytest.raises(CommandRefused, match="ACME policy"):
        _trip(sim_bus, "meter-000000000001", EnvSecrets())
    assert sim_bus.frames_in == frames_before  # refused before anything went on the wire
    assert not sim_bus.device("000000000001").relay_open
    (record,) = _trip.records  # type: ignore[attr-defined]
    assert record.state is CommandState.REFUSED and "ACME policy" in record.reason
    assert "123456" not in repr(record)


class _BrokenPolicy:
    """A policy plugin with a bug: it raises instead of answering."""

    @staticmethod
    def meterhub_before_command(command):
        raise KeyError("tariff table")


def test_a_policy_hook_that_raises_refuses_the_command_with_nothing_on_the_wire(sim_bus, monkeypatch):
    from meterhub.errors import CommandRefused
    from meterhub.hookspecs import hookimpl
    from meterhub.model import CommandState
    from meterhub.plugins import Plugins
    from meterhub.secrets import EnvSecrets

    broken = _BrokenPolicy()
    broken.meterhub_before_command = hookimpl(_BrokenPolicy.meterhub_before_command)
    monkeypatch.setenv("METERHUB_SECRET_METER_000000000001_PASSWORD", "123456")
    monkeypatch.setenv("METERHUB_SECRET_METER_000000000001_OPERATOR", "00000001")
    frames_before = sim_bus.frames_in
    with pytest.raises(CommandRefused, match="KeyError"):
        # confirmed: the vendor's own policy lets it pass; only the broken one is left to say no
        _trip(sim_bus, "meter-000000000001", EnvSecrets(), Plugins(extra=[("brokenpolicy", broken)]), confirm=True)
    assert sim_bus.frames_in == frames_before
    assert not sim_bus.device("000000000001").relay_open
    (record,) = _trip.records  # type: ignore[attr-defined]
    assert record.state is CommandState.REFUSED and "brokenpolicy" in record.reason


def test_a_relay_trip_without_credentials_is_refused_before_anything_is_sent(sim_bus):
    from meterhub.errors import CommandRefused
    from meterhub.model import CommandState
    from meterhub.secrets import EnvSecrets

    frames_before = sim_bus.frames_in
    with pytest.raises(CommandRefused, match="needs credentials"):
        _trip(sim_bus, "", EnvSecrets(environ={}))
    assert sim_bus.frames_in == frames_before
    (record,) = _trip.records  # type: ignore[attr-defined]
    assert record.state is CommandState.REFUSED


def test_a_modbus_profile_registered_by_the_vendor_plugin_reads_a_meter():
    from meterhub.model import SerialSettings
    from meterhub.plugins import get_plugins
    from meterhub.simulator import PtyBus
    from meterhub_rs485.modbus_sim import SimulatedModbusMeter

    profile = get_plugins().meter_drivers()["modbus"].profiles["acme-em200"]
    meter = SimulatedModbusMeter(7, profile, seed=4, overrides={"1-0:52.7.0": Decimal("231.7")})
    bus = PtyBus([meter], settings=SerialSettings(9600, 8, "N", 1)).start()
    try:
        result = meterhub("read", "--port", bus.port, "--protocol", "modbus", "--profile", "acme-em200",
                          "--address", "7", "--quantity", "voltage_l2", "--json")
    finally:
        bus.stop()
    assert result.returncode == 0, result.stderr
    reading = parse_json(result.stdout)
    assert (reading["value"], reading["unit"]) == (Decimal("231.7"), "V")  # float32 on the wire, exact here


def test_a_confirmed_relay_trip_with_credentials_reaches_the_meter_and_the_journal_keeps_no_secret(sim_bus, monkeypatch):
    from meterhub.model import CommandState
    from meterhub.secrets import EnvSecrets

    # the simulated meter's password is the factory one, level 02: 000000
    monkeypatch.setenv("METERHUB_SECRET_METER_000000000001_PASSWORD", "000000")
    monkeypatch.setenv("METERHUB_SECRET_METER_000000000001_OPERATOR", "00000001")
    _trip(sim_bus, "meter-000000000001", EnvSecrets(), confirm=True)
    assert sim_bus.device("000000000001").relay_open
    (record,) = _trip.records  # type: ignore[attr-defined]
    assert record.state is CommandState.ANSWERED and record.command.credential == "meter-000000000001"
    assert record.answer is not None and record.answer["meter"] == "000000000001"  # not masked inside the address
    assert "password" not in repr(record)
