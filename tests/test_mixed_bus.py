"""One RS485 pair carrying DL/T 645, Modbus RTU, CJ/T 188 and M-Bus meters, each at its own
serial format: one round reads them all, and each protocol's scan finds its meters."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from meterhub.channels.halfduplex import HalfDuplexChannel
from meterhub.model import SerialSettings
from meterhub.plugins import get_plugins
from meterhub.simsite import MeterSpec, SimBus, site_text, start_bus
from meterhub.channels.serial import SerialLink
from system_helpers import meterhub, parse_json

#: Per scan query: the simulated meters answer within 30-60 ms plus their frame at 9600 Bd.
SCAN_TIMEOUT = "0.15"


@pytest.fixture(scope="module")
def mixed() -> Iterator[SimBus]:
    specs = [MeterSpec("dlt645", 2), MeterSpec("modbus", 2, {"profile": "eastron-sdm630+eastron-sdm120"}),
             MeterSpec("cjt188", 2, {"meter_type": "10+30"}), MeterSpec("mbus", 2)]
    bus = start_bus(get_plugins().simulators(), specs, seed=3, baudrate=9600)
    yield bus
    bus.stop()


def test_one_round_reads_every_meter_of_every_protocol(mixed, tmp_path):
    site = tmp_path / "mixed.yaml"
    site.write_text(site_text({"bus1": mixed}, store=f"sqlite:///{tmp_path / 'mixed.db'}"))
    result = meterhub("run", str(site), "--once", "--json")
    assert result.returncode == 0, result.stderr
    readings = parse_json(result.stdout)
    by_protocol: dict[str, set[str]] = {}
    for r in readings:
        by_protocol.setdefault(r["protocol"], set()).add(r["meter"])
        assert r["quality"] == "ok", r
    assert {p: len(m) for p, m in by_protocol.items()} == {"dlt645": 2, "modbus": 2, "cjt188": 2, "mbus": 2}
    # the Modbus meters run at 8N1 and the others at 8E1: the site file says so per meter
    assert "parity: N" in site.read_text() or '"parity": "N"' in site.read_text()


def _expected(mixed: SimBus, protocol: str) -> list[str]:
    return sorted(e["address"] for e in mixed.entries if e["protocol"] == protocol)


def test_dlt645_scan_searches_the_pair_and_finds_both_meters(mixed):
    result = meterhub("scan", "--port", mixed.port, "--protocol", "dlt645", "--baudrate", "9600",
                      "--timeout", SCAN_TIMEOUT, "--json")
    assert result.returncode == 0, result.stderr
    assert parse_json(result.stdout) == _expected(mixed, "dlt645")


def test_cjt188_scan_finds_the_water_and_the_gas_meter(mixed):
    result = meterhub("scan", "--port", mixed.port, "--protocol", "cjt188", "--baudrate", "9600",
                      "--option", "meter_type=10,30", "--timeout", SCAN_TIMEOUT, "--json")
    assert result.returncode == 0, result.stderr
    assert parse_json(result.stdout) == _expected(mixed, "cjt188")


def test_mbus_secondary_search_finds_both_slaves(mixed):
    result = meterhub("scan", "--port", mixed.port, "--protocol", "mbus", "--baudrate", "9600",
                      "--option", "mode=secondary", "--timeout", SCAN_TIMEOUT, "--json")
    assert result.returncode == 0, result.stderr
    found = parse_json(result.stdout)
    assert len(found) == 2 and all(len(a) == 16 for a in found)


def test_modbus_sweep_finds_both_meters_and_names_their_models(mixed):
    driver = get_plugins().meter_drivers()["modbus"]

    async def sweep() -> list[str]:
        async with SerialLink("bus1", mixed.port, SerialSettings(9600, 8, "N", 1)) as link:
            return await driver.scan(HalfDuplexChannel("bus1", link), float(SCAN_TIMEOUT), units=range(1, 9))

    assert asyncio.run(sweep()) == _expected(mixed, "modbus")
    assert {driver.last_scan[u] for u in ("1", "2")} == {"eastron-sdm630", "eastron-sdm120"}
